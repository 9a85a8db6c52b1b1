/**
 * Buffer limits on webgpu: a synthetic model whose tied embedding (vocab 40,000 × hidden 1,024,
 * 164 MB as float32) is over lavapipe's 128 MiB maxStorageBufferBindingSize must not load into
 * silent zeros: it stops with E_BUFFER_LIMIT naming the tensor and the limit. The same model runs
 * on wasm. Skips (saying why) where Dawn finds no adapter or the adapter's limit is larger.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, ModelError } from '@moi/core';
import { loadModel, maxTensorBytes } from '@moi/models';
import { synthesizeModel } from '../../packages/cli/src/synth.ts';

const CONFIG = {
  model_type: 'llama', architectures: ['LlamaForCausalLM'], vocab_size: 40_000, hidden_size: 1024, intermediate_size: 256,
  num_hidden_layers: 1, num_attention_heads: 8, num_key_value_heads: 8, max_position_embeddings: 64, rms_norm_eps: 1e-5,
  rope_theta: 10000, tie_word_embeddings: true, bos_token_id: 1, eos_token_id: 2,
};

describe('webgpu buffer limits', function () {
  this.timeout(180_000);
  let dir: string | undefined;

  before(async function () {
    try {
      await initBackend({ backend: 'webgpu' });
    } catch (err) {
      console.log(`      [skip] webgpu buffer limits: ${(err as Error).message}`);
      this.skip();
    }
    const limit = maxTensorBytes().bytes;
    if (!(limit < CONFIG.vocab_size * CONFIG.hidden_size * 4)) {
      console.log(`      [skip] webgpu buffer limits: this adapter's limit (${limit} bytes) holds the test's embedding`);
      await initBackend({ backend: 'wasm' });
      this.skip();
    }
    dir = mkdtempSync(path.join(os.tmpdir(), 'moi-limits-'));
    synthesizeModel({ config: CONFIG, out: dir });
  });

  after(async () => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    await initBackend({ backend: 'wasm' });
  });

  it('an embedding over the adapter limit stops the load with E_BUFFER_LIMIT naming the tensor, leaking nothing', async () => {
    await initBackend({ backend: 'webgpu' });
    const before = tf.memory().numTensors;
    await assert.rejects(loadModel(dir!), (err: unknown) => {
      assert.ok(err instanceof ModelError, String(err));
      assert.equal(err.code, 'E_BUFFER_LIMIT');
      assert.match(err.message, /embed_tokens\.weight/);
      assert.match(err.message, /\[1024, 40000\]/);
      assert.match(err.message, /maxStorageBufferBindingSize|maxBufferSize/);
      return true;
    });
    assert.equal(tf.memory().numTensors, before);
  });

  it('the same model loads and runs on wasm (no limit there)', async () => {
    await initBackend({ backend: 'wasm' });
    const m = await loadModel(dir!);
    try {
      const logits = m.model.forward({ ids: [[1, 5, 9]] }, { lastOnly: true });
      const v = (await logits.data()) as Float32Array;
      logits.dispose();
      assert.equal(v.length, CONFIG.vocab_size);
      assert.ok(v.every(Number.isFinite) && v.some((x) => x !== 0));
    } finally {
      m.dispose();
    }
  });
});
