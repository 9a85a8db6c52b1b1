/**
 * The dtype plan (issue 15): from the --dtype choice, the checkpoint's stored dtypes and the
 * backend, what the matrices are held as, and a one-line note saying why.
 *
 * - `auto`: a checkpoint whose matrices are all BF16 (or all F16) keeps its 16-bit words; an F32
 *   checkpoint (or one mixing dtypes across its matrices) stays f32.
 * - `f32`: every weight widened (exactly) to f32.
 * - `bf16`: 16-bit words; F32 values rounded to nearest even (F16 widened first, then rounded).
 * - `q8`: llama.cpp's Q8_0 (blocks of 32 along the input dimension), quantized at load from the
 *   f32 values (widened exactly from 16-bit storage).
 * Packed (16/8-bit) matrices run on wasm only: every other backend widens them to f32 at load
 * (q8 dequantized), so it computes with the same values through its ordinary f32 path. On wasm
 * with our kernels off (MOI_KERNELS=0) a packed matmul widens the whole matrix on every call, so
 * `auto` widens at load there too; an explicit bf16/q8 is kept packed (it may be what fits).
 */
import type { PackedKind } from '@moi/core';

/** The --dtype values. */
export const DTYPE_CHOICES = ['auto', 'f32', 'bf16', 'q8'] as const;
export type DtypeChoice = (typeof DTYPE_CHOICES)[number];
/** What the matrices were loaded as (f16 checkpoints stay f16 under 'auto'). */
export type WeightDtype = 'f32' | 'bf16' | 'f16' | 'q8';

export interface DtypePlan {
  /** what the matrices are held as in memory */
  dtype: WeightDtype;
  /** the values the matrices carry: equal to dtype, except where a backend widens packed values to f32 */
  values: WeightDtype;
  /** the packed kind the matrices are converted to (null: f32 values straight from the checkpoint) */
  kind: PackedKind | null;
  /** keep the matrices packed in memory (wasm); else widen the converted values to f32 at load */
  packed: boolean;
  note: string;
}

/** The stored kind of a checkpoint's matrices: 'bf16' / 'f16' when all are, else 'f32'. */
export function storedKind(matrixDtypes: Iterable<string>): { kind: 'f32' | 'bf16' | 'f16'; mixed: string[] } {
  const set = [...new Set(matrixDtypes)].sort();
  if (set.length === 1 && set[0] === 'BF16') return { kind: 'bf16', mixed: [] };
  if (set.length === 1 && set[0] === 'F16') return { kind: 'f16', mixed: [] };
  return { kind: 'f32', mixed: set.length > 1 ? set : [] };
}

export function planDtype(
  choice: DtypeChoice,
  matrixDtypes: Iterable<string>,
  backend: string,
  kernels = true,
): DtypePlan {
  const { kind: stored, mixed } = storedKind(matrixDtypes);
  const storedName = mixed.length ? `mixed-dtype (${mixed.join(', ')})` : stored;
  const values: WeightDtype = choice === 'auto' ? stored : choice;
  if (values === 'f32') {
    const note =
      stored === 'f32' && !mixed.length
        ? 'f32 checkpoint in f32'
        : choice === 'auto'
          ? `${storedName} checkpoint: matrices held in f32 (widened exactly)`
          : `${storedName} checkpoint widened to f32 (exact)`;
    return { dtype: 'f32', values: 'f32', kind: null, packed: false, note };
  }
  let note: string;
  if (values === 'q8') note = `q8: quantized at load (Q8_0, blocks of 32) from the ${storedName} checkpoint`;
  else if (values === stored) note = `${stored} checkpoint kept in 16 bits`;
  else if (stored === 'f16') note = `f16 checkpoint rounded to bf16 at load (widened, then round to nearest even)`;
  else note = `${storedName} checkpoint rounded to bf16 at load (round to nearest even)`;
  if (backend === 'wasm' && (kernels || choice !== 'auto')) {
    return {
      dtype: values,
      values,
      kind: values,
      packed: true,
      note: kernels ? note : `${note}; MOI_KERNELS=0: every packed matmul widens the matrix per call (slow)`,
    };
  }
  const what =
    values === stored
      ? `the ${stored} checkpoint's words, exactly`
      : values === 'q8'
        ? 'Q8_0 values, dequantized'
        : `${storedName} values rounded to bf16`;
  const where = backend === 'wasm' ? 'wasm with MOI_KERNELS=0' : backend;
  return {
    dtype: 'f32',
    values,
    kind: values,
    packed: false,
    note: `${where}: 16/8-bit weights widened to f32 at load (${what})`,
  };
}
