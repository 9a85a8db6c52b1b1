/** Per-mode accuracy with Wilson intervals, paired comparisons against standard, as JSON and markdown. */
import { mcnemarExact, pairedBootstrap, wilson } from './stats.ts';

/** One line of results.jsonl. */
export interface ResultRecord {
  key: string;
  problem: number;
  sample: number;
  mode: string;
  mode_used: string;
  seed: number;
  prompt: string;
  completion: string;
  answer: unknown;
  extracted: string | null;
  correct: boolean;
  format_only: boolean;
  reason: string | null;
  prompt_tokens: number;
  completion_tokens: number;
  finish_reason: string;
  seconds: number;
  mean_entropy: number | null;
  mean_weight: number | null;
}

export interface ModeSummary {
  mode: string;
  /** what really ran (differs from mode only through an endpoint that could not honour it) */
  mode_used: string[];
  n: number;
  correct: number;
  accuracy: number;
  wilson95: [number, number];
  format_only: number;
  mean_completion_tokens: number;
  mean_entropy: number | null;
  mean_weight: number | null;
}

export interface PairedSummary {
  mode: string;
  baseline: string;
  pairs: number;
  /** baseline right, mode wrong */
  b: number;
  /** baseline wrong, mode right */
  c: number;
  diff: number;
  mcnemar_p: number;
  /** with samples > 1: paired bootstrap over problems of the per-problem accuracy difference */
  bootstrap95?: { mean: number; lo: number; hi: number; resamples: number; seed: number };
}

export interface Summary {
  task: string;
  source: string;
  model: string;
  problems: number;
  samples: number;
  modes: ModeSummary[];
  paired: PairedSummary[];
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((s, x) => s + x, 0) / xs.length : 0);
const meanOrNull = (xs: (number | null)[]) => {
  const v = xs.filter((x): x is number => x !== null);
  return v.length ? mean(v) : null;
};

export function summarize(records: ResultRecord[], meta: { task: string; source: string; model: string; modes: string[]; problems: number; samples: number; seed: number }): Summary {
  const byMode = new Map<string, ResultRecord[]>(meta.modes.map((m) => [m, []]));
  for (const r of records) byMode.get(r.mode)?.push(r);
  const modes: ModeSummary[] = meta.modes.map((mode) => {
    const rs = byMode.get(mode)!;
    const correct = rs.filter((r) => r.correct).length;
    return {
      mode,
      mode_used: [...new Set(rs.map((r) => r.mode_used))],
      n: rs.length,
      correct,
      accuracy: rs.length ? correct / rs.length : 0,
      wilson95: wilson(correct, rs.length),
      format_only: rs.filter((r) => r.format_only).length,
      mean_completion_tokens: mean(rs.map((r) => r.completion_tokens)),
      mean_entropy: meanOrNull(rs.map((r) => r.mean_entropy)),
      mean_weight: meanOrNull(rs.map((r) => r.mean_weight)),
    };
  });
  const baseline = meta.modes.includes('standard') ? 'standard' : meta.modes[0];
  const base = new Map(byMode.get(baseline)!.map((r) => [`${r.problem}/${r.sample}`, r]));
  const paired: PairedSummary[] = meta.modes.filter((m) => m !== baseline).map((mode) => {
    let b = 0;
    let c = 0;
    let pairs = 0;
    const perProblem = new Map<number, { a: number[]; z: number[] }>();
    for (const r of byMode.get(mode)!) {
      const o = base.get(`${r.problem}/${r.sample}`);
      if (!o) continue;
      pairs++;
      if (o.correct && !r.correct) b++;
      if (!o.correct && r.correct) c++;
      const p = perProblem.get(r.problem) ?? { a: [], z: [] };
      p.a.push(r.correct ? 1 : 0);
      p.z.push(o.correct ? 1 : 0);
      perProblem.set(r.problem, p);
    }
    const out: PairedSummary = { mode, baseline, pairs, b, c, diff: pairs ? (c - b) / pairs : 0, mcnemar_p: mcnemarExact(b, c) };
    if (meta.samples > 1) {
      const ps = [...perProblem.values()];
      const ci = pairedBootstrap(ps.map((p) => mean(p.a)), ps.map((p) => mean(p.z)), { seed: meta.seed, resamples: 2000 });
      out.bootstrap95 = { ...ci, seed: meta.seed };
    }
    return out;
  });
  return { task: meta.task, source: meta.source, model: meta.model, problems: meta.problems, samples: meta.samples, modes, paired };
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
const fix = (x: number | null, d = 3) => (x === null ? '–' : x.toFixed(d));

export function markdownTable(s: Summary): string {
  const lines = [
    `Task ${s.task} (${s.source}), model ${s.model}: ${s.problems} problems × ${s.samples} sample(s)`,
    '',
    '| mode | n | correct | accuracy | 95% CI (Wilson) | format only | mean tokens | mean H | mean w_y |',
    '|---|---|---|---|---|---|---|---|---|',
    ...s.modes.map((m) => `| ${m.mode}${m.mode_used.some((u) => u !== m.mode) ? ` (ran: ${m.mode_used.join(', ')})` : ''} | ${m.n} | ${m.correct} | ${pct(m.accuracy)} | ${pct(m.wilson95[0])} – ${pct(m.wilson95[1])} | ${m.format_only} | ${m.mean_completion_tokens.toFixed(1)} | ${fix(m.mean_entropy)} | ${fix(m.mean_weight)} |`),
  ];
  if (s.paired.length) {
    lines.push('', `| paired vs ${s.paired[0].baseline} | pairs | b (base ✓, mode ✗) | c (base ✗, mode ✓) | Δ accuracy | McNemar exact p |${s.samples > 1 ? ' bootstrap 95% CI of Δ |' : ''}`);
    lines.push(`|---|---|---|---|---|---|${s.samples > 1 ? '---|' : ''}`);
    for (const p of s.paired) {
      const boot = p.bootstrap95 ? ` ${pct(p.bootstrap95.lo)} – ${pct(p.bootstrap95.hi)} |` : '';
      lines.push(`| ${p.mode} | ${p.pairs} | ${p.b} | ${p.c} | ${(100 * p.diff).toFixed(1)} pt | ${p.mcnemar_p.toPrecision(3)} |${boot}`);
    }
  }
  return lines.join('\n') + '\n';
}
