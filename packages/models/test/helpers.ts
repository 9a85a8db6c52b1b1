/**
 * Shared helpers for the models tests: fixture discovery, reference.json, logits comparison,
 * greedy decoding with the KV cache, and temporary model folders rewritten from a fixture.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { SafetensorsFile, sharedDir, writeSafetensors, type TensorInput } from '@moi/core';
import type { Decoder, KVCache } from '../src/index.ts';

export const FIXTURES = [
  'llama',
  'llama_tied',
  'llama_rope3',
  'qwen2',
  'qwen3',
  'gemma',
  'gemma2',
  'gemma3_text',
  'gemma3_text_ropescale',
  'stories260K',
] as const;

export interface RefCase {
  name: string;
  input_ids: number[];
  /** logits[t] = next-token logits after input_ids[0..t] */
  logits: number[][];
  greedy: { n: number; tokens: number[] };
}

export interface Reference {
  cases: RefCase[];
}

/** <shared>/fixtures, or null where shared/ is absent. */
export function fixturesRoot(): string | null {
  const s = sharedDir();
  return s ? path.join(s, 'fixtures') : null;
}

export function readReference(dir: string): Reference {
  return JSON.parse(readFileSync(path.join(dir, 'reference.json'), 'utf8')) as Reference;
}

/** The 1e-4 × logit-scale tolerance shared/README asks of a float32 engine. */
export function tolFor(logits: number[][] | Float32Array[]): number {
  let m = 1;
  for (const row of logits) for (const x of row) m = Math.max(m, Math.abs(x));
  return 1e-4 * m;
}

/** Rows [T][V] of a [1, T, V] logits tensor (disposes it). */
export function rowsOf(t: tf.Tensor): Float32Array[] {
  const [, T, V] = t.shape;
  const flat = t.dataSync() as Float32Array;
  t.dispose();
  return Array.from({ length: T }, (_, i) => flat.slice(i * V, (i + 1) * V));
}

/** Assert every row of `actual` is within `tol` of `expected` (max-abs), naming the worst spot. */
export function assertRowsClose(
  actual: ArrayLike<number>[],
  expected: ArrayLike<number>[],
  tol: number,
  label: string,
): void {
  assert.equal(actual.length, expected.length, `${label}: number of positions`);
  let worst = 0;
  let where = '';
  for (let t = 0; t < expected.length; t++) {
    assert.equal(actual[t].length, expected[t].length, `${label}: vocab size at position ${t}`);
    for (let v = 0; v < expected[t].length; v++) {
      const d = Math.abs(actual[t][v] - expected[t][v]);
      if (!(d <= worst)) {
        worst = Number.isNaN(d) ? Infinity : d;
        where = `position ${t}, token ${v}: ${actual[t][v]} vs ${expected[t][v]}`;
      }
    }
  }
  assert.ok(worst <= tol, `${label}: max |diff| ${worst} > ${tol} at ${where}`);
}

/** Largest |a − b| over rows. */
export function maxDiff(a: ArrayLike<number>[], b: ArrayLike<number>[]): number {
  let m = 0;
  for (let t = 0; t < a.length; t++) for (let v = 0; v < a[t].length; v++) m = Math.max(m, Math.abs(a[t][v] - b[t][v]));
  return m;
}

export function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/** Full forward (no cache) over one sequence: logits per position. */
export function fullLogits(model: Decoder, ids: number[]): Float32Array[] {
  return rowsOf(model.forward({ ids: [ids] }));
}

export function disposeCache(cache: KVCache[]): void {
  for (const c of cache) c.dispose();
}

export interface GreedyResult {
  tokens: number[];
  /** logits from which each token was chosen */
  stepLogits: Float32Array[];
}

/**
 * Argmax continuation of one prompt with a fresh KV cache: prefill with lastOnly, then one-token
 * steps. The cache is disposed afterwards.
 */
export function greedy(
  model: Decoder,
  prompt: number[],
  n: number,
  opts: { capacity?: number; noInPlace?: boolean } = {},
): GreedyResult {
  const cache = model.makeCache(1, opts.capacity ?? prompt.length + n, { noInPlace: opts.noInPlace });
  try {
    const tokens: number[] = [];
    const stepLogits: Float32Array[] = [];
    let row = rowsOf(model.forward({ ids: [prompt] }, { cache, lastOnly: true }))[0];
    for (let i = 0; i < n; i++) {
      const y = argmax(row);
      tokens.push(y);
      stepLogits.push(row);
      if (i + 1 < n) row = rowsOf(model.forward({ ids: [[y]] }, { cache, lastOnly: true }))[0];
    }
    return { tokens, stepLogits };
  } finally {
    disposeCache(cache);
  }
}

/** A fresh temporary folder; remove it with rmTemp. */
export function makeTemp(tag: string): string {
  return mkdtempSync(path.join(os.tmpdir(), `moi-models-${tag}-`));
}

export function rmTemp(dir: string | undefined): void {
  if (dir) rmSync(dir, { recursive: true, force: true });
}

/** Every tensor of a fixture's model.safetensors as float32, in file order. */
export function readTensors(fixtureDir: string): Map<string, { shape: number[]; data: Float32Array }> {
  const f = SafetensorsFile.open(path.join(fixtureDir, 'model.safetensors'));
  try {
    const out = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const [name, info] of f.tensors) out.set(name, { shape: info.shape, data: f.readFloat32(name) });
    return out;
  } finally {
    f.close();
  }
}

/** Write a model folder: config.json and model.safetensors. */
export function writeModel(dir: string, config: unknown, tensors: Iterable<[string, TensorInput]>): void {
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
}

export function readConfigJson(fixtureDir: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path.join(fixtureDir, 'config.json'), 'utf8')) as Record<string, unknown>;
}

export function f32Input(shape: number[], data: Float32Array): TensorInput {
  return { dtype: 'F32', shape, data };
}
