/**
 * Request bodies of the OpenAI-compatible endpoints, as zod schemas. The sampling, length, MoI
 * (moi_mode, moi_beta, moi_topk, moi_prior) and Soft Thinking fields are made from @moi/engine's
 * settings table (names, ranges and messages as the CLI's flags); the rest are OpenAI's and
 * vLLM's own (n, stream, stop_token_ids, skip_special_tokens, chat_template_kwargs, ...).
 * Unknown fields pass through (vLLM accepts and warns).
 */
import { z } from 'zod';
import { checkSettingValue, SETTINGS, type Endpoint, type Setting } from '@moi/engine';

const int = z.number().int();

/**
 * A settings-table field: checked by the table's own rule, so its message states the range
 * ("gumbel_tau must be in [1e-3, 1e3], got 1e-300"); null or absent is "not given".
 */
function settingField(s: Setting, field: string) {
  return z.unknown().transform((v, ctx) => {
    if (v === undefined || v === null) return undefined;
    try {
      return checkSettingValue(s, v, field);
    } catch (e) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
      return z.NEVER;
    }
  });
}

/** Every settings-table field of an endpoint (sampling, length, MoI, Soft Thinking). */
function settingFields(endpoint: Endpoint): Record<string, ReturnType<typeof settingField>> {
  const shape: Record<string, ReturnType<typeof settingField>> = {};
  for (const s of SETTINGS) for (const field of s.server?.[endpoint] ?? []) shape[field] = settingField(s, field);
  return shape;
}

/** The fields both endpoints have beside the settings table's. */
const commonFields = {
  model: z.string().nullish(),
  n: int.min(1).max(16).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z
    .object({ include_usage: z.boolean().nullish(), continuous_usage_stats: z.boolean().nullish() })
    .passthrough()
    .nullish(),
  user: z.string().nullish(),
  // vLLM extras
  stop_token_ids: z.array(int.min(0)).max(64).nullish(),
  skip_special_tokens: z.boolean().nullish(),
  // encode the prompt with the tokenizer's special tokens (vLLM: default true for completions, false for chat)
  add_special_tokens: z.boolean().nullish(),
  echo: z.boolean().nullish(),
  // known so that they are refused by name rather than ignored (see refuseUnsupported in server.ts)
  best_of: int.min(1).nullish(),
  response_format: z.object({ type: z.string() }).passthrough().nullish(),
};

const tokenIds = z.array(int.min(0)).min(1);
export const completionSchema = z
  .object({
    ...commonFields,
    ...settingFields('completions'),
    prompt: z.union([z.string(), tokenIds, z.array(z.string()).min(1), z.array(tokenIds).min(1)]),
    suffix: z.string().nullish(),
  })
  .passthrough();

const contentPart = z.object({ type: z.literal('text'), text: z.string() }).passthrough();
const message = z
  .object({
    role: z.enum(['system', 'user', 'assistant', 'developer', 'tool']),
    content: z.union([z.string(), z.array(contentPart)]).nullable(),
    name: z.string().optional(),
  })
  .passthrough();

export const chatSchema = z
  .object({
    ...commonFields,
    ...settingFields('chat'),
    messages: z.array(message).min(1),
    // chat's logprobs turns them on; how many top ones is top_logprobs (the table's logprobs)
    logprobs: z.boolean().nullish(),
    chat_template_kwargs: z.record(z.unknown()).nullish(),
    add_generation_prompt: z.boolean().nullish(),
    // vLLM: render the final (assistant) message open, so the reply continues it
    continue_final_message: z.boolean().nullish(),
    tools: z.array(z.unknown()).nullish(),
    tool_choice: z.unknown().nullish(),
    functions: z.array(z.unknown()).nullish(),
    function_call: z.unknown().nullish(),
  })
  .passthrough();

export type CompletionBody = z.infer<typeof completionSchema>;
export type ChatBody = z.infer<typeof chatSchema>;

/** Fields a body carries that the schema does not know (named in a warning, as vLLM does). */
export function unknownFields(schema: z.AnyZodObject, body: unknown): string[] {
  if (!body || typeof body !== 'object') return [];
  const known = new Set(Object.keys(schema.shape));
  return Object.keys(body).filter((k) => !known.has(k));
}
