// The sampler's filters on hand-written distributions with known answers, the seeded draw, and
// the settings' sentences (runtime/filters.py and runtime/settings.py hold the same rules).
import assert from "node:assert/strict";
import { test } from "node:test";
import { Rng } from "../src/rng.mjs";
import {
  Sampler,
  applyMinP,
  applyTemperature,
  applyTopK,
  applyTopP,
  argmax,
  draw,
} from "../src/sampling.mjs";
import { resolveSettings } from "../src/settings.mjs";

const PROBS = [0.5, 0.3, 0.15, 0.05];
const logits = () => Float32Array.from(PROBS, Math.log);
const kept = (scores) => [...scores.keys()].filter((i) => scores[i] > -Infinity);

test("argmax takes the first of equal maxima, as numpy", () => {
  assert.equal(argmax(Float32Array.from([1, 3, 3, 2])), 1);
  assert.equal(argmax(Float32Array.from([-Infinity, -5])), 1);
});

test("temperature keeps the order and sharpens or flattens the distribution", () => {
  const scores = applyTemperature(logits(), 0.5);
  assert.equal(scores[0], 0); // the top token, after the shift by the maximum
  assert.ok(Math.abs(scores[1] - 2 * Math.log(0.3 / 0.5)) < 1e-6);
  // Near 0 no NaN appears: the top stays 0 and the others fall to -Infinity or so far below that
  // only the top token is ever drawn (the limit of sampling as the temperature goes to 0).
  const rng = new Rng(1);
  for (const temperature of [1e-300, 1e-320]) {
    const tiny = applyTemperature(logits(), temperature);
    assert.ok(tiny.every((s) => !Number.isNaN(s)) && tiny[0] === 0);
    for (let i = 0; i < 100; i++) assert.equal(draw(tiny, rng), 0);
  }
});

test("top-k keeps the k largest and ties with the k-th", () => {
  assert.deepEqual(kept(applyTopK(applyTemperature(logits(), 1), 2)), [0, 1]);
  const tied = applyTemperature(Float32Array.from([2, 1, 1, 0]), 1);
  assert.deepEqual(kept(applyTopK(tied, 2)), [0, 1, 2]);
  assert.deepEqual(kept(applyTopK(tied, 0)), [0, 1, 2, 3]); // 0 is off
});

test("top-p keeps a token while the mass ranked above it is below p", () => {
  const scores = applyTemperature(logits(), 1);
  assert.deepEqual(kept(applyTopP(scores, 0.75)), [0, 1]); // above token 2: 0.8 >= 0.75
  assert.deepEqual(kept(applyTopP(scores, 0.85)), [0, 1, 2]);
  assert.deepEqual(kept(applyTopP(scores, 0.01)), [0]); // the top token always survives
  assert.deepEqual(kept(applyTopP(scores, 1)), [0, 1, 2, 3]);
});

test("min-p drops tokens below min_p times the top probability", () => {
  const scores = applyTemperature(logits(), 1);
  assert.deepEqual(kept(applyMinP(scores, 0.2)), [0, 1, 2]); // keeps p >= 0.1
  assert.deepEqual(kept(applyMinP(scores, 0.4)), [0, 1]); // keeps p >= 0.2
});

test("the draw follows the distribution and never picks a filtered token", () => {
  const rng = new Rng(7);
  const counts = [0, 0, 0, 0];
  const scores = applyTemperature(logits(), 1);
  const n = 40000;
  for (let i = 0; i < n; i++) counts[draw(scores, rng)] += 1;
  PROBS.forEach((p, i) => assert.ok(Math.abs(counts[i] / n - p) < 0.01, `token ${i}: ${counts[i] / n}`));
  const filtered = applyTopK(scores, 2);
  for (let i = 0; i < 2000; i++) assert.ok(draw(filtered, rng) < 2);
});

test("the same seed gives the same draws; another seed other draws", () => {
  const scores = applyTemperature(Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i)), 1);
  const run = (seed) => {
    const rng = new Rng(seed);
    return Array.from({ length: 50 }, () => draw(scores, rng));
  };
  assert.deepEqual(run(1234), run(1234));
  assert.notDeepEqual(run(1234), run(1235));
  assert.notDeepEqual(run(0), run(2 ** 32)); // both halves of a large seed count
  const rng = new Rng(3);
  const values = Array.from({ length: 20000 }, () => rng.random());
  assert.ok(values.every((v) => v >= 0 && v < 1));
  assert.ok(Math.abs(values.reduce((a, b) => a + b) / values.length - 0.5) < 0.01);
});

test("a sampler with temperature 0 is greedy, and top_k 1 samples the argmax", () => {
  const { settings } = resolveSettings({ temperature: 0 });
  assert.equal(new Sampler(settings).pick(logits()), 0);
  const top1 = new Sampler(resolveSettings({ temperature: 1.5, top_k: 1, seed: 9 }).settings);
  for (let i = 0; i < 50; i++) assert.equal(top1.pick(Float32Array.from([0, 1, 5, 2])), 2);
});

test("settings resolve caller, then bundle defaults, then built-ins, in sentences", () => {
  const { settings } = resolveSettings({ top_k: 5 }, { temperature: 0, top_k: 40 });
  assert.equal(settings.temperature, 0);
  assert.equal(settings.top_k, 5);
  assert.equal(settings.max_new_tokens, 128);
  assert.deepEqual(resolveSettings({ stop: "\n" }).settings.stop, ["\n"]);
  const refused = [
    [{ temperature: -1 }, /^temperature must be a number >= 0 \(0 means greedy\), got -1\.$/],
    [{ top_p: 0 }, /^top_p must be a number in \(0, 1\]/],
    [{ top_k: 1.5 }, /^top_k must be an integer >= 0/],
    [{ max_new_tokens: 0 }, /^max_new_tokens must be an integer >= 1/],
    [{ stop: [""] }, /^stop must be a non-empty string or a list of them\.$/],
    [{ seed: -2 }, /^seed must be an integer >= 0/],
    [{ colour: 1 }, /^Unknown setting 'colour'; the settings are /],
    [{ repetition_penalty: 1.2 }, /^The browser runtime does not offer repetition_penalty/],
  ];
  for (const [given, message] of refused) {
    assert.throws(() => resolveSettings(given), { name: "EdgeError", message });
  }
  assert.doesNotThrow(() => resolveSettings({ repetition_penalty: 1.0 })); // neutral: nothing to do
});
