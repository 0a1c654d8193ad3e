// Encoding and decoding against the Python runtime's tokenizer, and streaming that never shows
// half a character.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { before, test } from "node:test";
import { Tokenizer } from "../src/tokenizer.mjs";
import { NO_REFERENCE, reference } from "./helpers.mjs";

const ref = await reference();
let tokenizer;

before(async () => {
  if (!ref) return;
  const folder = ref.bundles.fp32;
  const json = JSON.parse(await readFile(join(folder, "tokenizer.json"), "utf-8"));
  const config = JSON.parse(await readFile(join(folder, "tokenizer_config.json"), "utf-8"));
  tokenizer = new Tokenizer(json, config);
});

test("encode and decode give the Python tokenizer's ids and text", { skip: !ref && NO_REFERENCE }, () => {
  for (const { text, ids, decoded } of ref.encodings) {
    assert.deepEqual(tokenizer.encode(text), ids, text);
    assert.equal(tokenizer.decode(ids), decoded, text);
  }
});

test("streamed pieces join to the full decode and never split a character", { skip: !ref && NO_REFERENCE }, () => {
  let held = 0;
  for (const { ids, decoded } of ref.encodings) {
    const stream = tokenizer.stream();
    const pieces = ids.map((id) => stream.push(id));
    pieces.push(stream.finish());
    assert.equal(pieces.join(""), decoded);
    for (const piece of pieces) {
      assert.ok(piece.isWellFormed() && !piece.includes("\uFFFD"), JSON.stringify(piece));
    }
    held += pieces.filter((p) => p === "").length;
  }
  assert.ok(held > 0, "the emoji and CJK texts have characters that span tokens, held back");
  // Bytes that never complete a character come out at the end as U+FFFD, as decode() gives them.
  const emoji = tokenizer.encode("🎉");
  assert.ok(emoji.length > 1);
  const stream = tokenizer.stream();
  assert.equal(stream.push(emoji[0]), "");
  assert.equal(stream.finish(), tokenizer.decode([emoji[0]]));
});
