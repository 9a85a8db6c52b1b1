/**
 * The 4 GiB wasm heap's arithmetic for the published shapes: weight bytes at f32, bf16 and q8
 * (computed from each config.json: every matrix, a tied head once, norms and biases f32) plus the
 * f32 KV cache of one 4,096-token sequence, against the part of the heap weights and cache may
 * fill (packages/cli/src/bench/heap.ts: WASM_HEAP_LIMIT). No model is loaded or written.
 *
 *   node_modules/.bin/tsx bench/heap.ts [--configs DIR] [--tokens 4096] [--json]
 *
 * The README's table is this script's output.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { RawConfig } from '@moi/models';
import {
  HEAP_ACTIVATION_RESERVE,
  HEAP_DTYPES,
  TABLE_KV_TOKENS,
  WASM_HEAP_BYTES,
  WASM_HEAP_LIMIT,
  heapRow,
  heapTable,
  type HeapRow,
} from '../packages/cli/src/bench/heap.ts';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** The order the README lists them in: the four standard shapes, then the two larger ones. */
const ORDER = ['smollm2-135m', 'gemma-3-270m', 'qwen2.5-0.5b', 'qwen3-0.6b', 'qwen2.5-1.5b', 'qwen3-1.7b'];

function fail(msg: string): never {
  console.error(`heap: ${msg}`);
  process.exit(2);
}

function main(): void {
  let values: { configs?: string; tokens?: string; json?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      options: {
        configs: { type: 'string' },
        tokens: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    fail((e as Error).message);
  }
  if (values.help) {
    console.log(
      'usage: tsx bench/heap.ts [--configs DIR (default ../shared/peer-bench/configs)] [--tokens N (default 4096)] [--json]',
    );
    return;
  }
  const dir = path.resolve(values.configs ?? path.join(REPO, '../shared/peer-bench/configs'));
  const tokens = values.tokens === undefined ? TABLE_KV_TOKENS : Number(values.tokens);
  if (!Number.isInteger(tokens) || tokens < 1)
    fail(`--tokens needs a positive integer, got ${JSON.stringify(values.tokens)}`);
  if (!fs.existsSync(dir)) fail(`${dir}: no such folder (pass --configs DIR)`);
  const names = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => f.slice(0, -5))
    .sort((a, b) => (ORDER.indexOf(a) + 1 || 99) - (ORDER.indexOf(b) + 1 || 99) || a.localeCompare(b));
  if (!names.length) fail(`${dir}: no config .json files`);
  const rows: HeapRow[] = [];
  for (const name of names) {
    const config = JSON.parse(fs.readFileSync(path.join(dir, `${name}.json`), 'utf8')) as RawConfig;
    for (const dtype of HEAP_DTYPES) rows.push(heapRow(name, config, dtype, tokens));
  }
  if (values.json) {
    console.log(
      JSON.stringify({
        heap_bytes: WASM_HEAP_BYTES,
        activation_reserve_bytes: HEAP_ACTIVATION_RESERVE,
        limit_bytes: WASM_HEAP_LIMIT,
        kv_tokens: tokens,
        rows,
      }),
    );
    return;
  }
  console.log(heapTable(rows));
  console.log(
    `\nweights + KV cache may fill ${(WASM_HEAP_LIMIT / 1e9).toFixed(2)} GB: the ${(WASM_HEAP_BYTES / 1e9).toFixed(2)} GB wasm heap less ` +
      `${(HEAP_ACTIVATION_RESERVE / 2 ** 20).toFixed(0)} MiB kept for activations. "does not load": the loader refuses it (E_MEMORY). ` +
      'GB = 10^9 bytes; q8 = int8 + an f32 scale per 32 values; an f32 tied head counts twice (XNNPACK packs a copy); norms, biases and the KV cache f32.',
  );
}

main();
