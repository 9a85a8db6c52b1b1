/**
 * Embedding rows by id as one op: rows of a [V, H] table, or columns of an [H, V] table (a tied
 * head kept in the matmul's [in, out] layout) returned as rows [n, H]. Mixture of Inputs gathers
 * K+1 of them every decode step, and the tied lookup one. tfjs-wasm's GatherV2 costs tens of µs
 * per id here (measured: 21 ids from SmolLM2's [576, 49152] head, 0.6–2.6 ms); on the wasm backend
 * with the kernels on this is one call of kernels.wat's gather_rows (plain copies, strided for
 * columns); elsewhere the composite gather (and transpose).
 */
import * as tf from '@tensorflow/tfjs-core';
import { ModelError } from '../../errors.ts';
import { activeKernels, heapOffset, type WasmKernelArgs } from './module.ts';
import { countDispatch } from './stats.ts';

export const GATHER_ROWS = 'MoiGatherRows';

/** 'rows': the table is [V, H]; 'cols': it is [H, V] and its columns are the rows. */
export type TableLayout = 'rows' | 'cols';

/** Rows [n, H] for ids int32 [n] from a float32 table in either layout. */
export function gatherRows(table: tf.Tensor2D, ids: tf.Tensor1D, layout: TableLayout): tf.Tensor2D {
  if (table.rank !== 2 || ids.rank !== 1)
    throw new ModelError('E_SHAPE', `gatherRows: table [${table.shape}] and ids [${ids.shape}]`);
  if (activeKernels() && table.dtype === 'float32' && ids.dtype === 'int32' && ids.size > 0) {
    countDispatch(GATHER_ROWS);
    return tf.engine().runKernel(GATHER_ROWS, { table, ids }, { cols: layout === 'cols' } as any) as tf.Tensor2D;
  }
  return tf.tidy(
    () => (layout === 'rows' ? tf.gather(table, ids) : tf.transpose(tf.gather(table, ids, 1))) as tf.Tensor2D,
  );
}

/** The wasm kernel behind GATHER_ROWS (registered by initKernels). */
export function gatherRowsKernel({ inputs, backend, attrs }: WasmKernelArgs): tf.TensorInfo {
  const k = activeKernels();
  if (!k) throw new Error(`${GATHER_ROWS}: the kernels module is not active`);
  const { table, ids } = inputs as Record<string, tf.TensorInfo>;
  const cols = Boolean(attrs?.cols);
  const [R, C] = table.shape;
  const V = cols ? C : R;
  const H = cols ? R : C;
  const n = ids.shape[0];
  const out = backend.makeOutput([n, H], 'float32');
  const bad = k.gather_rows(
    heapOffset(backend, table.dataId),
    heapOffset(backend, ids.dataId),
    heapOffset(backend, out.dataId),
    n,
    H,
    V,
    cols ? 1 : 0,
  );
  if (bad !== 0) {
    backend.disposeData(out.dataId);
    throw new ModelError('E_INDEX', `gatherRows: id #${bad - 1} is outside the table's ${V} rows`);
  }
  return out;
}
