/**
 * The in-process Completer: the local engine decodes up to `maxSeqs` requests at a time with
 * generate(). (When the engine's continuous-batching scheduler lands, only this file changes:
 * submit each request to it and yield as each finishes.)
 */
import { generate, type GenerateRequest } from '../engine/generate.ts';
import type { Engine } from '../engine/engine.ts';
import type { Completer, CompletionRequest, CompletionResult } from './completer.ts';

export class InProcessCompleter implements Completer {
  readonly name = 'in-process';
  constructor(private readonly engine: Engine, private readonly maxSeqs: number) {}

  async *complete(requests: CompletionRequest[], signal?: AbortSignal): AsyncIterable<CompletionResult> {
    for (let s = 0; s < requests.length && !signal?.aborted; s += this.maxSeqs) {
      const batch = requests.slice(s, s + this.maxSeqs);
      const gen: GenerateRequest[] = batch.map((r) => ({
        promptIds: r.promptIds!,
        maxTokens: r.maxTokens,
        sampling: r.sampling,
        mix: { mode: r.mode, ...(r.beta !== undefined ? { beta: r.beta } : {}), ...(r.mixTopK !== undefined ? { topK: r.mixTopK } : {}) },
        trace: 0,
      }));
      const sums = batch.map(() => ({ h: 0, w: 0, n: 0 }));
      const t0 = performance.now();
      for await (const e of generate(this.engine, gen, { signal })) {
        if (e.type === 'token') {
          const acc = sums[e.row];
          if (e.trace) { acc.h += e.trace.entropy; acc.w += e.trace.weight; acc.n++; }
          continue;
        }
        if (e.finishReason === 'abort') continue; // unfinished: not a result
        const acc = sums[e.row];
        yield {
          key: batch[e.row].key,
          completion: e.text,
          promptTokens: e.stats.promptTokens,
          completionTokens: e.stats.generatedTokens,
          finishReason: e.finishReason,
          seconds: (performance.now() - t0) / 1000,
          meanEntropy: acc.n ? acc.h / acc.n : null,
          meanWeight: acc.n ? acc.w / acc.n : null,
          modeUsed: batch[e.row].mode,
        };
      }
    }
  }

  async close(): Promise<void> {}
}
