/**
 * The settings table: every sampling, MoI, Soft Thinking and length setting a request can carry,
 * declared once with its name, type, range, default and help, its place in a GenerateRequest, and
 * where it shows (the CLI flag and aliases, the server's request field(s), whether eval offers
 * it). The CLI's flags, eval's options, the server's request schema and eval's endpoint client
 * are all made from this list, so a name, a range or a default cannot differ between them.
 *
 * Ranges and defaults that the engine's own resolution enforces come from the packages that do
 * the arithmetic (@moi/core's sampling, @moi/moi's mixing and Soft Thinking), so the table, the
 * resolvers and the device code share one constant each.
 */
import { DEFAULT_SAMPLING, INT32_MAX, SAMPLING_RANGES, type NumericRange } from '@moi/core';
import {
  BETA_RANGE,
  COLD_STOP_ENTROPY_RANGE,
  COLD_STOP_STEPS_RANGE,
  DEFAULT_AFTER_THINKING,
  DEFAULT_BETA,
  DEFAULT_COLD_STOP_ENTROPY,
  DEFAULT_DIRICHLET_ALPHA,
  DEFAULT_GUMBEL_TAU,
  DEFAULT_SOFT_NOISE,
  DEFAULT_THINK_END,
  DEFAULT_TOP_K,
  DIRICHLET_ALPHA_RANGE,
  GUMBEL_TAU_RANGE,
  MIX_MODES,
  MIX_PRIORS,
  RECOMMENDED_COLD_STOP,
  SOFT_NOISES,
} from '@moi/moi';

/** Most new tokens when neither the request nor generation_config.json says (the engine's default). */
export const DEFAULT_MAX_TOKENS = 256;
/** Most stop strings a request may carry (OpenAI's limit is 4, vLLM's none; 16 bounds the host's search). */
export const MAX_STOP_STRINGS = 16;
/** Most top logprobs per token (OpenAI's and vLLM's default limit). */
export const MAX_LOGPROBS = 20;

export type SettingGroup = 'sampling' | 'moi' | 'soft' | 'length';

/** A value a setting takes once parsed. */
export type SettingValue = number | string | boolean | readonly string[];

/** How a setting shows on the command line. */
export interface CliSpec {
  /** the long flag, e.g. '--top-p' */
  flag: string;
  /** a one-letter flag, e.g. '-n' */
  short?: string;
  /** other long flags for the same setting (hidden in help), e.g. '--temp' */
  aliases?: string[];
  /** the value's placeholder in help, e.g. '<p>' (none for on/off flags) */
  arg?: string;
  /** commander fills in the table's default when the flag is not given (else it stays unset, for the model's own defaults) */
  fillDefault?: boolean;
}

/** The request field(s) of a setting on the server; the first given wins. */
export interface ServerSpec {
  /** /v1/completions' fields */
  completions: string[];
  /** /v1/chat/completions' fields */
  chat: string[];
  /** the server's default where it is not the table's (vLLM's 16 for completions; null = the rest of the context) */
  defaults?: { completions?: number | null; chat?: number | null };
}

/** A setting eval offers (with the same flag as the CLI), and its own default where it differs. */
export interface EvalSpec {
  default?: SettingValue;
}

interface Common {
  /** the setting's name: snake_case, as in --json reports and (mostly) server fields */
  readonly name: string;
  readonly group: SettingGroup;
  /** where its value goes in a GenerateRequest, e.g. 'sampling.topP', 'mix.soft.gumbelTau' */
  readonly path: string;
  readonly help: string;
  /** the default, as the engine fills it in when nothing gives one (null: none, e.g. a random seed) */
  readonly default: SettingValue | null;
  /** where a default can come from besides the constant, for help ('generation_config.json, else 1') */
  readonly defaultText?: string;
  /** what special values mean, stated with the range ('0 = greedy') */
  readonly meaning?: string;
  readonly cli: CliSpec | null;
  readonly server: ServerSpec | null;
  readonly eval: EvalSpec | null;
}

export interface NumberSetting extends Common {
  readonly type: 'number';
  readonly range: NumericRange;
}
export interface IntSetting extends Common {
  readonly type: 'int';
  readonly range: NumericRange;
  /** -1 is taken as 0 (off), as vLLM's and the Soft Thinking reference's top-k */
  readonly minusOneIsOff?: boolean;
}
/** An integer count, or 'all' (0 means all too). */
export interface CountSetting extends Common {
  readonly type: 'count';
  readonly range: NumericRange;
}
export interface EnumSetting extends Common {
  readonly type: 'enum';
  readonly choices: readonly string[];
}
/** A non-empty string. */
export interface TextSetting extends Common {
  readonly type: 'text';
}
/** Strings (a repeatable flag; a string or a list in a request). */
export interface TextsSetting extends Common {
  readonly type: 'texts';
  readonly maxItems: number;
}
/** On or off. */
export interface FlagSetting extends Common {
  readonly type: 'flag';
}

export type Setting =
  NumberSetting | IntSetting | CountSetting | EnumSetting | TextSetting | TextsSetting | FlagSetting;

const TOP_K_RANGE: NumericRange = [{ min: -1, max: INT32_MAX }];
const both = (field: string): ServerSpec => ({ completions: [field], chat: [field] });

// ---- the table

const TABLE = [
  // sampling
  {
    name: 'temperature',
    group: 'sampling',
    path: 'sampling.temperature',
    type: 'number',
    range: SAMPLING_RANGES.temperature,
    help: "sampling temperature (in soft mode: the soft phase's)",
    meaning: '0 = greedy',
    default: DEFAULT_SAMPLING.temperature,
    defaultText: 'generation_config.json, else 1',
    cli: { flag: '--temperature', aliases: ['--temp'], arg: '<t>' },
    server: both('temperature'),
    eval: {},
  },
  {
    name: 'top_k',
    group: 'sampling',
    path: 'sampling.topK',
    type: 'int',
    range: TOP_K_RANGE,
    minusOneIsOff: true,
    help: 'keep the k most likely tokens',
    meaning: '0 or -1 = off',
    default: DEFAULT_SAMPLING.topK,
    defaultText: 'generation_config.json, else 0',
    cli: { flag: '--top-k', arg: '<k>' },
    server: both('top_k'),
    eval: {},
  },
  {
    name: 'top_p',
    group: 'sampling',
    path: 'sampling.topP',
    type: 'number',
    range: SAMPLING_RANGES.topP,
    help: 'nucleus sampling mass',
    meaning: '1 = off',
    default: DEFAULT_SAMPLING.topP,
    defaultText: 'generation_config.json, else 1',
    cli: { flag: '--top-p', arg: '<p>' },
    server: both('top_p'),
    eval: {},
  },
  {
    name: 'min_p',
    group: 'sampling',
    path: 'sampling.minP',
    type: 'number',
    range: SAMPLING_RANGES.minP,
    help: 'keep tokens with p ≥ min-p × max p',
    meaning: '0 = off',
    default: DEFAULT_SAMPLING.minP,
    defaultText: 'generation_config.json, else 0',
    cli: { flag: '--min-p', arg: '<p>' },
    server: both('min_p'),
    eval: {},
  },
  {
    name: 'repetition_penalty',
    group: 'sampling',
    path: 'sampling.repetitionPenalty',
    type: 'number',
    range: SAMPLING_RANGES.repetitionPenalty,
    help: 'HF repetition penalty over prompt and output',
    meaning: '1 = off',
    default: DEFAULT_SAMPLING.repetitionPenalty,
    defaultText: 'generation_config.json, else 1',
    cli: { flag: '--repetition-penalty', arg: '<r>' },
    server: both('repetition_penalty'),
    eval: null,
  },
  {
    name: 'presence_penalty',
    group: 'sampling',
    path: 'sampling.presencePenalty',
    type: 'number',
    range: SAMPLING_RANGES.presencePenalty,
    help: 'OpenAI presence penalty',
    meaning: '0 = off',
    default: DEFAULT_SAMPLING.presencePenalty,
    cli: { flag: '--presence-penalty', arg: '<x>' },
    server: both('presence_penalty'),
    eval: null,
  },
  {
    name: 'frequency_penalty',
    group: 'sampling',
    path: 'sampling.frequencyPenalty',
    type: 'number',
    range: SAMPLING_RANGES.frequencyPenalty,
    help: 'OpenAI frequency penalty',
    meaning: '0 = off',
    default: DEFAULT_SAMPLING.frequencyPenalty,
    cli: { flag: '--frequency-penalty', arg: '<x>' },
    server: both('frequency_penalty'),
    eval: null,
  },
  {
    name: 'seed',
    group: 'sampling',
    path: 'sampling.seed',
    type: 'int',
    range: [{ min: 0, max: 2 ** 32 - 1 }],
    help: 'random seed (same seed and inputs, same tokens)',
    default: null,
    defaultText: 'random',
    cli: { flag: '--seed', arg: '<n>' },
    server: both('seed'),
    eval: null,
  },
  {
    name: 'logprobs',
    group: 'sampling',
    path: 'sampling.logprobs',
    type: 'int',
    range: [{ min: 0, max: MAX_LOGPROBS }],
    help: "report the chosen token's logprob and the top n (with --json)",
    default: null,
    defaultText: 'none',
    cli: { flag: '--logprobs', arg: '<n>' },
    server: { completions: ['logprobs'], chat: ['top_logprobs'] },
    eval: null,
  },
  {
    name: 'stop',
    group: 'sampling',
    path: 'stop',
    type: 'texts',
    maxItems: MAX_STOP_STRINGS,
    help: 'stop when this text appears (repeatable)',
    default: [],
    cli: { flag: '--stop', arg: '<text>' },
    server: both('stop'),
    eval: null,
  },
  {
    name: 'ignore_eos',
    group: 'sampling',
    path: 'ignoreEos',
    type: 'flag',
    help: 'keep generating past the end-of-sequence token',
    default: false,
    cli: { flag: '--ignore-eos' },
    server: both('ignore_eos'),
    eval: null,
  },
  // length
  {
    name: 'max_tokens',
    group: 'length',
    path: 'maxTokens',
    type: 'int',
    range: [{ min: 1, max: INT32_MAX }],
    help: 'most new tokens',
    default: DEFAULT_MAX_TOKENS,
    cli: { flag: '--max-tokens', short: '-n', arg: '<n>', fillDefault: true },
    server: {
      completions: ['max_tokens'],
      chat: ['max_completion_tokens', 'max_tokens'],
      defaults: { completions: 16, chat: null },
    },
    eval: { default: 1024 },
  },
  // Mixture of Inputs
  {
    name: 'mode',
    group: 'moi',
    path: 'mix.mode',
    type: 'enum',
    choices: MIX_MODES,
    help: 'input mixing: standard (off), moi, direct, soft (Soft Thinking)',
    default: 'standard',
    defaultText: 'standard, or moi when $MIXINPUTS_BETA is set',
    cli: { flag: '--mode', arg: '<mode>' },
    server: both('moi_mode'),
    eval: null,
  },
  {
    name: 'beta',
    group: 'moi',
    path: 'mix.beta',
    type: 'number',
    range: BETA_RANGE,
    help: 'MoI β: the weight of the sampled token',
    default: DEFAULT_BETA,
    defaultText: '$MIXINPUTS_BETA, else 1',
    cli: { flag: '--beta', arg: '<b>' },
    server: both('moi_beta'),
    eval: {},
  },
  {
    name: 'mix_topk',
    group: 'moi',
    path: 'mix.topK',
    type: 'count',
    range: [{ min: 0, max: INT32_MAX }],
    help: 'candidates mixed: the top K',
    meaning: "0 or 'all' = the whole vocabulary",
    default: DEFAULT_TOP_K,
    defaultText: `${DEFAULT_TOP_K}; soft: 10, its max_topk`,
    cli: { flag: '--mix-topk', arg: '<k>' },
    server: both('moi_topk'),
    eval: {},
  },
  {
    name: 'mix_prior',
    group: 'moi',
    path: 'mix.prior',
    type: 'enum',
    choices: MIX_PRIORS,
    help: 'distribution mixed: raw log-probs (as the reference) or processed (after temperature/top-p)',
    default: 'raw',
    cli: { flag: '--mix-prior', arg: '<prior>' },
    server: both('moi_prior'),
    eval: null,
  },
  // Soft Thinking (mode soft): the sampling fields above are the soft phase's filters
  {
    name: 'think_end',
    group: 'soft',
    path: 'mix.soft.thinkEnd',
    type: 'text',
    help: 'soft: the text whose token ends thinking',
    default: DEFAULT_THINK_END,
    cli: { flag: '--think-end', arg: '<text>' },
    server: both('think_end'),
    eval: {},
  },
  {
    name: 'think_end_id',
    group: 'soft',
    path: 'mix.soft.thinkEndId',
    type: 'int',
    range: [{ min: 0, max: INT32_MAX }],
    help: 'soft: the think-end token id (for tokenizers without the text)',
    default: null,
    defaultText: 'the token of --think-end',
    cli: { flag: '--think-end-id', arg: '<n>' },
    server: both('think_end_id'),
    eval: {},
  },
  {
    name: 'cold_stop_entropy',
    group: 'soft',
    path: 'mix.soft.coldStopEntropy',
    type: 'number',
    range: COLD_STOP_ENTROPY_RANGE,
    help: 'soft: end thinking after cold-stop-steps steps with entropy below this many nats (paper: 0.01)',
    meaning: '0 = off',
    default: DEFAULT_COLD_STOP_ENTROPY,
    cli: { flag: '--cold-stop-entropy', arg: '<x>' },
    server: both('cold_stop_entropy'),
    eval: {},
  },
  {
    name: 'cold_stop_steps',
    group: 'soft',
    path: 'mix.soft.coldStopSteps',
    type: 'int',
    range: COLD_STOP_STEPS_RANGE,
    help: 'soft: consecutive low-entropy steps for the cold stop',
    default: RECOMMENDED_COLD_STOP.steps,
    cli: { flag: '--cold-stop-steps', arg: '<n>' },
    server: both('cold_stop_steps'),
    eval: {},
  },
  {
    name: 'after_thinking_temperature',
    group: 'soft',
    path: 'mix.soft.afterThinking.temperature',
    type: 'number',
    range: SAMPLING_RANGES.temperature,
    help: 'soft: sampling temperature after thinking',
    meaning: '0 = greedy',
    default: DEFAULT_AFTER_THINKING.temperature,
    cli: { flag: '--after-thinking-temperature', arg: '<t>' },
    server: both('after_thinking_temperature'),
    eval: {},
  },
  {
    name: 'after_thinking_top_p',
    group: 'soft',
    path: 'mix.soft.afterThinking.topP',
    type: 'number',
    range: SAMPLING_RANGES.topP,
    help: 'soft: top-p after thinking',
    meaning: '1 = off',
    default: DEFAULT_AFTER_THINKING.topP,
    cli: { flag: '--after-thinking-top-p', arg: '<p>' },
    server: both('after_thinking_top_p'),
    eval: {},
  },
  {
    name: 'after_thinking_top_k',
    group: 'soft',
    path: 'mix.soft.afterThinking.topK',
    type: 'int',
    range: TOP_K_RANGE,
    minusOneIsOff: true,
    help: 'soft: top-k after thinking',
    meaning: '0 or -1 = off',
    default: DEFAULT_AFTER_THINKING.topK,
    cli: { flag: '--after-thinking-top-k', arg: '<k>' },
    server: both('after_thinking_top_k'),
    eval: {},
  },
  {
    name: 'after_thinking_min_p',
    group: 'soft',
    path: 'mix.soft.afterThinking.minP',
    type: 'number',
    range: SAMPLING_RANGES.minP,
    help: 'soft: min-p after thinking',
    meaning: '0 = off',
    default: DEFAULT_AFTER_THINKING.minP,
    cli: { flag: '--after-thinking-min-p', arg: '<p>' },
    server: both('after_thinking_min_p'),
    eval: {},
  },
  {
    name: 'soft_noise',
    group: 'soft',
    path: 'mix.soft.noise',
    type: 'enum',
    choices: SOFT_NOISES,
    help: 'soft: noise on the soft inputs',
    default: DEFAULT_SOFT_NOISE,
    cli: { flag: '--soft-noise', arg: '<kind>' },
    server: both('soft_noise'),
    eval: {},
  },
  {
    name: 'gumbel_tau',
    group: 'soft',
    path: 'mix.soft.gumbelTau',
    type: 'number',
    range: GUMBEL_TAU_RANGE,
    help: 'soft: Gumbel-softmax temperature τ',
    default: DEFAULT_GUMBEL_TAU,
    cli: { flag: '--gumbel-tau', arg: '<t>' },
    server: both('gumbel_tau'),
    eval: {},
  },
  {
    name: 'dirichlet_alpha',
    group: 'soft',
    path: 'mix.soft.dirichletAlpha',
    type: 'number',
    range: DIRICHLET_ALPHA_RANGE,
    help: 'soft: Dirichlet concentration α',
    default: DEFAULT_DIRICHLET_ALPHA,
    cli: { flag: '--dirichlet-alpha', arg: '<a>' },
    server: both('dirichlet_alpha'),
    eval: {},
  },
] as const satisfies readonly Setting[];

export type SettingName = (typeof TABLE)[number]['name'];

/** A setting of the table (its name one of the table's). */
export type TableSetting = Setting & { readonly name: SettingName };

/** The table, in order: sampling, length, MoI, Soft Thinking. */
export const SETTINGS: readonly TableSetting[] = TABLE;

/** Setting values by name (those given). */
export type SettingValues = Partial<Record<SettingName, SettingValue>>;

const BY_NAME = new Map<string, TableSetting>(SETTINGS.map((s) => [s.name, s]));
const BY_PATH = new Map<string, TableSetting>(SETTINGS.map((s) => [s.path, s]));

export function setting(name: SettingName): TableSetting {
  return BY_NAME.get(name)!;
}

/** The setting whose value lives at a request path (an error's `field`), if any. */
export function settingAtPath(path: string): TableSetting | undefined {
  return BY_PATH.get(path);
}

export function settingsOf(group: SettingGroup): TableSetting[] {
  return SETTINGS.filter((s) => s.group === group);
}

/** The settings eval offers. */
export const EVAL_SETTINGS: readonly TableSetting[] = SETTINGS.filter((s) => s.eval !== null);
