/**
 * Where raw embedding rows are read from (the "embedding source"): the model's own storage, never
 * a second copy of it. The decoder's lookup and the input mixers (MoI, direct, Soft Thinking) read
 * through it.
 * - `table`: f32 rows [V, H] (an untied embed_tokens.weight);
 * - `columns`: f32 columns [H, V] (a tied lm_head laid out [in, out], no [V, H] copy exists);
 * - `packed`: a packed 16/8-bit table [V, H] (also the tied head): rows come from packedRows
 *   (MoI's K+1 gathered rows) and the dense mixture Σ p_i E[i] from packedMatMulT;
 * - `blocks`: an f32 table split along the vocabulary (webgpu's buffer limits; VocabBlocks).
 */
import * as tf from '@tensorflow/tfjs-core';
import { gatherRows } from './kernels/wasm/gather.ts';
import { packedMatMulT, packedRows, type PackedWeight } from './kernels/wasm/packed.ts';
import type { VocabBlocks } from './vocab-blocks.ts';

export type EmbedSource = { table: tf.Tensor2D } | { columns: tf.Tensor2D } | { packed: PackedWeight } | { blocks: VocabBlocks };

/** V, the rows an embedding source holds. */
export function embedVocab(src: EmbedSource): number {
  if ('packed' in src) return src.packed.rows;
  if ('blocks' in src) return src.blocks.vocab;
  return 'table' in src ? src.table.shape[0] : src.columns.shape[1];
}

/** H, the width of an embedding row. */
export function embedWidth(src: EmbedSource): number {
  if ('packed' in src) return src.packed.cols;
  if ('blocks' in src) return src.blocks.hidden;
  return 'table' in src ? src.table.shape[1] : src.columns.shape[0];
}

/** Embedding rows [n, H] (f32) for ids [n]. */
export function embedRowsOf(src: EmbedSource, ids: tf.Tensor1D): tf.Tensor2D {
  if ('packed' in src) return packedRows(src.packed, ids);
  if ('blocks' in src) return src.blocks.rows(ids);
  return 'table' in src ? gatherRows(src.table, ids, 'rows') : gatherRows(src.columns, ids, 'cols');
}

/** w [B, V] · E[0..V): the whole-vocabulary mixture [B, H]. */
export function mixAllRows(src: EmbedSource, w: tf.Tensor2D, V: number): tf.Tensor2D {
  return tf.tidy(() => {
    if ('blocks' in src) return src.blocks.mix(w);
    if ('packed' in src) {
      const rows = src.packed.rows;
      return packedMatMulT(rows === V ? w : tf.pad(w, [[0, 0], [0, rows - V]]) as tf.Tensor2D, src.packed);
    }
    if ('table' in src) {
      const E = src.table.shape[0] === V ? src.table : tf.slice(src.table, [0, 0], [V, src.table.shape[1]]);
      return tf.matMul(w, E) as tf.Tensor2D;
    }
    const C = src.columns;
    return tf.matMul(w, C.shape[1] === V ? C : tf.slice(C, [0, 0], [C.shape[0], V]), false, true) as tf.Tensor2D;
  });
}
