// SHA-256 from the browser (crypto.subtle) and from @noble/hashes where a page is not a secure
// context (plain http from another address), which has no crypto.subtle.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { sha256Hex } from "../src/files.mjs";

const bytes = new Uint8Array(300_000).map((_, i) => (i * 7919) % 251);
const expected = createHash("sha256").update(bytes).digest("hex");

test("SHA-256 through crypto.subtle", async () => {
  assert.equal(await sha256Hex(bytes), expected);
});

test("SHA-256 through @noble/hashes when crypto.subtle is missing", async () => {
  const original = Object.getOwnPropertyDescriptor(globalThis, "crypto");
  const real = globalThis.crypto;
  const insecure = { getRandomValues: (a) => real.getRandomValues(a) }; // and no subtle
  Object.defineProperty(globalThis, "crypto", { value: insecure, configurable: true });
  try {
    assert.equal(globalThis.crypto.subtle, undefined);
    assert.equal(await sha256Hex(bytes), expected);
  } finally {
    Object.defineProperty(globalThis, "crypto", original);
  }
});
