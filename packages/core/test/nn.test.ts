/**
 * nn primitives against independent expectations: literal hand-computed numbers, or naive float64
 * loops written straight from the HF/PyTorch definitions. Every suite runs on wasm and on cpu.
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import { ModelError } from '../src/errors.ts';
import {
  MASKED,
  activation,
  applyActivation,
  applyRope,
  attention,
  gatedMlp,
  geluTanh,
  linear,
  positionMask,
  rmsNorm,
  ropeInvFreq,
  ropeTables,
  rotateHalfMatrix,
  scalar,
  softcap,
} from '../src/nn.ts';

// ---------------------------------------------------------------------------------------------
// helpers

/** Deterministic uniform numbers in [-1, 1) (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  };
}

function randArray(n: number, seed: number, scale = 1): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => r() * scale);
}

/** Assert |a − e| ≤ atol + rtol·|e| elementwise. */
function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  atol: number,
  label: string,
  rtol = 0,
): void {
  assert.equal(actual.length, expected.length, `${label}: length`);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]) - rtol * Math.abs(expected[i]);
    if (!(err <= worst) || Number.isNaN(actual[i])) {
      worst = Number.isNaN(actual[i]) ? Infinity : err;
      at = i;
    }
  }
  assert.ok(
    worst <= atol,
    `${label}: element ${at} is ${actual[at]}, expected ${expected[at]} (excess ${worst} > ${atol})`,
  );
}

/** Read a tensor's values and dispose it. */
function take(t: tf.Tensor): Float32Array {
  const v = t.dataSync() as Float32Array;
  t.dispose();
  return v;
}

/** Naive y[r, o] = Σ_i x[r, i]·W[i, o] (+ b[o]) over rows r. */
function naiveLinear(x: number[], rows: number, w: number[], inDim: number, outDim: number, b?: number[]): number[] {
  const y = new Array(rows * outDim).fill(0);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outDim; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < inDim; i++) s += x[r * inDim + i] * w[i * outDim + o];
      y[r * outDim + o] = s;
    }
  }
  return y;
}

const geluRef = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
const siluRef = (x: number) => x / (1 + Math.exp(-x));

/** Naive float64 RoPE (HF rotate_half) on x [B, H, T, D]; positions [B|1][T]; the first rotDim dims rotate. */
function naiveRope(
  x: number[],
  shape: [number, number, number, number],
  positions: number[][],
  rotDim: number,
  base: number,
): number[] {
  const [B, H, T, D] = shape;
  const half = rotDim / 2;
  const out = x.slice();
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        const p = positions[positions.length === 1 ? 0 : b][t];
        const o = ((b * H + h) * T + t) * D;
        for (let i = 0; i < rotDim; i++) {
          const ang = p / Math.pow(base, (2 * (i % half)) / rotDim);
          const rot = i < half ? -x[o + i + half] : x[o + i - half];
          out[o + i] = x[o + i] * Math.cos(ang) + rot * Math.sin(ang);
        }
      }
    }
  }
  return out;
}

/** May a query at position p see a key at position s (causal, optional window, s < 0 = empty)? */
const allowed = (p: number, s: number, window?: number) => s >= 0 && s <= p && (!window || p - s < window);

/**
 * Naive float64 grouped-query attention: head h reads kv head ⌊h / (nH/nKV)⌋; keys outside
 * `allowed` are excluded; softcap (cap·tanh(s/cap)) applies to the scaled scores.
 */
function naiveAttention(
  q: number[],
  k: number[],
  v: number[],
  dims: { B: number; nH: number; nKV: number; Tq: number; Tk: number; D: number },
  qPos: number[][],
  kPos: number[][],
  opts: { scale: number; window?: number; cap?: number },
): number[] {
  const { B, nH, nKV, Tq, Tk, D } = dims;
  const G = nH / nKV;
  const out = new Array(B * nH * Tq * D).fill(0);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < nH; h++) {
      const kh = Math.floor(h / G);
      for (let i = 0; i < Tq; i++) {
        const scores: number[] = [];
        const idx: number[] = [];
        for (let j = 0; j < Tk; j++) {
          if (!allowed(qPos[b][i], kPos[b][j], opts.window)) continue;
          let s = 0;
          for (let d = 0; d < D; d++) s += q[((b * nH + h) * Tq + i) * D + d] * k[((b * nKV + kh) * Tk + j) * D + d];
          s *= opts.scale;
          if (opts.cap) s = opts.cap * Math.tanh(s / opts.cap);
          scores.push(s);
          idx.push(j);
        }
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const z = e.reduce((a, c) => a + c, 0);
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let n = 0; n < e.length; n++) acc += (e[n] / z) * v[((b * nKV + kh) * Tk + idx[n]) * D + d];
          out[((b * nH + h) * Tq + i) * D + d] = acc;
        }
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// backend-independent: rope frequencies are plain float64 arrays

describe('nn: ropeInvFreq', () => {
  it('default: dim 8, base 10000 gives 1, 0.1, 0.01, 0.001', () => {
    const r = ropeInvFreq({ dim: 8, base: 10000 });
    assertClose(r.invFreq, [1, 0.1, 0.01, 0.001], 1e-15, 'default');
    assert.equal(r.attentionScaling, 1);
  });

  it('linear: divides every frequency by factor (rope_type or legacy type key)', () => {
    const expected = [0.25, 0.025, 0.0025, 0.00025];
    assertClose(
      ropeInvFreq({ dim: 8, base: 10000, scaling: { rope_type: 'linear', factor: 4 } }).invFreq,
      expected,
      1e-15,
      'linear',
    );
    assertClose(
      ropeInvFreq({ dim: 8, base: 10000, scaling: { type: 'linear', factor: 4 } }).invFreq,
      expected,
      1e-15,
      'linear (type)',
    );
  });

  it('dynamic: base changes only once seqLen passes max_position_embeddings', () => {
    const spec = { dim: 8, base: 10000, scaling: { rope_type: 'dynamic', factor: 2 }, maxPositionEmbeddings: 16 };
    for (const len of [undefined, 10, 16]) {
      assertClose(ropeInvFreq(spec, len).invFreq, [1, 0.1, 0.01, 0.001], 1e-15, `dynamic at ${len}`);
    }
    // seqLen 32: base' = 10000·(2·32/16 − 1)^(8/6) = 10000·3^(4/3), so base'^(2i/8) = 10^i·3^(i/3)
    const expected = [1, 1 / (10 * Math.cbrt(3)), 1 / (100 * Math.cbrt(9)), 1 / 3000];
    assertClose(ropeInvFreq(spec, 32).invFreq, expected, 1e-15, 'dynamic at 32', 1e-12);
    assertClose(expected, [1, 0.06933612743506347, 0.004807498567691361, 0.0003333333333333333], 1e-15, 'hand values');
  });

  it('llama3: high-frequency dims unchanged, low-frequency /factor, mid band smoothed', () => {
    // inv freqs 1, 0.1, 0.01, 0.001 → wavelengths 2π, 20π, 200π, 2000π.
    // old len 1024, low 1, high 4 → low_wavelen 1024, high_wavelen 256:
    //   2π, 20π < 256 → unchanged; 2000π > 1024 → /8; 200π ≈ 628 in between → smoothed with
    //   s = (1024/(200π) − 1)/(4 − 1) = 0.209915539087, f = (1 − s)·0.01/8 + s·0.01.
    const r = ropeInvFreq({
      dim: 8,
      base: 10000,
      scaling: {
        rope_type: 'llama3',
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 1024,
      },
    });
    assertClose(r.invFreq, [1, 0.1, 0.003086760967011274, 0.000125], 1e-15, 'llama3', 1e-12);
  });

  it('unknown rope type and missing fields are ModelErrors naming them', () => {
    assert.throws(
      () => ropeInvFreq({ dim: 8, base: 10000, scaling: { rope_type: 'frobnicate', factor: 2 } }),
      (e: unknown) => e instanceof ModelError && /frobnicate/.test(e.message),
    );
    assert.throws(
      () => ropeInvFreq({ dim: 8, base: 10000, scaling: { rope_type: 'linear' } }),
      (e: unknown) => e instanceof ModelError && /factor/.test(e.message),
    );
    assert.throws(
      () =>
        ropeInvFreq({
          dim: 8,
          base: 10000,
          scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4 },
        }),
      (e: unknown) => e instanceof ModelError && /original_max_position_embeddings/.test(e.message),
    );
  });

  it('activation names map to the two supported activations; others are ModelErrors', () => {
    assert.equal(activation('silu'), 'silu');
    assert.equal(activation('swish'), 'silu');
    assert.equal(activation('gelu_pytorch_tanh'), 'gelu_tanh');
    assert.throws(
      () => activation('relu2'),
      (e: unknown) => e instanceof ModelError && /relu2/.test(e.message),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// tensor primitives, once per backend

for (const be of ['wasm', 'cpu'] as const) {
  describe(`nn on ${be}`, () => {
    let previous = '';
    before(async () => {
      previous = tf.getBackend();
      if (be === 'wasm') tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
      assert.ok(await tf.setBackend(be), `tf.setBackend('${be}')`);
      await tf.ready();
    });
    after(async () => {
      if (previous && previous !== be) await tf.setBackend(previous);
    });

    it(`runs on ${be}`, () => assert.equal(tf.getBackend(), be));

    it('scalar: one kept tensor per value, surviving tidy', () => {
      const s = tf.tidy(() => scalar(2.5));
      assert.equal(s.isDisposed, false);
      assert.equal(scalar(2.5), s);
      assert.equal(s.dataSync()[0], 2.5);
      assert.equal(s.dtype, 'float32');
    });

    it('linear: rank-3 x, [in, out] weights, with and without bias', () => {
      const x = randArray(2 * 3 * 4, 1);
      const w = randArray(4 * 5, 2);
      const b = randArray(5, 3);
      const xt = tf.tensor3d(x, [2, 3, 4]);
      const wt = tf.tensor2d(w, [4, 5]);
      const bt = tf.tensor1d(b);
      const y = linear(xt, wt, bt);
      assert.deepEqual(y.shape, [2, 3, 5]);
      assertClose(take(y), naiveLinear(x, 6, w, 4, 5, b), 1e-5, 'with bias');
      const y2 = linear(xt, wt);
      assert.deepEqual(y2.shape, [2, 3, 5]);
      assertClose(take(y2), naiveLinear(x, 6, w, 4, 5), 1e-5, 'no bias');
      const y3 = linear(tf.reshape(xt, [6, 4]), wt, null);
      assert.deepEqual(y3.shape, [6, 5]);
      assertClose(take(y3), naiveLinear(x, 6, w, 4, 5), 1e-5, 'rank 2');
      tf.dispose([xt, wt, bt]);
    });

    it('rmsNorm: hand-computed [2,4], Gemma unit offset, no weight', () => {
      // row 1: mean(x²) = 7.5, r = 1/√7.5; row 2: mean(x²) = 6, r = 1/√6
      const x = tf.tensor2d([
        [1, 2, 3, 4],
        [-2, 0, 2, 4],
      ]);
      const w = tf.tensor1d([1, 0.5, 2, 1]);
      const plain = [
        0.3651483473268884, 0.3651483473268884, 2.1908900839613303, 1.4605933893075536, -0.8164965128863527, 0,
        1.6329930257727054, 1.6329930257727054,
      ];
      assertClose(take(rmsNorm(x, w, 1e-6)), plain, 2e-6, 'w');
      // (1 + w) = [2, 1.5, 3, 2]
      const unit = [
        0.7302966946537768, 1.0954450419806652, 3.2863351259419957, 2.921186778615107, -1.6329930257727054, 0,
        2.449489538659058, 3.265986051545411,
      ];
      assertClose(take(rmsNorm(x, w, 1e-6, { unitOffset: true })), unit, 2e-6, 'unitOffset');
      const none = [1, 2, 3, 4].map((v) => v / Math.sqrt(7.5)).concat([-2, 0, 2, 4].map((v) => v / Math.sqrt(6)));
      assertClose(take(rmsNorm(x, null, 1e-6)), none, 2e-6, 'no weight');
      // eps matters where the row is tiny: x = [1e-3]·4, eps = 1e-6 → 1e-3/√(1e-6 + 1e-6) = 1/√2
      const tiny = tf.tensor2d([[1e-3, 1e-3, 1e-3, 1e-3]]);
      assertClose(take(rmsNorm(tiny, null, 1e-6)), new Array(4).fill(Math.SQRT1_2), 1e-5, 'eps');
      tf.dispose([x, w, tiny]);
    });

    it('rmsNorm: leading dims [2,3,4] vs a float64 loop', () => {
      const x = randArray(24, 4, 3);
      const w = randArray(4, 5);
      const expected: number[] = [];
      for (let r = 0; r < 6; r++) {
        const row = x.slice(r * 4, r * 4 + 4);
        const inv = 1 / Math.sqrt(row.reduce((a, v) => a + v * v, 0) / 4 + 1e-5);
        for (let i = 0; i < 4; i++) expected.push(row[i] * inv * (1 + w[i]));
      }
      const xt = tf.tensor3d(x, [2, 3, 4]);
      const wt = tf.tensor1d(w);
      const y = rmsNorm(xt, wt, 1e-5, { unitOffset: true });
      assert.deepEqual(y.shape, [2, 3, 4]);
      assertClose(take(y), expected, 1e-5, 'rank 3', 1e-5);
      tf.dispose([xt, wt]);
    });

    it('geluTanh and silu at literal points', () => {
      const x = tf.tensor1d([1, -1, 0.5, 3, -3, 0]);
      // tanh-approximate GELU; exact erf GELU(1) = 0.84134 would be off by 1.5e-4
      const gelu = [
        0.8411919906082768, -0.15880800939172324, 0.34571400982514394, 2.996362607918227, -0.0036373920817729943, 0,
      ];
      assertClose(take(geluTanh(x)), gelu, 2e-6, 'geluTanh');
      assertClose(take(applyActivation(x, 'gelu_tanh')), gelu, 2e-6, 'applyActivation gelu_tanh');
      const s = tf.tensor1d([1, -2, 0.5, 0]);
      assertClose(
        take(applyActivation(s, 'silu')),
        [0.7310585786300049, -0.2384058440442351, 0.3112296656009273, 0],
        2e-6,
        'silu',
      );
      tf.dispose([x, s]);
    });

    it('softcap: cap·tanh(x/cap); no cap is the identity', () => {
      const x = tf.tensor1d([0, 15, -60, 300]);
      assertClose(
        take(softcap(x, 30)),
        [0, 13.863514717800292, -28.920827402274508, 29.999999876330783],
        1e-5,
        'softcap 30',
      );
      assert.equal(softcap(x, null), x);
      assert.equal(softcap(x, 0), x);
      x.dispose();
    });

    it('gatedMlp: separate and fused gate/up agree with a naive loop (silu, gelu_tanh)', () => {
      const inDim = 6;
      const I = 5;
      const rows = 6;
      const x = randArray(rows * inDim, 6);
      const g = randArray(inDim * I, 7);
      const u = randArray(inDim * I, 8);
      const d = randArray(I * inDim, 9);
      // fused [in, 2I]: gate columns first, then up
      const gu: number[] = [];
      for (let i = 0; i < inDim; i++) gu.push(...g.slice(i * I, i * I + I), ...u.slice(i * I, i * I + I));
      const xt = tf.tensor3d(x, [2, 3, inDim]);
      const w = { gate: tf.tensor2d(g, [inDim, I]), up: tf.tensor2d(u, [inDim, I]), down: tf.tensor2d(d, [I, inDim]) };
      const gateUp = tf.tensor2d(gu, [inDim, 2 * I]);
      for (const [act, f] of [
        ['silu', siluRef],
        ['gelu_tanh', geluRef],
      ] as const) {
        const gate = naiveLinear(x, rows, g, inDim, I);
        const up = naiveLinear(x, rows, u, inDim, I);
        const expected = naiveLinear(
          gate.map((v, n) => f(v) * up[n]),
          rows,
          d,
          I,
          inDim,
        );
        const sep = gatedMlp(xt, w, act);
        assert.deepEqual(sep.shape, [2, 3, inDim]);
        const fused = gatedMlp(xt, { gateUp, down: w.down }, act);
        assertClose(take(sep), expected, 1e-5, `${act} separate`);
        assertClose(take(fused), expected, 1e-5, `${act} fused`);
      }
      assert.throws(() => gatedMlp(xt, { gate: w.gate, down: w.down }, 'silu'), ModelError);
      tf.dispose([xt, w.gate, w.up, w.down, gateUp]);
    });

    it('ropeTables: [B,1,T,dim] cos/sin of position·invFreq, halves repeated', () => {
      const positions = [
        [0, 1, 5],
        [3, 4, 7],
      ];
      const { cos, sin } = ropeTables({ dim: 8, base: 10000 }, positions);
      assert.deepEqual(cos.shape, [2, 1, 3, 8]);
      const c = take(cos);
      const s = take(sin);
      const ec: number[] = [];
      const es: number[] = [];
      for (const row of positions)
        for (const p of row)
          for (let i = 0; i < 8; i++) {
            ec.push(Math.cos(p * 10 ** -(i % 4)));
            es.push(Math.sin(p * 10 ** -(i % 4)));
          }
      assertClose(c, ec, 1e-6, 'cos');
      assertClose(s, es, 1e-6, 'sin');
      // dynamic scaling takes its length from the largest position: 31 → seqLen 32 → base 10000·3^(4/3)
      const dyn = ropeTables(
        { dim: 8, base: 10000, scaling: { rope_type: 'dynamic', factor: 2 }, maxPositionEmbeddings: 16 },
        [[31]],
      );
      const f = [1, 1 / (10 * Math.cbrt(3)), 1 / (100 * Math.cbrt(9)), 1 / 3000];
      assertClose(
        take(dyn.cos),
        [0, 1, 2, 3, 0, 1, 2, 3].map((i) => Math.cos(31 * f[i])),
        2e-6,
        'dynamic cos',
      );
      dyn.sin.dispose();
    });

    it('rotateHalfMatrix: x·R = concat(−x2, x1)', () => {
      const x = tf.tensor2d([[1, 2, 3, 4, 5, 6]]);
      assertClose(take(tf.matMul(x, rotateHalfMatrix(6))), [-4, -5, -6, 1, 2, 3], 0, 'rotate_half');
      x.dispose();
    });

    it('applyRope: matches naive rotate_half, per-row positions and shared positions', () => {
      const shape: [number, number, number, number] = [2, 3, 3, 8];
      const x = randArray(2 * 3 * 3 * 8, 10);
      const xt = tf.tensor4d(x, shape);
      for (const positions of [
        [[0, 1, 5]],
        [
          [0, 1, 5],
          [3, 4, 7],
        ],
      ]) {
        const { cos, sin } = ropeTables({ dim: 8, base: 10000 }, positions);
        const y = applyRope(xt, cos, sin);
        assert.deepEqual(y.shape, shape);
        assertClose(take(y), naiveRope(x, shape, positions, 8, 10000), 1e-5, `positions ${JSON.stringify(positions)}`);
        tf.dispose([cos, sin]);
      }
      xt.dispose();
    });

    it('applyRope: partial rotary rotates the first rotDim dims and leaves the tail unchanged', () => {
      const shape: [number, number, number, number] = [2, 2, 3, 8];
      const x = randArray(2 * 2 * 3 * 8, 11);
      const xt = tf.tensor4d(x, shape);
      const positions = [
        [2, 3, 9],
        [0, 6, 7],
      ];
      const { cos, sin } = ropeTables({ dim: 4, base: 500 }, positions);
      const y = take(applyRope(xt, cos, sin));
      const expected = naiveRope(x, shape, positions, 4, 500);
      assertClose(y, expected, 1e-5, 'partial');
      const xf = Float32Array.from(x);
      for (let n = 0; n < y.length; n++) if (n % 8 >= 4) assert.equal(y[n], xf[n], `tail element ${n} changed`);
      tf.dispose([xt, cos, sin]);
    });

    it('positionMask: exact 0/MASKED pattern (causal, window, empty slots, per row)', () => {
      const M = MASKED;
      const kPos = [
        [-1, 0, 1, 2],
        [0, 1, 2, 3],
      ];
      const qPos = [
        [1, 2],
        [2, 3],
      ];
      const m = positionMask(qPos, kPos);
      assert.deepEqual(m.shape, [2, 1, 2, 4]);
      assert.deepEqual(Array.from(take(m)), [M, 0, 0, M, M, 0, 0, 0, /* row 2 */ 0, 0, 0, M, 0, 0, 0, 0]);
      const w = positionMask(qPos, kPos, 2);
      assert.deepEqual(Array.from(take(w)), [M, 0, 0, M, M, M, 0, 0, /* row 2 */ M, 0, 0, M, M, M, 0, 0]);
      assert.ok(MASKED < -1e8 && Number.isFinite(MASKED));
    });

    describe('attention (GQA nH=4, nKV=2, D=8, Tq=3, Tk=5)', () => {
      const nH = 4;
      const nKV = 2;
      const D = 8;
      const Tq = 3;
      const Tk = 5;
      const scale = 1 / Math.sqrt(D);

      function check(
        B: number,
        qPos: number[][],
        kPos: number[][],
        o: { window?: number; cap?: number; amp?: number; seed: number },
      ): void {
        const amp = o.amp ?? 1;
        const q = randArray(B * nH * Tq * D, o.seed, amp);
        const k = randArray(B * nKV * Tk * D, o.seed + 1, amp);
        const v = randArray(B * nKV * Tk * D, o.seed + 2);
        const qt = tf.tensor4d(q, [B, nH, Tq, D]);
        const kt = tf.tensor4d(k, [B, nKV, Tk, D]);
        const vt = tf.tensor4d(v, [B, nKV, Tk, D]);
        const mask = positionMask(qPos, kPos, o.window);
        const y = attention(qt, kt, vt, mask, { scale, softcap: o.cap });
        assert.deepEqual(y.shape, [B, nH, Tq, D]);
        const expected = naiveAttention(q, k, v, { B, nH, nKV, Tq, Tk, D }, qPos, kPos, {
          scale,
          window: o.window,
          cap: o.cap,
        });
        const label = JSON.stringify({ qPos, kPos, window: o.window, cap: o.cap });
        assertClose(take(y), expected, 2e-5, label);
        // the same with v in the KV cache's [B, nKV, D, Tk] layout
        const vT = tf.transpose(vt, [0, 1, 3, 2]) as tf.Tensor4D;
        assertClose(
          take(attention(qt, kt, vT, mask, { scale, softcap: o.cap, valuesTransposed: true })),
          expected,
          2e-5,
          `${label} valuesTransposed`,
        );
        tf.dispose([qt, kt, vt, vT, mask]);
      }

      it('causal positionMask', () => check(1, [[2, 3, 4]], [[0, 1, 2, 3, 4]], { seed: 20 }));
      it('sliding window 2', () => check(1, [[2, 3, 4]], [[0, 1, 2, 3, 4]], { window: 2, seed: 30 }));
      it('softcap (scores well past the cap)', () => {
        // amp 4 makes |q·k|·scale reach ~10, so a cap of 2 changes the weights substantially
        check(1, [[2, 3, 4]], [[0, 1, 2, 3, 4]], { cap: 2, amp: 4, seed: 40 });
      });
      it('batch of 2 with per-row masks and empty slots (key position −1)', () => {
        check(
          2,
          [
            [2, 3, 4],
            [0, 1, 2],
          ],
          [
            [0, 1, 2, 3, 4],
            [-1, -1, 0, 1, 2],
          ],
          { seed: 50 },
        );
        check(
          2,
          [
            [2, 3, 4],
            [1, 2, 3],
          ],
          [
            [0, 1, 2, 3, 4],
            [-1, 0, 1, 2, 3],
          ],
          { window: 2, cap: 3, amp: 3, seed: 60 },
        );
      });

      it('query head h reads kv head ⌊h/2⌋ (grouped, not interleaved)', () => {
        // every key identical → uniform weights; kv head 0 has values +1, kv head 1 has values −1
        const q = tf.randomUniform([1, nH, Tq, D], -1, 1, 'float32', 1);
        const k = tf.ones([1, nKV, Tk, D]) as tf.Tensor4D;
        const v = tf.concat([tf.ones([1, 1, Tk, D]), tf.neg(tf.ones([1, 1, Tk, D]))], 1) as tf.Tensor4D;
        const y = attention(q as tf.Tensor4D, k, v, null, { scale });
        const got = take(y);
        const expected: number[] = [];
        for (let h = 0; h < nH; h++) for (let n = 0; n < Tq * D; n++) expected.push(h < 2 ? 1 : -1);
        assertClose(got, expected, 1e-6, 'head → kv head');
        tf.dispose([q, k, v]);
      });

      it('a fully masked row stays finite', () => {
        const q = tf.ones([1, nH, 1, D]) as tf.Tensor4D;
        const k = tf.ones([1, nKV, 2, D]) as tf.Tensor4D;
        const v = tf.ones([1, nKV, 2, D]) as tf.Tensor4D;
        const mask = positionMask([[0]], [[-1, -1]]);
        const y = take(attention(q, k, v, mask, { scale }));
        assert.ok(
          y.every((n) => Number.isFinite(n)),
          'finite',
        );
        tf.dispose([q, k, v, mask]);
      });

      it('nH not a multiple of nKV is a ModelError', () => {
        const q = tf.zeros([1, 3, 1, D]) as tf.Tensor4D;
        const k = tf.zeros([1, 2, 1, D]) as tf.Tensor4D;
        assert.throws(() => attention(q, k, k, null, { scale }), ModelError);
        tf.dispose([q, k]);
      });
    });

    it('no tensor leaks after warm-up', () => {
      const x3 = tf.tensor3d(randArray(2 * 3 * 4, 70), [2, 3, 4]);
      const w = tf.tensor2d(randArray(4 * 6, 71), [4, 6]);
      const wd = tf.tensor2d(randArray(3 * 4, 72), [3, 4]);
      const b = tf.tensor1d(randArray(6, 73));
      const nw = tf.tensor1d(randArray(4, 74));
      const x4 = tf.tensor4d(randArray(1 * 4 * 3 * 8, 75), [1, 4, 3, 8]);
      const kv = tf.tensor4d(randArray(1 * 2 * 5 * 8, 76), [1, 2, 5, 8]);
      const gate = tf.slice(w, [0, 0], [4, 3]) as tf.Tensor2D;
      const up = tf.slice(w, [0, 3], [4, 3]) as tf.Tensor2D;
      // each call returns every tensor it made, so whatever else remains is a leak
      const calls: [string, () => tf.Tensor | tf.Tensor[]][] = [
        [
          'scalar',
          () => {
            scalar(0.125);
            return [];
          },
        ],
        ['linear', () => linear(x3, w, b)],
        ['rmsNorm', () => rmsNorm(x3, nw, 1e-6, { unitOffset: true })],
        ['geluTanh', () => geluTanh(x3)],
        ['silu', () => applyActivation(x3, 'silu')],
        ['softcap', () => softcap(x3, 5)],
        ['gatedMlp', () => gatedMlp(x3, { gate, up, down: wd }, 'gelu_tanh')],
        ['gatedMlp fused', () => gatedMlp(x3, { gateUp: w, down: wd }, 'silu')],
        [
          'ropeTables',
          () => {
            const t = ropeTables({ dim: 8, base: 10000 }, [[0, 1, 2]]);
            return [t.cos, t.sin];
          },
        ],
        [
          'applyRope',
          () => {
            const t = ropeTables({ dim: 8, base: 10000 }, [[0, 1, 2]]);
            return [t.cos, t.sin, applyRope(x4, t.cos, t.sin)];
          },
        ],
        [
          'applyRope partial',
          () => {
            const t = ropeTables({ dim: 4, base: 10000 }, [[0, 1, 2]]);
            return [t.cos, t.sin, applyRope(x4, t.cos, t.sin)];
          },
        ],
        ['positionMask', () => positionMask([[2, 3, 4]], [[0, 1, 2, 3, 4]], 2)],
        [
          'attention',
          () => {
            const m = positionMask([[2, 3, 4]], [[0, 1, 2, 3, 4]]);
            return [m, attention(x4, kv, kv, m, { scale: 0.3, softcap: 4 })];
          },
        ],
      ];
      for (const [name, f] of calls) {
        tf.dispose(f()); // warm-up: kept constants (scalars, rotation matrices) are made here
        const before = tf.memory().numTensors;
        tf.dispose(f());
        assert.equal(tf.memory().numTensors, before, `${name} leaks`);
      }
      tf.dispose([gate, up]);
      tf.dispose([x3, w, wd, b, nw, x4, kv]);
    });
  });
}

describe('nn: kept constants', () => {
  it('belong to the backend instance that made them: a backend registered again under its name gets its own', async () => {
    const name = 'kept-constants-test';
    const backendOf = (t: tf.Tensor) =>
      (
        tf.engine() as unknown as { state: { tensorInfo: WeakMap<object, { backend: tf.KernelBackend }> } }
      ).state.tensorInfo.get(t.dataId)!.backend;
    const previous = tf.getBackend();
    try {
      for (let round = 0; round < 2; round++) {
        tf.registerBackend(name, () => new MathBackendCPU());
        await tf.setBackend(name);
        const s = scalar(2.5);
        const r = rotateHalfMatrix(4);
        assert.equal(backendOf(s), tf.backend(), `round ${round}: the scalar lives on the active instance`);
        assert.equal(backendOf(r), tf.backend(), `round ${round}: the rotation lives on the active instance`);
        assert.equal(s.dataSync()[0], 2.5);
        assert.equal(scalar(2.5), s, 'made once per instance');
        tf.removeBackend(name);
      }
    } finally {
      if (tf.findBackendFactory(name)) tf.removeBackend(name);
      await tf.setBackend(previous);
    }
  });
});
