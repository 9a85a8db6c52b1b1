/**
 * The packed-weight kernels (packed-wat.ts behind packedMatMul, packedMatMulT, packedRows on the
 * wasm backend): each equals its composite (MOI_KERNELS=0 path) and a float64 reference computed
 * here from widenPacked's exact f32 values, over every kind, odd sizes (tails of the 32-column
 * step, cols = 1), the decode tiles (N < 4) and the GEMM (N ≥ 4, partial 8-row blocks), bias/outScale, extreme and subnormal values,
 * without leaking tensors. Widening itself is checked bit for bit against dtype.ts.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import {
  activeKernels,
  assembleWat,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  initBackend,
  kernelDispatches,
  kernelsCachePath,
  packedBinary,
  packedMatMul,
  packedMatMulT,
  packedRows,
  packedSource,
  pack16,
  packQ8,
  Q8_BLOCK,
  Q8_GEMM_MIN_ROWS,
  resetKernelDispatches,
  roundActivations16,
  setKernelsEnabled,
  widenPacked,
  disposePacked,
  type PackedKind,
  type PackedWeight,
} from '../src/index.ts';
import { randn as uniform, rng } from './kernel-data.ts';

/**
 * A [rows, cols] weight of the given kind with awkward rows mixed in: row 0 all zero, row 1 with
 * values up to ±3e4 (f16: near its largest finite), row 2 all negative, the rest uniform; f16
 * also gets subnormal words (exponent 0) sprinkled through it.
 */
function makeWeight(kind: PackedKind, rows: number, cols: number, seed: number): PackedWeight {
  const r = rng(seed);
  const v = uniform(r, rows * cols, 0.5);
  for (let c = 0; c < cols; c++) {
    if (rows > 1) v[c] = 0;
    if (rows > 2) v[cols + c] = r() * 3e4;
    if (rows > 3) v[2 * cols + c] = -Math.abs(r()) - 1e-3;
  }
  if (kind === 'q8') return packQ8(v, rows, cols);
  const words = kind === 'bf16' ? f32ToBf16(v) : f32ToF16(v);
  if (kind === 'f16') {
    for (let i = 5; i < words.length; i += 7) words[i] = (i & 0x8000) | (((i * 2654435761) >>> 0) & 0x3ff); // subnormals (and ±0)
  }
  return pack16(kind, words, rows, cols);
}

/** float64 x · Wᵀ (· s) (+ b) from the exact widened values, and Σ|x·w| per output (the error scale). */
function reference(
  x: Float32Array,
  N: number,
  wf: Float32Array,
  rows: number,
  cols: number,
  s?: Float32Array,
  b?: Float32Array,
): { y: Float64Array; mag: Float64Array } {
  const y = new Float64Array(N * rows);
  const mag = new Float64Array(N * rows);
  for (let n = 0; n < N; n++) {
    for (let j = 0; j < rows; j++) {
      let acc = 0;
      let m = 0;
      for (let c = 0; c < cols; c++) {
        const p = x[n * cols + c] * wf[j * cols + c];
        acc += p;
        m += Math.abs(p);
      }
      const sc = s ? s[j] : 1;
      y[n * rows + j] = acc * sc + (b ? b[j] : 0);
      mag[n * rows + j] = m * Math.abs(sc) + (b ? Math.abs(b[j]) : 0);
    }
  }
  return { y, mag };
}

/**
 * q8's input rounding, written from its definition (packed.ts, roundActivations16): per block of
 * 32 columns of a row, d = fround(max|x| / 32767), q = round(fround(x / d)) half away from zero
 * (0 when d = 0), values fround(q · d).
 */
function round16(x: Float32Array, N: number, cols: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let n = 0; n < N; n++) {
    for (let c0 = 0; c0 < cols; c0 += Q8_BLOCK) {
      const c1 = Math.min(cols, c0 + Q8_BLOCK);
      let m = 0;
      for (let c = c0; c < c1; c++) m = Math.max(m, Math.abs(x[n * cols + c]));
      const d = Math.fround(m / 32767);
      for (let c = c0; c < c1; c++) {
        const v = d === 0 ? 0 : Math.fround(x[n * cols + c] / d);
        out[n * cols + c] = Math.sign(v) * Math.floor(Math.abs(v) + 0.5) * d;
      }
    }
  }
  return out;
}

/** The worst |got − want| / (Σ|x·w| + tiny) over all outputs. */
function worstRel(got: Float32Array, want: Float64Array, mag: Float64Array): number {
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i] - want[i]) / (mag[i] + 1e-30);
    if (!(e <= worst)) worst = Number.isNaN(e) ? Infinity : e;
  }
  return worst;
}

/** Run `f` with the kernels on, then off (the composite); returns both results and checks the dispatch count. */
function bothWays(name: string, f: () => tf.Tensor): [Float32Array, Float32Array] {
  const run = (on: boolean): Float32Array => {
    setKernelsEnabled(on);
    resetKernelDispatches();
    const t = f();
    assert.equal(kernelDispatches()[name] ?? 0, on ? 1 : 0, `${name} dispatched only with the kernels on`);
    const d = t.dataSync() as Float32Array;
    t.dispose();
    return d;
  };
  try {
    return [run(true), run(false)];
  } finally {
    setKernelsEnabled(true);
  }
}

const KINDS: PackedKind[] = ['bf16', 'f16', 'q8'];
const TOL = 1e-5;

describe('packed kernels: the generated module', function () {
  before(async () => {
    await initBackend({ backend: 'wasm' });
  });

  it('assembles into a valid module that imports only the heap and exports each routine; the cached build equals a rebuild', async function () {
    const fresh = await assembleWat(packedSource(), 'packed.wat');
    const mod = new WebAssembly.Module(fresh as BufferSource);
    assert.deepEqual(
      WebAssembly.Module.imports(mod).map((i) => `${i.module}.${i.name}:${i.kind}`),
      ['env.memory:memory'],
    );
    assert.deepEqual(
      WebAssembly.Module.exports(mod)
        .map((e) => e.name)
        .sort(),
      [
        'axpy',
        'deinterleave',
        'epilogue',
        'gemm_bf16',
        'gemm_f16',
        'gemm_q8',
        'matmul_bf16',
        'matmul_f16',
        'matmul_q8x16',
        'matmul_t_bf16',
        'matmul_t_f16',
        'matmul_t_q8',
        'quantize_x16',
        'widen_bf16',
        'widen_f16',
        'widen_q8',
      ],
    );
    assert.deepEqual(Buffer.from(await packedBinary()), Buffer.from(fresh));
    assert.deepEqual(
      readFileSync(kernelsCachePath(packedSource(), 'moi-packed')),
      Buffer.from(fresh),
      'the disk cache equals a rebuild',
    );
  });
});

describe('packed kernels: packedRows widens exactly (wasm)', function () {
  before(async () => {
    await initBackend({ backend: 'wasm' });
    setKernelsEnabled(true);
  });

  it('f16: all 65,536 words (±0, subnormals, normals, ±inf, NaN payloads) equal dtype.ts f16ToF32 bit for bit', function () {
    const words = Uint16Array.from({ length: 65536 }, (_, i) => i);
    for (const [rows, cols] of [
      [1, 65536],
      [256, 256],
      [2048, 32],
      [(65536 / 37) | 0, 37],
    ] as const) {
      const w = pack16('f16', words.subarray(0, rows * cols), rows, cols);
      const before = tf.memory().numTensors;
      const ids = tf.tensor1d(
        Array.from({ length: rows }, (_, i) => i),
        'int32',
      );
      const [k] = bothWays('MoiPackedRows', () => packedRows(w, ids));
      ids.dispose();
      assert.equal(tf.memory().numTensors, before);
      assert.deepEqual(
        new Uint32Array(k.buffer, k.byteOffset, k.length),
        new Uint32Array(f16ToF32(words.subarray(0, rows * cols)).buffer),
        `[${rows}, ${cols}]`,
      );
      disposePacked(w);
    }
  });

  for (const kind of KINDS) {
    for (const cols of [1, 31, 33, 576, 2055]) {
      it(`${kind} cols ${cols}: ids with repeats and the last row equal widenPacked's rows bit for bit`, function () {
        const rows = 41;
        const w = makeWeight(kind, rows, cols, cols);
        const wf = widenPacked(w);
        const idList = [rows - 1, 0, 3, 3, 1, 40, 2, 17, rows - 1];
        const before = tf.memory().numTensors;
        const ids = tf.tensor1d(idList, 'int32');
        const [k, c] = bothWays('MoiPackedRows', () => packedRows(w, ids));
        ids.dispose();
        assert.equal(tf.memory().numTensors, before, 'no tensors left');
        const want = new Float32Array(idList.length * cols);
        idList.forEach((id, i) => want.set(wf.subarray(id * cols, (id + 1) * cols), i * cols));
        assert.deepEqual(new Uint32Array(k.buffer, k.byteOffset, k.length), new Uint32Array(want.buffer), 'kernel');
        assert.deepEqual(new Uint32Array(c.buffer, c.byteOffset, c.length), new Uint32Array(want.buffer), 'composite');
        disposePacked(w);
      });
    }
  }

  it('refuses ids outside the rows and non-int32 ids with typed errors, leaking nothing', function () {
    const w = makeWeight('bf16', 5, 8, 1);
    const before = tf.memory().numTensors;
    const bad = tf.tensor1d([0, 5], 'int32');
    assert.throws(
      () => packedRows(w, bad),
      (e: Error) => e.name === 'ModelError' && /id 5 is outside the weight's 5 rows/.test(e.message),
    );
    const neg = tf.tensor1d([-1], 'int32');
    assert.throws(
      () => packedRows(w, neg),
      (e: Error) => e.name === 'ModelError' && /id -1/.test(e.message),
    );
    const flt = tf.tensor1d([0, 1], 'float32');
    assert.throws(
      () => packedRows(w, flt as tf.Tensor1D),
      (e: Error) => e.name === 'ModelError' && /int32/.test(e.message),
    );
    tf.dispose([bad, neg, flt]);
    assert.equal(tf.memory().numTensors, before);
    disposePacked(w);
  });
});

describe('packed kernels: packedMatMul equals the composite and a float64 reference (wasm)', function () {
  before(async () => {
    await initBackend({ backend: 'wasm' });
    setKernelsEnabled(true);
  });

  const SHAPES: { rows: number; cols: number; Ns: number[] }[] = [
    { rows: 1, cols: 1, Ns: [1, 2, 5] },
    { rows: 7, cols: 31, Ns: [1, 3, 4, 17, 35] },
    { rows: 9, cols: 32, Ns: [2, 3, 4, 12, 14] },
    { rows: 300, cols: 33, Ns: [1, 2, 5, 6, 7, 11, 12, 13, 16, 128] },
    { rows: 64, cols: 576, Ns: [1, 4, 9, 17] },
    { rows: 13, cols: 2055, Ns: [1, 3, 16, 128] },
  ];
  for (const kind of KINDS) {
    for (const { rows, cols, Ns } of SHAPES) {
      it(`${kind} [${rows}, ${cols}], N = ${Ns.join(', ')}, plain and with outScale + bias`, function () {
        const r = rng(rows * 1000 + cols);
        const w = makeWeight(kind, rows, cols, rows + cols);
        const wf = widenPacked(w);
        const sd = uniform(r, rows, 2);
        const bd = uniform(r, rows, 3);
        const scale = tf.tensor1d(sd);
        const bias = tf.tensor1d(bd);
        for (const N of Ns) {
          const xd = uniform(r, N * cols);
          for (const withEpi of [false, true]) {
            const before = tf.memory().numTensors;
            const x = tf.tensor2d(xd, [N, cols]);
            const [k, c] = bothWays('MoiPackedMatMul', () =>
              packedMatMul(x, w, withEpi ? { outScale: scale, bias } : {}),
            );
            x.dispose();
            assert.equal(tf.memory().numTensors, before, 'no tensors left');
            // q8 multiplies x rounded to 16 bits per block (both ways: the kernel's integers, the composite's values)
            const xr = kind === 'q8' ? round16(xd, N, cols) : xd;
            const { y, mag } = reference(xr, N, wf, rows, cols, withEpi ? sd : undefined, withEpi ? bd : undefined);
            const ek = worstRel(k, y, mag);
            const ec = worstRel(c, y, mag);
            assert.ok(ek <= TOL, `N ${N}${withEpi ? ' +epilogue' : ''}: kernel vs float64 ${ek}`);
            assert.ok(ec <= TOL, `N ${N}${withEpi ? ' +epilogue' : ''}: composite vs float64 ${ec}`);
            assert.ok(worstRel(k, Float64Array.from(c), mag) <= 2 * TOL, `N ${N}: kernel vs composite`);
          }
        }
        tf.dispose([scale, bias]);
        disposePacked(w);
      });
    }
  }

  it('each x row alone (the decode tile) gives what it gives in a batch of Q8_GEMM_MIN_ROWS + 1 (the GEMM), up to summation order', function () {
    const w = makeWeight('q8', 9, 70, 5);
    const B = Q8_GEMM_MIN_ROWS + 1;
    const xd = uniform(rng(3), B * 70);
    const { mag } = reference(xd, B, widenPacked(w), 9, 70);
    const x = tf.tensor2d(xd, [B, 70]); // the GEMM on x's rounded values
    const all = packedMatMul(x, w);
    const together = all.dataSync().slice();
    for (let n = 0; n < B; n++) {
      const one = tf.tensor2d(xd.subarray(n * 70, (n + 1) * 70), [1, 70]);
      const yt = packedMatMul(one, w);
      const y = yt.dataSync();
      yt.dispose();
      for (let j = 0; j < 9; j++) {
        assert.ok(
          Math.abs(y[j] - together[n * 9 + j]) <= TOL * mag[n * 9 + j],
          `row ${n}, output ${j}: ${y[j]} alone, ${together[n * 9 + j]} batched`,
        );
      }
      one.dispose();
    }
    tf.dispose([x, all]);
    disposePacked(w);
  });

  it('q8 rounds x to 16 bits per block of 32 as defined (bit for bit): short last blocks, all-zero blocks, halves, a wide range', function () {
    const cols = 75; // blocks of 32, 32, 11
    const N = 3;
    const xd = uniform(rng(11), N * cols);
    for (let c = 32; c < 64; c++) xd[cols + c] = 0; // row 1, block 1: all zero (d = 0)
    for (let c = 0; c < 32; c++) xd[2 * cols + c] = (c - 16) * 0.5 * 1e-3; // row 2, block 0: max 8e-3
    xd[2 * cols + 40] = 3e4; // row 2, block 1: one large value beside small ones
    xd[2 * cols + 41] = -1e-6;
    const x = tf.tensor2d(xd, [N, cols]);
    const got = roundActivations16(x);
    assert.deepEqual(new Uint32Array(got.dataSync().buffer), new Uint32Array(round16(xd, N, cols).buffer));
    const want = round16(xd, N, cols);
    for (let c = 32; c < 64; c++) assert.equal(want[cols + c], 0);
    // a block's largest value keeps its magnitude (q = ±32767): rounding error at most d / 2 elsewhere
    for (let n = 0; n < N; n++) {
      for (let c0 = 0; c0 < cols; c0 += 32) {
        const blk = Array.from(xd.subarray(n * cols + c0, n * cols + Math.min(cols, c0 + 32)));
        const d = Math.max(...blk.map(Math.abs)) / 32767;
        blk.forEach((v, i) =>
          assert.ok(Math.abs(want[n * cols + c0 + i] - v) <= (d / 2) * (1 + 1e-6) + 1e-30, `row ${n} col ${c0 + i}`),
        );
      }
    }
    tf.dispose([x, got]);
  });

  it("quantize_x16 (the kernels' rounding) gives the definition bit for bit, as integers and scales or as values", function () {
    const k = activeKernels();
    assert.ok(k, 'kernels active');
    const cols = 75;
    const N = 3;
    const xd = uniform(rng(12), N * cols);
    for (let c = 32; c < 64; c++) xd[cols + c] = 0; // a zero block
    for (let c = 0; c < 32; c++) xd[2 * cols + c] = (c - 16) * 0.5 * 1e-3; // halves of its scale
    xd[2 * cols + 40] = 3e4;
    const want = round16(xd, N, cols);
    const nb = Math.ceil(cols / Q8_BLOCK);
    const x = tf.tensor2d(xd, [N, cols]);
    const fq = tf.zeros([N, cols]);
    const xq = tf.zeros([N * cols]); // room for N·cols i16
    const xs = tf.zeros([N * nb]);
    const backend = tf.backend() as any;
    const at = (t: tf.Tensor) => backend.dataIdMap.get(t.dataId).memoryOffset as number;
    k.quantize_x16(at(x), 0, 0, at(fq), N, cols);
    k.quantize_x16(at(x), at(xq), at(xs), 0, N, cols);
    const heap = (backend.wasm.asm.memory as WebAssembly.Memory).buffer;
    assert.deepEqual(
      new Uint32Array(heap.slice(at(fq), at(fq) + 4 * N * cols)),
      new Uint32Array(want.buffer),
      'values',
    );
    const ints = new Int16Array(heap.slice(at(xq), at(xq) + 2 * N * cols));
    const scales = new Float32Array(heap.slice(at(xs), at(xs) + 4 * N * nb));
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < cols; c++) {
        const d = scales[n * nb + Math.floor(c / Q8_BLOCK)];
        // === : an integer 0 stands for either zero (the values keep the sign of a rounded-away negative)
        assert.ok(
          Math.fround(ints[n * cols + c] * d) === want[n * cols + c],
          `row ${n} col ${c}: ${ints[n * cols + c]} × ${d} vs ${want[n * cols + c]}`,
        );
      }
    }
    tf.dispose([x, fq, xq, xs]);
  });

  it('refuses a bias or outScale of the wrong size and storage too small for [rows, cols] with typed errors', function () {
    const w = makeWeight('bf16', 4, 8, 2);
    const x = tf.zeros([1, 8]) as tf.Tensor2D;
    const b = tf.zeros([5]) as tf.Tensor1D;
    assert.throws(
      () => packedMatMul(x, w, { bias: b }),
      (e: Error) => e.name === 'ModelError' && /bias/.test(e.message),
    );
    assert.throws(
      () => packedMatMul(x, w, { outScale: b }),
      (e: Error) => e.name === 'ModelError' && /outScale/.test(e.message),
    );
    const short = { ...w, rows: 5 };
    const x5 = tf.zeros([1, 5]) as tf.Tensor2D;
    assert.throws(
      () => packedMatMulT(x5, short),
      (e: Error) => e.name === 'ModelError' && /storage/.test(e.message),
    );
    tf.dispose([x, b, x5]);
    disposePacked(w);
  });
});

describe('packed kernels: packedMatMulT equals the composite and a float64 reference (wasm)', function () {
  before(async () => {
    await initBackend({ backend: 'wasm' });
    setKernelsEnabled(true);
  });

  for (const kind of KINDS) {
    for (const [rows, cols] of [
      [50, 1],
      [300, 33],
      [97, 576],
      [20, 2055],
    ] as const) {
      it(`${kind} [${rows}, ${cols}]: sparse x (a few rows, repeats across N) and dense x`, function () {
        const r = rng(rows + 7 * cols);
        const w = makeWeight(kind, rows, cols, cols * 3 + rows);
        const wf = widenPacked(w);
        for (const [N, dense] of [
          [1, false],
          [3, false],
          [1, true],
          [5, true],
        ] as const) {
          const xd = new Float32Array(N * rows);
          if (dense) xd.set(uniform(r, N * rows));
          else
            for (let n = 0; n < N; n++) for (const j of [0, rows - 1, (n * 7) % rows, 3 % rows]) xd[n * rows + j] = r();
          const before = tf.memory().numTensors;
          const x = tf.tensor2d(xd, [N, rows]);
          const [k, c] = bothWays('MoiPackedMatMulT', () => packedMatMulT(x, w));
          x.dispose();
          assert.equal(tf.memory().numTensors, before, 'no tensors left');
          const y = new Float64Array(N * cols);
          const mag = new Float64Array(N * cols);
          for (let n = 0; n < N; n++)
            for (let j = 0; j < rows; j++)
              for (let cc = 0; cc < cols; cc++) {
                const p = xd[n * rows + j] * wf[j * cols + cc];
                y[n * cols + cc] += p;
                mag[n * cols + cc] += Math.abs(p);
              }
          assert.ok(worstRel(k, y, mag) <= TOL, `N ${N}${dense ? ' dense' : ' sparse'}: kernel ${worstRel(k, y, mag)}`);
          assert.ok(
            worstRel(c, y, mag) <= TOL,
            `N ${N}${dense ? ' dense' : ' sparse'}: composite ${worstRel(c, y, mag)}`,
          );
        }
        disposePacked(w);
      });
    }
  }

  it('an all-zero x gives zeros (every row skipped)', function () {
    const w = makeWeight('f16', 10, 40, 4);
    const x = tf.zeros([2, 10]) as tf.Tensor2D;
    const y = packedMatMulT(x, w);
    assert.deepEqual(Array.from(y.dataSync()), new Array(80).fill(0));
    tf.dispose([x, y]);
    disposePacked(w);
  });
});
