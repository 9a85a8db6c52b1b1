/**
 * GPQA: the options shuffled per problem from the seed (deterministic, a permutation, the answer
 * letter following the correct option, about uniform over problems), the common zero-shot prompt,
 * and the letter taken from the last `Answer:` line.
 */
import assert from 'node:assert/strict';
import { GPQA_COLUMNS, gpqaPrompt, gpqaRow, gpqaShuffle, letterOf, scoreGpqa } from '../src/eval/gpqa.ts';

const row = {
  Question: '  What is 2 + 2?\n',
  'Correct Answer': '4',
  'Incorrect Answer 1': '3',
  'Incorrect Answer 2': '5',
  'Incorrect Answer 3': '22',
  'Record ID': 'rec1',
};

describe('eval: gpqa', () => {
  it('shuffles the options per problem from the seed, and the answer letter follows the correct one', () => {
    assert.deepEqual(gpqaShuffle(0, 7), gpqaShuffle(0, 7));
    assert.notDeepEqual(
      Array.from({ length: 20 }, (_, i) => gpqaShuffle(0, i)),
      Array.from({ length: 20 }, (_, i) => gpqaShuffle(1, i)),
    );
    const where = new Array(4).fill(0);
    for (let i = 0; i < 4000; i++) {
      const order = gpqaShuffle(3, i);
      assert.deepEqual([...order].sort(), [0, 1, 2, 3]);
      where[order.indexOf(0)]++;
    }
    for (const n of where)
      assert.ok(n > 900 && n < 1100, `the correct option lands on each letter about a quarter of the time: ${where}`);
    for (let i = 0; i < 8; i++) {
      const p = gpqaRow(row, i, 'gpqa.jsonl', 5);
      const order = p.meta!.order as string[];
      assert.deepEqual([...order].sort(), [...GPQA_COLUMNS].sort());
      const letter = p.answer as string;
      assert.equal(order['ABCD'.indexOf(letter)], 'Correct Answer');
      assert.match(p.messages[0].content, new RegExp(`\\n${letter}\\) 4\\n|\\n${letter}\\) 4$`));
      assert.equal(p.meta!.record_id, 'rec1');
    }
  });

  it('prompts with the question, lettered options and the Answer: instruction', () => {
    assert.equal(
      gpqaPrompt('What is 2 + 2?', ['3', '4', '5', '22']),
      "Answer the following multiple choice question. The last line of your response should be of the following format: 'Answer: $LETTER' (without quotes) where LETTER is one of ABCD. Think step by step before answering.\n\n" +
        'What is 2 + 2?\n\nA) 3\nB) 4\nC) 5\nD) 22',
    );
    assert.throws(
      () => gpqaRow({ ...row, 'Incorrect Answer 2': '' }, 3, 'gpqa.jsonl', 0),
      /gpqa\.jsonl row 3: a gpqa row needs a non-empty string "Incorrect Answer 2"/,
    );
  });

  it('reads the letter however it is dressed, and nothing else', () => {
    for (const [text, letter] of [
      ['C', 'C'],
      ['**C**', 'C'],
      ['(B) 42', 'B'],
      ['$\\boxed{D}$', 'D'],
      ['\\text{A}', 'A'],
      ['  D.', 'D'],
      ['E', null],
      ['Cat', null],
      ['c', null],
      ['', null],
    ] as const) {
      assert.equal(letterOf(text), letter, text);
    }
    assert.deepEqual(scoreGpqa('Answer: B\nwait\nAnswer: C', 'C'), {
      extracted: 'C',
      correct: true,
      formatOnly: false,
    });
    assert.deepEqual(scoreGpqa('ANSWER: a', 'A'), {
      extracted: null,
      correct: false,
      formatOnly: false,
      reason: '"Answer: a" is not one of A–D',
    });
  });
});
