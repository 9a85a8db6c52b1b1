// The lean mixing path (top-K, raw prior, one K for the batch) must equal the general path,
// whichever embedding layout ([V, H] rows or [H, V] columns) the caller holds, with its weights'
// op on the wasm kernel and on the composite; and match fixtures/llama/moi_unit.json itself.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  initBackend,
  kernelDispatches,
  resetKernelDispatches,
  SafetensorsFile,
  setKernelsEnabled,
  sharedDir,
  SHARED_MISSING,
} from '@moi/core';
import { mixInputs, resolveMixSettings, type MixSettings } from '../src/index.ts';

function maxDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
}

describe('lean mixing path', () => {
  before(async () => {
    await initBackend({ backend: 'wasm' });
  });
  after(() => setKernelsEnabled(true));

  for (const on of [true, false])
    it(`(weights on the ${on ? 'wasm kernel' : 'composite'}) equals the general path on random batches, both layouts, y inside and outside the top-K`, () => {
      setKernelsEnabled(on);
      equalsGeneral(on);
    });

  it('matches moi_unit.json (llama fixture): ids by their weights, H, w_y, count, mixed embedding', function () {
    const shared = sharedDir();
    if (!shared) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    const dir = path.join(shared!, 'fixtures', 'llama');
    const cases = JSON.parse(readFileSync(path.join(dir, 'moi_unit.json'), 'utf8')).cases as {
      case: string;
      mode: string;
      beta: number;
      logits: number[];
      sampled: number;
      ids: number[];
      weights: number[];
      entropy: number;
      mixed_embedding: number[];
    }[];
    const st = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
    const table = tf.tensor2d(st.readFloat32('model.embed_tokens.weight'), [512, 64]);
    st.close();
    const logits = tf.tensor2d(cases.map((c) => c.logits));
    const sampled = tf.tensor1d(
      cases.map((c) => c.sampled),
      'int32',
    );
    const settings = cases.map((c) => resolveMixSettings({ mode: c.mode, beta: c.beta, topK: 20 }));
    for (const on of [true, false]) {
      setKernelsEnabled(on);
      resetKernelDispatches();
      const r = mixInputs({ logits, sampled, embedTable: table, settings });
      assert.equal(kernelDispatches().MoiMixWeights ?? 0, on ? 1 : 0, 'the lean path ran, on the kernel when on');
      const H = r.entropy.dataSync();
      const wy = r.weightOnSampled.dataSync();
      const n = r.numCandidates.dataSync();
      const e = r.embeds.arraySync();
      cases.forEach((c, i) => {
        const what = `${on ? 'kernel' : 'composite'}: ${c.case} (${c.mode}, beta ${c.beta})`;
        assert.ok(Math.abs(H[i] - c.entropy) <= 1e-6, `${what}: entropy ${H[i]} vs ${c.entropy}`);
        assert.ok(Math.abs(wy[i] - c.weights[c.ids.indexOf(c.sampled)]) <= 1e-6, `${what}: weight on y`);
        assert.equal(n[i], c.ids.length, `${what}: count`);
        e[i].forEach((x, h) => assert.ok(Math.abs(x - c.mixed_embedding[h]) <= 1e-5, `${what}: embedding[${h}]`));
      });
      tf.dispose(Object.values(r));
    }
    tf.dispose([table, logits, sampled]);
  });

  /** Random batches, rows or columns layout, y inside and outside the top-K, mixed modes. */
  function equalsGeneral(on: boolean): void {
    const V = 300;
    const Hd = 24;
    const E = tf.randomNormal([V, Hd], 0, 1, 'float32', 3) as tf.Tensor2D;
    const EC = tf.transpose(E) as tf.Tensor2D;
    for (let trial = 0; trial < 6; trial++) {
      const B = 1 + (trial % 3);
      const logits = tf.randomNormal([B, V], 0, 1 + trial, 'float32', 10 + trial) as tf.Tensor2D;
      // row 0 samples its argmax (inside), others a low-ranked id (outside the top-K)
      const am = tf.argMax(logits, 1).dataSync();
      const ids = Array.from({ length: B }, (_, r) => (r === 0 ? am[0] : (am[r] + 137) % V));
      const sampled = tf.tensor1d(ids, 'int32');
      const modes = ['moi', 'direct', 'standard'];
      const settings: MixSettings[] = Array.from({ length: B }, (_, r) =>
        resolveMixSettings({ mode: modes[(r + trial) % 3], beta: 0.5 + trial, topK: 7 }),
      );
      const general = mixInputs({ logits, sampled, embedTable: E, settings }, { general: true });
      for (const table of [{ embedTable: E }, { embedColumns: EC }]) {
        resetKernelDispatches();
        const lean = mixInputs({ logits, sampled, ...table, settings });
        assert.equal(kernelDispatches().MoiMixWeights ?? 0, on ? 1 : 0, 'weights on the kernel exactly when on');
        assert.ok(maxDiff(lean.embeds, general.embeds) < 1e-5, 'embeds');
        assert.ok(maxDiff(lean.entropy, general.entropy) < 1e-6, 'entropy');
        assert.ok(maxDiff(lean.weightOnSampled, general.weightOnSampled) < 1e-6, 'weight on y');
        assert.deepEqual(Array.from(lean.numCandidates.dataSync()), Array.from(general.numCandidates.dataSync()));
        tf.dispose(Object.values(lean));
      }
      tf.dispose(Object.values(general));
      tf.dispose([logits, sampled]);
    }
    tf.dispose([E, EC]);
  }

  it('takes a [H, V] column table in the general path too (whole-vocabulary mixing)', () => {
    const V = 50;
    const E = tf.randomNormal([V, 8], 0, 1, 'float32', 5) as tf.Tensor2D;
    const EC = tf.transpose(E) as tf.Tensor2D;
    const logits = tf.randomNormal([2, V], 0, 2, 'float32', 6) as tf.Tensor2D;
    const sampled = tf.tensor1d([3, 9], 'int32');
    const settings = [
      resolveMixSettings({ mode: 'direct', topK: 'all' }),
      resolveMixSettings({ mode: 'moi', topK: 5 }),
    ];
    const a = mixInputs({ logits, sampled, embedTable: E, settings });
    const b = mixInputs({ logits, sampled, embedColumns: EC, settings });
    assert.ok(maxDiff(a.embeds, b.embeds) < 1e-5);
    tf.dispose([E, EC, logits, sampled, ...Object.values(a), ...Object.values(b)]);
  });

  it('refuses both or neither embedding layouts', () => {
    const logits = tf.zeros([1, 10]) as tf.Tensor2D;
    const sampled = tf.tensor1d([1], 'int32');
    const s = [resolveMixSettings({ mode: 'moi', topK: 3 })];
    assert.throws(() => mixInputs({ logits, sampled, settings: s }), /exactly one of embedTable/);
    tf.dispose([logits, sampled]);
  });
});
