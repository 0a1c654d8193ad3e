/**
 * The next token from the last position's logits, in the Python runtime's order
 * (runtime/sampling.py, runtime/filters.py, transformers' warpers): temperature, top-k, top-p,
 * min-p, then a categorical draw; temperature 0 is a bare argmax. Each filter takes and returns a
 * Float64Array of scores with the tokens it removes at -Infinity, and none changes the argmax.
 *
 * Scores are the logits minus their maximum, divided by the temperature: the same softmax, and a
 * temperature near 0 then gives 0 for the top token and -Infinity (not NaN) for the others.
 */
import { Rng, freshSeed } from "./rng.mjs";

/** Index of the largest logit (the first of equal ones, as numpy's argmax). */
export function argmax(logits) {
  let best = 0;
  let top = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i] > top) {
      top = logits[i];
      best = i;
    }
  }
  return best;
}

/** (logits - max) / temperature as float64 scores. */
export function applyTemperature(logits, temperature) {
  let top = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > top) top = logits[i];
  const scores = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) scores[i] = (logits[i] - top) / temperature;
  return scores;
}

/** Keep each the `k` largest scores, plus any tied with the k-th (as transformers); 0 is off. */
export function applyTopK(scores, k) {
  if (k <= 0 || k >= scores.length) return scores;
  const sorted = Float64Array.from(scores).sort(); // ascending
  return maskBelow(scores, sorted[scores.length - k]);
}

/**
 * Keep the smallest set of most likely tokens whose probability reaches `topP`: a token is kept
 * when the probability ranked above it is below `topP`, so the top token always is; tokens tied
 * with the last kept one are kept too. 1 is off.
 */
export function applyTopP(scores, topP) {
  if (topP >= 1) return scores;
  const ranked = scores.filter((s) => s > -Infinity).sort().reverse(); // descending
  if (!ranked.length) return scores;
  const top = ranked[0];
  let total = 0;
  for (const s of ranked) total += Math.exp(s - top);
  const target = topP * total;
  let mass = 0;
  let below = 0; // how many of the running sums before the last token are under the target
  for (let j = 0; j < ranked.length - 1; j++) {
    mass += Math.exp(ranked[j] - top);
    if (!(mass < target)) break;
    below = j + 1;
  }
  return maskBelow(scores, ranked[below]);
}

/** Drop tokens less likely than `minP` times the most likely one; 0 is off. */
export function applyMinP(scores, minP) {
  if (minP <= 0) return scores;
  let top = -Infinity;
  for (const s of scores) if (s > top) top = s;
  return maskBelow(scores, top + Math.log(minP));
}

function maskBelow(scores, threshold) {
  const out = new Float64Array(scores.length);
  for (let i = 0; i < scores.length; i++) out[i] = scores[i] >= threshold ? scores[i] : -Infinity;
  return out;
}

/** One token from softmax(scores) by one uniform number of `rng` and the inverse CDF. */
export function draw(scores, rng) {
  let top = -Infinity;
  for (const s of scores) if (s > top) top = s;
  if (top === -Infinity) return argmax(scores);
  const weights = new Float64Array(scores.length);
  let total = 0;
  for (let i = 0; i < scores.length; i++) {
    weights[i] = Math.exp(scores[i] - top); // -Infinity gives 0: never drawn
    total += weights[i];
  }
  const target = rng.random() * total;
  let mass = 0;
  let last = -1; // the last token with weight, for a target rounding puts past the total
  for (let i = 0; i < weights.length; i++) {
    if (weights[i] === 0) continue;
    mass += weights[i];
    last = i;
    if (mass > target) return i;
  }
  return last;
}

/**
 * A sampler for resolved settings (settings.mjs): `pick(logits)` returns the next token id.
 * Seeded by `settings.seed`, or by fresh entropy when it is null; `seed` says which was used.
 */
export class Sampler {
  constructor(settings) {
    this.settings = settings;
    this.greedy = settings.temperature === 0;
    this.seed = settings.seed ?? freshSeed();
    this._rng = new Rng(this.seed);
  }

  /** The next token from the last position's logits (a Float32Array of the vocabulary size). */
  pick(logits) {
    if (this.greedy) return argmax(logits);
    const s = this.settings;
    let scores = applyTemperature(logits, s.temperature);
    scores = applyTopK(scores, s.top_k);
    scores = applyTopP(scores, s.top_p);
    scores = applyMinP(scores, s.min_p);
    return draw(scores, this._rng);
  }
}
