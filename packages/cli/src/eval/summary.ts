/**
 * Per-mode accuracy with Wilson intervals, pass@k, paired comparisons against standard (McNemar on
 * the paired verdicts, the paired bootstrap on per-problem pass@k), as JSON and markdown.
 */
import type { Protections } from './sandbox.ts';
import { EXEC_STATUSES, type ExecStatus, type Execution } from './scorers.ts';
import { mcnemarExact, pairedBootstrap, passAtK, wilson } from './stats.ts';

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
  /** what else the task records of the problem (GPQA's option order, LiveCodeBench's platform and date) */
  meta?: Record<string, unknown>;
  /** code tasks: how the program did on its tests */
  execution?: Execution;
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
  /** completions with no answer found (or an invalid one, e.g. a GPQA letter outside A–D; code tasks: no program) */
  no_answer: number;
  /** the unbiased pass@k estimator averaged over problems, for each k of --pass-at ("pass@1": …) */
  pass_at: Record<string, number>;
  /** code tasks: completions per execution outcome */
  execution?: Record<ExecStatus, number>;
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
  /** for each k of --pass-at: the difference of pass@k and its paired bootstrap 95% interval over problems */
  pass_at: Record<
    string,
    { diff: number; bootstrap95: { mean: number; lo: number; hi: number; resamples: number; seed: number } }
  >;
}

export interface Summary {
  task: string;
  source: string;
  model: string;
  problems: number;
  samples: number;
  /** the k of pass@k reported */
  pass_at_k: number[];
  modes: ModeSummary[];
  paired: PairedSummary[];
  /** code tasks: what protected the host while the programs ran */
  sandbox?: Protections;
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((s, x) => s + x, 0) / xs.length : 0);
const meanOrNull = (xs: (number | null)[]) => {
  const v = xs.filter((x): x is number => x !== null);
  return v.length ? mean(v) : null;
};

/** Per problem: pass@k from its samples (n, c), for each k that n allows. */
function perProblemPassAt(rs: ResultRecord[], ks: number[]): Map<number, Map<number, number>> {
  const counts = new Map<number, { n: number; c: number }>();
  for (const r of rs) {
    const x = counts.get(r.problem) ?? { n: 0, c: 0 };
    x.n++;
    if (r.correct) x.c++;
    counts.set(r.problem, x);
  }
  const out = new Map<number, Map<number, number>>();
  for (const [p, { n, c }] of counts) out.set(p, new Map(ks.filter((k) => k <= n).map((k) => [k, passAtK(n, c, k)])));
  return out;
}

export interface SummaryMeta {
  task: string;
  source: string;
  model: string;
  modes: string[];
  problems: number;
  samples: number;
  seed: number;
  /** the k of pass@k (default [1]) */
  passAt?: number[];
  sandbox?: Protections;
}

export function summarize(records: ResultRecord[], meta: SummaryMeta): Summary {
  const ks = meta.passAt ?? [1];
  const byMode = new Map<string, ResultRecord[]>(meta.modes.map((m) => [m, []]));
  for (const r of records) byMode.get(r.mode)?.push(r);
  const passAt = new Map(meta.modes.map((m) => [m, perProblemPassAt(byMode.get(m)!, ks)]));
  const modes: ModeSummary[] = meta.modes.map((mode) => {
    const rs = byMode.get(mode)!;
    const correct = rs.filter((r) => r.correct).length;
    const pp = [...passAt.get(mode)!.values()];
    const executed = rs.filter((r) => r.execution);
    return {
      mode,
      mode_used: [...new Set(rs.map((r) => r.mode_used))],
      n: rs.length,
      correct,
      accuracy: rs.length ? correct / rs.length : 0,
      wilson95: wilson(correct, rs.length),
      format_only: rs.filter((r) => r.format_only).length,
      no_answer: rs.filter((r) => r.extracted === null).length,
      pass_at: Object.fromEntries(ks.map((k) => [`pass@${k}`, mean(pp.flatMap((m) => (m.has(k) ? [m.get(k)!] : [])))])),
      ...(executed.length
        ? {
            execution: Object.fromEntries(
              EXEC_STATUSES.map((st) => [st, executed.filter((r) => r.execution!.status === st).length]),
            ) as Record<ExecStatus, number>,
          }
        : {}),
      mean_completion_tokens: mean(rs.map((r) => r.completion_tokens)),
      mean_entropy: meanOrNull(rs.map((r) => r.mean_entropy)),
      mean_weight: meanOrNull(rs.map((r) => r.mean_weight)),
    };
  });
  const baseline = meta.modes.includes('standard') ? 'standard' : meta.modes[0];
  const base = new Map(byMode.get(baseline)!.map((r) => [`${r.problem}/${r.sample}`, r]));
  const paired: PairedSummary[] = meta.modes
    .filter((m) => m !== baseline)
    .map((mode) => {
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
      const out: PairedSummary = {
        mode,
        baseline,
        pairs,
        b,
        c,
        diff: pairs ? (c - b) / pairs : 0,
        mcnemar_p: mcnemarExact(b, c),
        pass_at: {},
      };
      if (meta.samples > 1) {
        const ps = [...perProblem.values()];
        const ci = pairedBootstrap(
          ps.map((p) => mean(p.a)),
          ps.map((p) => mean(p.z)),
          { seed: meta.seed, resamples: 2000 },
        );
        out.bootstrap95 = { ...ci, seed: meta.seed };
      }
      // pass@k per problem, paired by problem (problems where both modes have k samples)
      const mine = passAt.get(mode)!;
      const theirs = passAt.get(baseline)!;
      for (const k of ks) {
        const a: number[] = [];
        const z: number[] = [];
        for (const [p, m] of mine) {
          const o = theirs.get(p);
          if (m.has(k) && o?.has(k)) {
            a.push(m.get(k)!);
            z.push(o.get(k)!);
          }
        }
        const ci = pairedBootstrap(a, z, { seed: meta.seed, resamples: 2000 });
        out.pass_at[`pass@${k}`] = { diff: ci.mean, bootstrap95: { ...ci, seed: meta.seed } };
      }
      return out;
    });
  return {
    task: meta.task,
    source: meta.source,
    model: meta.model,
    problems: meta.problems,
    samples: meta.samples,
    pass_at_k: ks,
    modes,
    paired,
    ...(meta.sandbox ? { sandbox: meta.sandbox } : {}),
  };
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
const fix = (x: number | null, d = 3) => (x === null ? '–' : x.toFixed(d));

export function markdownTable(s: Summary): string {
  const lines = [
    `Task ${s.task} (${s.source}), model ${s.model}: ${s.problems} problems × ${s.samples} sample(s)`,
    '',
    '| mode | n | correct | accuracy | 95% CI (Wilson) | format only | mean tokens | mean H | mean w_y | no answer |',
    '|---|---|---|---|---|---|---|---|---|---|',
    ...s.modes.map(
      (m) =>
        `| ${m.mode}${m.mode_used.some((u) => u !== m.mode) ? ` (ran: ${m.mode_used.join(', ')})` : ''} | ${m.n} | ${m.correct} | ${pct(m.accuracy)} | ${pct(m.wilson95[0])} – ${pct(m.wilson95[1])} | ${m.format_only} | ${m.mean_completion_tokens.toFixed(1)} | ${fix(m.mean_entropy)} | ${fix(m.mean_weight)} | ${m.no_answer} |`,
    ),
  ];
  const ks = s.pass_at_k ?? [1];
  if (s.samples > 1 || ks.some((k) => k !== 1)) {
    lines.push('', `| mode | ${ks.map((k) => `pass@${k}`).join(' | ')} |`, `|---|${ks.map(() => '---|').join('')}`);
    for (const m of s.modes)
      lines.push(`| ${m.mode} | ${ks.map((k) => pct(m.pass_at[`pass@${k}`] ?? 0)).join(' | ')} |`);
  }
  const exec = s.modes.filter((m) => m.execution);
  if (exec.length) {
    lines.push(
      '',
      `| mode | ${EXEC_STATUSES.map((st) => st.replace('_', ' ')).join(' | ')} |`,
      `|---|${EXEC_STATUSES.map(() => '---|').join('')}`,
    );
    for (const m of exec) lines.push(`| ${m.mode} | ${EXEC_STATUSES.map((st) => m.execution![st]).join(' | ')} |`);
  }
  if (s.paired.length) {
    lines.push(
      '',
      `| paired vs ${s.paired[0].baseline} | pairs | b (base ✓, mode ✗) | c (base ✗, mode ✓) | Δ accuracy | McNemar exact p |${s.samples > 1 ? ' bootstrap 95% CI of Δ |' : ''}`,
    );
    lines.push(`|---|---|---|---|---|---|${s.samples > 1 ? '---|' : ''}`);
    for (const p of s.paired) {
      const boot = p.bootstrap95 ? ` ${pct(p.bootstrap95.lo)} – ${pct(p.bootstrap95.hi)} |` : '';
      lines.push(
        `| ${p.mode} | ${p.pairs} | ${p.b} | ${p.c} | ${(100 * p.diff).toFixed(1)} pt | ${p.mcnemar_p.toPrecision(3)} |${boot}`,
      );
    }
    if (s.samples > 1 || ks.some((k) => k !== 1)) {
      lines.push(
        '',
        `| paired vs ${s.paired[0].baseline}: Δ pass@k (bootstrap 95% CI over problems) | ${ks.map((k) => `pass@${k}`).join(' | ')} |`,
        `|---|${ks.map(() => '---|').join('')}`,
      );
      for (const p of s.paired) {
        lines.push(
          `| ${p.mode} | ${ks
            .map((k) => {
              const x = p.pass_at[`pass@${k}`];
              return x ? `${(100 * x.diff).toFixed(1)} pt (${pct(x.bootstrap95.lo)} – ${pct(x.bootstrap95.hi)})` : '–';
            })
            .join(' | ')} |`,
        );
      }
    }
  }
  if (s.sandbox) {
    const b = s.sandbox;
    lines.push(
      '',
      `Sandbox: ${b.python} ${b.python_version} as ${b.user}; network namespace ${b.network_namespace ? 'yes' : 'NO'}, PID namespace ${b.pid_namespace ? 'yes' : 'NO'}; ` +
        `${b.limits.cpu_seconds} s CPU / ${b.limits.wall_seconds} s idle wall / ${b.limits.address_space_mib} MiB per test; ${b.workers} workers at ${b.priority}` +
        (b.degraded.length ? `\nDegraded: ${b.degraded.join('; ')}` : ''),
    );
  }
  return lines.join('\n') + '\n';
}
