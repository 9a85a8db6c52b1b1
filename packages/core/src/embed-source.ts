/**
 * Where raw embedding rows are read from (the "embedding source"): the model's own storage, never
 * a second copy of it. The decoder's lookup and the input mixers (MoI, direct, Soft Thinking) read
 * through it.
 *
 * A source is an `EmbeddingRows` object (linear.ts): what `Decoder.embedSource()` hands out, the
 * embedding table or the tied head itself, whatever its storage. Callers holding a bare tensor or
 * packed weight may name it in one of the plain forms instead, which `embeddingRows` wraps:
 * - `table`: f32 rows [V, H] (an untied embed_tokens.weight);
 * - `columns`: f32 columns [H, V] (a tied lm_head laid out [in, out], no [V, H] copy exists);
 * - `packed`: a packed 16/8-bit table [V, H];
 * - `blocks`: an f32 table split along the vocabulary (webgpu's buffer limits; VocabBlocks).
 */
import type * as tf from '@tensorflow/tfjs-core';
import { ModelError } from './errors.ts';
import type { PackedWeight } from './kernels/wasm/packed.ts';
import { F32Columns, F32Table, isEmbeddingRows, PackedLinear, type EmbeddingRows } from './linear.ts';
import type { VocabBlocks } from './vocab-blocks.ts';

export type EmbedSource =
  | EmbeddingRows
  | { table: tf.Tensor2D }
  | { columns: tf.Tensor2D }
  | { packed: PackedWeight }
  | { blocks: VocabBlocks };

/** The source as an object (a plain form wrapped; the wrapper owns nothing). */
export function embeddingRows(src: EmbedSource): EmbeddingRows {
  if (isEmbeddingRows(src)) return src;
  if ('packed' in src) return new PackedLinear(src.packed);
  if ('blocks' in src) return src.blocks;
  return 'table' in src ? new F32Table(src.table) : new F32Columns(src.columns);
}

/** V, the rows an embedding source holds. */
export function embedVocab(src: EmbedSource): number {
  return embeddingRows(src).vocab;
}

/** H, the width of an embedding row. */
export function embedWidth(src: EmbedSource): number {
  return embeddingRows(src).width;
}

/** Embedding rows [n, H] (f32) for ids [n]. */
export function embedRowsOf(src: EmbedSource, ids: tf.Tensor1D): tf.Tensor2D {
  return embeddingRows(src).rows(ids);
}

/** w [B, V] · E[0..V): the whole-vocabulary mixture [B, H]. */
export function mixAllRows(src: EmbedSource, w: tf.Tensor2D, V: number): tf.Tensor2D {
  if (w.shape[1] !== V) throw new ModelError('E_SHAPE', `mixAllRows: weights [${w.shape}] are not over V = ${V} ids`);
  return embeddingRows(src).mix(w);
}
