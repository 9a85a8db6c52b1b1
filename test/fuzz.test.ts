/**
 * Fuzz (in the suite): 300 mutated model folders from the seeded generator in test/fuzz/cases.ts
 * (header lies, truncation, bit flips, offsets, dtypes, shapes, NaN/Inf weights, every kind of
 * config field mutation, index traversal, special files), each loaded and generated from
 * in-process behind a per-case guard. Every case must end in a typed MoiError, or in a model
 * that generates and whose logits (checked independently) are finite; no tensor may be left
 * behind. `pnpm fuzz` runs 3,000 (and more with --cases) in worker processes.
 */
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { requireShared } from '@moi/core';
import { prepareFuzz, runCase, type CaseResult } from './fuzz/check.ts';

const CASES = Number(process.env.MOI_FUZZ_CASES ?? 300);
const SEED = Number(process.env.MOI_FUZZ_SEED ?? 1);

describe(`fuzz: ${CASES} mutated model folders (seed ${SEED})`, function () {
  this.timeout(120_000);
  let fixtures: string;
  const results: CaseResult[] = [];

  before(async function () {
    fixtures = path.join(requireShared(this), 'fixtures');
    await prepareFuzz();
    const dir = path.join(os.tmpdir(), `moi-fuzz-suite-${process.pid}`);
    for (let i = 0; i < CASES; i++) results.push(await runCase(SEED, i, fixtures, dir, 10_000));
  });

  it('every case ends in a typed MoiError or a load with finite logits (no untyped error, hang, garbage or leak)', () => {
    const bad = results.filter((r) => r.outcome !== 'typed' && r.outcome !== 'ok');
    assert.deepEqual(
      bad.map((r) => `#${r.index} ${r.base} ${r.what}: ${r.outcome} ${r.detail}`),
      [],
    );
  });

  it('the generator reaches every kind of mutation, with both outcomes', () => {
    const kinds = (re: RegExp) => results.filter((r) => re.test(r.what));
    for (const re of [
      /^config: /,
      /^weights: header/,
      /^weights: .*shape/,
      /^weights: .*dtype/,
      /^weights: .*offsets/,
      /^weights: truncated/,
      /^weights: .*bit flips/,
      /^weights: .* × (NaN|Infinity|-Infinity)/,
      /^weights: re-encoded/,
      /^index: .* → "\.\.?"/,
      /^special: .*fifo/,
      /^special: .*directory/,
      /^special: .*socket/,
    ]) {
      assert.ok(kinds(re).length > 0, `no case matches ${re}`);
    }
    const outcomes = new Set(results.map((r) => r.outcome));
    assert.ok(outcomes.has('typed') && outcomes.has('ok'));
    // NaN/Inf/huge weights end at load, in E_NONFINITE_WEIGHTS (issue 25): none loads to reach
    // generation's E_NONFINITE
    assert.ok(results.some((r) => r.detail === 'E_NONFINITE_WEIGHTS'));
    assert.deepEqual(
      results.filter((r) => r.detail === 'E_NONFINITE').map((r) => `#${r.index} ${r.base} ${r.what}`),
      [],
    );
  });
});
