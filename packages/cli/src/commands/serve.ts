/**
 * `moi-gen serve`: an OpenAI-compatible server (as vLLM serves one) over the continuous-batching
 * scheduler, with MoI chosen per request. Binds 127.0.0.1 by default. SIGINT/SIGTERM stop
 * accepting, end running streams with finish reason 'abort', and exit 0.
 */
import { Command } from 'commander';
import { UsageError } from '@moi/core';
import { estimateHeap } from '@moi/models';
import { resolveMixSettings, type MixOptions } from '@moi/moi';
import { requestFromSettings, settingsOf } from '@moi/engine';
import { DEFAULT_MAX_LIST_ITEMS, DEFAULT_MAX_PROMPT_CHARS } from '../serve/limits.ts';
import { loadEngine, type ModelFlags } from './load.ts';
import { readUserFile } from './generate.ts';
import { addModelOptions, addSettingOptions, dtypeLabel, int, settingFlags } from './options.ts';

interface ServeFlags extends ModelFlags {
  host: string;
  port: number;
  maxSeqs: number;
  maxModelLen?: number;
  maxWaiting: number;
  apiKey?: string;
  servedModelName?: string;
  chatTemplate?: string;
  prefillChunk: number;
  maxPromptChars: number;
  maxListItems: number;
}

/** The MoI settings a request does not give: serve's flags (the settings table's MoI flags). */
const MOI_SETTINGS = settingsOf('moi');

const MB = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

async function run(o: ServeFlags, cmd: Command): Promise<void> {
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535)
    throw new UsageError('E_USAGE', `--port must be 0..65535, got ${o.port}`);
  if (!Number.isInteger(o.maxSeqs) || o.maxSeqs < 1 || o.maxSeqs > 256)
    throw new UsageError('E_USAGE', `--max-seqs must be 1..256, got ${o.maxSeqs}`);
  if (!Number.isInteger(o.maxWaiting) || o.maxWaiting < 0)
    throw new UsageError('E_USAGE', `--max-waiting must be a non-negative integer, got ${o.maxWaiting}`);
  if (!Number.isInteger(o.maxPromptChars) || o.maxPromptChars < 1)
    throw new UsageError('E_USAGE', `--max-prompt-chars must be a positive integer, got ${o.maxPromptChars}`);
  if (!Number.isInteger(o.maxListItems) || o.maxListItems < 1)
    throw new UsageError('E_USAGE', `--max-list-items must be a positive integer, got ${o.maxListItems}`);
  const mix: MixOptions = {
    defaultMode: 'standard',
    ...requestFromSettings(settingFlags(o, cmd, MOI_SETTINGS).values).mix,
  };
  resolveMixSettings(mix, process.env); // bad defaults fail before the load
  const chatTemplate = o.chatTemplate !== undefined ? readUserFile('--chat-template', o.chatTemplate) : undefined;
  // loaded here, so that the other commands do not pay for fastify, zod and prom-client at start-up
  const { Scheduler } = await import('@moi/engine');
  const { buildServer } = await import('../serve/server.ts');
  const { WASM_HEAP_LIMIT } = await import('../bench/heap.ts');
  const { engine } = await loadEngine({ ...o, quiet: true }, true);
  const spec = engine.spec;
  const maxModelLen = o.maxModelLen ?? Math.min(spec.maxPositionEmbeddings, 2048);
  if (!Number.isInteger(maxModelLen) || maxModelLen < 2 || maxModelLen > spec.maxPositionEmbeddings) {
    engine.dispose();
    throw new UsageError(
      'E_USAGE',
      `--max-model-len must be 2..${spec.maxPositionEmbeddings} (max_position_embeddings), got ${maxModelLen}`,
    );
  }
  const kvBytes = Scheduler.kvBytesFor(spec, o.maxSeqs, maxModelLen);
  // the bytes the weights hold in memory (at --dtype), not the checkpoint's; on wasm as the
  // loader counts them (a tied f32 head also has XNNPACK's packed copy)
  const wasm = engine.backend.name === 'wasm';
  const weights = wasm
    ? Math.max(engine.loaded.weightBytes, estimateHeap(spec, engine.loaded.dtype).weights)
    : engine.loaded.weightBytes;
  if (wasm && weights + kvBytes > WASM_HEAP_LIMIT) {
    engine.dispose();
    throw new UsageError(
      'E_USAGE',
      `the KV cache for --max-seqs ${o.maxSeqs} × --max-model-len ${maxModelLen} takes ${MB(kvBytes)}; with the ` +
        `${MB(weights)} of ${engine.loaded.dtype} weights it does not fit the wasm heap (${MB(WASM_HEAP_LIMIT)} of its 4 GiB); lower --max-seqs or --max-model-len${engine.loaded.dtype === 'q8' ? '' : ', or use --dtype q8'}`,
    );
  }
  const scheduler = new Scheduler(engine, {
    maxSeqs: o.maxSeqs,
    maxModelLen,
    maxWaiting: o.maxWaiting,
    prefillChunk: o.prefillChunk,
  });
  const modelName = o.servedModelName ?? o.model;
  const { app } = buildServer(engine, scheduler, {
    modelName,
    apiKey: o.apiKey,
    chatTemplate,
    mix,
    maxPromptChars: o.maxPromptChars,
    maxListItems: o.maxListItems,
  });
  const address = await app.listen({ host: o.host, port: o.port });
  const defaults = resolveMixSettings(mix, process.env);
  // the signal handlers first: a client that reads the start-up line may signal at once
  const stopped = new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      process.stderr.write(`moi-gen serve: ${signal}: stopping (running requests end with finish reason 'abort')\n`);
      const closing = app.close(); // stops accepting; resolves when open requests are done
      void scheduler
        .close()
        .then(() => closing)
        .finally(() => {
          engine.dispose();
          resolve();
        });
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  process.stderr.write(
    `moi-gen serve: ${modelName} (${spec.modelType}, ${engine.backend.name}, weights ${dtypeLabel(engine.loaded)}) on ${address} · ${engine.threads.note} · max-seqs ${o.maxSeqs} · ` +
      `max-model-len ${maxModelLen} · KV cache ≤ ${MB(kvBytes)} + weights ${MB(weights)} · default mixing ${defaults.mode}` +
      `${defaults.mode === 'moi' ? ` β ${defaults.beta}` : ''}${o.apiKey ? ' · API key required' : ''}\n`,
  );

  await stopped;
}

export function serveCommand(): Command {
  const cmd = addModelOptions(new Command('serve'))
    .description(
      'serve the model over an OpenAI-compatible HTTP API (as vLLM does), with MoI per request (moi_mode, moi_beta, ...)',
    )
    .option('--host <addr>', 'address to bind', '127.0.0.1')
    .option('--port <n>', 'port (0 = any free port)', int('--port'), 8000)
    .option('--max-seqs <n>', 'requests decoded together (KV-cache rows)', int('--max-seqs'), 8)
    .option(
      '--max-model-len <n>',
      'most tokens per request, prompt + completion (default min(max_position_embeddings, 2048))',
      int('--max-model-len'),
    )
    .option('--max-waiting <n>', 'requests waiting for a row at most; past it 429', int('--max-waiting'), 256)
    .option('--api-key <key>', 'require "Authorization: Bearer <key>" on every route but /health and /metrics')
    .option('--served-model-name <name>', 'the model name clients use (default: --model as given)')
    .option('--chat-template <file>', "a Jinja chat template to use instead of the tokenizer's")
    .option(
      '--prefill-chunk <n>',
      'prompt tokens per prefill forward (decode steps run between chunks)',
      int('--prefill-chunk'),
      64,
    )
    .option(
      '--max-prompt-chars <n>',
      "most characters of a request's prompt text (all prompts, or all messages), refused with a 400 before tokenizing",
      int('--max-prompt-chars'),
      DEFAULT_MAX_PROMPT_CHARS,
    )
    .option(
      '--max-list-items <n>',
      "most items of a request's lists (prompts, messages, content parts), refused with a 400 before parsing them",
      int('--max-list-items'),
      DEFAULT_MAX_LIST_ITEMS,
    );
  // the mixing of requests that do not choose their own (moi_mode, moi_beta, ...)
  return addSettingOptions(cmd, MOI_SETTINGS, { helpPrefix: 'default for requests: ' }).action(
    (o: ServeFlags, c: Command) => run(o, c),
  );
}
