/**
 * The mixers' embedding source (see @moi/core's embed-source.ts: the model's own storage as an
 * EmbeddingRows object, or a plain f32 table, columns of a tied f32 head, packed 16/8-bit table or
 * vocabulary blocks), named by the mixers' arguments.
 */
import type * as tf from '@tensorflow/tfjs-core';
import { embeddingRows, isEmbeddingRows, UsageError, type EmbedSource, type EmbeddingRows } from '@moi/core';

export { embedRowsOf, embedWidth, mixAllRows, type EmbedSource } from '@moi/core';

/** The parts of the mixers' arguments that name the source (embed, or the older table/columns fields). */
export interface EmbedArgs {
  embed?: EmbedSource;
  embedTable?: tf.Tensor2D;
  embedColumns?: tf.Tensor2D;
}

/** The one source the arguments name, checked against the logits' vocabulary V. */
export function embedSourceOf(args: EmbedArgs, V: number, who: string): EmbeddingRows {
  const given = [args.embed, args.embedTable, args.embedColumns].filter((x) => x !== undefined).length;
  if (given !== 1) {
    throw new UsageError(
      'E_MOI',
      `${who}: give exactly one of embedTable [V, H], embedColumns [H, V] and embed (an embedding source)`,
    );
  }
  const src: EmbedSource =
    args.embed ?? (args.embedTable ? { table: args.embedTable } : { columns: args.embedColumns! });
  if (isEmbeddingRows(src)) return checkVocab(src, V, who);
  if ('table' in src && (src.table.rank !== 2 || src.table.shape[0] < V)) {
    throw new UsageError('E_MOI', `${who}: embedTable must be [V >= ${V}, H], got shape [${src.table.shape}]`);
  }
  if ('columns' in src && (src.columns.rank !== 2 || src.columns.shape[1] < V)) {
    throw new UsageError('E_MOI', `${who}: embedColumns must be [H, V >= ${V}], got shape [${src.columns.shape}]`);
  }
  return checkVocab(embeddingRows(src), V, who);
}

function checkVocab(rows: EmbeddingRows, V: number, who: string): EmbeddingRows {
  if (rows.vocab < V) {
    throw new UsageError(
      'E_MOI',
      `${who}: the ${rows.label} embedding table holds ${rows.vocab} rows, fewer than the logits' V = ${V}`,
    );
  }
  return rows;
}
