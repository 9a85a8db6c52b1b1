/**
 * One profiled decode step (tf.profile): how many kernels it dispatches, by name, and where its
 * time goes: the weight GEMVs, attention, everything else. Profiling adds its own overhead per
 * kernel, so the times are for proportions, not speed. Where the weights live in the wasm thread
 * pool, their matmuls and row gathers are the pool's jobs, not tfjs kernels: the pool's own
 * count and wall time for the step go in `pool_jobs` and the GEMV bucket.
 */
import * as tf from '@tensorflow/tfjs-core';
import { PACKED_MATMUL, PACKED_MATMUL_T } from '@moi/core';
import type { Decoder } from '@moi/models';

export interface StepProfile {
  /** tfjs kernels dispatched */
  kernels: number;
  by_name: Record<string, number>;
  /** the thread pool's jobs (weight matmuls, row gathers; 0 without the pool) */
  pool_jobs: number;
  /** profiled kernel time plus the pool's wall time (in gemv), ms */
  ms: { gemv: number; attention: number; other: number };
}

/**
 * A kernel's bucket: a matmul against a weight (second operand of 64k+ elements) is a GEMV, and
 * so is every matmul over a packed 16/8-bit weight (our kernels; the rows gather is not).
 */
function bucket(k: { name: string; inputShapes: number[][] }): keyof StepProfile['ms'] {
  if (k.name === 'MoiDecodeAttention' || k.name === 'Softmax') return 'attention';
  if (k.name === PACKED_MATMUL || k.name === PACKED_MATMUL_T) return 'gemv';
  if (k.name === 'BatchMatMul' || k.name === '_FusedMatMul') {
    const b = k.inputShapes[1] ?? [];
    if (b.length === 4) return 'attention';
    if (b.reduce((x, y) => x * y, 1) >= 65536) return 'gemv';
  }
  return 'other';
}

/** Prefill `prompt` into a fresh cache, then profile one decode step of batch 1. */
export async function profileDecodeStep(model: Decoder, prompt: number[], nextId: number): Promise<StepProfile> {
  const cache = model.makeCache(1, prompt.length + 2);
  try {
    tf.dispose(model.forward({ ids: [prompt] }, { cache, lastOnly: true }));
    const pool = model.pool;
    const [jobs0, busy0] = [pool?.jobCount ?? 0, pool?.busyMs ?? 0];
    const info = await tf.profile(() => {
      tf.dispose(model.forward({ ids: [[nextId]] }, { cache, lastOnly: true }));
    });
    const byName: Record<string, number> = {};
    const ms = { gemv: 0, attention: 0, other: 0 };
    for (const k of info.kernels) {
      byName[k.name] = (byName[k.name] ?? 0) + 1;
      const t = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
      ms[bucket(k as unknown as { name: string; inputShapes: number[][] })] += t;
    }
    ms.gemv += (pool?.busyMs ?? 0) - busy0;
    return { kernels: info.kernels.length, by_name: byName, pool_jobs: (pool?.jobCount ?? 0) - jobs0, ms };
  } finally {
    for (const c of cache) c.dispose();
  }
}
