/**
 * Downloading a bundle's files, each checked against its size and SHA-256 in `bundle.json` before
 * anything uses it: a mismatch is one sentence naming the file, and nothing is loaded.
 *
 * SHA-256 comes from the browser (`crypto.subtle`), which only a secure context has (https, or
 * http on localhost); a page served over plain http from another address (a laptop's address
 * opened on a phone) falls back to @noble/hashes, an audited JavaScript implementation.
 */
import { EdgeError } from "./errors.mjs";
import { MANIFEST, readManifest } from "./manifest.mjs";

/** Lowercase hexadecimal SHA-256 of `bytes` (a Uint8Array). */
export async function sha256Hex(bytes) {
  let digest;
  const subtle = globalThis.crypto?.subtle;
  if (subtle) {
    digest = new Uint8Array(await subtle.digest("SHA-256", bytes));
  } else {
    const { sha256 } = await import("@noble/hashes/sha2.js");
    digest = sha256(bytes);
  }
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The bytes at `url`, read whole.
 *
 * @param {string} url
 * @param {string} name the file's name, for messages
 * @param {{fetch?: Function, size?: number, onProgress?: Function, listedIn?: string}} options
 *   `size` (when known, from the listing `listedIn`) bounds the download and lets
 *   `onProgress(done, total)` report it
 */
export async function download(url, name, { fetch = globalThis.fetch, size, onProgress, listedIn } = {}) {
  let response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new EdgeError(`${name} cannot be downloaded from ${url} (${error.message || error}).`);
  }
  if (!response.ok) {
    throw new EdgeError(`${name} cannot be downloaded from ${url} (HTTP ${response.status}).`);
  }
  if (size === undefined || !response.body || !onProgress) {
    return new Uint8Array(await response.arrayBuffer());
  }
  // Read into one buffer of the listed size, reporting progress; more bytes than listed is
  // already the wrong file.
  const bytes = new Uint8Array(size);
  const reader = response.body.getReader();
  let done = 0;
  for (;;) {
    const { value, done: finished } = await reader.read();
    if (finished) break;
    if (done + value.byteLength > size) {
      await reader.cancel();
      throw wrongSize(name, listedIn);
    }
    bytes.set(value, done);
    done += value.byteLength;
    onProgress(done, size);
  }
  return done === size ? bytes : bytes.subarray(0, done);
}

function wrongSize(name, listedIn = MANIFEST) {
  return new EdgeError(
    `${name} does not have the size that ${listedIn} gives it; the download is incomplete or the ` +
      "file was changed: copy the pack again.",
  );
}

/**
 * A file after checking its size and SHA-256 against its entry in a listing: the bundle's
 * bundle.json (the default), or the pack's pack.json (`options.listedIn`).
 *
 * @throws {EdgeError} it cannot be downloaded, or its size or SHA-256 differs
 */
export async function verifiedFile(baseUrl, name, entry, options = {}) {
  const listedIn = options.listedIn ?? MANIFEST;
  const url = new URL(name, baseUrl).href;
  const onProgress = options.onProgress && ((done, total) => options.onProgress(name, done, total));
  const bytes = await download(url, name, { ...options, size: entry.size, onProgress, listedIn });
  if (bytes.byteLength !== entry.size) throw wrongSize(name, listedIn);
  if ((await sha256Hex(bytes)) !== entry.sha256) {
    const remedy = listedIn === MANIFEST ? "copy the pack again or export the bundle again" : "copy the pack again";
    throw new EdgeError(
      `${name} does not match its SHA-256 in ${listedIn}; the file is corrupt or was changed: ${remedy}.`,
    );
  }
  return bytes;
}

/**
 * The validated manifest of the bundle at `baseUrl` (a folder URL ending in "/").
 *
 * @throws {EdgeError} it cannot be downloaded, is not JSON, or is not a valid manifest
 */
export async function fetchManifest(baseUrl, options = {}) {
  const url = new URL(MANIFEST, baseUrl).href;
  const bytes = await download(url, MANIFEST, options);
  let data;
  try {
    data = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (error) {
    throw new EdgeError(`${url} cannot be read as JSON (${error.message}).`);
  }
  return readManifest(data);
}

/** A verified JSON file of the bundle, parsed. */
export async function verifiedJson(baseUrl, name, entry, options = {}) {
  const bytes = await verifiedFile(baseUrl, name, entry, options);
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (error) {
    throw new EdgeError(`${name} cannot be read as JSON (${error.message}).`);
  }
}
