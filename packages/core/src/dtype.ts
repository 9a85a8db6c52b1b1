/**
 * Safetensors dtypes and the exact number conversions between float32 and the 16-bit floats
 * (bfloat16 and IEEE half). Conversions work on bit patterns held in Uint16Array, so NaN
 * payloads, signed zeros, infinities and subnormals survive exactly where the format allows.
 */

/** The safetensors dtypes this engine reads and writes. */
export type DType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

/** Bytes per element of each dtype. */
export const DTYPE_SIZE: Readonly<Record<DType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** True where `s` names a supported dtype. */
export function isDType(s: unknown): s is DType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZE, s);
}

/** Number of elements of a shape (1 for a scalar `[]`). */
export function numElements(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

// One scratch word to move between a float32 value and its bits.
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** The IEEE bits of `x` rounded to float32. */
export function f32Bits(x: number): number {
  scratchF32[0] = x;
  return scratchU32[0];
}

/** The float32 value whose bits are `bits`. */
export function f32FromBits(bits: number): number {
  scratchU32[0] = bits >>> 0;
  return scratchF32[0];
}

// ---- bfloat16: the high 16 bits of a float32 ----

/** float32 bits -> bfloat16 bits, rounding to nearest even; NaN stays a (quiet) NaN. */
export function f32BitsToBf16(bits: number): number {
  bits >>>= 0;
  if ((bits & 0x7fffffff) > 0x7f800000) return (bits >>> 16) | 0x0040;
  // Adding 0x7fff plus the lowest kept bit rounds ties to even; the largest non-NaN input
  // (0xff7fffff) stays below 2^32, so the sum never wraps.
  return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
}

/** A number -> bfloat16 bits (via float32, then round to nearest even). */
export function toBf16Bits(x: number): number {
  return f32BitsToBf16(f32Bits(x));
}

/** bfloat16 bits -> the exact float32 value. */
export function bf16BitsToNumber(h: number): number {
  return f32FromBits((h & 0xffff) << 16);
}

/** bfloat16 bit patterns -> float32, exactly (the bf16 bits become the high half). */
export function bf16ToF32(src: Uint16Array): Float32Array {
  const out = new Uint32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i] << 16;
  return new Float32Array(out.buffer);
}

/** float32 values -> bfloat16 bit patterns, rounding to nearest even. */
export function f32ToBf16(src: Float32Array | ArrayLike<number>): Uint16Array {
  const bits = src instanceof Float32Array ? new Uint32Array(src.buffer, src.byteOffset, src.length) : null;
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToBf16(bits ? bits[i] : f32Bits(src[i]));
  return out;
}

// ---- IEEE half (binary16): 1 sign, 5 exponent (bias 15), 10 mantissa bits ----

/** half bits -> float32 bits, exactly (subnormals normalised, inf/NaN kept with payload). */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let man = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (man << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (man << 13)) >>> 0; // 112 = 127 - 15
  if (man === 0) return sign >>> 0;
  // Subnormal: value = man * 2^-24. Shift the leading 1 up to the implicit-bit position.
  let e = 113; // exponent field (biased) the value would have with man's top bit at bit 10
  while ((man & 0x400) === 0) {
    man <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((man & 0x3ff) << 13)) >>> 0;
}

/** float32 bits -> half bits, rounding to nearest even (overflow -> inf, underflow -> subnormal or 0). */
export function f32BitsToF16(bits: number): number {
  bits >>>= 0;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const man = bits & 0x7fffff;
  if (exp === 0xff) return man ? sign | 0x7e00 | (man >>> 13) : sign | 0x7c00; // NaN (quiet) / inf
  const e = exp - 127 + 15; // half exponent field
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half (or zero): value / 2^-24 = (man | implicit 1) >> (14 - e).
    if (e < -10) return sign; // below 2^-25: rounds to zero
    const m = man | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++; // may carry into the smallest normal: correct
    return sign | h;
  }
  let h = (e << 10) | (man >>> 13);
  const rem = man & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // a carry into the exponent (even to inf) is correct
  return sign | h;
}

/** A number -> half bits (via float32, then round to nearest even). */
export function toF16Bits(x: number): number {
  return f32BitsToF16(f32Bits(x));
}

/** half bits -> the exact number. */
export function f16BitsToNumber(h: number): number {
  return f32FromBits(f16BitsToF32Bits(h & 0xffff));
}

// All 65,536 half patterns as float32 bits, built on first use (256 KB).
let f16Table: Uint32Array | null = null;
function f16ToF32Table(): Uint32Array {
  if (!f16Table) {
    f16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToF32Bits(h);
  }
  return f16Table;
}

/** half bit patterns -> float32, exactly (including subnormals, inf and NaN). */
export function f16ToF32(src: Uint16Array): Float32Array {
  const table = f16ToF32Table();
  const out = new Uint32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]];
  return new Float32Array(out.buffer);
}

/** float32 values -> half bit patterns, rounding to nearest even. */
export function f32ToF16(src: Float32Array | ArrayLike<number>): Uint16Array {
  const bits = src instanceof Float32Array ? new Uint32Array(src.buffer, src.byteOffset, src.length) : null;
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToF16(bits ? bits[i] : f32Bits(src[i]));
  return out;
}
