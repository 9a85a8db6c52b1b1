/**
 * The settings table against the engine that runs it:
 * - the rules stated in messages, and the conversions between table values, request fields and
 *   server fields (both ways, every setting);
 * - the ends of every numeric range, run through generate() on the real stories260K model in each
 *   mode the setting acts in, give finite logits and logprobs (or, past the vocabulary, a typed
 *   refusal), and just outside each range is refused with the rule stated;
 * - the table's defaults are what the engine fills in, and the report of what ran says where each
 *   value came from (request, MIXINPUTS_BETA, generation_config.json, default).
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MoiError, requireShared, UsageError, type Interval } from '@moi/core';
import {
  checkSettingValue,
  Engine,
  fieldsFromSettings,
  generateOne,
  reportSettings,
  requestFromSettings,
  ruleOf,
  setting,
  SETTINGS,
  settingsFromFields,
  settingsFromRequest,
  type GenerateRequest,
  type Setting,
  type SettingValues,
} from '../src/index.ts';

/** A value of each setting that is not its default (for the round trips). */
const SAMPLE: SettingValues = {
  temperature: 0.5,
  top_k: 7,
  top_p: 0.9,
  min_p: 0.05,
  repetition_penalty: 1.1,
  presence_penalty: 0.2,
  frequency_penalty: -0.3,
  seed: 11,
  logprobs: 3,
  stop: ['x', 'y'],
  ignore_eos: true,
  max_tokens: 9,
  mode: 'soft',
  beta: 2,
  mix_topk: 5,
  mix_prior: 'processed',
  think_end: '</t>',
  think_end_id: 4,
  cold_stop_entropy: 0.01,
  cold_stop_steps: 3,
  after_thinking_temperature: 0.7,
  after_thinking_top_p: 0.8,
  after_thinking_top_k: 6,
  after_thinking_min_p: 0.02,
  soft_noise: 'gumbel',
  gumbel_tau: 0.5,
  dirichlet_alpha: 2,
};

/** The ends of a range's intervals (an open end nudged inside). */
function ends(i: Interval): number[] {
  const nudge = (x: number, dir: number) => x + dir * Math.max(Math.abs(x), 1) * 1e-6;
  return [i.minOpen ? nudge(i.min, 1) : i.min, i.maxOpen ? nudge(i.max, -1) : i.max];
}

/** Values just outside a range: past each end, and the open ends themselves, where no other interval holds them. */
function outside(s: Setting & { range: readonly Interval[] }, integer: boolean): number[] {
  const out: number[] = [];
  for (const i of s.range) {
    const d = (x: number) => (integer ? 1 : Math.max(Math.abs(x) * 1e-3, 1e-7));
    out.push(i.min - d(i.min), i.max + d(i.max));
    if (i.minOpen) out.push(i.min);
    if (i.maxOpen) out.push(i.max);
  }
  return out.filter(
    (x) => !s.range.some((i) => (i.minOpen ? x > i.min : x >= i.min) && (i.maxOpen ? x < i.max : x <= i.max)),
  );
}

describe('settings table', function () {
  it('states each rule as the messages say it', () => {
    assert.equal(ruleOf(setting('temperature')), '0 or in [1e-5, 100] (0 = greedy)');
    assert.equal(ruleOf(setting('top_p')), 'in (0, 1] (1 = off)');
    assert.equal(ruleOf(setting('gumbel_tau')), 'in [1e-3, 1e3]');
    assert.equal(ruleOf(setting('dirichlet_alpha')), 'in [1e-3, 1e3]');
    assert.equal(ruleOf(setting('beta')), 'in [0, 1e9], or in [-1e9, -99] (the direct mixture)');
    assert.equal(ruleOf(setting('logprobs')), 'an integer in [0, 20]');
    assert.equal(
      ruleOf(setting('mix_topk')),
      "an integer in [0, 2147483647] or 'all' (0 or 'all' = the whole vocabulary)",
    );
    assert.throws(
      () => checkSettingValue(setting('gumbel_tau'), 1e-300),
      (e: unknown) =>
        e instanceof UsageError &&
        e.message === 'gumbel_tau must be in [1e-3, 1e3], got 1e-300' &&
        e.field === 'mix.soft.gumbelTau',
    );
  });

  it('names are unique, and every setting lives at its own request path', () => {
    assert.equal(new Set(SETTINGS.map((s) => s.name)).size, SETTINGS.length);
    assert.equal(new Set(SETTINGS.map((s) => s.path)).size, SETTINGS.length);
    assert.deepEqual(Object.keys(SAMPLE).sort(), SETTINGS.map((s) => s.name).sort(), 'the sample covers the table');
  });

  it('table values ⇄ request fields ⇄ server fields, every setting, both endpoints', () => {
    const request = requestFromSettings(SAMPLE);
    assert.deepEqual(request.sampling, {
      temperature: 0.5,
      topK: 7,
      topP: 0.9,
      minP: 0.05,
      repetitionPenalty: 1.1,
      presencePenalty: 0.2,
      frequencyPenalty: -0.3,
      seed: 11,
      logprobs: 3,
    });
    assert.deepEqual(request.mix, {
      mode: 'soft',
      beta: 2,
      topK: 5,
      prior: 'processed',
      soft: {
        thinkEnd: '</t>',
        thinkEndId: 4,
        coldStopEntropy: 0.01,
        coldStopSteps: 3,
        afterThinking: { temperature: 0.7, topP: 0.8, topK: 6, minP: 0.02 },
        noise: 'gumbel',
        gumbelTau: 0.5,
        dirichletAlpha: 2,
      },
    });
    assert.deepEqual([request.maxTokens, request.stop, request.ignoreEos], [9, ['x', 'y'], true]);
    assert.deepEqual(settingsFromRequest(request), SAMPLE);
    for (const endpoint of ['completions', 'chat'] as const) {
      const fields = fieldsFromSettings(SAMPLE, endpoint);
      assert.equal(fields.moi_beta, 2);
      assert.equal(fields.gumbel_tau, 0.5);
      assert.equal(fields[endpoint === 'chat' ? 'max_completion_tokens' : 'max_tokens'], 9);
      assert.equal(fields[endpoint === 'chat' ? 'top_logprobs' : 'logprobs'], 3);
      assert.deepEqual(settingsFromFields(fields, endpoint), SAMPLE);
    }
    // chat's older max_tokens counts where max_completion_tokens is absent; vLLM's top_k -1 is off
    assert.equal(settingsFromFields({ max_tokens: 5 }, 'chat').max_tokens, 5);
    assert.equal(requestFromSettings({ top_k: -1, after_thinking_top_k: -1 }).sampling?.topK, 0);
    assert.equal(checkSettingValue(setting('mix_topk'), 0), 'all');
  });

  describe('on the real model (stories260K)', function () {
    let engine: Engine;
    let dir = '';
    before(async function () {
      const shared = requireShared(this);
      engine = await Engine.load(path.join(shared!, 'fixtures/stories260K'), { backend: 'wasm' });
      dir = mkdtempSync(path.join(os.tmpdir(), 'moi-settings-'));
    });
    after(() => {
      engine?.dispose();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    /** The modes a setting acts in, as the request values around it. */
    function contexts(s: Setting): SettingValues[] {
      const soft: SettingValues = { mode: 'soft', think_end_id: 2 };
      // thinking ends at once (cold stop at step 0), so the after-thinking sampler runs too
      const after: SettingValues = { ...soft, cold_stop_entropy: 100, cold_stop_steps: 1 };
      switch (s.name) {
        case 'beta':
          return [{}];
        case 'mix_topk':
          return [{ mode: 'moi' }, { mode: 'direct', mix_prior: 'processed' }, soft];
        case 'gumbel_tau':
          return [{ ...soft, soft_noise: 'gumbel' }];
        case 'dirichlet_alpha':
          return [{ ...soft, soft_noise: 'dirichlet' }];
        case 'cold_stop_entropy':
        case 'cold_stop_steps':
        case 'think_end_id':
          return [soft];
        default:
          if (s.group === 'soft') return [after];
          return [{}, { mode: 'moi', mix_prior: 'processed', beta: 0.5 }, { ...soft, soft_noise: 'dirichlet' }];
      }
    }

    const numeric = SETTINGS.filter(
      (s) => (s.type === 'number' || s.type === 'int' || s.type === 'count') && s.name !== 'max_tokens',
    );
    for (const s of numeric) {
      it(`${s.name}: the ends of ${ruleOf(s)} give finite logits in every mode it acts in; just outside is refused`, async function () {
        const r = s as Setting & { range: readonly Interval[] };
        const integer = s.type !== 'number';
        for (const value of r.range.flatMap(ends)) {
          for (const ctx of contexts(s)) {
            const values: SettingValues = {
              temperature: 0.8,
              seed: 3,
              logprobs: 0,
              ...ctx,
              [s.name]: checkSettingValue(s, value),
            };
            const request: GenerateRequest = {
              ...requestFromSettings(values),
              promptIds: [1, 403, 407, 261, 378],
              maxTokens: 4,
              ignoreEos: true,
            };
            const label = `${s.name} = ${value} with ${JSON.stringify(ctx)}`;
            try {
              const { events, done } = await generateOne(engine, request);
              assert.ok(done.tokens.length >= 1, label);
              for (const e of events) {
                assert.ok(Number.isFinite(e.logprobs?.logprob), `${label}: logprob ${e.logprobs?.logprob}`);
                if (e.mix) assert.ok(Number.isFinite(e.mix.weight), `${label}: weight ${e.mix.weight}`);
              }
            } catch (e) {
              // an id or a count past this vocabulary is the engine's own refusal, never non-finite values
              assert.ok(
                e instanceof UsageError && /vocabulary|token id in \[0, \d+\)/.test(e.message),
                `${label}: ${(e as Error).message}`,
              );
            }
          }
        }
        for (const value of outside(r, integer)) {
          assert.throws(
            () => checkSettingValue(s, value),
            (e: unknown) => e instanceof UsageError && e.message.includes(`${s.name} must be ${ruleOf(s)}`),
            `${s.name} = ${value}`,
          );
        }
        if (integer)
          assert.throws(() => checkSettingValue(s, r.range[0].max - 0.5), UsageError, `${s.name}: a fraction`);
      });
    }

    it("the table's defaults are what the engine fills in, mode by mode", () => {
      const none = new Set<string>();
      const check = (request: Omit<GenerateRequest, 'promptIds'>, skip: string[] = []) => {
        const report = reportSettings(engine, request, none, 'request', {});
        for (const [name, v] of Object.entries(report.values)) {
          if (skip.includes(name) || (request.mix?.mode !== undefined && name === 'mode')) continue;
          assert.deepEqual(v, setting(name as never).default, `${name} in mode ${report.values.mode}`);
          assert.equal(report.sources[name as never], 'default', name);
        }
        return report;
      };
      const standard = check({});
      assert.equal(standard.values.mode, 'standard');
      assert.ok(!('beta' in standard.values) && !('gumbel_tau' in standard.values), 'only what applies to the mode');
      check({ mix: { mode: 'moi' } });
      // soft: the sampling fields are the soft phase's filters (the paper's, not the sampler's defaults),
      // max_topk is 10 and the think-end id was given
      const soft = check({ mix: { mode: 'soft', soft: { thinkEndId: 2 } } }, [
        'temperature',
        'top_k',
        'top_p',
        'min_p',
        'mix_topk',
        'think_end_id',
      ]);
      assert.deepEqual(
        [soft.values.temperature, soft.values.top_k, soft.values.top_p, soft.values.min_p, soft.values.mix_topk],
        [0.6, 30, 0.95, 0.001, 10],
      );
    });

    it('the report says where each value came from: request, MIXINPUTS_BETA, generation_config.json, default', async () => {
      const given = new Set(['top_k', 'max_tokens']);
      const env = reportSettings(engine, { sampling: { topK: 5 }, maxTokens: 3 }, given, 'flag', {
        MIXINPUTS_BETA: '2',
      });
      assert.deepEqual(
        [env.values.mode, env.sources.mode, env.values.beta, env.sources.beta],
        ['moi', 'env', 2, 'env'],
      );
      assert.deepEqual(
        [env.values.top_k, env.sources.top_k, env.values.max_tokens, env.sources.max_tokens],
        [5, 'flag', 3, 'flag'],
      );
      const direct = reportSettings(engine, {}, new Set(), 'flag', { MIXINPUTS_BETA: '-100' });
      assert.deepEqual([direct.values.mode, direct.sources.mode, 'beta' in direct.values], ['direct', 'env', false]);
      const flagBeta = reportSettings(engine, { mix: { beta: 3 } }, new Set(['beta']), 'request', {
        MIXINPUTS_BETA: '2',
      });
      assert.deepEqual([flagBeta.values.beta, flagBeta.sources.beta, flagBeta.sources.mode], [3, 'request', 'request']);
      // a model whose generation_config.json sets sampling defaults and a length
      const model = path.join(dir, 'with-config');
      cpSync(engine.dir, model, { recursive: true });
      writeFileSync(
        path.join(model, 'generation_config.json'),
        JSON.stringify({ bos_token_id: 1, eos_token_id: 2, temperature: 0.7, top_p: 0.9, max_new_tokens: 5 }),
      );
      const configured = await Engine.load(model, { backend: 'wasm' });
      try {
        const r = reportSettings(configured, { sampling: { topP: 0.5 } }, new Set(['top_p']), 'flag', {});
        assert.deepEqual([r.values.temperature, r.sources.temperature], [0.7, 'generation_config']);
        assert.deepEqual([r.values.top_p, r.sources.top_p], [0.5, 'flag']);
        assert.deepEqual([r.values.max_tokens, r.sources.max_tokens], [5, 'generation_config']);
        assert.deepEqual([r.values.top_k, r.sources.top_k], [0, 'default']);
      } finally {
        configured.dispose();
      }
    });

    it('the engine refuses out-of-range values from a library caller too, naming the request field', async () => {
      const refuses = async (request: Omit<GenerateRequest, 'promptIds'>, field: string) => {
        await assert.rejects(
          generateOne(engine, { ...request, promptIds: [1, 403] }),
          (e: unknown) => e instanceof MoiError && e.field === field && /must be/.test(e.message),
          field,
        );
      };
      await refuses({ sampling: { temperature: 1e-7 } }, 'sampling.temperature');
      await refuses({ sampling: { repetitionPenalty: 1e-300 } }, 'sampling.repetitionPenalty');
      await refuses(
        { mix: { mode: 'soft', soft: { thinkEndId: 2, noise: 'gumbel', gumbelTau: 1e-300 } } },
        'mix.soft.gumbelTau',
      );
      await refuses(
        { mix: { mode: 'soft', soft: { thinkEndId: 2, noise: 'dirichlet', dirichletAlpha: 1e300 } } },
        'mix.soft.dirichletAlpha',
      );
      await refuses(
        { mix: { mode: 'soft', soft: { thinkEndId: 2 } }, sampling: { temperature: 1e-9 } },
        'sampling.temperature',
      );
      await refuses({ mix: { mode: 'moi', beta: 1e30 } }, 'mix.beta');
    });
  });
});
