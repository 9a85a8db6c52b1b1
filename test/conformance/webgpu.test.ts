/**
 * Backend conformance on webgpu (Dawn through the `webgpu` package): the same fixture checks as
 * backends.test.ts, against reference.json and the wasm run (direct and Soft Thinking
 * teacher-forced, their free runs reported). Runs where Dawn finds an adapter
 * (in CI: Mesa's lavapipe software Vulkan driver, installed by .ci/run); elsewhere it skips and
 * prints why (the BackendError says what is missing and how to fix it).
 */
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, SHARED_MISSING } from '@moi/core';
import { conformance, fixtureNames, wasmBaseline, type FixtureRun } from './helpers.ts';

describe('conformance: webgpu', function () {
  this.timeout(600_000);
  const { root, names: all } = fixtureNames();
  // lavapipe is slow: by default one fixture per family kind (untied llama, q/k norm, Gemma 2's
  // softcaps and sliding window); MOI_SLOW=1 runs them all
  const names = process.env.MOI_SLOW === '1' ? all : all.filter((n) => ['llama', 'qwen3', 'gemma2'].includes(n));
  let baseline: Map<string, FixtureRun>;

  before(async function () {
    if (!root || names.length === 0) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    try {
      await initBackend({ backend: 'webgpu' });
    } catch (err) {
      console.log(`      [skip] webgpu conformance: ${(err as Error).message}`);
      this.skip();
    }
    // the baseline trajectories of the fixtures checked here, from wasm in this process
    baseline = (await wasmBaseline(names, root!)).runs;
  });

  after(async () => {
    await initBackend({ backend: 'wasm' });
  });

  it('webgpu: all fixtures, logits within 1e-4, MoI trajectories equal the wasm run, direct and soft teacher-forced', async () => {
    await initBackend({ backend: 'webgpu' });
    const r = await conformance(names, root!, baseline);
    console.log(
      `      [conformance] webgpu (${tf.getBackend()}): worst logits diff ${r.worstRel.toExponential(1)} × scale over ${names.length} fixtures`,
    );
  });
});
