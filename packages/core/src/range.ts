/**
 * Numeric ranges of settings: a value is allowed when it lies in one of a few intervals (most
 * settings have one; a temperature is 0 or in [1e-5, 100]). The same range checks a request
 * field, a flag and the engine's own resolution, and its text is what every error message states.
 */

/** A closed interval by default; `minOpen`/`maxOpen` exclude an end. */
export interface Interval {
  min: number;
  max: number;
  minOpen?: boolean;
  maxOpen?: boolean;
  /** what values in this interval mean, where it is not the main one (`the direct mixture`) */
  note?: string;
}

/** The intervals a value may lie in (the first is the main one). */
export type NumericRange = readonly Interval[];

/** The largest int32: the upper bound of counts and ids (they go to the device as int32). */
export const INT32_MAX = 2147483647;

export function inInterval(x: number, i: Interval): boolean {
  return (i.minOpen ? x > i.min : x >= i.min) && (i.maxOpen ? x < i.max : x <= i.max);
}

/** True when `x` is a finite number in one of the intervals (and an integer, when `integer`). */
export function inRange(x: unknown, range: NumericRange, integer = false): x is number {
  if (typeof x !== 'number' || !Number.isFinite(x)) return false;
  if (integer && !Number.isInteger(x)) return false;
  return range.some((i) => inInterval(x, i));
}

/** A bound as people write it: 0.01, 100, 2147483647, and powers of ten from 1e3 up or 1e-3 down as 1e3, 1e-5. */
export function formatBound(x: number): string {
  const a = Math.abs(x);
  const exp = a > 0 ? Math.round(Math.log10(a)) : 0;
  const powerOfTen = a > 0 && 10 ** exp === a;
  if (powerOfTen && Math.abs(exp) >= 3) return `${x < 0 ? '-' : ''}1e${exp}`;
  if (a === 0 || Number.isInteger(x) || (a >= 1e-3 && a < 1e6)) return String(x);
  return x
    .toExponential()
    .replace(/\.?0+e/, 'e')
    .replace('e+', 'e');
}

function describeInterval(i: Interval): string {
  if (i.min === i.max && !i.minOpen && !i.maxOpen) return formatBound(i.min);
  return `in ${i.minOpen ? '(' : '['}${formatBound(i.min)}, ${formatBound(i.max)}${i.maxOpen ? ')' : ']'}`;
}

/**
 * The range as a rule: "in (0, 1]", "0 or in [1e-5, 100]", "an integer in [0, 20]",
 * "in [0, 1e6], or in [-1e6, -99] (the direct mixture)".
 */
export function describeRange(range: NumericRange, integer = false): string {
  const parts = range.map((i) => describeInterval(i) + (i.note ? ` (${i.note})` : ''));
  const text = parts.length === 2 && !range.some((i) => i.note) ? `${parts[0]} or ${parts[1]}` : parts.join(', or ');
  return integer ? `an integer ${text}` : text;
}
