/**
 * Statistics for paired evaluations: the Wilson score interval of a proportion, the exact
 * (conditional, binomial) McNemar test of paired verdicts, a seeded paired bootstrap of the
 * difference of two per-problem means, and the unbiased pass@k estimator.
 */
import { createRng } from '@moi/core';

/** z for a two-sided 95% interval: the 0.975 quantile of the standard normal. */
export const Z95 = 1.959963984540054;

/** Wilson score interval for k successes in n trials (Wilson 1927; Newcombe 1998, method 3). */
export function wilson(k: number, n: number, z = Z95): [number, number] {
  if (n === 0) return [0, 1];
  const p = k / n;
  const z2 = z * z;
  const denom = 1 + z2 / n;
  const center = (p + z2 / (2 * n)) / denom;
  const half = (z / denom) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  return [Math.max(0, center - half), Math.min(1, center + half)];
}

/** log of n choose k, by sums of logs (exact enough for p-values; n is a count of problems). */
function logChoose(n: number, k: number): number {
  let s = 0;
  for (let i = 1; i <= k; i++) s += Math.log(n - k + i) - Math.log(i);
  return s;
}

/**
 * Exact two-sided McNemar p-value for discordant counts b and c: with n = b + c, twice the lower
 * tail P(X ≤ min(b, c)) of X ~ Binomial(n, 1/2), capped at 1. 1 when there are no discordant pairs.
 */
export function mcnemarExact(b: number, c: number): number {
  const n = b + c;
  if (n === 0) return 1;
  const m = Math.min(b, c);
  // sum of C(n, k) / 2^n for k ≤ m, in log space with a running max for stability
  const logs: number[] = [];
  for (let k = 0; k <= m; k++) logs.push(logChoose(n, k) - n * Math.LN2);
  const top = Math.max(...logs);
  const tail = Math.exp(top) * logs.reduce((s, l) => s + Math.exp(l - top), 0);
  return Math.min(1, 2 * tail);
}

export interface BootstrapCI {
  mean: number;
  lo: number;
  hi: number;
  resamples: number;
}

/**
 * Paired bootstrap of mean(a_i − b_i): resample problems with replacement (the pair stays
 * together), take the 2.5% and 97.5% percentiles of the resampled means. Seeded: same inputs,
 * same interval.
 */
export function pairedBootstrap(
  a: number[],
  b: number[],
  opts: { resamples?: number; seed?: number; level?: number } = {},
): BootstrapCI {
  if (a.length !== b.length)
    throw new RangeError(`paired bootstrap needs equal lengths, got ${a.length} and ${b.length}`);
  const n = a.length;
  const R = opts.resamples ?? 2000;
  const level = opts.level ?? 0.95;
  const d = a.map((x, i) => x - b[i]);
  const mean = n ? d.reduce((s, x) => s + x, 0) / n : 0;
  if (n === 0) return { mean: 0, lo: 0, hi: 0, resamples: 0 };
  const rng = createRng(opts.seed ?? 0);
  const means = new Float64Array(R);
  for (let r = 0; r < R; r++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += d[Math.floor(rng.nextFloat() * n)];
    means[r] = s / n;
  }
  means.sort();
  const q = (p: number) => means[Math.min(R - 1, Math.max(0, Math.round(p * (R - 1))))];
  const alpha = (1 - level) / 2;
  return { mean, lo: q(alpha), hi: q(1 - alpha), resamples: R };
}

/**
 * The unbiased pass@k estimator of one problem (Chen et al. 2021, the Codex paper): with n samples
 * of which c are correct, 1 − C(n−c, k) / C(n, k), the chance that k samples drawn without
 * replacement hold at least one correct one. Computed as the product
 * 1 − ∏_{i=n−c+1}^{n} (1 − k/i), which never forms a binomial coefficient (they overflow a double
 * from n ≈ 1030) and loses no precision to cancellation in the ratio.
 */
export function passAtK(n: number, c: number, k: number): number {
  if (
    !Number.isInteger(n) ||
    !Number.isInteger(c) ||
    !Number.isInteger(k) ||
    n < 1 ||
    c < 0 ||
    c > n ||
    k < 1 ||
    k > n
  ) {
    throw new RangeError(`pass@k needs integers 0 <= c <= n and 1 <= k <= n, got n=${n} c=${c} k=${k}`);
  }
  if (n - c < k) return 1; // every k-subset holds a correct sample
  let miss = 1;
  for (let i = n - c + 1; i <= n; i++) miss *= 1 - k / i;
  return 1 - miss;
}
