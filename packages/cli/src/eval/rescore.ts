/**
 * `eval score`: re-score saved completions, one JSON line `{completion, answer}` in, one verdict
 * line out, in order. LiveCodeBench lines run in the sandbox (several at once, up to its workers);
 * their answer is `{tests: [{input, output, testtype}], func_name?}`.
 */
import { UsageError } from '@moi/core';
import { isGpqaAnswer } from './gpqa.ts';
import { checkAnswer, scoreLiveCodeBench, type LcbAnswer } from './livecodebench.ts';
import type { Sandbox } from './sandbox.ts';
import type { Verdict } from './scorers.ts';
import { scorerFor } from './tasks.ts';

const KINDS = ['countdown', 'aime', 'gpqa', 'livecodebench', 'jsonl'];

/** The verdict lines (JSON text, no newline) of a JSONL text; `where` names it in errors. */
export async function rescore(text: string, where: string, kind: string, sandbox?: Sandbox): Promise<string[]> {
  if (!KINDS.includes(kind))
    throw new UsageError('E_USAGE', `--task must be ${KINDS.join(', ')}, got ${JSON.stringify(kind)}`);
  const scorer = kind === 'livecodebench' ? null : scorerFor(kind);
  if (kind === 'livecodebench' && !sandbox)
    throw new UsageError('E_USAGE', 'livecodebench needs a sandbox to run the programs');
  const rows: { completion: string; answer: unknown }[] = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let row: { completion?: unknown; answer?: unknown };
    try {
      row = JSON.parse(line) as typeof row;
    } catch (err) {
      throw new UsageError('E_DATA', `${where}:${i + 1}: not valid JSON (${(err as Error).message})`);
    }
    if (typeof row?.completion !== 'string' || row.answer === undefined) {
      throw new UsageError('E_DATA', `${where}:${i + 1}: a line needs "completion" (a string) and "answer"`);
    }
    if (kind === 'countdown') {
      const a = row.answer as { target?: unknown; numbers?: unknown };
      if (!Number.isInteger(a?.target) || !Array.isArray(a?.numbers) || !a.numbers.every((n) => Number.isInteger(n))) {
        throw new UsageError('E_DATA', `${where}:${i + 1}: a countdown answer is {"target": n, "numbers": [..]}`);
      }
    }
    if (kind === 'gpqa' && !isGpqaAnswer(row.answer))
      throw new UsageError('E_DATA', `${where}:${i + 1}: a gpqa answer is the correct letter, "A" to "D"`);
    if (kind === 'livecodebench') {
      const bad = checkAnswer(row.answer);
      if (bad) throw new UsageError('E_DATA', `${where}:${i + 1}: ${bad}`);
    }
    rows.push({ completion: row.completion, answer: row.answer });
  });
  const verdicts: Verdict[] = await Promise.all(
    rows.map(async (r) =>
      scorer ? scorer(r.completion, r.answer) : scoreLiveCodeBench(sandbox!, r.completion, r.answer as LcbAnswer),
    ),
  );
  return verdicts.map((v) =>
    JSON.stringify({
      extracted: v.extracted,
      correct: v.correct,
      format_only: v.formatOnly,
      ...(v.reason ? { reason: v.reason } : {}),
      ...(v.execution ? { execution: v.execution } : {}),
    }),
  );
}
