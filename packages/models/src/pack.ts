/**
 * Memory on the wasm backend: XNNPACK keeps a packed copy of every matrix that is the B operand
 * of a batch-1, untransposed matMul — all our linear weights — so each weight would live twice
 * in the 4 GiB wasm heap. Here each such weight is packed once, right after it is built, and its
 * original heap block is released: XNNPACK only ever reads its packed copy afterwards.
 *
 * Safe only for tensors used as nothing but that matMul B operand: never read back, gathered or
 * transposed. The tied head (also the embedding table) is therefore kept. A released tensor keeps
 * its id, so disposing it later still frees the packed copy; its memory offset becomes 0 so the
 * backend's own free() is a no-op.
 *
 * TRAP (measured): when packing runs out of heap, tfjs only logs "XNN status ... not successful"
 * and the matMul returns garbage. That warning is caught here and becomes a ModelError.
 */
import * as tf from '@tensorflow/tfjs-core';
import { ModelError } from '@moi/core';

export function canRelease(): boolean {
  return tf.getBackend() === 'wasm' && process.env.MOI_KEEP_WEIGHTS !== '1';
}

/** Pack w [in, out] into XNNPACK's operator cache and free its original heap block. Returns bytes freed. */
export function packAndRelease(w: tf.Tensor2D, name: string): number {
  const backend: any = tf.backend();
  const warnings: string[] = [];
  const origWarn = console.warn;
  console.warn = (...args: unknown[]) => {
    warnings.push(args.map(String).join(' '));
  };
  try {
    tf.tidy(() => tf.matMul(tf.zeros([1, w.shape[0]]), w).dataSync());
  } finally {
    console.warn = origWarn;
  }
  if (warnings.some((m) => /XNN status/.test(m))) {
    throw new ModelError(
      'E_MEMORY',
      `packing ${name} [${w.shape.join(', ')}] failed in the wasm heap (${warnings[0]}); ` +
        'the model is too large for the wasm backend at float32 (about 4 GiB of heap in all)',
    );
  }
  const info = backend.dataIdMap.get(w.dataId);
  if (!info || !info.memoryOffset) return 0;
  backend.wasm._free(info.memoryOffset);
  info.memoryOffset = 0;
  return w.size * 4;
}
