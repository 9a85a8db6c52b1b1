/**
 * Device buffer limits. On webgpu a tensor larger than the adapter's maxStorageBufferBindingSize
 * (128 MiB on lavapipe) or maxBufferSize does not fail: Dawn only logs validation errors and the
 * reads return zeros. So at load every weight is compared with the limits, and one that does not
 * fit stops the load with a ModelError naming the tensor (never silent zeros).
 */
import * as tf from '@tensorflow/tfjs-core';
import { isPacked, ModelError, type PackedWeight } from '@moi/core';
import type { DecoderWeights } from './decoder.ts';

/** The largest buffer one tensor may occupy on the active backend, in bytes (Infinity: no limit known). */
export function maxTensorBytes(): { bytes: number; what: string } {
  if (tf.getBackend() !== 'webgpu') return { bytes: Infinity, what: 'none' };
  const limits = (tf.backend() as unknown as { device?: { limits?: { maxStorageBufferBindingSize?: number; maxBufferSize?: number } } }).device?.limits;
  const binding = limits?.maxStorageBufferBindingSize ?? Infinity;
  const buffer = limits?.maxBufferSize ?? Infinity;
  return binding <= buffer
    ? { bytes: binding, what: `the adapter's maxStorageBufferBindingSize (${binding} bytes)` }
    : { bytes: buffer, what: `the adapter's maxBufferSize (${buffer} bytes)` };
}

/** Throws E_BUFFER_LIMIT naming the first weight over the device limit. */
export function checkBufferLimits(weights: DecoderWeights, where: string): void {
  const { bytes: max, what } = maxTensorBytes();
  if (!Number.isFinite(max)) return;
  const named: [string, tf.Tensor | PackedWeight | null][] = [['embed (model.embed_tokens.weight)', weights.embed],
    [weights.embed ? 'lm_head (lm_head.weight)' : 'lm_head (the tied model.embed_tokens.weight)', weights.lmHead], ['final norm', weights.finalNorm]];
  weights.layers.forEach((l, i) => { for (const [k, t] of Object.entries(l)) named.push([`layer ${i} ${k}`, t as tf.Tensor | PackedWeight | null]); });
  for (const [name, t] of named) {
    // (packed weights live on wasm only: other backends hold them widened, as tensors)
    if (t && !isPacked(t) && t.size * 4 > max) {
      throw new ModelError('E_BUFFER_LIMIT', `${where}: tensor ${name} [${t.shape.join(', ')}] takes ${t.size * 4} bytes as float32, ` +
        `over ${what} on ${tf.getBackend()}; this device cannot hold it in one buffer (run it on wasm or cpu, or a GPU with larger limits)`);
    }
  }
}
