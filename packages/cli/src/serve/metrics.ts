/**
 * GET /metrics: Prometheus text through prom-client, named like vLLM's with a `moi:` prefix.
 * Gauges read the scheduler when scraped; counters and histograms are fed per request.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Scheduler } from '@moi/engine';

export interface ServerMetrics {
  registry: Registry;
  ttft: Histogram;
  tpot: Histogram;
  e2e: Histogram;
  requestSuccess: Counter<'finished_reason'>;
}

export function makeMetrics(scheduler: Scheduler, modelName: string): ServerMetrics {
  const registry = new Registry();
  registry.setDefaultLabels({ model_name: modelName });
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read());
      },
    });
  gauge(
    'moi:num_requests_running',
    'Requests holding a row (prefilling or decoding).',
    () => scheduler.stats().running,
  );
  gauge('moi:num_requests_waiting', 'Requests waiting for a row.', () => scheduler.stats().waiting);
  gauge('moi:num_free_seqs', 'Rows of the KV cache free now.', () => scheduler.stats().freeSlots);
  gauge('moi:max_num_seqs', 'Rows of the KV cache (--max-seqs).', () => scheduler.maxSeqs);
  gauge('moi:kv_cache_bytes', 'Bytes of the KV cache with every row full.', () => scheduler.kvBytes);
  // monotonic totals kept by the scheduler: exposed as counters whose value is read at scrape
  const counter = (name: string, help: string, read: () => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  counter('moi:prompt_tokens_total', 'Prompt tokens of admitted requests.', () => scheduler.stats().promptTokens);
  counter('moi:generation_tokens_total', 'Tokens generated.', () => scheduler.stats().generationTokens);
  counter(
    'moi:cached_prompt_tokens_total',
    'Prompt tokens served from the prompt cache (not prefilled).',
    () => scheduler.stats().cachedPromptTokens,
  );
  const requestSuccess = new Counter({
    name: 'moi:request_success_total',
    help: 'Finished requests by finish reason.',
    labelNames: ['finished_reason'] as const,
    registers: [registry],
  });
  const ttft = new Histogram({
    name: 'moi:time_to_first_token_seconds',
    help: 'Time to first token.',
    registers: [registry],
    buckets: [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80],
  });
  const tpot = new Histogram({
    name: 'moi:time_per_output_token_seconds',
    help: 'Time per output token (after the first).',
    registers: [registry],
    buckets: [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 10],
  });
  const e2e = new Histogram({
    name: 'moi:e2e_request_latency_seconds',
    help: 'End-to-end request latency.',
    registers: [registry],
    buckets: [0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240],
  });
  return { registry, ttft, tpot, e2e, requestSuccess };
}
