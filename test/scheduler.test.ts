/**
 * The continuous-batching Scheduler against generate() alone: requests submitted at different
 * times into a pool of rows (joining and leaving between steps, prefilled in chunks beside
 * running decodes) give the same tokens as each request alone; aborts free their slot; the prompt
 * cache reuses a freed row's prefix and still gives the same tokens; no tensor leaks.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { MoiError, sharedDir, SHARED_MISSING } from '@moi/core';
import { Engine } from '@moi/engine';
import { generateOne, type GenerateRequest, type GenerationEvent } from '@moi/engine';
import { Scheduler } from '@moi/engine';

const shared = sharedDir();

async function collect(it: AsyncIterable<GenerationEvent>) {
  const tokens: number[] = [];
  for await (const e of it) {
    if (e.type === 'token') tokens.push(e.token);
    else return { tokens, done: e };
  }
  throw new Error('no done event');
}

describe('engine: continuous-batching scheduler', function () {
  let engine: Engine;
  before(async function () {
    if (!shared) {
      console.warn(SHARED_MISSING);
      this.skip();
    }
    engine = await Engine.load(path.join(shared!, 'fixtures', 'llama'), { backend: 'wasm' });
  });
  after(() => engine?.dispose());

  const requests: GenerateRequest[] = [
    { promptIds: [1, 499, 377, 390, 368], maxTokens: 9, sampling: { temperature: 0 }, ignoreEos: true },
    {
      promptIds: [1, 22, 33],
      maxTokens: 5,
      sampling: { temperature: 0 },
      ignoreEos: true,
      mix: { mode: 'moi', beta: 0.5 },
    },
    {
      promptIds: Array.from({ length: 150 }, (_, i) => 1 + ((i * 37) % 400)),
      maxTokens: 6,
      sampling: { temperature: 0 },
      ignoreEos: true,
    },
    {
      promptIds: [1, 7, 8, 9, 10, 11],
      maxTokens: 12,
      sampling: { temperature: 0.8, seed: 5 },
      ignoreEos: true,
      mix: { mode: 'direct' },
    },
    { promptIds: [1, 300], maxTokens: 4, sampling: { temperature: 0 }, ignoreEos: true },
  ];

  it('requests joining and leaving a pool of 3 rows equal each request alone, with no leaks', async function () {
    const alone: number[][] = [];
    for (const r of requests) alone.push((await generateOne(engine, r)).done.tokens);
    const n0 = tf.memory().numTensors;
    const s = new Scheduler(engine, { maxSeqs: 3, maxModelLen: 256, prefillChunk: 32 });
    const runs = requests.map(async (r, i) => {
      await new Promise((res) => setTimeout(res, i * 15));
      return collect(s.submit(r));
    });
    const got = await Promise.all(runs);
    got.forEach((g, i) => {
      assert.deepEqual(g.tokens, alone[i], `request ${i}`);
      assert.deepEqual(g.done.tokens, alone[i]);
      assert.equal(g.done.finishReason, 'length');
    });
    assert.equal(s.stats().running, 0);
    assert.equal(
      s.stats().generationTokens,
      alone.reduce((n, a) => n + a.length, 0),
    );
    await s.close();
    assert.equal(tf.memory().numTensors, n0);
  });

  it('an abort ends the request with "abort" and frees its slot; the prompt cache reuses a freed prefix exactly', async function () {
    const n0 = tf.memory().numTensors;
    const s = new Scheduler(engine, { maxSeqs: 1, maxModelLen: 256 });
    const ac = new AbortController();
    const sub = s.submit(
      { promptIds: [1, 2, 3], maxTokens: 200, ignoreEos: true, sampling: { temperature: 0 } },
      { signal: ac.signal },
    );
    let n = 0;
    let done;
    for await (const e of sub) {
      if (e.type === 'token' && ++n === 3) ac.abort();
      if (e.type === 'done') done = e;
    }
    assert.equal(done!.finishReason, 'abort');
    assert.ok(done!.tokens.length < 10);
    assert.equal(s.stats().freeSlots, 1);
    // turn 1, then a prompt extending turn 1's prompt + reply: only the new tokens are prefilled
    const first = { promptIds: [1, 499, 377, 390], maxTokens: 5, sampling: { temperature: 0 }, ignoreEos: true };
    const a = await collect(s.submit(first));
    const second = {
      promptIds: [...first.promptIds, ...a.tokens, 33, 44],
      maxTokens: 6,
      sampling: { temperature: 0 },
      ignoreEos: true,
    };
    const b = await collect(s.submit(second));
    // held: prompt + reply less its last token (never fed)
    assert.equal(b.done.stats.cachedTokens, first.promptIds.length + a.tokens.length - 1);
    assert.deepEqual(b.tokens, (await generateOne(engine, second)).done.tokens);
    // (the first turn already shared BOS with the aborted request's prompt)
    assert.equal(a.done.stats.cachedTokens, 1);
    assert.equal(s.stats().cachedPromptTokens, 1 + b.done.stats.cachedTokens!);
    await s.close();
    assert.equal(tf.memory().numTensors, n0);
  });

  it('bad requests throw typed errors at submit; a full queue is E_QUEUE_FULL', async function () {
    const s = new Scheduler(engine, { maxSeqs: 1, maxModelLen: 32, maxWaiting: 1 });
    assert.throws(
      () => s.submit({ promptIds: [] }),
      (e: unknown) => e instanceof MoiError && e.code === 'E_REQUEST',
    );
    assert.throws(
      () => s.submit({ promptIds: new Array(40).fill(1) }),
      (e: unknown) => e instanceof MoiError && e.code === 'E_CONTEXT',
    );
    const first = s.submit({ promptIds: [1, 2], maxTokens: 3 }); // takes the row
    const second = s.submit({ promptIds: [1, 2], maxTokens: 3 }); // waits
    assert.throws(
      () => s.submit({ promptIds: [1, 2], maxTokens: 3 }),
      (e: unknown) => e instanceof MoiError && e.code === 'E_QUEUE_FULL',
    );
    await collect(first);
    await collect(second);
    await s.close();
    assert.throws(
      () => s.submit({ promptIds: [1, 2] }),
      (e: unknown) => e instanceof MoiError && e.code === 'E_CLOSED',
    );
  });
});
