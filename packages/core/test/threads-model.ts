/**
 * Exact JavaScript models of the thread pool's kernels (packages/core/src/kernels/wasm/threads/wat.ts):
 * the same f32 operations in the same order, so a test can hold a kernel's output equal to its
 * model bit for bit. f32 rounding is Math.fround; the fused multiply-add is fmaf below (exact
 * product in f64, the sum rounded to odd in f64, then once to f32: correctly rounded, since
 * 53 ≥ 24 + 2). Also a float64 reference per op, for the error bounds.
 */
import type { SimdPath } from '../src/kernels/wasm/threads/index.ts';

const fr = Math.fround;
const f64 = new Float64Array(1);
const u64 = new BigUint64Array(f64.buffer);

/** a·b + c rounded once to f32 (a, b, c f32 values). */
export function fmaf(a: number, b: number, c: number): number {
  const p = a * b; // exact: two 24-bit significands
  const s = p + c;
  if (!Number.isFinite(s)) return fr(s);
  const bb = s - p;
  const e = p - (s - bb) + (c - bb); // p + c = s + e exactly
  if (e === 0 || s === 0) return fr(s);
  f64[0] = s;
  if ((u64[0] & 1n) === 0n) u64[0] += e > 0 === s > 0 ? 1n : -1n; // round to odd
  return fr(f64[0]);
}

/** One lane step of the float kernels: fma (relaxed) or multiply then add (simd128). */
export function madd(simd: SimdPath, a: number, b: number, c: number): number {
  return simd === 'relaxed' ? fmaf(a, b, c) : fr(c + fr(a * b));
}

/** (l0 + l1) + (l2 + l3) in f32. */
export function hsum(l: ArrayLike<number>): number {
  return fr(fr(l[0] + l[1]) + fr(l[2] + l[3]));
}

/** The f32 dot of the kernels over n elements (a multiple of 4; past a's or b's end, zeros): lane l takes elements 4j + l in order, then hsum. */
export function dotModel(simd: SimdPath, a: ArrayLike<number>, b: ArrayLike<number>, n: number): number {
  const acc = [0, 0, 0, 0];
  for (let i = 0; i < n; i += 4) {
    for (let l = 0; l < 4; l++)
      acc[l] = madd(simd, i + l < a.length ? a[i + l] : 0, i + l < b.length ? b[i + l] : 0, acc[l]);
  }
  return hsum(acc);
}

/**
 * mm_f32 / mm_bf16 / mm_f16 (weights given widened to f32, [rows, cols]): y [N, rows], each
 * output one accumulator over the padded columns in order from 0 (the outer-product tiles' order).
 */
export function matmulFloatModel(
  simd: SimdPath,
  w: Float32Array,
  x: Float32Array,
  N: number,
  rows: number,
  cols: number,
): Float32Array {
  const colsP = Math.ceil(cols / 32) * 32;
  const y = new Float32Array(N * rows);
  for (let n = 0; n < N; n++) {
    for (let r = 0; r < rows; r++) {
      let acc = 0;
      for (let c = 0; c < colsP; c++)
        acc = madd(simd, c < cols ? w[r * cols + c] : 0, c < cols ? x[n * cols + c] : 0, acc);
      y[n * rows + r] = acc;
    }
  }
  return y;
}

/**
 * quant_x8 / quant_x16: per row and block of 32 (zero padded), d = f32(max|x| / qmax), q = ±floor(|x/d| + 0.5)
 * (f32 operations), d = 0 → q = 0. Returns q [N, colsP] and d [N, nb].
 */
export function quantizeModel(
  x: Float32Array,
  N: number,
  cols: number,
  qmax: 127 | 32767,
): { q: Int32Array; d: Float32Array } {
  const nb = Math.ceil(cols / 32);
  const q = new Int32Array(N * nb * 32);
  const d = new Float32Array(N * nb);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < nb; b++) {
      let m = 0;
      for (let c = b * 32; c < Math.min(cols, b * 32 + 32); c++) m = Math.max(m, Math.abs(x[n * cols + c]));
      const dd = fr(m / qmax);
      d[n * nb + b] = dd;
      if (dd === 0) continue;
      for (let c = b * 32; c < Math.min(cols, b * 32 + 32); c++) {
        const v = fr(x[n * cols + c] / dd);
        q[n * nb * 32 + c] = Math.sign(v) * Math.floor(fr(Math.abs(v) + 0.5));
      }
    }
  }
  return { q, d };
}

/** The q8 weights as the kernels see them: q [rows, colsP] (zero padded), d [rows, nb]. */
function paddedQ(qw: Int8Array, rows: number, cols: number): Int32Array {
  const colsP = Math.ceil(cols / 32) * 32;
  const q = new Int32Array(rows * colsP);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) q[r * colsP + c] = qw[r * cols + c];
  return q;
}

/** mm_q8x8: per output, Σ_b f32(T_b) · f32(d_w · d_x) added in f32, T_b the exact block dot. */
export function matmulQ8x8Model(
  qw: Int8Array,
  dw: Float32Array,
  x: Float32Array,
  N: number,
  rows: number,
  cols: number,
): Float32Array {
  const nb = Math.ceil(cols / 32);
  const wq = paddedQ(qw, rows, cols);
  const { q: xq, d: xd } = quantizeModel(x, N, cols, 127);
  const y = new Float32Array(N * rows);
  for (let n = 0; n < N; n++) {
    for (let r = 0; r < rows; r++) {
      let acc = 0;
      for (let b = 0; b < nb; b++) {
        let T = 0;
        for (let c = 0; c < 32; c++) T += wq[r * nb * 32 + b * 32 + c] * xq[n * nb * 32 + b * 32 + c];
        acc = fr(acc + fr(fr(T) * fr(dw[r * nb + b] * xd[n * nb + b])));
      }
      y[n * rows + r] = acc;
    }
  }
  return y;
}

/**
 * mm_q8x16 (packed-wat.ts's matmul_q8x16): lanes l of four 16-bit dots over bytes
 * {2l, 2l+1} + 8k, f32 lane sums of f32(sum_l) · f32(d_w · d_x), then hsum + 0.
 */
export function matmulQ8x16Model(
  qw: Int8Array,
  dw: Float32Array,
  x: Float32Array,
  N: number,
  rows: number,
  cols: number,
): Float32Array {
  const nb = Math.ceil(cols / 32);
  const wq = paddedQ(qw, rows, cols);
  const { q: xq, d: xd } = quantizeModel(x, N, cols, 32767);
  const y = new Float32Array(N * rows);
  for (let n = 0; n < N; n++) {
    for (let r = 0; r < rows; r++) {
      const acc = [0, 0, 0, 0];
      for (let b = 0; b < nb; b++) {
        const p = fr(dw[r * nb + b] * xd[n * nb + b]);
        for (let l = 0; l < 4; l++) {
          let s = 0;
          for (let k = 0; k < 4; k++) {
            for (const j of [2 * l, 2 * l + 1]) {
              const c = b * 32 + 8 * k + j;
              s += wq[r * nb * 32 + c] * xq[n * nb * 32 + c];
            }
          }
          acc[l] = fr(acc[l] + fr(fr(s) * p));
        }
      }
      y[n * rows + r] = fr(hsum(acc) + 0);
    }
  }
  return y;
}

/** float64 x · Wᵀ and Σ|x·w| per output (the error scale). */
export function matmulF64(
  w: ArrayLike<number>,
  x: ArrayLike<number>,
  N: number,
  rows: number,
  cols: number,
): { y: Float64Array; mag: Float64Array } {
  const y = new Float64Array(N * rows);
  const mag = new Float64Array(N * rows);
  for (let n = 0; n < N; n++) {
    for (let r = 0; r < rows; r++) {
      let s = 0;
      let m = 0;
      for (let c = 0; c < cols; c++) {
        const p = w[r * cols + c] * x[n * cols + c];
        s += p;
        m += Math.abs(p);
      }
      y[n * rows + r] = s;
      mag[n * rows + r] = m;
    }
  }
  return { y, mag };
}

/** γ_n = n·u / (1 − n·u), u = 2^-24: the classic bound on a length-n f32 sum's relative error. */
export function gamma(n: number): number {
  const u = 2 ** -24;
  return (n * u) / (1 - n * u);
}

// ---- attention ----

/** f64.nearest: round half to even. */
function nearest(x: number): number {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** wat.ts's $exp, operation for operation. */
export function expModel(x: number): number {
  if (x < -708) return 0;
  if (Number.isNaN(x)) return x;
  const n = nearest(x * 1.4426950408889634);
  const r = x - n * 0.6931471803691238 - n * 1.9082149292705877e-10;
  const c: number[] = [];
  let f = 1;
  for (let k = 0; k <= 11; k++) {
    if (k > 0) f *= k;
    c.push(1 / f);
  }
  let p = c[11];
  for (let k = 10; k >= 0; k--) p = p * r + c[k];
  return p * 2 ** n;
}

function tanhModel(y: number): number {
  const e = expModel(-2 * Math.abs(y));
  const t = (1 - e) / (1 + e);
  return Object.is(Math.sign(y), -0) || y < 0 ? -t : t;
}

export interface KvModel {
  Bc: number;
  nKV: number;
  S: number;
  D: number;
  /** keys [Bc][nKV][S][D], values [Bc][nKV][S][D] (not transposed), slotPos [Bc][S] */
  keys: Float32Array;
  vals: Float32Array;
  slotPos: Int32Array;
}

/** The attention kernel's arithmetic for one (query row, head); returns D values. */
export function attentionModel(
  simd: SimdPath,
  kv: KvModel,
  q: Float32Array,
  crow: number,
  qpos: number,
  h: number,
  nH: number,
  window: number,
  cap: number,
): Float32Array {
  const { nKV, S, D } = kv;
  const g = Math.floor(h / (nH / nKV));
  const base = (crow * nKV + g) * S;
  const sc = new Float32Array(S);
  let mx = -Infinity;
  let any = false;
  for (let j = 0; j < S; j++) {
    const pos = kv.slotPos[crow * S + j];
    if (pos >= 0 && pos <= qpos && (window === 0 || qpos - pos < window)) {
      let v = dotModel(simd, q, kv.keys.subarray((base + j) * D, (base + j + 1) * D), D);
      if (cap > 0) v = fr(cap * tanhModel(v / cap));
      if (v > mx) mx = v;
      any = true;
      sc[j] = v;
    } else sc[j] = -Infinity;
  }
  const out = new Float32Array(D);
  if (!any) return out;
  let sum = 0;
  for (let j = 0; j < S; j++) {
    sc[j] = sc[j] === -Infinity ? 0 : fr(expModel(fr(sc[j] - mx)));
    sum += sc[j];
  }
  for (let j = 0; j < S; j++) sc[j] = fr(sc[j] / sum);
  const col = new Float32Array(S);
  for (let d = 0; d < D; d++) {
    for (let j = 0; j < S; j++) col[j] = kv.vals[(base + j) * D + d];
    out[d] = dotModel(simd, sc, col, S);
  }
  return out;
}

/** float64 attention for one (query row, head) (softmax in f64, no rounding), for the error bound. */
export function attentionF64(
  kv: KvModel,
  q: Float32Array,
  crow: number,
  qpos: number,
  h: number,
  nH: number,
  window: number,
  cap: number,
): Float64Array {
  const { nKV, S, D } = kv;
  const g = Math.floor(h / (nH / nKV));
  const base = (crow * nKV + g) * S;
  const s: number[] = [];
  const seen: number[] = [];
  for (let j = 0; j < S; j++) {
    const pos = kv.slotPos[crow * S + j];
    if (pos >= 0 && pos <= qpos && (window === 0 || qpos - pos < window)) {
      let v = 0;
      for (let d = 0; d < D; d++) v += q[d] * kv.keys[(base + j) * D + d];
      if (cap > 0) v = cap * Math.tanh(v / cap);
      s.push(v);
      seen.push(j);
    }
  }
  const out = new Float64Array(D);
  if (!s.length) return out;
  const m = Math.max(...s);
  const e = s.map((v) => Math.exp(v - m));
  const sum = e.reduce((a, b) => a + b, 0);
  for (let d = 0; d < D; d++) {
    let o = 0;
    for (let i = 0; i < seen.length; i++) o += (e[i] / sum) * kv.vals[(base + seen[i]) * D + d];
    out[d] = o;
  }
  return out;
}

/** split_heads on one head: RMS norm (if w) then rotate-half RoPE (if cos), as the kernel rounds. */
export function headModel(
  x: Float32Array,
  D: number,
  w: Float32Array | null,
  eps: number,
  cos: Float32Array | null,
  sin: Float32Array | null,
): Float32Array {
  let y = Float32Array.from(x);
  if (w) {
    const acc = [0, 0, 0, 0];
    for (let i = 0; i < D; i += 4) for (let l = 0; l < 4; l++) acc[l] = fr(acc[l] + fr(y[i + l] * y[i + l]));
    const r = fr(1 / fr(Math.sqrt(fr(fr(hsum(acc) / D) + fr(eps)))));
    y = y.map((v, i) => fr(fr(v * r) * w[i]));
  }
  if (cos && sin) {
    const half = D / 2;
    const o = new Float32Array(D);
    for (let i = 0; i < half; i++) {
      o[i] = fr(fr(y[i] * cos[i]) - fr(y[i + half] * sin[i]));
      o[i + half] = fr(fr(y[i + half] * cos[i + half]) + fr(y[i] * sin[i + half]));
    }
    y = o;
  }
  return y;
}
