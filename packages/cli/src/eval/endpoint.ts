/**
 * A Completer over any OpenAI-compatible server (ours, or `vllm serve` with the mixinputs patch),
 * through the official `openai` client, `maxSeqs` requests in flight.
 *
 * - With a local tokenizer the prompt is rendered and encoded here (chat template + assistant
 *   prefix, as the reference does) and its token ids are sent to /v1/completions: the server
 *   runs exactly the tokens an in-process run would (text would be encoded again there, with a
 *   second BOS where the template wrote one); a server that reports another prompt length is an
 *   error. Without a local tokenizer, the messages go to
 *   /v1/chat/completions, the assistant prefix as a final assistant message continued
 *   (vLLM's `continue_final_message`).
 * - The settings go as the server's fields of @moi/engine's settings table (the sampling fields,
 *   max tokens, `moi_mode`, `moi_beta`, `moi_topk` and Soft Thinking's), named as the server's
 *   schema names them. A server that says which mixing ran (a `moi` object in the response) is
 *   taken at its word; one that does not cannot honour a mode per request, and the result records
 *   the mode as `server`.
 */
import OpenAI from 'openai';
import { MoiError } from '@moi/core';
import { fieldsFromSettings, settingsFromRequest, type Endpoint } from '@moi/engine';
import type { Completer, CompletionRequest, CompletionResult } from './completer.ts';

/** A completion request's settings as a server's request fields. */
export function requestFields(r: CompletionRequest, endpoint: Endpoint): Record<string, unknown> {
  const mix = { mode: r.mode, beta: r.beta, topK: r.mixTopK, soft: r.soft };
  return fieldsFromSettings(settingsFromRequest({ sampling: r.sampling, mix, maxTokens: r.maxTokens }), endpoint);
}

interface MoiInfo {
  mode?: string;
  mean_entropy?: number;
  mean_weight?: number;
}

export class EndpointCompleter implements Completer {
  private readonly client: OpenAI;
  constructor(
    readonly name: string,
    private readonly model: string,
    private readonly maxSeqs: number,
    apiKey?: string,
  ) {
    this.client = new OpenAI({
      baseURL: name.replace(/\/+$/, ''),
      apiKey: apiKey ?? process.env.OPENAI_API_KEY ?? 'none',
      maxRetries: 2,
    });
  }

  private async one(r: CompletionRequest, signal?: AbortSignal): Promise<CompletionResult> {
    const t0 = performance.now();
    try {
      if (r.rendered) {
        const body = { model: this.model, prompt: r.promptIds ?? r.promptText, ...requestFields(r, 'completions') };
        const res = await this.client.completions.create(body as OpenAI.CompletionCreateParamsNonStreaming, { signal });
        const moi = (res as unknown as { moi?: MoiInfo }).moi;
        const got = res.usage?.prompt_tokens;
        if (r.promptIds && got !== undefined && got !== r.promptIds.length) {
          throw new MoiError(
            'E_ENDPOINT_PROMPT',
            `${this.name}: request ${r.key}: the server ran a ${got}-token prompt, not the ${r.promptIds.length} tokens sent`,
          );
        }
        return this.result(r, res.choices[0]?.text ?? '', res.usage, res.choices[0]?.finish_reason ?? 'stop', t0, moi);
      }
      const messages = [
        ...r.messages,
        ...(r.assistantPrefix ? [{ role: 'assistant', content: r.assistantPrefix }] : []),
      ];
      const body = {
        model: this.model,
        messages,
        ...requestFields(r, 'chat'),
        ...(r.assistantPrefix ? { continue_final_message: true, add_generation_prompt: false } : {}),
      };
      const res = await this.client.chat.completions.create(body as OpenAI.ChatCompletionCreateParamsNonStreaming, {
        signal,
      });
      const moi = (res as unknown as { moi?: MoiInfo }).moi;
      return this.result(
        r,
        res.choices[0]?.message?.content ?? '',
        res.usage,
        res.choices[0]?.finish_reason ?? 'stop',
        t0,
        moi,
      );
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new MoiError('E_ENDPOINT', `${this.name}: request ${r.key} failed: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  private result(
    r: CompletionRequest,
    text: string,
    usage: { prompt_tokens: number; completion_tokens: number } | undefined,
    finish: string,
    t0: number,
    moi?: MoiInfo,
  ): CompletionResult {
    return {
      key: r.key,
      completion: text,
      promptTokens: usage?.prompt_tokens ?? 0,
      completionTokens: usage?.completion_tokens ?? 0,
      finishReason: finish,
      seconds: (performance.now() - t0) / 1000,
      meanEntropy: typeof moi?.mean_entropy === 'number' ? moi.mean_entropy : null,
      meanWeight: typeof moi?.mean_weight === 'number' ? moi.mean_weight : null,
      modeUsed: typeof moi?.mode === 'string' ? moi.mode : 'server',
    };
  }

  async *complete(requests: CompletionRequest[], signal?: AbortSignal): AsyncIterable<CompletionResult> {
    const done: CompletionResult[] = [];
    let failure: unknown = null;
    let wake: (() => void) | null = null;
    let next = 0;
    let inFlight = 0;
    const launch = () => {
      while (inFlight < this.maxSeqs && next < requests.length && !failure && !signal?.aborted) {
        const r = requests[next++];
        inFlight++;
        this.one(r, signal)
          .then(
            (res) => {
              done.push(res);
            },
            (err) => {
              failure ??= err;
            },
          )
          .finally(() => {
            inFlight--;
            wake?.();
          });
      }
    };
    launch();
    while (inFlight > 0 || done.length) {
      if (!done.length)
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      wake = null;
      while (done.length) yield done.shift()!;
      if (failure) {
        if (signal?.aborted) return;
        throw failure;
      }
      launch();
    }
    if (failure && !signal?.aborted) throw failure;
  }

  async close(): Promise<void> {}
}
