/**
 * @slow: the published shapes of SmolLM2-135M, Gemma-3-270m, Qwen2.5-0.5B and Qwen3-0.6B
 * (shared/peer-bench/configs) as synthetic float32 HF folders from peer-bench's own generator:
 * each loads, prefills 16 tokens and decodes one step with finite logits, and the cached step
 * equals a full forward over the 17 tokens. Runs only with MOI_SLOW=1 (`pnpm test:slow`): the
 * Qwen shapes are 2–2.4 GB of f32 weights, about 3 GB of the 4 GB wasm heap with the tied head.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, sharedDir } from '@moi/core';
import { loadModel } from '../src/index.ts';
import { argmax, assertRowsClose, makeTemp, rmTemp, rowsOf, tolFor } from './helpers.ts';

/** peer-bench's prompt: ids 1000 + (i·7919) mod (vocab − 2000), no BOS. */
function benchPrompt(n: number, vocab: number): number[] {
  return Array.from({ length: n }, (_, i) => 1000 + ((i * 7919) % (vocab - 2000)));
}

const mib = (bytes: number) => Math.round(bytes / 2 ** 20);

describe('models: peer-bench real shapes @slow', function () {
  this.timeout(600_000);
  const shared = sharedDir();
  const bench = shared ? path.join(shared, 'peer-bench') : null;
  const configs =
    bench && existsSync(path.join(bench, 'configs'))
      ? readdirSync(path.join(bench, 'configs'))
          .filter((f) => f.endsWith('.json'))
          .sort()
      : [];
  // smallest first, so the wasm heap grows once
  const order = ['smollm2-135m.json', 'gemma-3-270m.json', 'qwen2.5-0.5b.json', 'qwen3-0.6b.json'];
  configs.sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99));

  before(async function () {
    if (process.env.MOI_SLOW !== '1') {
      console.log('    (skipped: real-shape peer-bench models are slow; run with MOI_SLOW=1)');
      this.skip();
    }
    if (!bench || configs.length === 0) {
      console.log('    (skipped: shared/peer-bench/configs not found)');
      this.skip();
    }
    await initBackend({ backend: 'wasm' });
  });

  it('finds the four published configs', function () {
    for (const f of order) assert.ok(configs.includes(f), f);
  });

  for (const file of configs) {
    it(`${file.replace(/\.json$/, '')}: load, prefill 16, one decode step`, async function () {
      const tmp = makeTemp('peer');
      const out = path.join(tmp, 'model');
      const b0 = tf.memory().numBytes;
      try {
        let t = performance.now();
        execFileSync(
          process.execPath,
          [
            path.join(bench!, 'make-synthetic.mjs'),
            '--config',
            path.join(bench!, 'configs', file),
            '--out',
            out,
            '--seed',
            '1',
            '--dtype',
            'f32',
          ],
          { stdio: 'pipe' },
        );
        const genS = (performance.now() - t) / 1000;
        t = performance.now();
        const m = await loadModel(out);
        const loadS = (performance.now() - t) / 1000;
        try {
          const V = m.spec.vocabSize;
          const prompt = benchPrompt(16, V);
          const cache = m.model.makeCache(1, 32);
          let prefillS = 0;
          let stepS = 0;
          let step: Float32Array;
          let y: number;
          try {
            t = performance.now();
            const first = rowsOf(m.model.forward({ ids: [prompt] }, { cache, lastOnly: true }))[0];
            prefillS = (performance.now() - t) / 1000;
            assert.equal(first.length, V);
            assert.ok(first.every(Number.isFinite), 'prefill logits finite');
            y = argmax(first);
            t = performance.now();
            step = rowsOf(m.model.forward({ ids: [[y]] }, { cache, lastOnly: true }))[0];
            stepS = (performance.now() - t) / 1000;
            assert.ok(step.every(Number.isFinite), 'decode logits finite');
          } finally {
            for (const c of cache) c.dispose();
          }
          const full = rowsOf(m.model.forward({ ids: [[...prompt, y]] }, { lastOnly: true }));
          const heap = (tf.backend() as any).wasm?.HEAPU8?.length ?? 0;
          console.log(
            `      ${file}: ${mib(m.checkpointBytes)} MiB f32 file, ${mib(m.weightBytes)} MiB in memory; ` +
              `generate ${genS.toFixed(1)} s, load ${loadS.toFixed(1)} s, prefill(16) ${prefillS.toFixed(2)} s, ` +
              `decode step ${(stepS * 1000).toFixed(0)} ms; wasm heap ${mib(heap)} MiB, peak RSS ${mib(process.resourceUsage().maxRSS * 1024)} MiB`,
          );
          // finite garbage is possible (an op that ran out of heap leaves its output unwritten):
          // the cached step must also agree with a full forward over the same 17 tokens
          assertRowsClose([step], full, tolFor(full), `${file}: cached step vs full forward`);
        } finally {
          m.dispose();
        }
        // what stays is only nn's kept constants (scalars, rotation matrices): under 1 MiB
        assert.ok(tf.memory().numBytes - b0 < 2 ** 20, `${tf.memory().numBytes - b0} bytes left after dispose`);
      } finally {
        rmTemp(tmp);
      }
    });
  }
});
