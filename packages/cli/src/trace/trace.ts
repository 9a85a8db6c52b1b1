/**
 * Token traces: decode a prompt recording every step's H, w_y and top candidates, in one or more
 * modes (same prompt, same seed), and write them as a self-contained page (page.ts).
 */
import fs from 'node:fs';
import { UsageError } from '@moi/core';
import type { MixMode } from '@moi/moi';
import { generate, type GenerateRequest, type TokenEvent } from '@moi/engine';
import type { Engine } from '@moi/engine';
import { tracePageHtml, type TraceDoc, type TraceRun, type TraceStep } from './page.ts';

export type { TraceDoc, TraceRun, TraceStep };

export const TRACE_TOP = 10;

/**
 * A token's text where it stands: decoded after the token before it, less that token's text
 * (decoded alone, SentencePiece tokens lose their leading space).
 */
function tokenText(engine: Engine, id: number, prev: number | undefined): string {
  const tok = engine.tokenizer;
  if (!tok) return `#${id}`;
  if (prev === undefined) return tok.decode([id]);
  const before = tok.decode([prev]);
  const both = tok.decode([prev, id]);
  return both.startsWith(before) ? both.slice(before.length) : tok.decode([id]);
}

/** A token event (of a request with `trace`) as a trace step, with the tokens' texts. */
export function traceStep(engine: Engine, e: TokenEvent, prev: number | undefined): TraceStep {
  const t = e.trace;
  if (!t) throw new UsageError('E_INTERNAL', 'a token event without trace data (the request needs `trace`)');
  const soft = e.mix?.soft;
  return {
    token: e.token, text: tokenText(engine, e.token, prev), entropy: t.entropy, weight: t.weight, pSampled: t.pSampled,
    candidates: t.candidates.map((c) => ({ ...c, text: tokenText(engine, c.id, prev) })),
    ...(soft ? { phase: soft.phase } : {}),
    ...(soft?.thinkEnd ? { thinkEnd: soft.thinkEnd } : {}),
    ...(soft?.entropy != null ? { softEntropy: soft.entropy } : {}),
  };
}

/** Decode one request with per-step candidates recorded. */
export async function traceRequest(engine: Engine, request: GenerateRequest, label: string, opts: { top?: number; signal?: AbortSignal } = {}): Promise<TraceRun> {
  const top = opts.top ?? TRACE_TOP;
  const steps: TraceStep[] = [];
  let text = '';
  let finishReason = 'length';
  for await (const e of generate(engine, [{ ...request, trace: top }], { signal: opts.signal })) {
    if (e.type === 'token') steps.push(traceStep(engine, e, steps.length ? steps[steps.length - 1].token : request.promptIds[request.promptIds.length - 1]));
    else {
      text = e.text;
      finishReason = e.finishReason;
    }
  }
  return { label, mode: request.mix?.mode ?? 'standard', text, finishReason, steps };
}

/** The same prompt decoded in each mode with the same sampling (and seed). */
export async function traceModes(engine: Engine, request: GenerateRequest, modes: MixMode[], opts: { top?: number; signal?: AbortSignal } = {}): Promise<TraceRun[]> {
  const runs: TraceRun[] = [];
  for (const mode of modes) {
    // Soft Thinking's options apply to the soft run only
    const { soft, ...rest } = request.mix ?? {};
    runs.push(await traceRequest(engine, { ...request, mix: { ...rest, mode, ...(mode === 'soft' && soft ? { soft } : {}) } }, mode, opts));
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

export function writeTracePage(file: string, doc: TraceDoc): void {
  fs.writeFileSync(file, tracePageHtml(doc, firstDivergence(doc.runs)));
}
