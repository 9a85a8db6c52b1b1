/**
 * The settings a request runs with, as a report: every setting that applies to its mode with
 * the value the engine resolved (defaults filled in, numbers as numbers) and where that value
 * came from: the caller (`flag` on the command line, `request` on a server), MIXINPUTS_BETA
 * (`env`), the model's generation_config.json (`generation_config`), or the engine's `default`.
 */
import { BETA_ENV, DIRECT_SENTINEL } from '@moi/moi';
import type { Engine } from '../engine/engine.ts';
import { resolveRequest, type GenerateRequest } from '../engine/step.ts';
import { SETTINGS, type Setting, type SettingName, type SettingValue } from './table.ts';

export type SettingSource = 'flag' | 'request' | 'env' | 'generation_config' | 'default';

export interface SettingsReport {
  /** the values that ran, by setting name (null: none, e.g. a random seed) */
  values: Partial<Record<SettingName, SettingValue | null>>;
  sources: Partial<Record<SettingName, SettingSource>>;
}

/** The soft phase's filters: in soft mode the request's sampling fields set them, over the paper's defaults. */
const SOFT_PHASE = new Set(['sampling.temperature', 'sampling.topK', 'sampling.topP', 'sampling.minP']);

function valueAt(source: unknown, path: string): unknown {
  let at = source;
  for (const k of path.split('.'))
    at = at === null || typeof at !== 'object' ? undefined : (at as Record<string, unknown>)[k];
  return at;
}

/**
 * Report `request`'s settings. `given` names the settings the caller set itself (their source is
 * `givenAs`); a value the request carries that the caller did not set (a flag's own default) is a
 * `default`. Throws as the engine would for a bad request.
 */
export function reportSettings(
  engine: Engine,
  request: Omit<GenerateRequest, 'promptIds'>,
  given: ReadonlySet<string>,
  givenAs: 'flag' | 'request' = 'flag',
  env: NodeJS.ProcessEnv = process.env,
): SettingsReport {
  const { mix, params, maxTokens } = resolveRequest(engine, request, '', env);
  const { mode, soft } = mix.settings;
  // the request's shape, with what ran: the sampler's parameters (in soft mode the soft phase's
  // filters stand in the sampling fields), the resolved mixing and the length
  const ran = {
    sampling: { ...params, ...(soft ? soft.thinking : {}) },
    mix: { ...mix.settings, soft: soft ? { ...soft } : undefined },
    maxTokens,
    stop: request.stop ?? [],
    ignoreEos: request.ignoreEos ?? false,
  };
  const gc = engine.generationConfig.defaults as Record<string, unknown>;
  const rawEnv = env[BETA_ENV]?.trim();
  const envBeta = rawEnv ? Number(rawEnv) : undefined;

  const applies = (s: Setting): boolean => {
    if (s.group === 'soft') return mode === 'soft';
    if (s.name === 'beta') return mode === 'moi';
    if (s.name === 'mix_topk' || s.name === 'mix_prior') return mode !== 'standard';
    return true;
  };
  const sourceOf = (s: Setting): SettingSource => {
    if (given.has(s.name)) return givenAs;
    if (s.name === 'mode') return given.has('beta') ? givenAs : envBeta !== undefined ? 'env' : 'default';
    if (s.name === 'beta') return envBeta !== undefined && envBeta > DIRECT_SENTINEL ? 'env' : 'default';
    if (s.name === 'max_tokens')
      return request.maxTokens === undefined && gc.maxNewTokens !== undefined ? 'generation_config' : 'default';
    const field = s.path.startsWith('sampling.') ? s.path.slice('sampling.'.length) : null;
    if (field && gc[field] !== undefined && !(soft && SOFT_PHASE.has(s.path))) return 'generation_config';
    return 'default';
  };

  const report: SettingsReport = { values: {}, sources: {} };
  for (const s of SETTINGS) {
    if (!applies(s)) continue;
    const v = valueAt(ran, s.path);
    report.values[s.name] = v === undefined ? null : (v as SettingValue);
    report.sources[s.name] = sourceOf(s);
  }
  return report;
}
