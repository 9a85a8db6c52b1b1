/**
 * Decoding through the GPU plan (issue 23, phase B): what `generate()` and the `Scheduler` run on
 * webgpu when every row fits the plan's tail (gpu-plans.ts lends the plans).
 *
 * Per row: setRow (its sampling, penalties, mixing and seeded generator) + resetRow + prefill
 * through the plan (its chunked GEMM path writes the plan's own KV cache), whose tail picks the
 * first token. Then each step is one encoder for every row of the plan and one read of a 64-byte
 * record a row (token, H, the weight on y, |C|, y's logprob, up to 5 top logprobs); the next input
 * (E[y], or the MoI / direct mix) stays on the GPU. The host does what it does on the composite
 * path (step.ts's acceptToken: EOS, stop ids and strings, text, lengths). Rows of the plan with no
 * request step along in their slot (harmlessly: greedy, standard; reset before they fill up).
 *
 * A row the plan's tail does not cover runs on the composite path, with the reason recorded (each
 * row by itself: a row's path never depends on the rows beside it, so batched equals alone):
 * Soft Thinking, candidates over the whole vocabulary (topK 'all') or more than the tail's 64,
 * the 'processed' prior, a custom mixer, per-step traces, more than 5 top logprobs, and a chat
 * session's cache (its rows live in tfjs KV caches).
 */
import {
  ModelError,
  RECORD_TOP_LOGPROBS,
  TAIL_MAX_K,
  type GpuDecodePlan,
  type RowSettings,
  type StepRecord,
} from '@moi/core';
import { defaultMixer, type InputMixer } from '@moi/moi';
import { acceptToken, finishRow, type GenerationEvent, type StepRow } from './step.ts';

/** Why these rows cannot run on the plan (null: they can); the first reason found. */
export function gpuFallbackReason(
  rows: StepRow[],
  o: { mixer?: InputMixer; cache?: unknown; batch?: number } = {},
): string | null {
  if (o.cache) return "a chat session's cache (its rows live in the composite path's KV caches)";
  if (o.mixer && o.mixer !== defaultMixer) return 'a custom input mixer';
  for (const row of rows) {
    const s = row.settings;
    const where = (o.batch ?? rows.length) > 1 ? `request ${row.index}: ` : '';
    if (s.mode === 'soft') return `${where}Soft Thinking is not on the GPU tail`;
    if (s.mode !== 'standard') {
      if (s.topK === 'all') return `${where}mixing over the whole vocabulary (topK 'all') is not on the GPU tail`;
      if (s.topK > TAIL_MAX_K) return `${where}the mix's topK ${s.topK} is over the GPU tail's ${TAIL_MAX_K}`;
      if (s.prior !== 'raw') return `${where}the '${s.prior}' prior is not on the GPU tail (raw only)`;
    }
    if (row.request.trace !== undefined) return `${where}per-step traces read the logits (composite path)`;
    const lp = row.state.params.logprobs;
    if (lp !== undefined && lp > RECORD_TOP_LOGPROBS)
      return `${where}${lp} top logprobs (a GPU step records at most ${RECORD_TOP_LOGPROBS})`;
  }
  return null;
}

/** A row's settings as the plan's tail takes them (its own seeded generator: the composite's draws). */
export function planRowSettings(row: StepRow): RowSettings {
  const p = row.state.params;
  const s = row.settings;
  return {
    sampling: {
      temperature: p.temperature,
      topK: p.topK,
      topP: p.topP,
      minP: p.minP,
      repetitionPenalty: p.repetitionPenalty,
      presencePenalty: p.presencePenalty,
      frequencyPenalty: p.frequencyPenalty,
      logprobs: p.logprobs ?? 0,
    },
    mix:
      s.mode === 'standard'
        ? { mode: 'standard' }
        : { mode: s.mode as 'moi' | 'direct', beta: s.beta, topK: s.topK as number },
    rng: row.state.rng,
  };
}

/**
 * The plan's rows as the engine uses them: which slot runs which StepRow, prefill, steps, and the
 * host's part of each record.
 */
export class GpuRows {
  /** the StepRow each slot runs (null: idle) */
  private readonly bySlot: (StepRow | null)[];

  constructor(
    readonly plan: GpuDecodePlan,
    private readonly eos: Set<number>,
  ) {
    this.bySlot = new Array(plan.batch).fill(null);
  }

  /** Start `row` in its slot: settings, an empty cache row, the prompt prefilled; the first token's record. */
  async start(row: StepRow): Promise<StepRecord> {
    const slot = row.slot;
    this.bySlot[slot] = row;
    this.plan.setRow(slot, planRowSettings(row));
    this.plan.resetRow(slot);
    return this.plan.prefill(slot, row.request.promptIds);
  }

  /** The slot is idle again (greedy, standard: its steps cost no draws). */
  free(slot: number): void {
    if (this.bySlot[slot] === null) return;
    this.bySlot[slot] = null;
    this.plan.setRow(slot, {});
  }

  /**
   * The host's part of a record for its row: events pushed; whether the row goes on. Non-finite
   * logits (y's logprob is NaN/Inf then) throw E_NONFINITE, as the composite step's probe does.
   */
  accept(row: StepRow, rec: StepRecord, events: GenerationEvent[]): boolean {
    if (!Number.isFinite(rec.logprob)) {
      throw new ModelError(
        'E_NONFINITE',
        `the model produced NaN/Inf logits at step ${row.state.generatedIds.length}; the weights or config are broken`,
      );
    }
    const alive = acceptToken(row, rec.token, this.eos, this.plan.positions[row.slot], events, () => {
      const mix =
        row.settings.mode === 'standard'
          ? null
          : { entropy: rec.entropy, weight: rec.weightOnSampled, candidates: rec.numCandidates };
      const n = row.state.params.logprobs;
      const logprobs =
        n === undefined ? undefined : { logprob: rec.logprob, ...(n > 0 ? { top: rec.topLogprobs.slice(0, n) } : {}) };
      return { mix, logprobs };
    });
    if (!alive) this.free(row.slot);
    return alive;
  }

  /** One step of every slot: records of the live rows, by slot. Idle slots near their capacity are emptied first. */
  async step(): Promise<StepRecord[]> {
    for (let slot = 0; slot < this.plan.batch; slot++) {
      if (this.bySlot[slot] === null && this.plan.positions[slot] >= this.plan.capacity - 1) this.plan.resetRow(slot);
    }
    return this.plan.step();
  }
}

export interface GpuGenerateOptions {
  signal?: AbortSignal;
  onPrefill?: (p: { row: number; done: number; total: number }) => void;
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Events of several streams as they come (a failure in one ends the others). */
export async function* mergeStreams<T>(streams: AsyncGenerator<T>[]): AsyncGenerator<T> {
  const next = (i: number) => streams[i].next().then((r) => ({ i, r }));
  const pending = new Map(streams.map((_, i) => [i, next(i)]));
  try {
    while (pending.size > 0) {
      const { i, r } = await Promise.race(pending.values());
      if (r.done) pending.delete(i);
      else {
        pending.set(i, next(i));
        yield r.value;
      }
    }
  } finally {
    await Promise.allSettled(streams.map((s) => s.return(undefined)));
  }
}

/** generate()'s decode on the plan: rows are the plan's slots 0..B-1 (the plan is the caller's for the call). */
export async function* gpuGenerate(
  plan: GpuDecodePlan,
  rows: StepRow[],
  eos: Set<number>,
  opts: GpuGenerateOptions,
): AsyncGenerator<GenerationEvent> {
  const runner = new GpuRows(plan, eos);
  const recs = new Map<StepRow, StepRecord>();
  for (const row of rows) {
    if (opts.signal?.aborted) break;
    recs.set(row, await runner.start(row));
    opts.onPrefill?.({ row: row.index, done: row.request.promptIds.length, total: row.request.promptIds.length });
  }
  if (opts.signal?.aborted) {
    for (const row of rows) yield finishRow(row, 'abort');
    return;
  }
  let live = rows.slice();
  for (;;) {
    const now = performance.now();
    const events: GenerationEvent[] = [];
    const next: StepRow[] = [];
    for (const row of live) {
      if (!row.prefillEnd) row.prefillEnd = now;
      if (runner.accept(row, recs.get(row)!, events)) next.push(row);
    }
    live = next;
    for (const e of events) yield e;
    await yieldToEventLoop();
    if (opts.signal?.aborted) {
      for (const row of live) yield finishRow(row, 'abort');
      return;
    }
    if (live.length === 0) return;
    const step = await runner.step();
    for (const row of live) recs.set(row, step[row.slot]);
  }
}
