/**
 * Every fixture in shared/fixtures against Hugging Face transformers' own outputs
 * (reference.json), on the wasm backend:
 * - logits at every prompt position (full forward, no cache) within 1e-4 × the logit scale;
 * - greedy continuation with the KV cache equal to the reference tokens;
 * - cached decode (one-token steps, and uneven chunks) equal to a full forward over the same
 *   tokens, well past Gemma 2/3's sliding window of 8 and with chunks longer than the window;
 * - the tensor names and shapes the config implies are exactly those in the checkpoint.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, SafetensorsFile, SHARED_MISSING } from '@moi/core';
import { expectedTensors, loadModel, type LoadedModel } from '../src/index.ts';
import {
  assertRowsClose,
  disposeCache,
  FIXTURES,
  fixturesRoot,
  fullLogits,
  greedy,
  readConfigJson,
  readReference,
  rowsOf,
  tolFor,
  type Reference,
} from './helpers.ts';

/** Cut `n` tokens into chunks of these sizes (the last repeats), for cached prefill. */
function chunks(n: number, sizes: number[]): number[] {
  const out: number[] = [];
  let done = 0;
  for (let i = 0; done < n; i++) {
    const s = Math.min(sizes[Math.min(i, sizes.length - 1)], n - done);
    out.push(s);
    done += s;
  }
  return out;
}

describe('models: fixtures vs Hugging Face reference (wasm)', function () {
  const root = fixturesRoot();

  before(async function () {
    if (!root) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    await initBackend({ backend: 'wasm' });
  });

  for (const name of FIXTURES) {
    describe(name, function () {
      let dir: string;
      let m: LoadedModel;
      let ref: Reference;

      before(async function () {
        if (!root) this.skip();
        dir = path.join(root!, name);
        ref = readReference(dir);
        m = await loadModel(dir);
      });

      after(() => m?.dispose());

      it('expects exactly the checkpoint tensor names and shapes', function () {
        const want = expectedTensors(m.spec);
        const f = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
        try {
          const have = new Map([...f.tensors].map(([n, info]) => [n, info.shape]));
          assert.deepEqual([...want.keys()].sort(), [...have.keys()].sort());
          for (const [n, shape] of want) assert.deepEqual(have.get(n), shape, n);
        } finally {
          f.close();
        }
      });

      it('logits match the reference at every position (full forward)', function () {
        assert.ok(ref.cases.length > 0);
        for (const c of ref.cases) {
          assert.equal(c.logits.length, c.input_ids.length);
          const got = fullLogits(m.model, c.input_ids);
          assertRowsClose(got, c.logits, tolFor(c.logits), `${name}/${c.name}`);
        }
      });

      it('greedy continuation with the KV cache equals the reference tokens', function () {
        for (const c of ref.cases) {
          assert.equal(c.greedy.tokens.length, c.greedy.n);
          const { tokens } = greedy(m.model, c.input_ids, c.greedy.n);
          assert.deepEqual(tokens, c.greedy.tokens, `${name}/${c.name}`);
        }
      });

      it('input embeddings (rows of embed_tokens read from the file) give the same logits as ids', function () {
        const ids = ref.cases[0].input_ids;
        const byIds = fullLogits(m.model, ids);
        const f = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
        const table = f.readFloat32('model.embed_tokens.weight');
        f.close();
        const H = m.spec.hiddenSize;
        const rows = new Float32Array(ids.length * H);
        ids.forEach((id, t) => rows.set(table.subarray(id * H, (id + 1) * H), t * H));
        const embeds = tf.tensor3d(rows, [1, ids.length, H]);
        const byEmbeds = rowsOf(m.model.forward({ embeds }));
        embeds.dispose();
        assertRowsClose(byEmbeds, byIds, tolFor(byIds) / 100, `${name}: embeds vs ids`);
      });

      // The prompt (longer than the window for case p12) in one chunk, then one-token steps
      // through the reference continuation; and the same tokens in uneven chunks.
      const schedules: Array<{ label: string; sizes: (prompt: number) => number[] }> = [
        { label: 'prompt in one chunk, then one-token steps', sizes: (p) => [p, 1] },
        { label: 'uneven chunks (3, 10, 1, 1, 9, 1, …)', sizes: () => [3, 10, 1, 1, 9, 1] },
      ];
      for (const sched of schedules) {
        it(`cached decode equals a full forward: ${sched.label}`, function () {
          const window = Math.max(0, ...m.spec.layers.map((l) => l.window ?? 0));
          for (const c of ref.cases) {
            const seq = [...c.input_ids, ...c.greedy.tokens];
            if (window) assert.ok(seq.length > 2 * window, 'the sequence runs well past the sliding window');
            const full = fullLogits(m.model, seq);
            const tol = tolFor(full);
            const cache = m.model.makeCache(1, seq.length);
            try {
              const got: Float32Array[] = [];
              let at = 0;
              for (const n of chunks(seq.length, sched.sizes(c.input_ids.length))) {
                const out = m.model.forward({ ids: [seq.slice(at, at + n)] }, { cache });
                assert.deepEqual(out.shape, [1, n, m.spec.vocabSize]);
                got.push(...rowsOf(out));
                at += n;
                for (const layer of cache) assert.equal(layer.offset[0], at);
              }
              assertRowsClose(got, full, tol, `${name}/${c.name}: cached vs full`);
            } finally {
              disposeCache(cache);
            }
          }
        });
      }

      const sliding = root !== null && readConfigJson(path.join(root, name)).sliding_window != null;
      if (sliding)
        it('a 20-token chunk on sliding layers keeps the last window of positions, p in slot p % window', function () {
          const cache = m.model.makeCache(1, 64);
          try {
            for (const [i, l] of m.spec.layers.entries()) assert.equal(cache[i].size, l.window ?? 64);
            const seq = [...ref.cases[0].input_ids, ...ref.cases[0].greedy.tokens].slice(0, 20);
            m.model.forward({ ids: [seq] }, { cache }).dispose();
            for (const [i, l] of m.spec.layers.entries()) {
              if (l.window === null) continue;
              // slots hold the last `window` positions, position p in slot p % window
              const want = Array.from(
                { length: l.window },
                (_, s) => 20 - l.window! + ((s - (20 % l.window!) + l.window!) % l.window!),
              );
              assert.deepEqual(cache[i].slotPos[0], want, `layer ${i}`);
            }
          } finally {
            disposeCache(cache);
          }
        });
    });
  }
});
