/** Statistics against published and independently computed values (sources cited per case). */
import assert from 'node:assert/strict';
import { mcnemarExact, pairedBootstrap, passAtK, wilson } from '../src/eval/stats.ts';
import { summarize, markdownTable, type ResultRecord } from '../src/eval/summary.ts';

const close = (a: number, b: number, tol: number, what: string) =>
  assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);

describe('eval: statistics', () => {
  it('Wilson 95% intervals match Newcombe (1998), Table I, method 3', () => {
    // R. G. Newcombe, "Two-sided confidence intervals for the single proportion: comparison of
    // seven methods", Statistics in Medicine 17:857–872 (1998), Table I, score method without
    // continuity correction, to 4 decimals.
    const table: [number, number, number, number][] = [
      [81, 263, 0.2553, 0.3662],
      [15, 148, 0.0624, 0.1605],
      [0, 20, 0.0, 0.1611],
      [1, 29, 0.0061, 0.1718],
    ];
    for (const [k, n, lo, hi] of table) {
      const [l, h] = wilson(k, n);
      close(l, lo, 5e-5, `${k}/${n} lower`);
      close(h, hi, 5e-5, `${k}/${n} upper`);
    }
    // n/n mirrors 0/n: the interval of 20/20 is [1 − 0.1611, 1]
    const [l, h] = wilson(20, 20);
    close(l, 1 - 0.1611, 5e-5, '20/20 lower');
    assert.equal(h, 1);
    assert.deepEqual(wilson(0, 0), [0, 1]);
  });

  it('exact McNemar p-values equal the binomial computation', () => {
    // Two-sided exact conditional McNemar: p = min(1, 2 · Σ_{k ≤ min(b,c)} C(b+c, k) / 2^(b+c)).
    // b = 1, c = 7: 2 · (1 + 8) / 256 = 18/256 = 0.0703125; this is the airway hyper-responsiveness
    // example of Fagerland, Lydersen & Laake, BMC Med Res Methodol 13:91 (2013), exact p = 0.070.
    assert.equal(mcnemarExact(1, 7), 18 / 256);
    assert.equal(mcnemarExact(7, 1), 18 / 256);
    // b = 0, c = 5: 2 · 1/32 = 1/16
    assert.equal(mcnemarExact(0, 5), 1 / 16);
    // b = 3, c = 12: 2 · (1 + 15 + 105 + 455) / 32768 = 1152/32768 = 9/256
    close(mcnemarExact(3, 12), 9 / 256, 1e-15, '3,12');
    // large counts, exact values from Python's fractions.Fraction over math.comb
    // (2 * Fraction(sum(comb(n, k) for k in range(m + 1)), 2**n)):
    close(mcnemarExact(50, 80), 0.010694055123829413, 1e-12, '50,80');
    close(mcnemarExact(200, 260), 0.005883922473103979, 1e-12, '200,260');
    assert.equal(mcnemarExact(5, 5), 1); // capped at 1
    assert.equal(mcnemarExact(0, 0), 1);
  });

  it('paired bootstrap: seeded, degenerate where it must be, and near the normal interval for large n', () => {
    const a = Array.from({ length: 400 }, (_, i) => (i % 5 < 3 ? 1 : 0)); // mean 0.6
    const b = Array.from({ length: 400 }, (_, i) => (i % 2 === 0 ? 1 : 0)); // mean 0.5
    const ci = pairedBootstrap(a, b, { seed: 1 });
    assert.deepEqual(ci, pairedBootstrap(a, b, { seed: 1 })); // same seed, same interval
    const x = [0.3, 1, 0, 0.7, 0.2, 1, 0.9, 0.1, 0.5, 0.45];
    const y = [0.1, 0.4, 0.05, 0.2, 0, 0.3, 0.8, 0.6, 0.2, 0.15];
    assert.notDeepEqual(pairedBootstrap(x, y, { seed: 1 }), pairedBootstrap(x, y, { seed: 2 })); // the seed matters
    close(ci.mean, 0.1, 1e-12, 'mean difference');
    // normal approximation: mean ± 1.96 · sd(d) / √n
    const d = a.map((x, i) => x - b[i]);
    const sd = Math.sqrt(d.reduce((s, x) => s + (x - 0.1) ** 2, 0) / (d.length - 1));
    const half = (1.96 * sd) / Math.sqrt(d.length);
    close(ci.lo, 0.1 - half, 0.015, 'lower vs normal');
    close(ci.hi, 0.1 + half, 0.015, 'upper vs normal');
    const same = pairedBootstrap([1, 0, 1], [0, -1, 0], { seed: 3 }); // every difference is 1
    assert.deepEqual([same.lo, same.hi, same.mean], [1, 1, 1]);
  });

  it('summaries count discordant pairs per mode against standard', () => {
    const rec = (problem: number, mode: string, correct: boolean, sample = 0): ResultRecord => ({
      key: `${problem}/${sample}/${mode}`,
      problem,
      sample,
      mode,
      mode_used: mode,
      seed: 0,
      prompt: '',
      completion: '',
      answer: null,
      extracted: null,
      correct,
      format_only: !correct,
      reason: null,
      prompt_tokens: 1,
      completion_tokens: 10 + problem,
      finish_reason: 'stop',
      seconds: 0,
      mean_entropy: 0.5,
      mean_weight: mode === 'standard' ? 1 : 0.7,
    });
    // 8 problems: standard right on 0–3; moi right on 2–7 → b = 2 (0, 1), c = 4 (4–7)
    const records = [...Array(8).keys()].flatMap((p) => [rec(p, 'standard', p < 4), rec(p, 'moi', p >= 2)]);
    const s = summarize(records, {
      task: 't',
      source: 's',
      model: 'm',
      modes: ['standard', 'moi'],
      problems: 8,
      samples: 1,
      seed: 0,
    });
    assert.deepEqual(
      s.modes.map((m) => [m.mode, m.correct, m.n]),
      [
        ['standard', 4, 8],
        ['moi', 6, 8],
      ],
    );
    assert.deepEqual([s.paired[0].b, s.paired[0].c, s.paired[0].pairs], [2, 4, 8]);
    assert.equal(s.paired[0].mcnemar_p, mcnemarExact(2, 4));
    close(s.paired[0].diff, 0.25, 1e-12, 'diff');
    assert.match(markdownTable(s), /\| moi \| 8 \| 6 \| 75\.0% \|/);
    assert.equal(s.paired[0].bootstrap95, undefined);
    // two samples per problem: the bootstrap resamples problems (both samples together)
    const two = [...Array(8).keys()].flatMap((p) =>
      [0, 1].flatMap((k) => [rec(p, 'standard', p < 4, k), rec(p, 'moi', p >= 2 || k === 1, k)]),
    );
    const s2 = summarize(two, {
      task: 't',
      source: 's',
      model: 'm',
      modes: ['standard', 'moi'],
      problems: 8,
      samples: 2,
      seed: 4,
    });
    const perProblemMoi = [...Array(8).keys()].map((p) => (p >= 2 ? 1 : 0.5));
    const perProblemStd = [...Array(8).keys()].map((p) => (p < 4 ? 1 : 0));
    assert.deepEqual(s2.paired[0].bootstrap95, {
      ...pairedBootstrap(perProblemMoi, perProblemStd, { seed: 4, resamples: 2000 }),
      seed: 4,
    });
    assert.match(markdownTable(s2), /bootstrap 95% CI of Δ/);
  });

  it('pass@k: the unbiased estimator against hand-computed and exact big-integer values', () => {
    // 1 − C(n−c, k)/C(n, k) by hand
    close(passAtK(5, 2, 2), 1 - 3 / 10, 1e-15, 'n5 c2 k2'); // C(3,2)=3, C(5,2)=10
    close(passAtK(10, 3, 1), 0.3, 1e-15, 'n10 c3 k1'); // pass@1 = c/n
    close(passAtK(10, 3, 5), 1 - 21 / 252, 1e-15, 'n10 c3 k5'); // C(7,5)=21, C(10,5)=252
    close(passAtK(16, 1, 4), 4 / 16, 1e-15, 'n16 c1 k4'); // one correct sample: k/n
    assert.equal(passAtK(4, 0, 2), 0);
    assert.equal(passAtK(4, 4, 1), 1);
    assert.equal(passAtK(4, 3, 2), 1); // n − c < k: every pair holds a correct sample
    // binomials far beyond a double (C(5000, 500) ≈ 1e700): exact ratio with BigInt
    const comb = (n: bigint, k: bigint) => {
      let r = 1n;
      for (let i = 1n; i <= k; i++) r = (r * (n - k + i)) / i;
      return r;
    };
    const exact = (n: number, c: number, k: number) => {
      const num = comb(BigInt(n - c), BigInt(k));
      const den = comb(BigInt(n), BigInt(k));
      return 1 - Number((num * 10n ** 18n) / den) / 1e18;
    };
    for (const [n, c, k] of [
      [5000, 7, 500],
      [2000, 10, 100],
      [200, 150, 40],
      [1000, 1, 999],
    ]) {
      close(passAtK(n, c, k), exact(n, c, k), 1e-12, `n${n} c${c} k${k}`);
    }
    assert.throws(() => passAtK(3, 1, 4), RangeError);
    assert.throws(() => passAtK(3, 4, 1), RangeError);
  });

  it('summaries: pass@k per mode, its paired bootstrap, and the no-answer count', () => {
    const rec = (problem: number, mode: string, sample: number, correct: boolean): ResultRecord => ({
      key: `${problem}/${sample}/${mode}`,
      problem,
      sample,
      mode,
      mode_used: mode,
      seed: 0,
      prompt: '',
      completion: '',
      answer: null,
      extracted: correct || sample === 0 ? 'x' : null,
      correct,
      format_only: false,
      reason: null,
      prompt_tokens: 1,
      completion_tokens: 5,
      finish_reason: 'stop',
      seconds: 0,
      mean_entropy: null,
      mean_weight: null,
    });
    // 3 problems × 4 samples; correct counts: standard c = [0, 1, 4], moi c = [2, 1, 3]
    const cs: Record<string, number[]> = { standard: [0, 1, 4], moi: [2, 1, 3] };
    const records = ['standard', 'moi'].flatMap((m) =>
      [0, 1, 2].flatMap((p) => [0, 1, 2, 3].map((k) => rec(p, m, k, k < cs[m][p]))),
    );
    const s = summarize(records, {
      task: 't',
      source: 's',
      model: 'm',
      modes: ['standard', 'moi'],
      problems: 3,
      samples: 4,
      seed: 9,
      passAt: [1, 2],
    });
    // pass@2 by hand: c=0 → 0; c=1 → 1 − C(3,2)/C(4,2) = 1/2; c=2 → 1 − 1/6 = 5/6; c=3, c=4 → 1
    close(s.modes[0].pass_at['pass@1'], (0 + 0.25 + 1) / 3, 1e-12, 'standard pass@1');
    close(s.modes[0].pass_at['pass@2'], (0 + 0.5 + 1) / 3, 1e-12, 'standard pass@2');
    close(s.modes[1].pass_at['pass@1'], (0.5 + 0.25 + 0.75) / 3, 1e-12, 'moi pass@1');
    close(s.modes[1].pass_at['pass@2'], (5 / 6 + 0.5 + 1) / 3, 1e-12, 'moi pass@2');
    close(s.modes[1].pass_at['pass@1'], s.modes[1].accuracy, 1e-12, 'pass@1 with equal samples is the accuracy');
    // the bootstrap pairs the per-problem values, problem by problem
    const p2 = (c: number) => passAtK(4, c, 2);
    assert.deepEqual(s.paired[0].pass_at['pass@2'].bootstrap95, {
      ...pairedBootstrap([p2(2), p2(1), p2(3)], [p2(0), p2(1), p2(4)], { seed: 9, resamples: 2000 }),
      seed: 9,
    });
    close(s.paired[0].pass_at['pass@2'].diff, (5 / 6 - 0 + 0 + 0) / 3, 1e-12, 'Δ pass@2');
    // no answer: the wrong samples 1–3 have extracted = null
    assert.equal(s.modes[0].no_answer, records.filter((r) => r.mode === 'standard' && r.extracted === null).length);
    assert.deepEqual(s.pass_at_k, [1, 2]);
    const md = markdownTable(s);
    assert.match(md, /\| mode \| pass@1 \| pass@2 \|/);
    assert.match(md, /\| moi \| 50\.0% \| 77\.8% \|/);
  });
});
