/**
 * A safe evaluator for Countdown answers: integers, + - * / (and the Unicode × ÷ −), parentheses
 * and whitespace; nothing else (`**` included). No eval, no Function. Arithmetic is exact over
 * rationals (BigInt numerator / denominator). Parsing is one left-to-right pass of the
 * shunting-yard algorithm with explicit stacks, so time is linear in the input and nesting depth
 * is bounded by memory, not by the call stack.
 */

// ---- exact rationals

export class Rational {
  readonly num: bigint;
  readonly den: bigint;
  private constructor(num: bigint, den: bigint) {
    this.num = num;
    this.den = den;
  }

  static of(num: bigint, den = 1n): Rational {
    if (den === 0n) throw new RangeError('zero denominator');
    if (den < 0n) {
      num = -num;
      den = -den;
    }
    const g = gcd(num < 0n ? -num : num, den);
    return new Rational(num / g, den / g);
  }

  add(o: Rational): Rational {
    return Rational.of(this.num * o.den + o.num * this.den, this.den * o.den);
  }
  sub(o: Rational): Rational {
    return Rational.of(this.num * o.den - o.num * this.den, this.den * o.den);
  }
  mul(o: Rational): Rational {
    return Rational.of(this.num * o.num, this.den * o.den);
  }
  /** null on division by zero */
  div(o: Rational): Rational | null {
    return o.num === 0n ? null : Rational.of(this.num * o.den, this.den * o.num);
  }
  neg(): Rational {
    return new Rational(-this.num, this.den);
  }
  equalsInt(n: bigint): boolean {
    return this.den === 1n && this.num === n;
  }
  isInteger(): boolean {
    return this.den === 1n;
  }
  toString(): string {
    return this.den === 1n ? String(this.num) : `${this.num}/${this.den}`;
  }
  toNumber(): number {
    return Number(this.num) / Number(this.den);
  }
}

function gcd(a: bigint, b: bigint): bigint {
  while (b !== 0n) [a, b] = [b, a % b];
  return a === 0n ? 1n : a;
}

// ---- tokens

export type Token =
  | { kind: 'num'; value: bigint; at: number }
  | { kind: 'op'; op: '+' | '-' | '*' | '/'; at: number }
  | { kind: 'lparen'; at: number }
  | { kind: 'rparen'; at: number };

const OPS: Record<string, '+' | '-' | '*' | '/'> = {
  '+': '+',
  '-': '-',
  '−': '-',
  '*': '*',
  '×': '*',
  '/': '/',
  '÷': '/',
};

export type ParseResult = { ok: true; value: Rational; numbers: bigint[] } | { ok: false; reason: string };

/** Split into tokens; null and a reason on any character outside the allowed set. */
export function tokenize(text: string): { tokens: Token[] } | { reason: string } {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    if (ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r') {
      i++;
      continue;
    }
    if (ch >= '0' && ch <= '9') {
      let j = i + 1;
      while (j < text.length && text[j] >= '0' && text[j] <= '9') j++;
      tokens.push({ kind: 'num', value: BigInt(text.slice(i, j)), at: i });
      i = j;
      continue;
    }
    if (ch === '*' && text[i + 1] === '*') return { reason: `power "**" at ${i} is not allowed` };
    const op = OPS[ch];
    if (op) {
      tokens.push({ kind: 'op', op, at: i });
      i++;
      continue;
    }
    if (ch === '(') {
      tokens.push({ kind: 'lparen', at: i });
      i++;
      continue;
    }
    if (ch === ')') {
      tokens.push({ kind: 'rparen', at: i });
      i++;
      continue;
    }
    const cp = text.codePointAt(i)!;
    return { reason: `character ${JSON.stringify(String.fromCodePoint(cp))} at ${i} is not allowed` };
  }
  return { tokens };
}

// ---- parser (shunting-yard with unary signs)

type StackOp = '+' | '-' | '*' | '/' | 'neg' | 'pos' | '(';
const PREC: Record<Exclude<StackOp, '('>, number> = { '+': 1, '-': 1, '*': 2, '/': 2, neg: 3, pos: 3 };

/**
 * Parse and evaluate. Unary + and − are accepted (as Python's eval, which the reference used,
 * accepts them); they bind tighter than * and /. Division by zero is a failure.
 */
export function evaluate(text: string): ParseResult {
  const t = tokenize(text);
  if ('reason' in t) return { ok: false, reason: t.reason };
  const { tokens } = t;
  if (tokens.length === 0) return { ok: false, reason: 'empty expression' };
  const values: Rational[] = [];
  const ops: StackOp[] = [];
  const numbers: bigint[] = [];
  let failure: string | null = null;

  const apply = (op: Exclude<StackOp, '('>): boolean => {
    if (op === 'neg' || op === 'pos') {
      const v = values.pop()!;
      values.push(op === 'neg' ? v.neg() : v);
      return true;
    }
    const b = values.pop()!;
    const a = values.pop()!;
    let r: Rational | null;
    if (op === '+') r = a.add(b);
    else if (op === '-') r = a.sub(b);
    else if (op === '*') r = a.mul(b);
    else r = a.div(b);
    if (r === null) {
      failure = 'division by zero';
      return false;
    }
    values.push(r);
    return true;
  };

  // expectOperand: the next token must start an operand (number, '(' or a unary sign)
  let expectOperand = true;
  for (const tok of tokens) {
    if (tok.kind === 'num') {
      if (!expectOperand) return { ok: false, reason: `number at ${tok.at} follows an operand without an operator` };
      values.push(Rational.of(tok.value));
      numbers.push(tok.value);
      expectOperand = false;
    } else if (tok.kind === 'lparen') {
      if (!expectOperand) return { ok: false, reason: `"(" at ${tok.at} follows an operand without an operator` };
      ops.push('(');
    } else if (tok.kind === 'rparen') {
      if (expectOperand) return { ok: false, reason: `")" at ${tok.at} closes an incomplete expression` };
      for (;;) {
        const top = ops.pop();
        if (top === undefined) return { ok: false, reason: `unbalanced ")" at ${tok.at}` };
        if (top === '(') break;
        if (!apply(top)) return { ok: false, reason: failure! };
      }
    } else if (expectOperand) {
      if (tok.op === '*' || tok.op === '/')
        return { ok: false, reason: `operator "${tok.op}" at ${tok.at} has no left operand` };
      ops.push(tok.op === '-' ? 'neg' : 'pos');
    } else {
      const p = PREC[tok.op];
      // left-associative binary operators: pop while the top binds at least as tight
      while (ops.length && ops[ops.length - 1] !== '(' && PREC[ops[ops.length - 1] as Exclude<StackOp, '('>] >= p) {
        if (!apply(ops.pop() as Exclude<StackOp, '('>)) return { ok: false, reason: failure! };
      }
      ops.push(tok.op);
      expectOperand = true;
    }
  }
  if (expectOperand) return { ok: false, reason: 'the expression ends with an operator' };
  while (ops.length) {
    const top = ops.pop()!;
    if (top === '(') return { ok: false, reason: 'unbalanced "("' };
    if (!apply(top)) return { ok: false, reason: failure! };
  }
  return { ok: true, value: values[0], numbers };
}
