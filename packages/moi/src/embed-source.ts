/**
 * The mixers' embedding source (see @moi/core's embed-source.ts: an f32 table, the columns of a
 * tied f32 head, a packed 16/8-bit table, or vocabulary blocks), named by the mixers' arguments.
 */
import type * as tf from '@tensorflow/tfjs-core';
import { embedVocab, UsageError, type EmbedSource } from '@moi/core';

export { embedRowsOf, embedWidth, mixAllRows, type EmbedSource } from '@moi/core';

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
  if (('packed' in src || 'blocks' in src) && embedVocab(src) < V) {
    throw new UsageError('E_MOI', `${who}: the ${'packed' in src ? 'packed' : 'blocked'} embedding table holds ${embedVocab(src)} rows, fewer than the logits' V = ${V}`);
  }
  return src;
}
