/**
 * Soft Thinking's mixer (softMix) against float64 transcriptions of its definition written here
 * (not calling the implementation): S over the full distribution at temperature, the filters in
 * order (top-k → top-p → min-p, each renormalized), max_topk, the recorded token, h = Σ w E, the
 * cold stop, think-end and the one-hot switch; and the noise against its distributions.
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, UsageError } from '@moi/core';
import {
  defaultMixer,
  gumbelDraws,
  mixInputs,
  resolveMixSettings,
  softMix,
  softObserve,
  startSoftRow,
  type MixSettings,
  type NoiseRng,
  type SoftDebugResult,
  type SoftOptions,
  type SoftRowState,
} from '../src/index.ts';
import { renorm, softFiltered, type Filters } from './soft-reference.ts';

// ---------------------------------------------------------------- float64 reference

/** The soft step of one row in float64: S, the filtered distribution, candidates and weights. */
function refSoft(
  logits: number[],
  f: Filters,
  maxTopk: number,
): { S: number; ids: number[]; w: number[]; filtered: Map<number, number> } {
  const { S, order, q } = softFiltered(logits, f);
  const ids = order.slice(0, maxTopk);
  const wm = renorm(ids, (i) => q.get(i)!);
  return { S, ids, w: ids.map((i) => wm.get(i)!), filtered: q };
}

/** Float32-rounded logits for probabilities (−40 for a zero). */
const logitsOf = (p: number[]) => p.map((v) => Math.fround(v > 0 ? Math.log(v) : -40));

const E8 = Array.from({ length: 8 }, (_, i) => [
  1 + i,
  -0.5 * i,
  0.25 * i * i,
  i % 2 ? 1.5 : -2,
  Math.fround(Math.sin(i)),
]);
const embedOf = (ids: number[], w: number[]) => E8[0].map((_, j) => ids.reduce((a, id, k) => a + w[k] * E8[id][j], 0));

/** A test-only 32-bit generator (mulberry32), independent of the engine's. */
function testRng(seed: number): NoiseRng {
  let a = seed >>> 0;
  return {
    nextUint32() {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return (t ^ (t >>> 14)) >>> 0;
    },
  };
}

function soft(o: SoftOptions & { maxTopk?: number | 'all' } = {}, V = 8): MixSettings {
  const { maxTopk, ...rest } = o;
  return resolveMixSettings({ mode: 'soft', topK: maxTopk, soft: { thinkEndId: 7, ...rest } }, {}, V);
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= tol, `${what}[${i}]: ${actual[i]} vs ${expected[i]} (tol ${tol})`);
  }
}

describe('Soft Thinking mixer (softMix)', function () {
  let table: tf.Tensor2D;
  before(async () => {
    await initBackend({ backend: 'wasm' });
    table = tf.tensor2d(E8);
  });
  after(() => table.dispose());

  /** One step of a batch; host copies of the debug result, every tensor disposed. */
  function step(rows: number[][], settings: MixSettings[], states: SoftRowState[], sampled?: number[]) {
    const logits = tf.tensor2d(rows);
    const y = tf.tensor1d(sampled ?? rows.map(() => 0), 'int32');
    let r: SoftDebugResult | null = null;
    try {
      r = softMix({ logits, sampled: y, embedTable: table, settings, rowStates: states }, { returnWeights: true });
      return {
        ids: r.candidateIds.arraySync() as number[][],
        w: r.weights.arraySync() as number[][],
        embeds: r.embeds.arraySync() as number[][],
        tokens: r.tokens!.arraySync() as number[],
        entropy: r.entropy.arraySync() as number[],
        n: r.numCandidates.arraySync() as number[],
        extra: r.extra!.arraySync() as number[][],
      };
    } finally {
      tf.dispose([logits, y]);
      if (r) tf.dispose(Object.values(r) as tf.Tensor[]);
    }
  }
  const start = (s: MixSettings, seed = 1) => startSoftRow(s, { makeRng: () => testRng(seed) });

  /** Candidates (id → weight) of a row, from the debug slots. */
  function weightsOf(out: ReturnType<typeof step>, row: number): Map<number, number> {
    const m = new Map<number, number>();
    out.ids[row].forEach((id, k) => {
      if (out.w[row][k] > 0) m.set(id, (m.get(id) ?? 0) + out.w[row][k]);
    });
    return m;
  }

  function checkAgainstRef(p: number[], f: Filters, maxTopk: number, expectIds?: number[]) {
    const l = logitsOf(p);
    const s = soft({ ...f, maxTopk: Math.min(maxTopk, 8) });
    const out = step([l], [s], [start(s)]);
    // the reference from the exact probabilities: boundary cases are decided by exact arithmetic
    const ref = refSoft(
      p.map((v) => (v > 0 ? Math.log(v) : -40)),
      f,
      maxTopk,
    );
    if (expectIds) assert.deepEqual(ref.ids, expectIds, 'the float64 reference itself');
    const got = weightsOf(out, 0);
    assert.deepEqual([...got.keys()], ref.ids, 'candidates');
    assertClose(
      ref.ids.map((i) => got.get(i)!),
      ref.w,
      1e-6,
      'weights',
    );
    assert.equal(out.tokens[0], ref.ids[0], 'recorded token = argmax of the filtered distribution');
    assert.equal(out.n[0], ref.ids.length, 'numCandidates');
    assert.ok(Math.abs(out.entropy[0] - ref.S) <= 1e-5 * Math.max(1, ref.S), `S ${out.entropy[0]} vs ${ref.S}`);
    assertClose(out.embeds[0], embedOf(ref.ids, ref.w), 1e-5, 'h = Σ w E');
    return { ref, out };
  }

  it('top-k then top-p on the renormalized distribution (order matters)', () => {
    // after top-k 2: [4/7, 3/7]; top-p 0.5 stops after the first. Top-p on the raw p (0.4 < 0.5) would keep two.
    checkAgainstRef([0.4, 0.3, 0.2, 0.1, 0, 0, 0, 0], { temperature: 1, topK: 2, topP: 0.5, minP: 0 }, 10, [0]);
    // and without top-k, top-p 0.5 keeps two (0.4 before the second is < 0.5), renormalized to 4/7, 3/7
    checkAgainstRef([0.4, 0.3, 0.2, 0.1, 0, 0, 0, 0], { temperature: 1, topK: 0, topP: 0.5, minP: 0 }, 10, [0, 1]);
  });

  it('a top-p prefix reaching exactly top_p stops there', () => {
    const p = [0.5, 0.25, 0.125, 0.0625, 0.0625, 0, 0, 0];
    checkAgainstRef(p, { temperature: 1, topK: 0, topP: 0.75, minP: 0 }, 10, [0, 1]);
    checkAgainstRef(p, { temperature: 1, topK: 0, topP: 0.875, minP: 0 }, 10, [0, 1, 2]);
    checkAgainstRef(p, { temperature: 1, topK: 0, topP: 0.8, minP: 0 }, 10, [0, 1, 2]);
  });

  it('min-p is relative to the max after top-p; a token exactly at the threshold stays', () => {
    // after top-p 0.9: [.5,.3,.15]/.95; min-p 0.31 × .526 = .163 drops .158 (a threshold from the raw max, .155, would keep it)
    checkAgainstRef([0.5, 0.3, 0.15, 0.05, 0, 0, 0, 0], { temperature: 1, topK: 0, topP: 0.9, minP: 0.31 }, 10, [0, 1]);
    // p_i = min_p × max exactly: kept
    checkAgainstRef([0.4, 0.2, 0.2, 0.1, 0.1, 0, 0, 0], { temperature: 1, topK: 0, topP: 1, minP: 0.5 }, 10, [0, 1, 2]);
  });

  it('max_topk keeps the largest and renormalizes; fewer survivors than max_topk is fine', () => {
    checkAgainstRef(
      [0.3, 0.25, 0.2, 0.1, 0.08, 0.04, 0.02, 0.01],
      { temperature: 0.7, topK: 0, topP: 1, minP: 0 },
      3,
      [0, 1, 2],
    );
    checkAgainstRef(
      [0.3, 0.25, 0.2, 0.1, 0.08, 0.04, 0.02, 0.01],
      { temperature: 1.3, topK: 4, topP: 1, minP: 0 },
      10,
      [0, 1, 2, 3],
    );
    // the paper's filters at their defaults
    checkAgainstRef(
      [0.3, 0.25, 0.2, 0.1, 0.08, 0.04, 0.02, 0.01],
      { temperature: 0.6, topK: 30, topP: 0.95, minP: 0.001 },
      10,
    );
  });

  it('temperature 0: the argmax alone (top-k 1 at temperature 1, as the reference), S at temperature 1', () => {
    checkAgainstRef([0.1, 0.5, 0.2, 0.1, 0.1, 0, 0, 0], { temperature: 0, topK: 30, topP: 0.95, minP: 0 }, 10, [1]);
  });

  it('a batch of rows with different settings equals each row alone', () => {
    const rows = [
      logitsOf([0.3, 0.25, 0.2, 0.1, 0.08, 0.04, 0.02, 0.01]),
      logitsOf([0.05, 0.05, 0.6, 0.1, 0.1, 0.05, 0.03, 0.02]),
      logitsOf([0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125]),
      logitsOf([0.4, 0.3, 0.2, 0.1, 0, 0, 0, 0]),
    ];
    const settings = [
      soft({ temperature: 0.6, topK: 0, topP: 0.9, minP: 0.05, maxTopk: 4 }),
      soft({ temperature: 1.2, topK: 3, topP: 1, minP: 0 }),
      soft({ temperature: 1, topK: 0, topP: 1, minP: 0, maxTopk: 'all' }),
      // top-k 2 renormalizes before top-p 0.5 even when the batch sorts more slots for other rows
      soft({ temperature: 1, topK: 2, topP: 0.5, minP: 0 }),
    ];
    const batch = step(
      rows,
      settings,
      settings.map((s) => start(s)),
    );
    rows.forEach((l, r) => {
      const alone = step([l], [settings[r]], [start(settings[r])]);
      assert.deepEqual(weightsOf(batch, r), weightsOf(alone, 0), `row ${r} weights`);
      assert.deepEqual(batch.embeds[r], alone.embeds[0], `row ${r} embeds`);
      assert.equal(batch.tokens[r], alone.tokens[0]);
      assert.equal(batch.entropy[r], alone.entropy[0]);
    });
    // the uniform row: S = ln 8, every id a candidate with weight 1/8, the recorded token the lowest id
    assert.ok(Math.abs(batch.entropy[2] - Math.log(8)) < 1e-5);
    assert.equal(batch.tokens[2], 0);
    assertClose([...weightsOf(batch, 2).values()], Array(8).fill(1 / 8), 1e-6, 'uniform weights');
    assert.deepEqual([...weightsOf(batch, 3).entries()], [[0, 1]]);
  });

  it('cold stop: counts step 0, fires when the count reaches cold_stop_steps, resets on a high step', () => {
    const peaked = logitsOf([0.999, 0.001, 0, 0, 0, 0, 0, 0]); // S ≈ 0.0079 nats
    const flat = logitsOf([0.4, 0.3, 0.3, 0, 0, 0, 0, 0]);
    const Speaked = refSoft(peaked, { temperature: 1, topK: 0, topP: 1, minP: 0 }, 10).S;
    assert.ok(Speaked < 0.01);
    const f = { temperature: 1, topK: 0, topP: 1, minP: 0 };
    const run = (seq: number[][], steps: number, threshold = 0.01) => {
      const s = soft({ ...f, coldStopEntropy: threshold, coldStopSteps: steps });
      const st = start(s);
      const out: { token: number; reason: string | null; phase: string }[] = [];
      seq.forEach((l, t) => {
        if (st.phase === 'answer') return;
        const o = step([l], [s], [st]);
        const rep = softObserve(s, st, o.extra[0], t)!.soft!;
        out.push({ token: o.tokens[0], reason: rep.thinkEnd, phase: st.phase });
      });
      return { out, st };
    };
    // steps = 1: the very first step (t = 0) already reaches the count
    const one = run([peaked, peaked], 1);
    assert.deepEqual(
      one.out.map((o) => o.token),
      [7],
    );
    assert.equal(one.out[0].reason, 'cold_stop');
    assert.equal(one.st.endedAt, 0);
    // steps = 3, all low: tokens 0, 0, then think-end at t = 2 (step 0 counted)
    const three = run([peaked, peaked, peaked, peaked], 3);
    assert.deepEqual(
      three.out.map((o) => o.token),
      [0, 0, 7],
    );
    assert.equal(three.st.endReason, 'cold_stop');
    assert.equal(three.st.endedAt, 2);
    // a high step resets the count: low, low, HIGH, low, low, low → fires at t = 5
    const reset = run([peaked, peaked, flat, peaked, peaked, peaked, peaked], 3);
    assert.deepEqual(
      reset.out.map((o) => o.token),
      [0, 0, 0, 0, 0, 7],
    );
    assert.equal(reset.st.endedAt, 5);
    // one that does not fire: never three low steps in a row, and a threshold of 0 (off)
    const never = run([peaked, peaked, flat, peaked, peaked, flat, peaked], 3);
    assert.ok(never.out.every((o) => o.token === 0 && o.reason === null));
    assert.equal(never.st.phase, 'thinking');
    const off = run([peaked, peaked, peaked, peaked], 1, 0);
    assert.ok(off.out.every((o) => o.token === 0 && o.reason === null));
  });

  it('think-end by argmax switches to the one-hot E[think-end], then records the sampled token one-hot', () => {
    const s = soft({ temperature: 1, topK: 0, topP: 1, minP: 0, thinkEndId: 3 });
    const st = start(s);
    const l = logitsOf([0.1, 0.1, 0.2, 0.4, 0.1, 0.05, 0.05, 0]);
    const o = step([l], [s], [st]);
    assert.equal(o.tokens[0], 3);
    assert.deepEqual(o.embeds[0], E8[3], 'exactly E[think-end]');
    assert.equal(o.n[0], 1);
    const rep = softObserve(s, st, o.extra[0], 0)!.soft!;
    assert.deepEqual(rep, { phase: 'thinking', entropy: o.entropy[0], thinkEnd: 'argmax' });
    assert.equal(st.phase, 'answer');
    // after thinking: the sampler's token (5 here), one-hot, no S
    const a = step([l], [s], [st], [5]);
    assert.equal(a.tokens[0], 5);
    assert.deepEqual(a.embeds[0], E8[5]);
    assert.ok(Number.isNaN(a.entropy[0]));
    assert.deepEqual(softObserve(s, st, a.extra[0], 1)!.soft, { phase: 'answer', entropy: null, thinkEnd: null });
  });

  it('defaultMixer: soft, moi and standard rows in one batch each equal that row alone', () => {
    const l = [
      logitsOf([0.3, 0.25, 0.2, 0.1, 0.08, 0.04, 0.02, 0.01]),
      logitsOf([0.05, 0.05, 0.6, 0.1, 0.1, 0.05, 0.03, 0.02]),
    ];
    const rows = [l[0], l[1], l[0], l[1]];
    const settings: MixSettings[] = [
      soft({ temperature: 0.8, topK: 0, topP: 0.95, minP: 0 }),
      { mode: 'moi', beta: 1, topK: 3, prior: 'raw' },
      { mode: 'standard', beta: 1, topK: 3, prior: 'raw' },
      soft({ temperature: 1, topK: 3, topP: 1, minP: 0, maxTopk: 2 }),
    ];
    const sampled = [1, 3, 4, 0];
    const run = (idx: number[]) =>
      tf
        .tidy(() => {
          const states = idx.map((r) => (settings[r].mode === 'soft' ? start(settings[r]) : undefined));
          const out = defaultMixer.mix({
            logits: tf.tensor2d(idx.map((r) => rows[r])),
            sampled: tf.tensor1d(
              idx.map((r) => sampled[r]),
              'int32',
            ),
            embedTable: table,
            settings: idx.map((r) => settings[r]),
            rowStates: states,
          });
          return [
            out.embeds,
            out.entropy,
            out.tokens ??
              tf.tensor1d(
                idx.map((r) => sampled[r]),
                'int32',
              ),
          ];
        })
        .map((t) => {
          const v = t.arraySync();
          t.dispose();
          return v as number[] | number[][];
        });
    const [be, bh, bt] = run([0, 1, 2, 3]);
    for (let r = 0; r < 4; r++) {
      const [e, h, t] = run([r]);
      assert.deepEqual((be as number[][])[r], (e as number[][])[0], `row ${r} embeds`);
      assert.deepEqual((bh as number[])[r], (h as number[])[0], `row ${r} entropy`);
      assert.deepEqual((bt as number[])[r], (t as number[])[0], `row ${r} token`);
    }
    assert.equal((bt as number[])[1], 3, 'moi rows record the sampled token');
    assert.deepEqual((be as number[][])[2], E8[4], 'standard rows: E[y]');
    // mixInputs itself refuses soft rows
    assert.throws(
      () =>
        tf.tidy(() => {
          mixInputs({
            logits: tf.zeros([1, 8]) as tf.Tensor2D,
            sampled: tf.zeros([1], 'int32') as tf.Tensor1D,
            embedTable: table,
            settings: [settings[0]],
          });
        }),
      (e: unknown) => e instanceof UsageError && /soft/.test(e.message),
    );
  });

  it('max_topk 1, or one candidate left, is the argmax token with its embedding (greedy)', () => {
    const l = logitsOf([0.1, 0.15, 0.3, 0.2, 0.1, 0.05, 0.05, 0.05]);
    for (const s of [
      soft({ temperature: 0.6, topK: 30, topP: 0.95, minP: 0.001, maxTopk: 1 }),
      soft({ temperature: 1, topK: 0, topP: 0.2, minP: 0 }),
    ]) {
      const o = step([l], [s], [start(s)]);
      assert.equal(o.tokens[0], 2);
      assert.deepEqual(o.embeds[0], E8[2]);
    }
  });

  describe('noise', function () {
    it('Gumbel draws: mean γ ≈ 0.5772, variance π²/6 (100k draws)', () => {
      const g = gumbelDraws(testRng(7), 100_000);
      const mean = g.reduce((a, b) => a + b, 0) / g.length;
      const variance = g.reduce((a, b) => a + (b - mean) ** 2, 0) / (g.length - 1);
      // standard errors: sqrt(π²/6 / n) ≈ 0.004 for the mean, ≈ 0.011 for the variance
      assert.ok(Math.abs(mean - 0.5772156649) < 0.02, `mean ${mean}`);
      assert.ok(Math.abs(variance - Math.PI ** 2 / 6) < 0.06, `variance ${variance}`);
    });

    it('Gumbel-softmax: the recorded token is distributed as w (Gumbel-max), weights sum to 1', () => {
      const p = [0.4, 0.3, 0.2, 0.1, 0, 0, 0, 0];
      const l = logitsOf(p);
      const s = soft({ temperature: 1, topK: 0, topP: 1, minP: 0, noise: 'gumbel', gumbelTau: 0.5 });
      const B = 4000;
      const o = step(
        Array(B).fill(l),
        Array(B).fill(s),
        Array.from({ length: B }, (_, i) => start(s, 1000 + i)),
      );
      const counts = new Map<number, number>();
      o.tokens.forEach((t) => counts.set(t, (counts.get(t) ?? 0) + 1));
      const w = refSoft(l, { temperature: 1, topK: 0, topP: 1, minP: 0 }, 10);
      w.ids.forEach((id, k) => {
        const f = (counts.get(id) ?? 0) / B;
        const se = Math.sqrt((w.w[k] * (1 - w.w[k])) / B);
        assert.ok(Math.abs(f - w.w[k]) < 5 * se, `P(token ${id}) ${f} vs ${w.w[k]}`);
      });
      for (let r = 0; r < 50; r++) {
        const sum = o.w[r].reduce((a, b) => a + b, 0);
        assert.ok(Math.abs(sum - 1) < 1e-5);
        // the recorded token has the largest noisy weight
        const best = o.ids[r][o.w[r].indexOf(Math.max(...o.w[r]))];
        assert.equal(o.tokens[r], best);
      }
    });

    it('Dirichlet: weights have mean p_i and variance p_i(1 − p_i)/(α + 1) (Dir(α·p)), 4000 draws', () => {
      const p = [0.5, 0.2, 0.15, 0.1, 0.05, 0, 0, 0];
      const l = logitsOf(p);
      const alpha = 2;
      const s = soft({ temperature: 1, topK: 5, topP: 1, minP: 0, noise: 'dirichlet', dirichletAlpha: alpha });
      const B = 4000;
      const o = step(
        Array(B).fill(l),
        Array(B).fill(s),
        Array.from({ length: B }, (_, i) => start(s, 50_000 + i)),
      );
      for (let id = 0; id < 5; id++) {
        const xs = o.ids.map((ids, r) => ids.reduce((a, c, k) => a + (c === id ? o.w[r][k] : 0), 0));
        const mean = xs.reduce((a, b) => a + b, 0) / B;
        const variance = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (B - 1);
        const want = (p[id] * (1 - p[id])) / (alpha + 1);
        assert.ok(Math.abs(mean - p[id]) < 5 * Math.sqrt(want / B), `E[w_${id}] ${mean} vs ${p[id]}`);
        assert.ok(Math.abs(variance - want) < 0.1 * want, `Var[w_${id}] ${variance} vs ${want}`);
      }
      // filtered-out ids never get weight
      assert.ok(o.ids.every((ids, r) => ids.every((c, k) => c < 5 || k === ids.length - 1 || o.w[r][k] === 0)));
    });

    it('a noisy row draws for its own slots: batched beside wider rows it equals itself alone', () => {
      const l = logitsOf([0.3, 0.25, 0.2, 0.1, 0.08, 0.04, 0.02, 0.01]);
      const settings = [
        soft({ temperature: 1, topK: 4, topP: 1, minP: 0, noise: 'dirichlet', maxTopk: 3 }),
        soft({ temperature: 1, topK: 5, topP: 1, minP: 0, noise: 'gumbel', maxTopk: 2 }),
        soft({ temperature: 1, topK: 0, topP: 1, minP: 0, maxTopk: 8 }), // widens the batch's slots and candidates
      ];
      // three steps on the same states: each step must consume the same draws as alone
      const batchStates = settings.map((s) => start(s, 40));
      const aloneStates = settings.map((s) => start(s, 40));
      for (let t = 0; t < 3; t++) {
        const batch = step([l, l, l], settings, batchStates);
        for (const r of [0, 1]) {
          const alone = step([l], [settings[r]], [aloneStates[r]]);
          assert.deepEqual(weightsOf(batch, r), weightsOf(alone, 0), `row ${r} step ${t}`);
          assert.equal(batch.tokens[r], alone.tokens[0]);
        }
      }
    });

    it('seeded: the same seed repeats the draws, another seed does not', () => {
      const l = logitsOf([0.3, 0.25, 0.2, 0.1, 0.08, 0.04, 0.02, 0.01]);
      for (const noise of ['gumbel', 'dirichlet']) {
        const s = soft({ temperature: 1, topK: 8, topP: 1, minP: 0, noise });
        const a = step([l, l], [s, s], [start(s, 5), start(s, 5)]);
        const b = step([l], [s], [start(s, 6)]);
        assert.deepEqual(a.w[0], a.w[1], `${noise}: same seed`);
        assert.notDeepEqual(a.w[0], b.w[0], `${noise}: another seed`);
      }
    });
  });

  it('settings: paper defaults, max_topk 10 in soft mode (20 for moi), typed errors', () => {
    const s = resolveMixSettings({ mode: 'soft' }, {});
    assert.equal(s.topK, 10);
    assert.deepEqual(s.soft!.thinking, { temperature: 0.6, topK: 30, topP: 0.95, minP: 0.001 });
    assert.deepEqual(s.soft!.afterThinking, { temperature: 0.6, topK: 30, topP: 0.95, minP: 0 });
    assert.equal(s.soft!.coldStopEntropy, 0);
    assert.equal(s.soft!.noise, 'none');
    assert.equal(resolveMixSettings({ mode: 'moi' }, {}).topK, 20);
    assert.equal(
      resolveMixSettings({ mode: 'soft', soft: { topK: -1, afterThinking: { topK: -1 } } }, {}).soft!.thinking.topK,
      0,
    );
    const bad = (o: SoftOptions, re: RegExp, mode = 'soft') =>
      assert.throws(
        () => resolveMixSettings({ mode, soft: o }, {}, 512),
        (e: unknown) => e instanceof UsageError && e.code === 'E_MOI' && re.test(e.message),
      );
    bad({ coldStopEntropy: -1 }, /coldStopEntropy/);
    bad({ coldStopSteps: 0 }, /coldStopSteps/);
    bad({ noise: 'pink' }, /noise 'pink'/);
    bad({ gumbelTau: 0 }, /gumbelTau/);
    bad({ dirichletAlpha: -1 }, /dirichletAlpha/);
    bad({ afterThinking: { topP: 0 } }, /afterThinking\.topP/);
    bad({ temperature: -0.5 }, /thinking\.temperature/);
    bad({ thinkEndId: 512 }, /thinkEndId/);
    bad({ coldStopSteps: 3 }, /need mode 'soft'/, 'moi');
    assert.throws(
      () => resolveMixSettings({ mode: 'soft', soft: { noise: 'dirichlet', topK: 0 } }, {}, 151_000),
      /dirichlet.*top-k/,
    );
  });

  it('no tensor leaks over many steps, with noise', () => {
    const l = logitsOf([0.3, 0.25, 0.2, 0.1, 0.08, 0.04, 0.02, 0.01]);
    const settings = [
      soft({ noise: 'dirichlet', topK: 8 }),
      soft({ noise: 'gumbel' }),
      soft({ coldStopEntropy: 5, coldStopSteps: 3 }),
    ];
    const states = settings.map((s) => start(s));
    step([l, l, l], settings, states);
    const before = tf.memory().numTensors;
    for (let t = 0; t < 20; t++) {
      const o = step([l, l, l], settings, states, [1, 2, 3]);
      states.forEach((st, r) => softObserve(settings[r], st, o.extra[r], t));
    }
    assert.equal(states[2].phase, 'answer');
    assert.equal(tf.memory().numTensors, before);
  });
});
