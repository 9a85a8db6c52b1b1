/**
 * The cpu backend path: reference logits and greedy tokens for llama and gemma2 (sliding
 * window), and the KV cache's in-place writes (into the cpu backend's typed arrays) against the
 * tf.tensorScatterUpdate fallback. Restores the backend that was active before.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, SHARED_MISSING } from '@moi/core';
import { loadModel, writableView, type LoadedModel } from '../src/index.ts';
import {
  argmax,
  assertRowsClose,
  disposeCache,
  fixturesRoot,
  fullLogits,
  greedy,
  maxDiff,
  readReference,
  rowsOf,
  tolFor,
} from './helpers.ts';

describe('models: cpu backend', function () {
  const root = fixturesRoot();
  let previous: string | null = null;

  before(async function () {
    if (!root) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    previous = tf.getBackend() ?? null;
    await initBackend({ backend: 'cpu' });
    assert.equal(tf.getBackend(), 'cpu');
  });

  after(async function () {
    if (previous && previous !== 'cpu') await initBackend({ backend: previous });
  });

  for (const name of ['llama', 'gemma2']) {
    describe(name, function () {
      let m: LoadedModel;

      before(async function () {
        m = await loadModel(path.join(root!, name));
      });
      after(() => m?.dispose());

      it('logits and greedy tokens match the reference', function () {
        for (const c of readReference(path.join(root!, name)).cases) {
          assertRowsClose(fullLogits(m.model, c.input_ids), c.logits, tolFor(c.logits), `${name}/${c.name}`);
          assert.deepEqual(
            greedy(m.model, c.input_ids, c.greedy.n).tokens,
            c.greedy.tokens,
            `${name}/${c.name} greedy`,
          );
        }
      });

      it('in-place cache writes equal the scatter fallback over 30 steps', function () {
        const prompt = readReference(path.join(root!, name)).cases[0].input_ids;
        const run = (noInPlace: boolean, feed?: number[]) => {
          const cache = m.model.makeCache(1, prompt.length + 30, { noInPlace });
          try {
            const keys0 = cache[0].keys;
            assert.ok(writableView(keys0) !== null, 'the cpu backend exposes a writable view');
            const logits = rowsOf(m.model.forward({ ids: [prompt] }, { cache }));
            const fed: number[] = [];
            // steps where the cache did not grow: the in-place path keeps its buffer, the fallback replaces it
            let kept = 0;
            let steady = 0;
            for (let i = 0; i < 30; i++) {
              const y = feed ? feed[i] : argmax(logits[logits.length - 1]);
              fed.push(y);
              const [before, alloc] = [cache[0].keys, cache[0].alloc];
              logits.push(...rowsOf(m.model.forward({ ids: [[y]] }, { cache })));
              if (cache[0].alloc === alloc) {
                steady++;
                if (cache[0].keys === before) kept++;
              }
            }
            return { logits, fed, kept: kept === steady && steady >= 28, replaced: kept === 0 };
          } finally {
            disposeCache(cache);
          }
        };
        const fast = run(false);
        const slow = run(true, fast.fed);
        assert.equal(fast.kept, true, 'in-place path keeps its buffer');
        assert.equal(slow.replaced, true, 'fallback path replaces its buffer');
        assert.equal(maxDiff(fast.logits, slow.logits), 0);
        const full = fullLogits(m.model, [...prompt, ...fast.fed]);
        assertRowsClose(fast.logits, full, tolFor(full), `${name}: cached vs full on cpu`);
      });
    });
  }
});
