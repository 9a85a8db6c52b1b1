// The mixers read embedding rows from a packed 16/8-bit table (issue 15): their next inputs must
// be those of the same mixers over the f32 table of the packed values (widened exactly), in every
// path (lean top-K gather, general with weights, whole-vocabulary direct, Soft Thinking), and a
// table longer than the logits' vocabulary. No tensor may leak.
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { disposePacked, f32ToBf16, initBackend, pack16, packQ8, widenPacked, type PackedWeight } from '@moi/core';
import {
  defaultMixer,
  mixInputs,
  resolveMixSettings,
  softMix,
  startSoftRow,
  type MixSettings,
  type SoftRowState,
} from '../src/index.ts';

function relDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] / Math.max(1e-30, tf.max(tf.abs(b)).dataSync()[0]));
}

describe('mixers over a packed embedding table', () => {
  const V = 300;
  const Hd = 40; // not a multiple of 32: a short last q8 block
  let host: Float32Array;
  before(async () => {
    await initBackend({ backend: 'wasm' });
    host = tf.tidy(() => tf.randomNormal([V + 5, Hd], 0, 1, 'float32', 7).dataSync() as Float32Array);
  });

  const tables = (): { name: string; packed: PackedWeight }[] => [
    { name: 'bf16', packed: pack16('bf16', f32ToBf16(host), V + 5, Hd) },
    { name: 'q8', packed: packQ8(host, V + 5, Hd) },
  ];

  it('MoI, direct and standard rows (lean, general, whole vocabulary) equal the f32 table of the packed values', () => {
    for (const { name, packed } of tables()) {
      const n0 = tf.memory().numTensors;
      const E = tf.tensor2d(widenPacked(packed), [V + 5, Hd]);
      const logits = tf.randomNormal([3, V], 0, 3, 'float32', 11) as tf.Tensor2D;
      const sampled = tf.tensor1d([5, 77, 299], 'int32');
      const cases: MixSettings[][] = [
        ['moi', 'direct', 'standard'].map((mode) => resolveMixSettings({ mode, beta: 1, topK: 20 })),
        ['moi', 'direct', 'moi'].map((mode, r) => resolveMixSettings({ mode, beta: 0.5, topK: r === 1 ? 'all' : 9 })),
      ];
      for (const settings of cases) {
        for (const general of [false, true]) {
          const a = mixInputs({ logits, sampled, embed: { packed }, settings }, { general });
          const b = mixInputs({ logits, sampled, embedTable: E, settings }, { general });
          assert.ok(relDiff(a.embeds, b.embeds) <= 1e-6, `${name}: embeds differ by ${relDiff(a.embeds, b.embeds)}`);
          assert.deepEqual(a.entropy.dataSync(), b.entropy.dataSync());
          for (const r of [a, b]) for (const t of Object.values(r)) (t as tf.Tensor).dispose();
        }
      }
      logits.dispose();
      sampled.dispose();
      E.dispose();
      disposePacked(packed);
      assert.equal(tf.memory().numTensors, n0 - (packed.scales ? 2 : 1), `${name}: tensors leaked`);
    }
  });

  it('Soft Thinking and the default mixer equal the f32 table of the packed values', () => {
    for (const { name, packed } of tables()) {
      const E = tf.tensor2d(widenPacked(packed), [V + 5, Hd]);
      const logits = tf.randomNormal([2, V], 0, 2, 'float32', 13) as tf.Tensor2D;
      const sampled = tf.tensor1d([3, 4], 'int32');
      const settings = [
        resolveMixSettings({ mode: 'soft', topK: 10, soft: { thinkEndId: 7 } }, {}, V),
        resolveMixSettings({ mode: 'moi', beta: 1, topK: 20 }),
      ];
      const rng = { nextUint32: () => 12345 };
      const states = [startSoftRow(settings[0], { makeRng: () => rng }) as SoftRowState, undefined];
      const a = softMix({
        logits: tf.slice(logits, [0, 0], [1, V]) as tf.Tensor2D,
        sampled: tf.slice(sampled, [0], [1]),
        embed: { packed },
        settings: [settings[0]],
        rowStates: [states[0]],
      });
      const b = softMix({
        logits: tf.slice(logits, [0, 0], [1, V]) as tf.Tensor2D,
        sampled: tf.slice(sampled, [0], [1]),
        embedTable: E,
        settings: [settings[0]],
        rowStates: [states[0]],
      });
      assert.ok(relDiff(a.embeds, b.embeds) <= 1e-6, `${name} soft: ${relDiff(a.embeds, b.embeds)}`);
      const c = defaultMixer.mix({ logits, sampled, embed: { packed }, settings, rowStates: states });
      const d = defaultMixer.mix({ logits, sampled, embedTable: E, settings, rowStates: states });
      assert.ok(relDiff(c.embeds, d.embeds) <= 1e-6, `${name} default mixer: ${relDiff(c.embeds, d.embeds)}`);
      tf.dispose([a, b, c, d].flatMap((r) => Object.values(r) as tf.Tensor[]));
      logits.dispose();
      sampled.dispose();
      E.dispose();
      disposePacked(packed);
    }
  });

  it('refuses two sources, or a packed table shorter than the vocabulary (E_MOI)', () => {
    const packed = packQ8(host.subarray(0, 10 * Hd), 10, Hd);
    const E = tf.zeros([V, Hd]) as tf.Tensor2D;
    const logits = tf.zeros([1, V]) as tf.Tensor2D;
    const sampled = tf.zeros([1], 'int32') as tf.Tensor1D;
    const settings = [resolveMixSettings({ mode: 'moi', beta: 1, topK: 5 })];
    assert.throws(() => mixInputs({ logits, sampled, embed: { packed }, embedTable: E, settings }), /exactly one of/);
    assert.throws(
      () => mixInputs({ logits, sampled, embed: { packed }, settings }),
      (e: any) =>
        e.code === 'E_MOI' &&
        /the packed embedding table holds 10 rows, fewer than the logits' V = 300/.test(e.message),
    );
    tf.dispose([E, logits, sampled]);
    disposePacked(packed);
  });
});
