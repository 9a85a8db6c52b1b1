/**
 * Prefill attention (src/kernels/wasm/prefill-attention.ts): the wasm kernel equals the composite and
 * an independent float64 transcription over odd sizes (head_dim 64/80/128/256 and a scalar-tail
 * 6, 1–8 kv heads, T not a multiple of 4, windows, softcap, batched rows at different offsets,
 * with and without a cache prefix, plain and rotating), and the q/k heads' norms and RoPE read from
 * the fused qkv rows likewise; without leaking tensors.
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import {
  initBackend,
  kernelDispatches,
  prefillAttention,
  prefillQk,
  resetKernelDispatches,
  scalar,
  setKernelsEnabled,
} from '../src/index.ts';
import { randn, rng, slotsOf } from './kernel-data.ts';

interface Case {
  label: string;
  /** rows, new tokens per row, heads, kv heads, head dim */
  B: number;
  T: number;
  nH: number;
  nKV: number;
  D: number;
  /** tokens each cache row already holds (its start position); [] = no cache prefix */
  held: number[];
  /** cache slots per row (the buffer's S); rotating = position p in slot p % S */
  S: number;
  rotating?: boolean;
  /** the cache row each input row reads (default 0..B−1) */
  rows?: number[];
  window: number | null;
  softcap: number | null;
  /** extra columns before v (v read from a wider tensor, as from the fused qkv) */
  vPad?: number;
}

/**
 * Float64 transcription: query t of row b (position start + t) attends, with softmax over
 * softcap(q·k), to the cache slots and the new tokens it may see (causal, window).
 */
function reference(
  c: Case,
  rows: number[],
  start: number[],
  slotPos: number[][],
  qk: Float32Array,
  v: Float32Array,
  vW: number,
  vCol: number,
  keys: Float32Array,
  valsT: Float32Array,
): Float64Array {
  const { B, T, nH, nKV, D, S } = c;
  const G = nH / nKV;
  const W = (nH + nKV) * D;
  const out = new Float64Array(B * T * nH * D);
  const sees = (qp: number, p: number) => p >= 0 && p <= qp && (!c.window || qp - p < c.window);
  for (let b = 0; b < B; b++) {
    const r = rows[b];
    for (let t = 0; t < T; t++) {
      const n = b * T + t;
      const qp = start[b] + t;
      for (let hq = 0; hq < nH; hq++) {
        const h = Math.floor(hq / G);
        const dot = (k: (d: number) => number) => {
          let s = 0;
          for (let d = 0; d < D; d++) s += qk[n * W + hq * D + d] * k(d);
          return c.softcap ? c.softcap * Math.tanh(s / c.softcap) : s;
        };
        const scores: number[] = [];
        const vals: ((d: number) => number)[] = [];
        if (c.held.length) {
          for (let j = 0; j < S; j++) {
            if (!sees(qp, slotPos[r][j])) continue;
            scores.push(dot((d) => keys[((r * nKV + h) * S + j) * D + d]));
            vals.push((d) => valsT[((r * nKV + h) * D + d) * S + j]);
          }
        }
        for (let u = 0; u < T; u++) {
          if (!sees(qp, start[b] + u)) continue;
          const m = b * T + u;
          scores.push(dot((d) => qk[m * W + (nH + h) * D + d]));
          vals.push((d) => v[m * vW + vCol + h * D + d]);
        }
        const mx = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - mx));
        const sum = e.reduce((a, x) => a + x, 0);
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let i = 0; i < e.length; i++) acc += e[i] * vals[i](d);
          out[(n * nH + hq) * D + d] = acc / sum;
        }
      }
    }
  }
  return out;
}

const CASES: Case[] = [
  {
    label: 'D64 MHA 1 kv head, T 5, no cache',
    B: 1,
    T: 5,
    nH: 1,
    nKV: 1,
    D: 64,
    held: [],
    S: 0,
    window: null,
    softcap: null,
  },
  {
    label: 'D64 GQA 3 kv × 3, T 37, no cache, v inside a wider qkv tensor',
    B: 1,
    T: 37,
    nH: 9,
    nKV: 3,
    D: 64,
    held: [],
    S: 0,
    window: null,
    softcap: null,
    vPad: 12 * 64,
  },
  {
    label: 'D80 2 kv × 7, 3 rows of T 6 after a prefix of 0, 11, 3 tokens',
    B: 3,
    T: 6,
    nH: 14,
    nKV: 2,
    D: 80,
    held: [0, 11, 3],
    S: 32,
    window: null,
    softcap: null,
  },
  {
    label: 'D128 8 kv heads, T 3, subset rows [2, 0] of 3 with prefixes',
    B: 2,
    T: 3,
    nH: 8,
    nKV: 8,
    D: 128,
    held: [7, 2, 19],
    S: 23,
    rows: [2, 0],
    window: null,
    softcap: null,
  },
  {
    label: 'D256 GQA 1 kv × 4, T 13, softcap 50, no cache',
    B: 2,
    T: 13,
    nH: 4,
    nKV: 1,
    D: 256,
    held: [],
    S: 0,
    window: null,
    softcap: 50,
  },
  {
    label: 'D256 GQA 1 kv × 4, T 9 after prefixes 5 and 0, softcap 30',
    B: 2,
    T: 9,
    nH: 4,
    nKV: 1,
    D: 256,
    held: [5, 0],
    S: 14,
    window: null,
    softcap: 30,
  },
  {
    label: 'D64 window 7, T 19, no cache (the window inside the chunk)',
    B: 1,
    T: 19,
    nH: 4,
    nKV: 2,
    D: 64,
    held: [],
    S: 0,
    window: 7,
    softcap: null,
  },
  {
    label: 'D64 window 7 on a rotating buffer of 7 past the window, T 10, rows at 23 and 4',
    B: 2,
    T: 10,
    nH: 4,
    nKV: 2,
    D: 64,
    held: [23, 4],
    S: 7,
    rotating: true,
    window: 7,
    softcap: null,
  },
  {
    label: 'D80 window 6 over a plain buffer of 40, T 7, softcap 20',
    B: 2,
    T: 7,
    nH: 6,
    nKV: 3,
    D: 80,
    held: [31, 9],
    S: 40,
    window: 6,
    softcap: 20,
  },
  {
    label: 'odd head_dim 6 (scalar tails), 5 kv heads, T 2 after 3',
    B: 1,
    T: 2,
    nH: 10,
    nKV: 5,
    D: 6,
    held: [3],
    S: 5,
    window: null,
    softcap: null,
  },
];

describe('prefill attention: the kernel equals the composite and a float64 transcription (wasm)', function () {
  before(async () => {
    await initBackend({ backend: 'wasm' });
    setKernelsEnabled(true);
  });
  after(() => setKernelsEnabled(true));

  for (const [i, c] of CASES.entries()) {
    it(c.label, function () {
      const r = rng(300 + i);
      const N = c.B * c.T;
      const rows = c.rows ?? Array.from({ length: c.B }, (_, b) => b);
      const Bc = c.held.length || c.B;
      const start = rows.map((row) => c.held[row] ?? 0);
      const slotPos = Array.from({ length: Bc }, (_, row) => slotsOf(c.held[row] ?? 0, c.S, !!c.rotating));
      const vCol = c.vPad ?? 0;
      const vW = vCol + c.nKV * c.D + 5;
      const qkd = randn(r, N * (c.nH + c.nKV) * c.D, 0.5);
      const vd = randn(r, N * vW);
      const kd = randn(r, Bc * c.nKV * c.S * c.D, 0.5);
      const vTd = randn(r, Bc * c.nKV * c.D * c.S);
      const want = reference(c, rows, start, slotPos, qkd, vd, vW, vCol, kd, vTd);
      if (c.softcap) {
        scalar(c.softcap);
        scalar(1 / c.softcap);
      } // the composite's kept constants
      const before = tf.memory().numTensors;
      const qk = tf.tensor2d(qkd, [N, (c.nH + c.nKV) * c.D]);
      const v = tf.tensor2d(vd, [N, vW]);
      const keys = tf.tensor4d(kd, [Bc, c.nKV, c.S, c.D]);
      const valuesT = tf.tensor4d(vTd, [Bc, c.nKV, c.D, c.S]);
      const run = (on: boolean): Float32Array => {
        setKernelsEnabled(on);
        resetKernelDispatches();
        const out = prefillAttention(qk, v, {
          heads: c.nH,
          kvHeads: c.nKV,
          headDim: c.D,
          start,
          window: c.window,
          softcap: c.softcap,
          vColumn: vCol,
          prefix: c.held.length ? { keys, valuesT, rows, slotPos } : null,
        });
        assert.equal(kernelDispatches().MoiPrefillAttention ?? 0, on ? 1 : 0, 'dispatched the kernel only when on');
        assert.deepEqual(out.shape, [N, c.nH * c.D]);
        const d = out.dataSync() as Float32Array;
        out.dispose();
        return d;
      };
      const kernel = run(true);
      const composite = run(false);
      tf.dispose([qk, v, keys, valuesT]);
      assert.equal(tf.memory().numTensors, before, 'no tensors left');
      let worstK = 0;
      let worstC = 0;
      let worstKC = 0;
      let scale = 0;
      for (let j = 0; j < want.length; j++) {
        worstK = Math.max(worstK, Math.abs(kernel[j] - want[j]));
        worstC = Math.max(worstC, Math.abs(composite[j] - want[j]));
        worstKC = Math.max(worstKC, Math.abs(kernel[j] - composite[j]));
        scale = Math.max(scale, Math.abs(composite[j]));
      }
      worstKC /= scale; // relative to the output's largest magnitude
      assert.ok(worstK < 2e-6, `kernel vs float64: ${worstK}`);
      assert.ok(worstC < 2e-6, `composite vs float64: ${worstC}`);
      assert.ok(worstKC < 1e-5, `kernel vs composite (relative): ${worstKC}`);
    });
  }

  it('refuses shapes that do not fit and a cache row outside the cache, with typed errors', function () {
    const before = tf.memory().numTensors;
    const qk = tf.zeros([4, 3 * 8]);
    const v = tf.zeros([4, 8]);
    const keys = tf.zeros([1, 1, 3, 8]);
    const valuesT = tf.zeros([1, 1, 8, 3]);
    const base = { heads: 2, kvHeads: 1, headDim: 8, start: [0, 0], window: null, softcap: null, prefix: null };
    assert.throws(
      () => prefillAttention(qk, v, { ...base, heads: 3 }),
      (e: Error) => e.name === 'ModelError' && /shapes do not fit/.test(e.message),
    );
    assert.throws(
      () => prefillAttention(qk, v, { ...base, start: [0, 0, 0] }),
      (e: Error) => e.name === 'ModelError' && /shapes do not fit/.test(e.message),
    );
    assert.throws(
      () => prefillAttention(qk, v, { ...base, prefix: { keys, valuesT, rows: [0, 1], slotPos: [[0, -1, -1]] } }),
      (e: Error) => e.name === 'ModelError' && /cache row 1/.test(e.message),
    );
    tf.dispose([qk, v, keys, valuesT]);
    assert.equal(tf.memory().numTensors, before);
  });
});

describe('prefill q/k heads: norms and RoPE from the fused qkv rows (wasm kernel vs composite vs float64)', function () {
  before(async () => {
    await initBackend({ backend: 'wasm' });
    setKernelsEnabled(true);
  });
  after(() => setKernelsEnabled(true));

  const QK_CASES = [
    { label: 'D64, 12 heads, no norm, x wider than the heads', N: 7, heads: 12, D: 64, W: 14 * 64, norm: false },
    { label: 'D128, 24 heads, per-head norm (Qwen3)', N: 5, heads: 24, D: 128, W: 32 * 128, norm: true },
    { label: 'D256, 5 heads, norm, x exactly the heads', N: 3, heads: 5, D: 256, W: 5 * 256, norm: true },
    { label: 'odd head_dim 6 (scalar tails), 3 heads, norm', N: 9, heads: 3, D: 6, W: 4 * 6, norm: true },
  ];
  for (const [i, c] of QK_CASES.entries()) {
    it(c.label, function () {
      const r = rng(500 + i);
      const xd = randn(r, c.N * c.W, 2);
      const wd = Float32Array.from({ length: c.heads * c.D }, () => 1 + 0.5 * r());
      const half = c.D / 2;
      const cd = new Float32Array(c.N * c.D);
      const sd = new Float32Array(c.N * c.D);
      for (let n = 0; n < c.N; n++) {
        for (let j = 0; j < half; j++) {
          const ang = (n + 3) * 10000 ** (-j / half);
          cd[n * c.D + j] = cd[n * c.D + j + half] = Math.cos(ang);
          sd[n * c.D + j] = sd[n * c.D + j + half] = Math.sin(ang);
        }
      }
      const eps = 1e-6;
      // float64: y = x / sqrt(mean(x²) + eps) · w, then y·cos + rotate_half(y)·sin
      const want = new Float64Array(c.N * c.heads * c.D);
      for (let n = 0; n < c.N; n++) {
        for (let h = 0; h < c.heads; h++) {
          const x = Array.from({ length: c.D }, (_, d) => xd[n * c.W + h * c.D + d]);
          const ms = x.reduce((a, e) => a + e * e, 0) / c.D;
          const y = c.norm ? x.map((e, d) => (e / Math.sqrt(ms + eps)) * wd[h * c.D + d]) : x;
          for (let d = 0; d < c.D; d++) {
            const rot = d < half ? -y[d + half] : y[d - half];
            want[(n * c.heads + h) * c.D + d] = y[d] * cd[n * c.D + d] + rot * sd[n * c.D + d];
          }
        }
      }
      const before = tf.memory().numTensors;
      const x = tf.tensor2d(xd, [c.N, c.W]);
      const w = c.norm ? tf.tensor2d(wd, [c.heads, c.D]) : null;
      const cos = tf.tensor2d(cd, [c.N, c.D]);
      const sin = tf.tensor2d(sd, [c.N, c.D]);
      const run = (on: boolean): Float32Array => {
        setKernelsEnabled(on);
        resetKernelDispatches();
        const out = prefillQk(x, { heads: c.heads, headDim: c.D, normWeight: w, eps, cos, sin });
        assert.equal(kernelDispatches().MoiPrefillQk ?? 0, on ? 1 : 0, 'dispatched the kernel only when on');
        assert.deepEqual(out.shape, [c.N, c.heads, c.D]);
        const d = out.dataSync() as Float32Array;
        out.dispose();
        return d;
      };
      run(false); // the composite's kept constants (scalar eps, the rotate-half matrix) made once
      const constants = tf.memory().numTensors - before - (w ? 4 : 3);
      const kernel = run(true);
      const composite = run(false);
      tf.dispose([x, cos, sin, ...(w ? [w] : [])]);
      assert.equal(tf.memory().numTensors, before + constants, 'no tensors left');
      assert.ok(constants <= 2, `kept constants: ${constants}`);
      let worstK = 0;
      let worstKC = 0;
      let scale = 0;
      for (let j = 0; j < want.length; j++) {
        worstK = Math.max(worstK, Math.abs(kernel[j] - want[j]));
        worstKC = Math.max(worstKC, Math.abs(kernel[j] - composite[j]));
        scale = Math.max(scale, Math.abs(want[j]));
      }
      assert.ok(worstK / scale < 2e-6, `kernel vs float64 (relative to the largest): ${worstK / scale}`);
      assert.ok(worstKC / scale < 1e-6, `kernel vs composite (relative to the largest): ${worstKC / scale}`);
    });
  }
});
