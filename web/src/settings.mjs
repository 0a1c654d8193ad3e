/**
 * Generation settings, validated into sentences and resolved as the Python runtime resolves them
 * (runtime/settings.py): the caller's value, else the bundle's `generation` default, else the
 * built-in default here. Each sampling default turns its step off, so default settings sample from
 * the model's distribution; temperature 0 is greedy.
 */
import { EdgeError } from "./errors.mjs";

export const DEFAULTS = Object.freeze({
  max_new_tokens: 128,
  temperature: 1.0,
  top_k: 0,
  top_p: 1.0,
  min_p: 0.0,
  seed: null,
  stop: [],
  ignore_eos: false,
});
// Settings the Python runtime has and this one does not; a bundle default for one that is not
// neutral is reported in Generator.notices, a caller's is refused.
const NEUTRAL = Object.freeze({
  repetition_penalty: 1.0,
  presence_penalty: 0.0,
  frequency_penalty: 0.0,
  no_repeat_ngram_size: 0,
  num_beams: 1,
  num_return_sequences: 1,
  max_length: null,
  truncate: null,
  logprobs: null,
  draft: null,
  length_penalty: 1.0,
  early_stopping: false,
});
// A caller's AbortSignal ends generation early (finish reason "abort"); not a bundle default.
const CALLER_ONLY = ["signal"];

function number(name, value, rule, ok) {
  if (typeof value !== "number" || !Number.isFinite(value) || !ok(value)) {
    throw new EdgeError(`${name} must be ${rule}, got ${shownValue(value)}.`);
  }
  return value;
}

function integer(name, value, rule, low) {
  if (!Number.isSafeInteger(value) || value < low) {
    throw new EdgeError(`${name} must be ${rule}, got ${shownValue(value)}.`);
  }
  return value;
}

function shownValue(value) {
  const text = typeof value === "string" ? `'${value}'` : String(value);
  return text.length <= 60 ? text : typeof value;
}

const CHECKS = {
  max_new_tokens: (v) => integer("max_new_tokens", v, "an integer >= 1", 1),
  temperature: (v) => number("temperature", v, "a number >= 0 (0 means greedy)", (x) => x >= 0),
  top_k: (v) => integer("top_k", v, "an integer >= 0 (0 turns it off)", 0),
  top_p: (v) => number("top_p", v, "a number in (0, 1] (1 turns it off)", (x) => x > 0 && x <= 1),
  min_p: (v) => number("min_p", v, "a number in [0, 1] (0 turns it off)", (x) => x >= 0 && x <= 1),
  seed: (v) => (v === null ? null : integer("seed", v, "an integer >= 0 (or not given)", 0)),
  stop: stopStrings,
  ignore_eos: (v) => {
    if (typeof v !== "boolean") throw new EdgeError(`ignore_eos must be true or false, got ${shownValue(v)}.`);
    return v;
  },
};

function stopStrings(stop) {
  if (stop === null) return [];
  const items = typeof stop === "string" ? [stop] : stop;
  if (!Array.isArray(items) || !items.every((s) => typeof s === "string" && s)) {
    throw new EdgeError("stop must be a non-empty string or a list of them.");
  }
  return [...items];
}

/**
 * The settings to generate with: `given` (the caller's; undefined or null means "not given"),
 * else `defaults` (the bundle's), else {@link DEFAULTS}; each validated.
 *
 * @returns {{settings: object, signal: AbortSignal|undefined}}
 * @throws {EdgeError} an unknown name, a value out of its range, or a setting this runtime lacks
 */
export function resolveSettings(given = {}, defaults = {}) {
  if (given === null || typeof given !== "object" || Array.isArray(given)) {
    throw new EdgeError("Settings must be an object such as {max_new_tokens: 32, temperature: 0}.");
  }
  for (const [name, value] of Object.entries(given)) {
    if (name in CHECKS || CALLER_ONLY.includes(name) || value === undefined || value === null) continue;
    if (name in NEUTRAL) {
      if (value === NEUTRAL[name]) continue;
      throw new EdgeError(`The browser runtime does not offer ${name}; use gpt2-generate or gpt2-serve for it.`);
    }
    throw new EdgeError(`Unknown setting '${name}'; the settings are ${Object.keys(CHECKS).join(", ")}.`);
  }
  const settings = {};
  for (const [name, check] of Object.entries(CHECKS)) {
    const mine = given[name];
    const theirs = defaults[name];
    const value = mine !== undefined && mine !== null ? mine : theirs !== undefined && theirs !== null ? theirs : DEFAULTS[name];
    settings[name] = check(value);
  }
  return { settings, signal: given.signal ?? undefined };
}

/** Sentences for bundle defaults that this runtime cannot apply (the page shows them). */
export function unusedDefaults(defaults) {
  return Object.entries(defaults)
    .filter(([name, value]) => name in NEUTRAL && value !== null && value !== NEUTRAL[name])
    .map(([name, value]) => `The bundle's default ${name} ${shownValue(value)} is not applied in the browser.`);
}
