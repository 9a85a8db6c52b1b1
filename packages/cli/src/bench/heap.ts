/**
 * The 4 GiB wasm heap's arithmetic: what a model's weights take at each dtype, computed from its
 * config.json alone (the tensors our loader expects, as laid out in memory), plus the KV cache,
 * and whether the two fit. `serve` checks its KV cache against the same limit; bench/heap.ts
 * prints the table for the published shapes; bench/peer.ts refuses a dtype whose weights do not
 * fit before it writes gigabytes of synthetic model.
 */
import { Q8_BLOCK } from '@moi/core';
import { expectedTensors, specFromConfig, type DecoderSpec, type RawConfig } from '@moi/models';
import { Scheduler } from '../engine/scheduler.ts';

// ---- the limits (one place)

/** wasm32: the whole heap tfjs-backend-wasm can address */
export const WASM_HEAP_BYTES = 4 * 1024 ** 3;
/**
 * The share of the heap that weights + KV cache may fill. The rest is for what a forward pass
 * allocates beside them (activations, the logits, XNNPACK's scratch, the allocator's slack).
 */
export const WASM_HEAP_USABLE = 0.9;
/** The heap bytes that weights + KV cache may take: 3.87 GB. */
export const WASM_HEAP_LIMIT = Math.floor(WASM_HEAP_BYTES * WASM_HEAP_USABLE);
/** The context the table assumes for the KV cache. */
export const HEAP_KV_TOKENS = 4096;

/** The dtypes a weight matrix can be held as (f16 takes what bf16 takes). */
export const HEAP_DTYPES = ['f32', 'bf16', 'q8'] as const;
export type HeapDtype = (typeof HEAP_DTYPES)[number];

// ---- bytes

/**
 * Bytes of one [rows, cols] matrix as held in memory: f32 4 per value; bf16 2 per value; q8 one
 * int8 per value plus an f32 scale per block of 32 along a row (36/32 bytes per value when cols is
 * a multiple of 32; llama.cpp's Q8_0 with its f16 scale is 34/32). Packed data is padded to whole
 * 4-byte words, as PackedWeight stores it.
 */
export function matrixBytes(rows: number, cols: number, dtype: HeapDtype): number {
  const words = (bytes: number) => Math.ceil(bytes / 4) * 4;
  switch (dtype) {
    case 'f32': return rows * cols * 4;
    case 'bf16': return words(rows * cols * 2);
    case 'q8': return words(rows * cols) + rows * Math.ceil(cols / Q8_BLOCK) * 4;
  }
}

export interface WeightSizes {
  /** every value of every tensor (a tied head counted once) */
  params: number;
  /** the values in matrices (packed under bf16/q8) */
  matrixParams: number;
  /** bytes held at the dtype: matrices at it, norms/biases (anything 1-D) f32 */
  bytes: number;
  /** the largest tensor, in f32 bytes (what a load streams through at once) */
  largestF32: number;
}

/** The weights our loader holds for this spec at this dtype: every expected tensor, a tied head once. */
export function weightSizes(spec: DecoderSpec, dtype: HeapDtype): WeightSizes {
  let params = 0;
  let matrixParams = 0;
  let bytes = 0;
  let largestF32 = 0;
  for (const shape of expectedTensors(spec).values()) {
    const n = shape.reduce((a, b) => a * b, 1);
    params += n;
    largestF32 = Math.max(largestF32, n * 4);
    if (shape.length === 2) {
      matrixParams += n;
      bytes += matrixBytes(shape[0], shape[1], dtype);
    } else {
      bytes += n * 4;
    }
  }
  return { params, matrixParams, bytes, largestF32 };
}

/** The f32 KV cache of one sequence of `tokens` (sliding-window layers keep their window). */
export function kvCacheBytes(spec: DecoderSpec, tokens: number): number {
  return Scheduler.kvBytesFor(spec, 1, tokens);
}

export interface HeapRow {
  shape: string;
  modelType: string;
  dtype: HeapDtype;
  params: number;
  weightBytes: number;
  kvTokens: number;
  kvBytes: number;
  /** weights + KV cache */
  totalBytes: number;
  /** totalBytes ≤ WASM_HEAP_LIMIT */
  fits: boolean;
  /** the longest sequence whose KV cache fits beside the weights (0: the weights alone do not fit) */
  maxTokens: number;
  largestF32: number;
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
export function heapRow(shape: string, config: RawConfig, dtype: HeapDtype, kvTokens = HEAP_KV_TOKENS): HeapRow {
  const { spec } = specFromConfig(config, shape);
  const w = weightSizes(spec, dtype);
  const kvBytes = kvCacheBytes(spec, Math.min(kvTokens, spec.maxPositionEmbeddings));
  const totalBytes = w.bytes + kvBytes;
  return {
    shape, modelType: spec.modelType, dtype, params: w.params, weightBytes: w.bytes, kvTokens, kvBytes, totalBytes,
    fits: totalBytes <= WASM_HEAP_LIMIT, maxTokens: tokensThatFit(spec, WASM_HEAP_LIMIT - w.bytes, spec.maxPositionEmbeddings),
    largestF32: w.largestF32,
  };
}

// ---- the table

const GB = (n: number) => (n / 1e9).toFixed(2);

/** A markdown table: one line per shape, one column per dtype (weights + KV → fits or not). */
export function heapTable(rows: HeapRow[]): string {
  const shapes = [...new Set(rows.map((r) => r.shape))];
  const dtypes = HEAP_DTYPES.filter((d) => rows.some((r) => r.dtype === d));
  const kvTokens = rows[0]?.kvTokens ?? HEAP_KV_TOKENS;
  const head = ['shape', 'params', `KV cache (${kvTokens.toLocaleString('en-US')} tok, f32)`, ...dtypes.map((d) => `${d}: weights + KV`)];
  const lines = [
    `| ${head.join(' | ')} |`,
    `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`,
  ];
  for (const s of shapes) {
    const of = rows.filter((r) => r.shape === s);
    const cells = dtypes.map((d) => {
      const r = of.find((x) => x.dtype === d);
      if (!r) return '–';
      const verdict = r.fits ? 'fits' : r.maxTokens > 0 ? `**does not fit** (${r.maxTokens.toLocaleString('en-US')} tok do)` : '**does not fit**';
      return `${GB(r.weightBytes)} + ${GB(r.kvBytes)} = ${GB(r.totalBytes)} GB ${verdict}`;
    });
    lines.push(`| ${s} | ${(of[0].params / 1e9).toFixed(3)} B | ${GB(of[0].kvBytes)} GB | ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}
