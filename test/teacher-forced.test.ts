/**
 * The teacher-forced check itself (packages/cli/src/doctor/teacher-forced.ts), on the llama
 * fixture, wasm: it passes along reference.json's direct trajectory, and it fails where the
 * reference is made wrong at one step (two logits swapped across the top-K boundary; the logits
 * scaled by 1.01), from that step on (its wrong logits also make the next inputs wrong); a
 * settings object it cannot check is a UsageError.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, SHARED_MISSING, UsageError } from '@moi/core';
import { loadModel, type LoadedModel } from '@moi/models';
import { resolveMixSettings } from '@moi/moi';
import {
  directSettings,
  recordRun,
  softSettings,
  teacherForced,
  type RefRun,
} from '../packages/cli/src/doctor/teacher-forced.ts';
import { fixtureNames, readReference } from './conformance/helpers.ts';

describe('teacher-forced check', function () {
  this.timeout(120_000);
  const { root, names } = fixtureNames();
  let m: LoadedModel;
  let ref: RefRun;

  before(async function () {
    if (!root || !names.includes('llama')) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    await initBackend({ backend: 'wasm' });
    const dir = path.join(root!, 'llama');
    m = await loadModel(dir);
    const d = readReference(dir).moi.find((r) => r.mode === 'direct')!;
    ref = { prompt: d.input_ids, steps: d.step_logits.map((l, s) => ({ logits: l, token: d.tokens[s] })) };
  });
  after(() => m?.dispose());

  it('passes along reference.json, with the candidate sets compared, and leaks nothing', async () => {
    await teacherForced(m.model, ref, directSettings()); // warms the backend's kept constants
    const before = tf.memory().numTensors;
    const r = await teacherForced(m.model, ref, directSettings());
    assert.deepEqual(r.failures, []);
    assert.equal(r.setsCompared + r.nearTies, ref.steps.length);
    assert.ok(r.setsCompared >= ref.steps.length - 1, `sets compared at ${r.setsCompared} steps`);
    assert.ok(r.worstLogitRel < 1e-4 && r.worstWeightRatio <= 1);
    assert.equal(tf.memory().numTensors, before);
  });

  it('fails from the step where the reference is wrong, and not before', async () => {
    const firstFailure = (r: { failures: string[] }) => Number(/^step (\d+):/.exec(r.failures[0] ?? '')?.[1] ?? -1);
    const at = 5;
    const L = Array.from(ref.steps[at].logits);
    const order = L.map((_, i) => i).sort((a, b) => L[b] - L[a]);
    // the 20th and the 25th swapped (the reference's candidates are then wrong too)
    const swapped = L.slice();
    [swapped[order[19]], swapped[order[24]]] = [L[order[24]], L[order[19]]];
    const r1 = await teacherForced(
      m.model,
      { ...ref, steps: ref.steps.map((s, i) => (i === at ? { ...s, logits: swapped } : s)) },
      directSettings(),
    );
    assert.equal(firstFailure(r1), at, r1.failures.join('\n'));
    assert.match(r1.failures[0], /logits max \|diff\|/);
    // logits 1% off at step 3
    const r2 = await teacherForced(
      m.model,
      {
        ...ref,
        steps: ref.steps.map((s, i) => (i === 3 ? { ...s, logits: Array.from(s.logits, (v) => v * 1.01) } : s)),
      },
      directSettings(),
    );
    assert.equal(firstFailure(r2), 3, r2.failures.join('\n'));
  });

  it('Soft Thinking: a run along itself passes; settings it cannot check are refused', async () => {
    const soft = softSettings(m.spec.vocabSize, m.spec.vocabSize - 1);
    const run = await recordRun(m.model, ref.prompt, 6, soft);
    const r = await teacherForced(m.model, run, soft);
    assert.deepEqual(r.failures, []);
    assert.equal(r.worstLogitRel, 0, 'the same backend along its own run: the same logits');
    await assert.rejects(
      teacherForced(m.model, ref, resolveMixSettings({ mode: 'moi', topK: 20 }, {})),
      (e: unknown) => e instanceof UsageError && /teacher-forced checks take direct mode/.test((e as Error).message),
    );
  });
});
