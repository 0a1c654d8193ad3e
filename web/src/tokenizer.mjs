/**
 * Text to token ids and back through the bundle's `tokenizer.json`, with @huggingface/tokenizers
 * (the tokenizer library of transformers.js), which encodes and decodes exactly as the Python
 * `tokenizers` library does (tests/web compares them on emoji, accents and special tokens).
 *
 * Streaming goes through {@link TextStream}, a port of `tokenizers.decoders.DecodeStream` (the
 * Python runtime's): a piece is released only when the text decoded so far grows and does not end
 * in U+FFFD, so a piece never ends inside a character that spans several tokens.
 */
import { Tokenizer as HFTokenizer } from "@huggingface/tokenizers";
import { EdgeError } from "./errors.mjs";

// Special tokens stay in the text, as in the Python runtime (runtime/tokenizer.py), and no
// "clean-up" of spaces before punctuation: Python's tokenizers.decode does none.
const DECODE_OPTIONS = Object.freeze({ skip_special_tokens: false, clean_up_tokenization_spaces: false });
const REPLACEMENT = "\uFFFD";

export class Tokenizer {
  /**
   * @param {object} json the parsed tokenizer.json
   * @param {object} [config] the parsed tokenizer_config.json, when the bundle has one
   */
  constructor(json, config = {}) {
    try {
      this._tok = new HFTokenizer(json, config);
    } catch (error) {
      throw new EdgeError(`tokenizer.json cannot be read as a tokenizer (${error.message}).`);
    }
    this.tokenCount = this._tok.model.vocab.length;
  }

  /** Token ids of `text` (an array of numbers). */
  encode(text) {
    if (typeof text !== "string") throw new EdgeError(`encode() takes a string, got ${typeof text}.`);
    return this._tok.encode(text).ids;
  }

  /** The text of `ids`; an id the tokenizer lacks (a padded vocabulary) decodes to nothing. */
  decode(ids) {
    return this._tok.decode(ids, DECODE_OPTIONS);
  }

  /** A fresh incremental detokenizer. */
  stream() {
    return new TextStream(this);
  }
}

/**
 * Incremental detokenizer: `push` one id at a time, `finish` at the end. The pieces join to exactly
 * `decode(all ids)`, and none ends inside a multi-byte character.
 */
export class TextStream {
  constructor(tokenizer) {
    this._tokenizer = tokenizer;
    this.ids = []; // every id pushed
    this.text = ""; // everything returned so far
    // DecodeStream's state: the ids still needed to decode the next piece, how many of them
    // are already shown (the "prefix"), and that prefix's text.
    this._window = [];
    this._prefixIndex = 0;
    this._prefix = "";
  }

  /** Add one token; return the newly completed text ("" while a character is incomplete). */
  push(id) {
    this.ids.push(id);
    this._window.push(id);
    const text = this._tokenizer.decode(this._window);
    if (text.length <= this._prefix.length || text.endsWith(REPLACEMENT)) return "";
    if (!text.startsWith(this._prefix)) {
      throw new Error("incremental decode diverged from the decode of the same tokens");
    }
    const piece = text.slice(this._prefix.length);
    const read = this._window.length - this._prefixIndex;
    this._window = this._window.slice(this._prefixIndex);
    this._prefix = this._tokenizer.decode(this._window);
    this._prefixIndex = read;
    this.text += piece;
    return piece;
  }

  /** What is still held back (bytes that never completed a character decode to U+FFFD, as in
   * `decode`), so that the pieces add up to the full decode. */
  finish() {
    const full = this._tokenizer.decode(this.ids);
    if (!full.startsWith(this.text)) {
      throw new Error("incremental decode diverged from the full decode");
    }
    const rest = full.slice(this.text.length);
    this.text = full;
    return rest;
  }
}
