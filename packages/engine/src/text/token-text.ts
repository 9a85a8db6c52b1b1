/**
 * Token texts for logprobs, scores and traces.
 *
 * - `tokenText`: a token's own text (special tokens shown, e.g. `<s>`), decoded alone. With a
 *   SentencePiece tokenizer that loses the token's leading space ("▁there" → "there").
 * - `TokenTexts`: the texts of generated tokens relative to the ids before them (the prompt and
 *   the tokens already chosen), as vLLM's logprobs give them: each chosen token's text is exactly
 *   what it adds to the completion, so the tokens concatenated are the text and text_offset
 *   counts them; alternatives are what they would have added at the same point.
 *   A token that adds nothing visible on its own (part of a character, or a special token that
 *   the text skips) is labelled with its bytes as OpenAI does (`bytes:\xe2\x80`) or its special
 *   text, never "". Tokenization-space clean-up (Llama 3's " ," → ",") is not applied to them.
 */
import type { Tokenizer } from './tokenizer.ts';
import { StreamingDetokenizer } from './detokenizer.ts';

export function tokenText(tok: Tokenizer, id: number): string {
  return tok.decode([id], { skipSpecialTokens: false });
}

/** GPT-2's byte-level alphabet, reversed: a vocabulary character → its byte. */
let byteOfChar: Map<string, number> | null = null;
function byteLevelTable(): Map<string, number> {
  if (byteOfChar) return byteOfChar;
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  byteOfChar = new Map(bs.map((b, i) => [String.fromCodePoint(cs[i]), b]));
  return byteOfChar;
}

/**
 * The UTF-8 bytes a token stands for, from its vocabulary piece: a byte-fallback piece
 * (`<0xE2>`), a byte-level BPE piece (GPT-2's alphabet), or SentencePiece text (`▁` = space).
 */
export function tokenBytes(tok: Tokenizer, id: number): number[] {
  const piece = tok.idToToken(id);
  if (piece === undefined) return [];
  const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
  if (m) return [parseInt(m[1], 16)];
  const table = byteLevelTable();
  const chars = [...piece];
  if (chars.every((c) => table.has(c))) return chars.map((c) => table.get(c)!);
  return [...Buffer.from(piece.replaceAll('\u2581', ' '), 'utf8')];
}

/** OpenAI's label for a token that is not a whole character: `bytes:\xe2\x80`. */
function bytesLabel(bytes: readonly number[]): string {
  return 'bytes:' + bytes.map((b) => '\\x' + b.toString(16).padStart(2, '0')).join('');
}

export interface TokenTextsOptions {
  /** the prompt ids the first token follows */
  context?: readonly number[];
  /** special tokens add nothing to the text (as the completion's own text skips them). Default true. */
  skipSpecialTokens?: boolean;
}

export interface TokenPiece {
  /** what the token adds to the text ('' for part of a character or a skipped special token) */
  text: string;
  /** what to show for it: `text`, or its bytes / special text where `text` is '' */
  label: string;
  /** the UTF-8 bytes of `label`'s text (a partial character: the token's own bytes) */
  bytes: number[];
}

export class TokenTexts {
  private readonly detok: StreamingDetokenizer;
  private readonly skipSpecial: boolean;

  constructor(
    private readonly tok: Tokenizer,
    opts: TokenTextsOptions = {},
  ) {
    this.skipSpecial = opts.skipSpecialTokens ?? true;
    // no clean-up of tokenization spaces here: it would hold text back across tokens (" ," → ","),
    // and a token's own text is its raw text (as vLLM's logprobs give it)
    const raw = { decode: tok.decode.bind(tok), specialTokenIds: tok.specialTokenIds, cleanUpSpaces: false };
    this.detok = new StreamingDetokenizer(raw, { skipSpecialTokens: this.skipSpecial, context: opts.context });
  }

  private piece(id: number, text: string): TokenPiece {
    if (text !== '') return { text, label: text, bytes: [...Buffer.from(text, 'utf8')] };
    if (this.tok.specialTokenIds.has(id)) {
      const own = tokenText(this.tok, id);
      return { text, label: own, bytes: [...Buffer.from(own, 'utf8')] };
    }
    const bytes = tokenBytes(this.tok, id);
    return { text, label: bytes.length ? bytesLabel(bytes) : tokenText(this.tok, id), bytes };
  }

  /** What `id` would add now (a logprob alternative), without choosing it. */
  peek(id: number): TokenPiece {
    const special = this.skipSpecial && this.tok.specialTokenIds.has(id);
    return this.piece(id, special ? '' : this.detok.peek(id));
  }

  /** Chooses `id`: what it adds to the text. */
  next(id: number): TokenPiece {
    return this.piece(id, this.detok.push(id));
  }

  /** What is still held back at the end (an unfinished character, as U+FFFD). */
  flush(): string {
    return this.detok.flush();
  }
}
