/**
 * One row's text: detokenize each token, then hold back text that may be the start of a stop
 * string (a port of runtime/stream.py). A stop string can arrive split over several tokens
 * ("\n\n" as two "\n"), so text that could begin one is held until it completes one (generation
 * stops, and the text ends before it) or cannot any more (the text is released).
 */

export class StopFilter {
  /** @param {string[]} stops the stop strings, none empty; none lets all text through */
  constructor(stops) {
    this._stops = [...stops];
    this._longest = Math.max(0, ...this._stops.map((s) => s.length));
    this._buffer = ""; // received, not yet released
    this.text = ""; // released so far; never holds a stop string
    this.stopped = false;
  }

  /** Add decoded text; return the part that can no longer be part of a stop string. */
  push(piece) {
    if (this.stopped || !piece) return "";
    this._buffer += piece;
    // A match can only start inside the buffer: released text was checked while it was held.
    const hits = this._stops.map((s) => this._buffer.indexOf(s)).filter((i) => i >= 0);
    if (hits.length) {
      this.stopped = true;
      return this._release(Math.min(...hits));
    }
    return this._release(this._buffer.length - this._heldBack());
  }

  /** Release what is held back (generation ended for another reason). */
  flush() {
    return this.stopped ? "" : this._release(this._buffer.length);
  }

  /** Length of the longest buffer suffix that is a proper prefix of some stop string. */
  _heldBack() {
    const buffer = this._buffer;
    for (let size = Math.min(buffer.length, this._longest - 1); size > 0; size--) {
      const tail = buffer.slice(-size);
      if (this._stops.some((s) => s.startsWith(tail))) return size;
    }
    return 0;
  }

  _release(upto) {
    const out = this._buffer.slice(0, upto);
    this._buffer = this._buffer.slice(upto);
    this.text += out;
    return out;
  }
}

/** The text side of one row: a {@link TextStream}, then the stop strings. */
export class RowText {
  constructor(tokenizer, stops) {
    this._decoder = tokenizer.stream();
    this._stops = new StopFilter(stops);
  }

  get stopped() {
    return this._stops.stopped;
  }

  get text() {
    return this._stops.text;
  }

  /** Add one generated token; return the text it releases (may be ""). */
  push(id) {
    return this._stops.push(this._decoder.push(id));
  }

  /** Release the rest: incomplete characters (as U+FFFD) and held-back text. */
  finish() {
    if (this.stopped) return "";
    const piece = this._stops.push(this._decoder.finish());
    return piece + this._stops.flush();
  }
}
