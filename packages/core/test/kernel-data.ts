/** Test data for the kernel tests: a seeded uniform generator in [-1, 1), arrays of it, cache slots. */

/** A seeded uniform generator in [-1, 1) (a 32-bit LCG). */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  };
}

/** n values of r, times scale. */
export function randn(r: () => number, n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => r() * scale);
}

/** The positions a cache row's slots hold after n tokens (−1 empty), rotating or not. */
export function slotsOf(n: number, S: number, rotating: boolean): number[] {
  const pos = new Array(S).fill(-1);
  for (let p = 0; p < n; p++) if (rotating || p < S) pos[rotating ? p % S : p] = p;
  return pos;
}
