/**
 * NaN/Inf logits through the public API (generate and the engine's forward), as the decode-step
 * contract says: E_NONFINITE naming the step, counted from 0 = the prediction after the prompt.
 * The model: the llama fixture (untied head) with the embedding row of the token greedy decoding
 * picks first set to NaN, so step 0 is finite and step 1 (that token's input) is not; in a batch
 * with a row that never meets the token, the whole call still fails at that step.
 */
import assert from 'node:assert/strict';
import { closeSync, cpSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { ModelError, requireShared, SafetensorsFile } from '@moi/core';
import { Engine, generate, generateOne } from '@moi/engine';

describe('engine: non-finite logits end generation with E_NONFINITE at the right step', function () {
  let tmp: string;
  let engine: Engine;
  let prompt: number[];
  let first: number;

  before(async function () {
    const llama = path.join(requireShared(this), 'fixtures', 'llama');
    prompt = [1, 499, 377, 390, 368];
    const clean = await Engine.load(llama, { backend: 'wasm' });
    first = (
      await generateOne(clean, { promptIds: prompt, maxTokens: 1, sampling: { temperature: 0 }, ignoreEos: true })
    ).done.tokens[0];
    clean.dispose();
    tmp = mkdtempSync(path.join(os.tmpdir(), 'moi-nonfinite-'));
    const dir = path.join(tmp, 'm');
    cpSync(llama, dir, { recursive: true });
    const f = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
    const e = f.info('model.embed_tokens.weight');
    f.close();
    const H = e.shape[1];
    const fd = openSync(path.join(dir, 'model.safetensors'), 'r+');
    writeSync(fd, new Uint8Array(new Float32Array(H).fill(Number.NaN).buffer), 0, 4 * H, e.offset + 4 * H * first);
    closeSync(fd);
    // past the load's weight check (E_NONFINITE_WEIGHTS), to reach generation's own
    engine = await Engine.load(dir, { backend: 'wasm', checkTensors: false });
  });

  after(() => {
    engine?.dispose();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('step 0 is finite, step 1 is not: the error names step 1, after the first token was streamed', async () => {
    const n0 = tf.memory().numTensors;
    const seen: number[] = [];
    await assert.rejects(
      async () => {
        for await (const ev of generate(engine, [
          { promptIds: prompt, maxTokens: 4, sampling: { temperature: 0 }, ignoreEos: true },
        ])) {
          if (ev.type === 'token') seen.push(ev.token);
        }
      },
      (err: unknown) => {
        assert.ok(err instanceof ModelError, String(err));
        assert.equal(err.code, 'E_NONFINITE');
        assert.equal(err.message, 'the model produced NaN/Inf logits at step 1; the weights or config are broken');
        return true;
      },
    );
    assert.deepEqual(seen, [first]);
    assert.equal(tf.memory().numTensors, n0, 'no tensors left behind');
  });

  it('in MoI mode and in a batch beside a healthy row, the same error at the same step', async () => {
    const healthy = [1, 2, 3];
    for (const mix of [{ mode: 'moi' }, { mode: 'standard' }]) {
      const n0 = tf.memory().numTensors;
      await assert.rejects(
        async () => {
          const reqs = [
            { promptIds: healthy, maxTokens: 4, sampling: { temperature: 0 }, ignoreEos: true, mix },
            { promptIds: prompt, maxTokens: 4, sampling: { temperature: 0 }, ignoreEos: true, mix },
          ];
          for await (const _ of generate(engine, reqs)) {
            /* drain */
          }
        },
        (err: unknown) =>
          err instanceof ModelError && err.code === 'E_NONFINITE' && /NaN\/Inf logits at step 1;/.test(err.message),
      );
      assert.equal(tf.memory().numTensors, n0);
    }
  });
});
