/**
 * Chat templates: renders a conversation with the model's own Jinja template (@huggingface/jinja,
 * which like transformers uses trim_blocks and lstrip_blocks), passing the variables transformers
 * passes: messages, add_generation_prompt, the special-token strings, plus caller extras
 * (e.g. Qwen3's enable_thinking).
 */
import { Template } from '@huggingface/jinja';
import { ModelError, UsageError } from '@moi/core';
import type { Tokenizer } from './tokenizer.ts';
import { encodePrompt } from './prompt.ts';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | (string & {});
  content: string;
  /** Other fields some templates read (reasoning_content, tool_calls, ...). */
  [key: string]: unknown;
}

/** What rendering needs: a template and the special-token strings (a Tokenizer fits). */
export interface ChatTemplateSource {
  chatTemplate?: string;
  chatTemplates?: Record<string, string>;
  bosToken?: string;
  eosToken?: string;
  padToken?: string;
  unkToken?: string;
  /** Where the template came from, for messages. */
  chatTemplateOrigin?: string;
  source?: string;
}

export interface RenderChatOptions {
  /** Append the opening of the assistant's turn. Default true (false with continueFinalMessage). */
  addGenerationPrompt?: boolean;
  /**
   * Leave the final message open, so that generation continues it (e.g. an assistant prefix):
   * the rendered text ends where its content ends, as transformers' apply_chat_template and
   * vLLM's continue_final_message do. Not together with addGenerationPrompt: true.
   */
  continueFinalMessage?: boolean;
  /** Extra template variables, e.g. {enable_thinking: false}. They override the token strings. */
  extra?: Record<string, unknown>;
  /** Pick a named template (where the config lists several); default "default". */
  templateName?: string;
}

const compiled = new Map<string, Template>();

function compile(text: string, where: string): Template {
  let t = compiled.get(text);
  if (!t) {
    try {
      t = new Template(text);
    } catch (e) {
      throw new ModelError('E_CHAT_TEMPLATE', `${where}: chat template does not parse (${(e as Error).message})`, {
        cause: e,
      });
    }
    compiled.set(text, t);
  }
  return t;
}

/** The template text to use, or a UsageError saying the model has none. */
function templateOf(src: ChatTemplateSource, name: string | undefined): string {
  const where = src.chatTemplateOrigin ?? src.source ?? 'chat template';
  if (name !== undefined && name !== 'default') {
    const t = src.chatTemplates?.[name];
    if (t === undefined) {
      const names = Object.keys(src.chatTemplates ?? {});
      throw new UsageError(
        'E_NO_CHAT_TEMPLATE',
        `${where}: no chat template named "${name}" (have: ${names.join(', ') || 'none'})`,
      );
    }
    return t;
  }
  if (src.chatTemplate === undefined) {
    throw new UsageError(
      'E_NO_CHAT_TEMPLATE',
      `${where}: this model has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja); use a raw prompt instead`,
    );
  }
  return src.chatTemplate;
}

function checkMessages(messages: readonly ChatMessage[]): void {
  if (!Array.isArray(messages)) throw new UsageError('E_CHAT_MESSAGES', 'chat: messages must be an array');
  messages.forEach((m, i) => {
    if (!m || typeof m.role !== 'string' || typeof m.content !== 'string') {
      throw new UsageError('E_CHAT_MESSAGES', `chat: messages[${i}] needs a string role and a string content`);
    }
  });
}

/** Renders a conversation to the prompt text the model was trained on. */
export function renderChat(
  src: Tokenizer | ChatTemplateSource,
  messages: readonly ChatMessage[],
  opts: RenderChatOptions = {},
): string {
  checkMessages(messages);
  const where = src.chatTemplateOrigin ?? src.source ?? 'chat template';
  const template = compile(templateOf(src, opts.templateName), where);
  const vars: Record<string, unknown> = {};
  if (src.bosToken !== undefined) vars.bos_token = src.bosToken;
  if (src.eosToken !== undefined) vars.eos_token = src.eosToken;
  if (src.padToken !== undefined) vars.pad_token = src.padToken;
  if (src.unkToken !== undefined) vars.unk_token = src.unkToken;
  Object.assign(vars, opts.extra);
  vars.messages = messages.map((m) => ({ ...m }));
  const cont = opts.continueFinalMessage ?? false;
  if (cont && opts.addGenerationPrompt === true) {
    throw new UsageError(
      'E_CHAT_OPTIONS',
      'continue_final_message and add_generation_prompt cannot both be true: the final message is either continued or followed by a new assistant turn',
    );
  }
  vars.add_generation_prompt = cont ? false : (opts.addGenerationPrompt ?? true);
  let text: string;
  try {
    text = template.render(vars);
  } catch (e) {
    // Mostly the template's own raise_exception ("roles must alternate ..."): the conversation
    // does not fit this model's format.
    throw new UsageError(
      'E_CHAT_RENDER',
      `${where}: chat template cannot render this conversation: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
  return cont ? openFinalMessage(text, messages) : text;
}

/**
 * The rendered text cut right after the final message's content (transformers' rule: its last
 * occurrence, else that of its stripped form, since some templates trim messages).
 */
function openFinalMessage(text: string, messages: readonly ChatMessage[]): string {
  const last = messages[messages.length - 1];
  if (!last) throw new UsageError('E_CHAT_MESSAGES', 'chat: continue_final_message needs a final message to continue');
  for (const content of [last.content, last.content.trim()]) {
    if (content === '') continue;
    const i = text.lastIndexOf(content);
    if (i >= 0) return text.slice(0, i + content.length);
  }
  throw new UsageError(
    'E_CHAT_MESSAGES',
    `chat: continue_final_message: the final message's content does not appear in the rendered template, so it cannot be continued`,
  );
}

/**
 * Renders and encodes a conversation with the tokenizer's template (or `template`, a source of
 * its own with the same special tokens): encodePrompt's rule for templated text, so BOS is never
 * doubled or lost.
 */
export function encodeChat(
  tok: Tokenizer,
  messages: readonly ChatMessage[],
  opts: RenderChatOptions & { template?: ChatTemplateSource; addSpecialTokens?: boolean } = {},
): number[] {
  const { template, addSpecialTokens, ...render } = opts;
  const text = renderChat(template ?? tok, messages, render);
  // vLLM's add_special_tokens for chat: the tokenizer's own specials on top of the template's
  return addSpecialTokens ? tok.encode(text, { addSpecialTokens: true }) : encodePrompt(tok, text, { templated: true });
}
