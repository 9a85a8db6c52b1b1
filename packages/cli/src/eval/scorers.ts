/**
 * Scoring completions: Countdown (an equation over given numbers), AIME (an integer), GPQA (a
 * letter, in gpqa.ts), LiveCodeBench (a program run on tests, in livecodebench.ts), and generic
 * answers for `jsonl:` tasks (exact text, a regex, or a number). Every extractor is a linear scan
 * (indexOf, or regexes without nested quantifiers), so a 100 kB completion costs microseconds.
 */
import { evaluate, tokenize } from './expression.ts';

export interface Verdict {
  /** the answer text taken from the completion (null: none found) */
  extracted: string | null;
  correct: boolean;
  /**
   * The reference's format credit (0.1): an answer was extracted but is not correct. Reported
   * beside accuracy, never counted as correct.
   */
  formatOnly: boolean;
  /** why it is wrong, for the report */
  reason?: string;
  /** code tasks: how running the program went */
  execution?: Execution;
}

/** How a program did on its tests: passed, or the first failure's kind. */
export type ExecStatus =
  'passed' | 'wrong_answer' | 'timeout' | 'runtime_error' | 'memory' | 'output_limit' | 'no_code';
export const EXEC_STATUSES: ExecStatus[] = [
  'passed',
  'wrong_answer',
  'timeout',
  'runtime_error',
  'memory',
  'output_limit',
  'no_code',
];

export interface Execution {
  status: ExecStatus;
  /** tests passed, run in order and stopping at the first failure, of the total */
  passed: number;
  total: number;
  /** the first failing test (0-based, public tests first) */
  failed_test?: number;
  detail?: string;
  /** wall-clock seconds of the runs */
  seconds: number;
}

// ---- extraction

/**
 * Contents of the last `open…close` pair, found as a left-to-right non-greedy regex finds them
 * (each match starts at the next `open` and ends at the first `close` after it), in one pass.
 */
export function lastDelimited(text: string, open: string, close: string): string | null {
  let pos = 0;
  let last: string | null = null;
  for (;;) {
    const s = text.indexOf(open, pos);
    if (s < 0) break;
    const e = text.indexOf(close, s + open.length);
    if (e < 0) break; // no later open can be closed either
    last = text.slice(s + open.length, e);
    pos = e + close.length;
  }
  return last;
}

/** The last <answer>…</answer>, else the last \boxed{…}, trimmed; text from the first `=` on dropped. */
export function extractCountdownAnswer(completion: string): string | null {
  const found = lastDelimited(completion, '<answer>', '</answer>') ?? lastDelimited(completion, '\\boxed{', '}');
  if (found === null) return null;
  const eq = found.indexOf('=');
  return (eq >= 0 ? found.slice(0, eq) : found).trim();
}

export interface CountdownAnswer {
  target: number;
  numbers: number[];
}

function sameMultiset(a: bigint[], b: bigint[]): boolean {
  if (a.length !== b.length) return false;
  const x = [...a].sort((p, q) => (p < q ? -1 : p > q ? 1 : 0));
  const y = [...b].sort((p, q) => (p < q ? -1 : p > q ? 1 : 0));
  return x.every((v, i) => v === y[i]);
}

export function scoreCountdown(completion: string, answer: CountdownAnswer): Verdict {
  const extracted = extractCountdownAnswer(completion);
  if (extracted === null)
    return { extracted, correct: false, formatOnly: false, reason: 'no <answer> or \\boxed{} found' };
  const wrong = (reason: string): Verdict => ({ extracted, correct: false, formatOnly: true, reason });
  if (extracted === '') return wrong('empty answer');
  // numbers first (cheap, linear), so the exact arithmetic only ever sees the given numbers
  const t = tokenize(extracted);
  if ('reason' in t) return wrong(t.reason);
  const used = t.tokens.flatMap((k) => (k.kind === 'num' ? [k.value] : []));
  if (
    !sameMultiset(
      used,
      answer.numbers.map((n) => BigInt(n)),
    )
  ) {
    return wrong(`uses the numbers [${used.join(', ')}], not each of [${answer.numbers.join(', ')}] exactly once`);
  }
  const r = evaluate(extracted);
  if (!r.ok) return wrong(r.reason);
  if (!r.value.equalsInt(BigInt(answer.target))) return wrong(`equals ${r.value}, not ${answer.target}`);
  return { extracted, correct: true, formatOnly: false };
}

// ---- AIME

/** Commas between digits removed ("1,000" → "1000"), as the reference does before extracting. */
function dropThousandsCommas(text: string): string {
  return text.replace(/(\d),(?=\d)/g, '$1');
}

/**
 * The last \boxed{integer}, else the first integer on the last line, else the first integer
 * anywhere (the reference's fallbacks; it took the first \boxed, this takes the last).
 */
export function extractAimeAnswer(completion: string): string | null {
  const text = dropThousandsCommas(completion);
  let last: string | null = null;
  for (const m of text.matchAll(/\\boxed\{\s*(-?\d+)\s*\}/gi)) last = m[1];
  if (last !== null) return last;
  const lines = text.trim().split('\n');
  const onLast = /-?\d+/.exec(lines[lines.length - 1]);
  if (onLast) return onLast[0];
  const any = /-?\d+/.exec(text);
  return any ? any[0] : null;
}

export function scoreAime(completion: string, answer: string | number): Verdict {
  const extracted = extractAimeAnswer(completion);
  const gold = String(answer).trim();
  if (!/^-?\d+$/.test(gold))
    return {
      extracted,
      correct: false,
      formatOnly: false,
      reason: `the reference answer ${JSON.stringify(answer)} is not an integer`,
    };
  if (extracted === null) return { extracted, correct: false, formatOnly: false, reason: 'no integer found' };
  const correct = BigInt(extracted) === BigInt(gold);
  return { extracted, correct, formatOnly: !correct, ...(correct ? {} : { reason: `${extracted} ≠ ${gold}` }) };
}

// ---- generic answers (jsonl: tasks)

export type GenericAnswer = string | number | { regex: string; flags?: string };

/** The last <answer>…</answer> or \boxed{…}, else the last non-empty line. */
export function extractGeneric(completion: string): string | null {
  const tagged = lastDelimited(completion, '<answer>', '</answer>') ?? lastDelimited(completion, '\\boxed{', '}');
  if (tagged !== null) return tagged.trim();
  const lines = completion
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  return lines.length ? lines[lines.length - 1] : null;
}

const NUMBER = /-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?/g;

export function scoreGeneric(completion: string, answer: GenericAnswer): Verdict {
  if (typeof answer === 'object' && answer !== null) {
    const m = new RegExp(answer.regex, answer.flags ?? '').exec(completion);
    const extracted = m ? m[0] : null;
    return {
      extracted,
      correct: m !== null,
      formatOnly: false,
      ...(m ? {} : { reason: `no match for /${answer.regex}/` }),
    };
  }
  const extracted = extractGeneric(completion);
  if (extracted === null) return { extracted, correct: false, formatOnly: false, reason: 'empty completion' };
  if (typeof answer === 'number') {
    const nums = dropThousandsCommas(extracted).match(NUMBER);
    const got = nums ? Number(nums[nums.length - 1]) : NaN;
    const correct = Number.isFinite(got) && Math.abs(got - answer) <= 1e-9 * Math.max(1, Math.abs(answer));
    return {
      extracted,
      correct,
      formatOnly: !correct,
      ...(correct ? {} : { reason: `${nums ? got : 'no number'} ≠ ${answer}` }),
    };
  }
  const correct = extracted === answer.trim();
  return { extracted, correct, formatOnly: !correct, ...(correct ? {} : { reason: 'text differs' }) };
}
