/**
 * Continuous batching. A `Scheduler` holds a long-lived pool of `maxSeqs` KV-cache rows; requests
 * are submitted at any time and each returns a stream of the same token and done events as
 * `generate()` (same decode step, see step.ts).
 *
 * The loop, one iteration at a time:
 *   1. rows whose request was cancelled (AbortSignal) end with 'abort' and free their slot;
 *   2. waiting requests take free slots (a slot whose cache holds the longest prefix of the
 *      prompt first, else the least recently used one), FIFO;
 *   3. one prefill chunk for one admitted row (so a long prompt never freezes the streams);
 *   4. one decode step for every row that has logits, then the forward of their next inputs.
 *
 * Prompt cache: a freed row's slot keeps the ids its cache holds until the slot is needed again.
 * A new prompt that begins with those ids reuses them and prefills only the rest. Generated
 * tokens are kept in the prefix only for standard rows (a MoI row's cache holds mixed inputs,
 * which a plain prefill of the same ids would not reproduce). A row that ends in an error is
 * cleared and caches nothing; every slot a row gives up is zeroed (KVCache.truncate/reset), so
 * non-finite values a failed request wrote can never reach a later request.
 *
 * On webgpu (issue 23 phase B, gpu-decode.ts) the rows run on a GPU plan of `maxSeqs` rows lent by
 * the engine for the scheduler's life: a request the plan's tail covers is prefilled whole through
 * the plan when admitted, and every iteration steps all of the plan's rows in one encoder with one
 * read. Such rows keep no prompt cache (their slot's plan row is reset on admission). A request the
 * tail does not cover (Soft Thinking, traces, …) runs on the composite path beside them, in the
 * composite KV cache (made when the first such request comes).
 */
import * as tf from '@tensorflow/tfjs-core';
import { MoiError, UsageError, type GpuDecodePlan, type StepRecord } from '@moi/core';
import type { KVCache, DecoderSpec } from '@moi/models';
import { defaultMixer, type InputMixer, type MixSettings } from '@moi/moi';
import { commonPrefix } from './chat-session.ts';
import { prefillChunkEnd } from './prefill.ts';
import type { Engine } from './engine.ts';
import { gpuFallbackReason, GpuRows } from './gpu-decode.ts';
import {
  decodeStep,
  finishRow,
  forwardNext,
  planRow,
  startRow,
  type GenerateRequest,
  type GenerationEvent,
  type StepContext,
  type StepRow,
} from './step.ts';

export interface SchedulerOptions {
  /** rows decoded together at most (default 8) */
  maxSeqs?: number;
  /** most tokens a row holds, prompt + generation (default min(max_position_embeddings, 4096)) */
  maxModelLen?: number;
  /** requests waiting for a row at most; past it submit throws E_QUEUE_FULL (default unbounded) */
  maxWaiting?: number;
  /** prompt tokens per prefill forward (default 64) */
  prefillChunk?: number;
  mixer?: InputMixer;
  /** keep freed rows' caches for prompt reuse (default true) */
  promptCache?: boolean;
}

export interface SubmitOptions {
  signal?: AbortSignal;
}

/** Counters and gauges of the scheduler (for /metrics). */
export interface SchedulerStats {
  running: number;
  waiting: number;
  freeSlots: number;
  promptTokens: number;
  cachedPromptTokens: number;
  generationTokens: number;
}

/** A submitted request's handle: its events, in order. */
export interface Submission extends AsyncIterable<GenerationEvent> {
  /** the request's row (slot) once it has one, else null */
  readonly slot: number | null;
  /** the mixing it runs with, as resolved when it was submitted (Soft Thinking's think-end id included) */
  readonly settings: MixSettings;
}

interface Job {
  request: GenerateRequest;
  row: StepRow;
  signal?: AbortSignal;
  /** events not yet taken by the consumer */
  queue: GenerationEvent[];
  error: Error | null;
  ended: boolean;
  /** the consumer stopped reading: end it at the next reap */
  cancelled: boolean;
  wake: (() => void) | null;
  slot: number | null;
  /** prompt tokens still to prefill (from `prefilled`) */
  prefilled: number;
  /** the full prompt (the ids its slot will hold) */
  prompt: number[];
  /** it runs on the GPU plan (else the composite path) */
  gpu: boolean;
}

interface Slot {
  /** the ids this slot's cache holds, in order */
  held: number[];
  job: Job | null;
  /** when it was last freed (LRU among free slots) */
  freedAt: number;
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

export class Scheduler {
  readonly maxSeqs: number;
  readonly maxModelLen: number;
  readonly maxWaiting: number;
  /** bytes the KV cache takes when every row is full */
  readonly kvBytes: number;
  /** the composite path's KV cache (on the GPU plan: made when a request first needs it) */
  private compositeCache: KVCache[] | null = null;
  private readonly ctx: StepContext;
  // ---- issue 23 phase B: the GPU plan's rows (gpu-decode.ts), and the records not yet taken
  private readonly gpuPlan: Promise<GpuDecodePlan> | null = null;
  private gpuRows: GpuRows | null = null;
  private readonly gpuRecs = new Map<Job, StepRecord>();
  private readonly slots: Slot[];
  private readonly waiting: Job[] = [];
  /** rows being prefilled, in admission order */
  private readonly prefilling: Job[] = [];
  /** logits of rows ready for a decode step: groups of rows with a [n, V] tensor */
  private pending: { jobs: Job[]; logits: tf.Tensor2D }[] = [];
  private readonly chunk: number;
  private readonly promptCache: boolean;
  private running = false;
  private closed = false;
  private tick = 0;
  private idle: Promise<void> = Promise.resolve();
  private nextId = 0;
  private readonly byId = new Map<number, Job>();
  private readonly counters = { promptTokens: 0, cachedPromptTokens: 0, generationTokens: 0 };

  constructor(
    readonly engine: Engine,
    opts: SchedulerOptions = {},
  ) {
    const spec = engine.spec;
    this.maxSeqs = opts.maxSeqs ?? 8;
    this.maxModelLen = opts.maxModelLen ?? Math.min(spec.maxPositionEmbeddings, 4096);
    this.maxWaiting = opts.maxWaiting ?? Infinity;
    if (!Number.isInteger(this.maxSeqs) || this.maxSeqs < 1)
      throw new UsageError('E_USAGE', `max seqs must be a positive integer, got ${this.maxSeqs}`);
    if (!Number.isInteger(this.maxModelLen) || this.maxModelLen < 2)
      throw new UsageError('E_USAGE', `max model len must be an integer ≥ 2, got ${this.maxModelLen}`);
    if (this.maxModelLen > spec.maxPositionEmbeddings) {
      throw new UsageError(
        'E_USAGE',
        `max model len ${this.maxModelLen} exceeds the model's max_position_embeddings ${spec.maxPositionEmbeddings}`,
      );
    }
    this.chunk = Math.max(1, opts.prefillChunk ?? 64);
    this.promptCache = opts.promptCache ?? true;
    if (engine.gpu) {
      this.gpuPlan = engine.gpu.acquire(this.maxSeqs, this.maxModelLen);
      this.gpuPlan.catch(() => undefined); // a failure reaches the first request that needs the plan
      this.kvBytes = Scheduler.kvBytesFor(spec, this.maxSeqs, this.maxModelLen);
    } else {
      this.compositeCache = engine.model.makeCache(this.maxSeqs, this.maxModelLen);
      this.kvBytes = this.compositeCache.reduce((n, c) => n + 2 * c.batch * c.kvHeads * c.headDim * c.size * 4, 0);
    }
    this.ctx = {
      model: engine.model,
      cache: this.compositeCache ?? [],
      mixer: opts.mixer ?? defaultMixer,
      eos: new Set(engine.eosTokenIds),
    };
    this.slots = Array.from({ length: this.maxSeqs }, () => ({ held: [], job: null, freedAt: 0 }));
  }

  /** The composite path's KV cache (made on first use when the rows run on the GPU plan). */
  private get cache(): KVCache[] {
    if (!this.compositeCache) {
      this.compositeCache = this.engine.model.makeCache(this.maxSeqs, this.maxModelLen);
      this.ctx.cache = this.compositeCache;
    }
    return this.compositeCache;
  }

  /** Bytes of a KV cache of `maxSeqs` rows of `maxModelLen` tokens (keys + values, float32). */
  static kvBytesFor(spec: DecoderSpec, maxSeqs: number, maxModelLen: number): number {
    return spec.layers.reduce(
      (n, l) =>
        n +
        2 * maxSeqs * spec.numKvHeads * spec.headDim * (l.window ? Math.min(l.window, maxModelLen) : maxModelLen) * 4,
      0,
    );
  }

  /** Gauges and counters now. */
  stats(): SchedulerStats {
    const busy = this.slots.filter((s) => s.job).length;
    return {
      running: busy,
      waiting: this.waiting.length,
      freeSlots: this.maxSeqs - busy,
      ...this.counters,
    };
  }

  /**
   * Submit a request. Validation errors (empty prompt, ids outside the vocabulary, a prompt
   * longer than the context, bad MoI settings) throw here; E_QUEUE_FULL when the waiting queue is
   * full, E_CLOSED after close(). The events come through the returned iterable; an abort ends
   * the request with finish reason 'abort'.
   */
  submit(request: GenerateRequest, opts: SubmitOptions = {}): Submission {
    if (this.closed) throw new UsageError('E_CLOSED', 'the scheduler is closed');
    const row = planRow(this.engine, request, {
      index: 0,
      slot: -1,
      where: '',
      maxContext: this.maxModelLen,
      held: 0,
      cacheName: 'max model len',
    });
    startRow(this.ctx.mixer, row);
    // rows freed since the loop last admitted take waiting requests first: those do not count
    // against the queue (else a client at exactly maxSeqs + maxWaiting could get a 429)
    const free = this.slots.reduce((n, s) => n + (s.job ? 0 : 1), 0);
    if (this.waiting.length - free >= this.maxWaiting)
      throw new UsageError('E_QUEUE_FULL', `the waiting queue is full (${this.maxWaiting} requests)`);
    row.index = ++this.nextId;
    const job: Job = {
      request,
      row,
      signal: opts.signal,
      queue: [],
      error: null,
      ended: false,
      cancelled: false,
      wake: null,
      slot: null,
      prefilled: 0,
      prompt: request.promptIds.slice(),
      gpu: !!this.gpuPlan && gpuFallbackReason([row], { mixer: this.ctx.mixer }) === null,
    };
    this.waiting.push(job);
    this.byId.set(row.index, job);
    opts.signal?.addEventListener('abort', () => this.kick(), { once: true });
    this.kick();
    return {
      get slot() {
        return job.slot;
      },
      settings: row.settings,
      [Symbol.asyncIterator]: () => this.events(job),
    };
  }

  /** Stop accepting; running and waiting requests end with finish reason 'abort'. Frees the cache. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const job of [...this.waiting, ...this.prefilling, ...this.slots.map((s) => s.job)]) {
      if (job && !job.ended) this.end(job, finishRow(job.row, 'abort'));
    }
    this.kick();
    await this.idle;
    this.dropPending();
    for (const c of this.compositeCache ?? []) c.dispose();
    const plan = await this.gpuPlan?.catch(() => null);
    if (plan) this.engine.gpu?.release(plan);
  }

  // ---- the consumer side

  private async *events(job: Job): AsyncGenerator<GenerationEvent> {
    try {
      for (;;) {
        while (job.queue.length > 0) {
          const e = job.queue.shift()!;
          yield e;
          if (e.type === 'done') return;
        }
        if (job.error) throw job.error;
        if (job.ended) return;
        await new Promise<void>((resolve) => {
          job.wake = resolve;
        });
        job.wake = null;
      }
    } finally {
      // a consumer that stops early cancels the request
      if (!job.ended) {
        job.cancelled = true;
        this.kick();
      }
    }
  }

  private push(job: Job, e: GenerationEvent): void {
    job.queue.push({ ...e, row: 0 });
    job.wake?.();
  }

  /** End a job with its done event (or an error) and free its slot. */
  private end(job: Job, done: GenerationEvent | null, error?: Error): void {
    if (done) this.push(job, done);
    if (error) job.error = error;
    job.ended = true;
    job.row.finished ??= 'abort';
    job.wake?.();
    this.byId.delete(job.row.index);
    const w = this.waiting.indexOf(job);
    if (w >= 0) this.waiting.splice(w, 1);
    const p = this.prefilling.indexOf(job);
    if (p >= 0) this.prefilling.splice(p, 1);
    this.gpuRecs.delete(job);
    if (job.slot !== null) {
      const slot = this.slots[job.slot];
      if (slot.job === job && job.gpu) {
        // a GPU plan row keeps no prompt cache: its slot is idle until a request is admitted to it
        slot.job = null;
        slot.freedAt = ++this.tick;
        slot.held = [];
        this.gpuRows?.free(job.slot);
      } else if (slot.job === job) {
        slot.job = null;
        slot.freedAt = ++this.tick;
        if (error || !this.promptCache) {
          // a row that failed (non-finite logits, an engine error) may hold non-finite keys and
          // values: it is cleared (zeroed) and its ids never serve another prompt
          slot.held = [];
          for (const c of this.cache) c.reset([job.slot]);
        } else {
          // what the slot's cache holds now: prompt + (standard rows) generated ids, up to its offset
          const fed =
            job.row.settings.mode === 'standard' ? [...job.prompt, ...job.row.state.generatedIds] : job.prompt;
          slot.held = fed.slice(0, this.cache[0].offset[job.slot]);
        }
      }
    }
  }

  // ---- the loop

  private kick(): void {
    if (this.running) return;
    this.running = true;
    this.idle = this.loop().finally(() => {
      this.running = false;
    });
  }

  private hasWork(): boolean {
    return this.waiting.length > 0 || this.prefilling.length > 0 || this.pending.length > 0 || this.gpuRecs.size > 0;
  }

  private async loop(): Promise<void> {
    while (this.hasWork()) {
      try {
        this.reap();
        this.admit();
        await this.prefillOne();
        await this.step();
      } catch (e) {
        // an engine failure ends every running request with it; the scheduler goes on
        const err = e instanceof Error ? e : new Error(String(e));
        this.dropPending();
        this.gpuRecs.clear();
        for (const job of [...this.prefilling, ...this.slots.map((s) => s.job)])
          if (job && !job.ended) this.end(job, null, err);
      }
      await yieldToEventLoop();
    }
  }

  /** Cancelled requests end now and free their slots (before the next step). */
  private reap(): void {
    for (const job of [...this.waiting, ...this.prefilling, ...this.slots.map((s) => s.job)]) {
      if (job && !job.ended && (job.signal?.aborted || job.cancelled)) this.end(job, finishRow(job.row, 'abort'));
    }
    // drop the logits of rows that ended
    const groups: typeof this.pending = [];
    for (const g of this.pending) {
      const keep = g.jobs.map((j, i) => (j.ended ? -1 : i)).filter((i) => i >= 0);
      if (keep.length === g.jobs.length) groups.push(g);
      else {
        if (keep.length > 0)
          groups.push({
            jobs: keep.map((i) => g.jobs[i]),
            logits: tf.tidy(() => tf.gather(g.logits, keep)) as tf.Tensor2D,
          });
        g.logits.dispose();
      }
    }
    this.pending = groups;
    for (let i = this.prefilling.length - 1; i >= 0; i--) if (this.prefilling[i].ended) this.prefilling.splice(i, 1);
    for (let i = this.waiting.length - 1; i >= 0; i--) if (this.waiting[i].ended) this.waiting.splice(i, 1);
  }

  private dropPending(): void {
    for (const g of this.pending) g.logits.dispose();
    this.pending = [];
  }

  /** Waiting requests take free slots: the longest cached prefix first, else the least recently used. */
  private admit(): void {
    while (this.waiting.length > 0) {
      const free = this.slots.map((s, i) => ({ s, i })).filter(({ s }) => !s.job);
      if (free.length === 0) return;
      const job = this.waiting.shift()!;
      let best = free[0];
      let bestLen = -1;
      for (const f of free) {
        const n = Math.min(commonPrefix(f.s.held, job.prompt), job.prompt.length - 1);
        if (n > bestLen || (n === bestLen && f.s.freedAt < best.s.freedAt)) {
          best = f;
          bestLen = n;
        }
      }
      const slot = best.i;
      let keep = Math.max(0, bestLen);
      if (!this.promptCache || job.gpu) keep = 0;
      const ok = job.gpu || this.cache.map((c) => c.truncate(slot, keep)).every(Boolean);
      if (!ok) {
        for (const c of this.cache) c.reset([slot]);
        keep = 0;
      }
      best.s.held = best.s.held.slice(0, keep);
      best.s.job = job;
      job.slot = slot;
      job.row.slot = slot;
      job.prefilled = keep;
      job.row.cachedTokens = keep;
      this.counters.promptTokens += job.prompt.length;
      this.counters.cachedPromptTokens += keep;
      this.prefilling.push(job);
    }
  }

  /** One prefill chunk of the first admitted row; its last logits join the decode batch. */
  private async prefillOne(): Promise<void> {
    const job = this.prefilling[0];
    if (!job) return;
    const p = job.prompt;
    if (job.gpu) {
      // the GPU plan: the whole prompt in one call (its chunks run back to back), the first token's record kept
      this.gpuRows ??= new GpuRows(await this.gpuPlan!, this.ctx.eos);
      const rec = await this.gpuRows.start(job.row);
      job.prefilled = p.length;
      this.prefilling.shift();
      if (!job.ended) this.gpuRecs.set(job, rec);
      return;
    }
    const end = prefillChunkEnd(job.prefilled, p.length, this.chunk);
    const out = this.engine.model.forward(
      { ids: [p.slice(job.prefilled, end)] },
      { cache: this.cache, rows: [job.slot!], lastOnly: true, prefillTokensLeft: p.length - job.prefilled },
    );
    job.prefilled = end;
    if (end < p.length) {
      out.dispose();
      return;
    }
    const logits = tf.reshape(out, [1, -1]) as tf.Tensor2D;
    out.dispose();
    this.prefilling.shift();
    this.pending.push({ jobs: [job], logits });
  }

  private async step(): Promise<void> {
    await this.stepComposite();
    await this.stepGpu();
  }

  /** Token and done events to their jobs' streams (by the row id each job's row carries; consumers see row 0). */
  private route(events: GenerationEvent[]): void {
    for (const e of events) {
      const j = this.byId.get(e.row);
      if (e.type === 'token') this.counters.generationTokens++;
      if (!j || j.ended) continue; // cancelled while stepping: its events are dropped
      if (e.type === 'done') this.end(j, e);
      else this.push(j, e);
    }
  }

  /** The GPU plan's rows: take the records of the last prefill or step, then step every row of the plan once. */
  private async stepGpu(): Promise<void> {
    if (this.gpuRecs.size === 0) return;
    const rows = this.gpuRows!;
    const now = performance.now();
    const taken = [...this.gpuRecs];
    this.gpuRecs.clear();
    const live: Job[] = [];
    const events: GenerationEvent[] = [];
    for (const [job, rec] of taken) {
      if (job.ended) continue;
      if (!job.row.prefillEnd) job.row.prefillEnd = now;
      try {
        if (rows.accept(job.row, rec, events)) live.push(job);
      } catch (e) {
        this.end(job, null, e instanceof MoiError ? e : new Error(String(e)));
      }
    }
    this.route(events);
    const going = live.filter((j) => !j.ended);
    if (going.length === 0) return;
    const recs = await rows.step();
    for (const j of going) if (!j.ended) this.gpuRecs.set(j, recs[j.slot!]);
  }

  /** One decode step for every composite row with logits, then the forward of their next inputs. */
  private async stepComposite(): Promise<void> {
    if (this.pending.length === 0) return;
    const groups = this.pending;
    this.pending = [];
    const jobs = groups.flatMap((g) => g.jobs);
    const logits =
      groups.length === 1
        ? groups[0].logits
        : (tf.concat(
            groups.map((g) => g.logits),
            0,
          ) as tf.Tensor2D);
    if (groups.length > 1) for (const g of groups) g.logits.dispose();
    const byRow = new Map(jobs.map((j) => [j.row, j]));
    let out;
    try {
      out = await decodeStep(
        this.ctx,
        jobs.map((j) => j.row),
        logits,
        false,
      );
    } finally {
      logits.dispose();
    }
    const now = performance.now();
    for (const j of jobs) if (!j.row.prefillEnd) j.row.prefillEnd = now;
    for (const f of out.failed) {
      const job = byRow.get(f.row)!;
      this.end(job, null, f.error instanceof MoiError ? f.error : new Error(String(f.error)));
    }
    this.route(out.events);
    if (!out.next) return;
    const liveJobs = out.live.map((r) => byRow.get(r)!);
    const next = forwardNext(this.engine.model, this.cache, out.live, out.next);
    this.pending.push({ jobs: liveJobs, logits: next });
  }
}
