/**
 * VocabBlocks (a vocabulary-sized matrix in blocks, for webgpu's buffer limits) against the same
 * matrix whole: lookups, logits and weighted sums equal, in both layouts, for block sizes that do
 * not divide the vocabulary, on wasm and cpu. No tensors leak.
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/backend.ts';
import { VocabBlocks } from '../src/vocab-blocks.ts';
import { randn, rng } from './kernel-data.ts';

function rand(n: number, seed: number): Float32Array {
  return randn(rng(seed), n, 0.5);
}

function close(got: tf.Tensor, want: tf.Tensor, what: string): void {
  assert.deepEqual(got.shape, want.shape, `${what}: shape`);
  const g = got.dataSync();
  const w = want.dataSync();
  for (let i = 0; i < g.length; i++)
    assert.ok(Math.abs(g[i] - w[i]) <= 1e-5 * (1 + Math.abs(w[i])), `${what}[${i}]: ${g[i]} vs ${w[i]}`);
}

for (const backend of ['wasm', 'cpu'] as const) {
  describe(`VocabBlocks (${backend})`, () => {
    before(async () => {
      await initBackend({ backend });
    });
    after(async () => {
      await initBackend({ backend: 'wasm' });
    });

    const V = 103;
    const H = 12;
    // 10 ids per block: 11 blocks, the last holding 3
    const maxBytes = 10 * H * 4 + 7;
    for (const layout of ['rows', 'cols'] as const) {
      it(`${layout}: rows, project and mix equal the whole matrix (11 blocks, the last short)`, () => {
        const n0 = tf.memory().numTensors;
        const E = rand(V * H, 7); // [V, H]
        const whole = tf.tensor2d(E, [V, H]);
        const values = layout === 'rows' ? E : tf.tidy(() => tf.transpose(whole).dataSync() as Float32Array);
        const vb = VocabBlocks.fromValues(values, layout === 'rows' ? [V, H] : [H, V], layout, maxBytes);
        assert.equal(vb.blocks.length, 11);
        assert.deepEqual(vb.starts.slice(0, 3), [0, 10, 20]);
        tf.tidy(() => {
          const ids = tf.tensor1d([0, 9, 10, 102, 55, 55, 100], 'int32');
          const h = tf.tensor2d(rand(3 * H, 3), [3, H]);
          const p = tf.tensor2d(rand(2 * V, 5), [2, V]);
          const p90 = tf.tensor2d(rand(2 * 90, 9), [2, 90]);
          close(vb.rows(ids), tf.gather(whole, ids), 'rows');
          close(vb.project(h), tf.matMul(h, whole, false, true), 'project');
          close(
            vb.project(h, 95),
            tf.slice(tf.matMul(h, whole, false, true), [0, 0], [3, 95]),
            'project (first 95 ids)',
          );
          close(vb.mix(p), tf.matMul(p, whole), 'mix');
          close(vb.mix(p90), tf.matMul(p90, tf.slice(whole, [0, 0], [90, H])), 'mix (first 90 ids)');
        });
        // every block stays within the limit
        for (const b of vb.blocks) assert.ok(b.size * 4 <= maxBytes);
        vb.dispose();
        whole.dispose();
        assert.equal(tf.memory().numTensors, n0, 'nothing leaks');
      });
    }
  });
}
