/**
 * Device buffer limits. On webgpu a tensor larger than the adapter's maxStorageBufferBindingSize
 * (128 MiB on lavapipe) or maxBufferSize does not fail: Dawn only logs validation errors and the
 * reads return zeros. So at load the vocabulary-sized matrices (the embedding and lm_head, the only
 * ones that large in the models we run) are split into blocks along the vocabulary when they do
 * not fit (VocabBlocks: the lookups, logits and mixtures follow the blocks), and every other weight
 * is compared with the limits: one that does not fit stops the load with a ModelError naming the
 * tensor (never silent zeros).
 */
import * as tf from '@tensorflow/tfjs-core';
import { isPacked, isVocabBlocks, ModelError, VocabBlocks, type PackedWeight, type VocabLayout } from '@moi/core';
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

/**
 * The embedding table ([V, H]) and lm_head ([H, V], or the tied embedding) in vocabulary blocks
 * where one tensor would pass the device limit; the rest as they are. Done on the host values
 * before the tensors are first used, so the whole matrix never reaches the device.
 */
export function splitVocabMatrices(weights: DecoderWeights): DecoderWeights {
  const { bytes: max } = maxTensorBytes();
  if (!Number.isFinite(max)) return weights;
  const split = <T extends DecoderWeights['embed'] | DecoderWeights['lmHead']>(t: T, layout: VocabLayout): T | VocabBlocks => {
    if (!t || isPacked(t) || isVocabBlocks(t) || t.size * 4 <= max) return t;
    const blocks = VocabBlocks.fromValues(t.dataSync() as Float32Array, t.shape as [number, number], layout, max);
    t.dispose();
    return blocks;
  };
  return { ...weights, embed: split(weights.embed, 'rows'), lmHead: split(weights.lmHead, 'cols') };
}

/** Throws E_BUFFER_LIMIT naming the first weight over the device limit. */
export function checkBufferLimits(weights: DecoderWeights, where: string): void {
  const { bytes: max, what } = maxTensorBytes();
  if (!Number.isFinite(max)) return;
  const named: [string, tf.Tensor | PackedWeight | VocabBlocks | null][] = [['embed (model.embed_tokens.weight)', weights.embed],
    [weights.embed ? 'lm_head (lm_head.weight)' : 'lm_head (the tied model.embed_tokens.weight)', weights.lmHead], ['final norm', weights.finalNorm]];
  weights.layers.forEach((l, i) => { for (const [k, t] of Object.entries(l)) named.push([`layer ${i} ${k}`, t as tf.Tensor | PackedWeight | null]); });
  for (const [name, t] of named) {
    // (packed weights live on wasm only: other backends hold them widened, as tensors)
    // (vocabulary blocks fit by construction)
    if (t && !isPacked(t) && !isVocabBlocks(t) && t.size * 4 > max) {
      throw new ModelError('E_BUFFER_LIMIT', `${where}: tensor ${name} [${t.shape.join(', ')}] takes ${t.size * 4} bytes as float32, ` +
        `over ${what} on ${tf.getBackend()}; this device cannot hold it in one buffer (run it on wasm or cpu, or a GPU with larger limits)`);
    }
  }
}
