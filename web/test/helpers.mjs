/**
 * What the tests share: a fetch that reads file: URLs (Node's fetch reads only http), and the
 * bundles and reference figures that tests/web/test_web_runtime.py exports and computes with the
 * Python runtime before running these tests (GPT2_EDGE_WEB_REFERENCE names its JSON file).
 */
import { readFile } from "node:fs/promises";
import { pathToFileURL, fileURLToPath } from "node:url";

/** fetch() for file: URLs: a 404 for a missing file, as a static server answers. */
export async function fileFetch(url) {
  try {
    return new Response(await readFile(fileURLToPath(url)));
  } catch (error) {
    if (error.code === "ENOENT") return new Response(null, { status: 404 });
    throw error;
  }
}

/** The folder `path` as a file: URL ending in "/". */
export function folderUrl(path) {
  return pathToFileURL(path.endsWith("/") ? path : `${path}/`).href;
}

/** The Python runtime's reference figures, or null (tests that need them skip). */
export async function reference() {
  const path = process.env.GPT2_EDGE_WEB_REFERENCE;
  if (!path) return null;
  return JSON.parse(await readFile(path, "utf-8"));
}

export const NO_REFERENCE = "needs the bundles and the Python runtime's figures: run it through pytest tests/web";
