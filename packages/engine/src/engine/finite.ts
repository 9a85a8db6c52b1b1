/**
 * Non-finite logits (NaN/Inf from broken weights or a broken config) end generation with a
 * typed error instead of a stream of token 0. The check rides in the decode step's one packed
 * device→host read: one extra column per row, 0 when the row's logits are all finite and NaN
 * otherwise (x·0 is 0 for finite x and NaN for NaN or ±Inf, and a sum keeps a NaN).
 */
import * as tf from '@tensorflow/tfjs-core';
import { ModelError } from '@moi/core';

/** [B, V] logits → [B]: 0 where a row is all finite, NaN where it is not. Call inside a tidy. */
export function finiteProbe(logits: tf.Tensor2D): tf.Tensor1D {
  return tf.sum(tf.mul(logits, 0), 1) as tf.Tensor1D;
}

/**
 * After the step's read of `rows` rows of `width` values: throws E_NONFINITE when any row's probe
 * (column `col`) says NaN/Inf, after `cleanup` (tensors the step still holds).
 */
export function checkFiniteColumn(
  values: ArrayLike<number>,
  rows: number,
  width: number,
  col: number,
  step: number,
  cleanup?: () => void,
): void {
  for (let i = 0; i < rows; i++) {
    if (values[i * width + col] !== 0) {
      cleanup?.();
      throw new ModelError(
        'E_NONFINITE',
        `the model produced NaN/Inf logits at step ${step}; the weights or config are broken`,
      );
    }
  }
}

/** Host-side check of score's logits [positions][vocab]: the first non-finite position is an E_NONFINITE. */
export function checkFiniteRows(rows: ArrayLike<number>[]): void {
  for (let p = 0; p < rows.length; p++) {
    const r = rows[p];
    for (let v = 0; v < r.length; v++) {
      if (!Number.isFinite(r[v])) {
        throw new ModelError(
          'E_NONFINITE',
          `the model produced NaN/Inf logits at position ${p} (token ${v}); the weights or config are broken`,
        );
      }
    }
  }
}
