/**
 * `bundle.json` read as the Python runtime reads it (runtime/bundle.py, runtime/manifest_schema.py):
 * the format and its versions, the architecture, the tensor names of `io` (per-layer names hold
 * one `%d`), special tokens, generation defaults and every file with its size and SHA-256. Nothing
 * here knows a tensor name: they all come from the manifest, with Optimum's names as the defaults
 * the Python runtime gives a manifest that leaves one out.
 */
import { EdgeError, shown } from "./errors.mjs";

export const MANIFEST = "bundle.json";
export const FORMAT_NAME = "gpt2-edge-bundle";
export const KNOWN_VERSIONS = [1, 2];
export const MODEL_FILE = "model.onnx";
export const TOKENIZER_FILE = "tokenizer.json";
export const TOKENIZER_CONFIG_FILE = "tokenizer_config.json";
// The weights beside model.onnx when it is over 32 MiB (the exporter's rule, and bundle.py's).
export const EXTERNAL_DATA = /^model\.onnx[._]data$/;
export const DEFAULT_IO = Object.freeze({
  input_ids: "input_ids",
  attention_mask: "attention_mask",
  position_ids: "position_ids",
  logits_index: "logits_index",
  past_key: "past_key_values.%d.key",
  past_value: "past_key_values.%d.value",
  logits: "logits",
  present_key: "present.%d.key",
  present_value: "present.%d.value",
});
const LAYER_ROLES = ["past_key", "past_value", "present_key", "present_value"];
const SIZES = ["layers", "heads", "head_size", "hidden_size", "context_length", "vocab_size"];
const KV_DTYPES = ["float32", "float16"];
const GRAPH_VALUES = {
  kind: ["optimum", "fused-gqa"],
  kv_cache: ["concat", "shared-buffer"],
  padding: ["left", "right"],
};
const SHA256_HEX = /^[0-9a-f]{64}$/;
const MAX_SIZE = 1 << 20; // manifest_schema.MAX_SIZE
const MAX_CONTEXT_LENGTH = 1 << 16; // manifest_schema.MAX_CONTEXT_LENGTH

const isInt = (v) => Number.isSafeInteger(v);
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

function invalid(name, rule, value) {
  if (value === undefined) return new EdgeError(`${MANIFEST} has no ${name}; it must be ${rule}.`);
  return new EdgeError(`${MANIFEST}: ${name} must be ${rule}, got ${shown(value)}.`);
}

/** A per-layer tensor name for layer `i` ("past_key_values.%d.key" -> "past_key_values.3.key"). */
export function layerName(pattern, i) {
  return pattern.replace("%d", String(i));
}

/**
 * The validated manifest of a parsed `bundle.json`.
 *
 * @param {unknown} data the parsed JSON
 * @returns {{name: string, architecture: object, io: object, special: object, generation: object,
 *   files: object, graph: object, precision: object}}
 * @throws {EdgeError} not a gpt2-edge manifest, an unknown version, or a field of the wrong type
 */
export function readManifest(data) {
  if (!isObject(data) || data.format !== FORMAT_NAME) {
    throw new EdgeError(`${MANIFEST} is not a gpt2-edge manifest (no format '${FORMAT_NAME}').`);
  }
  if (!KNOWN_VERSIONS.includes(data.format_version)) {
    throw new EdgeError(
      `${MANIFEST} has format version ${shown(data.format_version)}; this runtime knows ` +
        `version ${KNOWN_VERSIONS.join(", ")}.`,
    );
  }
  const architecture = readArchitecture(data.architecture);
  const io = { ...DEFAULT_IO, ...readObject(data, "io") };
  for (const [role, name] of Object.entries(io)) {
    if (typeof name !== "string" || !name) throw invalid(`io.${role}`, "a non-empty tensor name", name);
    if (LAYER_ROLES.includes(role) && !(name.split("%d").length === 2 && !name.replace("%d", "").includes("%"))) {
      throw invalid(`io.${role}`, "a tensor name with one '%d' for the layer index", name);
    }
  }
  const graph = readObject(data, "graph");
  for (const [key, known] of Object.entries(GRAPH_VALUES)) {
    if (key in graph && !known.includes(graph[key])) {
      throw invalid(`graph.${key}`, `one of ${known.map((v) => `'${v}'`).join(", ")}`, graph[key]);
    }
  }
  const special = readObject(data, "special_tokens");
  for (const [key, id] of Object.entries(special)) {
    if (id !== null && !(isInt(id) && id >= 0 && id < architecture.vocab_size)) {
      throw invalid(`special_tokens.${key}`, `null or a token id in [0, ${architecture.vocab_size})`, id);
    }
  }
  const files = readFiles(readObject(data, "files"));
  return {
    name: typeof data.name === "string" ? data.name : "model",
    architecture,
    io,
    special,
    generation: readObject(data, "generation"),
    files,
    graph,
    precision: readObject(data, "precision"),
  };
}

function readObject(data, key) {
  const value = data[key];
  if (value === undefined) return {};
  if (!isObject(value)) throw invalid(key, "an object", value);
  return value;
}

function readArchitecture(arch) {
  if (!isObject(arch)) throw invalid("architecture", "an object", arch);
  for (const key of SIZES) {
    const limit = key === "context_length" ? MAX_CONTEXT_LENGTH : MAX_SIZE;
    const value = arch[key];
    if (!isInt(value) || value < 1 || value > limit) {
      throw invalid(`architecture.${key}`, `a positive integer (at most ${limit})`, value);
    }
  }
  if (arch.hidden_size !== arch.heads * arch.head_size) {
    throw new EdgeError(
      `${MANIFEST}: architecture.hidden_size is ${arch.hidden_size} but heads x head_size is ` +
        `${arch.heads} x ${arch.head_size} = ${arch.heads * arch.head_size}; they must be equal.`,
    );
  }
  const kv = arch.kv_dtype ?? "float32";
  if (!KV_DTYPES.includes(kv)) throw invalid("architecture.kv_dtype", "'float32' or 'float16'", kv);
  return { ...arch, kv_dtype: kv };
}

function readFiles(files) {
  const names = Object.keys(files);
  if (!names.length) {
    throw new EdgeError(`${MANIFEST} lists no files, so the bundle's integrity cannot be checked.`);
  }
  for (const name of names) {
    const entry = files[name];
    const parts = name.split(/[\\/]/);
    if (!name || name.startsWith("/") || /^[A-Za-z]:/.test(name) || parts.includes("..")) {
      throw new EdgeError(`${MANIFEST}: files.${name} must be a relative path inside the bundle.`);
    }
    if (!isObject(entry)) throw invalid(`files.${name}`, "an object with size and sha256", entry);
    if (!isInt(entry.size) || entry.size < 0) {
      throw invalid(`files.${name}.size`, "an integer >= 0 (bytes)", entry.size);
    }
    // The Python runtime lets a file go unhashed; a page fetches over a network, so it does not.
    if (typeof entry.sha256 !== "string" || !SHA256_HEX.test(entry.sha256)) {
      throw invalid(`files.${name}.sha256`, "64 lowercase hexadecimal digits", entry.sha256);
    }
  }
  for (const needed of [MODEL_FILE, TOKENIZER_FILE]) {
    if (!(needed in files)) {
      throw new EdgeError(`${MANIFEST} does not list ${needed} under files; export the bundle again.`);
    }
  }
  return files;
}
