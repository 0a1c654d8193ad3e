/**
 * A seeded random number generator for sampling: xoshiro128** (Blackman and Vigna, 2018), seeded
 * through SplitMix32, as in the reference code at https://prng.di.unimi.it/. It is a few lines
 * and runs everywhere (Math.random cannot be seeded, crypto.getRandomValues cannot repeat), so
 * the same seed gives the same text in every browser and in Node. It need not equal numpy's
 * stream, and does not.
 */

/** SplitMix32: spreads one 32-bit seed word over the generator's state. */
function splitmix32(state) {
  return () => {
    state = (state + 0x9e3779b9) | 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}

export class Rng {
  /** @param {number} seed an integer >= 0 (up to 2**53 - 1; both 32-bit halves are used) */
  constructor(seed) {
    const low = splitmix32(seed >>> 0);
    const high = splitmix32(Math.floor(seed / 2 ** 32) >>> 0);
    this._s = new Uint32Array([low() ^ high(), low(), low() ^ high(), low()]);
    if (!this._s.some((word) => word !== 0)) this._s[0] = 1; // all zeros is the one bad state
  }

  /** The next 32 random bits, as an unsigned integer. */
  nextUint32() {
    const s = this._s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** A float in [0, 1) with 53 random bits. */
  random() {
    const high = this.nextUint32() >>> 5; // 27 bits
    const low = this.nextUint32() >>> 6; // 26 bits
    return (high * 67108864 + low) / 9007199254740992;
  }
}

function rotl(x, k) {
  return (x << k) | (x >>> (32 - k));
}

/** A seed drawn from the browser's entropy, for settings without one. */
export function freshSeed() {
  const words = new Uint32Array(2);
  globalThis.crypto.getRandomValues(words);
  return (words[0] & 0x1fffff) * 2 ** 32 + words[1]; // 53 bits: a safe integer
}
