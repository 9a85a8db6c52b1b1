/**
 * The prefill-chunk rule is one rule: `generate()` and the `Scheduler` cut a prompt into the same
 * chunks (a one-token remainder joins the chunk before it), so the logits after the prompt and
 * after each decode step are the same, bit for bit, on either path. (Before, generate ran a
 * one-token remainder through the decode path and its logits differed by ~1e-6.)
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import type * as tf from '@tensorflow/tfjs-core';
import { requireShared } from '@moi/core';
import {
  Engine,
  generate,
  prefillChunkEnd,
  Scheduler,
  type GenerateRequest,
  type GenerationEvent,
} from '../src/index.ts';

/** The chunks the rule makes of a prompt of `total` tokens. */
function chunks(total: number, chunk: number): number[] {
  const out: number[] = [];
  for (let s = 0; s < total;) {
    const end = prefillChunkEnd(s, total, chunk);
    out.push(end - s);
    s = end;
  }
  return out;
}

/** Every forward's logits while `run` goes: prefill forwards (with prefillTokensLeft) and decode forwards apart. */
async function recordForwards(
  engine: Engine,
  run: () => Promise<void>,
): Promise<{ prefill: Float32Array[]; decode: Float32Array[] }> {
  const model = engine.model;
  const original = model.forward;
  const prefill: Float32Array[] = [];
  const decode: Float32Array[] = [];
  model.forward = ((input: Parameters<typeof original>[0], opts?: Parameters<typeof original>[1]) => {
    const out = original.call(model, input, opts) as tf.Tensor;
    (opts?.prefillTokensLeft !== undefined ? prefill : decode).push((out.dataSync() as Float32Array).slice());
    return out;
  }) as typeof original;
  try {
    await run();
  } finally {
    model.forward = original;
  }
  return { prefill, decode };
}

async function drain(events: AsyncIterable<GenerationEvent>): Promise<number[]> {
  for await (const e of events) if (e.type === 'done') return e.tokens;
  throw new Error('no done event');
}

describe('engine: one prefill-chunk rule for generate and the scheduler', function () {
  it('a one-token remainder joins the chunk before it; nothing else is merged', () => {
    assert.deepEqual(chunks(17, 8), [8, 9]);
    assert.deepEqual(chunks(16, 8), [8, 8]);
    assert.deepEqual(chunks(18, 8), [8, 8, 2]);
    assert.deepEqual(chunks(9, 8), [9]);
    assert.deepEqual(chunks(1, 8), [1]);
    assert.deepEqual(chunks(2, 1), [2]);
    assert.deepEqual(chunks(3, 1), [1, 2]);
  });

  for (const fixture of ['stories260K', 'llama']) {
    describe(fixture, function () {
      let engine: Engine;
      before(async function () {
        const shared = requireShared(this);
        engine = await Engine.load(path.join(shared!, 'fixtures', fixture), { backend: 'wasm' });
      });
      after(() => engine?.dispose());

      const cases: { label: string; length: number; chunk?: number }[] = [
        { label: '17 tokens in chunks of 8 (8 + 9)', length: 17, chunk: 8 },
        { label: "129 tokens at each path's default chunk (generate 512, the scheduler 64 + 65)", length: 129 },
      ];
      for (const c of cases) {
        it(`generate and the scheduler give bit-identical logits: ${c.label}`, async function () {
          const V = engine.spec.vocabSize;
          const request: GenerateRequest = {
            promptIds: Array.from({ length: c.length }, (_, i) => 1 + ((i * 37 + 5) % (V - 1))),
            maxTokens: 3,
            sampling: { temperature: 0 },
            ignoreEos: true,
          };
          let alone: number[] = [];
          const viaGenerate = await recordForwards(engine, async () => {
            alone = await drain(generate(engine, [request], c.chunk ? { prefillChunk: c.chunk } : {}));
          });
          const scheduler = new Scheduler(engine, {
            maxSeqs: 1,
            maxModelLen: 256,
            ...(c.chunk ? { prefillChunk: c.chunk } : {}),
          });
          let pooled: number[] = [];
          const viaScheduler = await recordForwards(engine, async () => {
            pooled = await drain(scheduler.submit(request));
          });
          await scheduler.close();
          assert.deepEqual(pooled, alone);
          const last = (r: { prefill: Float32Array[] }) => r.prefill[r.prefill.length - 1];
          assert.deepEqual(last(viaScheduler), last(viaGenerate), 'the logits after the prompt');
          assert.equal(viaGenerate.decode.length, 2);
          assert.deepEqual(viaScheduler.decode, viaGenerate.decode, 'the logits after each decode step');
          if (c.chunk) assert.equal(viaGenerate.prefill.length, viaScheduler.prefill.length, 'the same chunks');
        });
      }
    });
  }
});
