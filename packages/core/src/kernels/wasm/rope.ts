/**
 * RoPE on a decode step's heads as one op: x [B, heads, D] with the row's cos and sin [B, 1, D]
 * (rotate-half convention, full rotary dim). On the wasm backend with the kernels on, one call of
 * kernels.wat's rope; elsewhere the composite x·cos + (x·R)·sin, R the constant rotate-half matrix.
 * Both round identically (R only moves and negates entries).
 */
import * as tf from '@tensorflow/tfjs-core';
import { ModelError } from '../../errors.ts';
import { rotateHalfMatrix } from '../../nn.ts';
import { activeKernels, heapOffset, type WasmKernelArgs } from './module.ts';
import { countDispatch } from './stats.ts';

export const ROPE = 'MoiRope';

export function ropeDecode(x: tf.Tensor, cos: tf.Tensor, sin: tf.Tensor): tf.Tensor {
  const [B, heads, D] = x.shape;
  if (x.rank !== 3 || D % 2 !== 0 || cos.size !== B * D || sin.size !== B * D) {
    throw new ModelError('E_ROPE', `ropeDecode: shapes do not fit (x ${x.shape}, cos ${cos.shape}, sin ${sin.shape})`);
  }
  if (activeKernels() && x.dtype === 'float32') {
    countDispatch(ROPE);
    return tf.engine().runKernel(ROPE, { x, cos, sin }) as tf.Tensor;
  }
  return tf.tidy(() => {
    const c = cos.rank === 3 ? cos : tf.reshape(cos, [B, 1, D]);
    const s = sin.rank === 3 ? sin : tf.reshape(sin, [B, 1, D]);
    const rotated = tf.reshape(tf.matMul(tf.reshape(x, [B * heads, D]), rotateHalfMatrix(D)), x.shape);
    return tf.add(tf.mul(x, c), tf.mul(rotated, s));
  });
}

/** The wasm kernel behind ROPE (registered by initKernels). */
export function ropeKernel({ inputs, backend }: WasmKernelArgs): tf.TensorInfo {
  const k = activeKernels();
  if (!k) throw new Error(`${ROPE}: the kernels module is not active`);
  const { x, cos, sin } = inputs as Record<string, tf.TensorInfo>;
  const [B, heads, D] = x.shape;
  const out = backend.makeOutput(x.shape, 'float32');
  k.rope(
    heapOffset(backend, x.dataId),
    heapOffset(backend, cos.dataId),
    heapOffset(backend, sin.dataId),
    heapOffset(backend, out.dataId),
    B,
    heads,
    D,
  );
  return out;
}
