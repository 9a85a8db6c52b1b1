/**
 * Soft Thinking's filters in float64, written from the definition (not calling the
 * implementation): S over the full distribution at temperature, then top-k → top-p → min-p, each
 * renormalized. Shared by the mixer's unit tests and the end-to-end tests.
 */

export interface Filters {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
}

/** S in nats, the surviving ids in descending order, and their renormalized probabilities. */
export function softFiltered(
  logits: ArrayLike<number>,
  f: Filters,
): { S: number; order: number[]; q: Map<number, number> } {
  const T = f.temperature === 0 ? 1 : f.temperature;
  const k = f.temperature === 0 ? 1 : f.topK;
  const x = Array.from(logits, (v) => v / T);
  const m = Math.max(...x);
  const e = x.map((v) => Math.exp(v - m));
  const z = e.reduce((a, b) => a + b, 0);
  const p = e.map((v) => v / z);
  const S = -p.reduce((a, v) => a + v * Math.log(Math.max(v, 1e-12)), 0);
  const sorted = p.map((_, i) => i).sort((a, b) => p[b] - p[a] || a - b);
  let keep = k > 0 ? sorted.slice(0, k) : sorted;
  let q = renorm(keep, (i) => p[i]);
  if (f.topP < 1) {
    const kept: number[] = [];
    let before = 0;
    for (const i of keep) {
      if (kept.length > 0 && before >= f.topP) break;
      kept.push(i);
      before += q.get(i)!;
    }
    keep = kept;
    q = renorm(keep, (i) => q.get(i)!);
  }
  const max = q.get(keep[0])!;
  keep = keep.filter((i) => q.get(i)! >= f.minP * max);
  return { S, order: keep, q: renorm(keep, (i) => q.get(i)!) };
}

/** ids with val(i) / Σ val. */
export function renorm(ids: number[], val: (i: number) => number): Map<number, number> {
  const s = ids.reduce((a, i) => a + val(i), 0);
  return new Map(ids.map((i) => [i, val(i) / s]));
}
