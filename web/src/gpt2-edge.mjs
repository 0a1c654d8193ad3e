/**
 * gpt2-edge in a web page: `load(baseUrl)` opens the bundle at `baseUrl` on onnxruntime-web and
 * gives a {@link Generator} with `generate(prompt, settings)` and `stream(prompt, settings)`.
 *
 * Imports go through three bare names that the page's import map points at the vendored files
 * (under Node they resolve through web/node_modules): "onnxruntime-web" (the WASM build),
 * "onnxruntime-web/webgpu" (the build with WebGPU) and "@huggingface/tokenizers".
 *
 * Every file of the bundle is checked against its size and SHA-256 in bundle.json before use; with
 * `pack` (the pack's pack.json), so is onnxruntime-web's WebAssembly binary, which is then handed
 * to onnxruntime-web instead of being fetched by it.
 */
import { Decoder, sessionOptions } from "./decoder.mjs";
import { EdgeError } from "./errors.mjs";
import { download, fetchManifest, sha256Hex, verifiedFile, verifiedJson } from "./files.mjs";
import { Generator } from "./generator.mjs";
import { EXTERNAL_DATA, MODEL_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE } from "./manifest.mjs";
import { Tokenizer } from "./tokenizer.mjs";

export { EdgeError } from "./errors.mjs";
export { Generator } from "./generator.mjs";

export const PROVIDERS = ["auto", "wasm", "webgpu"];
const ORT_MODULES = { wasm: "onnxruntime-web", webgpu: "onnxruntime-web/webgpu" };
const THREADS_NEED_ISOLATION =
  "WASM threads need a cross-origin isolated page (served with the Cross-Origin-Opener-Policy and " +
  "Cross-Origin-Embedder-Policy headers, see the pack's README); running on 1 thread.";

/**
 * Open the bundle at `baseUrl`.
 *
 * @param {string|URL} baseUrl the bundle's folder (where bundle.json is)
 * @param {object} [options]
 * @param {string} [options.provider] "auto" (default: WebGPU where the browser offers an adapter,
 *   else WASM), "wasm" or "webgpu"
 * @param {number} [options.threads] WASM threads (default: onnxruntime-web's choice on a
 *   cross-origin isolated page, 1 elsewhere)
 * @param {string|URL} [options.pack] the pack's pack.json, whose SHA-256 of onnxruntime-web's
 *   binary is checked before it runs
 * @param {Function} [options.onProgress] called as (message, done, total) while downloading
 * @param {Function} [options.fetch] the fetch to use (tests read files through it)
 * @param {object} [options.ort] an onnxruntime-web module to use instead of importing one
 * @returns {Promise<Generator>}
 * @throws {EdgeError} a file is missing, corrupt or not what bundle.json says; a bad option
 */
export async function load(baseUrl, options = {}) {
  const { onProgress, threads } = options;
  const fetchOptions = { fetch: options.fetch ?? globalThis.fetch.bind(globalThis), onProgress };
  if (!PROVIDERS.includes(options.provider ?? "auto")) {
    throw new EdgeError(`provider must be one of ${PROVIDERS.join(", ")}, got '${options.provider}'.`);
  }
  if (threads !== undefined && !(Number.isSafeInteger(threads) && threads >= 1)) {
    throw new EdgeError(`threads must be an integer >= 1, got ${threads}.`);
  }
  const base = folderUrl(baseUrl);
  const manifest = await fetchManifest(base, fetchOptions);
  const files = manifest.files;
  const tokenizerConfig = TOKENIZER_CONFIG_FILE in files
    ? verifiedJson(base, TOKENIZER_CONFIG_FILE, files[TOKENIZER_CONFIG_FILE], fetchOptions)
    : {};
  const external = Object.keys(files)
    .filter((name) => EXTERNAL_DATA.test(name))
    .map(async (name) => ({ path: name, data: await verifiedFile(base, name, files[name], fetchOptions) }));
  // All at once, and awaited together: the first failure is the one reported, and the others'
  // are not left unhandled.
  const [tokenizerJson, config, bytes, externalData] = await Promise.all([
    verifiedJson(base, TOKENIZER_FILE, files[TOKENIZER_FILE], fetchOptions),
    tokenizerConfig,
    verifiedFile(base, MODEL_FILE, files[MODEL_FILE], fetchOptions),
    Promise.all(external),
  ]);
  const tokenizer = new Tokenizer(tokenizerJson, config);
  if (tokenizer.tokenCount > manifest.architecture.vocab_size) {
    throw new EdgeError(
      `bundle.json: architecture.vocab_size is ${manifest.architecture.vocab_size} but ` +
        `${TOKENIZER_FILE} has ${tokenizer.tokenCount} tokens; the tokenizer does not belong to this model.`,
    );
  }
  const notices = [];
  let provider = options.provider ?? "auto";
  if (provider !== "wasm") {
    const { why, adapter } = await webgpuMissing(manifest);
    if (why && provider === "webgpu") throw new EdgeError(`${why}; use the WASM backend (provider "wasm").`);
    if (why && adapter) notices.push(`${why}; running on WASM.`); // no adapter at all is the usual case
    provider = why ? "wasm" : "webgpu";
  }
  let opened;
  try {
    opened = await openSession(provider, bytes, externalData, manifest, options, fetchOptions);
  } catch (error) {
    if (options.provider === "webgpu" || provider !== "webgpu" || error instanceof EdgeError) throw error;
    notices.push(`WebGPU could not run this model (${error.message || error}); running on WASM.`);
    provider = "wasm";
    opened = await openSession(provider, bytes, externalData, manifest, options, fetchOptions);
  }
  const { ort, session } = opened;
  const running = ort.env.wasm.numThreads;
  if (threads > 1 && running === 1) notices.push(THREADS_NEED_ISOLATION);
  const decoder = new Decoder(ort, session, manifest);
  return new Generator({ decoder, tokenizer, manifest, notices, provider, threads: running });
}

async function openSession(provider, bytes, externalData, manifest, options, fetchOptions) {
  const ort = options.ort ?? (await import(ORT_MODULES[provider]));
  const wasm = ort.env.wasm;
  // Set before the first session: onnxruntime-web starts its WebAssembly module once.
  if (options.threads !== undefined) wasm.numThreads = options.threads;
  else if (globalThis.crossOriginIsolated === false) wasm.numThreads = 1;
  if (options.pack && !wasm.wasmBinary) {
    wasm.wasmBinary = await verifiedRuntime(options.pack, provider, fetchOptions);
  }
  ort.env.logLevel = "error";
  let session;
  try {
    session = await ort.InferenceSession.create(bytes, sessionOptions(manifest, provider, externalData));
  } catch (error) {
    if (provider === "webgpu") throw error; // load() falls back to WASM
    throw new EdgeError(`onnxruntime-web cannot open ${MODEL_FILE} (${error.message || error}).`);
  }
  return { ort, session };
}

/**
 * onnxruntime-web's WebAssembly binary for `provider`, checked against the pack's manifest.
 * pack.json (written by gpt2-pack) lists each vendored file with its SHA-256 and, under
 * `onnxruntime_web.builds`, which binary each build loads.
 */
async function verifiedRuntime(packUrl, provider, fetchOptions) {
  const url = new URL(String(packUrl), globalThis.location?.href).href;
  const bytes = await download(url, "pack.json", fetchOptions);
  const pack = JSON.parse(new TextDecoder().decode(bytes));
  const name = pack.onnxruntime_web?.builds?.[provider]?.wasm;
  const entry = pack.files?.[name];
  if (!name || !entry) throw new EdgeError(`pack.json lists no onnxruntime-web binary for ${provider}; make the pack again.`);
  const binary = await verifiedFile(url, name, entry, { ...fetchOptions, listedIn: "pack.json" });
  return binary.buffer.byteLength === binary.byteLength ? binary.buffer : binary.slice().buffer;
}

/**
 * `why`: why WebGPU cannot run this bundle here (a sentence without its end), or null when it
 * can: the browser offers no adapter, or the bundle computes in float16 (its KV cache, or all of
 * it) and the adapter lacks "shader-f16" (SwiftShader's software adapter, for one).
 */
async function webgpuMissing(manifest) {
  let adapter = null;
  try {
    adapter = (await globalThis.navigator?.gpu?.requestAdapter()) ?? null;
  } catch {
    adapter = null;
  }
  if (!adapter) return { why: "This browser offers no WebGPU adapter", adapter: false };
  const half = manifest.architecture.kv_dtype === "float16" || manifest.precision.dtype === "float16";
  if (half && !adapter.features.has("shader-f16")) {
    const why = "This browser's WebGPU adapter has no shader-f16, which this bundle's float16 tensors need";
    return { why, adapter: true };
  }
  return { why: null, adapter: true };
}

/** `url` as an absolute folder URL (ending in "/"), relative to the page when there is one. */
function folderUrl(url) {
  const text = String(url);
  const absolute = new URL(text.endsWith("/") ? text : `${text}/`, globalThis.location?.href);
  return absolute.href;
}

export { sha256Hex };
