/**
 * An evaluation run: every problem × sample × mode through a Completer, results streamed to
 * DIR/results.jsonl, then summary.json, the markdown table and report.html.
 *
 * Code tasks (LiveCodeBench) are graded by running each completion in the sandbox as soon as it
 * arrives, while decoding goes on (the sandbox's workers run at the lowest CPU priority); a
 * result line is written once its verdict is known.
 *
 * Pairing: the prompts and the per-request seeds are the same under every mode. The seed of
 * (problem i, sample k) is derived from --seed, i and k only, never from batch composition, so a
 * resumed run gives the same results as an uninterrupted one.
 */
import { setMaxListeners } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import cliProgress from 'cli-progress';
import { MoiError, UsageError } from '@moi/core';
import type { MixMode, SoftOptions } from '@moi/moi';
import { splitmix64 } from '@moi/core';
import type { SamplingParams } from '@moi/core';
import { encodePrompt, renderChat, type Tokenizer } from '@moi/engine';
import type { Completer, CompletionRequest } from './completer.ts';
import { writeReport } from './report.ts';
import { RESULTS_FILE, appendResult, readResults, writeResultsSorted } from './results.ts';
import { markdownTable, summarize, type ResultRecord, type Summary } from './summary.ts';
import type { EvalTask, Problem } from './problem.ts';
import type { Verdict } from './scorers.ts';

export interface EvalSettings {
  model: string;
  task: string;
  modes: MixMode[];
  beta?: number;
  mixTopK?: number | 'all';
  /** Soft Thinking's options, for the soft mode's completions */
  soft?: SoftOptions;
  limit?: number;
  samples: number;
  seed: number;
  sampling: Omit<Partial<SamplingParams>, 'seed'>;
  maxTokens: number;
  endpoint?: string;
  /** in-process runs: the --dtype the weights were loaded at (auto, f32, bf16, q8) */
  dtype?: string;
  /** livecodebench: which problems (release, date window) */
  release?: string;
  startDate?: string;
  endDate?: string;
  /** livecodebench: the limits programs run under (they decide verdicts) */
  exec?: { timeoutSeconds: number; wallSeconds: number; memoryMiB: number };
}

export interface RunOptions {
  out: string;
  completer: Completer;
  /** renders prompts locally (chat template) and counts their tokens; null with an endpoint and no tokenizer */
  tokenizer: Tokenizer | null;
  progress: boolean;
  signal?: AbortSignal;
  /** the k of pass@k to report (default [1]; each at most `samples`) */
  passAt?: number[];
}

/** The seed of (problem, sample): splitmix64 of the run seed, problem and sample; a 31-bit integer. */
export function deriveSeed(seed: number, problem: number, sample: number): number {
  const next = splitmix64((BigInt.asUintN(32, BigInt(seed)) << 32n) ^ (BigInt(problem) << 12n) ^ BigInt(sample));
  return Number(next() & 0x7fffffffn);
}

/** The prompt as text and ids: chat template + assistant prefix, or the raw text without a template. */
export function renderPrompt(tok: Tokenizer | null, p: Problem): { text: string; ids?: number[] } {
  if (!tok) return { text: p.raw };
  if (tok.chatTemplate === undefined) return { text: p.raw, ids: encodePrompt(tok, p.raw) };
  const text = renderChat(tok, p.messages, { addGenerationPrompt: true }) + p.assistantPrefix;
  return { text, ids: encodePrompt(tok, text, { templated: true }) };
}

const SETTINGS_FILE = 'run.json';

/**
 * What a run.json written before a setting existed meant by its absence: in-process runs before
 * --dtype loaded 'auto' (the only choice there was), so they resume under the default flags.
 */
function withLegacyDefaults(before: Record<string, unknown>, now: Record<string, unknown>): Record<string, unknown> {
  return 'dtype' in now && !('dtype' in before) && before.endpoint === undefined
    ? { ...before, dtype: 'auto' }
    : before;
}

/**
 * A setting's value for comparison: objects with their keys in order and empty ones dropped (an
 * earlier run.json wrote `"afterThinking": {}` for Soft Thinking options given without one).
 */
function canonical(v: unknown): string | undefined {
  const norm = (x: unknown): unknown => {
    if (Array.isArray(x)) return x.map(norm);
    if (x === null || typeof x !== 'object') return x;
    const entries = Object.entries(x)
      .map(([k, y]) => [k, norm(y)] as const)
      .filter(([, y]) => !(y !== null && typeof y === 'object' && !Array.isArray(y) && Object.keys(y).length === 0))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return Object.fromEntries(entries);
  };
  return JSON.stringify(norm(v));
}

/** Refuse to mix two different runs in one folder. */
function checkSettings(dir: string, settings: EvalSettings): void {
  const file = path.join(dir, SETTINGS_FILE);
  const now = JSON.parse(JSON.stringify(settings)) as Record<string, unknown>;
  if (fs.existsSync(file)) {
    const before = withLegacyDefaults(JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>, now);
    for (const k of new Set([...Object.keys(before), ...Object.keys(now)])) {
      if (canonical(before[k]) !== canonical(now[k])) {
        throw new UsageError(
          'E_RESUME',
          `${dir} holds a run with different settings (${k}: ${JSON.stringify(before[k])} there, ${JSON.stringify(now[k])} now); resume with the same flags or use another --out`,
        );
      }
    }
    return;
  }
  fs.writeFileSync(file, JSON.stringify(now, null, 2) + '\n');
}

export interface RunOutcome {
  summary: Summary;
  records: ResultRecord[];
  markdown: string;
  resumed: number;
}

export async function runEval(task: EvalTask, settings: EvalSettings, opts: RunOptions): Promise<RunOutcome> {
  const passAt = opts.passAt ?? [1];
  const tooBig = passAt.find((k) => !Number.isInteger(k) || k < 1 || k > settings.samples);
  if (tooBig !== undefined)
    throw new UsageError(
      'E_USAGE',
      `--pass-at ${tooBig} needs a positive integer k <= --samples (${settings.samples})`,
    );
  fs.mkdirSync(opts.out, { recursive: true });
  checkSettings(opts.out, settings);
  const resultsFile = path.join(opts.out, RESULTS_FILE);
  const { modes, samples } = settings;
  const order = (r: { problem: number; sample: number; mode: string }) =>
    (r.problem * samples + r.sample) * modes.length + modes.indexOf(r.mode as MixMode);
  const keyOf = (problem: number, sample: number, mode: string) => `${problem}/${sample}/${mode}`;

  const records = readResults(resultsFile);
  const have = new Set(records.map((r) => r.key));
  const resumed = records.length;

  // ---- the work not done yet, in canonical order
  type Item = {
    problem: Problem;
    sample: number;
    mode: MixMode;
    seed: number;
    prompt: { text: string; ids?: number[] };
  };
  const items = new Map<string, Item>();
  const prompts = new Map<number, { text: string; ids?: number[] }>();
  for (const p of task.problems) {
    for (let k = 0; k < samples; k++) {
      for (const mode of modes) {
        const key = keyOf(p.index, k, mode);
        if (have.has(key)) continue;
        if (!prompts.has(p.index)) prompts.set(p.index, renderPrompt(opts.tokenizer, p));
        items.set(key, {
          problem: p,
          sample: k,
          mode,
          seed: deriveSeed(settings.seed, p.index, k),
          prompt: prompts.get(p.index)!,
        });
      }
    }
  }
  const requests: CompletionRequest[] = [...items.entries()].map(([key, it]) => ({
    key,
    messages: it.problem.messages,
    assistantPrefix: it.problem.assistantPrefix,
    promptText: it.prompt.text,
    rendered: opts.tokenizer !== null,
    promptIds: it.prompt.ids,
    mode: it.mode,
    ...(settings.beta !== undefined ? { beta: settings.beta } : {}),
    ...(settings.mixTopK !== undefined ? { mixTopK: settings.mixTopK } : {}),
    ...(settings.soft && it.mode === 'soft' ? { soft: settings.soft } : {}),
    sampling: { ...settings.sampling, seed: it.seed },
    maxTokens: settings.maxTokens,
  }));

  // ---- progress: ETA and running accuracy per mode
  const total = task.problems.length * samples * modes.length;
  const acc = new Map(modes.map((m) => [m as string, { right: 0, n: 0 }]));
  for (const r of records) {
    const a = acc.get(r.mode);
    if (a) {
      a.n++;
      if (r.correct) a.right++;
    }
  }
  const accText = () => [...acc].map(([m, a]) => `${m} ${a.right}/${a.n}`).join('  ');
  const bar = opts.progress
    ? new cliProgress.SingleBar(
        {
          stream: process.stderr,
          format: 'eval {bar} {value}/{total} | ETA {eta_formatted} | {acc}',
          hideCursor: true,
          etaBuffer: 64,
        },
        cliProgress.Presets.shades_classic,
      )
    : null;
  bar?.start(total, records.length, { acc: accText() });

  // one listener on the caller's signal; every request and program run listens to this one
  const stop = new AbortController();
  setMaxListeners(0, stop.signal);
  const onStop = () => stop.abort(opts.signal?.reason);
  if (opts.signal?.aborted) onStop();
  opts.signal?.addEventListener('abort', onStop, { once: true });
  const signal = stop.signal;

  // ---- verdicts: scored at once, or run in the sandbox while decoding goes on
  const judge = (completion: string, problem: Problem): Promise<Verdict> =>
    task.kind === 'livecodebench'
      ? task.execute(completion, problem, signal)
      : Promise.resolve(task.score(completion, problem.answer));
  const grading = new Set<Promise<void>>();
  let gradingFailure: unknown = null;
  // one line at a time, in the order verdicts arrive
  let writing = Promise.resolve();
  const append = (rec: ResultRecord) => (writing = writing.then(() => appendResult(resultsFile, rec)));
  try {
    for await (const res of opts.completer.complete(requests, signal)) {
      const it = items.get(res.key);
      if (!it) throw new MoiError('E_INTERNAL', `a completion came back for an unknown request ${res.key}`);
      const job = judge(res.completion, it.problem)
        .then(async (v) => {
          const rec: ResultRecord = {
            key: res.key,
            problem: it.problem.index,
            sample: it.sample,
            mode: it.mode,
            mode_used: res.modeUsed,
            seed: it.seed,
            prompt: it.prompt.text,
            completion: res.completion,
            answer: it.problem.answer,
            extracted: v.extracted,
            correct: v.correct,
            format_only: v.formatOnly,
            reason: v.reason ?? null,
            prompt_tokens: res.promptTokens,
            completion_tokens: res.completionTokens,
            finish_reason: res.finishReason,
            seconds: res.seconds,
            mean_entropy: res.meanEntropy,
            mean_weight: res.meanWeight,
            ...(it.problem.meta ? { meta: it.problem.meta } : {}),
            ...(v.execution ? { execution: v.execution } : {}),
          };
          await append(rec);
          records.push(rec);
          const a = acc.get(rec.mode)!;
          a.n++;
          if (rec.correct) a.right++;
          bar?.update(records.length, { acc: accText() });
        })
        .catch((err: unknown) => {
          // a run stopped by the signal leaves this completion unjudged: it is decoded again on resume
          if (!signal.aborted) gradingFailure ??= err;
        });
      grading.add(job);
      void job.finally(() => grading.delete(job));
      if (gradingFailure) break;
    }
  } finally {
    await Promise.allSettled([...grading]);
    opts.signal?.removeEventListener('abort', onStop);
    bar?.stop();
  }
  if (gradingFailure) throw gradingFailure;
  if (opts.signal?.aborted || records.length < total) {
    throw new MoiError(
      'E_INTERRUPTED',
      `stopped with ${records.length} of ${total} results in ${resultsFile}; run the same command again to resume`,
    );
  }

  writeResultsSorted(resultsFile, records, order);
  records.sort((a, b) => order(a) - order(b));
  const summary = summarize(records, {
    task: settings.task,
    source: task.source,
    model: settings.model,
    modes,
    problems: task.problems.length,
    samples,
    seed: settings.seed,
    passAt,
    ...(task.kind === 'livecodebench' ? { sandbox: await task.sandbox.protections() } : {}),
  });
  fs.writeFileSync(path.join(opts.out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
  const markdown = markdownTable(summary);
  fs.writeFileSync(path.join(opts.out, 'summary.md'), markdown);
  writeReport(path.join(opts.out, 'report.html'), summary, records, {
    beta: settings.beta,
    temperature: settings.sampling.temperature,
    topP: settings.sampling.topP,
    topK: settings.sampling.topK,
    maxTokens: settings.maxTokens,
    dtype: settings.dtype,
    seed: settings.seed,
    endpoint: settings.endpoint,
    date: new Date().toISOString(),
  });
  return { summary, records, markdown, resumed };
}
