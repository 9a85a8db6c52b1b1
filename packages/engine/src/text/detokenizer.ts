/**
 * Streaming detokenizer: turns ids into text deltas as they are generated.
 *
 * It decodes a small window, not the whole output (the prefix/read offsets of HF TGI and vLLM):
 * the window starts at `prefix`, a few tokens that are already printed and serve as context (so
 * SentencePiece's "strip the leading space of the first token" and byte groups behave as in a
 * full decode), and the new text is decode(ids[prefix..]) minus what was printed of it.
 *
 * The text is relative to the ids before it: given the prompt (`context`), the window starts with
 * its last few ids, so the first generated token's text is decode(prompt + token) minus
 * decode(prompt), as HF's and vLLM's detokenizers make it (vLLM's prefix_offset/read_offset over
 * the prompt's last 5 tokens). Without that, SentencePiece's decoder strips the first token's
 * leading space (" upon" became "upon") and prompt + completion was not the full decode.
 *
 * It never prints half a character: text that ends in U+FFFD (an unfinished UTF-8 sequence from
 * byte-level BPE or <0xNN> byte-fallback tokens) is held back until the next token completes it.
 * Everything before that last U+FFFD is safe to print at once (a UTF-8 decoder never revises
 * output it has produced before the unfinished tail), so only the tail waits.
 *
 * Where the config asks for clean_up_tokenization_spaces (" ." -> "."), a second stage holds back
 * the last few characters while they could start such a pattern, so that the concatenation of
 * all deltas plus flush() equals decode(allIds) exactly.
 */
import { cleanUpTokenizationSpaces, type DecodeOptions } from './tokenizer.ts';

/** What the detokenizer needs from a tokenizer (a Tokenizer fits). */
export interface DecodeSource {
  decode(ids: readonly number[], opts?: DecodeOptions): string;
  readonly specialTokenIds: ReadonlySet<number>;
  readonly cleanUpSpaces: boolean;
}

export interface DetokenizerOptions {
  /** Drop special tokens from the text (as decode({skipSpecialTokens: true})). Default false. */
  skipSpecialTokens?: boolean;
  /**
   * The ids before the first pushed one (the prompt): their text is not printed, but the first
   * token's text is decoded relative to them. Special ones are left out when skipping them.
   */
  context?: readonly number[];
}

/** How many of the context's last ids the window starts with (vLLM's INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET). */
export const CONTEXT_IDS = 5;

const REPLACEMENT = '\uFFFD';
/** An unfinished UTF-8 sequence is at most 3 bytes, so at most 3 tokens; past this we look for a cut. */
const MAX_PENDING = 8;
const RAW: DecodeOptions = { skipSpecialTokens: false, cleanUpSpaces: false };

export class StreamingDetokenizer {
  private readonly tok: DecodeSource;
  private readonly skipSpecial: boolean;
  private readonly cleaner?: SpaceCleaner;
  /** Ids kept (special ones dropped when skipping). Only ids[prefix..] are ever decoded. */
  private ids: number[] = [];
  /** Window start: tokens from here on are decoded each step. */
  private prefix = 0;
  /** Tokens before this are fully printed. */
  private read = 0;
  /** Characters of decode(ids[prefix..]) already printed. */
  private printed = 0;
  /** ids[0..start] are the context, not pushed. */
  private readonly start: number;

  constructor(tok: DecodeSource, opts: DetokenizerOptions = {}) {
    this.tok = tok;
    this.skipSpecial = opts.skipSpecialTokens ?? false;
    if (tok.cleanUpSpaces) this.cleaner = new SpaceCleaner();
    const ctx = (opts.context ?? [])
      .filter((id) => !(this.skipSpecial && tok.specialTokenIds.has(id)))
      .slice(-CONTEXT_IDS);
    this.ids = ctx;
    this.start = ctx.length;
    this.read = ctx.length;
    // an unfinished character at the prompt's end is the completion's to print, once complete
    const text = this.decodeFrom(0, ctx.length);
    this.printed = text.endsWith(REPLACEMENT) ? text.length - 1 : text.length;
  }

  /** All ids pushed so far (special ones excluded when skipping; the context not included). */
  get tokenIds(): readonly number[] {
    return this.ids.slice(this.start);
  }

  /**
   * The text `id` would add if pushed now, without pushing it (for a logprob alternative): ""
   * while it leaves a character unfinished. Special tokens count as their text here.
   */
  peek(id: number): string {
    const text = this.tok.decode([...this.ids.slice(this.prefix), id], RAW);
    const stable = text.endsWith(REPLACEMENT) ? text.length - 1 : text.length;
    return stable > this.printed ? text.slice(this.printed, stable) : '';
  }

  /** Adds one id; returns the text it completes (often "", never half a character). */
  push(id: number): string {
    if (this.skipSpecial && this.tok.specialTokenIds.has(id)) return '';
    this.ids.push(id);
    return this.clean(this.step());
  }

  /** Prints whatever is held back (an unfinished character comes out as U+FFFD, as decode does). */
  flush(): string {
    let delta = '';
    if (this.read < this.ids.length) {
      const text = this.decodeFrom(this.prefix, this.ids.length);
      if (text.length > this.printed) delta = text.slice(this.printed);
      this.slide(this.ids.length);
    }
    if (!this.cleaner) return delta;
    return this.cleaner.push(delta) + this.cleaner.flush();
  }

  private clean(raw: string): string {
    return this.cleaner ? this.cleaner.push(raw) : raw;
  }

  private decodeFrom(start: number, end: number): string {
    return this.tok.decode(this.ids.slice(start, end), RAW);
  }

  /** Moves the window so that it starts at the old read point and everything is printed. */
  private slide(end: number): void {
    this.prefix = this.read;
    this.read = end;
    this.printed = this.decodeFrom(this.prefix, this.read).length;
  }

  private step(): string {
    const n = this.ids.length;
    const text = this.decodeFrom(this.prefix, n);
    const unfinished = text.endsWith(REPLACEMENT);
    const stable = unfinished ? text.length - 1 : text.length;
    let delta = '';
    if (stable > this.printed) {
      delta = text.slice(this.printed, stable);
      this.printed = stable;
    }
    if (!unfinished) this.slide(n);
    else if (n - this.read > MAX_PENDING) this.cut(text);
    return delta;
  }

  /**
   * The text has ended in U+FFFD for many tokens (the model emits invalid bytes, or a real
   * U+FFFD): the window would grow without bound. Restart it a few tokens back, where decoding
   * provably splits cleanly: decode(ids[prefix..c]) is a prefix of the window's text and
   * decode(ids[c-1..]) = decode(ids[c-1..c]) + the rest of it.
   */
  private cut(text: string): void {
    const c = this.ids.length - 4;
    const head = this.decodeFrom(this.prefix, c);
    if (!text.startsWith(head) || head.length > this.printed) return;
    const ctx = this.decodeFrom(c - 1, c);
    if (this.decodeFrom(c - 1, this.ids.length) !== ctx + text.slice(head.length)) return;
    this.printed = ctx.length + (this.printed - head.length);
    this.prefix = c - 1;
    this.read = c;
  }
}

/**
 * Applies cleanUpTokenizationSpaces to a stream. Every pattern starts with a space and spans at
 * most 4 characters, so text can be cleaned up to any point whose 3 preceding characters hold
 * no space: no match can cross it, in any of the replacement passes.
 */
class SpaceCleaner {
  private pending = '';

  push(text: string): string {
    this.pending += text;
    const s = this.pending;
    let cut = s.length;
    while (cut > 0 && !safeCut(s, cut)) cut--;
    this.pending = s.slice(cut);
    return cleanUpTokenizationSpaces(s.slice(0, cut));
  }

  flush(): string {
    const out = cleanUpTokenizationSpaces(this.pending);
    this.pending = '';
    return out;
  }
}

function safeCut(s: string, cut: number): boolean {
  for (let i = Math.max(0, cut - 3); i < cut; i++) if (s[i] === ' ') return false;
  const c = s.charCodeAt(cut - 1);
  return !(c >= 0xd800 && c <= 0xdbff); // never split a surrogate pair
}

/** Decodes a whole id stream through a StreamingDetokenizer (for tests and one-shot use). */
export function streamDecode(tok: DecodeSource, ids: readonly number[], opts: DetokenizerOptions = {}): string[] {
  const d = new StreamingDetokenizer(tok, opts);
  const out = ids.map((id) => d.push(id));
  out.push(d.flush());
  return out;
}
