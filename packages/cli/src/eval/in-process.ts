/**
 * The in-process Completer: the local engine decodes the requests through the continuous-batching
 * Scheduler, `maxSeqs` at a time; a finished completion frees its row for the next one at once,
 * so completions of different lengths do not hold each other up. Results come as each finishes.
 */
import type { GenerateRequest } from '@moi/engine';
import type { Engine } from '@moi/engine';
import { Scheduler } from '@moi/engine';
import type { Completer, CompletionRequest, CompletionResult } from './completer.ts';

export class InProcessCompleter implements Completer {
  readonly name = 'in-process';
  constructor(
    private readonly engine: Engine,
    private readonly maxSeqs: number,
  ) {}

  async *complete(requests: CompletionRequest[], signal?: AbortSignal): AsyncIterable<CompletionResult> {
    if (requests.length === 0 || signal?.aborted) return;
    const need = Math.max(...requests.map((r) => r.promptIds!.length + r.maxTokens)) + 1;
    const scheduler = new Scheduler(this.engine, {
      maxSeqs: Math.min(this.maxSeqs, requests.length),
      maxModelLen: Math.min(this.engine.spec.maxPositionEmbeddings, need),
    });
    // One task per request; yield whichever finishes first.
    const run = async (r: CompletionRequest): Promise<CompletionResult | null> => {
      const gen: GenerateRequest = {
        promptIds: r.promptIds!,
        maxTokens: r.maxTokens,
        sampling: r.sampling,
        mix: {
          mode: r.mode,
          ...(r.beta !== undefined ? { beta: r.beta } : {}),
          ...(r.mixTopK !== undefined ? { topK: r.mixTopK } : {}),
          ...(r.soft ? { soft: r.soft } : {}),
        },
        trace: 0,
      };
      const acc = { h: 0, w: 0, n: 0 };
      for await (const e of scheduler.submit(gen, { signal })) {
        if (e.type === 'token') {
          if (e.trace) {
            acc.h += e.trace.entropy;
            acc.w += e.trace.weight;
            acc.n++;
          }
          continue;
        }
        if (e.finishReason === 'abort') return null; // unfinished: not a result
        return {
          key: r.key,
          completion: e.text,
          promptTokens: e.stats.promptTokens,
          completionTokens: e.stats.generatedTokens,
          finishReason: e.finishReason,
          seconds: e.stats.prefillSeconds + e.stats.decodeSeconds,
          meanEntropy: acc.n ? acc.h / acc.n : null,
          meanWeight: acc.n ? acc.w / acc.n : null,
          modeUsed: r.mode,
        };
      }
      return null;
    };
    const pending = new Map<number, Promise<{ i: number; result: CompletionResult | null }>>();
    requests.forEach((r, i) =>
      pending.set(
        i,
        run(r).then((result) => ({ i, result })),
      ),
    );
    try {
      while (pending.size > 0) {
        const { i, result } = await Promise.race(pending.values());
        pending.delete(i);
        if (result) yield result;
      }
    } finally {
      await scheduler.close();
      await Promise.allSettled(pending.values());
    }
  }

  async close(): Promise<void> {}
}
