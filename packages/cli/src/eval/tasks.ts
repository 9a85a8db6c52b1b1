/**
 * Evaluation tasks: where the problems come from, how each becomes a prompt, how a completion is
 * scored.
 *
 *   countdown            yzhuang/tinyzero-Countdown-Tasks-4 (the reference's default)
 *   countdown:gen        generated from --seed, each proven solvable by the built-in solver
 *   countdown:SRC        a hub dataset id, or a local .jsonl / .parquet file
 *   aime                 AI-MO/aimo-validation-aime;  aime:SRC likewise
 *   gpqa                 Idavidrein/gpqa, gpqa_diamond (gated: HF_TOKEN);  gpqa:SRC likewise
 *   livecodebench        livecodebench/code_generation_lite, --release and a date window;
 *                        livecodebench:SRC a .jsonl file, a folder of test*.jsonl, or a hub id
 *   jsonl:PATH           {prompt | messages, answer} lines, answer matched exactly, by regex or as a number
 */
import fs from 'node:fs';
import path from 'node:path';
import { UsageError } from '@moi/core';
import type { ChatMessage } from '@moi/engine';
import { resolveDatasetFiles } from '../hub/dataset.ts';
import { loadRows, type Row } from './data.ts';
import { DEFAULT_GPQA, GPQA_CONFIG, GPQA_REVISION, gpqaRow, scoreGpqa } from './gpqa.ts';
import {
  DEFAULT_LIVECODEBENCH,
  DEFAULT_RELEASE,
  checkDate,
  isReleaseFile,
  readLcbRows,
  releaseFiles,
  scoreLiveCodeBench,
  type LcbAnswer,
  type LcbRow,
} from './livecodebench.ts';
import type { CodeTask, EvalTask, Problem, Task } from './problem.ts';
import { Sandbox, type SandboxOptions } from './sandbox.ts';
import { generateCountdown } from './solver.ts';
import {
  scoreAime,
  scoreCountdown,
  scoreGeneric,
  type CountdownAnswer,
  type GenericAnswer,
  type Verdict,
} from './scorers.ts';

export type { CodeTask, EvalTask, Problem, Task, TaskKind } from './problem.ts';

export const DEFAULT_COUNTDOWN = 'yzhuang/tinyzero-Countdown-Tasks-4';
export const DEFAULT_AIME = 'AI-MO/aimo-validation-aime';

// ---- prompts

/** TinyZero's countdown prompt (template_type "base"), as the reference's datasets hold it. */
export function tinyZeroPrompt(numbers: number[], target: number): string {
  return (
    'A conversation between User and Assistant. The user asks a question, and the Assistant solves it. ' +
    'The assistant first thinks about the reasoning process in the mind and then provides the user with the answer.\n' +
    `User: Using the numbers [${numbers.join(', ')}], create an equation that equals ${target}. ` +
    'You can use basic arithmetic operations (+, -, *, /) and each number can only be used once. ' +
    'Show your work in <think> </think> tags. And return the final answer in <answer> </answer> tags, ' +
    'for example <answer> (1 + 2) / 3 </answer>.\nAssistant: Let me solve this step by step.\n<think>'
  );
}

/**
 * As the reference's tinyzero_moi.py: the user turn is the text up to `Assistant:`, and what
 * follows it (trimmed) is appended after the chat template's generation prompt.
 */
function countdownProblem(index: number, text: string, answer: CountdownAnswer): Problem {
  const at = text.indexOf('Assistant:');
  const user = at >= 0 ? text.slice(0, at) : text;
  const prefix = at >= 0 ? text.slice(at + 'Assistant:'.length).trim() : '';
  return { index, messages: [{ role: 'user', content: user }], assistantPrefix: prefix, raw: text, answer };
}

/** The AIME prompt; `\b` is a literal backslash-b here (the reference's Python string made it a backspace). */
export function aimePrompt(problem: string): string {
  return `Question: ${problem}\n\nPlease reason step by step, and put your final answer within \\boxed{}.`;
}

// ---- rows to problems

const intList = (v: unknown): number[] | null =>
  Array.isArray(v) && v.length > 0 && v.every((x) => Number.isInteger(x)) ? (v as number[]) : null;

function countdownRow(row: Row, index: number, where: string): Problem {
  const gt = (row.reward_model as { ground_truth?: Row } | undefined)?.ground_truth;
  const target = row.target ?? gt?.target;
  const numbers = intList(row.nums) ?? intList(row.numbers) ?? intList(gt?.numbers) ?? intList(gt?.nums);
  if (!Number.isInteger(target) || !numbers) {
    throw new UsageError(
      'E_DATA',
      `${where} row ${index}: a countdown row needs an integer target and a list of integer nums/numbers`,
    );
  }
  const answer = { target: target as number, numbers };
  const prompt = row.prompt;
  // the TinyZero (verl) layout carries its own prompt text
  if (Array.isArray(prompt) && typeof (prompt[0] as ChatMessage | undefined)?.content === 'string') {
    return countdownProblem(index, (prompt[0] as ChatMessage).content, answer);
  }
  return countdownProblem(index, tinyZeroPrompt(numbers, answer.target), answer);
}

function aimeRow(row: Row, index: number, where: string): Problem {
  if (typeof row.problem !== 'string' || (typeof row.answer !== 'string' && typeof row.answer !== 'number')) {
    throw new UsageError('E_DATA', `${where} row ${index}: an aime row needs a string problem and an answer`);
  }
  const text = aimePrompt(row.problem);
  return { index, messages: [{ role: 'user', content: text }], assistantPrefix: '', raw: text, answer: row.answer };
}

function isGenericAnswer(a: unknown): a is GenericAnswer {
  return (
    typeof a === 'string' ||
    (typeof a === 'number' && Number.isFinite(a)) ||
    (!!a && typeof a === 'object' && typeof (a as { regex?: unknown }).regex === 'string')
  );
}

function jsonlRow(row: Row, index: number, where: string): Problem {
  if (!isGenericAnswer(row.answer)) {
    throw new UsageError(
      'E_DATA',
      `${where}:${index + 1}: "answer" must be a string (exact), a number, or {"regex": "..."}`,
    );
  }
  if (typeof (row.answer as { regex?: string }).regex === 'string') {
    try {
      new RegExp((row.answer as { regex: string }).regex, (row.answer as { flags?: string }).flags ?? '');
    } catch (err) {
      throw new UsageError('E_DATA', `${where}:${index + 1}: bad regex (${(err as Error).message})`);
    }
  }
  if (typeof row.prompt === 'string') {
    return {
      index,
      messages: [{ role: 'user', content: row.prompt }],
      assistantPrefix: '',
      raw: row.prompt,
      answer: row.answer,
    };
  }
  const msgs = row.messages;
  if (
    Array.isArray(msgs) &&
    msgs.length &&
    msgs.every((m) => m && typeof m.role === 'string' && typeof m.content === 'string')
  ) {
    const messages = msgs as ChatMessage[];
    const last = messages[messages.length - 1];
    // a final assistant message is a prefix the completion continues
    const prefix = last.role === 'assistant' ? last.content : '';
    const turns = last.role === 'assistant' ? messages.slice(0, -1) : messages;
    return {
      index,
      messages: turns,
      assistantPrefix: prefix,
      raw: turns.map((m) => m.content).join('\n\n') + (prefix ? `\n\n${prefix}` : ''),
      answer: row.answer,
    };
  }
  throw new UsageError(
    'E_DATA',
    `${where}:${index + 1}: a line needs "prompt" (a string) or "messages" ([{role, content}, ...])`,
  );
}

export interface TaskOptions {
  limit?: number;
  seed?: number;
  split?: string;
  revision?: string;
}

/** livecodebench's options: which problems, and the sandbox that runs the programs. */
export interface CodeTaskOptions extends TaskOptions {
  /** release_vN, release_latest, vN or vA_vB (files of the hub dataset or a folder) */
  release?: string;
  /** contest dates to keep, YYYY-MM-DD, both ends included (as LiveCodeBench's loader) */
  startDate?: string;
  endDate?: string;
  sandbox?: SandboxOptions;
}

/** Parse `--task` and load its problems (the first `limit`). */
export async function loadTask(spec: string, opts: TaskOptions = {}): Promise<Task> {
  const colon = spec.indexOf(':');
  const kind = colon >= 0 ? spec.slice(0, colon) : spec;
  const arg = colon >= 0 ? spec.slice(colon + 1) : '';
  const take = <T>(xs: T[]) => (opts.limit !== undefined ? xs.slice(0, opts.limit) : xs);
  const rowsOf = async (src: string) => {
    const { rows, where } = await loadRows(src, { split: opts.split, revision: opts.revision });
    return { rows: take(rows), where };
  };
  if (kind === 'countdown') {
    const score = (c: string, a: unknown) => scoreCountdown(c, a as CountdownAnswer);
    if (arg === 'gen') {
      const n = opts.limit ?? 128;
      const seed = opts.seed ?? 0;
      const problems = generateCountdown(n, seed).map((p, i) =>
        countdownProblem(i, tinyZeroPrompt(p.numbers, p.target), { target: p.target, numbers: p.numbers }),
      );
      return { kind, spec, source: `generated (seed ${seed})`, problems, score };
    }
    const { rows, where } = await rowsOf(arg || DEFAULT_COUNTDOWN);
    return { kind, spec, source: where, problems: rows.map((r, i) => countdownRow(r, i, where)), score };
  }
  if (kind === 'aime') {
    const { rows, where } = await rowsOf(arg || DEFAULT_AIME);
    return {
      kind,
      spec,
      source: where,
      problems: rows.map((r, i) => aimeRow(r, i, where)),
      score: (c, a) => scoreAime(c, a as string | number),
    };
  }
  if (kind === 'gpqa') {
    const seed = opts.seed ?? 0;
    // the gated hub dataset's CSV files, read as the hub's parquet conversion of its Diamond config
    const { rows, where } = arg
      ? await rowsOf(arg)
      : {
          rows: take(
            (await loadRows(DEFAULT_GPQA, { split: opts.split, config: GPQA_CONFIG, revision: GPQA_REVISION })).rows,
          ),
          where: `${DEFAULT_GPQA} ${GPQA_CONFIG} (${opts.split ?? 'train'})`,
        };
    return {
      kind,
      spec,
      source: where,
      problems: rows.map((r, i) => gpqaRow(r, i, where, seed)),
      score: (c, a) => scoreGpqa(c, a as string),
    };
  }
  if (kind === 'jsonl') {
    if (!arg) throw new UsageError('E_USAGE', '--task jsonl:PATH needs a file');
    const { rows, where } = await rowsOf(arg);
    return {
      kind,
      spec,
      source: where,
      problems: rows.map((r, i) => jsonlRow(r, i, where)),
      score: (c, a) => scoreGeneric(c, a as GenericAnswer),
    };
  }
  throw new UsageError('E_USAGE', `unknown task ${JSON.stringify(spec)}: use ${TASKS}`);
}

const TASKS =
  'countdown, countdown:gen, countdown:SRC, aime, aime:SRC, gpqa, gpqa:SRC, livecodebench, livecodebench:SRC or jsonl:PATH';

/** Any task: livecodebench (a code task, run in a sandbox) or one of loadTask's. */
export async function loadEvalTask(spec: string, opts: CodeTaskOptions = {}): Promise<EvalTask> {
  const colon = spec.indexOf(':');
  const kind = colon >= 0 ? spec.slice(0, colon) : spec;
  if (kind !== 'livecodebench') {
    if (opts.release !== undefined || opts.startDate !== undefined || opts.endDate !== undefined) {
      throw new UsageError('E_USAGE', '--release, --start-date and --end-date are for --task livecodebench');
    }
    return loadTask(spec, opts);
  }
  return loadLiveCodeBench(spec, colon >= 0 ? spec.slice(colon + 1) : '', opts);
}

/** The problems of LiveCodeBench's files, each read back (and cached briefly) when graded. */
async function loadLiveCodeBench(spec: string, arg: string, opts: CodeTaskOptions): Promise<CodeTask> {
  checkDate(opts.startDate, '--start-date');
  checkDate(opts.endDate, '--end-date');
  const release = opts.release ?? DEFAULT_RELEASE;
  const wanted = releaseFiles(release);
  const window = {
    ...(opts.startDate ? { start: opts.startDate } : {}),
    ...(opts.endDate ? { end: opts.endDate } : {}),
  };
  const windowText = [opts.startDate ? `from ${opts.startDate}` : '', opts.endDate ? `to ${opts.endDate}` : '']
    .filter(Boolean)
    .join(' ');
  let files: string[];
  let source: string;
  let label = (f: string) => f;
  let used: string | null = release;
  const local = arg && (/\.jsonl$/i.test(arg) || arg.startsWith('.') || path.isAbsolute(arg) || fs.existsSync(arg));
  if (local && fs.existsSync(arg) && fs.statSync(arg).isFile()) {
    if (opts.release !== undefined)
      throw new UsageError(
        'E_USAGE',
        `--release picks files of the hub dataset or a folder; ${arg} is read whole (use --start-date/--end-date)`,
      );
    files = [arg];
    source = arg;
    used = null;
  } else if (local) {
    if (!fs.existsSync(arg)) throw new UsageError('E_DATA', `data file ${arg} does not exist`);
    const have = fs.readdirSync(arg).filter(isReleaseFile);
    const pick = wanted ?? have.sort();
    const missing = pick.filter((f) => !have.includes(f));
    if (missing.length || !pick.length)
      throw new UsageError('E_DATA', `${arg} lacks ${missing.join(', ') || 'test*.jsonl files'} for ${release}`);
    files = pick.map((f) => path.join(arg, f));
    source = `${arg} (${release})`;
  } else {
    const repo = arg || DEFAULT_LIVECODEBENCH;
    files = await resolveDatasetFiles(
      repo,
      {
        pick: (all) => all.filter((f) => (wanted ? wanted.includes(f) : isReleaseFile(f))),
        ...(wanted ? { exact: wanted } : {}),
        code: 'E_DATASET_NO_FILES',
        none: (id, rev, all) =>
          `dataset ${id}@${rev} lacks the files of ${release} (${wanted ? wanted.join(', ') : 'test*.jsonl'}; it has: ${all.filter(isReleaseFile).join(', ') || 'none'})`,
      },
      { revision: opts.revision },
    );
    source = `${repo} (${release})`;
    label = (f) => `${repo}/${path.basename(f)}`;
  }
  if (windowText) source += ` ${windowText}`;
  let rows = await readLcbRows(files, window, label);
  if (opts.limit !== undefined) rows = rows.slice(0, opts.limit);
  const problems: Problem[] = rows.map((r, index) => ({
    index,
    messages: r.messages,
    assistantPrefix: '',
    raw: r.raw,
    answer: { question_id: r.info.question_id, ...(r.info.func_name ? { func_name: r.info.func_name } : {}) },
    meta: {
      title: r.info.title,
      platform: r.info.platform,
      difficulty: r.info.difficulty,
      contest_date: r.info.contest_date,
    },
  }));
  const sandbox = new Sandbox(opts.sandbox);
  const tests = testCache(rows);
  return {
    kind: 'livecodebench',
    spec,
    source,
    problems,
    sandbox,
    release: used,
    execute: (completion, problem, signal) => scoreLiveCodeBench(sandbox, completion, tests(problem.index), signal),
  };
}

/** A problem's decoded tests, the last few kept (its samples and modes are graded close together). */
function testCache(rows: LcbRow[], keep = 4): (index: number) => LcbAnswer {
  const cache = new Map<number, LcbAnswer>();
  return (index) => {
    let a = cache.get(index);
    if (a) {
      cache.delete(index);
    } else {
      a = rows[index].tests();
      if (cache.size >= keep) cache.delete(cache.keys().next().value!);
    }
    cache.set(index, a);
    return a;
  };
}

/** The scorer of a task kind, for `eval score` (livecodebench: see scoreLiveCodeBench). */
export function scorerFor(kind: string): (completion: string, answer: unknown) => Verdict {
  if (kind === 'countdown') return (c, a) => scoreCountdown(c, a as CountdownAnswer);
  if (kind === 'aime') return (c, a) => scoreAime(c, a as string | number);
  if (kind === 'gpqa') return (c, a) => scoreGpqa(c, a as string);
  if (kind === 'jsonl') return (c, a) => scoreGeneric(c, a as GenericAnswer);
  throw new UsageError(
    'E_USAGE',
    `--task must be countdown, aime, gpqa, livecodebench or jsonl, got ${JSON.stringify(kind)}`,
  );
}
