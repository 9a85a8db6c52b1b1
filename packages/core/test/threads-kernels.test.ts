/**
 * The thread pool's kernels (src/kernels/wasm/threads): every op on pools of 1, 2 and 3 threads
 * gives the same bits (the 2- and 3-thread pools leave all chunks to their workers, so worker
 * results are held against the main thread's); each equals its exact JS model (threads-model.ts: the kernel's f32
 * operations in its order) bit for bit on both SIMD paths, and a float64 reference within a
 * derived bound; batched rows equal the same rows alone; q8 with 16-bit activations equals
 * today's single-thread kernel (packed-wat.ts's matmul_q8x16 through packedMatMul) bit for bit;
 * q8 with int8 activations gives the same bits on the relaxed and the plain path.
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../src/dtype.ts';
import { initBackend } from '../src/backend.ts';
import { disposePacked, packedMatMul, packQ8, quantizeQ8 } from '../src/kernels/wasm/packed.ts';
import { prefillAttention } from '../src/kernels/wasm/prefill-attention.ts';
import {
  attention,
  freeWeight,
  gather,
  matmul,
  mix,
  SharedKv,
  pooledPrefillAttention,
  splitHeads,
  ThreadedLinear,
  ThreadPool,
  uploadWeight,
  type MatKind,
  type SharedWeight,
  type SimdPath,
} from '../src/kernels/wasm/threads/index.ts';
import { randn, rng } from './kernel-data.ts';
import {
  attentionF64,
  attentionModel,
  fmaf,
  gamma,
  headModel,
  matmulF64,
  matmulFloatModel,
  matmulQ8x16Model,
  matmulQ8x8Model,
  quantizeModel,
  type KvModel,
} from './threads-model.ts';

/** Bitwise equality of two f32 arrays (NaN payloads and signed zeros included), naming the first difference. */
function sameBits(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: lengths`);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) {
    if (ua[i] !== ub[i]) assert.fail(`${what}: element ${i} differs: ${a[i]} vs ${b[i]}`);
  }
}

interface Case {
  rows: number;
  cols: number;
  N: number;
}
const CASES: Case[] = [
  { rows: 13, cols: 70, N: 1 }, // padded rows and columns
  { rows: 64, cols: 64, N: 2 },
  { rows: 40, cols: 96, N: 3 },
  { rows: 100, cols: 160, N: 5 }, // a GEMM tile of 4 and a rest
  { rows: 300, cols: 256, N: 9 }, // several row grains per thread
  { rows: 70, cols: 4100, N: 30 }, // several x chunks (8 rows at f32, 20 at q8) under each 32-row unit, and a rest in the last
];

interface Made {
  src: Parameters<typeof uploadWeight>[1];
  wide: Float32Array;
  q?: Int8Array;
  d?: Float32Array;
}

function makeWeight(kind: MatKind, rows: number, cols: number, seed: number): Made {
  const r = rng(seed);
  const v = randn(r, rows * cols, 0.5);
  for (let c = 0; c < cols && rows > 2; c++) v[cols + c] = 0; // an all-zero row
  if (kind === 'f32') return { src: { kind, values: v }, wide: v };
  if (kind === 'q8') {
    const { q, d } = quantizeQ8(v, rows, cols);
    return { src: { kind, q, d }, wide: v, q, d };
  }
  const words = kind === 'bf16' ? f32ToBf16(v) : f32ToF16(v);
  return { src: { kind, words }, wide: kind === 'bf16' ? bf16ToF32(words) : f16ToF32(words) };
}

function xOf(N: number, cols: number, seed: number): Float32Array {
  const x = randn(rng(seed), N * cols, 2);
  if (N > 1) for (let c = 0; c < Math.min(cols, 32); c++) x[cols + c] = 0; // an all-zero block
  return x;
}

describe('thread pool kernels', function () {
  this.timeout(300_000);
  const pools: Record<string, ThreadPool> = {};
  /** both paths when this Node runs the relaxed one, else the plain one only */
  let simdPaths: SimdPath[] = ['simd128'];

  before(async () => {
    // multi-thread pools leave every chunk to their workers: their bits are held against the main thread's
    for (const t of [1, 2, 3]) pools[`auto${t}`] = await ThreadPool.create({ threads: t, mainClaims: t === 1 });
    for (const t of [1, 3])
      pools[`plain${t}`] = await ThreadPool.create({ threads: t, simd: 'simd128', mainClaims: t === 1 });
    if (pools.auto1.info.simd === 'relaxed') simdPaths = ['relaxed', 'simd128'];
  });
  after(async () => {
    for (const p of Object.values(pools)) await p.dispose();
  });
  const byPath = (simd: SimdPath, t: number) =>
    simd === pools.auto1.info.simd ? pools[`auto${t}`] : pools[`plain${t}`];

  it('runs the relaxed path on this Node (its self-tests pass after the flag)', () => {
    // Node 20 needs the flag, 22 has it by default; either way the pool must have taken it here
    assert.equal(pools.auto1.info.simd, 'relaxed', `fell back: ${pools.auto1.info.fallback}`);
    assert.equal(pools.plain1.info.simd, 'simd128');
  });

  it("fmaf (the models' fused multiply-add) equals relaxed_madd on cases that round differently", () => {
    const ex = pools.auto1.exports;
    const r = rng(7);
    let fusedDiffers = 0;
    for (let i = 0; i < 2000; i++) {
      const a = Math.fround(1 + r() * 2 ** -10);
      const b = Math.fround(1 - r() * 2 ** -10);
      const c = Math.fround(-a * b * (1 + r() * 2 ** -20));
      const got = ex.selftest_madd(a, b, c);
      assert.equal(got, fmaf(a, b, c), `madd(${a}, ${b}, ${c})`);
      if (got !== Math.fround(c + Math.fround(a * b))) fusedDiffers++;
    }
    assert.ok(fusedDiffers > 100, `the cases must tell fused from unfused (${fusedDiffers} did)`);
  });

  for (const kind of ['f32', 'bf16', 'f16'] as const) {
    it(`mm_${kind}: model bit for bit on both paths, 1/2/3 threads equal, float64 within γ_cols`, () => {
      for (const [ci, c] of CASES.entries()) {
        const m = makeWeight(kind, c.rows, c.cols, 100 + ci);
        const x = xOf(c.N, c.cols, 200 + ci);
        const ref = matmulF64(m.wide, x, c.N, c.rows, c.cols);
        for (const simd of simdPaths) {
          const model = matmulFloatModel(simd, m.wide, x, c.N, c.rows, c.cols);
          let first: Float32Array | null = null;
          for (const t of simd === 'relaxed' ? [1, 2, 3] : [1, 3]) {
            const pool = byPath(simd, t);
            const w = uploadWeight(pool, m.src, c.rows, c.cols);
            const y = matmul(pool, w, x, c.N);
            freeWeight(pool, w);
            sameBits(y, model, `${kind} ${simd} ${JSON.stringify(c)} threads ${t} vs model`);
            if (first) sameBits(y, first, `${kind} ${simd} threads ${t} vs 1`);
            first ??= y;
          }
          const colsP = Math.ceil(c.cols / 32) * 32;
          for (let i = 0; i < model.length; i++) {
            assert.ok(
              Math.abs(model[i] - ref.y[i]) <= gamma(colsP) * ref.mag[i] + 1e-30,
              `${kind} ${simd} output ${i}: ${model[i]} vs ${ref.y[i]}`,
            );
          }
        }
      }
    });
  }

  it('mm_q8x8 (int8 activations): model bit for bit, the same bits on both paths and any thread count, within the quantization bound', () => {
    for (const [ci, c] of CASES.entries()) {
      const m = makeWeight('q8', c.rows, c.cols, 300 + ci);
      const x = xOf(c.N, c.cols, 400 + ci);
      const model = matmulQ8x8Model(m.q!, m.d!, x, c.N, c.rows, c.cols);
      for (const [name, pool] of Object.entries(pools)) {
        const w = uploadWeight(pool, m.src, c.rows, c.cols);
        sameBits(matmul(pool, w, x, c.N), model, `q8x8 ${name} ${JSON.stringify(c)}`);
        freeWeight(pool, w);
      }
      // against float64 on the quantized values: |x − q·d| ≤ d/2 per element, plus f32 sums
      const nb = Math.ceil(c.cols / 32);
      const wq = Float32Array.from(
        { length: c.rows * c.cols },
        (_, i) => m.q![i] * m.d![Math.floor(i / c.cols) * nb + Math.floor((i % c.cols) / 32)],
      );
      const ref = matmulF64(wq, x, c.N, c.rows, c.cols);
      const { d: xd } = quantizeModel(x, c.N, c.cols, 127);
      for (let n = 0; n < c.N; n++) {
        for (let r = 0; r < c.rows; r++) {
          let bound = gamma(nb + 2) * ref.mag[n * c.rows + r] * 1.01;
          for (let k = 0; k < c.cols; k++)
            bound += (Math.abs(wq[r * c.cols + k]) * xd[n * nb + Math.floor(k / 32)]) / 2;
          const i = n * c.rows + r;
          assert.ok(
            Math.abs(model[i] - ref.y[i]) <= bound * (1 + 1e-6),
            `q8x8 output ${i}: ${model[i]} vs ${ref.y[i]} (bound ${bound})`,
          );
        }
      }
    }
  });

  it("mm_q8x16 (16-bit activations): model bit for bit on any thread count, and today's packedMatMul bit for bit", async () => {
    await initBackend({ backend: 'wasm' });
    for (const [ci, c] of CASES.entries()) {
      const m = makeWeight('q8', c.rows, c.cols, 500 + ci);
      const x = xOf(c.N, c.cols, 600 + ci);
      const model = matmulQ8x16Model(m.q!, m.d!, x, c.N, c.rows, c.cols);
      for (const [name, pool] of Object.entries(pools)) {
        const w = uploadWeight(pool, m.src, c.rows, c.cols);
        sameBits(matmul(pool, w, x, c.N, { q8: 'x16' }), model, `q8x16 ${name} ${JSON.stringify(c)}`);
        freeWeight(pool, w);
      }
      if (c.cols % 32 === 0) {
        // today's single-thread kernel (packed-wat.ts's matmul_q8x16, used below Q8_GEMM_MIN_ROWS rows)
        const pw = packQ8(m.wide, c.rows, c.cols);
        const today = tf.tidy(() => packedMatMul(tf.tensor2d(x, [c.N, c.cols]), pw).dataSync() as Float32Array);
        disposePacked(pw);
        sameBits(today, model, `q8x16 vs packedMatMul ${JSON.stringify(c)}`);
      }
    }
  });

  it('batched rows equal the same rows alone, every kind', () => {
    const pool = pools.auto2;
    for (const kind of ['f32', 'bf16', 'f16', 'q8'] as const) {
      const m = makeWeight(kind, 77, 200, 700);
      const N = 11;
      const x = xOf(N, 200, 701);
      const w = uploadWeight(pool, m.src, 77, 200);
      for (const q8 of kind === 'q8' ? (['x8', 'x16'] as const) : (['x8'] as const)) {
        const all = matmul(pool, w, x, N, { q8 });
        for (let n = 0; n < N; n++) {
          sameBits(
            matmul(pool, w, x.subarray(n * 200, (n + 1) * 200), 1, { q8 }),
            all.subarray(n * 77, (n + 1) * 77),
            `${kind} ${q8} row ${n}`,
          );
        }
      }
      freeWeight(pool, w);
    }
  });

  it('ThreadedLinear.applySplit: tf.split of apply() bit for bit (epilogue included), every kind; bad widths refused', async () => {
    await initBackend({ backend: 'wasm' });
    const pool = pools.auto2;
    const [rows, cols, N] = [70, 96, 5];
    for (const kind of ['f32', 'bf16', 'q8'] as const) {
      const m = makeWeight(kind, rows, cols, 900);
      const r = rng(901);
      const bias = tf.tensor1d(randn(r, rows, 1));
      const outScale = tf.tensor1d(randn(r, rows, 1));
      const layer = ThreadedLinear.upload(pool, m.src, rows, cols, { bias, outScale, label: `w_${kind}` });
      const before = tf.memory().numTensors;
      tf.tidy(() => {
        const x = tf.tensor2d(xOf(N, cols, 902), [N, cols]);
        const whole = layer.apply(x);
        const widths = [30, 0, 8, 32];
        const parts = layer.applySplit(x, widths);
        const expected = tf.split(whole, widths, 1);
        assert.deepEqual(
          parts.map((p) => p.shape),
          expected.map((p) => p.shape),
        );
        parts.forEach((p, k) =>
          sameBits(p.dataSync() as Float32Array, expected[k].dataSync() as Float32Array, `${kind} part ${k}`),
        );
        assert.throws(
          () => layer.applySplit(x, [30, 30]),
          /w_\w+: parts \[30,30\] are not whole widths adding up to its 70 output features/,
        );
        assert.throws(() => layer.applySplit(x, [71, -1]), /parts \[71,-1\] are not whole widths/);
      });
      assert.equal(tf.memory().numTensors, before, `${kind}: no tensors left behind`);
      layer.dispose();
    }
  });

  it("pooledPrefillAttention: the single-thread kernel's bits (GQA, prefix, ring, window, softcap, rows at different starts), any thread count", async () => {
    await initBackend({ backend: 'wasm' });
    const [nH, nKV, D] = [6, 2, 16];
    const r = rng(950);
    type Case = { T: number; start: number[]; rows: number[] | null; window: number | null; softcap: number | null };
    const cases: Case[] = [
      { T: 5, start: [0, 0], rows: null, window: null, softcap: null },
      { T: 6, start: [7, 5], rows: [2, 0], window: null, softcap: 30.7 },
      { T: 3, start: [12, 5], rows: [1, 0], window: 6, softcap: null },
    ];
    // cache rows: row 0 holds positions 0..4, row 1 a ring of 8 slots holding 4..11, row 2 positions 0..6
    const S = 8;
    const slotPos = [
      [0, 1, 2, 3, 4, -1, -1, -1],
      [8, 9, 10, 11, 4, 5, 6, 7],
      [0, 1, 2, 3, 4, 5, 6, -1],
    ];
    for (const c of cases) {
      const B = c.start.length;
      const N = B * c.T;
      const before = tf.memory().numTensors;
      tf.tidy(() => {
        const qkv = tf.tensor2d(randn(r, N * (nH + 2 * nKV) * D, 1), [N, (nH + 2 * nKV) * D]);
        const qk = tf.slice(qkv, [0, 0], [N, (nH + nKV) * D]);
        const keys = tf.tensor4d(randn(r, 3 * nKV * S * D, 1), [3, nKV, S, D]);
        const valuesT = tf.tensor4d(randn(r, 3 * nKV * D * S, 1), [3, nKV, D, S]);
        const o = {
          heads: nH,
          kvHeads: nKV,
          headDim: D,
          start: c.start,
          window: c.window,
          softcap: c.softcap,
          vColumn: (nH + nKV) * D,
          prefix: c.rows ? { keys, valuesT, rows: c.rows, slotPos } : null,
        };
        const want = prefillAttention(qk, qkv, o).dataSync() as Float32Array;
        assert.ok(want.every(Number.isFinite) && want.some((x) => x !== 0));
        for (const pool of [pools.auto1, pools.auto2, pools.auto3, pools.plain3]) {
          const got = pooledPrefillAttention(pool, qk, qkv, o);
          assert.deepEqual(got.shape, [N, nH * D]);
          sameBits(got.dataSync() as Float32Array, want, `T ${c.T}, start ${c.start}, ${pool.threads} threads`);
        }
      });
      assert.equal(tf.memory().numTensors, before);
    }
    // shapes that do not fit: the same typed error as the single-thread op
    tf.tidy(() => {
      const qk = tf.zeros([4, (nH + nKV) * D]);
      assert.throws(
        () =>
          pooledPrefillAttention(pools.auto2, qk, qk, {
            heads: nH,
            kvHeads: nKV,
            headDim: D,
            start: [0, 0, 0],
            window: null,
            softcap: null,
            prefix: null,
          }),
        (e: any) => e.code === 'E_ATTENTION' && /shapes do not fit/.test(e.message),
      );
    });
  });

  it('gather and mix: exact widening (q8 as q·d), the mix in k order, any thread count', () => {
    for (const kind of ['f32', 'bf16', 'f16', 'q8'] as const) {
      const rows = 50;
      const cols = 200;
      const m = makeWeight(kind, rows, cols, 800);
      const table =
        kind === 'q8'
          ? Float32Array.from({ length: rows * cols }, (_, i) =>
              Math.fround(m.q![i] * m.d![Math.floor(i / cols) * 7 + Math.floor((i % cols) / 32)]),
            )
          : m.wide;
      const ids = Int32Array.from([3, 0, 49, 3, 17]);
      const M = 2;
      const K = 4;
      const mixIds = Int32Array.from([1, 5, 9, 1, 48, 0, 2, 3]);
      const wts = randn(rng(801), M * K);
      const wantRows = new Float32Array(ids.length * cols);
      ids.forEach((id, i) => wantRows.set(table.subarray(id * cols, (id + 1) * cols), i * cols));
      const wantMix = new Float32Array(M * cols);
      for (let mi = 0; mi < M; mi++) {
        for (let c = 0; c < cols; c++) {
          let acc = 0;
          for (let k = 0; k < K; k++)
            acc = Math.fround(acc + Math.fround(wts[mi * K + k] * table[mixIds[mi * K + k] * cols + c]));
          wantMix[mi * cols + c] = acc;
        }
      }
      for (const [name, pool] of Object.entries(pools)) {
        const w = uploadWeight(pool, m.src, rows, cols);
        sameBits(gather(pool, w, ids), wantRows, `gather ${kind} ${name}`);
        sameBits(mix(pool, w, mixIds, wts, M, K), wantMix, `mix ${kind} ${name}`);
        assert.throws(() => gather(pool, w, Int32Array.from([0, 50])), /id 50 \(#1\) is outside the table's 50 rows/);
        assert.throws(() => mix(pool, w, Int32Array.from([-1]), new Float32Array(1), 1, 1), /id -1/);
        freeWeight(pool, w);
      }
    }
  });

  /** A cache of Bc rows filled from JS, and its model. */
  function makeKv(
    pool: ThreadPool,
    Bc: number,
    nKV: number,
    cap: number,
    D: number,
    filled: number[],
    seed: number,
  ): { kv: SharedKv; model: KvModel } {
    const kv = new SharedKv(pool, Bc, nKV, cap, D);
    const S = kv.S;
    const r = rng(seed);
    const model: KvModel = {
      Bc,
      nKV,
      S,
      D,
      keys: new Float32Array(Bc * nKV * S * D),
      vals: new Float32Array(Bc * nKV * S * D),
      slotPos: new Int32Array(Bc * S).fill(-1),
    };
    for (let b = 0; b < Bc; b++) {
      for (let p = 0; p < filled[b]; p++) {
        const slot = p % cap; // a ring of `cap` slots: older positions overwritten
        const k = randn(r, nKV * D);
        const v = randn(r, nKV * D);
        kv.write(b, slot, p, k, v);
        for (let g = 0; g < nKV; g++) {
          model.keys.set(k.subarray(g * D, (g + 1) * D), ((b * nKV + g) * S + slot) * D);
          model.vals.set(v.subarray(g * D, (g + 1) * D), ((b * nKV + g) * S + slot) * D);
        }
        model.slotPos[b * S + slot] = p;
      }
    }
    return { kv, model };
  }

  it('attention: model bit for bit (GQA, window, softcap, a ring, an empty row), 1/2/3 threads equal, float64 close', () => {
    const nH = 6;
    const nKV = 2;
    const D = 16;
    const Bc = 3;
    const cap = 10; // S rounds up to 12
    for (const [window, softcap] of [
      [0, 0],
      [4, 0],
      [0, 5],
    ]) {
      const qinfo = Int32Array.from([0, 6, 1, 13, 2, 0, 0, 2]); // row 1 wrapped its ring; row 2 empty (sees nothing at 0? it has no slots)
      const Nq = qinfo.length / 2;
      const q = randn(rng(900 + window), Nq * nH * D, 0.5);
      for (const simd of simdPaths) {
        let first: Float32Array | null = null;
        for (const t of simd === 'relaxed' ? [1, 2, 3] : [1, 3]) {
          const pool = byPath(simd, t);
          const { kv, model } = makeKv(pool, Bc, nKV, cap, D, [7, 14, 0], 901);
          const y = attention(pool, kv, q, qinfo, nH, { window, softcap });
          const want = new Float32Array(Nq * nH * D);
          for (let i = 0; i < Nq; i++) {
            for (let h = 0; h < nH; h++) {
              const qh = q.subarray((i * nH + h) * D, (i * nH + h + 1) * D);
              want.set(
                attentionModel(simd, model, qh, qinfo[2 * i], qinfo[2 * i + 1], h, nH, window, Math.fround(softcap)),
                (i * nH + h) * D,
              );
              const f = attentionF64(model, qh, qinfo[2 * i], qinfo[2 * i + 1], h, nH, window, softcap);
              for (let d = 0; d < D; d++)
                assert.ok(
                  Math.abs(f[d] - y[(i * nH + h) * D + d]) < 2e-6,
                  `attention ${simd} [${i}, ${h}, ${d}]: ${y[(i * nH + h) * D + d]} vs ${f[d]}`,
                );
            }
          }
          sameBits(y, want, `attention ${simd} window ${window} softcap ${softcap} threads ${t}`);
          if (first) sameBits(y, first, `attention threads ${t} vs 1`);
          first ??= y;
          kv.free();
        }
      }
    }
  });

  it('splitHeads: q returned and k, v written into the cache (normed, rotated) as the model computes, any thread count', () => {
    const nH = 4;
    const nKV = 2;
    const D = 16;
    const N = 3;
    const width = (nH + 2 * nKV) * D;
    const qkv = randn(rng(1000), N * width);
    const cos = randn(rng(1001), N * D);
    const sin = randn(rng(1002), N * D);
    const qNorm = randn(rng(1003), D);
    const kNorm = randn(rng(1004), D);
    const rowsInfo = Int32Array.from([0, 3, 3, 1, 0, 0, 0, 5, 9]); // (crow, slot, pos) per row
    let first: Float32Array | null = null;
    for (const [name, pool] of Object.entries(pools)) {
      const kv = new SharedKv(pool, 2, nKV, 8, D);
      const q = splitHeads(pool, kv, qkv, N, nH, { rows: rowsInfo, cos, sin, qNorm, kNorm, eps: 1e-6 });
      const keys = pool.heap.f32(kv.keys.ptr, 2 * nKV * kv.S * D);
      const vals = pool.heap.f32(kv.valsT.ptr, 2 * nKV * kv.S * D);
      for (let n = 0; n < N; n++) {
        const head = (h: number) => qkv.subarray(n * width + h * D, n * width + (h + 1) * D);
        const [crow, slot, pos] = [rowsInfo[3 * n], rowsInfo[3 * n + 1], rowsInfo[3 * n + 2]];
        const c = cos.subarray(n * D, (n + 1) * D);
        const s = sin.subarray(n * D, (n + 1) * D);
        for (let h = 0; h < nH; h++)
          sameBits(
            q.subarray((n * nH + h) * D, (n * nH + h + 1) * D),
            headModel(head(h), D, qNorm, 1e-6, c, s),
            `${name} q row ${n} head ${h}`,
          );
        for (let g = 0; g < nKV; g++) {
          const k = keys.subarray(((crow * nKV + g) * kv.S + slot) * D, ((crow * nKV + g) * kv.S + slot + 1) * D);
          sameBits(k, headModel(head(nH + g), D, kNorm, 1e-6, c, s), `${name} k row ${n} head ${g}`);
          const v = Float32Array.from({ length: D }, (_, d) => vals[((crow * nKV + g) * D + d) * kv.S + slot]);
          sameBits(v, Float32Array.from(head(nH + nKV + g)), `${name} v row ${n} head ${g}`);
        }
        assert.equal(kv.positions()[crow * kv.S + slot], pos);
      }
      if (first) sameBits(q, first, `${name} vs the first pool`);
      first ??= q;
      assert.throws(
        () => splitHeads(pool, kv, qkv, N, nH, { rows: Int32Array.from([0, 8, 0, 0, 0, 0, 0, 0, 0]) }),
        /slot 8/,
      );
      kv.free();
    }
  });

  it('frees what it allocates: the heap holds the same blocks after weights and caches are freed', () => {
    const pool = pools.auto2;
    matmul(pool, uploadWeight(pool, makeWeight('f32', 8, 32, 0).src, 8, 32), xOf(1, 32, 0), 1); // the scratch block exists (one weight left behind)
    const before = pool.heap.blocks;
    const ws: SharedWeight[] = (['f32', 'bf16', 'f16', 'q8'] as const).map((k, i) =>
      uploadWeight(pool, makeWeight(k, 33, 40, i).src, 33, 40),
    );
    for (const w of ws) matmul(pool, w, xOf(2, 40, 1), 2);
    const kv = new SharedKv(pool, 2, 2, 9, 8);
    for (const w of ws) freeWeight(pool, w);
    kv.free();
    assert.equal(pool.heap.blocks, before);
  });
});
