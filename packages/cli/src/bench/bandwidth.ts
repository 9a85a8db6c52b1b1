/**
 * Memory read bandwidth, measured in the same run as the benchmark and on the same backend: a
 * matrix-vector product over a matrix far larger than any cache streams every byte once, which
 * is exactly the access pattern of a batch-1 decode step. bandwidth = matrix bytes / time, the
 * best of three aspect ratios (XNNPACK's GEMV is faster on some). It measures what this backend
 * can stream, so a native engine (llama.cpp) can read faster than it: see bench/README.md.
 */
import * as tf from '@tensorflow/tfjs-core';
import { maxTensorBytes } from '@moi/models';

export interface BandwidthResult {
  gbPerSec: number;
  bytes: number;
  method: string;
}

export async function measureReadBandwidth(
  opts: { megabytes?: number; repeats?: number } = {},
): Promise<BandwidthResult> {
  const mb = opts.megabytes ?? 256;
  const repeats = opts.repeats ?? 5;
  // one matrix must fit one device buffer (webgpu on lavapipe: 128 MiB)
  const floats = Math.floor(Math.min(mb * 1024 * 1024, maxTensorBytes().bytes) / 4);
  // XNNPACK's GEMV speed depends on the matrix's aspect; the best of three shapes is the probe
  let best: BandwidthResult | null = null;
  for (const inDim of [1024, 4096, 16384]) {
    const outDim = Math.max(1, Math.floor(floats / inDim));
    const w = tf.randomUniform([inDim, outDim], -1, 1, 'float32', 1);
    const x = tf.randomUniform([1, inDim], -1, 1, 'float32', 2);
    const times: number[] = [];
    for (let i = 0; i < repeats + 1; i++) {
      const t0 = performance.now();
      const y = tf.matMul(x, w);
      await y.data();
      const dt = performance.now() - t0;
      y.dispose();
      if (i > 0) times.push(dt); // the first call packs the weights
    }
    tf.dispose([w, x]);
    const bytes = inDim * outDim * 4;
    const gbPerSec = bytes / (median(times) / 1000) / 1e9;
    if (!best || gbPerSec > best.gbPerSec) {
      best = {
        gbPerSec,
        bytes,
        method: `${tf.getBackend()} matMul [1,${inDim}]x[${inDim},${outDim}] f32 (best of 3 shapes, median of ${repeats})`,
      };
    }
  }
  return best!;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
