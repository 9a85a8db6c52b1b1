/**
 * Prompt encoding, one rule for every path (generate, chat sessions, the server, eval): a plain
 * prompt is encoded with the tokenizer's special tokens (BOS as its config says, as HF does for
 * plain completion); text a chat template rendered is encoded without them, since the template
 * writes BOS itself where the model wants it, and only where the tokenizer normally adds BOS and
 * the template did not is one put in front. Never two.
 */
import type { Tokenizer } from './tokenizer.ts';

export interface EncodePromptOptions {
  /** the text was rendered by a chat template (it carries its own special tokens) */
  templated?: boolean;
}

export function encodePrompt(tok: Tokenizer, text: string, opts: EncodePromptOptions = {}): number[] {
  if (!opts.templated) return tok.encode(text, { addSpecialTokens: true });
  const ids = tok.encode(text, { addSpecialTokens: false });
  if (tok.addsBos && tok.bosTokenId !== undefined && ids[0] !== tok.bosTokenId) ids.unshift(tok.bosTokenId);
  return ids;
}
