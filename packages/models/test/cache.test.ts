/**
 * KV cache behaviour on the wasm backend, on the llama and gemma2 fixtures (gemma2: sliding
 * window 8 on alternate layers, so rotating buffers) and a Mistral-style copy of llama with a
 * window on every layer. Expectations come from the model itself run another way: a full
 * forward with no cache, each row decoded alone, or the other write path.
 */
import assert from 'node:assert/strict';
import { symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, MoiError, ModelError, SHARED_MISSING, UsageError } from '@moi/core';
import { loadModel, type Decoder, type KVCache, type LoadedModel } from '../src/index.ts';
import {
  argmax,
  assertRowsClose,
  disposeCache,
  fixturesRoot,
  fullLogits,
  greedy,
  makeTemp,
  maxDiff,
  readConfigJson,
  readReference,
  rmTemp,
  rowsOf,
  tolFor,
  type RefCase,
} from './helpers.ts';

/**
 * Prefill `prompt` (all positions) then `steps` one-token steps, feeding `feed[i]` when given,
 * else the argmax. Returns every position's logits and the tokens fed, and checks after each
 * step whether layer 0's key buffer is the same tensor as before (in-place) or a new one.
 */
function decode(model: Decoder, prompt: number[], steps: number, opts: { noInPlace?: boolean; feed?: number[] } = {}) {
  const cache = model.makeCache(1, prompt.length + steps, { noInPlace: opts.noInPlace });
  try {
    const logits = rowsOf(model.forward({ ids: [prompt] }, { cache }));
    const fed: number[] = [];
    let sameBuffer = 0;
    let grown = 0;
    for (let i = 0; i < steps; i++) {
      const y = opts.feed ? opts.feed[i] : argmax(logits[logits.length - 1]);
      const before = cache.map((c) => c.keys);
      const allocBefore = cache.map((c) => c.alloc);
      logits.push(...rowsOf(model.forward({ ids: [[y]] }, { cache })));
      fed.push(y);
      // steps where a buffer grew (GROW_SLOTS at a time) replace it on either path
      if (cache.some((c, l) => c.alloc !== allocBefore[l])) grown++;
      else if (cache.every((c, l) => c.keys === before[l])) sameBuffer++;
    }
    return { logits, fed, sameBuffer, grown };
  } finally {
    disposeCache(cache);
  }
}

/** A snapshot of a cache's state: offsets, slot positions and buffer contents. */
function snapshot(cache: KVCache[]) {
  return cache.map((c) => ({
    offset: [...c.offset],
    slotPos: c.slotPos.map((r) => [...r]),
    keys: Array.from(c.keys.dataSync()),
    valuesT: Array.from(c.valuesT.dataSync()),
  }));
}

describe('models: KV cache (wasm)', function () {
  const root = fixturesRoot();
  const models: Record<'llama' | 'gemma2' | 'mistral', LoadedModel> = {} as any;
  const refs: Record<'llama' | 'gemma2', RefCase[]> = {} as any;
  let tmp: string | undefined;

  before(async function () {
    if (!root) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    await initBackend({ backend: 'wasm' });
    for (const name of ['llama', 'gemma2'] as const) {
      models[name] = await loadModel(path.join(root!, name));
      refs[name] = readReference(path.join(root!, name)).cases;
    }
    // Mistral layout: llama's weights, a sliding window of 6 on every layer
    tmp = makeTemp('mistral');
    const config = { ...readConfigJson(path.join(root!, 'llama')), model_type: 'mistral', sliding_window: 6 };
    writeFileSync(path.join(tmp, 'config.json'), JSON.stringify(config));
    symlinkSync(path.join(root!, 'llama', 'model.safetensors'), path.join(tmp, 'model.safetensors'));
    models.mistral = await loadModel(tmp);
  });

  after(function () {
    for (const m of Object.values(models)) m.dispose();
    rmTemp(tmp);
  });

  /** The reference continuation of case `i` (prompt + greedy tokens). */
  const seqOf = (name: 'llama' | 'gemma2', i: number) => [...refs[name][i].input_ids, ...refs[name][i].greedy.tokens];

  describe('in-place writes vs the tensorScatterUpdate fallback', function () {
    for (const name of ['llama', 'gemma2'] as const) {
      it(`${name}: identical logits over 30 steps (12-token prompt)`, function () {
        const prompt = refs[name][0].input_ids;
        assert.equal(prompt.length, 12);
        const fast = decode(models[name].model, prompt, 30);
        const slow = decode(models[name].model, prompt, 30, { noInPlace: true, feed: fast.fed });
        // the two paths really differ: one keeps its buffers, the other replaces them every step
        // (steps where the cache grew replace the buffers on both paths)
        assert.ok(fast.grown <= 2);
        assert.equal(fast.sameBuffer, 30 - fast.grown, 'in-place path keeps its buffers');
        assert.equal(slow.sameBuffer, 0, 'fallback path makes new buffers');
        assert.equal(maxDiff(fast.logits, slow.logits), 0, 'logits differ between the write paths');
        // and both are right: equal to a full forward over the same tokens
        const full = fullLogits(models[name].model, [...prompt, ...fast.fed]);
        assertRowsClose(fast.logits, full, tolFor(full), `${name}: cached vs full`);
      });
    }
  });

  describe('batch rows at different positions', function () {
    for (const name of ['llama', 'gemma2'] as const) {
      it(`${name}: rows prefilled one by one, decoded together, equal each row alone`, function () {
        const m = models[name].model;
        const prompts = [seqOf(name, 1).slice(0, 3), seqOf(name, 1).slice(0, 7), seqOf(name, 0).slice(0, 12)];
        const steps = 20;
        const extra = 4; // further steps on rows [2, 0] only, in that order
        const alone = prompts.map((p) => greedy(m, p, steps + extra));
        const cache = m.makeCache(3, 12 + steps + extra);
        try {
          const got: number[][] = [[], [], []];
          const gotLogits: Float32Array[][] = [[], [], []];
          let last = prompts.map((p, i) => rowsOf(m.forward({ ids: [p] }, { cache, rows: [i], lastOnly: true }))[0]);
          for (let s = 0; s < steps; s++) {
            const ys = last.map(argmax);
            ys.forEach((y, i) => {
              got[i].push(y);
              gotLogits[i].push(last[i]);
            });
            if (s + 1 === steps) break;
            const out = m.forward({ ids: ys.map((y) => [y]) }, { cache });
            assert.deepEqual(out.shape, [3, 1, m.spec.vocabSize]);
            const flat = out.dataSync() as Float32Array;
            out.dispose();
            const V = m.spec.vocabSize;
            last = [0, 1, 2].map((i) => flat.slice(i * V, (i + 1) * V));
          }
          for (const l of cache)
            assert.deepEqual(
              l.offset,
              prompts.map((p) => p.length + steps - 1),
            );
          // rows 2 and 0 go on without row 1
          let pair = [got[2][steps - 1], got[0][steps - 1]];
          for (let s = 0; s < extra; s++) {
            const out = m.forward({ ids: pair.map((y) => [y]) }, { cache, rows: [2, 0] });
            const V = m.spec.vocabSize;
            const flat = out.dataSync() as Float32Array;
            out.dispose();
            const rows = [flat.slice(0, V), flat.slice(V)];
            pair = rows.map(argmax);
            got[2].push(pair[0]);
            gotLogits[2].push(rows[0]);
            got[0].push(pair[1]);
            gotLogits[0].push(rows[1]);
          }
          assert.equal(cache[0].offset[1], prompts[1].length + steps - 1, 'row 1 did not move');
          for (let i = 0; i < 3; i++) {
            const n = got[i].length;
            assert.deepEqual(got[i], alone[i].tokens.slice(0, n), `${name} row ${i} tokens`);
            assertRowsClose(
              gotLogits[i],
              alone[i].stepLogits.slice(0, n),
              tolFor(alone[i].stepLogits),
              `${name} row ${i} logits`,
            );
          }
        } finally {
          disposeCache(cache);
        }
      });
    }

    it('gemma2: reset(rows) forgets only those rows; the row is then reused for a new prompt', function () {
      const m = models.gemma2.model;
      const a = seqOf('gemma2', 0).slice(0, 20);
      const b = seqOf('gemma2', 1).slice(0, 20);
      const cache = m.makeCache(2, 40);
      try {
        m.forward({ ids: [a, b] }, { cache }).dispose();
        const before = snapshot(cache);
        cache.forEach((c) => c.reset([1]));
        for (const [l, c] of cache.entries()) {
          assert.deepEqual(c.offset, [20, 0]);
          assert.deepEqual(c.slotPos[0], before[l].slotPos[0], 'row 0 slots kept');
          assert.ok(
            c.slotPos[1].every((p) => p === -1),
            'row 1 slots empty',
          );
        }
        // row 1 now runs a new prompt shorter than the old one: stale slots must not leak in
        const fresh = seqOf('gemma2', 1).slice(3, 9);
        const want = greedy(m, fresh, 12);
        let row = rowsOf(m.forward({ ids: [fresh] }, { cache, rows: [1], lastOnly: true }))[0];
        const toks: number[] = [];
        for (let s = 0; s < 12; s++) {
          toks.push(argmax(row));
          assertRowsClose([row], [want.stepLogits[s]], tolFor(want.stepLogits), `step ${s}`);
          row = rowsOf(m.forward({ ids: [[toks[s]]] }, { cache, rows: [1], lastOnly: true }))[0];
        }
        assert.deepEqual(toks, want.tokens);
        // row 0 still continues its own sequence exactly
        const next = seqOf('gemma2', 0)[20];
        const got = rowsOf(m.forward({ ids: [[next]] }, { cache, rows: [0] }));
        const full = fullLogits(m, seqOf('gemma2', 0).slice(0, 21));
        assertRowsClose(got, [full[20]], tolFor(full), 'row 0 after the reset of row 1');
        // reset() with no rows forgets everything
        cache.forEach((c) => c.reset());
        for (const c of cache) assert.deepEqual(c.offset, [0, 0]);
        const again = rowsOf(m.forward({ ids: [a.slice(0, 10), b.slice(0, 10)] }, { cache }));
        assertRowsClose(again.slice(0, 10), fullLogits(m, a.slice(0, 10)), tolFor(full), 'after reset()');
      } finally {
        disposeCache(cache);
      }
    });
  });

  describe('context overflow', function () {
    for (const name of ['llama', 'gemma2'] as const) {
      it(`${name}: offset + T > capacity throws E_CONTEXT and leaves the cache unchanged`, function () {
        const m = models[name].model;
        const seq = seqOf(name, 0);
        const cache = m.makeCache(1, 10);
        try {
          m.forward({ ids: [seq.slice(0, 6)] }, { cache }).dispose();
          const before = snapshot(cache);
          const n0 = tf.memory().numTensors;
          assert.throws(
            () => m.forward({ ids: [seq.slice(6, 11)] }, { cache }),
            (e: unknown) => {
              assert.ok(e instanceof UsageError, String(e));
              assert.equal((e as UsageError).code, 'E_CONTEXT');
              assert.match((e as Error).message, /capacity of 10/);
              return true;
            },
          );
          assert.equal(tf.memory().numTensors, n0, 'no tensors left behind');
          assert.deepEqual(snapshot(cache), before, 'cache state unchanged (offsets, slots, buffers)');
          // what does fit still works and is right
          const got = rowsOf(m.forward({ ids: [seq.slice(6, 10)] }, { cache }));
          const full = fullLogits(m, seq.slice(0, 10));
          assertRowsClose(got, full.slice(6), tolFor(full), `${name}: after the overflow`);
          assert.throws(
            () => m.forward({ ids: [[seq[10]]] }, { cache }),
            (e: unknown) => (e as MoiError).code === 'E_CONTEXT',
          );
          for (const c of cache) assert.equal(c.offset[0], 10);
        } finally {
          disposeCache(cache);
        }
      });
    }

    it('a row outside the batch (E_CACHE_ROW) or ragged ids (E_FORWARD) write nothing', function () {
      const m = models.gemma2.model;
      const cache = m.makeCache(2, 8);
      try {
        const before = snapshot(cache);
        assert.throws(
          () => m.forward({ ids: [[1, 2]] }, { cache, rows: [2] }),
          (e: unknown) => (e as MoiError).code === 'E_CACHE_ROW',
        );
        assert.deepEqual(snapshot(cache), before);
        assert.throws(
          () => m.forward({ ids: [[1, 2]] }, { cache, rows: [0, 1] }),
          (e: unknown) => (e as MoiError).code === 'E_FORWARD',
        );
        assert.throws(
          () => m.forward({ ids: [[1, 2], [3]] }, { cache }),
          (e: unknown) => (e as MoiError).code === 'E_FORWARD',
        );
        assert.deepEqual(snapshot(cache), before);
      } finally {
        disposeCache(cache);
      }
    });

    it('a cache larger than max_position_embeddings is refused with E_CONTEXT', function () {
      const m = models.llama.model;
      assert.throws(
        () => m.makeCache(1, m.spec.maxPositionEmbeddings + 1),
        (e: unknown) => {
          assert.ok(e instanceof ModelError);
          assert.equal(e.code, 'E_CONTEXT');
          assert.match(e.message, /max_position_embeddings 256/);
          return true;
        },
      );
    });
  });

  describe('Mistral-style window on every layer', function () {
    it('cached decode equals a full forward well past the window', function () {
      const m = models.mistral.model;
      assert.ok(m.spec.layers.every((l) => l.window === 6));
      const seq = seqOf('llama', 1);
      const full = fullLogits(m, seq);
      // the window matters: llama's own logits (no window) differ past position 6
      assert.ok(maxDiff(full.slice(6), fullLogits(models.llama.model, seq).slice(6)) > 1e-2);
      const got = decode(m, seq.slice(0, 4), seq.length - 4, { feed: seq.slice(4) });
      assertRowsClose(got.logits, full, tolFor(full), 'mistral cached vs full');
    });

    it('a cache smaller than the window still refuses to overflow its capacity', function () {
      const m = models.mistral.model;
      const seq = seqOf('llama', 1);
      const cache = m.makeCache(1, 4);
      try {
        const got = rowsOf(m.forward({ ids: [seq.slice(0, 4)] }, { cache }));
        assertRowsClose(got, fullLogits(m, seq.slice(0, 4)), 1e-3, 'within capacity');
        assert.throws(
          () => m.forward({ ids: [[seq[4]]] }, { cache }),
          (e: unknown) => (e as MoiError).code === 'E_CONTEXT',
        );
        for (const c of cache) assert.equal(c.offset[0], 4);
      } finally {
        disposeCache(cache);
      }
    });
  });

  describe('no tensor leaks', function () {
    const runs: Array<{ name: 'llama' | 'gemma2'; noInPlace: boolean }> = [
      { name: 'llama', noInPlace: false },
      { name: 'gemma2', noInPlace: false },
      { name: 'gemma2', noInPlace: true },
    ];
    for (const { name, noInPlace } of runs) {
      it(`${name}${noInPlace ? ' (scatter fallback)' : ''}: tensor count is the same before and after a 200-step decode`, function () {
        const m = models[name].model;
        const prompt = refs[name][1].input_ids;
        const cache = m.makeCache(1, prompt.length + 210, { noInPlace });
        try {
          // warm-up: prefill and two steps
          let y = argmax(rowsOf(m.forward({ ids: [prompt] }, { cache, lastOnly: true }))[0]);
          for (let i = 0; i < 2; i++) y = argmax(rowsOf(m.forward({ ids: [[y]] }, { cache, lastOnly: true }))[0]);
          const n0 = tf.memory().numTensors;
          const b0 = tf.memory().numBytes;
          // the cache grows its buffers as tokens arrive (GROW_SLOTS at a time): those bytes, and no others, may be added
          const cacheBytes = () => cache.reduce((n, c) => n + (c.keys.size + c.valuesT.size) * 4, 0);
          const c0 = cacheBytes();
          let drift = 0;
          for (let i = 0; i < 200; i++) {
            const logits = m.forward({ ids: [[y]] }, { cache, lastOnly: true });
            y = argmax(logits.dataSync());
            logits.dispose();
            drift = Math.max(drift, Math.abs(tf.memory().numTensors - n0));
          }
          assert.equal(cache[0].offset[0], prompt.length + 202);
          assert.equal(tf.memory().numTensors, n0);
          assert.equal(tf.memory().numBytes - b0, cacheBytes() - c0);
          assert.ok(
            cache.every((c) => c.alloc <= c.size && c.alloc >= Math.min(c.size, c.offset[0])),
            'cache slots cover the tokens',
          );
          assert.equal(drift, 0, 'tensor count moved during the decode');
        } finally {
          disposeCache(cache);
        }
      });
    }
  });
});
