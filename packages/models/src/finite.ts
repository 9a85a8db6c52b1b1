/**
 * The load-time weight check (llama.cpp's --check-tensors, on by default here): counts the values
 * of a tensor's raw bytes that are not finite (NaN, ±Inf) or so large that a product of two of
 * them overflows float32 (|w| ≥ 2^64, fifteen orders of magnitude past any trained weight; the
 * fuzzer's 3e38 and 1e30 weights gave NaN logits). It reads the bit patterns (exponent fields), so
 * it is one integer pass over bytes the loader has just read anyway; loadModel runs it on every
 * tensor and fails with E_NONFINITE_WEIGHTS naming the tensor and the count.
 */
import type { TensorInfo } from '@moi/core';

type DType = TensorInfo['dtype'];

export interface WeightScan {
  /** NaN or ±Inf */
  nonFinite: number;
  /** finite, but |w| ≥ 2^64 */
  huge: number;
}

/** Values at or past this magnitude are refused: their square overflows float32 (2^128). */
export const HUGE_WEIGHT = 2 ** 64;

/** f32 exponent field of 2^64 (127 + 64); 255 is NaN/Inf. */
const F32_HUGE_EXP = 191;

/** Scan raw bytes of `dtype` (a fresh, aligned buffer, as Checkpoint reads give). Integer dtypes are not weights: nothing. */
export function scanBytes(dtype: DType, bytes: Uint8Array, into: WeightScan = { nonFinite: 0, huge: 0 }): WeightScan {
  switch (dtype) {
    case 'F32': return scanF32Words(new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2), into);
    case 'BF16': {
      // bf16 is the top half of an f32: exponent bits 7..14
      const w = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 1);
      for (let i = 0; i < w.length; i++) {
        const e = (w[i] >>> 7) & 0xff;
        if (e >= F32_HUGE_EXP) {
          if (e === 0xff) into.nonFinite++;
          else into.huge++;
        }
      }
      return into;
    }
    case 'F16': {
      // f16 holds at most 65504: only NaN/Inf (exponent 31)
      const w = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 1);
      for (let i = 0; i < w.length; i++) if ((w[i] & 0x7c00) === 0x7c00) into.nonFinite++;
      return into;
    }
    case 'F64': {
      const v = new Float64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 3);
      for (let i = 0; i < v.length; i++) {
        const x = v[i];
        if (!Number.isFinite(x)) into.nonFinite++;
        else if (Math.abs(x) >= HUGE_WEIGHT) into.huge++;
      }
      return into;
    }
    default: return into;
  }
}

/** Scan float32 values (e.g. a tensor already widened to f32). */
export function scanFloat32(v: Float32Array, into: WeightScan = { nonFinite: 0, huge: 0 }): WeightScan {
  return scanF32Words(new Uint32Array(v.buffer, v.byteOffset, v.length), into);
}

function scanF32Words(w: Uint32Array, into: WeightScan): WeightScan {
  for (let i = 0; i < w.length; i++) {
    const e = (w[i] >>> 23) & 0xff;
    if (e >= F32_HUGE_EXP) {
      if (e === 0xff) into.nonFinite++;
      else into.huge++;
    }
  }
  return into;
}
