/**
 * A request's mixing settings, as the engine plans a row: MoI settings as resolveMixSettings
 * gives them; for Soft Thinking also the soft phase's filters (the request's own temperature /
 * top-k / top-p / min-p, as in the reference's API, over the paper's defaults), the think-end id
 * (from the tokenizer when not given), and the sampler's settings for the row, which are the
 * after-thinking ones: the sampler only decides the row's tokens after thinking.
 */
import { resolveMixSettings, type MixOptions, type MixSettings } from './settings.ts';
import { checkSoftSettings, resolveThinkEnd, type SoftFilters, type ThinkEndTokenizer } from './soft-settings.ts';

export interface RowMixPlan {
  settings: MixSettings;
  /** sampler fields that replace the request's for this row (empty outside soft mode) */
  sampling: Partial<SoftFilters>;
}

export interface RowMixContext {
  vocabSize?: number;
  tokenizer?: ThinkEndTokenizer | null;
  env?: NodeJS.ProcessEnv;
}

/**
 * Plan one row. `sampling` is the request's sampling (explicit values only, not a model's
 * generation_config defaults): in soft mode its filters are the soft phase's, unless
 * `mix.soft` names them itself.
 */
export function planRowMix(
  mix: MixOptions | undefined,
  sampling: Partial<SoftFilters> | undefined,
  ctx: RowMixContext = {},
): RowMixPlan {
  let opts = mix ?? {};
  const explicitSoft = opts.mode !== undefined && opts.mode.trim().toLowerCase() === 'soft';
  if (explicitSoft) {
    const s = sampling ?? {};
    opts = {
      ...opts,
      soft: {
        temperature: s.temperature,
        topK: s.topK,
        topP: s.topP,
        minP: s.minP,
        ...Object.fromEntries(Object.entries(opts.soft ?? {}).filter(([, v]) => v !== undefined)),
      },
    };
  }
  const settings = resolveMixSettings(opts, ctx.env ?? process.env, ctx.vocabSize);
  if (settings.mode !== 'soft' || !settings.soft) return { settings, sampling: {} };
  const soft = { ...settings.soft, thinkEndId: resolveThinkEnd(settings.soft, ctx.tokenizer) };
  checkSoftSettings(soft, ctx.vocabSize); // (a tokenizer may have more ids than the model)
  const a = soft.afterThinking;
  return {
    settings: { ...settings, soft },
    sampling: { temperature: a.temperature, topK: a.topK, topP: a.topP, minP: a.minP },
  };
}
