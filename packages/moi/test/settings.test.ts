import assert from 'node:assert/strict';
import { UsageError } from '@moi/core';
import { checkMixSettings, resolveMixSettings, type MixSettings } from '../src/index.ts';

/** Asserts `fn` throws a UsageError E_MOI whose message matches `field`. */
function throwsMoi(fn: () => unknown, field: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof UsageError, `expected UsageError, got ${String(err)}`);
    assert.equal(err.code, 'E_MOI');
    assert.match(err.message, field);
    return true;
  });
}

describe('resolveMixSettings', () => {
  it('defaults: moi, beta 1, top-20, raw prior; defaultMode picks the mode when nothing else does', () => {
    assert.deepEqual(resolveMixSettings({}, {}), { mode: 'moi', beta: 1, topK: 20, prior: 'raw' });
    assert.deepEqual(resolveMixSettings({ defaultMode: 'standard' }, {}), {
      mode: 'standard',
      beta: 1,
      topK: 20,
      prior: 'raw',
    });
    assert.equal(resolveMixSettings(undefined, {}).mode, 'moi');
  });

  it('MIXINPUTS_BETA=2 turns on moi with beta 2, even when the default mode is standard', () => {
    assert.deepEqual(resolveMixSettings({ defaultMode: 'standard' }, { MIXINPUTS_BETA: '2' }), {
      mode: 'moi',
      beta: 2,
      topK: 20,
      prior: 'raw',
    });
    assert.equal(resolveMixSettings({}, { MIXINPUTS_BETA: ' 0.5 ' }).beta, 0.5);
    assert.equal(resolveMixSettings({}, { MIXINPUTS_BETA: '0' }).beta, 0);
  });

  it('MIXINPUTS_BETA <= -99 selects direct mixture (the reference sentinel)', () => {
    assert.equal(resolveMixSettings({ defaultMode: 'standard' }, { MIXINPUTS_BETA: '-100' }).mode, 'direct');
    assert.equal(resolveMixSettings({}, { MIXINPUTS_BETA: '-99' }).mode, 'direct');
    // -98.9 is a (negative) beta, not the sentinel: refused for moi
    throwsMoi(() => resolveMixSettings({}, { MIXINPUTS_BETA: '-98.9' }), /MIXINPUTS_BETA.*>= 0/);
  });

  it('an empty MIXINPUTS_BETA counts as unset', () => {
    assert.equal(resolveMixSettings({ defaultMode: 'standard' }, { MIXINPUTS_BETA: '' }).mode, 'standard');
  });

  it('explicit options override the environment', () => {
    assert.deepEqual(resolveMixSettings({ beta: 0.25 }, { MIXINPUTS_BETA: '2' }).beta, 0.25);
    assert.equal(resolveMixSettings({ mode: 'standard' }, { MIXINPUTS_BETA: '2' }).mode, 'standard');
    assert.deepEqual(resolveMixSettings({ mode: 'moi' }, { MIXINPUTS_BETA: '-100' }), {
      mode: 'moi',
      beta: 1,
      topK: 20,
      prior: 'raw',
    });
    assert.equal(resolveMixSettings({ beta: 3 }, { MIXINPUTS_BETA: '-100' }).mode, 'moi');
    assert.equal(resolveMixSettings({ beta: '-100' }, { MIXINPUTS_BETA: '2' }).mode, 'direct');
    // an explicit beta turns on moi like the env var would
    assert.deepEqual(resolveMixSettings({ beta: '1.5', defaultMode: 'standard' }, {}), {
      mode: 'moi',
      beta: 1.5,
      topK: 20,
      prior: 'raw',
    });
    assert.equal(resolveMixSettings({ mode: 'direct', topK: 5, prior: 'processed' }, {}).prior, 'processed');
  });

  it('topK: numbers and numeric strings; 0 and "all" mean the whole vocabulary', () => {
    assert.equal(resolveMixSettings({ topK: 5 }, {}).topK, 5);
    assert.equal(resolveMixSettings({ topK: '7' }, {}).topK, 7);
    assert.equal(resolveMixSettings({ topK: 0 }, {}).topK, 'all');
    assert.equal(resolveMixSettings({ topK: '0' }, {}).topK, 'all');
    assert.equal(resolveMixSettings({ topK: 'all' }, {}).topK, 'all');
    assert.equal(resolveMixSettings({ topK: 512 }, {}, 512).topK, 512);
    // the default K on a vocabulary of <= 20 means all of it
    assert.equal(resolveMixSettings({}, {}, 6).topK, 'all');
    assert.equal(resolveMixSettings({}, {}, 21).topK, 20);
  });

  it('refuses each invalid value with E_MOI naming the field', () => {
    throwsMoi(() => resolveMixSettings({ beta: -1 }, {}), /beta.*>= 0/);
    throwsMoi(() => resolveMixSettings({ mode: 'moi', beta: -100 }, {}), /option beta.*>= 0/);
    throwsMoi(() => resolveMixSettings({ mode: 'moi', beta: -0.001 }, {}), /beta/);
    throwsMoi(() => resolveMixSettings({ beta: NaN }, {}), /beta/);
    throwsMoi(() => resolveMixSettings({ beta: Infinity }, {}), /beta/);
    throwsMoi(() => resolveMixSettings({ beta: 'abc' }, {}), /beta/);
    throwsMoi(() => resolveMixSettings({ beta: '' }, {}), /beta/);
    throwsMoi(() => resolveMixSettings({}, { MIXINPUTS_BETA: 'abc' }), /MIXINPUTS_BETA/);
    throwsMoi(() => resolveMixSettings({}, { MIXINPUTS_BETA: 'NaN' }), /MIXINPUTS_BETA/);
    throwsMoi(() => resolveMixSettings({}, { MIXINPUTS_BETA: '-0.5' }), /MIXINPUTS_BETA/);
    // the env var is parsed (and refused) even when an option overrides it
    throwsMoi(() => resolveMixSettings({ beta: 1 }, { MIXINPUTS_BETA: 'x' }), /MIXINPUTS_BETA/);
    throwsMoi(() => resolveMixSettings({ topK: 513 }, {}, 512), /topK.*larger than the vocabulary/);
    throwsMoi(() => resolveMixSettings({ topK: 2.5 }, {}), /topK/);
    throwsMoi(() => resolveMixSettings({ topK: -1 }, {}), /topK/);
    throwsMoi(() => resolveMixSettings({ topK: 'ten' }, {}), /topK/);
    throwsMoi(() => resolveMixSettings({ mode: 'sideways' }, {}), /mode 'sideways'/);
    throwsMoi(() => resolveMixSettings({ prior: 'cooked' }, {}), /prior 'cooked'/);
    throwsMoi(() => resolveMixSettings({ defaultMode: 'bogus' as never }, {}), /defaultMode/);
  });

  it('a non-moi mode does not validate beta against moi rules', () => {
    assert.equal(resolveMixSettings({ mode: 'standard', beta: -5 }, {}).mode, 'standard');
  });
});

describe('checkMixSettings', () => {
  const ok: MixSettings = { mode: 'moi', beta: 1, topK: 20, prior: 'raw' };
  it('accepts valid settings and refuses hand-built bad ones, naming the field', () => {
    checkMixSettings(ok, 512);
    checkMixSettings({ ...ok, topK: 'all' }, 10);
    throwsMoi(() => checkMixSettings({ ...ok, mode: 'x' as never }), /mode/);
    throwsMoi(() => checkMixSettings({ ...ok, prior: 'x' as never }), /prior/);
    throwsMoi(() => checkMixSettings({ ...ok, beta: -1 }), /beta/);
    throwsMoi(() => checkMixSettings({ ...ok, beta: NaN, mode: 'direct' }), /beta/);
    throwsMoi(() => checkMixSettings({ ...ok, topK: 0 }), /topK/);
    throwsMoi(() => checkMixSettings({ ...ok, topK: 1.5 }), /topK/);
    throwsMoi(() => checkMixSettings({ ...ok, topK: 21 }, 20, 'settings[3]'), /settings\[3\]\.topK 21 is larger/);
  });
});
