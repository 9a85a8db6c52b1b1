/**
 * The one builder (src/weights.ts) over both storages: the f32 storage folds the input and
 * pre-MLP norm weights into the matrices they feed (the layers carry none), the packed storage
 * folds nothing (the layers carry them, and q's attention scale as an output scale); every
 * tensor the weights hold is counted once; and a build that fails part way (a tensor that cannot
 * be read, late in the checkpoint) frees everything it had made, with each storage.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { Checkpoint, F32Linear, initBackend, PackedLinear, SafetensorsError, SHARED_MISSING } from '@moi/core';
import {
  buildWeights,
  F32Storage,
  PackedStorage,
  readConfig,
  specFromConfig,
  weightBytes,
  weightParts,
  type MatrixSource,
  type WeightStorage,
} from '../src/index.ts';
import { fixturesRoot } from './helpers.ts';

const root = fixturesRoot();

/** The fixture's tensors by graph name (the fixtures use HF's names as they are), failing on `bad`. */
function sourceOf(ckpt: Checkpoint, bad: string | null): MatrixSource {
  const check = (n: string) => {
    if (n === bad) throw new SafetensorsError('E_READ', 'test.safetensors', 'cannot be read (test)', n);
  };
  return {
    info: (n) => ckpt.info(n),
    readRange: (n, start, length) => {
      check(n);
      return ckpt.readBytesRange(n, start, length);
    },
    readFloat32: (n) => {
      check(n);
      return ckpt.readFloat32(n);
    },
  };
}

const STORAGES: [string, (src: MatrixSource) => WeightStorage][] = [
  ['f32', (src) => new F32Storage(src, { convert: null, release: false, where: 'test' })],
  ['f32, released after packing', (src) => new F32Storage(src, { convert: null, release: true, where: 'test' })],
  ['f32 holding q8 values', (src) => new F32Storage(src, { convert: 'q8', release: false, where: 'test' })],
  ['bf16', (src) => new PackedStorage(src, 'bf16')],
  ['q8', (src) => new PackedStorage(src, 'q8')],
];

describe('models: the one weight builder', function () {
  before(async function () {
    if (!root) {
      console.log(`      [skip] ${SHARED_MISSING}`);
      this.skip();
    }
    await initBackend({ backend: 'wasm' });
  });

  for (const fixture of ['llama', 'llama_tied', 'gemma2', 'qwen3']) {
    it(`${fixture}: f32 folds the norms and the q scale, packed carries them; weightBytes is the memory made (a tied head once)`, () => {
      const dir = path.join(root!, fixture);
      const { spec } = specFromConfig(readConfig(dir));
      const ckpt = Checkpoint.open(dir);
      try {
        for (const [name, make] of STORAGES) {
          const n0 = tf.memory().numTensors;
          const b0 = tf.memory().numBytes;
          const w = buildWeights(spec, sourceOf(ckpt, null), make(sourceOf(ckpt, null)), dir);
          const packed = name === 'bf16' || name === 'q8';
          for (const l of w.layers) {
            assert.equal(l.inputNorm === null, !packed, `${name}: input norm folded iff f32`);
            assert.equal(l.mlpNorm === null, !packed, `${name}: pre-MLP norm folded iff f32`);
            for (const m of [l.qkv, l.o, l.gateUp, l.down])
              assert.ok(packed ? m instanceof PackedLinear : m instanceof F32Linear, name);
            // q's attention scale: an output scale on packed q features, folded into f32 columns
            if (packed) assert.equal((l.qkv as PackedLinear).outScale !== null, !spec.qkNorm, name);
            assert.deepEqual(
              [l.qkv.inDim, l.qkv.outDim],
              [spec.hiddenSize, (spec.numHeads + 2 * spec.numKvHeads) * spec.headDim],
              name,
            );
            assert.deepEqual([l.gateUp.outDim, l.down.inDim], [2 * spec.intermediateSize, spec.intermediateSize], name);
          }
          assert.equal(w.embed === null, spec.tieWordEmbeddings, `${name}: an untied embedding table apart`);
          assert.equal(weightBytes(w), tf.memory().numBytes - b0, `${name}: weightBytes is the tensor memory made`);
          for (const x of weightParts(w)) x.dispose();
          assert.equal(tf.memory().numTensors, n0, `${name}: disposing the parts frees every tensor`);
        }
      } finally {
        ckpt.close();
      }
    });
  }

  for (const bad of ['model.layers.3.mlp.down_proj.weight', 'model.norm.weight', 'lm_head.weight']) {
    it(`a build failing at ${bad} frees what it had made, with every storage`, () => {
      const dir = path.join(root!, 'llama');
      const { spec } = specFromConfig(readConfig(dir));
      const ckpt = Checkpoint.open(dir);
      try {
        for (const [name, make] of STORAGES) {
          const n0 = tf.memory().numTensors;
          const src = sourceOf(ckpt, bad);
          const named = (e: SafetensorsError) => e.code === 'E_READ' && e.message.includes(bad);
          assert.throws(() => buildWeights(spec, src, make(src), dir), named, name);
          assert.equal(tf.memory().numTensors, n0, `${name}: no tensor left behind`);
        }
      } finally {
        ckpt.close();
      }
    });
  }
});
