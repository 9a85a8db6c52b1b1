/**
 * What an evaluation task is: its problems (chat turns, an assistant prefix, the raw text for a
 * model without a chat template, the answer) and how a completion is judged, either by a scorer
 * (Countdown, AIME, GPQA, JSONL) or by running it (LiveCodeBench, in the sandbox).
 */
import type { ChatMessage } from '@moi/engine';
import type { Sandbox } from './sandbox.ts';
import type { Verdict } from './scorers.ts';

export interface Problem {
  index: number;
  /** the chat turns (without the assistant prefix) */
  messages: ChatMessage[];
  /** text the assistant's turn starts with (after the generation prompt) */
  assistantPrefix: string;
  /** the whole prompt for a model without a chat template */
  raw: string;
  answer: unknown;
  /** what else results.jsonl records of the problem (GPQA's option order, LiveCodeBench's platform and date) */
  meta?: Record<string, unknown>;
}

export type TaskKind = 'countdown' | 'aime' | 'gpqa' | 'jsonl';

/** A task whose completions a scorer judges from their text. */
export interface Task {
  kind: TaskKind;
  /** the task as given (countdown:gen, aime, jsonl:file.jsonl, ...) */
  spec: string;
  source: string;
  problems: Problem[];
  score(completion: string, answer: unknown): Verdict;
}

/** A task whose completions are programs, judged by running them on tests. */
export interface CodeTask {
  kind: 'livecodebench';
  spec: string;
  source: string;
  problems: Problem[];
  /** the release read (null: a single file, read whole) */
  release: string | null;
  sandbox: Sandbox;
  execute(completion: string, problem: Problem, signal?: AbortSignal): Promise<Verdict>;
}

export type EvalTask = Task | CodeTask;
