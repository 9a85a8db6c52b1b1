/**
 * DIR/results.jsonl: one line per problem × sample × mode, appended as each completion finishes.
 * Each line is written by a single appendFile of the whole line, so a kill leaves at most one
 * torn last line; reading drops it (and cuts it from the file, so the next append starts clean).
 */
import fs from 'node:fs';
import { MoiError } from '@moi/core';
import type { ResultRecord } from './summary.ts';

export const RESULTS_FILE = 'results.jsonl';

/** The complete records of an earlier run (first of any duplicate key kept); a torn tail is cut off. */
export function readResults(file: string): ResultRecord[] {
  if (!fs.existsSync(file)) return [];
  const buf = fs.readFileSync(file);
  const end = buf.lastIndexOf(0x0a) + 1; // bytes after the last newline are a torn line
  if (end < buf.length) fs.truncateSync(file, end);
  const seen = new Set<string>();
  const out: ResultRecord[] = [];
  const lines = buf.subarray(0, end).toString('utf8').split('\n');
  lines.forEach((line, i) => {
    if (!line) return;
    let r: ResultRecord;
    try {
      r = JSON.parse(line) as ResultRecord;
    } catch (err) {
      throw new MoiError(
        'E_RESULTS',
        `${file}:${i + 1}: not a JSON line (${(err as Error).message}); the file was edited or is not a results file`,
      );
    }
    if (typeof r?.key !== 'string') throw new MoiError('E_RESULTS', `${file}:${i + 1}: a results line needs a "key"`);
    if (seen.has(r.key)) return;
    seen.add(r.key);
    out.push(r);
  });
  return out;
}

export async function appendResult(file: string, r: ResultRecord): Promise<void> {
  await fs.promises.appendFile(file, JSON.stringify(r) + '\n');
}

/** Rewrite the file in canonical order (atomically: a temp file, then rename). */
export function writeResultsSorted(file: string, records: ResultRecord[], order: (r: ResultRecord) => number): void {
  const sorted = [...records].sort((a, b) => order(a) - order(b));
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, sorted.map((r) => JSON.stringify(r) + '\n').join(''));
  fs.renameSync(tmp, file);
}
