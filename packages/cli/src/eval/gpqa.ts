/**
 * GPQA (Rein et al. 2023), the Diamond set by default: 198 four-option questions. The options are
 * shuffled per problem from --seed (the shuffle is recorded with each result), the prompt is the
 * common zero-shot one (simple-evals' multiple-choice template: the question, lettered options,
 * and an instruction to end with a line `Answer: X`), and scoring takes the letter of the last
 * `Answer:` line. A missing or invalid letter is wrong and counted apart (extracted = null).
 *
 * The hub dataset `Idavidrein/gpqa` is gated (HF_TOKEN); its CSV files are read through the hub's
 * parquet conversion (revision refs/convert/parquet, folder gpqa_diamond/train).
 */
import { UsageError, createRng, splitmix64 } from '@moi/core';
import type { Row } from './data.ts';
import type { Verdict } from './scorers.ts';
import type { Problem } from './problem.ts';

export const DEFAULT_GPQA = 'Idavidrein/gpqa';
export const GPQA_CONFIG = 'gpqa_diamond';
export const GPQA_REVISION = 'refs/convert/parquet';

const LETTERS = ['A', 'B', 'C', 'D'] as const;
/** the source columns, in the order the shuffle indexes them (0 = the correct answer) */
export const GPQA_COLUMNS = [
  'Correct Answer',
  'Incorrect Answer 1',
  'Incorrect Answer 2',
  'Incorrect Answer 3',
] as const;

export function gpqaPrompt(question: string, options: readonly string[]): string {
  return (
    "Answer the following multiple choice question. The last line of your response should be of the following format: 'Answer: $LETTER' (without quotes) where LETTER is one of ABCD. Think step by step before answering.\n\n" +
    `${question}\n\n${options.map((o, i) => `${LETTERS[i]}) ${o}`).join('\n')}`
  );
}

/**
 * The option order of problem `index` under run seed `seed`: order[j] is the GPQA_COLUMNS index
 * shown as letter j. Fisher–Yates from a generator seeded by splitmix64 of (seed, index), so it
 * depends on nothing else (not on --limit, modes or samples).
 */
export function gpqaShuffle(seed: number, index: number): number[] {
  const mixed = splitmix64((BigInt.asUintN(32, BigInt(seed)) << 32n) ^ BigInt(index) ^ 0x67707161n)();
  const rng = createRng(Number(mixed & 0x1fffffffffffffn));
  const order = [0, 1, 2, 3];
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rng.nextFloat() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

export function gpqaRow(row: Row, index: number, where: string, seed: number): Problem {
  const text = (k: string): string => {
    const v = row[k];
    if (typeof v !== 'string' || !v.trim())
      throw new UsageError('E_DATA', `${where} row ${index}: a gpqa row needs a non-empty string "${k}"`);
    return v.trim();
  };
  const question = text('Question');
  const options = GPQA_COLUMNS.map(text);
  const order = gpqaShuffle(seed, index);
  const prompt = gpqaPrompt(
    question,
    order.map((k) => options[k]),
  );
  const answer = LETTERS[order.indexOf(0)];
  const id = typeof row['Record ID'] === 'string' ? { record_id: row['Record ID'] } : {};
  return {
    index,
    messages: [{ role: 'user', content: prompt }],
    assistantPrefix: '',
    raw: prompt,
    answer,
    meta: { ...id, order: order.map((k) => GPQA_COLUMNS[k]) },
  };
}

// ---- scoring

/** The text after the last `Answer:` (markdown emphasis around it allowed), or null. */
export function lastAnswerLine(completion: string): string | null {
  let rest: string | null = null;
  for (const m of completion.matchAll(/\banswer[ \t*_]*[:：][ \t]*(.*)$/gim)) rest = m[1];
  return rest;
}

/** The letter A–D that `rest` states: wrappers such as **C**, (C), $\boxed{C}$ or "C) text" allowed. */
export function letterOf(rest: string): string | null {
  const t = rest.replace(/\\(?:boxed|text|textbf|mathrm)\s*\{/g, '').replace(/^[\s*_$({[]+/, '');
  const m = /^([A-D])(?![A-Za-z0-9])/.exec(t);
  return m ? m[1] : null;
}

export function scoreGpqa(completion: string, answer: string): Verdict {
  const rest = lastAnswerLine(completion);
  if (rest === null) return { extracted: null, correct: false, formatOnly: false, reason: 'no "Answer: X" line' };
  const letter = letterOf(rest);
  if (letter === null)
    return {
      extracted: null,
      correct: false,
      formatOnly: false,
      reason: `"Answer: ${rest.trim().slice(0, 40)}" is not one of A–D`,
    };
  const correct = letter === answer;
  return { extracted: letter, correct, formatOnly: !correct, ...(correct ? {} : { reason: `${letter} ≠ ${answer}` }) };
}

export function isGpqaAnswer(a: unknown): a is string {
  return typeof a === 'string' && (LETTERS as readonly string[]).includes(a);
}
