/**
 * Seeded host-side PRNG: xoshiro128** (Blackman & Vigna, 2018), its 128-bit state filled from
 * the seed by splitmix64, the seeding its authors recommend. Without a seed the state comes from
 * crypto. The sampler draws one number per random row per step, so speed does not matter;
 * reproducibility across runs and platforms does (only 32-bit integer arithmetic is used).
 */
import { webcrypto } from 'node:crypto';

export interface Rng {
  /** next 32-bit output as an unsigned integer in [0, 2^32) */
  nextUint32(): number;
  /** uniform float in [0, 1) with 32 random bits */
  nextFloat(): number;
}

const MASK64 = (1n << 64n) - 1n;

/** splitmix64 (Vigna): a 64-bit counter-based generator; returns a function yielding BigInts. */
export function splitmix64(seed: bigint): () => bigint {
  let state = seed & MASK64;
  return () => {
    state = (state + 0x9e3779b97f4a7c15n) & MASK64;
    let z = state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
    return z ^ (z >> 31n);
  };
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** xoshiro128** over an explicit 4-word state (copied; must not be all zero). */
export class Xoshiro128ss implements Rng {
  private readonly s: Uint32Array;

  constructor(state: ArrayLike<number>) {
    if (state.length !== 4) throw new RangeError('xoshiro128** needs a 4-word state');
    this.s = Uint32Array.from(state);
    if (this.s.every((w) => w === 0)) this.s[0] = 1; // the all-zero state is a fixed point
  }

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

  nextFloat(): number {
    return this.nextUint32() / 4294967296;
  }
}

/** A generator seeded from `seed` (any safe integer, negatives included), or from crypto. */
export function createRng(seed?: number): Rng {
  const state = new Uint32Array(4);
  if (seed === undefined) {
    webcrypto.getRandomValues(state);
  } else {
    if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be a safe integer, got ${seed}`);
    const next = splitmix64(BigInt.asUintN(64, BigInt(seed)));
    for (let i = 0; i < 4; i += 2) {
      const z = next();
      state[i] = Number(z & 0xffffffffn);
      state[i + 1] = Number(z >> 32n);
    }
  }
  return new Xoshiro128ss(state);
}

/**
 * The sampler's uniform draw: u in (0, 1] on a 2^-24 grid, so it is exact in float32 (a double
 * close to 1 would round to 1 on upload) and never 0 (u = 0 could select a token of probability 0).
 */
export function uniformOpenClosed24(rng: Rng): number {
  return ((rng.nextUint32() >>> 8) + 1) / 16777216;
}
