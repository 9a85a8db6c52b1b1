/**
 * The server's tokenizing thread (worker_threads): loads the model's tokenizer once and encodes
 * prompts and chat conversations (template + tokenizer) sent by PromptEncoder (tokenize.ts), so
 * that a long prompt never holds the server's event loop. Errors go back as plain data (class
 * name, code, field, message) and are rebuilt as the same typed errors on the other side.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { MoiError } from '@moi/core';
import { loadTokenizer } from '@moi/engine';
import {
  encodeCompletionPrompt,
  encodeConversation,
  type EncodeJob,
  type EncodeReply,
  type EncoderSetup,
} from './tokenize.ts';

const setup = workerData as EncoderSetup;
const tok = loadTokenizer(setup.dir);

parentPort!.on('message', (job: EncodeJob) => {
  let reply: EncodeReply;
  try {
    const ids =
      job.kind === 'prompts'
        ? job.texts.map((t) => encodeCompletionPrompt(tok, t, job.addSpecialTokens))
        : [encodeConversation(tok, setup.template, job.messages, job)];
    reply = { id: job.id, ids };
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    reply = {
      id: job.id,
      error: {
        name: err.name,
        message: err.message,
        code: err instanceof MoiError ? err.code : undefined,
        field: err instanceof MoiError ? err.field : undefined,
      },
    };
  }
  parentPort!.postMessage(reply);
});
