/**
 * Soft Thinking end to end, through the users' decode path (generate / generateOne, wasm), on the
 * tiny llama fixture and the real stories260K. Every step is checked against float64 expectations
 * computed here from the logits the model produced at that step (captured at the forward) and the
 * embedding rows read from the safetensors file: S, the recorded token, the next input Σ w E
 * (captured at the next forward), the cold stop (which counts step 0), think-end by argmax, the
 * switch to the one-hot E[think-end], and after-thinking sampling (inverse CDF with the sampler's
 * own seeded draws). Neither fixture has `</think>`: an ordinary token plays think-end, by id.
 * Also: greedy equivalence, batches mixing soft / moi / standard rows, seeded noise, the
 * think-end token from real tokenizers, one device→host read per step, no tensor leaks.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, MoiError, SafetensorsFile, sharedDir, SHARED_MISSING } from '@moi/core';
import type { ForwardInput, ForwardOptions } from '@moi/models';
import { planRowMix, type SoftOptions } from '@moi/moi';
import { softFiltered, type Filters } from '../packages/moi/test/soft-reference.ts';
import { Engine } from '@moi/engine';
import { generate, generateOne, type GenerateRequest, type TokenEvent } from '@moi/engine';
import { traceStep, traceTexts } from '../packages/cli/src/trace/trace.ts';
import { createRng, uniformOpenClosed24 } from '@moi/core';
import { loadTokenizer } from '@moi/engine';

const shared = sharedDir();
const fixturesRoot = shared ? path.join(shared, 'fixtures') : null;

// ---------------------------------------------------------------- float64 expectations

/** p = softmax(logits / T), S, and the filtered distribution (top-k → top-p → min-p, renormalized). */
const filtered = softFiltered;

/** The soft step: S, candidates (the max_topk largest) and their renormalized weights. */
function softStep(logits: ArrayLike<number>, f: Filters, maxTopk: number): { S: number; ids: number[]; w: number[] } {
  const { S, order, q } = filtered(logits, f);
  const ids = order.slice(0, maxTopk);
  const s = ids.reduce((a, i) => a + q.get(i)!, 0);
  return { S, ids, w: ids.map((i) => q.get(i)! / s) };
}

/** Ordinary sampling by inverse CDF over ids in vocabulary order, at the sampler's draw u. */
function sampleAt(logits: ArrayLike<number>, f: Filters, u: number): number {
  if (f.temperature === 0) return filtered(logits, { ...f, temperature: 0 }).order[0];
  const { q } = filtered(logits, f);
  let cdf = 0;
  for (let i = 0; i < logits.length; i++) {
    cdf += q.get(i) ?? 0;
    if (cdf >= u) return i;
  }
  return logits.length - 1;
}

// ---------------------------------------------------------------- tracing

interface Trace {
  events: TokenEvent[];
  tokens: number[];
  /** logits of the last position of each forward call (call t gives step t's logits) */
  logits: Float32Array[];
  /** the input embeddings of each forward call (null for id inputs: the prefill) */
  inputs: (Float32Array | null)[];
}

async function traced(engine: Engine, request: GenerateRequest): Promise<Trace> {
  const model = engine.model;
  const original = model.forward;
  const logits: Float32Array[] = [];
  const inputs: (Float32Array | null)[] = [];
  model.forward = (input: ForwardInput, opts?: ForwardOptions): tf.Tensor3D => {
    if (opts?.lastOnly === false) throw new Error('unexpected');
    const out = original.call(model, input, opts);
    if ((input as { ids?: number[][] }).ids && logits.length > 0) throw new Error('decode steps must feed embeddings');
    inputs.push('embeds' in input && input.embeds ? Float32Array.from(input.embeds.dataSync() as Float32Array) : null);
    const [, T, V] = out.shape;
    const last = tf.slice(out, [0, T - 1, 0], [1, 1, V]);
    logits.push(Float32Array.from(last.dataSync() as Float32Array));
    last.dispose();
    return out;
  };
  try {
    const { events, done } = await generateOne(engine, request);
    return { events, tokens: done.tokens, logits, inputs };
  } finally {
    delete (model as { forward?: unknown }).forward;
  }
}

function assertEmbedClose(got: Float32Array, want: number[], tol: number, what: string): void {
  assert.equal(got.length, want.length, `${what}: width`);
  let d = 0;
  for (let j = 0; j < want.length; j++) d = Math.max(d, Math.abs(got[j] - want[j]));
  assert.ok(d <= tol, `${what}: next input differs from Σ w E by ${d} > ${tol}`);
}

describe('soft: Soft Thinking end to end (wasm)', function () {
  const engines = new Map<string, { engine: Engine; E: Float32Array[] }>();
  const load = async (name: string) => {
    let e = engines.get(name);
    if (!e) {
      const dir = path.join(fixturesRoot!, name);
      const engine = await Engine.load(dir, { backend: 'wasm' });
      const st = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
      const [V, H] = st.info('model.embed_tokens.weight').shape;
      const flat = st.readFloat32('model.embed_tokens.weight');
      st.close();
      e = { engine, E: Array.from({ length: V }, (_, i) => flat.slice(i * H, (i + 1) * H)) };
      engines.set(name, e);
    }
    return e;
  };
  const savedBeta = process.env.MIXINPUTS_BETA;

  before(async function () {
    if (!fixturesRoot) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    delete process.env.MIXINPUTS_BETA;
    await initBackend({ backend: 'wasm' });
  });
  after(() => {
    for (const e of engines.values()) e.engine.dispose();
    if (savedBeta !== undefined) process.env.MIXINPUTS_BETA = savedBeta;
  });

  const PROMPTS: Record<string, number[]> = { stories260K: [1, 403, 407, 261, 378], llama: [1, 499, 377, 390, 368] };
  const THINK: Filters = { temperature: 0.6, topK: 30, topP: 0.95, minP: 0.001 };
  const AFTER: Filters = { temperature: 0.8, topK: 20, topP: 0.9, minP: 0.01 };

  const softRequest = (name: string, n: number, soft: SoftOptions, seed = 11, maxTopk?: number): GenerateRequest => ({
    promptIds: PROMPTS[name],
    maxTokens: n,
    ignoreEos: true,
    sampling: { temperature: THINK.temperature, topK: THINK.topK, topP: THINK.topP, minP: THINK.minP, seed },
    mix: { mode: 'soft', topK: maxTopk, soft: { afterThinking: AFTER, ...soft } },
  });

  /**
   * Check a traced soft run step by step against float64: thinking steps (S, token, Σ w E), the
   * think-end step (reason, one-hot E[think-end]) and the after-thinking steps (inverse CDF at the
   * sampler's draws). Returns the step thinking ended at, or null.
   */
  function checkTrace(
    t: Trace,
    E: Float32Array[],
    o: { thinkEnd: number; coldStop?: { threshold: number; steps: number }; seed: number; maxTopk?: number },
  ): number | null {
    const rng = createRng(o.seed);
    const maxTopk = o.maxTopk ?? 10;
    let low = 0;
    let ended: number | null = null;
    for (let s = 0; s < t.tokens.length; s++) {
      const u = uniformOpenClosed24(rng); // the sampler draws every step (its settings are the after-thinking ones)
      const ev = t.events[s];
      const next = t.inputs[s + 1] ?? null; // the input of the next forward (none after the last step)
      if (ended === null) {
        const ref = softStep(t.logits[s], THINK, maxTopk);
        assert.ok(
          Math.abs(ev.mix!.entropy - ref.S) <= 1e-4 * Math.max(1, ref.S),
          `step ${s}: S ${ev.mix!.entropy} vs ${ref.S}`,
        );
        assert.equal(ev.mix!.soft?.phase, 'thinking', `step ${s}: phase`);
        let expectToken = ref.ids[0];
        let reason: string | null = null;
        if (o.coldStop) {
          low = ref.S < o.coldStop.threshold ? low + 1 : 0;
          if (low >= o.coldStop.steps) {
            expectToken = o.thinkEnd;
            reason = 'cold_stop';
          }
        }
        if (reason === null && expectToken === o.thinkEnd) reason = 'argmax';
        assert.equal(ev.token, expectToken, `step ${s}: recorded token`);
        assert.equal(ev.mix!.soft?.thinkEnd ?? null, reason, `step ${s}: think-end reason`);
        if (reason !== null) {
          ended = s;
          if (next)
            assert.deepEqual(
              Array.from(next),
              Array.from(E[o.thinkEnd]),
              `step ${s}: the next input is exactly E[think-end]`,
            );
        } else if (next) {
          const want = E[0].map((_, j) => ref.ids.reduce((a, id, k) => a + ref.w[k] * E[id][j], 0));
          assertEmbedClose(next, Array.from(want), 1e-5, `step ${s}`);
          assert.ok(Math.abs(ev.mix!.weight - ref.w[0]) < 1e-5, `step ${s}: weight on the recorded token`);
          assert.equal(ev.mix!.candidates, ref.ids.length, `step ${s}: candidates`);
        }
      } else {
        assert.deepEqual(ev.mix!.soft, { phase: 'answer', entropy: null, thinkEnd: null }, `step ${s}: after thinking`);
        assert.equal(ev.token, sampleAt(t.logits[s], AFTER, u), `step ${s}: after-thinking sample`);
        if (next)
          assert.deepEqual(Array.from(next), Array.from(E[ev.token]), `step ${s}: one-hot input after thinking`);
      }
    }
    return ended;
  }

  for (const name of ['stories260K', 'llama']) {
    describe(name, function () {
      const N = 24;
      let base: Trace;
      let E: Float32Array[];
      let engine: Engine;
      /** an id never recorded in the base run: thinking does not end */
      let unused: number;

      before(async function () {
        ({ engine, E } = await load(name));
        // a pilot run to find ids that are (not) recorded; the check below validates it fully
        const pilot = await generateOne(engine, softRequest(name, N, { thinkEndId: 0 }));
        unused = Array.from({ length: 512 }, (_, i) => i).find((i) => i > 3 && !pilot.done.tokens.includes(i))!;
        base = await traced(engine, softRequest(name, N, { thinkEndId: unused }));
      });

      it('every soft step equals the float64 definition (S, recorded token, Σ w E)', function () {
        assert.equal(checkTrace(base, E, { thinkEnd: unused, seed: 11 }), null, 'thinking did not end');
        assert.ok(
          base.events.some((e) => e.mix!.candidates > 1),
          'some steps really mix several candidates',
        );
      });

      it('think-end by argmax: the soft phase ends there, the next input is one-hot, then after-thinking sampling', async function () {
        const k = Math.min(6, N - 8);
        const id = base.tokens[k];
        const first = base.tokens.indexOf(id);
        const t = await traced(engine, softRequest(name, N, { thinkEndId: id }));
        assert.equal(checkTrace(t, E, { thinkEnd: id, seed: 11 }), first);
        assert.deepEqual(
          t.tokens.slice(0, first + 1),
          base.tokens.slice(0, first + 1),
          'the same soft phase up to think-end',
        );
      });

      it('traces show the soft phase: the slots and weights of the float64 definition, and where thinking ended', async function () {
        const k = Math.min(6, N - 8);
        const id = base.tokens[k];
        const first = base.tokens.indexOf(id);
        const t = await traced(engine, { ...softRequest(name, N, { thinkEndId: id }), trace: 12 });
        const V = t.logits[0].length;
        assert.ok(
          first > 0 && t.events.slice(0, first).some((e) => e.trace!.candidates.length > 1),
          'the soft phase mixes several slots before it ends',
        );
        const texts = traceTexts(engine, PROMPTS[name]);
        for (let s = 0; s < t.tokens.length; s++) {
          const tr = t.events[s].trace!;
          const step = traceStep(texts, t.events[s]);
          if (s < first) {
            const ref = softStep(t.logits[s], THINK, 10);
            // p at the soft temperature, from the definition
            const x = Array.from(t.logits[s], (v) => v / THINK.temperature);
            const m = Math.max(...x);
            const z = x.reduce((a, v) => a + Math.exp(v - m), 0);
            assert.deepEqual(
              tr.candidates.map((c) => c.id),
              ref.ids,
              `step ${s}: the slots, heaviest first`,
            );
            tr.candidates.forEach((c, j) => {
              assert.ok(Math.abs(c.w - ref.w[j]) <= 1e-5, `step ${s}: w of slot ${j}: ${c.w} vs ${ref.w[j]}`);
              assert.ok(Math.abs(c.p - Math.exp(x[c.id] - m) / z) <= 1e-5, `step ${s}: p of slot ${j}`);
            });
            assert.ok(Math.abs(tr.weight - ref.w[0]) <= 1e-5, `step ${s}: w_y`);
            assert.ok(Math.abs(tr.entropy - Math.min(1, ref.S / Math.log(V))) <= 1e-5, `step ${s}: H = S / ln V`);
            assert.equal(step.phase, 'thinking');
            assert.equal(step.thinkEnd, undefined);
          } else if (s === first) {
            assert.deepEqual(
              tr.candidates.map((c) => [c.id, c.w]),
              [[id, 1]],
              'the think-end step feeds E[think-end] alone',
            );
            assert.equal(tr.weight, 1);
            assert.equal(step.phase, 'thinking');
            assert.equal(step.thinkEnd, 'argmax');
          } else {
            assert.equal(step.phase, 'answer', `step ${s}: after thinking`);
            assert.equal(tr.weight, 1, `step ${s}: a sampled token, one-hot`);
          }
        }
      });

      it('cold stop: one that fires (step 0 counts) and one that does not', async function () {
        const S = base.tokens.map((_, s) => softStep(base.logits[s], THINK, 10).S);
        // fires: a threshold above S_0..S_2 with margin, 3 steps → think-end at step 2 exactly
        const thr = Math.max(S[0], S[1], S[2]) * 1.01 + 1e-6;
        const firing = await traced(
          engine,
          softRequest(name, N, { thinkEndId: unused, coldStopEntropy: thr, coldStopSteps: 3 }),
        );
        const at = checkTrace(firing, E, { thinkEnd: unused, coldStop: { threshold: thr, steps: 3 }, seed: 11 });
        assert.equal(at, 2, 'counted from step 0');
        assert.equal(firing.events[2].mix!.soft!.thinkEnd, 'cold_stop');
        // does not fire: a threshold under which some steps are low, but never `steps` in a row
        const sorted = [...S].sort((a, b) => a - b);
        const mid = Math.floor(sorted.length / 2);
        const thr2 = (sorted[mid - 1] + sorted[mid]) / 2;
        let run = 0;
        let longest = 0;
        for (const v of S) {
          run = v < thr2 ? run + 1 : 0;
          longest = Math.max(longest, run);
        }
        assert.ok(longest >= 1, 'some low steps');
        const quiet = await traced(
          engine,
          softRequest(name, N, { thinkEndId: unused, coldStopEntropy: thr2, coldStopSteps: longest + 1 }),
        );
        assert.equal(
          checkTrace(quiet, E, { thinkEnd: unused, coldStop: { threshold: thr2, steps: longest + 1 }, seed: 11 }),
          null,
        );
        assert.deepEqual(quiet.tokens, base.tokens);
      });

      it('greedy equivalence: max_topk 1, or one candidate left, equals standard greedy and the reference', async function () {
        const ref = JSON.parse(readFileSync(path.join(fixturesRoot!, name, 'reference.json'), 'utf8')) as {
          cases: { input_ids: number[]; greedy: { tokens: number[] } }[];
        };
        const c = ref.cases[ref.cases.length - 1];
        const n = Math.min(32, c.greedy.tokens.length);
        const req = (
          mix: GenerateRequest['mix'],
          sampling: GenerateRequest['sampling'] = { temperature: 0 },
        ): GenerateRequest => ({ promptIds: c.input_ids, maxTokens: n, ignoreEos: true, sampling, mix });
        const standard = await generateOne(engine, req({ mode: 'standard' }));
        assert.deepEqual(standard.done.tokens, c.greedy.tokens.slice(0, n), 'standard greedy = reference');
        // think-end = the 5th greedy token: after it, greedy sampling (after-thinking temperature 0) continues
        const soft = (mix: SoftOptions, maxTopk?: number, sampling?: GenerateRequest['sampling']) =>
          generateOne(
            engine,
            req(
              {
                mode: 'soft',
                topK: maxTopk,
                soft: { thinkEndId: c.greedy.tokens[4], afterThinking: { temperature: 0 }, ...mix },
              },
              sampling,
            ),
          );
        const top1 = await soft({}, 1, { temperature: 0.6, seed: 1 });
        assert.deepEqual(top1.done.tokens, standard.done.tokens, 'max_topk 1');
        assert.ok(top1.events.every((e) => e.mix!.weight === 1));
        const oneLeft = await soft({}, 10, { temperature: 1, topP: 1e-3 });
        assert.deepEqual(oneLeft.done.tokens, standard.done.tokens, 'top-p leaves one candidate');
        assert.equal(oneLeft.events[4].mix!.soft!.thinkEnd, 'argmax');
      });
    });
  }

  it('a batch of soft, moi, standard and noisy soft rows: each row equals that row alone', async function () {
    const { engine } = await load('stories260K');
    const p = PROMPTS.stories260K;
    const requests: GenerateRequest[] = [
      softRequest('stories260K', 20, { thinkEndId: 267 }),
      {
        promptIds: [1, 403],
        maxTokens: 12,
        sampling: { temperature: 0.7, seed: 3 },
        ignoreEos: true,
        mix: { mode: 'moi', beta: 1 },
      },
      {
        promptIds: p.slice(0, 3),
        maxTokens: 16,
        sampling: { temperature: 0 },
        ignoreEos: true,
        mix: { mode: 'standard' },
      },
      softRequest('stories260K', 18, { thinkEndId: 267, noise: 'gumbel', gumbelTau: 0.7 }, 5),
      softRequest('stories260K', 14, { thinkEndId: 267, noise: 'dirichlet', dirichletAlpha: 3 }, 9),
    ];
    const rows: TokenEvent[][] = requests.map(() => []);
    for await (const e of generate(engine, requests)) if (e.type === 'token') rows[e.row].push(e);
    for (let r = 0; r < requests.length; r++) {
      const alone = await generateOne(engine, requests[r]);
      assert.deepEqual(
        rows[r].map((e) => e.token),
        alone.events.map((e) => e.token),
        `row ${r} tokens`,
      );
      // (a batched forward differs from a single-row one in float32 rounding: diagnostics to 1e-4)
      rows[r].forEach((e, s) => {
        const m = e.mix;
        const want = alone.events[s].mix;
        if (!m || !want) return assert.equal(m, want, `row ${r} step ${s}: standard rows report no mixing`);
        assert.equal(m.candidates, want.candidates, `row ${r} step ${s} candidates`);
        assert.ok(Math.abs(m.weight - want.weight) <= 1e-4, `row ${r} step ${s} weight`);
        assert.ok(
          Object.is(m.entropy, want.entropy) || Math.abs(m.entropy - want.entropy) <= 1e-4,
          `row ${r} step ${s} entropy`,
        );
        assert.deepEqual(
          m.soft && { ...m.soft, entropy: null },
          want.soft && { ...want.soft, entropy: null },
          `row ${r} step ${s} phase`,
        );
      });
    }
    assert.ok(
      rows[0].some((e) => e.mix!.soft!.thinkEnd === 'argmax'),
      'row 0 ends thinking inside the batch',
    );
  });

  it('seeded noise is reproducible; another seed or none gives other inputs', async function () {
    const { engine } = await load('stories260K');
    for (const noise of ['gumbel', 'dirichlet']) {
      const run = (seed?: number) =>
        generateOne(engine, {
          ...softRequest('stories260K', 16, { thinkEndId: 2, noise }, seed ?? 0),
          sampling: { seed },
        });
      const a = await run(21);
      const b = await run(21);
      const c = await run(22);
      const d = await run(undefined);
      const weights = (r: typeof a) => r.events.map((e) => e.mix!.weight);
      assert.deepEqual(a.done.tokens, b.done.tokens, `${noise}: same seed, same tokens`);
      assert.deepEqual(weights(a), weights(b), `${noise}: same seed, same weights`);
      assert.notDeepEqual(weights(a), weights(c), `${noise}: another seed`);
      assert.notDeepEqual(weights(a), weights(d), `${noise}: no seed`);
    }
  });

  it('the think-end token: "</think>" from a real tokenizer, a given id, typed errors otherwise', async function () {
    const qwen3 = loadTokenizer(path.join(shared!, 'tokenizers', 'qwen3'));
    const plan = planRowMix({ mode: 'soft' }, {}, { tokenizer: qwen3 });
    assert.equal(plan.settings.soft!.thinkEndId, 151668);
    assert.equal(qwen3.decode([151668]), '</think>');
    assert.deepEqual(
      plan.sampling,
      { temperature: 0.6, topK: 30, topP: 0.95, minP: 0 },
      'the sampler gets the after-thinking settings',
    );
    assert.deepEqual(plan.settings.soft!.thinking, { temperature: 0.6, topK: 30, topP: 0.95, minP: 0.001 });
    // the request's own filters are the soft phase's
    assert.deepEqual(
      planRowMix({ mode: 'soft' }, { temperature: 0.9, topK: 5 }, { tokenizer: qwen3 }).settings.soft!.thinking,
      { temperature: 0.9, topK: 5, topP: 0.95, minP: 0.001 },
    );
    const refuses = (f: () => unknown, re: RegExp) =>
      assert.throws(f, (e: unknown) => e instanceof MoiError && e.code === 'E_MOI' && re.test(e.message));
    const llama2 = loadTokenizer(path.join(shared!, 'tokenizers', 'llama2'));
    refuses(
      () => planRowMix({ mode: 'soft' }, {}, { tokenizer: llama2 }),
      /no token for the think-end text '<\/think>'.*think-end-id/,
    );
    refuses(() => planRowMix({ mode: 'soft' }, {}, { tokenizer: null }), /no tokenizer.*think-end/);
    assert.equal(
      planRowMix({ mode: 'soft', soft: { thinkEndId: 7 } }, {}, { tokenizer: null }).settings.soft!.thinkEndId,
      7,
    );
    // through generate: stories260K's tokenizer has no </think>; the error comes before any work
    const { engine } = await load('stories260K');
    const n0 = tf.memory().numTensors;
    await assert.rejects(
      generateOne(engine, { promptIds: [1, 2], mix: { mode: 'soft' } }),
      (e: unknown) => e instanceof MoiError && e.code === 'E_MOI',
    );
    assert.equal(tf.memory().numTensors, n0);
  });

  it('one device→host read per decode step with soft rows (alone and batched with moi)', async function () {
    const { engine } = await load('llama');
    let reads = 0;
    const proto = tf.Tensor.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
    const keys = ['dataSync', 'data', 'array', 'arraySync', 'bufferSync', 'buffer'];
    const saved = keys.map((k) => proto[k]);
    let depth = 0;
    keys.forEach((k, i) => {
      proto[k] = function (this: unknown, ...a: unknown[]) {
        if (depth === 0) reads++;
        depth++;
        try {
          const r = saved[i].apply(this, a);
          if (r instanceof Promise)
            return r.finally(() => {
              depth--;
            });
          depth--;
          return r;
        } catch (e) {
          depth--;
          throw e;
        }
      };
    });
    try {
      const n = 12;
      reads = 0;
      const one = await generateOne(engine, softRequest('llama', n, { thinkEndId: 5, noise: 'dirichlet' }));
      assert.equal(one.done.tokens.length, n);
      assert.equal(reads, n, 'soft alone');
      reads = 0;
      let steps = 0;
      for await (const e of generate(engine, [
        softRequest('llama', n, { thinkEndId: 5 }),
        { promptIds: [1, 2, 3], maxTokens: n, ignoreEos: true, mix: { mode: 'moi' } },
      ])) {
        if (e.type === 'token' && e.row === 0) steps++;
      }
      assert.equal(steps, n);
      assert.equal(reads, n, 'soft beside moi');
    } finally {
      keys.forEach((k, i) => {
        proto[k] = saved[i];
      });
    }
  });

  it('no tensor leaks over 500 soft steps, nor when aborted mid-thinking', async function () {
    const { engine } = await load('stories260K');
    const req = (n: number, soft: SoftOptions = {}) =>
      softRequest('stories260K', n, { thinkEndId: 2, coldStopEntropy: 1e-9, coldStopSteps: 1000, ...soft });
    await generateOne(engine, req(4)); // warm-up
    const count = tf.memory().numTensors;
    const long = await generateOne(engine, req(500));
    assert.equal(long.done.tokens.length, 500);
    assert.ok(
      long.events.every((e) => e.mix!.soft!.phase === 'thinking'),
      'all 500 steps in the soft phase',
    );
    assert.equal(tf.memory().numTensors, count, 'after 500 soft steps');
    const abort = new AbortController();
    let seen = 0;
    let reason = '';
    for await (const e of generate(engine, [req(200, { noise: 'gumbel' }), req(200)], { signal: abort.signal })) {
      if (e.type === 'token' && ++seen === 20) abort.abort();
      if (e.type === 'done') reason = e.finishReason;
    }
    assert.equal(reason, 'abort');
    assert.equal(tf.memory().numTensors, count, 'after an abort mid-thinking');
  });
});
