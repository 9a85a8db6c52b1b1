/**
 * Where the mixers read raw embedding rows from (the "embedding source"): the model's own storage,
 * never a second copy of it.
 * - `table`: f32 rows [V, H] (an untied embed_tokens.weight);
 * - `columns`: f32 columns [H, V] (a tied lm_head laid out [in, out], no [V, H] copy exists);
 * - `packed`: a packed 16/8-bit table [V, H] (issue 15; also the tied head): rows come from
 *   packedRows (MoI's K+1 gathered rows) and the dense mixture Σ p_i E[i] from packedMatMulT.
 */
import * as tf from '@tensorflow/tfjs-core';
import { packedMatMulT, packedRows, UsageError, type PackedWeight } from '@moi/core';

export type EmbedSource = { table: tf.Tensor2D } | { columns: tf.Tensor2D } | { packed: PackedWeight };

/** The parts of the mixers' arguments that name the source (embed, or the older table/columns fields). */
export interface EmbedArgs {
  embed?: EmbedSource;
  embedTable?: tf.Tensor2D;
  embedColumns?: tf.Tensor2D;
}

/** The one source the arguments name, checked against the logits' vocabulary V. */
export function embedSourceOf(args: EmbedArgs, V: number, who: string): EmbedSource {
  const given = [args.embed, args.embedTable, args.embedColumns].filter((x) => x !== undefined).length;
  if (given !== 1) {
    throw new UsageError('E_MOI', `${who}: give exactly one of embedTable [V, H], embedColumns [H, V] and embed (an embedding source)`);
  }
  const src: EmbedSource = args.embed ?? (args.embedTable ? { table: args.embedTable } : { columns: args.embedColumns! });
  if ('table' in src && (src.table.rank !== 2 || src.table.shape[0] < V)) {
    throw new UsageError('E_MOI', `${who}: embedTable must be [V >= ${V}, H], got shape [${src.table.shape}]`);
  }
  if ('columns' in src && (src.columns.rank !== 2 || src.columns.shape[1] < V)) {
    throw new UsageError('E_MOI', `${who}: embedColumns must be [H, V >= ${V}], got shape [${src.columns.shape}]`);
  }
  if ('packed' in src && src.packed.rows < V) {
    throw new UsageError('E_MOI', `${who}: the packed embedding table must be [V >= ${V}, H], got [${src.packed.rows}, ${src.packed.cols}]`);
  }
  return src;
}

/** H, the width of an embedding row. */
export function embedWidth(src: EmbedSource): number {
  if ('packed' in src) return src.packed.cols;
  return 'table' in src ? src.table.shape[1] : src.columns.shape[0];
}

/** Embedding rows [n, H] (f32) for ids [n]. */
export function embedRowsOf(src: EmbedSource, ids: tf.Tensor1D): tf.Tensor2D {
  if ('packed' in src) return packedRows(src.packed, ids);
  if ('table' in src) return tf.gather(src.table, ids) as tf.Tensor2D;
  return tf.transpose(tf.gather(src.columns, ids, 1)) as tf.Tensor2D;
}

/** w [B, V] · E[0..V): the whole-vocabulary mixture [B, H]. */
export function mixAllRows(src: EmbedSource, w: tf.Tensor2D, V: number): tf.Tensor2D {
  return tf.tidy(() => {
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
