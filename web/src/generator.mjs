/**
 * Generation from a loaded bundle, with the Python runtime's contract (runtime/generate.py): the
 * prompt encoded and held to the context, then prefill, and per token: pick (sampling.mjs), stop
 * on EOS (its text not shown), a stop string (the text ends before it), the token budget
 * (`length`) or the end of the context (`context`); text streamed in pieces that never split a
 * character and never show a stop string. A caller's AbortSignal, or leaving the stream early,
 * ends it with `abort`.
 */
import { EdgeError } from "./errors.mjs";
import { Sampler } from "./sampling.mjs";
import { resolveSettings, unusedDefaults } from "./settings.mjs";
import { RowText } from "./stop.mjs";

const now = () => performance.now();

/**
 * Let the page render and handle input before the next token. onnxruntime-web's WASM run is a
 * synchronous call behind a Promise, so a loop of awaits alone never leaves the microtask queue:
 * the page would show nothing, and Stop would not be clicked, until the end. A posted message
 * queues an ordinary task (~0.05 ms; setTimeout(0) costs 4 ms, browsers clamp nested timers);
 * scheduler.yield() was tried and resumes ahead of other tasks: timers and clicks starved
 * (0 setInterval callbacks over a 60-token run in chromium 156).
 */
function nextTask() {
  if (typeof setImmediate === "function") return new Promise((resolve) => setImmediate(resolve));
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => {
      channel.port1.close();
      resolve();
    };
    channel.port2.postMessage(null);
  });
}

export class Generator {
  /**
   * @param {{decoder: object, tokenizer: object, manifest: object, notices?: string[],
   *   provider?: string, threads?: number}} parts
   */
  constructor({ decoder, tokenizer, manifest, notices = [], provider = "wasm", threads = 1 }) {
    this._decoder = decoder;
    this.tokenizer = tokenizer;
    this.manifest = manifest;
    this.provider = provider; // "wasm" or "webgpu"
    this.threads = threads; // WASM threads onnxruntime-web runs with
    this.notices = [...notices, ...unusedDefaults(manifest.generation)];
    const special = manifest.special_tokens ?? manifest.special;
    this.eosId = special.eos ?? null;
    this.bosId = special.bos ?? this.eosId;
    this._queue = Promise.resolve(); // one generation at a time: they share the KV cache
  }

  /** Most tokens (prompt plus generated) the model attends to. */
  get contextLength() {
    return this.manifest.architecture.context_length;
  }

  /** Prompt token ids; an empty prompt is the start token, as GPT-2 was trained. */
  encode(prompt) {
    if (typeof prompt !== "string") {
      throw new EdgeError(`A prompt must be a string, got ${prompt === null ? "null" : typeof prompt}.`);
    }
    const ids = this.tokenizer.encode(prompt);
    if (ids.length) return ids;
    if (this.bosId === null) throw new EdgeError("The prompt is empty and the bundle names no start token to use.");
    return [this.bosId];
  }

  /**
   * Text pieces of the continuation of `prompt`, as an async iterator; its `result` property is a
   * Promise of the whole result ({@link generate}). Settings and prompt are checked when this is
   * called, before any model call.
   *
   * @throws {EdgeError} an invalid setting, or a prompt longer than the context allows
   */
  stream(prompt, settings = {}) {
    const plan = this._plan(prompt, settings);
    let settle;
    const result = new Promise((resolve, reject) => {
      settle = { resolve, reject };
    });
    result.catch(() => {}); // a caller who only iterates sees the error there
    const pieces = this._pieces(plan, settle);
    pieces.result = result;
    return pieces;
  }

  /**
   * The continuation of `prompt`.
   *
   * @returns {Promise<{text: string, tokens: number[], finish_reason: string, prompt_tokens:
   *   number, seed: number|null, timings: {prefill_ms: number, decode_ms: number,
   *   tokens_per_second: number}}>}
   */
  async generate(prompt, settings = {}) {
    const pieces = this.stream(prompt, settings);
    for await (const piece of pieces) void piece;
    return pieces.result;
  }

  _plan(prompt, given) {
    const { settings, signal } = resolveSettings(given, this.manifest.generation);
    const ids = this.encode(prompt);
    const context = this.contextLength;
    if (ids.length > context - 1) {
      throw new EdgeError(
        `The prompt is ${ids.length} tokens long but the model's context is ${context}, so at ` +
          `most ${context - 1} fit.`,
      );
    }
    const room = context - ids.length;
    const budget = Math.min(settings.max_new_tokens, room);
    const budgetReason = settings.max_new_tokens <= room ? "length" : "context";
    return { ids, settings, signal, budget, budgetReason };
  }

  async *_pieces(plan, settle) {
    const release = await this._turn();
    const tokens = [];
    const text = new RowText(this.tokenizer, plan.settings.stop);
    const sampler = new Sampler(plan.settings);
    const eos = plan.settings.ignore_eos ? null : this.eosId;
    const start = now();
    let first = null;
    let reason = "abort"; // unless the loop ends otherwise: the caller left the stream early
    try {
      this._decoder.reset();
      let logits = await this._decoder.forward(plan.ids);
      for (;;) {
        const token = sampler.pick(logits);
        tokens.push(token);
        first ??= now();
        let piece;
        let done = null;
        if (token === eos) {
          piece = text.finish();
          done = "eos";
        } else {
          piece = text.push(token);
          if (text.stopped) done = "stop";
          else if (tokens.length >= plan.budget) done = plan.budgetReason;
          else if (plan.signal?.aborted) done = "abort";
          if (done && done !== "stop") piece += text.finish();
        }
        if (done) reason = done;
        if (piece) yield piece;
        if (done) break;
        await nextTask();
        logits = await this._decoder.forward([token]);
      }
    } catch (error) {
      settle.reject(error);
      throw error;
    } finally {
      release();
      const end = now();
      const decodeMs = first === null ? 0 : end - first;
      settle.resolve({
        text: text.text,
        tokens,
        finish_reason: reason,
        prompt_tokens: plan.ids.length,
        seed: sampler.greedy ? null : sampler.seed,
        timings: {
          prefill_ms: (first ?? end) - start,
          decode_ms: decodeMs,
          tokens_per_second: tokens.length > 1 && decodeMs > 0 ? (tokens.length - 1) / (decodeMs / 1000) : 0,
        },
      });
    }
  }

  /**
   * Perplexity of token ids in windows of `context` tokens scored one by one (each window's
   * tokens after its first are predicted from the window alone): `gpt2-eval` with `--stride`
   * equal to `--context` computes the same figure.
   */
  async perplexity(ids, { context = this.contextLength } = {}) {
    if (!Number.isSafeInteger(context) || context < 2 || context > this.contextLength) {
      throw new EdgeError(`context must be an integer from 2 to ${this.contextLength}, got ${context}.`);
    }
    const release = await this._turn();
    try {
      let nll = 0;
      let scored = 0;
      let windows = 0;
      for (let begin = 0; begin < ids.length; begin += context) {
        const chunk = ids.slice(begin, begin + context);
        if (chunk.length < 2) break; // nothing to predict (gpt2-eval weighs it 0)
        this._decoder.reset();
        const logits = await this._decoder.forward(chunk, true); // (T, V)
        const vocab = logits.length / chunk.length;
        for (let j = 1; j < chunk.length; j++) {
          nll += negativeLogLikelihood(logits.subarray((j - 1) * vocab, j * vocab), chunk[j]);
        }
        scored += chunk.length - 1;
        windows += 1;
      }
      if (!scored) throw new EdgeError("The text is too short to score a single token; give it more text.");
      return { perplexity: Math.exp(nll / scored), mean_nll: nll / scored, scored_tokens: scored, windows };
    } finally {
      this._decoder.reset();
      release();
    }
  }

  /** Wait for the runs before this one; returns the function that lets the next one start. */
  async _turn() {
    let release;
    const mine = new Promise((resolve) => {
      release = resolve;
    });
    const before = this._queue;
    this._queue = before.then(() => mine);
    await before;
    return release;
  }
}

/** -log softmax(row)[target], summed in float64. */
function negativeLogLikelihood(row, target) {
  let top = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i] > top) top = row[i];
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i] - top);
  return Math.log(sum) + top - row[target];
}
