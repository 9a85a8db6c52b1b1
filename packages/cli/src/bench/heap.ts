/**
 * The 4 GiB wasm heap's arithmetic: what a model's weights take at each dtype, computed from its
 * config.json alone, plus the KV cache, and whether they fit. The weights as held and the heap's
 * limits are the loader's own (@moi/models: estimateHeap, WASM_HEAP_BYTES, HEAP_ACTIVATION_RESERVE),
 * so this table and the loader's E_MEMORY refusal agree. `serve` checks its KV cache against the
 * same limit; bench/heap.ts prints the table for the published shapes; bench/peer.ts refuses a
 * dtype that cannot fit before it writes gigabytes of synthetic model.
 */
import {
  HEAP_ACTIVATION_RESERVE,
  WASM_HEAP_BYTES,
  estimateHeap,
  expectedTensors,
  specFromConfig,
  type DecoderSpec,
  type RawConfig,
} from '@moi/models';
import { Scheduler } from '@moi/engine';

// ---- the limits (the loader's)

export { HEAP_ACTIVATION_RESERVE, WASM_HEAP_BYTES };
/** The heap bytes that weights + KV cache may take: the heap less the loader's reserve for activations. */
export const WASM_HEAP_LIMIT = WASM_HEAP_BYTES - HEAP_ACTIVATION_RESERVE;
/** The context the table assumes for the KV cache. */
export const TABLE_KV_TOKENS = 4096;

/** The dtypes a weight matrix can be held as (f16 takes what bf16 takes). */
export const HEAP_DTYPES = ['f32', 'bf16', 'q8'] as const;
export type HeapDtype = (typeof HEAP_DTYPES)[number];

// ---- bytes

/**
 * Bytes the weights hold on wasm at a dtype (the loader's estimate): matrices f32 4 per value
 * (a tied f32 head twice: XNNPACK packs a copy of it and the row gathers read the original),
 * bf16 2 per value, q8 one int8 per value plus an f32 scale per block of 32 along a row (36/32
 * bytes per value; llama.cpp's Q8_0 with its f16 scale is 34/32); norms and biases f32.
 */
export function weightBytes(spec: DecoderSpec, dtype: HeapDtype): number {
  return estimateHeap(spec, dtype).weights;
}

/** Every value of every tensor the checkpoint holds (a tied head counted once). */
export function paramCount(spec: DecoderSpec): number {
  let n = 0;
  for (const shape of expectedTensors(spec).values()) n += shape.reduce((a, b) => a * b, 1);
  return n;
}

/** The f32 KV cache of `rows` sequences of `tokens` (sliding-window layers keep their window). */
export function kvCacheBytes(spec: DecoderSpec, tokens: number, rows = 1): number {
  return Scheduler.kvBytesFor(spec, rows, tokens);
}

export interface HeapRow {
  shape: string;
  modelType: string;
  dtype: HeapDtype;
  params: number;
  weightBytes: number;
  /** the loader accepts it (weights + its reserve for 1,024 tokens and activations within the heap) */
  loads: boolean;
  kvTokens: number;
  kvBytes: number;
  /** weights + KV cache */
  totalBytes: number;
  /** totalBytes ≤ WASM_HEAP_LIMIT */
  fits: boolean;
  /** the longest sequence whose KV cache fits beside the weights (0: the weights alone do not fit) */
  maxTokens: number;
}

/** The most tokens of one sequence whose KV cache fits in `room` bytes, up to `cap` (it grows with tokens). */
export function tokensThatFit(spec: DecoderSpec, room: number, cap: number): number {
  if (room < kvCacheBytes(spec, 1)) return 0;
  let lo = 1;
  let hi = cap;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (kvCacheBytes(spec, mid) <= room) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** One shape at one dtype: its weights and KV cache against the heap. */
export function heapRow(shape: string, config: RawConfig, dtype: HeapDtype, kvTokens = TABLE_KV_TOKENS): HeapRow {
  const { spec } = specFromConfig(config, shape);
  const weights = weightBytes(spec, dtype);
  const kvBytes = kvCacheBytes(spec, Math.min(kvTokens, spec.maxPositionEmbeddings));
  const totalBytes = weights + kvBytes;
  return {
    shape,
    modelType: spec.modelType,
    dtype,
    params: paramCount(spec),
    weightBytes: weights,
    loads: estimateHeap(spec, dtype).total <= WASM_HEAP_BYTES,
    kvTokens,
    kvBytes,
    totalBytes,
    fits: totalBytes <= WASM_HEAP_LIMIT,
    maxTokens: tokensThatFit(spec, WASM_HEAP_LIMIT - weights, spec.maxPositionEmbeddings),
  };
}

// ---- the table

const GB = (n: number) => (n / 1e9).toFixed(2);

/** A markdown table: one line per shape, one column per dtype (weights + KV → fits or not). */
export function heapTable(rows: HeapRow[]): string {
  const shapes = [...new Set(rows.map((r) => r.shape))];
  const dtypes = HEAP_DTYPES.filter((d) => rows.some((r) => r.dtype === d));
  const kvTokens = rows[0]?.kvTokens ?? TABLE_KV_TOKENS;
  const head = [
    'shape',
    'params',
    `KV cache (${kvTokens.toLocaleString('en-US')} tok, f32)`,
    ...dtypes.map((d) => `${d}: weights + KV`),
  ];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`];
  for (const s of shapes) {
    const of = rows.filter((r) => r.shape === s);
    const cells = dtypes.map((d) => {
      const r = of.find((x) => x.dtype === d);
      if (!r) return '–';
      const verdict = r.fits
        ? 'fits'
        : !r.loads
          ? '**does not load**'
          : `**does not fit** (${r.maxTokens.toLocaleString('en-US')} tok do)`;
      return `${GB(r.weightBytes)} + ${GB(r.kvBytes)} = ${GB(r.totalBytes)} GB ${verdict}`;
    });
    lines.push(`| ${s} | ${(of[0].params / 1e9).toFixed(3)} B | ${GB(of[0].kvBytes)} GB | ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}
