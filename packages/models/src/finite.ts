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

/**
 * Scan raw bytes of `dtype` (a fresh, aligned buffer, as Checkpoint reads give). Integer dtypes
 * are not weights: nothing. A branch-free pass first (an OR of exponent-field sums whose sign
 * bit is set only by a bad value: 0.7 ns a value in V8, about 2x a plain loop); only a tensor it
 * flags is counted value by value.
 */
export function scanBytes(dtype: DType, bytes: Uint8Array, into: WeightScan = { nonFinite: 0, huge: 0 }): WeightScan {
  switch (dtype) {
    case 'F32':
      return scanF32Words(new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2), into);
    case 'BF16': {
      // bf16 is the top half of an f32: exponent bits 7..14; two words per 32-bit lane
      if (!flagged16(bytes, 0x7f80, 0x2080)) return into;
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
      if (!flagged16(bytes, 0x7c00, 0x0400)) return into;
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
    default:
      return into;
  }
}

/** Scan float32 values (e.g. a tensor already widened to f32). */
export function scanFloat32(v: Float32Array, into: WeightScan = { nonFinite: 0, huge: 0 }): WeightScan {
  return scanF32Words(new Uint32Array(v.buffer, v.byteOffset, v.length), into);
}

/**
 * Whether any 16-bit word has (w & mask) + add ≥ 0x8000: with mask the exponent field and add
 * what lifts the first bad exponent to bit 15. Two words per 32-bit lane (no carry crosses
 * the halves: each half sum stays under 0x10000).
 */
function flagged16(bytes: Uint8Array, mask: number, add: number): boolean {
  const lanes = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
  const m2 = (mask * 0x10001) >>> 0;
  const a2 = (add * 0x10001) >>> 0;
  let acc = 0;
  const n = lanes.length;
  let i = 0;
  for (; i + 4 <= n; i += 4)
    acc |=
      ((lanes[i] & m2) + a2) | ((lanes[i + 1] & m2) + a2) | ((lanes[i + 2] & m2) + a2) | ((lanes[i + 3] & m2) + a2);
  for (; i < n; i++) acc |= (lanes[i] & m2) + a2;
  if (bytes.byteLength & 2) {
    const last = new Uint16Array(bytes.buffer, bytes.byteOffset + bytes.byteLength - 2, 1)[0];
    acc |= (last & mask) + add;
  }
  return (acc & 0x80008000) !== 0;
}

function scanF32Words(w: Uint32Array, into: WeightScan): WeightScan {
  // (w & exponent) + 0x20800000 reaches bit 31 exactly when the exponent is ≥ 191 (|w| ≥ 2^64, Inf, NaN)
  let acc = 0;
  const n = w.length;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    acc |=
      ((w[i] & 0x7f800000) + 0x20800000) |
      ((w[i + 1] & 0x7f800000) + 0x20800000) |
      ((w[i + 2] & 0x7f800000) + 0x20800000) |
      ((w[i + 3] & 0x7f800000) + 0x20800000);
  }
  for (; i < n; i++) acc |= (w[i] & 0x7f800000) + 0x20800000;
  if (acc >= 0) return into;
  for (let j = 0; j < n; j++) {
    const e = (w[j] >>> 23) & 0xff;
    if (e >= F32_HUGE_EXP) {
      if (e === 0xff) into.nonFinite++;
      else into.huge++;
    }
  }
  return into;
}
