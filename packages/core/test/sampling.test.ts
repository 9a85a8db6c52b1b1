/**
 * Sampler tests against hand-computed distributions (cpu backend for exactness; one block on
 * wasm). Expected values come from double-precision arithmetic written out here, not from the
 * code under test.
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, MoiError, UsageError } from '@moi/core';
import {
  applyChain,
  buildChain,
  createContext,
  createRng,
  DEFAULT_SAMPLING,
  resolveSamplingParams,
  sample,
  splitmix64,
  Sampler,
  uniformOpenClosed24,
  Xoshiro128ss,
  type Rng,
  type RowState,
  type SampleResult,
  type SamplingParams,
} from '../src/index.ts';

// ---------------------------------------------------------------- helpers

function params(partial: Partial<SamplingParams> = {}): SamplingParams {
  return resolveSamplingParams(partial);
}

function rowState(
  partial: Partial<SamplingParams> = {},
  history: { prompt?: number[]; generated?: number[] } = {},
): RowState {
  const p = params(partial);
  return {
    params: p,
    rng: createRng(p.seed ?? 0),
    promptIds: history.prompt ?? [],
    generatedIds: history.generated ?? [],
  };
}

/** Run one sampling call and read everything back (tests only), disposing the result. */
function run(logits: number[][], rows: RowState[]) {
  const x = tf.tensor2d(logits);
  const r: SampleResult = sample(x, rows);
  const out = {
    ids: Array.from(r.ids.dataSync()),
    processed: r.processedLogits.arraySync() as number[][],
    chosen: r.logprobs ? Array.from(r.logprobs.chosen.dataSync()) : undefined,
    topIds: r.logprobs?.topIds?.arraySync() as number[][] | undefined,
    topLogprobs: r.logprobs?.topLogprobs?.arraySync() as number[][] | undefined,
    idsDtype: r.ids.dtype,
  };
  tf.dispose([x, r as unknown as tf.TensorContainer]);
  return out;
}

/** Processed logits of a single row. */
function processRow(
  logits: number[],
  partial: Partial<SamplingParams>,
  history: { prompt?: number[]; generated?: number[] } = {},
): number[] {
  return run([logits], [rowState(partial, history)]).processed[0];
}

/** Indices whose processed logit survived (is finite). */
function survivors(row: number[]): number[] {
  return row.flatMap((v, i) => (Number.isFinite(v) ? [i] : []));
}

const f32 = (v: number) => Math.fround(v);

function assertClose(actual: number[], expected: number[], tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  actual.forEach((a, i) => {
    const e = expected[i];
    if (!Number.isFinite(e)) assert.equal(a, e, `${what}[${i}]`);
    else assert.ok(Math.abs(a - e) <= tol, `${what}[${i}]: ${a} vs ${e}`);
  });
}

/** log-softmax in double precision. */
function logSoftmax(x: number[]): number[] {
  const m = Math.max(...x);
  const lse = m + Math.log(x.reduce((s, v) => s + Math.exp(v - m), 0));
  return x.map((v) => v - lse);
}

/** A fixed pseudo-random logits matrix (values in [-4, 4)) for batch tests. */
function randomLogits(batch: number, vocab: number, seed: number): number[][] {
  const rng = createRng(seed);
  return Array.from({ length: batch }, () => Array.from({ length: vocab }, () => rng.nextFloat() * 8 - 4));
}

// Probabilities [0.5, 0.2, 0.15, 0.1, 0.05], stored shuffled so masks must map back to the right ids:
// id 1 → 0.5, id 3 → 0.2, id 4 → 0.15, id 0 → 0.1, id 2 → 0.05.
const PROBS = [0.1, 0.5, 0.05, 0.2, 0.15];
const LOGITS = PROBS.map(Math.log);

// ---------------------------------------------------------------- tests

describe('sampling', function () {
  before(async function () {
    await initBackend({ backend: 'cpu' });
  });

  describe('params', function () {
    it('defaults are vLLM-like: temperature 1, filters and penalties off', function () {
      assert.deepEqual(resolveSamplingParams({}), {
        temperature: 1,
        topK: 0,
        topP: 1,
        minP: 0,
        repetitionPenalty: 1,
        presencePenalty: 0,
        frequencyPenalty: 0,
      });
      assert.deepEqual(resolveSamplingParams(), { ...DEFAULT_SAMPLING });
    });

    it('request values win over generation_config.json, which wins over the defaults', function () {
      const gc = { temperature: 0.6, top_p: 0.9, top_k: 20, min_p: null, do_sample: true, bos_token_id: 1 };
      const p = resolveSamplingParams({ temperature: 0, seed: 7, topP: undefined }, gc);
      assert.deepEqual(p, {
        temperature: 0,
        topK: 20,
        topP: 0.9,
        minP: 0,
        repetitionPenalty: 1,
        presencePenalty: 0,
        frequencyPenalty: 0,
        seed: 7,
      });
    });

    const bad: [Partial<SamplingParams> | Record<string, unknown>, string][] = [
      [{ temperature: NaN }, 'temperature'],
      [{ temperature: -0.1 }, 'temperature'],
      [{ temperature: Infinity }, 'temperature'],
      [{ temperature: '0.5' }, 'temperature'],
      [{ topP: 0 }, 'topP'],
      [{ topP: 1.01 }, 'topP'],
      [{ topP: NaN }, 'topP'],
      [{ minP: -0.01 }, 'minP'],
      [{ minP: 1.5 }, 'minP'],
      [{ topK: -1 }, 'topK'],
      [{ topK: 2.5 }, 'topK'],
      [{ repetitionPenalty: 0 }, 'repetitionPenalty'],
      [{ repetitionPenalty: -1 }, 'repetitionPenalty'],
      [{ presencePenalty: 2.5 }, 'presencePenalty'],
      [{ frequencyPenalty: -3 }, 'frequencyPenalty'],
      [{ frequencyPenalty: NaN }, 'frequencyPenalty'],
      [{ seed: 1.5 }, 'seed'],
      [{ logprobs: -1 }, 'logprobs'],
      [{ logprobs: 0.5 }, 'logprobs'],
    ];
    for (const [partial, field] of bad) {
      it(`refuses ${Object.entries(partial)
        .map(([k, v]) => `${k}=${typeof v === 'string' ? `'${v}'` : v}`)
        .join()} with E_SAMPLING naming ${field}`, function () {
        assert.throws(
          () => resolveSamplingParams(partial as Partial<SamplingParams>),
          (err: unknown) =>
            err instanceof UsageError &&
            err instanceof MoiError &&
            err.code === 'E_SAMPLING' &&
            err.message.includes(`sampling.${field}`),
        );
      });
    }

    it('names the generation_config.json key when the bad value comes from there', function () {
      assert.throws(
        () => resolveSamplingParams({}, { top_p: 0 }),
        (err: unknown) =>
          err instanceof UsageError &&
          err.code === 'E_SAMPLING' &&
          err.message.includes('generation_config.json top_p'),
      );
      // a request value does not rescue an invalid file value: the file is checked as read
      assert.throws(() => resolveSamplingParams({ topP: 0.5 }, { repetition_penalty: -1 }), /repetition_penalty/);
    });
  });

  describe('rng', function () {
    it('splitmix64 matches its published first outputs for seed 0', function () {
      const next = splitmix64(0n);
      assert.equal(next(), 0xe220a8397b1dcdafn);
      assert.equal(next(), 0x6e789e6aa1b965f4n);
      assert.equal(next(), 0x06c45d188009454fn);
    });

    it('xoshiro128** matches a hand-computed run from state [1,2,3,4]', function () {
      const r = new Xoshiro128ss([1, 2, 3, 4]);
      // out = rotl(s1*5, 7)*9: s1=2 → 11520; then the state update (worked through by hand)
      assert.deepEqual([r.nextUint32(), r.nextUint32(), r.nextUint32(), r.nextUint32()], [11520, 0, 5927040, 70819200]);
    });

    it('same seed → same stream; different seeds and unseeded generators differ; draws lie in (0, 1]', function () {
      const a = createRng(123),
        b = createRng(123),
        c = createRng(124),
        d = createRng(),
        e = createRng();
      const take = (r: ReturnType<typeof createRng>) => Array.from({ length: 20 }, () => r.nextUint32());
      const sa = take(a);
      assert.deepEqual(take(b), sa);
      assert.notDeepEqual(take(c), sa);
      assert.notDeepEqual(take(d), take(e));
      const r = createRng(-5);
      let sum = 0;
      for (let i = 0; i < 4000; i++) {
        const u = uniformOpenClosed24(r);
        assert.ok(u > 0 && u <= 1 && Math.fround(u) === u, `u=${u}`);
        sum += u;
      }
      assert.ok(Math.abs(sum / 4000 - 0.5) < 0.015, `mean ${sum / 4000}`); // σ of the mean ≈ 0.0046
    });
  });

  describe('filters', function () {
    const cases: [string, Partial<SamplingParams>, number[]][] = [
      ['top-k 2', { topK: 2 }, [1, 3]],
      ['top-k 1', { topK: 1 }, [1]],
      ['top-k 4', { topK: 4 }, [0, 1, 3, 4]],
      ['top-k 5 (= V, off)', { topK: 5 }, [0, 1, 2, 3, 4]],
      ['top-k 9 (> V, off)', { topK: 9 }, [0, 1, 2, 3, 4]],
      ['top-p 0.7 (0.5 + 0.2 reach it exactly)', { topP: 0.7 }, [1, 3]],
      ['top-p 0.71', { topP: 0.71 }, [1, 3, 4]],
      ['top-p 0.5', { topP: 0.5 }, [1]],
      ['top-p 0.3 (top token always kept)', { topP: 0.3 }, [1]],
      ['top-p 1e-9', { topP: 1e-9 }, [1]],
      ['top-p 0.86', { topP: 0.86 }, [0, 1, 3, 4]],
      ['top-p 0.96', { topP: 0.96 }, [0, 1, 2, 3, 4]],
      ['top-p 1', { topP: 1 }, [0, 1, 2, 3, 4]],
      ['min-p 0.3 (keep ≥ 0.15)', { minP: 0.3 }, [1, 3, 4]],
      ['min-p 0.31 (keep ≥ 0.155)', { minP: 0.31 }, [1, 3]],
      ['min-p 0.4 (keep ≥ 0.2)', { minP: 0.4 }, [1, 3]],
      ['min-p 0.41', { minP: 0.41 }, [1]],
      ['min-p 0.1 (keep ≥ 0.05)', { minP: 0.1 }, [0, 1, 2, 3, 4]],
      ['min-p 1', { minP: 1 }, [1]],
      // HF order: top-k first, then top-p on the renormalized survivors [0.5, 0.2, 0.15]/0.85:
      // mass before the third = 0.7/0.85 = 0.8235 ≥ 0.8 → two survive (top-p alone would keep three)
      ['top-k 3 then top-p 0.8', { topK: 3, topP: 0.8 }, [1, 3]],
      ['top-p 0.8 alone', { topP: 0.8 }, [1, 3, 4]],
      // temperature before top-p: T=2 → q ∝ sqrt(p) = [.3397 .2149 .1861 .1519 .1074] (sorted);
      // masses before each: 0, .3397, .5546, .7407 → p=0.7 keeps three
      ['temperature 2 then top-p 0.7', { temperature: 2, topP: 0.7 }, [1, 3, 4]],
      // temperature before min-p: T=2 → ratio sqrt(0.1/0.5) = 0.447 ≥ 0.4 survives, sqrt(0.05/0.5) = 0.316 does not
      ['temperature 2 then min-p 0.4', { temperature: 2, minP: 0.4 }, [0, 1, 3, 4]],
    ];
    for (const [name, partial, expected] of cases) {
      it(`${name} keeps ids ${expected.join(',')}`, function () {
        const out = processRow(LOGITS, partial);
        assert.deepEqual(survivors(out), expected);
        // survivors keep their (temperature-scaled) value; the rest are -Infinity
        const t = partial.temperature ?? 1;
        out.forEach((v, i) => assert.equal(v, expected.includes(i) ? f32(f32(LOGITS[i]) / t) : -Infinity, `id ${i}`));
      });
    }

    it('ties: top-k and top-p keep the lower ids; min-p keeps all tied tokens', function () {
      const tied = [1, 3, 3, 3, 0];
      assert.deepEqual(survivors(processRow(tied, { topK: 2 })), [1, 2]);
      assert.deepEqual(survivors(processRow(tied, { topK: 1 })), [1]);
      const flat = [0, 0, 0, 0];
      // masses before: 0, .25, .5, .75 → p = 0.5 keeps two, the lowest ids
      assert.deepEqual(survivors(processRow(flat, { topP: 0.5 })), [0, 1]);
      assert.deepEqual(survivors(processRow(tied, { minP: 1 })), [1, 2, 3]);
    });

    it('the chain holds only the processors some row uses, in HF order', function () {
      const names = (ps: Partial<SamplingParams>[]) => buildChain(ps.map(params), 10).map((f) => f.name);
      assert.deepEqual(names([{}]), []);
      assert.deepEqual(names([{ temperature: 0 }, { temperature: 1, topK: 10 }]), []);
      assert.deepEqual(
        names([
          { minP: 0.1 },
          { topP: 0.9, temperature: 0.5 },
          { topK: 3, repetitionPenalty: 1.1, frequencyPenalty: 0.1 },
        ]),
        ['repetitionPenalty', 'presenceFrequencyPenalty', 'temperature', 'topK', 'topP', 'minP'],
      );
    });
  });

  describe('penalties and temperature', function () {
    it('repetition penalty divides positive and multiplies negative logits of prompt and generated ids', function () {
      const logits = [2, -2, 1, 0.5, -1, 0];
      const out = processRow(logits, { repetitionPenalty: 2 }, { prompt: [0, 5], generated: [1, 1, 0] });
      // ids 0 (2 → 1), 1 (-2 → -4), 5 (0 → 0) are penalized; 2, 3, 4 untouched
      assert.deepEqual(out, [1, -4, 1, 0.5, -1, 0]);
    });

    it('presence and frequency penalties count generated ids only', function () {
      const logits = [1, 1, 1, 1, 1];
      const out = processRow(
        logits,
        { presencePenalty: 0.5, frequencyPenalty: 0.25 },
        { prompt: [0, 0, 4], generated: [2, 2, 3, 2] },
      );
      // id 2: count 3 → 1 - 0.5 - 0.75 = -0.25; id 3: count 1 → 1 - 0.5 - 0.25 = 0.25; prompt-only ids untouched
      assertClose(out, [1, 1, -0.25, 0.25, 1], 1e-6, 'penalized');
      // negative penalties reward instead
      assertClose(
        processRow(logits, { presencePenalty: -1 }, { generated: [4] }),
        [1, 1, 1, 1, 2],
        1e-6,
        'negative presence',
      );
    });

    it('repetition penalty comes before presence/frequency, then temperature', function () {
      const logits = [2, -2, 3];
      const out = processRow(
        logits,
        { repetitionPenalty: 2, presencePenalty: 0.5, frequencyPenalty: 0.25, temperature: 0.5 },
        { prompt: [2], generated: [0, 0, 1] },
      );
      // id 0: 2/2 = 1, -0.5 -0.5 = 0, /0.5 = 0; id 1: -2*2 = -4, -0.5 -0.25 = -4.75, /0.5 = -9.5; id 2 (prompt): 3/2 = 1.5, /0.5 = 3
      assertClose(out, [0, -9.5, 3], 1e-6, 'chained');
    });

    it('temperature divides the logits; greedy rows keep them as they are', function () {
      assertClose(processRow([1, 2, 3], { temperature: 0.5 }), [2, 4, 6], 1e-6, 'T=0.5');
      assertClose(processRow([1, 2, 3], { temperature: 4 }), [0.25, 0.5, 0.75], 1e-6, 'T=4');
      assert.deepEqual(processRow([1, 2, 3], { temperature: 0 }), [1, 2, 3]);
    });

    it('greedy picks the argmax, and penalties can move it as computed by hand', function () {
      const logits = [3, 2.5, 1, -1];
      assert.deepEqual(run([logits], [rowState({ temperature: 0 })]).ids, [0]);
      // 3 / 1.5 = 2 < 2.5 → id 1
      assert.deepEqual(run([logits], [rowState({ temperature: 0, repetitionPenalty: 1.5 }, { prompt: [0] })]).ids, [1]);
      // presence 0.3 + 2×frequency 0.2 = 0.7: 3 - 0.7 = 2.3 < 2.5 → id 1; a prompt occurrence alone does nothing
      assert.deepEqual(
        run(
          [logits],
          [rowState({ temperature: 0, presencePenalty: 0.3, frequencyPenalty: 0.2 }, { generated: [0, 0] })],
        ).ids,
        [1],
      );
      assert.deepEqual(
        run([logits], [rowState({ temperature: 0, presencePenalty: 0.3, frequencyPenalty: 0.2 }, { prompt: [0, 0] })])
          .ids,
        [0],
      );
      // ties: the lower id
      assert.deepEqual(run([[0, 5, 5]], [rowState({ temperature: 0 })]).ids, [1]);
    });

    it('refuses history ids outside the vocabulary with E_SAMPLING', function () {
      assert.throws(
        () => processRow([0, 1], { repetitionPenalty: 1.2 }, { prompt: [2] }),
        (e: unknown) => e instanceof UsageError && e.code === 'E_SAMPLING' && /promptIds/.test(e.message),
      );
      assert.throws(
        () => processRow([0, 1], { frequencyPenalty: 1 }, { generated: [-1] }),
        (e: unknown) => e instanceof UsageError && e.code === 'E_SAMPLING' && /generatedIds/.test(e.message),
      );
    });
  });

  describe('sampling', function () {
    it('a mixed batch gives each row what it would get alone', function () {
      const V = 40;
      const configs: { p: Partial<SamplingParams>; prompt: number[] }[] = [
        { p: { temperature: 0, repetitionPenalty: 1.3, logprobs: 0 }, prompt: [1, 2, 3] },
        { p: { temperature: 0.7, topK: 5, seed: 11 }, prompt: [4] },
        {
          p: {
            temperature: 1.2,
            topP: 0.9,
            minP: 0.05,
            presencePenalty: 0.3,
            frequencyPenalty: 0.2,
            seed: 12,
            logprobs: 3,
          },
          prompt: [],
        },
      ];
      const mk = () => configs.map((c) => rowState(c.p, { prompt: c.prompt, generated: [] }));
      const batchRows = mk();
      const aloneRows = mk();
      for (let step = 0; step < 12; step++) {
        const logits = randomLogits(3, V, 100 + step);
        const batch = run(logits, batchRows);
        assert.equal(batch.idsDtype, 'int32');
        for (let i = 0; i < 3; i++) {
          const alone = run([logits[i]], [aloneRows[i]]);
          assert.equal(batch.ids[i], alone.ids[0], `step ${step} row ${i} id`);
          assertClose(batch.processed[i], alone.processed[0], 1e-6, `step ${step} row ${i} processed`);
          if (alone.chosen) assertClose([batch.chosen![i]], alone.chosen, 1e-6, `step ${step} row ${i} logprob`);
          batchRows[i].generatedIds.push(batch.ids[i]);
          aloneRows[i].generatedIds.push(alone.ids[0]);
        }
      }
    });

    it('is deterministic for a seed and differs between seeds', function () {
      const draw = (seed: number) => {
        const row = rowState({ temperature: 1, seed });
        const ids: number[] = [];
        for (let i = 0; i < 50; i++) ids.push(run(randomLogits(1, 20, 7 + i), [row]).ids[0]);
        return ids;
      };
      const a = draw(42);
      assert.deepEqual(draw(42), a);
      assert.notDeepEqual(draw(43), a);
      assert.ok(new Set(a).size > 5, 'draws vary');
    });

    /** ~2,000 seeded draws (100 rows × 20 steps) from one logits row; returns counts per id. */
    function frequencies(logits: number[], partial: Partial<SamplingParams>): number[] {
      const rows = Array.from({ length: 100 }, (_, i) => rowState({ ...partial, seed: 1000 + i }));
      const counts = new Array(logits.length).fill(0);
      const batch = rows.map(() => logits);
      for (let step = 0; step < 20; step++) for (const id of run(batch, rows).ids) counts[id]++;
      return counts;
    }

    /** Pearson chi-square against expected probabilities (over ids with probability > 0). */
    function chiSquare(counts: number[], probs: number[]): number {
      const n = counts.reduce((a, b) => a + b, 0);
      return probs.reduce((s, p, i) => (p > 0 ? s + (counts[i] - n * p) ** 2 / (n * p) : s), 0);
    }

    it('empirical frequencies match a known 4-token distribution; filtered tokens never appear', function () {
      // ids 0..5 → probabilities 0.2, 0.02, 0.4, 0.1, 0.01, 0.3 (sum 1.03); top-k 4 drops ids 1 and 4,
      // leaving exactly 0.4/0.3/0.2/0.1 after renormalization.
      const probs = [0.2, 0.02, 0.4, 0.1, 0.01, 0.3];
      const counts = frequencies(probs.map(Math.log), { topK: 4 });
      assert.equal(counts[1], 0);
      assert.equal(counts[4], 0);
      const target = [0.2, 0, 0.4, 0.1, 0, 0.3];
      const chi2 = chiSquare(counts, target);
      assert.ok(chi2 < 16.27, `chi-square ${chi2.toFixed(2)} (3 dof, p = 0.001 critical 16.27); counts ${counts}`);
    });

    it('temperature and min-p shape the sampled distribution as computed by hand', function () {
      // T = 0.5 squares the probabilities: [0.4, 0.3, 0.2, 0.1]² = [.16, .09, .04, .01] (/0.30);
      // min-p 0.2 drops ratios below 0.2: .04/.16 = .25 stays, .01/.16 = .0625 goes → target [.16, .09, .04]/.29
      const probs = [0.4, 0.3, 0.2, 0.1];
      const counts = frequencies(probs.map(Math.log), { temperature: 0.5, minP: 0.2 });
      assert.equal(counts[3], 0);
      const chi2 = chiSquare(counts, [0.16 / 0.29, 0.09 / 0.29, 0.04 / 0.29, 0]);
      assert.ok(chi2 < 13.82, `chi-square ${chi2.toFixed(2)} (2 dof, p = 0.001 critical 13.82); counts ${counts}`);
    });

    it('never picks a filtered token, even with a single survivor or near-zero mass around it', function () {
      // id 0 and the tail carry mass but are filtered; only id 3 survives top-p 0.2
      const logits = [5, -30, -30, 6, 4, 5.5];
      const rows = Array.from({ length: 50 }, (_, i) => rowState({ topP: 0.2, seed: i }));
      assert.deepEqual(
        [
          ...new Set(
            run(
              rows.map(() => logits),
              rows,
            ).ids,
          ),
        ],
        [3],
      );
    });

    it('the extreme draws (u = 2^-24 and u = 1) land on the first and last surviving tokens', function () {
      // top-k 2 keeps ids 1 and 2; ids 0 and 3 (first and last) are filtered
      const fixed = (word: number): Rng => ({ nextUint32: () => word, nextFloat: () => word / 4294967296 });
      const p = params({ topK: 2 });
      const rows: RowState[] = [0, 0xffffffff].map((w) => ({
        params: p,
        rng: fixed(w),
        promptIds: [],
        generatedIds: [],
      }));
      const x = tf.tensor2d([
        [1, 5, 5, 1],
        [1, 5, 5, 1],
      ]);
      const r = new Sampler().sample(x, rows);
      assert.deepEqual(Array.from(r.ids.dataSync()), [1, 2]);
      tf.dispose([x, r as unknown as tf.TensorContainer]);
      // A row whose float32 softmax over the survivors sums to just under 1 (cpu and wasm): u = 1 must still land on the
      // last survivor (id 6), not run off the end of the cdf onto the filtered id 7.
      const row = [
        1.4241121138558315, 3.315847934836451, 3.295662490323029, 0.9240703829210579, 1.8014539823874152,
        1.9851838229155092, 2.8083159545475227, -10,
      ];
      const last: RowState = { params: params({ topK: 7 }), rng: fixed(0xffffffff), promptIds: [], generatedIds: [] };
      assert.deepEqual(run([row], [last]).ids, [6]);
    });
  });

  describe('logprobs', function () {
    it('are the raw log-softmax at the chosen id and its top-n, before temperature and filters', function () {
      const logits = [0.5, 2.0, -1.0, 1.5, 0.0];
      const raw = logSoftmax(logits);
      const rows = [
        rowState({ temperature: 0.5, topK: 2, seed: 3, logprobs: 3 }),
        rowState({ temperature: 0, logprobs: 0 }),
      ];
      const out = run([logits, logits], rows);
      assert.ok([1, 3].includes(out.ids[0]), 'top-k 2 sample');
      assert.equal(out.ids[1], 1);
      assertClose(out.chosen!, [raw[out.ids[0]], raw[1]], 1e-5, 'chosen');
      // top-3 of the raw distribution: ids 1, 3, 0
      assert.deepEqual(out.topIds, [
        [1, 3, 0],
        [1, 3, 0],
      ]);
      assertClose(out.topLogprobs![0], [raw[1], raw[3], raw[0]], 1e-5, 'top logprobs');
    });

    it('are absent unless asked; logprobs 0 gives the chosen one only', function () {
      const none = run([[0, 1, 2]], [rowState({ temperature: 0 })]);
      assert.equal(none.chosen, undefined);
      const only = run([[0, 1, 2]], [rowState({ temperature: 0, logprobs: 0 })]);
      assertClose(only.chosen!, [logSoftmax([0, 1, 2])[2]], 1e-5, 'chosen');
      assert.equal(only.topIds, undefined);
      // n larger than the vocabulary is clamped to it
      assert.deepEqual(run([[0, 1, 2]], [rowState({ temperature: 0, logprobs: 10 })]).topIds, [[2, 1, 0]]);
    });
  });

  it('leaks no tensors over 100 sampling calls', function () {
    const rows = [
      rowState({ temperature: 0, repetitionPenalty: 1.2, logprobs: 2 }, { prompt: [1, 2], generated: [] }),
      rowState(
        { temperature: 0.8, topK: 4, topP: 0.9, minP: 0.02, presencePenalty: 0.1, frequencyPenalty: 0.1, seed: 5 },
        { prompt: [3] },
      ),
      rowState({ seed: 6 }),
    ];
    const logits = tf.tensor2d(randomLogits(3, 32, 9));
    const plain = tf.tensor2d(randomLogits(1, 32, 10));
    const before = tf.memory().numTensors;
    for (let i = 0; i < 100; i++) {
      const r = sample(logits, rows);
      // the result owns exactly its own tensors: ids, processed, chosen, topIds, topLogprobs
      assert.equal(tf.memory().numTensors, before + 5);
      const ids = r.ids.dataSync();
      rows.forEach((row, b) => row.generatedIds.push(ids[b]));
      tf.dispose(r as unknown as tf.TensorContainer);
      // an empty chain must still return a tensor of its own, not the caller's logits
      const q = sample(plain, [rowState({ seed: i })]);
      assert.notEqual(q.processedLogits, plain);
      tf.dispose(q as unknown as tf.TensorContainer);
    }
    assert.equal(tf.memory().numTensors, before);
    assert.equal(plain.isDisposed, false);
    tf.dispose([logits, plain]);
  });

  it('processors can be used one by one inside tf.tidy', function () {
    const ps = [params({ topK: 2 }), params({ minP: 0.35 })];
    const out = tf.tidy(() => {
      const ctx = createContext(
        ps,
        ps.map(() => ({ promptIds: [], generatedIds: [] })),
        5,
      );
      return applyChain(tf.tensor2d([LOGITS, LOGITS]), buildChain(ps, 5), ctx).arraySync();
    });
    assert.deepEqual(out.map(survivors), [
      [1, 3],
      [1, 3],
    ]);
  });

  describe('on wasm', function () {
    before(async function () {
      await initBackend({ backend: 'wasm' });
    });
    after(async function () {
      await initBackend({ backend: 'cpu' });
    });

    it('gives the same masks, ids and logprobs as the hand computations', function () {
      assert.equal(tf.getBackend(), 'wasm');
      assert.deepEqual(survivors(processRow(LOGITS, { topK: 2 })), [1, 3]);
      assert.deepEqual(survivors(processRow(LOGITS, { topP: 0.7 })), [1, 3]);
      assert.deepEqual(survivors(processRow(LOGITS, { topP: 0.71 })), [1, 3, 4]);
      assert.deepEqual(survivors(processRow(LOGITS, { minP: 0.3 })), [1, 3, 4]);
      assert.deepEqual(survivors(processRow([1, 3, 3, 3, 0], { topK: 2 })), [1, 2]);
      assert.deepEqual(survivors(processRow([0, 0, 0, 0], { topP: 0.5 })), [0, 1]);
      assert.deepEqual(
        processRow([2, -2, 1, 0.5, -1, 0], { repetitionPenalty: 2 }, { prompt: [0, 5], generated: [1, 1, 0] }),
        [1, -4, 1, 0.5, -1, 0],
      );
      assertClose(
        processRow([1, 1, 1, 1, 1], { presencePenalty: 0.5, frequencyPenalty: 0.25 }, { generated: [2, 2, 3, 2] }),
        [1, 1, -0.25, 0.25, 1],
        1e-6,
        'penalties',
      );

      const logits = [0.5, 2.0, -1.0, 1.5, 0.0];
      const out = run(
        [logits, logits],
        [rowState({ temperature: 0.5, topK: 2, seed: 3, logprobs: 3 }), rowState({ temperature: 0, logprobs: 0 })],
      );
      assert.ok([1, 3].includes(out.ids[0]));
      assert.equal(out.ids[1], 1);
      const raw = logSoftmax(logits);
      assertClose(out.chosen!, [raw[out.ids[0]], raw[1]], 1e-5, 'chosen');
      assert.deepEqual(out.topIds![0], [1, 3, 0]);
    });

    it('matches cpu draw for draw on a mixed batch, without leaks', async function () {
      const configs: Partial<SamplingParams>[] = [
        { temperature: 0, repetitionPenalty: 1.3 },
        { temperature: 0.7, topK: 5, seed: 21 },
        { temperature: 1.2, topP: 0.9, minP: 0.05, presencePenalty: 0.3, frequencyPenalty: 0.2, seed: 22 },
      ];
      const steps = 10;
      const trace = () => {
        const rows = configs.map((c) => rowState(c, { prompt: [1, 2, 3] }));
        const ids: number[][] = [];
        for (let s = 0; s < steps; s++) {
          const r = run(randomLogits(3, 64, 300 + s), rows);
          ids.push(r.ids);
          rows.forEach((row, b) => row.generatedIds.push(r.ids[b]));
        }
        return ids;
      };
      const before = tf.memory().numTensors;
      const onWasm = trace();
      assert.equal(tf.memory().numTensors, before);
      await initBackend({ backend: 'cpu' });
      const onCpu = trace();
      await initBackend({ backend: 'wasm' });
      assert.deepEqual(onWasm, onCpu);
    });
  });
});
