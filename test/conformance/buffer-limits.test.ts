/**
 * Buffer limits on webgpu. lavapipe's maxStorageBufferBindingSize is 128 MiB; a tensor over it
 * reads back as zeros (Dawn only logs). Synthetic models whose vocabulary-sized matrices pass it
 * (vocab 33,000 × hidden 1,024: 135 MB as float32, just over 128 MiB), tied and untied, must load with those matrices
 * in vocabulary blocks and give the wasm run's logits, greedy tokens and MoI tokens. A matrix that
 * cannot be split (an MLP over the limit) must stop the load with E_BUFFER_LIMIT naming the tensor.
 * Skips (saying why) where Dawn finds no adapter or the adapter's limit is larger.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, isVocabBlocks, ModelError } from '@moi/core';
import { loadModel, maxTensorBytes } from '@moi/models';
import { Engine, generateOne } from '../../packages/cli/src/index.ts';
import { synthesizeModel } from '../../packages/cli/src/synth.ts';

const BASE = {
  model_type: 'llama',
  architectures: ['LlamaForCausalLM'],
  vocab_size: 33_000,
  hidden_size: 1024,
  intermediate_size: 256,
  num_hidden_layers: 1,
  num_attention_heads: 8,
  num_key_value_heads: 8,
  max_position_embeddings: 64,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: true,
  bos_token_id: 1,
  eos_token_id: 2,
};
const MODELS = {
  tied: BASE,
  untied: { ...BASE, tie_word_embeddings: false },
  // gate/up fused: [1024, 2 × 17,000] = 139 MB, not a vocabulary matrix
  bigMlp: { ...BASE, vocab_size: 1000, intermediate_size: 17_000 },
};
const PROMPT = [1, 5, 9, 200, 32_999, 17];

interface Run {
  logits: Float32Array;
  greedy: number[];
  moi: number[];
}

async function runOn(backend: 'wasm' | 'webgpu', dir: string): Promise<Run> {
  await initBackend({ backend });
  const engine = await Engine.load(dir, { backend });
  try {
    if (backend === 'webgpu')
      assert.ok(isVocabBlocks(engine.model.weights.lmHead), 'lm_head is held in vocabulary blocks');
    const t = engine.model.forward({ ids: [PROMPT] }, { lastOnly: true });
    const logits = (await t.data()) as Float32Array;
    t.dispose();
    const one = async (mode: 'standard' | 'moi') =>
      (
        await generateOne(engine, {
          promptIds: PROMPT,
          maxTokens: 3,
          sampling: { temperature: 0 },
          ignoreEos: true,
          mix: { mode },
        })
      ).done.tokens;
    return { logits, greedy: await one('standard'), moi: await one('moi') };
  } finally {
    engine.dispose();
  }
}

/** Whether a webgpu run has made the backend's kept constants (scalars, rotation tables) yet. */
let warmed = false;

describe('webgpu buffer limits', function () {
  this.timeout(300_000);
  const dirs: Record<string, string> = {};

  before(async function () {
    try {
      await initBackend({ backend: 'webgpu' });
    } catch (err) {
      console.log(`      [skip] webgpu buffer limits: ${(err as Error).message}`);
      this.skip();
    }
    const limit = maxTensorBytes().bytes;
    if (!(limit < BASE.vocab_size * BASE.hidden_size * 4)) {
      console.log(
        `      [skip] webgpu buffer limits: this adapter's limit (${limit} bytes) holds the test's embedding`,
      );
      await initBackend({ backend: 'wasm' });
      this.skip();
    }
    for (const [name, config] of Object.entries(MODELS)) {
      dirs[name] = mkdtempSync(path.join(os.tmpdir(), `moi-limits-${name}-`));
      synthesizeModel({ config, out: dirs[name] });
    }
  });

  after(async () => {
    for (const d of Object.values(dirs)) rmSync(d, { recursive: true, force: true });
    await initBackend({ backend: 'wasm' });
  });

  for (const name of ['tied', 'untied'] as const) {
    it(`${name}: the vocabulary matrices over the limit run in blocks, equal to the wasm run`, async () => {
      const want = await runOn('wasm', dirs[name]);
      await initBackend({ backend: 'webgpu' });
      const before = tf.memory().numTensors;
      const checkLeaks = warmed;
      const got = await runOn('webgpu', dirs[name]);
      warmed = true;
      if (checkLeaks) assert.equal(tf.memory().numTensors, before, 'nothing leaks');
      let scale = 1;
      let diff = 0;
      for (let i = 0; i < want.logits.length; i++) {
        scale = Math.max(scale, Math.abs(want.logits[i]));
        diff = Math.max(diff, Math.abs(got.logits[i] - want.logits[i]));
      }
      assert.equal(got.logits.length, BASE.vocab_size);
      // the last block's ids are real logits, not zeros
      assert.ok(got.logits.subarray(32_768).some((x) => x !== 0));
      assert.ok(diff <= 1e-4 * scale, `logits differ by ${diff} (scale ${scale})`);
      assert.deepEqual(got.greedy, want.greedy, 'greedy tokens');
      assert.deepEqual(got.moi, want.moi, 'MoI tokens (the mixer reads rows from the blocks)');
    });
  }

  it('a matrix that cannot be split stops the load with E_BUFFER_LIMIT naming it, leaking nothing', async () => {
    await initBackend({ backend: 'webgpu' });
    const before = tf.memory().numTensors;
    await assert.rejects(loadModel(dirs.bigMlp), (err: unknown) => {
      assert.ok(err instanceof ModelError, String(err));
      assert.equal(err.code, 'E_BUFFER_LIMIT');
      assert.match(err.message, /layer 0 gateUp/);
      assert.match(err.message, /\[1024, 34000\]/);
      assert.match(err.message, /maxStorageBufferBindingSize|maxBufferSize/);
      return true;
    });
    assert.equal(tf.memory().numTensors, before);
  });
});
