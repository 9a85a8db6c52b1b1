// The lean mixing path (top-K, raw prior, one K for the batch) must equal the general path,
// whichever embedding layout ([V, H] rows or [H, V] columns) the caller holds.
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '@moi/core';
import { mixInputs, resolveMixSettings, type MixSettings } from '../src/index.ts';

function maxDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
}

describe('lean mixing path', () => {
  before(async () => {
    await initBackend({ backend: 'wasm' });
  });

  it('equals the general path on random batches, rows or columns layout, y inside and outside the top-K', () => {
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
        const lean = mixInputs({ logits, sampled, ...table, settings });
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
  });

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
