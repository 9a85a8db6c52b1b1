/**
 * Scorers and the safe expression evaluator, on hand-made right, wrong and adversarial answers.
 * Expected values are worked out by hand in the comments.
 */
import assert from 'node:assert/strict';
import { evaluate, tokenize } from '../src/eval/expression.ts';
import {
  extractAimeAnswer,
  extractCountdownAnswer,
  lastDelimited,
  scoreAime,
  scoreCountdown,
  scoreGeneric,
} from '../src/eval/scorers.ts';
import { generateCountdown, solveCountdown } from '../src/eval/solver.ts';

const cd = (text: string, target: number, numbers: number[]) => scoreCountdown(text, { target, numbers });
const ans = (expr: string) => `<think>hmm</think> <answer>${expr}</answer>`;

describe('eval: expression evaluator', () => {
  it('evaluates with precedence, associativity and exact rationals', () => {
    assert.equal(evaluate('1 + 2 * 3').ok && String((evaluate('1 + 2 * 3') as { value: unknown }).value), '7');
    const v = (s: string) => {
      const r = evaluate(s);
      assert.ok(r.ok, `${s}: ${!r.ok && r.reason}`);
      return r.value.toString();
    };
    assert.equal(v('10 - 4 - 3'), '3'); // left-associative: (10-4)-3
    assert.equal(v('64 / 4 / 2'), '8'); // (64/4)/2
    assert.equal(v('(1 + 2) / 3'), '1');
    assert.equal(v('1 / 3 + 1 / 6'), '1/2'); // exact: 2/6 + 1/6
    assert.equal(v('(1/3) * 3'), '1'); // no float rounding
    assert.equal(v('-3 + 5'), '2'); // unary minus, as Python's eval
    assert.equal(v('2 * -3'), '-6');
    assert.equal(v('6 × 7 − 2 ÷ 2'), '41'); // Unicode operators: 42 − 1
    assert.equal(v('((((((7))))))'), '7');
  });

  it('rejects what is not an arithmetic expression', () => {
    const bad = (s: string, re: RegExp) => {
      const r = evaluate(s);
      assert.ok(!r.ok, s);
      assert.match(r.reason, re, s);
    };
    bad('2 ** 3', /power/);
    bad('1 / (2 - 2)', /division by zero/);
    bad('(1 + 2', /unbalanced/);
    bad('1 + 2)', /unbalanced/);
    bad('()', /incomplete/);
    bad('1 +', /ends with an operator/);
    bad('* 2', /no left operand/);
    bad('1 2', /without an operator/);
    bad('2(3)', /without an operator/);
    bad('1.5 + 2', /character "\."/);
    bad('__import__("os")', /character "_"/);
    bad('x', /character "x"/);
    bad('', /empty/);
    bad('１ + 2', /character "１"/); // full-width digit is not an ASCII integer
  });

  it('survives 100 kB of nesting without recursion, in linear time', () => {
    const depth = 50_000;
    const deep = '('.repeat(depth) + '7' + ')'.repeat(depth);
    const r = evaluate(deep);
    assert.ok(r.ok && r.value.toString() === '7');
    const unbalanced = evaluate('('.repeat(100_000));
    assert.ok(!unbalanced.ok);
    // linear: 4x the input costs well under 16x the time (quadratic would be 16x). Best of 5 per
    // size, and up to 5 attempts: a GC pause or another worker can slow one measurement on a
    // shared machine, but a quadratic evaluator fails every attempt.
    const time = (n: number) => {
      const s = '1+'.repeat(n) + '1';
      let best = Infinity;
      for (let i = 0; i < 5; i++) {
        const t = performance.now();
        evaluate(s);
        best = Math.min(best, performance.now() - t);
      }
      return best;
    };
    time(10_000);
    const seen: string[] = [];
    for (let attempt = 0; attempt < 5; attempt++) {
      const small = Math.max(0.5, time(25_000));
      const big = time(100_000);
      if (big < small * 10) return;
      seen.push(`${big.toFixed(1)} ms vs ${small.toFixed(1)} ms`);
    }
    assert.fail(`100k terms vs 25k, every attempt over 10x: ${seen.join('; ')}`);
  });

  it('tokenizes numbers as integers (leading zeros are the same number)', () => {
    const t = tokenize('007 + 10');
    assert.ok('tokens' in t);
    assert.deepEqual(
      t.tokens.filter((k) => k.kind === 'num').map((k) => (k as { value: bigint }).value),
      [7n, 10n],
    );
  });
});

describe('eval: countdown scorer', () => {
  it('takes the last <answer>, else the last \\boxed, and drops what follows =', () => {
    assert.equal(extractCountdownAnswer('<answer> 1 + 2 </answer> then <answer>3*4</answer>'), '3*4');
    assert.equal(extractCountdownAnswer('\\boxed{1+2} and \\boxed{5-1}'), '5-1');
    assert.equal(extractCountdownAnswer('<answer>2*3</answer> \\boxed{9}'), '2*3'); // <answer> wins over \boxed
    assert.equal(extractCountdownAnswer('<answer>(1 + 2) / 3 = 1</answer>'), '(1 + 2) / 3');
    assert.equal(extractCountdownAnswer('<answer>\n 44 - 19\n</answer>'), '44 - 19');
    assert.equal(extractCountdownAnswer('no tags here'), null);
    assert.equal(extractCountdownAnswer(''), null);
    assert.equal(extractCountdownAnswer('<answer>unclosed'), null);
    // non-greedy from the left, as the reference's regex: the first close after each open
    assert.equal(lastDelimited('<answer>a<answer>b</answer>', '<answer>', '</answer>'), 'a<answer>b');
  });

  it('scores right answers', () => {
    assert.equal(cd(ans('(44 - 19) + 35'), 60, [44, 19, 35]).correct, true); // 25 + 35
    assert.equal(cd(ans('79 - (50 / 2) + 1'), 55, [79, 50, 2, 1]).correct, true); // 79 - 25 + 1
    assert.equal(cd(ans('(95 - 4) / 7 = 13'), 13, [95, 4, 7]).correct, true); // 91 / 7, "= 13" dropped
    assert.equal(cd(ans('4 × 25 ÷ 5 − 1'), 19, [4, 25, 5, 1]).correct, true); // 100 / 5 - 1
    assert.equal(cd(ans('(1 + 2) / 3 * 6'), 6, [1, 2, 3, 6]).correct, true); // fractions stay exact
    assert.equal(cd(ans('100 / (7 - 3) * 3'), 75, [100, 7, 3, 3]).correct, true); // repeated given number used twice
  });

  it("scores wrong answers, with the reference's format credit separate", () => {
    const wrongValue = cd(ans('44 + 19 + 35'), 60, [44, 19, 35]);
    assert.deepEqual([wrongValue.correct, wrongValue.formatOnly], [false, true]);
    assert.match(wrongValue.reason!, /equals 98/);
    const reused = cd(ans('44 + 44 - 19'), 69, [44, 19, 35]);
    assert.equal(reused.correct, false);
    assert.match(reused.reason!, /exactly once/);
    assert.equal(cd(ans('44 + 16'), 60, [44, 19, 35]).correct, false); // missing numbers, a foreign one
    assert.equal(cd(ans('44 - 19 + 35 + 1'), 61, [44, 19, 35]).correct, false); // an extra number
    assert.equal(cd(ans('3 * 3'), 9, [3]).correct, false); // 3 used twice
    const div0 = cd(ans('7 / (3 - 3) + 1'), 1, [7, 3, 3, 1]);
    assert.equal(div0.correct, false);
    assert.match(div0.reason!, /division by zero/);
    assert.equal(cd(ans('2 ** 3 + 1'), 9, [2, 3, 1]).correct, false); // power
    assert.equal(cd(ans('2 ^ 3 + 1'), 9, [2, 3, 1]).correct, false); // ^ is not an operator here
    assert.equal(cd(ans('(2 + 3'), 5, [2, 3]).correct, false); // unbalanced
    assert.equal(cd(ans('((2 + 3)))'), 5, [2, 3]).correct, false);
    assert.equal(cd(ans(''), 5, [2, 3]).formatOnly, true); // an empty answer tag: format only
    const none = cd('', 5, [2, 3]);
    assert.deepEqual([none.correct, none.formatOnly, none.extracted], [false, false, null]); // empty completion
  });

  it('is not fooled by injection attempts', () => {
    const inj = [
      '__import__("os").system("echo pwned")',
      'constructor.constructor("return process")()',
      '1 + 2; process.exit(1)',
      '`${1+2}`',
      '2 + 3 // 1',
      '0x3 + 2',
      '1e1 - 5',
      '2 + 3 </think> 0',
    ];
    for (const expr of inj) {
      const v = cd(`<answer>${expr}</answer>`, 5, [2, 3]);
      assert.equal(v.correct, false, expr);
    }
    // the last answer tag is the one scored, even after a decoy
    assert.equal(cd('<answer>2+3</answer> <answer>process.exit()</answer>', 5, [2, 3]).correct, false);
    assert.equal(cd('<answer>process.exit()</answer> <answer>2+3</answer>', 5, [2, 3]).correct, true);
  });

  it('handles 100 kB completions in linear time', () => {
    const filler = 'Let me think. '.repeat(7_500); // ~105 kB
    const t0 = performance.now();
    assert.equal(cd(filler + ans('(44 - 19) + 35'), 60, [44, 19, 35]).correct, true);
    assert.equal(cd('<answer>'.repeat(12_500), 60, [44, 19, 35]).extracted, null); // 100 kB of opens, no close
    assert.equal(cd('\\boxed{'.repeat(14_000) + '}', 1, [1]).correct, false);
    const bigExpr = cd(ans('99*'.repeat(33_000) + '1'), 1, [1]); // 100 kB expression: rejected before arithmetic
    assert.match(bigExpr.reason!, /exactly once/);
    assert.equal(cd(ans('0'.repeat(100_000) + '7 - 2'), 5, [7, 2]).correct, true); // 100 kB of leading zeros
    assert.ok(performance.now() - t0 < 15000, `took ${performance.now() - t0} ms`);
  });
});

describe('eval: AIME scorer', () => {
  it('takes the last \\boxed integer, else the last line, else the first integer', () => {
    assert.equal(extractAimeAnswer('first \\boxed{12} then \\boxed{204}'), '204'); // last, not first (deviation)
    assert.equal(extractAimeAnswer('\\boxed{x+1}\nso the answer is 33\nFinal: 7 and 8'), '7');
    assert.equal(extractAimeAnswer('We get 15 apples\n\nand then nothing'), '15');
    assert.equal(extractAimeAnswer('The answer is \\boxed{1,000}'), '1000'); // thousands comma
    assert.equal(extractAimeAnswer(''), null);
    assert.equal(extractAimeAnswer('\\b is not a backspace here: \\boxed{-5}'), '-5');
  });

  it('compares integers exactly', () => {
    assert.equal(scoreAime('so \\boxed{204}', '204').correct, true);
    assert.equal(scoreAime('so \\boxed{0204}', 204).correct, true);
    assert.equal(scoreAime('so \\boxed{205}', '204').formatOnly, true);
    assert.equal(scoreAime('', '204').correct, false);
    assert.equal(scoreAime('9'.repeat(100_000), '204').correct, false);
    assert.equal(scoreAime('\\boxed{204}', 'n/a').correct, false);
  });
});

describe('eval: generic (jsonl) scorer', () => {
  it('matches exact text, numbers and regexes', () => {
    assert.equal(scoreGeneric('thinking...\n<answer> Paris </answer>', 'Paris').correct, true);
    assert.equal(scoreGeneric('thinking...\nParis', 'Paris').correct, true);
    assert.equal(scoreGeneric('thinking...\nparis', 'Paris').correct, false);
    assert.equal(scoreGeneric('the total is 3.50', 3.5).correct, true);
    assert.equal(scoreGeneric('the total is 1,250', 1250).correct, true);
    assert.equal(scoreGeneric('the total is 3.49', 3.5).correct, false);
    assert.equal(scoreGeneric('ANSWER: B', { regex: 'answer:\\s*b', flags: 'i' }).correct, true);
    assert.equal(scoreGeneric('', 'x').correct, false);
  });
});

describe('eval: countdown solver and generator', () => {
  it('finds a solution exactly when one exists (checked by the scorer)', () => {
    const sol = solveCountdown([44, 19, 35], 60)!;
    assert.equal(cd(ans(sol), 60, [44, 19, 35]).correct, true);
    const frac = solveCountdown([3, 3, 8, 8], 24)!; // needs a fraction: 8 / (3 - 8/3)
    assert.equal(cd(ans(frac), 24, [3, 3, 8, 8]).correct, true);
    assert.equal(solveCountdown([1, 1, 1], 100), null); // at most (1+1)*1... = 2... never 100
    assert.equal(solveCountdown([2, 2], 5), null);
  });

  it('generates the same solvable problems for the same seed', () => {
    const a = generateCountdown(20, 7);
    assert.deepEqual(a, generateCountdown(20, 7));
    assert.notDeepEqual(a, generateCountdown(20, 8));
    for (const p of a) {
      assert.ok(p.numbers.length === 3 || p.numbers.length === 4);
      assert.ok(p.numbers.every((n) => n >= 1 && n <= 100) && p.target >= 1 && p.target <= 100);
      assert.equal(cd(ans(p.solution), p.target, p.numbers).correct, true, `${p.solution} = ${p.target}`);
    }
  });
});
