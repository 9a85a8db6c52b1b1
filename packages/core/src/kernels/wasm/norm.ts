/**
 * RMSNorm as one op, optionally fused with the residual add before it and a weight after it:
 *   sum = x + residual;  y = sum / sqrt(mean(sum², last axis) + eps) · weight
 * On the wasm backend with the kernels on, one call of kernels.wat's rms_norm (instead of
 * add, square, mean, add, rsqrt, mul, mul); elsewhere the composite from ordinary tfjs ops
 * (exactly nn.ts's rmsNorm after a tf.add).
 *
 * The weight may be longer than the normalized axis H (a multiple of it): row n of the
 * flattened [N, H] input then uses weight[(n·H) mod L ..][0, H), e.g. per-head q/k norms [heads·D]
 * over [B, heads, D].
 */
import * as tf from '@tensorflow/tfjs-core';
import { ModelError } from '../../errors.ts';
import { rmsNorm as rmsNormComposite } from '../../nn.ts';
import { activeKernels, heapOffset, type WasmKernelArgs } from './module.ts';
import { countDispatch } from './stats.ts';

export const RMS_NORM = 'MoiRmsNorm';

export interface NormOptions {
  /** added to x first; the sum is returned as `sum` */
  residual?: tf.Tensor;
  /** multiplied in after normalizing: [H], or [k·H] repeating over rows */
  weight?: tf.Tensor | null;
}

/** Normalize x over its last axis; `sum` (x + residual) when a residual was given. */
export function fusedRmsNorm(x: tf.Tensor, eps: number, o: NormOptions = {}): { y: tf.Tensor; sum: tf.Tensor | null } {
  const H = x.shape[x.rank - 1];
  const L = o.weight ? o.weight.size : H;
  if ((o.residual && o.residual.shape.join() !== x.shape.join()) || L % H !== 0 || x.size % L !== 0) {
    throw new ModelError(
      'E_NORM',
      `fusedRmsNorm: shapes do not fit (x ${x.shape}, residual ${o.residual?.shape ?? '-'}, weight ${o.weight?.shape ?? '-'})`,
    );
  }
  if (activeKernels() && x.dtype === 'float32') {
    countDispatch(RMS_NORM);
    const inputs: Record<string, tf.Tensor> = { x };
    if (o.residual) inputs.residual = o.residual;
    if (o.weight) inputs.weight = o.weight;
    const out = tf.engine().runKernel(RMS_NORM, inputs, { eps } as any) as tf.Tensor | tf.Tensor[];
    return Array.isArray(out) ? { y: out[0], sum: out[1] } : { y: out, sum: null };
  }
  const [y, sum] = tf.tidy(() => {
    const sum = o.residual ? tf.add(x, o.residual) : x;
    let y = rmsNormComposite(sum, null, eps);
    if (o.weight) {
      y =
        L === H
          ? tf.mul(y, o.weight)
          : tf.reshape(tf.mul(tf.reshape(y, [-1, L / H, H]), tf.reshape(o.weight, [L / H, H])), x.shape);
    }
    return o.residual ? [y, sum] : [y];
  });
  return { y, sum: sum ?? null };
}

/** The wasm kernel behind RMS_NORM (registered by initKernels): outputs [y] or [y, sum]. */
export function rmsNormKernel({ inputs, backend, attrs }: WasmKernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const k = activeKernels();
  if (!k) throw new Error(`${RMS_NORM}: the kernels module is not active`);
  const { x, residual, weight } = inputs as Record<string, tf.TensorInfo | undefined>;
  const shape = x!.shape;
  const H = shape[shape.length - 1];
  const size = shape.reduce((a, b) => a * b, 1);
  const y = backend.makeOutput(shape, 'float32');
  const sum = residual ? backend.makeOutput(shape, 'float32') : null;
  const L = weight ? weight.shape.reduce((a, b) => a * b, 1) : H;
  k.rms_norm(
    heapOffset(backend, x!.dataId),
    residual ? heapOffset(backend, residual.dataId) : 0,
    weight ? heapOffset(backend, weight.dataId) : 0,
    heapOffset(backend, y.dataId),
    sum ? heapOffset(backend, sum.dataId) : 0,
    size / H,
    H,
    L,
    attrs?.eps ?? 1e-6,
  );
  return sum ? [y, sum] : y;
}
