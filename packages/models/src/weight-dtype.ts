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
 * (q8 dequantized), so it computes with the same values through its ordinary f32 path.
 */
import type { PackedKind } from '@moi/core';
import type { DtypeChoice, WeightDtype } from './load.ts';

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

export function planDtype(choice: DtypeChoice, matrixDtypes: Iterable<string>, backend: string): DtypePlan {
  const { kind: stored, mixed } = storedKind(matrixDtypes);
  const storedName = mixed.length ? `mixed-dtype (${mixed.join(', ')})` : stored;
  const values: WeightDtype = choice === 'auto' ? stored : choice;
  if (values === 'f32') {
    const note = stored === 'f32' && !mixed.length ? 'f32 checkpoint in f32'
      : choice === 'auto' ? `${storedName} checkpoint: matrices held in f32 (widened exactly)`
        : `${storedName} checkpoint widened to f32 (exact)`;
    return { dtype: 'f32', values: 'f32', kind: null, packed: false, note };
  }
  let note: string;
  if (values === 'q8') note = `q8: quantized at load (Q8_0, blocks of 32) from the ${storedName} checkpoint`;
  else if (values === stored) note = `${stored} checkpoint kept in 16 bits`;
  else if (stored === 'f16') note = `f16 checkpoint rounded to bf16 at load (widened, then round to nearest even)`;
  else note = `${storedName} checkpoint rounded to bf16 at load (round to nearest even)`;
  if (backend === 'wasm') return { dtype: values, values, kind: values, packed: true, note };
  const what = values === stored ? `the ${stored} checkpoint's words, exactly` : values === 'q8' ? 'Q8_0 values, dequantized' : `${storedName} values rounded to bf16`;
  return { dtype: 'f32', values, kind: values, packed: false, note: `${backend}: 16/8-bit weights widened to f32 at load (${what})` };
}
