/** Rows of a task's data: a local JSONL or parquet file, or a Hugging Face dataset's parquet files. */
import fs from 'node:fs';
import path from 'node:path';
import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { UsageError } from '@moi/core';
import { resolveDatasetParquet, type DatasetOptions } from '../hub/dataset.ts';

export type Row = Record<string, unknown>;

/** JSON values from parquet: BigInt → number (counts and ids here are small), typed arrays → arrays. */
function plain(v: unknown): unknown {
  if (typeof v === 'bigint') return Number(v);
  if (ArrayBuffer.isView(v) && !(v instanceof DataView))
    return Array.from(v as unknown as ArrayLike<number | bigint>, plain);
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === 'object' && !(v instanceof Date))
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

export function readJsonl(file: string): Row[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError('E_DATA', `cannot read ${file}: ${(err as Error).message}`);
  }
  const rows: Row[] = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (err) {
      throw new UsageError('E_DATA', `${file}:${i + 1}: not valid JSON (${(err as Error).message})`);
    }
    if (!v || typeof v !== 'object' || Array.isArray(v))
      throw new UsageError('E_DATA', `${file}:${i + 1}: each line must be a JSON object`);
    rows.push(v as Row);
  });
  return rows;
}

export async function readParquet(files: string[]): Promise<Row[]> {
  const rows: Row[] = [];
  for (const file of files) {
    try {
      const buf = await asyncBufferFromFile(file);
      const objs = await parquetReadObjects({ file: buf, compressors });
      for (const o of objs) rows.push(plain(o) as Row);
    } catch (err) {
      if (err instanceof UsageError) throw err;
      throw new UsageError('E_DATA', `${file}: cannot read it as parquet (${(err as Error).message})`);
    }
  }
  return rows;
}

/** Looks like a local file rather than a hub dataset id. */
function isLocal(source: string): boolean {
  return (
    /\.(jsonl|json|parquet)$/i.test(source) ||
    source.startsWith('.') ||
    path.isAbsolute(source) ||
    fs.existsSync(source)
  );
}

/** Rows from a local .jsonl / .parquet file or a hub dataset id (its `split` parquet files). */
export async function loadRows(source: string, opts: DatasetOptions = {}): Promise<{ rows: Row[]; where: string }> {
  if (isLocal(source)) {
    if (!fs.existsSync(source)) throw new UsageError('E_DATA', `data file ${source} does not exist`);
    if (/\.parquet$/i.test(source)) return { rows: await readParquet([source]), where: source };
    return { rows: readJsonl(source), where: source };
  }
  const files = await resolveDatasetParquet(source, opts);
  return { rows: await readParquet(files), where: `${source} (${opts.split ?? 'train'})` };
}
