/**
 * Token traces: decode a prompt recording every step's H, w_y and top candidates, in one or more
 * modes (same prompt, same seed), and write them as a self-contained page (page.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { UsageError } from '@moi/core';
import type { MixMode } from '@moi/moi';
import { generate, TokenTexts, type GenerateRequest, type TokenEvent, type Tokenizer } from '@moi/engine';
import type { Engine } from '@moi/engine';
import { tracePageHtml, type TraceDoc, type TraceRun, type TraceStep } from './page.ts';

export type { TraceDoc, TraceRun, TraceStep };

export const TRACE_TOP = 10;

/**
 * The tokens' texts of one run where they stand: what each adds after the prompt and the tokens
 * before it (the first word keeps its leading space), the candidates what they would have added.
 */
export function traceTexts(engine: Engine, promptIds: readonly number[]): TokenTexts | null {
  return engine.tokenizer ? new TokenTexts(engine.tokenizer, { context: promptIds }) : null;
}

/**
 * The prompt as the page shows it: special tokens as their text, each stretch between them
 * decoded alone (so "<s>Once upon a time", not "<s> Once upon a time" as a whole decode gives).
 */
export function promptForDisplay(tok: Tokenizer | null, ids: readonly number[]): string {
  if (!tok) return ids.join(',');
  let out = '';
  let run: number[] = [];
  const end = () => {
    if (run.length) out += tok.decode(run, { skipSpecialTokens: false });
    run = [];
  };
  for (const id of ids) {
    if (tok.specialTokenIds.has(id)) {
      end();
      out += tok.decode([id], { skipSpecialTokens: false });
    } else run.push(id);
  }
  end();
  return out;
}

/** A token event (of a request with `trace`) as a trace step, with the tokens' texts (`texts` advances by it). */
export function traceStep(texts: TokenTexts | null, e: TokenEvent): TraceStep {
  const t = e.trace;
  if (!t) throw new UsageError('E_INTERNAL', 'a token event without trace data (the request needs `trace`)');
  const soft = e.mix?.soft;
  const candidates = t.candidates.map((c) => ({ ...c, text: texts ? texts.peek(c.id).label : `#${c.id}` }));
  return {
    token: e.token,
    text: texts ? texts.next(e.token).label : `#${e.token}`,
    entropy: t.entropy,
    weight: t.weight,
    pSampled: t.pSampled,
    candidates,
    ...(soft ? { phase: soft.phase } : {}),
    ...(soft?.thinkEnd ? { thinkEnd: soft.thinkEnd } : {}),
    ...(soft?.entropy != null ? { softEntropy: soft.entropy } : {}),
  };
}

/** Decode one request with per-step candidates recorded. */
export async function traceRequest(
  engine: Engine,
  request: GenerateRequest,
  label: string,
  opts: { top?: number; signal?: AbortSignal } = {},
): Promise<TraceRun> {
  const top = opts.top ?? TRACE_TOP;
  const steps: TraceStep[] = [];
  let text = '';
  let finishReason = 'length';
  const texts = traceTexts(engine, request.promptIds);
  for await (const e of generate(engine, [{ ...request, trace: top }], { signal: opts.signal })) {
    if (e.type === 'token') steps.push(traceStep(texts, e));
    else {
      text = e.text;
      finishReason = e.finishReason;
    }
  }
  return { label, mode: request.mix?.mode ?? 'standard', text, finishReason, steps };
}

/** The same prompt decoded in each mode with the same sampling (and seed). */
export async function traceModes(
  engine: Engine,
  request: GenerateRequest,
  modes: MixMode[],
  opts: { top?: number; signal?: AbortSignal } = {},
): Promise<TraceRun[]> {
  const runs: TraceRun[] = [];
  for (const mode of modes) {
    // Soft Thinking's options apply to the soft run only
    const { soft, ...rest } = request.mix ?? {};
    runs.push(
      await traceRequest(
        engine,
        { ...request, mix: { ...rest, mode, ...(mode === 'soft' && soft ? { soft } : {}) } },
        mode,
        opts,
      ),
    );
  }
  return runs;
}

/** First step where the runs' tokens differ (or one ends before another), or null when identical. */
export function firstDivergence(runs: TraceRun[]): number | null {
  if (runs.length < 2) return null;
  const longest = Math.max(...runs.map((r) => r.steps.length));
  for (let i = 0; i < longest; i++) {
    const t = runs[0].steps[i]?.token;
    if (runs.some((r) => r.steps[i]?.token !== t)) return i;
  }
  return null;
}

/**
 * Checks, before any generation, that the page can be written where asked: its folder exists
 * and is a folder. A usage error naming the flag otherwise.
 */
export function checkTracePath(file: string, flag = '--trace'): void {
  const dir = path.dirname(path.resolve(file));
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new UsageError('E_USAGE', `${flag} ${file}: the folder ${dir} does not exist (create it first)`);
  }
  if (!st.isDirectory()) throw new UsageError('E_USAGE', `${flag} ${file}: ${dir} is not a folder`);
  if (fs.existsSync(file) && fs.statSync(file).isDirectory())
    throw new UsageError('E_USAGE', `${flag} ${file}: that is a folder; give a file name such as trace.html`);
}

export function writeTracePage(file: string, doc: TraceDoc): void {
  fs.writeFileSync(file, tracePageHtml(doc, firstDivergence(doc.runs)));
}
