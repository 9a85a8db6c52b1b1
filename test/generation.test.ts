/**
 * Generation end to end (`generate` / `generateOne` over a loaded Engine, wasm backend), against
 * the reference fixtures (shared/fixtures, Hugging Face transformers in float32) and invariants:
 * - greedy decoding equals the reference tokens, with text equal to the tokenizer's decode;
 * - a batch of prompts of different lengths, with per-row settings, equals each prompt alone;
 * - seeded sampling is reproducible; stop strings, EOS, max tokens and abort end rows correctly;
 * - every bad request is a typed error raised before any work;
 * - no tensor leaks across long generations; logprobs equal the reference's log-softmax.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, MoiError, sharedDir, SHARED_MISSING } from '@moi/core';
import { Engine } from '@moi/engine';
import {
  generate,
  generateOne,
  type DoneEvent,
  type GenerateRequest,
  type GenerationEvent,
  type TokenEvent,
} from '@moi/engine';

interface RefCase {
  name: string;
  input_ids: number[];
  logits: number[][];
  greedy: { n: number; tokens: number[] };
}
interface Reference {
  cases: RefCase[];
}

const shared = sharedDir();
const fixturesRoot = shared ? path.join(shared, 'fixtures') : null;

function readReference(name: string): Reference {
  return JSON.parse(readFileSync(path.join(fixturesRoot!, name, 'reference.json'), 'utf8')) as Reference;
}

/** Run a batch to the end: token events and done events, per row. */
async function runBatch(engine: Engine, requests: GenerateRequest[], opts: Parameters<typeof generate>[2] = {}) {
  const tokens: TokenEvent[][] = requests.map(() => []);
  const done: DoneEvent[] = [];
  for await (const e of generate(engine, requests, opts)) {
    if (e.type === 'token') tokens[e.row].push(e);
    else done[e.row] = e;
  }
  assert.equal(done.filter(Boolean).length, requests.length, 'one done event per row');
  return { tokens, done };
}

const greedy = (promptIds: number[], maxTokens: number, extra: Partial<GenerateRequest> = {}): GenerateRequest => ({
  promptIds,
  maxTokens,
  sampling: { temperature: 0 },
  ignoreEos: true,
  ...extra,
});

/** log_softmax of a row in float64. */
function logSoftmax64(row: number[]): number[] {
  const m = Math.max(...row);
  let z = 0;
  for (const x of row) z += Math.exp(x - m);
  const lz = m + Math.log(z);
  return row.map((x) => x - lz);
}

describe('generation: Engine + generate end to end (wasm)', function () {
  const engines = new Map<string, Engine>();
  const load = async (name: string): Promise<Engine> => {
    let e = engines.get(name);
    if (!e) engines.set(name, (e = await Engine.load(path.join(fixturesRoot!, name), { backend: 'wasm' })));
    return e;
  };

  const savedBeta = process.env.MIXINPUTS_BETA;
  before(async function () {
    if (!fixturesRoot) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    delete process.env.MIXINPUTS_BETA; // it would turn MoI on for requests that name no mode
    await initBackend({ backend: 'wasm' });
  });
  after(() => {
    for (const e of engines.values()) e.dispose();
    if (savedBeta !== undefined) process.env.MIXINPUTS_BETA = savedBeta;
  });

  it('stories260K greedy equals the reference, and its text is the tokenizer decode of the tokens', async function () {
    const engine = await load('stories260K');
    assert.ok(engine.tokenizer, 'stories260K has a tokenizer');
    const c = readReference('stories260K').cases[0];
    const { events, done } = await generateOne(engine, greedy(c.input_ids, c.greedy.n));
    assert.deepEqual(done.tokens, c.greedy.tokens);
    assert.equal(done.finishReason, 'length');
    assert.deepEqual(
      events.map((e) => e.token),
      c.greedy.tokens,
    );
    assert.equal(done.text, engine.tokenizer!.decode(c.greedy.tokens));
    assert.equal(events.map((e) => e.text).join(''), done.text);
    assert.ok(
      events.every((e) => e.mix === null),
      'standard mode has no mix diagnostics',
    );
    assert.equal(done.stats.promptTokens, c.input_ids.length);
    assert.equal(done.stats.generatedTokens, c.greedy.n);
  });

  describe('batches', function () {
    /** Three prompts of different lengths built from a fixture's cases. */
    function prompts(name: string): { prompts: number[][]; expect: (number[] | null)[] } {
      const ref = readReference(name);
      if (name === 'stories260K') {
        const c = ref.cases[0];
        // the case itself, a prefix of it, and the case extended by 7 of its greedy tokens
        // (whose greedy continuation is the rest of the reference's)
        return {
          prompts: [c.input_ids.slice(0, 3), c.input_ids, [...c.input_ids, ...c.greedy.tokens.slice(0, 7)]],
          expect: [null, c.greedy.tokens.slice(0, 24), c.greedy.tokens.slice(7, 31)],
        };
      }
      const [p12, p5] = ref.cases;
      return {
        prompts: [p12.input_ids, p5.input_ids, p12.input_ids.slice(0, 8)],
        expect: [p12.greedy.tokens, p5.greedy.tokens, null],
      };
    }

    for (const name of ['llama', 'gemma2', 'stories260K']) {
      it(`${name}: a greedy batch of 3 prompts of different lengths equals each prompt alone`, async function () {
        const engine = await load(name);
        const { prompts: ps, expect } = prompts(name);
        assert.equal(new Set(ps.map((p) => p.length)).size, 3, 'three different lengths');
        const batch = await runBatch(
          engine,
          ps.map((p) => greedy(p, 24)),
        );
        for (let r = 0; r < 3; r++) {
          const alone = await generateOne(engine, greedy(ps[r], 24));
          assert.deepEqual(batch.done[r].tokens, alone.done.tokens, `row ${r}`);
          assert.deepEqual(
            batch.tokens[r].map((e) => e.token),
            alone.done.tokens,
            `row ${r} events`,
          );
          assert.equal(batch.done[r].text, alone.done.text);
          if (expect[r]) assert.deepEqual(alone.done.tokens, expect[r], `row ${r} vs reference greedy`);
        }
      });

      it(`${name}: mixed per-row settings (standard, moi β=1, direct) equal each row alone`, async function () {
        const engine = await load(name);
        const { prompts: ps } = prompts(name);
        const mixes: GenerateRequest['mix'][] = [{ mode: 'standard' }, { mode: 'moi', beta: 1 }, { mode: 'direct' }];
        const requests = ps.map((p, r) => greedy(p, 24, { mix: mixes[r] }));
        const batch = await runBatch(engine, requests);
        for (let r = 0; r < 3; r++) {
          const alone = await generateOne(engine, requests[r]);
          assert.deepEqual(batch.done[r].tokens, alone.done.tokens, `row ${r} (${mixes[r]!.mode})`);
          const ent = (es: TokenEvent[]) => es.map((e) => e.mix?.entropy ?? null);
          if (r === 0) assert.ok(batch.tokens[r].every((e) => e.mix === null));
          else {
            const [a, b] = [ent(batch.tokens[r]), ent(alone.events)];
            for (let s = 0; s < a.length; s++)
              assert.ok(Math.abs(a[s]! - b[s]!) <= 1e-5, `row ${r} step ${s} entropy ${a[s]} vs ${b[s]}`);
          }
        }
      });
    }
  });

  it('seeded sampling is reproducible run to run, and another seed differs', async function () {
    const engine = await load('stories260K');
    const prompt = readReference('stories260K').cases[0].input_ids;
    const run = async (seed: number) =>
      (
        await generateOne(engine, {
          promptIds: prompt,
          maxTokens: 32,
          ignoreEos: true,
          sampling: { temperature: 0.8, topP: 0.9, seed },
        })
      ).done.tokens;
    const a = await run(7);
    const b = await run(7);
    const c = await run(8);
    assert.equal(a.length, 32);
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
    // in a batch, each row keeps its own seeded stream
    const batch = await runBatch(
      engine,
      [7, 8].map((seed) => ({
        promptIds: prompt,
        maxTokens: 32,
        ignoreEos: true,
        sampling: { temperature: 0.8, topP: 0.9, seed },
      })),
    );
    assert.deepEqual(batch.done[0].tokens, a);
    assert.deepEqual(batch.done[1].tokens, c);
  });

  describe('finishing', function () {
    it('a stop string ends generation right before it; no token event text contains it', async function () {
      const engine = await load('stories260K');
      const c = readReference('stories260K').cases[0];
      const full = engine.tokenizer!.decode(c.greedy.tokens);
      for (const stop of ['Lily', 'red ball', '. She']) {
        const at = full.indexOf(stop);
        assert.ok(at > 0, `'${stop}' occurs in the greedy text`);
        const { events, done } = await generateOne(
          engine,
          greedy(c.input_ids, c.greedy.n, { stop: [stop, 'never-occurs'] }),
        );
        assert.equal(done.finishReason, 'stop', stop);
        assert.equal(done.text, full.slice(0, at), stop);
        assert.ok(
          events.every((e) => !e.text.includes(stop)),
          `no event text contains '${stop}'`,
        );
        assert.equal(events.map((e) => e.text).join(''), done.text);
        assert.ok(done.tokens.length < c.greedy.n);
        assert.deepEqual(done.tokens, c.greedy.tokens.slice(0, done.tokens.length));
      }
    });

    it("EOS stops with 'stop' unless ignoreEos; maxTokens gives 'length'", async function () {
      const engine = await load('llama');
      assert.ok(engine.eosTokenIds.includes(2));
      const p5 = readReference('llama').cases.find((c) => c.name === 'p5')!;
      const eosAt = p5.greedy.tokens.indexOf(2);
      assert.ok(eosAt > 0, 'the reference greedy continuation of p5 meets EOS (id 2)');
      const stopped = await generateOne(engine, {
        promptIds: p5.input_ids,
        maxTokens: 24,
        sampling: { temperature: 0 },
      });
      assert.equal(stopped.done.finishReason, 'stop');
      assert.deepEqual(stopped.done.tokens, p5.greedy.tokens.slice(0, eosAt));
      assert.equal(stopped.events.length, eosAt, 'no token event for the EOS');
      const past = await generateOne(engine, greedy(p5.input_ids, 24));
      assert.equal(past.done.finishReason, 'length');
      assert.deepEqual(past.done.tokens, p5.greedy.tokens);
      const short = await generateOne(engine, greedy(p5.input_ids, 3));
      assert.equal(short.done.finishReason, 'length');
      assert.deepEqual(short.done.tokens, p5.greedy.tokens.slice(0, 3));
    });

    it("an AbortSignal after 3 tokens ends the row with 'abort' quickly", async function () {
      const engine = await load('stories260K');
      const prompt = readReference('stories260K').cases[0].input_ids;
      const ac = new AbortController();
      const events: GenerationEvent[] = [];
      let abortedAt = 0;
      for await (const e of generate(engine, [greedy(prompt, 400)], { signal: ac.signal })) {
        events.push(e);
        if (e.type === 'token' && events.length === 3) {
          ac.abort();
          abortedAt = performance.now();
        }
      }
      const elapsed = performance.now() - abortedAt;
      const done = events[events.length - 1] as DoneEvent;
      assert.equal(done.type, 'done');
      assert.equal(done.finishReason, 'abort');
      assert.equal(done.tokens.length, 3);
      assert.equal(events.filter((e) => e.type === 'token').length, 3);
      assert.ok(elapsed < 250, `abort took ${elapsed.toFixed(0)} ms`);
      // an already-aborted signal does no decoding at all
      const pre = await generateOne(engine, greedy(prompt, 400), { signal: AbortSignal.abort() });
      assert.equal(pre.done.finishReason, 'abort');
      assert.equal(pre.events.length, 0);
    });
  });

  describe('bad requests: typed errors before any work', function () {
    let engine: Engine;
    let calls = 0;
    let original: Engine['model']['forward'];
    before(async function () {
      engine = await load('llama');
      original = engine.model.forward;
      engine.model.forward = (...a: Parameters<typeof original>) => {
        calls++;
        return original.apply(engine.model, a);
      };
    });
    after(() => {
      delete (engine.model as { forward?: unknown }).forward;
    });

    const refuses = async (requests: GenerateRequest[], code: string, mentions: RegExp) => {
      calls = 0;
      const before = tf.memory().numTensors;
      await assert.rejects(runBatch(engine, requests), (err: unknown) => {
        assert.ok(err instanceof MoiError, `a MoiError, got ${String(err)}`);
        assert.equal(err.code, code, err.message);
        assert.match(err.message, mentions);
        return true;
      });
      assert.equal(calls, 0, 'no forward ran');
      assert.equal(tf.memory().numTensors, before, 'no tensor was made');
    };

    it('a prompt longer than the context: E_CONTEXT', async function () {
      const max = engine.spec.maxPositionEmbeddings;
      assert.equal(max, 256);
      await refuses(
        [
          greedy(
            Array.from({ length: max + 44 }, (_, i) => (i * 7) % 512),
            4,
          ),
        ],
        'E_CONTEXT',
        /max_position_embeddings|context/,
      );
      await refuses(
        [
          greedy([1, 2, 3], 4),
          greedy(
            Array.from({ length: max }, () => 5),
            4,
          ),
        ],
        'E_CONTEXT',
        /request 1/,
      );
    });

    it('an out-of-vocabulary id: E_REQUEST', async function () {
      await refuses([greedy([1, 512, 3], 4)], 'E_REQUEST', /512/);
      await refuses([greedy([1, -1], 4)], 'E_REQUEST', /-1/);
      await refuses([greedy([], 4)], 'E_REQUEST', /empty/);
    });

    it('invalid sampling: E_SAMPLING', async function () {
      await refuses([{ promptIds: [1, 2], sampling: { temperature: -1 } }], 'E_SAMPLING', /temperature/);
      await refuses([{ promptIds: [1, 2], sampling: { topP: 0 } }], 'E_SAMPLING', /topP/);
      await refuses([{ promptIds: [1, 2], sampling: { temperature: NaN } }], 'E_SAMPLING', /temperature/);
    });

    it('invalid MoI settings: E_MOI', async function () {
      await refuses([greedy([1, 2], 4, { mix: { mode: 'moi', beta: -1 } })], 'E_MOI', /beta/);
      await refuses([greedy([1, 2], 4, { mix: { mode: 'moi', beta: NaN } })], 'E_MOI', /beta/);
      await refuses([greedy([1, 2], 4, { mix: { mode: 'sideways' } })], 'E_MOI', /mode/);
      await refuses([greedy([1, 2], 4, { mix: { mode: 'moi', topK: 99999 } })], 'E_MOI', /topK/);
    });
  });

  it('leaks no tensors over 200-token generations in standard, moi and direct modes with logprobs', async function () {
    const engine = await load('llama');
    const prompt = readReference('llama').cases[1].input_ids;
    const modes: GenerateRequest['mix'][] = [{ mode: 'standard' }, { mode: 'moi', beta: 1 }, { mode: 'direct' }];
    const req = (mix: GenerateRequest['mix'], n: number): GenerateRequest => ({
      promptIds: prompt,
      maxTokens: n,
      ignoreEos: true,
      sampling: { temperature: 0.7, seed: 3, logprobs: 2 },
      mix,
    });
    for (const mix of modes) await generateOne(engine, req(mix, 4)); // warm-up
    const count = tf.memory().numTensors;
    for (const mix of modes) {
      const { done, events } = await generateOne(engine, req(mix, 200));
      assert.equal(done.tokens.length, 200);
      assert.ok(events.every((e) => e.logprobs && e.logprobs.top?.length === 2));
      assert.equal(tf.memory().numTensors, count, `${mix!.mode}: tensors after 200 tokens`);
    }
    // and a batch of all three modes, with an early stop in one row
    await runBatch(
      engine,
      modes.map((mix, r) => ({ ...req(mix, 200 - 50 * r) })),
    );
    assert.equal(tf.memory().numTensors, count, 'batch: tensors after');
  });

  it('logprobs at temperature 0 equal the float64 log-softmax of the reference logits', async function () {
    const engine = await load('llama');
    for (const c of readReference('llama').cases) {
      const { events } = await generateOne(
        engine,
        greedy(c.input_ids, 1, { sampling: { temperature: 0, logprobs: 3 } }),
      );
      const lp = logSoftmax64(c.logits[c.input_ids.length - 1]);
      const order = lp.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]);
      const first = events[0];
      assert.equal(first.token, c.greedy.tokens[0]);
      assert.equal(first.token, order[0][1]);
      assert.ok(
        Math.abs(first.logprobs!.logprob - lp[first.token]) <= 1e-4,
        `${c.name}: ${first.logprobs!.logprob} vs ${lp[first.token]}`,
      );
      const top = first.logprobs!.top!;
      assert.equal(top.length, 3);
      for (let j = 0; j < 3; j++) {
        assert.equal(top[j].id, order[j][1], `${c.name}: top ${j} id`);
        assert.ok(
          Math.abs(top[j].logprob - order[j][0]) <= 1e-4,
          `${c.name}: top ${j} logprob ${top[j].logprob} vs ${order[j][0]}`,
        );
      }
    }
  });
});
