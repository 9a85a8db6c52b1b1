/**
 * mixWeights (the MoI step's weights as one op; a host loop over the wasm heap behind a tfjs
 * kernel): equal to the composite of tfjs ops (the same ids; weights, H and w_y within float32
 * rounding) over random and tie-heavy scores, K from 1 to 20, y at the top, inside and outside the
 * top-K, every mode's coefficients, batches; equal to values worked out by hand in float64 on a
 * small case; a sampled id outside the vocabulary is a typed error; a NaN row gives ids inside
 * the vocabulary; no tensors leak.
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { rng } from './kernel-data.ts';
import {
  initBackend,
  kernelDispatches,
  mixWeights,
  resetKernelDispatches,
  setKernelsEnabled,
  type MixCoefficients,
} from '../src/index.ts';

/** The coefficients of a mode (a = H·ca + da, b = db − H·cb), as @moi/moi's leanMix sets them. */
function coefOf(mode: 'moi' | 'direct' | 'standard', beta = 1): MixCoefficients {
  const moi = mode === 'moi' ? 1 / (beta + 1) : 0;
  return { ca: moi, da: mode === 'direct' ? 1 : 0, db: mode === 'direct' ? 0 : 1, cb: moi };
}

type Got = { ids: number[]; w: number[]; H: number[]; wy: number[]; n: number[] };

function run(scores: tf.Tensor2D, y: tf.Tensor1D, coef: MixCoefficients[], K: number, on: boolean): Got {
  setKernelsEnabled(on);
  resetKernelDispatches();
  const r = mixWeights(scores, y, coef, K);
  assert.equal(kernelDispatches().MoiMixWeights ?? 0, on ? 1 : 0, 'the kernel ran exactly when on');
  assert.equal(r.ids.dtype, 'int32');
  assert.equal(r.numCandidates.dtype, 'int32');
  const got = {
    ids: Array.from(r.ids.dataSync()),
    w: Array.from(r.w.dataSync()),
    H: Array.from(r.entropy.dataSync()),
    wy: Array.from(r.weightOnSampled.dataSync()),
    n: Array.from(r.numCandidates.dataSync()),
  };
  tf.dispose(Object.values(r));
  return got;
}

function assertNear(a: number[], b: number[], tol: number, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  a.forEach((x, i) => assert.ok(Math.abs(x - b[i]) <= tol, `${what}[${i}]: ${x} vs ${b[i]}`));
}

describe('kernels: mixWeights equals the composite and hand-worked values (wasm)', function () {
  before(async () => {
    await initBackend({ backend: 'wasm' });
  });
  after(() => setKernelsEnabled(true));

  for (const [V, K, B, ties] of [
    [50, 1, 2, false],
    [50, 7, 3, true],
    [1000, 20, 4, false],
    [1000, 20, 3, true],
    [49_152, 20, 2, false],
  ] as const) {
    it(`V ${V}, K ${K}, batch ${B}${ties ? ', scores rounded to many ties' : ''}`, function () {
      const r = rng(V + K + B);
      const host = Float32Array.from({ length: B * V }, () => {
        const x = r() * 6;
        return ties ? Math.round(x * 2) / 2 : x;
      });
      // row 0 samples its top-1, row 1 the lowest score (outside), others one near the boundary
      const y = Array.from({ length: B }, (_, b) => {
        const row = Array.from(host.subarray(b * V, (b + 1) * V));
        const order = row.map((_, i) => i).sort((i, j) => row[j] - row[i] || i - j);
        return b === 0 ? order[0] : b === 1 ? order[V - 1] : order[Math.min(V - 1, K - 1 + (b % 3))];
      });
      const modes = ['moi', 'direct', 'standard'] as const;
      const coef = Array.from({ length: B }, (_, b) => coefOf(modes[b % 3], 0.5 + b));
      const before = tf.memory().numTensors;
      const scores = tf.tensor2d(host, [B, V]);
      const sampled = tf.tensor1d(y, 'int32');
      const kernel = run(scores, sampled, coef, K, true);
      const composite = run(scores, sampled, coef, K, false);
      assert.deepEqual(kernel.ids, composite.ids, 'the same slots (ties to the lower id)');
      assert.deepEqual(kernel.n, composite.n, 'candidates');
      assertNear(kernel.w, composite.w, 1e-6, 'weights');
      assertNear(kernel.H, composite.H, 1e-6, 'entropy');
      assertNear(kernel.wy, composite.wy, 1e-6, 'weight on y');
      // y sits in its last slot; the top-K slots descend
      for (let b = 0; b < B; b++) {
        assert.equal(kernel.ids[b * (K + 1) + K], y[b]);
        for (let j = 1; j < K; j++) {
          const prev = host[b * V + kernel.ids[b * (K + 1) + j - 1]];
          assert.ok(prev >= host[b * V + kernel.ids[b * (K + 1) + j]], 'descending');
        }
      }
      tf.dispose([scores, sampled]);
      assert.equal(tf.memory().numTensors, before, 'no tensors left');
    });
  }

  it('equals values worked out by hand (float64): y outside, y inside, a single candidate', function () {
    // scores [2, 1, 0, -1, 0.5]; K = 2 → top ids 0, 1
    const s = [2, 1, 0, -1, 0.5];
    const hand = (cand: number[], y: number, beta: number) => {
      const e = cand.map((i) => Math.exp(s[i] - s[0]));
      const z = e.reduce((a, b) => a + b, 0);
      const p = e.map((x) => x / z);
      const H = cand.length > 1 ? -p.reduce((a, q) => a + q * Math.log(q), 0) / Math.log(cand.length) : 0;
      const w = p.map((q, k) => (H * q + (beta + 1 - H) * (cand[k] === y ? 1 : 0)) / (beta + 1));
      return { w, H, wy: w[cand.indexOf(y)] };
    };
    const scores = tf.tensor2d([s, s, s]);
    const sampled = tf.tensor1d([3, 1, 0], 'int32');
    for (const on of [true, false]) {
      const got = run(scores, sampled, [coefOf('moi', 1), coefOf('moi', 2), coefOf('moi', 1)], 2, on);
      const out = hand([0, 1, 3], 3, 1);
      const inside = hand([0, 1], 1, 2);
      assert.deepEqual(got.ids, [0, 1, 3, 0, 1, 1, 0, 1, 0]);
      assert.deepEqual(got.n, [3, 2, 2]);
      assertNear(got.w.slice(0, 3), out.w, 1e-6, `${on}: y outside`);
      assertNear(got.w.slice(3, 6), [...inside.w, 0], 1e-6, `${on}: y inside (its own slot 0)`);
      assertNear(got.H, [out.H, inside.H, inside.H], 1e-6, `${on}: H`);
      assertNear(got.wy.slice(0, 2), [out.wy, inside.wy], 1e-6, `${on}: w_y`);
    }
    // K = 1 with y on top: one candidate, H = 0, all weight on y
    for (const on of [true, false]) {
      const got = run(scores, sampled, [coefOf('moi'), coefOf('moi'), coefOf('moi')], 1, on);
      assert.deepEqual(got.n.slice(2), [1]);
      assertNear([got.H[2], got.wy[2], got.w[4], got.w[5]], [0, 1, 1, 0], 0, `${on}: single candidate`);
    }
    tf.dispose([scores, sampled]);
  });

  it('a sampled id outside the vocabulary is a typed error (E_INDEX), leaking nothing', function () {
    setKernelsEnabled(true);
    const scores = tf.tensor2d([
      [1, 2, 3],
      [3, 2, 1],
    ]);
    for (const bad of [3, -1]) {
      const sampled = tf.tensor1d([0, bad], 'int32');
      const before = tf.memory().numTensors;
      assert.throws(
        () => mixWeights(scores, sampled, [coefOf('moi'), coefOf('moi')], 1),
        (e: any) => e.code === 'E_INDEX' && /row 1/.test(e.message) && new RegExp(`${bad}`).test(e.message),
      );
      assert.equal(tf.memory().numTensors, before);
      sampled.dispose();
    }
    scores.dispose();
  });

  it('a row of NaN scores gives slots inside the vocabulary (its finite check fails it later)', function () {
    setKernelsEnabled(true);
    const scores = tf.tensor2d([[NaN, NaN, NaN, NaN]]);
    const sampled = tf.tensor1d([2], 'int32');
    const got = run(scores, sampled, [coefOf('moi')], 3, true);
    assert.ok(
      got.ids.every((i) => i >= 0 && i < 4),
      `ids ${got.ids}`,
    );
    tf.dispose([scores, sampled]);
  });
});
