/**
 * Device buffer limits. On webgpu a tensor larger than the adapter's maxStorageBufferBindingSize
 * (128 MiB on lavapipe) or maxBufferSize does not fail: Dawn only logs validation errors and the
 * reads return zeros. So at load the f32 storage (f32-weights.ts) holds a vocabulary-sized matrix
 * (the embedding and lm_head, the only ones that large in the models we run) in blocks along the
 * vocabulary when one tensor would not fit (VocabBlocks: the lookups, logits and mixtures follow
 * the blocks), and every other weight is compared with the limits before it is made: one that
 * does not fit stops the load with a ModelError naming the tensor (never silent zeros).
 */
import * as tf from '@tensorflow/tfjs-core';
import { ModelError } from '@moi/core';

/** The largest buffer one tensor may occupy on the active backend, in bytes (Infinity: no limit known). */
export function maxTensorBytes(): { bytes: number; what: string } {
  if (tf.getBackend() !== 'webgpu') return { bytes: Infinity, what: 'none' };
  const limits = (
    tf.backend() as unknown as {
      device?: { limits?: { maxStorageBufferBindingSize?: number; maxBufferSize?: number } };
    }
  ).device?.limits;
  const binding = limits?.maxStorageBufferBindingSize ?? Infinity;
  const buffer = limits?.maxBufferSize ?? Infinity;
  return binding <= buffer
    ? { bytes: binding, what: `the adapter's maxStorageBufferBindingSize (${binding} bytes)` }
    : { bytes: buffer, what: `the adapter's maxBufferSize (${buffer} bytes)` };
}

/** Throws E_BUFFER_LIMIT, naming the weight, when an f32 tensor of `shape` would pass the device limit. */
export function checkBufferFits(where: string, name: string, shape: number[]): void {
  const { bytes: max, what } = maxTensorBytes();
  const bytes = shape.reduce((n, d) => n * d, 1) * 4;
  if (bytes > max) {
    throw new ModelError(
      'E_BUFFER_LIMIT',
      `${where}: tensor ${name} [${shape.join(', ')}] takes ${bytes} bytes as float32, ` +
        `over ${what} on ${tf.getBackend()}; this device cannot hold it in one buffer (run it on wasm or cpu, or a GPU with larger limits)`,
    );
  }
}
