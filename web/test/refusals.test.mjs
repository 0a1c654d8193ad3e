// A bundle that is not what bundle.json says is refused in one sentence, before anything runs:
// a corrupted, truncated or missing file, an unknown format version, names the graph lacks.
import assert from "node:assert/strict";
import { cp, mkdtemp, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { load } from "../src/gpt2-edge.mjs";
import { NO_REFERENCE, fileFetch, folderUrl, reference } from "./helpers.mjs";

const ref = await reference();
const skip = !ref && NO_REFERENCE;
const scratch = await mkdtemp(join(tmpdir(), "gpt2-edge-refusals-"));
after(() => rm(scratch, { recursive: true, force: true }));

/** A copy of the fp32 bundle, changed by `change(folder)`. */
async function changedBundle(name, change) {
  const folder = join(scratch, name);
  await cp(ref.bundles.fp32, folder, { recursive: true });
  await change(folder);
  return folder;
}

async function flipByte(path, offset) {
  const bytes = await readFile(path);
  bytes[offset] ^= 0xff;
  await writeFile(path, bytes);
}

async function editManifest(folder, edit) {
  const path = join(folder, "bundle.json");
  const manifest = JSON.parse(await readFile(path, "utf-8"));
  edit(manifest);
  await writeFile(path, JSON.stringify(manifest));
}

const refused = (folder, message) =>
  assert.rejects(load(folderUrl(folder), { fetch: fileFetch }), { name: "EdgeError", message });

test("a corrupted file (same size) is refused by its SHA-256", { skip }, async () => {
  const model = await changedBundle("model", (f) => flipByte(join(f, "model.onnx"), 5000));
  await refused(model, /^model\.onnx does not match its SHA-256 in bundle\.json; the file is corrupt/);
  const tok = await changedBundle("tokenizer", (f) => flipByte(join(f, "tokenizer.json"), 100));
  await refused(tok, /^tokenizer\.json does not match its SHA-256 in bundle\.json/);
});

test("a truncated or missing file is refused", { skip }, async () => {
  const short = await changedBundle("short", (f) => truncate(join(f, "model.onnx"), 1000));
  await refused(short, /^model\.onnx does not have the size that bundle\.json gives it/);
  const missing = await changedBundle("missing", (f) => rm(join(f, "tokenizer.json")));
  await refused(missing, /^tokenizer\.json cannot be downloaded from file:.*\(HTTP 404\)\.$/);
});

test("a manifest this runtime cannot follow is refused", { skip }, async () => {
  const version = await changedBundle("version", (f) => editManifest(f, (m) => { m.format_version = 99; }));
  await refused(version, "bundle.json has format version 99; this runtime knows version 1, 2.");
  const names = await changedBundle("names", (f) => editManifest(f, (m) => { m.io.past_key = "past.%d.k"; }));
  await refused(names, /^model\.onnx has no input 'past\.0\.k', which bundle\.json names as io\.past_key/);
  const kv = await changedBundle("kv", (f) => editManifest(f, (m) => { m.architecture.kv_dtype = "float16"; }));
  await refused(kv, /^bundle\.json says the KV cache is float16 \(architecture\.kv_dtype\) but model\.onnx takes float32/);
  const unlisted = await changedBundle("unlisted", (f) => editManifest(f, (m) => { delete m.files["tokenizer.json"]; }));
  await refused(unlisted, "bundle.json does not list tokenizer.json under files; export the bundle again.");
});
