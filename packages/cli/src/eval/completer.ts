/**
 * How an evaluation gets completions: a Completer takes requests and yields results as they
 * finish, in any order. Two implementations: the in-process engine (here) and an OpenAI-compatible
 * server (endpoint.ts).
 */
import type { MixMode, SoftOptions } from '@moi/moi';
import type { SamplingParams } from '@moi/core';
import type { ChatMessage } from '@moi/engine';

export interface CompletionRequest {
  key: string;
  messages: ChatMessage[];
  assistantPrefix: string;
  /** the prompt text: chat template + prefix, or the raw prompt */
  promptText: string;
  /** whether promptText was rendered with the model's tokenizer (else it is the raw prompt) */
  rendered: boolean;
  /** its token ids, where a local tokenizer made them */
  promptIds?: number[];
  mode: MixMode;
  beta?: number;
  mixTopK?: number | 'all';
  /** mode soft: Soft Thinking's options */
  soft?: SoftOptions;
  sampling: Partial<SamplingParams>;
  maxTokens: number;
}

export interface CompletionResult {
  key: string;
  completion: string;
  promptTokens: number;
  completionTokens: number;
  finishReason: string;
  seconds: number;
  /** mean normalized entropy H over the steps (null where the server does not report it) */
  meanEntropy: number | null;
  /** mean weight of the next input on the sampled token */
  meanWeight: number | null;
  /** the mixing that really ran: the request's mode, or 'server' where the server could not honour it per request */
  modeUsed: string;
}

export interface Completer {
  /** a label for summaries: 'in-process' or the endpoint URL */
  readonly name: string;
  complete(requests: CompletionRequest[], signal?: AbortSignal): AsyncIterable<CompletionResult>;
  close(): Promise<void>;
}
