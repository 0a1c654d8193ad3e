// The fixture's bundles in the JavaScript runtime, held to the Python runtime's figures: greedy
// tokens (fused graph in fp32 and int8, Optimum's graph), perplexity, stop strings, EOS, the
// context bound, seeds and streaming.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { load } from "../src/gpt2-edge.mjs";
import { NO_REFERENCE, fileFetch, folderUrl, reference } from "./helpers.mjs";

const ref = await reference();
const skip = !ref && NO_REFERENCE;
const loaded = new Map();

/** The generator of one of the reference's bundles (by kind), loaded once. */
function generator(kind, folder = ref.bundles[kind]) {
  if (!loaded.has(folder)) loaded.set(folder, load(folderUrl(folder), { fetch: fileFetch }));
  return loaded.get(folder);
}

const GREEDY = () => ({ max_new_tokens: ref.max_new_tokens, temperature: 0, ignore_eos: true });

for (const kind of ["fp32", "optimum"]) {
  test(`${kind}: the Python runtime's greedy tokens for every prompt`, { skip }, async () => {
    const gen = await generator(kind);
    for (const [i, prompt] of ref.prompts.entries()) {
      const result = await gen.generate(prompt, GREEDY());
      assert.deepEqual(result.tokens, ref.greedy[kind][i], prompt);
      assert.equal(result.finish_reason, "length");
    }
  });
}

test("int8: at least 90% of the Python runtime's greedy tokens", { skip }, async () => {
  const gen = await generator("int8");
  let same = 0;
  let total = 0;
  for (const [i, prompt] of ref.prompts.entries()) {
    const { tokens } = await gen.generate(prompt, GREEDY());
    const expected = ref.greedy.int8[i];
    assert.equal(tokens.length, expected.length);
    same += tokens.filter((t, j) => t === expected[j]).length;
    total += expected.length;
  }
  assert.ok(same / total >= 0.9, `${same} of ${total} tokens agree`);
});

test("perplexity on WikiText-2 within 1% of gpt2-eval's (fp32 and int8)", { skip }, async () => {
  const { perplexity: p } = ref;
  const text = await readFile(p.text, "utf-8");
  for (const kind of ["fp32", "int8"]) {
    const gen = await generator(kind);
    const ids = gen.tokenizer.encode(text).slice(0, p.tokens);
    assert.deepEqual(ids, p.ids);
    const { perplexity } = await gen.perplexity(ids, { context: p.context });
    const change = Math.abs(perplexity / p[kind] - 1);
    assert.ok(change < 0.01, `${kind}: ${perplexity} against ${p[kind]}`);
  }
});

test("a stop string split over tokens ends the text before it, as in Python", { skip }, async () => {
  const gen = await generator("fp32");
  const { prompt, stop, text, tokens, finish_reason } = ref.stop;
  const result = await gen.generate(prompt, { max_new_tokens: ref.max_new_tokens, temperature: 0, stop });
  assert.deepEqual({ text: result.text, tokens: result.tokens, finish_reason: result.finish_reason }, { text, tokens, finish_reason });
  assert.ok(!result.text.includes(stop[0]));
});

test("EOS ends the text without showing it, as in Python", { skip }, async () => {
  const { bundle, prompt, text, tokens, finish_reason } = ref.eos;
  const gen = await generator("eos", bundle);
  const result = await gen.generate(prompt, { max_new_tokens: ref.max_new_tokens, temperature: 0 });
  assert.deepEqual({ text: result.text, tokens: result.tokens, finish_reason: result.finish_reason }, { text, tokens, finish_reason });
  assert.equal(result.tokens.at(-1), ref.eos.eos);
  const ignored = await gen.generate(prompt, { max_new_tokens: 8, temperature: 0, ignore_eos: true });
  assert.equal(ignored.finish_reason, "length");
});

test("the same seed gives the same text; another seed another text", { skip }, async () => {
  const gen = await generator("int8");
  const settings = (seed) => ({ max_new_tokens: 24, temperature: 1, top_k: 0, seed, ignore_eos: true });
  const a = await gen.generate("The history of the city", settings(1234));
  const b = await gen.generate("The history of the city", settings(1234));
  const c = await gen.generate("The history of the city", settings(99));
  assert.equal(a.text, b.text);
  assert.deepEqual(a.tokens, b.tokens);
  assert.notDeepEqual(a.tokens, c.tokens);
  assert.equal(a.seed, 1234);
});

test("streamed pieces join to the generated text, and top-k/top-p/min-p only narrow it", { skip }, async () => {
  const gen = await generator("fp32");
  const settings = { max_new_tokens: 24, temperature: 0.9, top_k: 20, top_p: 0.9, min_p: 0.05, seed: 5 };
  const pieces = [];
  const stream = gen.stream("The history of the city", settings);
  for await (const piece of stream) pieces.push(piece);
  const result = await stream.result;
  assert.equal(pieces.join(""), result.text);
  assert.equal(result.text, (await gen.generate("The history of the city", settings)).text);
  // top_k 1 and a tiny top_p both leave only the argmax: sampling then equals greedy.
  const greedy = await gen.generate("The game was", { max_new_tokens: 16, temperature: 0, ignore_eos: true });
  for (const narrow of [{ top_k: 1 }, { top_p: 1e-6 }, { min_p: 1 }]) {
    const sampled = await gen.generate("The game was", { max_new_tokens: 16, temperature: 1.3, seed: 7, ignore_eos: true, ...narrow });
    assert.deepEqual(sampled.tokens, greedy.tokens, JSON.stringify(narrow));
  }
});

test("the context bound: generation stops at the context's end, a longer prompt is refused", { skip }, async () => {
  const gen = await generator("fp32");
  const context = gen.contextLength;
  const prompt = " the".repeat(context - 3);
  assert.equal(gen.encode(prompt).length, context - 3);
  const result = await gen.generate(prompt, { max_new_tokens: 10, temperature: 0, ignore_eos: true });
  assert.equal(result.finish_reason, "context");
  assert.equal(result.tokens.length, 3);
  assert.throws(() => gen.stream(" the".repeat(context), { max_new_tokens: 1 }), {
    name: "EdgeError",
    message: `The prompt is ${context} tokens long but the model's context is ${context}, so at most ${context - 1} fit.`,
  });
});

test("an AbortSignal or leaving the stream early ends the run with 'abort'", { skip }, async () => {
  const gen = await generator("fp32");
  const controller = new AbortController();
  const stream = gen.stream("The history of the city", { max_new_tokens: 50, temperature: 0, ignore_eos: true, signal: controller.signal });
  let count = 0;
  for await (const piece of stream) {
    if (piece && ++count === 3) controller.abort();
  }
  const aborted = await stream.result;
  assert.equal(aborted.finish_reason, "abort");
  assert.ok(aborted.tokens.length < 10);
  const left = gen.stream("The game was", { max_new_tokens: 50, temperature: 0, ignore_eos: true });
  for await (const piece of left) if (piece) break;
  assert.equal((await left.result).finish_reason, "abort");
  const after = await gen.generate("The game was", { max_new_tokens: 4, temperature: 0, ignore_eos: true });
  assert.equal(after.tokens.length, 4); // the next run is not blocked by the one left early
});
