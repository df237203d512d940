/**
 * A seeded pseudo-random generator written in JS (xoshiro128**), so that every random draw of a
 * run (initialisation, data order, augmentation parameters) is reproducible on every backend and
 * its state can be written into a checkpoint and restored bit for bit. tf.random* is never used for
 * anything that must resume identically: its state cannot be saved.
 */

/** The 128-bit state of a generator as four unsigned 32-bit words (JSON-safe). */
export type PrngState = [number, number, number, number];

/** splitmix32: spreads a 32-bit seed over the state words (xoshiro must not start all-zero). */
function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** Mixes several integers (a seed and stream labels such as an epoch) into one 32-bit seed. */
export function mixSeed(...parts: number[]): number {
  let h = 0x811c9dc5;
  for (const p of parts) {
    const next = splitmix32((h ^ (p >>> 0)) >>> 0);
    h = next() ^ Math.imul(p | 0, 0x27d4eb2d);
  }
  return h >>> 0;
}

export class Prng {
  private s: Uint32Array;

  constructor(seed: number) {
    const sm = splitmix32(seed);
    this.s = new Uint32Array([sm(), sm(), sm(), sm()]);
    if ((this.s[0] | this.s[1] | this.s[2] | this.s[3]) === 0) this.s[0] = 1;
  }

  static fromState(state: PrngState): Prng {
    const r = new Prng(0);
    r.s = Uint32Array.from(state);
    return r;
  }

  /** The state to store: the four words are everything (no cached draws), so a restore is exact. */
  getState(): PrngState {
    return [this.s[0], this.s[1], this.s[2], this.s[3]];
  }

  /** The next 32 random bits. */
  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform in [0, 1) with 32 bits of resolution. */
  next(): number {
    return this.nextUint32() / 4294967296;
  }

  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** true with probability p. */
  bernoulli(p: number): boolean {
    return this.next() < p;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Standard normal (Box-Muller). The second value is dropped so that no hidden state exists. */
  normal(): number {
    let u = 0;
    while (u === 0) u = this.next();
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** Fisher-Yates permutation of 0..n-1. */
  permutation(n: number): Int32Array {
    const p = new Int32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = p[i];
      p[i] = p[j];
      p[j] = t;
    }
    return p;
  }

  /** n draws from U(lo, hi) as float32. */
  uniformArray(n: number, lo: number, hi: number): Float32Array {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = this.uniform(lo, hi);
    return a;
  }

  /** n draws from N(mean, std²) as float32. */
  normalArray(n: number, mean: number, std: number): Float32Array {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = mean + std * this.normal();
    return a;
  }

  /** n draws from N(mean, std²) truncated to [mean-2std, mean+2std] (timm's trunc_normal_). */
  truncNormalArray(n: number, mean: number, std: number): Float32Array {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      let z = this.normal();
      while (z < -2 || z > 2) z = this.normal();
      a[i] = mean + std * z;
    }
    return a;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
