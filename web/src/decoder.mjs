/**
 * The model on onnxruntime-web, and its KV cache between calls (batch 1: a page runs one prompt).
 *
 * Every name comes from the manifest's `io` patterns, checked against the graph when it opens.
 * Both graph kinds the exporter writes are fed alike, as their declared shapes allow:
 *
 * - input_ids and position_ids (1, T), attention_mask (1, past + T) of ones;
 * - past keys/values (1, heads, past, head_size) in the graph's KV type, empty (past 0) on the
 *   first call; each call's presents, one call longer, are the next call's pasts.
 *
 * The fused GroupQueryAttention graph (`graph.kv_cache` "shared-buffer") lets the Python runtime
 * bind one preallocated buffer as both past and present so the cache is written in place. WASM
 * cannot share a buffer between an input and an output: onnxruntime-web copies every input into
 * its memory and every output out of it on each run (1.31.1, `wasm-core-impl`), so a preallocated
 * buffer would be copied whole on every token. The same graph also takes a past of exactly the
 * cached length (GroupQueryAttention then writes a present of past + T positions), which copies
 * only what is cached; tests/web checks its tokens against the Python runtime's.
 *
 * With WebGPU the presents stay on the GPU (`preferredOutputLocation: "gpu-buffer"`) and are fed
 * back from there, as the Python runtime's IO binding keeps them on CUDA; only logits come back.
 */
import { EdgeError } from "./errors.mjs";
import { MODEL_FILE, layerName } from "./manifest.mjs";

/** The graph's tensor names, resolved from the manifest's `io` map. */
export function graphNames(manifest) {
  const { io, architecture } = manifest;
  const past = [];
  const present = [];
  for (let i = 0; i < architecture.layers; i++) {
    past.push(layerName(io.past_key, i), layerName(io.past_value, i));
    present.push(layerName(io.present_key, i), layerName(io.present_value, i));
  }
  return {
    inputIds: io.input_ids,
    attentionMask: io.attention_mask,
    positionIds: io.position_ids,
    logitsIndex: io.logits_index,
    logits: io.logits,
    past,
    present,
  };
}

/** Session options: full optimization, quiet logs, presents kept on the GPU under WebGPU. */
export function sessionOptions(manifest, provider, externalData) {
  const options = {
    executionProviders: provider === "webgpu" ? ["webgpu", "wasm"] : ["wasm"],
    graphOptimizationLevel: "all",
    logSeverityLevel: 3, // onnxruntime's warnings (an overridable initializer) are not the user's
  };
  if (externalData.length) options.externalData = externalData;
  if (provider === "webgpu") {
    const names = graphNames(manifest);
    options.preferredOutputLocation = Object.fromEntries(names.present.map((n) => [n, "gpu-buffer"]));
  }
  return options;
}

/** The model's forward pass with its KV cache; one prompt at a time. */
export class Decoder {
  /**
   * @param {object} ort the onnxruntime-web module
   * @param {object} session an open `ort.InferenceSession`
   * @param {object} manifest the bundle's manifest
   * @throws {EdgeError} the graph lacks a tensor the manifest names, or its KV type differs
   */
  constructor(ort, session, manifest) {
    this._ort = ort;
    this._session = session;
    this._arch = manifest.architecture;
    this._names = checkGraph(session, manifest);
    this._kvType = kvType(session, this._names, manifest);
    this._fetches = [this._names.logits, ...this._names.present];
    this.length = 0; // tokens cached
    this._past = null;
  }

  /** Forget the cache: the next call is a prefill. */
  reset() {
    this._dispose(this._past);
    this._past = null;
    this.length = 0;
  }

  /**
   * Feed `tokens` after what is cached; returns the logits of the last one (a Float32Array of the
   * vocabulary size), or with `every` those of each token (T x V, row-major).
   */
  async forward(tokens, every = false) {
    const ort = this._ort;
    const names = this._names;
    const count = tokens.length;
    const past = this._past ?? this._emptyPast();
    const total = this.length + count;
    const feeds = {};
    feeds[names.inputIds] = int64([1, count], (j) => tokens[j]);
    if (names.attentionMask) feeds[names.attentionMask] = int64([1, total], () => 1);
    if (names.positionIds) feeds[names.positionIds] = int64([1, count], (j) => this.length + j);
    if (names.logitsIndex) {
      // (1, K): the positions to compute logits at (the graph's default is all of them)
      feeds[names.logitsIndex] = every ? int64([1, count], (j) => j) : int64([1, 1], () => count - 1);
    }
    names.past.forEach((name, i) => {
      feeds[name] = past[i];
    });
    let out;
    try {
      out = await this._session.run(feeds, this._fetches);
    } catch (error) {
      throw new EdgeError(`onnxruntime-web failed to run ${MODEL_FILE}: ${error.message || error}.`);
    }
    this._dispose(this._past);
    this._past = names.present.map((name) => out[name]);
    this.length = total;
    const logits = out[names.logits]; // (1, K, V)
    const vocab = logits.dims[2];
    const rows = logits.dims[1];
    const data = asFloat32(logits);
    if (every) {
      if (rows !== count) throw new Error(`expected logits for ${count} positions, got ${rows}`);
      return data;
    }
    return data.subarray((rows - 1) * vocab, rows * vocab);

    function int64(dims, value) {
      const size = dims.reduce((a, b) => a * b, 1);
      const data = new BigInt64Array(size);
      for (let j = 0; j < size; j++) data[j] = BigInt(value(j));
      return new ort.Tensor("int64", data, dims);
    }
  }

  _emptyPast() {
    const dims = [1, this._arch.heads, 0, this._arch.head_size];
    const data = this._kvType === "float16" ? new Uint16Array(0) : new Float32Array(0);
    return this._names.past.map(() => new this._ort.Tensor(this._kvType, data, dims));
  }

  _dispose(tensors) {
    for (const t of tensors ?? []) if (t.location === "gpu-buffer") t.dispose();
  }
}

/** The graph's names, after checking the manifest's against what the session has. */
function checkGraph(session, manifest) {
  const names = graphNames(manifest);
  const inputs = new Set(session.inputNames);
  const outputs = new Set(session.outputNames);
  const need = (name, role, where) => {
    if (!where.has(name)) {
      const kind = where === inputs ? "input" : "output";
      throw new EdgeError(
        `${MODEL_FILE} has no ${kind} '${name}', which bundle.json names as io.${role}; the ` +
          "manifest does not belong to this graph: export the bundle again.",
      );
    }
  };
  need(names.inputIds, "input_ids", inputs);
  need(names.logits, "logits", outputs);
  names.past.forEach((n, i) => need(n, i % 2 ? "past_value" : "past_key", inputs));
  names.present.forEach((n, i) => need(n, i % 2 ? "present_value" : "present_key", outputs));
  // Optional inputs, as in the Python runtime: fed only where the graph has them. onnxruntime-web
  // lists no overridable initializer among the inputs and refuses to feed one, so the fused
  // graph's logits_index (which defaults to every position) is left to its default here.
  for (const key of ["attentionMask", "positionIds", "logitsIndex"]) {
    if (!inputs.has(names[key])) names[key] = null;
  }
  return names;
}

/** The KV element type the graph takes, held to the manifest's `architecture.kv_dtype`. */
function kvType(session, names, manifest) {
  const meta = (session.inputMetadata ?? []).find((m) => m.name === names.past[0]);
  const type = meta?.type ?? manifest.architecture.kv_dtype;
  if (type !== manifest.architecture.kv_dtype) {
    throw new EdgeError(
      `bundle.json says the KV cache is ${manifest.architecture.kv_dtype} (architecture.kv_dtype) ` +
        `but ${MODEL_FILE} takes ${type}; export the bundle again.`,
    );
  }
  return type;
}

/** A tensor's data as float32 (fp16 bundles give float16 logits). */
function asFloat32(tensor) {
  const data = tensor.data;
  if (data instanceof Float32Array) return data;
  if (typeof Float16Array !== "undefined" && data instanceof Float16Array) return Float32Array.from(data);
  const out = new Float32Array(data.length); // Uint16Array of IEEE half floats
  for (let i = 0; i < data.length; i++) out[i] = halfToFloat(data[i]);
  return out;
}

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}
