/**
 * LiveCodeBench code generation (`livecodebench/code_generation_lite`), as its own runner
 * (github.com/LiveCodeBench/LiveCodeBench, lcb_runner) prompts, decodes and grades it:
 *
 * - Prompt: its generic chat format (lcb_runner/prompts/code_generation.py, the OpenAI-chat style):
 *   a system message and a "### Question / ### Format / ### Answer" user turn, with the starter
 *   code for LeetCode (functional) problems, else the stdin/stdout instruction.
 * - Data: one JSON object per line of `test.jsonl`, `test2.jsonl`, … (a release selects files),
 *   `public_test_cases` a JSON string, `private_test_cases` a JSON string or base64 of zlib of a
 *   pickled JSON string (decoded here by a reader that accepts a pickled string and nothing else),
 *   `metadata` a JSON string holding `func_name` for functional problems. A date window filters on
 *   `contest_date` as its loader does (start ≤ date ≤ end, the end at 00:00 of its day).
 * - Grading: public tests, then private ones, stopping at the first failure; a completion passes
 *   when all pass. stdin tests compare output as its checker does: both sides stripped and split
 *   into lines, each line stripped; the line counts must agree; a line matches when equal, or when
 *   both split on whitespace into the same count of numbers equal as Python Decimals.
 *   Functional tests call `Solution().func_name(*args)` (arguments one JSON value per line) and
 *   compare with == to the JSON output, a returned tuple taken as a list.
 *
 * Files of the full dataset are gigabytes: rows are read once to build the prompts and remember
 * where each row is; a row's tests are read again, decoded, when its completions are graded.
 */
import fs from 'node:fs';
import zlib from 'node:zlib';
import { MoiError, UsageError } from '@moi/core';
import type { ChatMessage } from '@moi/engine';
import type { Sandbox, TestInput } from './sandbox.ts';
import type { ExecStatus, Execution, Verdict } from './scorers.ts';

export const DEFAULT_LIVECODEBENCH = 'livecodebench/code_generation_lite';
/** The release used when none is given (880 problems, May 2023 – Jan 2025). */
export const DEFAULT_RELEASE = 'release_v5';
const LATEST = 6;

// ---- the prompt (lcb_runner's generic chat format)

export const LCB_SYSTEM =
  'You are an expert Python programmer. You will be given a question (problem specification) and will generate a correct Python program that matches the specification and passes all tests.';
const WITH_STARTER =
  'You will use the following starter code to write the solution to the problem and enclose your code within delimiters.';
const WITHOUT_STARTER =
  'Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test on the sample inputs). Enclose your code within delimiters as follows. Ensure that when the python program runs, it reads the inputs, runs the algorithm and writes output to STDOUT.';

export function lcbUserPrompt(question: string, starterCode: string): string {
  let p = `### Question:\n${question}\n\n`;
  p += starterCode
    ? `### Format: ${WITH_STARTER}\n\`\`\`python\n${starterCode}\n\`\`\`\n\n`
    : `### Format: ${WITHOUT_STARTER}\n\`\`\`python\n# YOUR CODE HERE\n\`\`\`\n\n`;
  return p + '### Answer: (use the provided format with backticks)\n\n';
}

export function lcbMessages(question: string, starterCode: string): ChatMessage[] {
  return [
    { role: 'system', content: LCB_SYSTEM },
    { role: 'user', content: lcbUserPrompt(question, starterCode) },
  ];
}

// ---- releases: which files of the hub repo

/**
 * The files of a release, as the dataset's loading script maps its version tags:
 * release_vN = test.jsonl … testN.jsonl, vN = testN.jsonl alone, vA_vB = testA … testB,
 * release_latest = all of them (null: every test*.jsonl the repo has).
 */
export function releaseFiles(release: string): string[] | null {
  const name = (i: number) => (i === 1 ? 'test.jsonl' : `test${i}.jsonl`);
  const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => name(a + i));
  if (release === 'release_latest') return null;
  let m = /^release_v(\d+)$/.exec(release);
  if (m && Number(m[1]) >= 1) return range(1, Number(m[1]));
  m = /^v(\d+)$/.exec(release);
  if (m && Number(m[1]) >= 1) return range(Number(m[1]), Number(m[1]));
  m = /^v(\d+)_v(\d+)$/.exec(release);
  if (m && Number(m[1]) >= 1 && Number(m[2]) >= Number(m[1])) return range(Number(m[1]), Number(m[2]));
  throw new UsageError(
    'E_USAGE',
    `--release must be release_vN, release_latest, vN or vA_vB (e.g. release_v${LATEST - 1}, v6, v1_v3), got ${JSON.stringify(release)}`,
  );
}

export const isReleaseFile = (f: string) => /^test\d*\.jsonl$/.test(f);

// ---- tests: decoding

export interface LcbTest {
  input: string;
  output: string;
  testtype: 'stdin' | 'functional';
}

/** `eval score`'s answer shape, and what grading needs of a problem. */
export interface LcbAnswer {
  tests: LcbTest[];
  func_name?: string;
}

/**
 * The string inside a pickle, accepting only the opcodes `pickle.dumps(str)` writes (protocols
 * 1–5: PROTO, FRAME, the three unicode opcodes, MEMOIZE/BINPUT, STOP); anything else is an error,
 * never executed.
 */
export function unpickleString(buf: Buffer): string {
  let i = 0;
  let value: string | null = null;
  const need = (n: number) => {
    if (i + n > buf.length) throw new Error('the pickle ends early');
  };
  for (;;) {
    need(1);
    const op = buf[i++];
    switch (op) {
      case 0x80:
        need(1);
        i += 1;
        break; // PROTO
      case 0x95:
        need(8);
        i += 8;
        break; // FRAME
      case 0x94:
        break; // MEMOIZE
      case 0x71:
        need(1);
        i += 1;
        break; // BINPUT
      case 0x72:
        need(4);
        i += 4;
        break; // LONG_BINPUT
      case 0x8c: {
        need(1);
        const n = buf[i];
        i += 1;
        need(n);
        value = buf.toString('utf8', i, i + n);
        i += n;
        break;
      } // SHORT_BINUNICODE
      case 0x58: {
        need(4);
        const n = buf.readUInt32LE(i);
        i += 4;
        need(n);
        value = buf.toString('utf8', i, i + n);
        i += n;
        break;
      } // BINUNICODE
      case 0x8d: {
        need(8);
        const n = Number(buf.readBigUInt64LE(i));
        i += 8;
        need(n);
        value = buf.toString('utf8', i, i + n);
        i += n;
        break;
      } // BINUNICODE8
      case 0x2e: // STOP
        if (value === null) throw new Error('the pickle holds no string');
        return value;
      default:
        throw new Error(`opcode 0x${op.toString(16)} at byte ${i - 1}: only a pickled string is accepted`);
    }
  }
}

function asTests(v: unknown, what: string): LcbTest[] {
  if (!Array.isArray(v)) throw new Error(`${what} is not a list`);
  return v.map((t, j) => {
    const x = t as Partial<LcbTest>;
    if (
      typeof x?.input !== 'string' ||
      typeof x.output !== 'string' ||
      (x.testtype !== 'stdin' && x.testtype !== 'functional')
    ) {
      throw new Error(`${what}[${j}] needs string input and output and testtype stdin or functional`);
    }
    return { input: x.input, output: x.output, testtype: x.testtype };
  });
}

/** A test list as the dataset stores it: a list, a JSON string, or base64(zlib(pickle(JSON string))). */
export function decodeTests(v: unknown, what: string): LcbTest[] {
  if (Array.isArray(v)) return asTests(v, what);
  if (typeof v !== 'string') throw new Error(`${what} must be a list or a string`);
  if (v.trim() === '') return [];
  try {
    return asTests(JSON.parse(v), what);
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
  }
  let text: string;
  try {
    text = unpickleString(zlib.inflateSync(Buffer.from(v, 'base64')));
  } catch (err) {
    throw new Error(`${what} is neither JSON nor base64 of zlib of a pickled string (${(err as Error).message})`, {
      cause: err,
    });
  }
  return asTests(JSON.parse(text), what);
}

function metadataOf(v: unknown): { func_name?: string } {
  if (v === undefined || v === null || v === '') return {};
  const m = typeof v === 'string' ? (JSON.parse(v) as unknown) : v;
  if (!m || typeof m !== 'object') throw new Error('metadata must be a JSON object');
  const f = (m as { func_name?: unknown }).func_name;
  if (f !== undefined && f !== null && typeof f !== 'string') throw new Error('metadata.func_name must be a string');
  return typeof f === 'string' ? { func_name: f } : {};
}

/** Check an `eval score` answer; a message naming what is wrong, or null. */
export function checkAnswer(a: unknown): string | null {
  const x = a as Partial<LcbAnswer> & { question_id?: unknown };
  if (!x || typeof x !== 'object' || !Array.isArray(x.tests) || x.tests.length === 0) {
    const hint =
      x && typeof x === 'object' && 'question_id' in x
        ? ' (a results.jsonl line names its problem by question_id; its tests are in the dataset)'
        : '';
    return `a livecodebench answer is {"tests": [{"input", "output", "testtype"}, ...], "func_name"?}${hint}`;
  }
  try {
    asTests(x.tests, 'tests');
  } catch (err) {
    return (err as Error).message;
  }
  if (x.func_name !== undefined && typeof x.func_name !== 'string') return 'func_name must be a string';
  if (x.tests.some((t) => t.testtype === 'functional') && !x.func_name) return 'functional tests need "func_name"';
  return null;
}

// ---- rows

export interface LcbProblemInfo {
  question_id: string;
  title: string;
  platform: string;
  difficulty: string;
  contest_date: string;
  func_name?: string;
}

export interface LcbRow {
  info: LcbProblemInfo;
  messages: ChatMessage[];
  raw: string;
  /** reads and decodes the row's tests (public first) */
  tests(): LcbAnswer;
}

/** ISO date-times without a zone are naive in the data: compare them as UTC. */
function instant(s: string): number {
  const t = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(s) ? s : `${s}${s.includes('T') ? '' : 'T00:00:00'}Z`);
  return t;
}

export interface DateWindow {
  start?: string;
  end?: string;
}

export function checkDate(d: string | undefined, flag: string): void {
  if (d !== undefined && (!/^\d{4}-\d{2}-\d{2}$/.test(d) || Number.isNaN(instant(d))))
    throw new UsageError('E_USAGE', `${flag} must be a date YYYY-MM-DD, got ${JSON.stringify(d)}`);
}

function inWindow(date: string, w: DateWindow): boolean {
  const t = instant(date);
  if (w.start !== undefined && t < instant(w.start)) return false;
  if (w.end !== undefined && t > instant(w.end)) return false;
  return true;
}

/** The parts of a row that make the prompt; the tests stay where they are. */
function rowInfo(
  row: Record<string, unknown>,
  where: string,
): { info: LcbProblemInfo; question: string; starter: string } {
  const str = (k: string, required = true): string => {
    const v = row[k];
    if (typeof v === 'string') return v;
    if (v === undefined || v === null) {
      if (!required) return '';
    }
    throw new UsageError('E_DATA', `${where}: a livecodebench row needs a string "${k}"`);
  };
  const question = str('question_content');
  let meta: { func_name?: string };
  try {
    meta = metadataOf(row.metadata);
  } catch (err) {
    throw new UsageError('E_DATA', `${where}: ${(err as Error).message}`);
  }
  return {
    question,
    starter: str('starter_code', false),
    info: {
      question_id: str('question_id'),
      title: str('question_title', false),
      platform: str('platform', false),
      difficulty: str('difficulty', false),
      contest_date: str('contest_date'),
      ...meta,
    },
  };
}

function rowTests(row: Record<string, unknown>, where: string, funcName: string | undefined): LcbAnswer {
  try {
    const tests = [
      ...decodeTests(row.public_test_cases ?? [], 'public_test_cases'),
      ...decodeTests(row.private_test_cases ?? [], 'private_test_cases'),
    ];
    if (tests.length === 0) throw new Error('no tests');
    if (tests.some((t) => t.testtype === 'functional') && !funcName)
      throw new Error('functional tests but no metadata.func_name');
    return { tests, ...(funcName ? { func_name: funcName } : {}) };
  } catch (err) {
    throw new UsageError('E_DATA', `${where}: ${(err as Error).message}`);
  }
}

/**
 * Scan a JSONL file line by line (any size: lines are found in 8 MiB chunks), calling `each` with
 * the line's text, byte offset and byte length.
 */
export async function scanJsonl(
  file: string,
  each: (line: string, offset: number, length: number, lineNo: number) => void,
  chunkBytes = 8 << 20,
): Promise<void> {
  const fh = await fs.promises.open(file, 'r');
  try {
    const chunk = Buffer.alloc(chunkBytes);
    let parts: Buffer[] = [];
    let lineStart = 0;
    let pos = 0;
    let lineNo = 0;
    const emit = (end: number) => {
      lineNo++;
      const buf = parts.length === 1 ? parts[0] : Buffer.concat(parts);
      parts = [];
      const text = buf.toString('utf8');
      if (text.trim()) each(text, lineStart, end - lineStart, lineNo);
      lineStart = end + 1;
    };
    for (;;) {
      const { bytesRead } = await fh.read(chunk, 0, chunk.length, pos);
      if (bytesRead === 0) break;
      let from = 0;
      for (;;) {
        const nl = chunk.indexOf(0x0a, from);
        if (nl < 0 || nl >= bytesRead) {
          parts.push(Buffer.from(chunk.subarray(from, bytesRead)));
          break;
        }
        parts.push(Buffer.from(chunk.subarray(from, nl)));
        emit(pos + nl);
        from = nl + 1;
      }
      pos += bytesRead;
    }
    if (parts.some((p) => p.length)) emit(pos);
  } finally {
    await fh.close();
  }
}

function parseRow(text: string, where: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new UsageError('E_DATA', `${where}: not valid JSON (${(err as Error).message})`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v))
    throw new UsageError('E_DATA', `${where}: each line must be a JSON object`);
  return v as Record<string, unknown>;
}

/** Problems of JSONL files in the window, in file order; each reads its tests back on demand. */
export async function readLcbRows(
  files: string[],
  window: DateWindow,
  label: (file: string) => string = (f) => f,
): Promise<LcbRow[]> {
  const rows: LcbRow[] = [];
  for (const file of files) {
    const found: {
      offset: number;
      length: number;
      lineNo: number;
      info: LcbProblemInfo;
      question: string;
      starter: string;
    }[] = [];
    try {
      await scanJsonl(file, (text, offset, length, lineNo) => {
        const where = `${label(file)}:${lineNo}`;
        const r = rowInfo(parseRow(text, where), where);
        if (Number.isNaN(instant(r.info.contest_date)))
          throw new UsageError('E_DATA', `${where}: contest_date ${JSON.stringify(r.info.contest_date)} is not a date`);
        if (inWindow(r.info.contest_date, window)) found.push({ offset, length, lineNo, ...r });
      });
    } catch (err) {
      if (err instanceof MoiError) throw err;
      throw new UsageError('E_DATA', `cannot read ${file}: ${(err as Error).message}`);
    }
    for (const f of found) {
      const where = `${label(file)}:${f.lineNo}`;
      const user = lcbUserPrompt(f.question, f.starter);
      rows.push({
        info: f.info,
        messages: lcbMessages(f.question, f.starter),
        raw: `${LCB_SYSTEM}\n\n${user}`,
        tests: () => {
          const fd = fs.openSync(file, 'r');
          try {
            const buf = Buffer.alloc(f.length);
            fs.readSync(fd, buf, 0, f.length, f.offset);
            return rowTests(parseRow(buf.toString('utf8'), where), where, f.info.func_name);
          } finally {
            fs.closeSync(fd);
          }
        },
      });
    }
  }
  return rows;
}

// ---- extracting the program

/**
 * The last complete fenced block tagged python (```python, ```py, ```python3), else the last
 * untagged one; null when there is none. A fence is a line starting (after indentation) with
 * three or more backticks; a block ends at a line of backticks alone. An unclosed last block (a
 * completion cut at max tokens) is not a program.
 */
export function extractPython(completion: string): string | null {
  let lastTagged: string | null = null;
  let lastPlain: string | null = null;
  let open: { lang: string; body: string[] } | null = null;
  for (const line of completion.split('\n')) {
    const t = line.trim();
    if (open) {
      if (/^`{3,}$/.test(t)) {
        const body = open.body.join('\n');
        if (/^(python3?|py)$/i.test(open.lang)) lastTagged = body;
        else if (open.lang === '') lastPlain = body;
        open = null;
      } else {
        open.body.push(line);
      }
      continue;
    }
    const m = /^`{3,}\s*([\w+.-]*)/.exec(t);
    if (m) open = { lang: m[1], body: [] };
  }
  return lastTagged ?? lastPlain;
}

// ---- comparing output (lcb_runner's grade_stdio)

/** Python's str.isspace() characters, which str.strip() and str.split() use. */
const PY_SPACE = '\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, 'g');
const SPLIT = new RegExp(`[${PY_SPACE}]+`);
const pyStrip = (s: string) => s.replace(STRIP, '');
const pySplit = (s: string) => {
  const t = pyStrip(s);
  return t ? t.split(SPLIT) : [];
};

/** Lines as the checker takes them: the whole text stripped, split on \n, each line stripped. */
export const strippedLines = (s: string) => pyStrip(s).split('\n').map(pyStrip);

type Dec = { kind: 'num'; neg: boolean; digits: string; exp: number } | { kind: 'inf'; neg: boolean } | { kind: 'nan' };

/**
 * A Python Decimal literal, as Decimal() reads one: underscores dropped anywhere, then digits with
 * an optional point and exponent, Infinity/Inf or NaN/sNaN (any case); null where Decimal() would
 * refuse it. (ASCII digits only: Decimal also takes other Unicode decimal digits.)
 */
export function parseDecimal(text: string): Dec | null {
  const s = text.replace(/_/g, '');
  const m = /^([+-]?)(?:(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?|(inf(?:inity)?)|(s?nan\d*))$/i.exec(s);
  if (!m) return null;
  const neg = m[1] === '-';
  if (m[5]) return { kind: 'inf', neg };
  if (m[6]) return { kind: 'nan' };
  const int = m[2] ?? '';
  const frac = m[3] ?? '';
  if (!int && !frac) return null;
  let digits = (int + frac).replace(/^0+/, '');
  let exp = Number(m[4] ?? '0') - frac.length;
  if (!digits) return { kind: 'num', neg: false, digits: '', exp: 0 }; // zero, whatever its sign
  const trail = digits.length - digits.replace(/0+$/, '').length;
  digits = digits.slice(0, digits.length - trail);
  exp += trail;
  return { kind: 'num', neg, digits, exp };
}

function decimalEqual(a: Dec, b: Dec): boolean {
  if (a.kind === 'nan' || b.kind === 'nan') return false;
  if (a.kind === 'inf' || b.kind === 'inf') return a.kind === b.kind && a.neg === b.neg;
  return a.neg === b.neg && a.digits === b.digits && (a.digits === '' || a.exp === (b as typeof a).exp);
}

const short = (s: string, n = 120) =>
  s.length <= n ? s : `${s.slice(0, n / 2)} …(${s.length} chars)… ${s.slice(-n / 2)}`;

/** null when `got` matches `expected` as LiveCodeBench's checker decides, else why not. */
export function compareOutput(got: string, expected: string): string | null {
  const g = strippedLines(got);
  const e = strippedLines(expected);
  if (g.length !== e.length) return `wrong answer: ${g.length} output lines, expected ${e.length}`;
  for (let i = 0; i < g.length; i++) {
    if (g[i] === e[i]) continue;
    const gd = pySplit(g[i]).map(parseDecimal);
    const ed = pySplit(e[i]).map(parseDecimal);
    const ok =
      gd.every((x) => x !== null) &&
      ed.every((x) => x !== null) &&
      gd.length === ed.length &&
      gd.every((x, j) => decimalEqual(x!, ed[j]!));
    if (!ok) return `wrong answer at line ${i + 1}: ${JSON.stringify(short(g[i]))} ≠ ${JSON.stringify(short(e[i]))}`;
  }
  return null;
}

// ---- grading

/** Run the program on the tests in order until one fails. */
export async function runTests(
  sandbox: Sandbox,
  code: string,
  answer: LcbAnswer,
  signal?: AbortSignal,
): Promise<Execution> {
  let passed = 0;
  let seconds = 0;
  const total = answer.tests.length;
  for (let i = 0; i < total; i++) {
    const t = answer.tests[i];
    const input: TestInput =
      t.testtype === 'functional'
        ? { mode: 'functional', fnName: answer.func_name!, input: t.input, output: t.output }
        : { mode: 'stdin', input: t.input, expectedBytes: Buffer.byteLength(t.output) };
    const r = await sandbox.run(code, input, signal);
    seconds += r.seconds;
    const fail = (status: ExecStatus, detail: string): Execution => ({
      status,
      passed,
      total,
      failed_test: i,
      detail: `test ${i + 1}/${total}: ${detail}`,
      seconds,
    });
    if (r.status !== 'ok') return fail(r.status, r.detail);
    if (t.testtype === 'functional') {
      if (r.equal !== true)
        return fail(
          'wrong_answer',
          r.equal === undefined
            ? 'the program ended before returning'
            : `returned ${r.got}, expected ${short(t.output)}`,
        );
    } else {
      const why = compareOutput(r.stdout, t.output);
      if (why) return fail('wrong_answer', why);
    }
    passed++;
  }
  return { status: 'passed', passed, total, seconds };
}

/** The verdict on a completion: its last python block run on every test. */
export async function scoreLiveCodeBench(
  sandbox: Sandbox,
  completion: string,
  answer: LcbAnswer,
  signal?: AbortSignal,
): Promise<Verdict> {
  const code = extractPython(completion);
  if (code === null) {
    return {
      extracted: null,
      correct: false,
      formatOnly: false,
      reason: 'no code: no complete ```python block',
      execution: { status: 'no_code', passed: 0, total: answer.tests.length, seconds: 0 },
    };
  }
  const ex = await runTests(sandbox, code, answer, signal);
  const correct = ex.status === 'passed';
  return {
    extracted: code,
    correct,
    formatOnly: !correct,
    ...(correct ? {} : { reason: `${ex.status.replace('_', ' ')}: ${ex.detail}` }),
    execution: ex,
  };
}
