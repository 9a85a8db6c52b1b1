/**
 * moi's own WebAssembly SIMD kernels for the tfjs wasm backend (kernels.wat), each behind an op
 * with a composite fallback from ordinary tfjs ops (other backends, MOI_KERNELS=0).
 */
import * as tf from '@tensorflow/tfjs-core';
import { DECODE_ATTENTION, decodeAttentionKernel } from './attention.ts';
import { GATHER_ROWS, gatherRowsKernel } from './gather.ts';
import { MIX_WEIGHTS, mixWeightsKernel } from './mix-weights.ts';
import { loadKernels } from './module.ts';
import { RMS_NORM, rmsNormKernel } from './norm.ts';
import { PREFILL_ATTENTION, PREFILL_QK, prefillAttentionKernel, prefillQkKernel } from './prefill-attention.ts';
import {
  PACKED_MATMUL,
  PACKED_MATMUL_T,
  PACKED_ROWS,
  packedMatMulKernel,
  packedMatMulTKernel,
  packedRowsKernel,
} from './packed.ts';
import { ROPE, ropeKernel } from './rope.ts';

export { decodeAttention, slotTable, DECODE_ATTENTION, type DecodeAttentionOptions } from './attention.ts';
export { ropeDecode, ROPE } from './rope.ts';
export { gatherRows, GATHER_ROWS, type TableLayout } from './gather.ts';
export { mixWeights, MIX_WEIGHTS, type MixCoefficients, type MixWeights } from './mix-weights.ts';
export {
  prefillAttention,
  prefillQk,
  PREFILL_ATTENTION,
  PREFILL_QK,
  type PrefillAttentionOptions,
  type PrefillPrefix,
  type PrefillQkOptions,
} from './prefill-attention.ts';
export { fusedRmsNorm, RMS_NORM, type NormOptions } from './norm.ts';
export {
  activeKernels,
  assembleWat,
  heapValues,
  kernelsBinary,
  kernelsCachePath,
  kernelsEnabled,
  kernelsSource,
  packedBinary,
  packedSource,
  setKernelsEnabled,
} from './module.ts';
export { kernelDispatches, resetKernelDispatches } from './stats.ts';

/**
 * Assemble the kernels (once per process), read MOI_KERNELS, and register the kernels with the
 * wasm backend. initBackend calls this when it starts the wasm backend.
 */
export async function initKernels(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  await loadKernels(env);
  for (const [kernelName, kernelFunc] of [
    [DECODE_ATTENTION, decodeAttentionKernel],
    [RMS_NORM, rmsNormKernel],
    [ROPE, ropeKernel],
    [GATHER_ROWS, gatherRowsKernel],
    [MIX_WEIGHTS, mixWeightsKernel],
    [PREFILL_ATTENTION, prefillAttentionKernel],
    [PREFILL_QK, prefillQkKernel],
    [PACKED_MATMUL, packedMatMulKernel],
    [PACKED_MATMUL_T, packedMatMulTKernel],
    [PACKED_ROWS, packedRowsKernel],
  ] as const) {
    if (!tf.getKernel(kernelName, 'wasm'))
      tf.registerKernel({ kernelName, backendName: 'wasm', kernelFunc: kernelFunc as any });
  }
}
export {
  disposePacked,
  dequantizeQ8,
  isPacked,
  pack16,
  packedBytes,
  packedMatMul,
  packedMatMulT,
  packedRows,
  packQ8,
  packQ8Blocks,
  quantizeQ8,
  roundActivations16,
  widenPacked,
  GEMM_MIN_ROWS,
  PACKED_MATMUL,
  PACKED_MATMUL_T,
  PACKED_ROWS,
  Q8_BLOCK,
  Q8_GEMM_MIN_ROWS,
  type PackedKind,
  type PackedMatMulOptions,
  type PackedWeight,
} from './packed.ts';
