/**
 * Countdown problems from a seed: 3 or 4 numbers in 1–100 and a target in 1–100 that a built-in
 * solver proves reachable using every number exactly once with + − × ÷ (exact rationals).
 */
import { createRng, type Rng } from '@moi/core';
import { Rational } from './expression.ts';

interface Item {
  value: Rational;
  expr: string;
}

/**
 * An expression over all of `numbers` (each exactly once) equal to `target`, or null when none
 * exists. Exhaustive: combine any two items into one, recursively (depth = count − 1 ≤ 5).
 */
export function solveCountdown(numbers: number[], target: number): string | null {
  if (numbers.length === 0 || numbers.length > 6) throw new RangeError('the solver takes 1 to 6 numbers');
  const goal = BigInt(target);
  const seen = new Set<string>();
  const search = (items: Item[]): string | null => {
    if (items.length === 1) return items[0].value.equalsInt(goal) ? items[0].expr : null;
    const key = items
      .map((x) => x.value.toString())
      .sort()
      .join(',');
    if (seen.has(key)) return null;
    seen.add(key);
    for (let i = 0; i < items.length; i++) {
      for (let j = 0; j < items.length; j++) {
        if (i === j) continue;
        const a = items[i];
        const b = items[j];
        const rest = items.filter((_, k) => k !== i && k !== j);
        const options: Item[] = [];
        if (i < j) {
          options.push({ value: a.value.add(b.value), expr: `(${a.expr} + ${b.expr})` });
          options.push({ value: a.value.mul(b.value), expr: `(${a.expr} * ${b.expr})` });
        }
        options.push({ value: a.value.sub(b.value), expr: `(${a.expr} - ${b.expr})` });
        const q = a.value.div(b.value);
        if (q) options.push({ value: q, expr: `(${a.expr} / ${b.expr})` });
        for (const o of options) {
          const found = search([...rest, o]);
          if (found) return found;
        }
      }
    }
    return null;
  };
  const found = search(numbers.map((n) => ({ value: Rational.of(BigInt(n)), expr: String(n) })));
  return found && found.startsWith('(') && found.endsWith(')') && numbers.length > 1 ? stripOuter(found) : found;
}

function stripOuter(expr: string): string {
  return expr.slice(1, -1);
}

export interface GeneratedProblem {
  target: number;
  numbers: number[];
  solution: string;
}

const int = (rng: Rng, lo: number, hi: number) => lo + Math.floor(rng.nextFloat() * (hi - lo + 1));

/** `count` solvable problems, the same for the same seed. */
export function generateCountdown(count: number, seed: number): GeneratedProblem[] {
  const rng = createRng(seed);
  const out: GeneratedProblem[] = [];
  while (out.length < count) {
    const size = rng.nextFloat() < 0.5 ? 3 : 4;
    const numbers = Array.from({ length: size }, () => int(rng, 1, 100));
    const target = int(rng, 1, 100);
    const solution = solveCountdown(numbers, target);
    if (solution) out.push({ target, numbers, solution });
  }
  return out;
}
