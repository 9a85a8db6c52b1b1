/** A token's own text, for logprobs and scores beside its id (special tokens shown, e.g. `<s>`). */
import type { Tokenizer } from './tokenizer.ts';

export function tokenText(tok: Tokenizer, id: number): string {
  return tok.decode([id], { skipSpecialTokens: false });
}
