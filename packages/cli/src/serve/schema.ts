/**
 * Request bodies of the OpenAI-compatible endpoints, as zod schemas: OpenAI's fields, vLLM's
 * extras (top_k, min_p, repetition_penalty, ignore_eos, stop_token_ids, skip_special_tokens,
 * chat_template_kwargs) and MoI's per-request fields (moi_mode, moi_beta, moi_topk, moi_prior
 * and the Soft Thinking settings). Unknown fields pass through (vLLM accepts and warns).
 */
import { z } from 'zod';

const int = z.number().int();
const stop = z.union([z.string(), z.array(z.string()).max(16)]).nullish();

/** Sampling, stop and MoI fields shared by both endpoints. */
export const commonFields = {
  model: z.string().nullish(),
  max_tokens: int.min(1).nullish(),
  temperature: z.number().min(0).max(100).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  n: int.min(1).max(16).nullish(),
  seed: int.min(0).max(2 ** 32 - 1).nullish(),
  stop,
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish(), continuous_usage_stats: z.boolean().nullish() }).passthrough().nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  user: z.string().nullish(),
  // vLLM extras
  top_k: int.min(-1).nullish(),
  min_p: z.number().min(0).max(1).nullish(),
  repetition_penalty: z.number().gt(0).max(10).nullish(),
  ignore_eos: z.boolean().nullish(),
  stop_token_ids: z.array(int.min(0)).max(64).nullish(),
  skip_special_tokens: z.boolean().nullish(),
  // MoI, per request
  moi_mode: z.enum(['standard', 'moi', 'direct', 'soft']).nullish(),
  moi_beta: z.number().finite().nullish(),
  moi_topk: z.union([int.min(0), z.literal('all')]).nullish(),
  moi_prior: z.enum(['raw', 'processed']).nullish(),
  // Soft Thinking (moi_mode 'soft')
  think_end: z.string().min(1).nullish(),
  think_end_id: int.min(0).nullish(),
  cold_stop_entropy: z.number().min(0).nullish(),
  cold_stop_steps: int.min(1).nullish(),
  after_thinking_temperature: z.number().min(0).nullish(),
  after_thinking_top_p: z.number().gt(0).max(1).nullish(),
  after_thinking_top_k: int.min(-1).nullish(),
  after_thinking_min_p: z.number().min(0).max(1).nullish(),
  soft_noise: z.enum(['none', 'gumbel', 'dirichlet']).nullish(),
  gumbel_tau: z.number().gt(0).nullish(),
  dirichlet_alpha: z.number().gt(0).nullish(),
};

const tokenIds = z.array(int.min(0)).min(1);
export const completionSchema = z.object({
  ...commonFields,
  prompt: z.union([z.string(), tokenIds, z.array(z.string()).min(1), z.array(tokenIds).min(1)]),
  logprobs: int.min(0).max(20).nullish(),
  echo: z.boolean().nullish(),
  suffix: z.string().nullish(),
}).passthrough();

const contentPart = z.object({ type: z.literal('text'), text: z.string() }).passthrough();
const message = z.object({
  role: z.enum(['system', 'user', 'assistant', 'developer', 'tool']),
  content: z.union([z.string(), z.array(contentPart)]).nullable(),
  name: z.string().optional(),
}).passthrough();

export const chatSchema = z.object({
  ...commonFields,
  messages: z.array(message).min(1),
  max_completion_tokens: int.min(1).nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: int.min(0).max(20).nullish(),
  chat_template_kwargs: z.record(z.unknown()).nullish(),
  add_generation_prompt: z.boolean().nullish(),
}).passthrough();

export type CompletionBody = z.infer<typeof completionSchema>;
export type ChatBody = z.infer<typeof chatSchema>;

/** Fields a body carries that the schema does not know (named in a warning, as vLLM does). */
export function unknownFields(schema: z.AnyZodObject, body: unknown): string[] {
  if (!body || typeof body !== 'object') return [];
  const known = new Set(Object.keys(schema.shape));
  return Object.keys(body).filter((k) => !known.has(k));
}
