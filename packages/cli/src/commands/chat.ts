/**
 * `moi-gen chat`: a multi-turn conversation in the model's chat template over one KV cache, so
 * each turn prefills only its new tokens.
 *
 * At a terminal: a `> ` prompt, replies streamed as they come; /reset, /exit, /help; Ctrl-C
 * stops the reply being generated (the session goes on), Ctrl-C at the prompt or Ctrl-D exits.
 * Piped (stdin not a terminal): one user message per line, each reply printed followed by a
 * blank line, so a conversation can be scripted.
 */
import readline from 'node:readline';
import { Command, Option } from 'commander';
import { MoiError, UsageError } from '@moi/core';
import { ChatSession, DEFAULT_MAX_CONTEXT, type TurnStats } from '@moi/engine';
import type { DoneEvent } from '@moi/engine';
import { loadEngine, type ModelFlags } from './load.ts';
import { readUserFile } from './generate.ts';
import { requestFromSettings } from '@moi/engine';
import {
  addModelOptions,
  addSamplingOptions,
  alias,
  checkSamplingFlags,
  dtypeLabel,
  int,
  settingFlags,
} from './options.ts';
import { deferred, interruption, reportTurnError, warn } from './usage.ts';

interface ChatFlags extends ModelFlags {
  system?: string;
  systemPrompt?: string;
  maxContext: number;
  ctxSize?: number;
  chatTemplate?: string;
  stats?: boolean;
}

const HELP = [
  'Type a message and press Enter. Commands:',
  '  /reset   forget the conversation (the system prompt stays) and start over',
  '  /exit    leave (also exit, quit, /quit, Ctrl-D, or Ctrl-C at the prompt)',
  '  /help    this text',
  'Ctrl-C while a reply is being written stops that reply; the conversation goes on.',
].join('\n');

function statsLine(t: TurnStats, d: DoneEvent): string {
  const s = d.stats;
  return (
    `[turn ${t.promptTokens} tok: reused ${t.reusedTokens}, prefilled ${t.prefilledTokens} at ${s.prefillTokPerSec.toFixed(1)} tok/s | ` +
    `generated ${t.generatedTokens} at ${s.decodeTokPerSec.toFixed(1)} tok/s | finish: ${t.finishReason}]\n`
  );
}

async function run(o: ChatFlags, cmd: Command): Promise<void> {
  o.system = alias(o.system, o.systemPrompt, '--system', '--system-prompt');
  const typedContext = cmd.getOptionValueSource('maxContext') === 'cli';
  if (o.ctxSize !== undefined && typedContext && o.ctxSize !== o.maxContext) {
    throw new UsageError('E_USAGE', '--max-context and -c/--ctx-size (an alias) disagree: give one of them');
  }
  if (o.ctxSize !== undefined) o.maxContext = o.ctxSize;
  const flags = settingFlags(o, cmd);
  checkSamplingFlags(flags, { chat: true });
  if (!Number.isInteger(o.maxContext) || o.maxContext < 2)
    throw new UsageError('E_USAGE', `--max-context must be an integer ≥ 2, got ${o.maxContext}`);
  const chatTemplate = o.chatTemplate !== undefined ? readUserFile('--chat-template', o.chatTemplate) : undefined;
  const { engine, progress } = await loadEngine(o);
  const session = new ChatSession(engine, {
    system: o.system,
    maxContext: o.maxContext,
    chatTemplate,
    defaults: requestFromSettings(flags.values),
  });
  if ((o.ctxSize !== undefined || typedContext) && o.maxContext > engine.spec.maxPositionEmbeddings) {
    warn(
      `--max-context ${o.maxContext} is capped at ${engine.spec.maxPositionEmbeddings}, the model's context (max_position_embeddings)`,
    );
  }
  try {
    // the template must render a first exchange now, not fail at the first message
    session.render([...session.messages, { role: 'user', content: 'Hello' }]);
  } catch (e) {
    session.dispose();
    engine.dispose();
    throw e;
  }
  const tty = Boolean(process.stdin.isTTY && process.stdout.isTTY);
  const out = (s: string) => process.stdout.write(s);
  // notices go beside the replies at a terminal, and out of the way of a script's stdout
  const notice = (s: string) => (tty ? process.stdout : process.stderr).write(s + '\n');

  const rl = readline.createInterface({
    input: process.stdin,
    output: tty ? process.stdout : undefined,
    terminal: tty,
    prompt: '> ',
  });
  let generating: AbortController | null = null;
  /** a turn failed, then /reset: the next good turn clears the failure's exit code */
  let recovering = false;
  const interrupt = () => {
    if (generating) generating.abort();
    else {
      interruption.happened = true;
      rl.close();
    }
  };
  rl.on('SIGINT', interrupt); // Ctrl-C at a terminal (raw mode: no signal reaches the process)
  process.on('SIGINT', interrupt); // kill -INT, or Ctrl-C when piped

  async function turn(text: string): Promise<void> {
    generating = new AbortController();
    let done: DoneEvent | null = null;
    try {
      progress.begin();
      for await (const e of session.send(text, {
        signal: generating.signal,
        onPrefill: (p) => progress.prefill(p),
        prefillChunk: progress.prefillChunk,
      })) {
        if (e.type === 'token') {
          progress.stop();
          if (e.text) out(e.text);
        } else done = e;
      }
    } catch (e) {
      progress.stop();
      if (!(e instanceof MoiError)) throw e;
      // the session goes on; a script's run still ends with the failure's exit code, unless the
      // conversation is started over (/reset) and a turn then succeeds
      reportTurnError(e);
      recovering = false;
      return;
    } finally {
      generating = null;
    }
    out(tty ? '\n' : '\n\n');
    if (recovering) {
      deferred.code = 0; // recovered: /reset, then a good turn
      recovering = false;
    }
    if (done?.finishReason === 'abort') notice('(reply stopped)');
    else if (done?.finishReason === 'length' && session.cachedTokens + 1 >= session.capacity) {
      notice(`(the context of ${session.capacity} tokens is full: type /reset to start over)`);
    }
    if ((o.stats || o.verbose) && done) process.stderr.write(statsLine(session.turns[session.turns.length - 1], done));
  }

  try {
    if (o.stats || o.verbose)
      process.stderr.write(`[${engine.backend.name}, weights ${dtypeLabel(engine.loaded)}, ${engine.threads.note}]\n`);
    if (tty) {
      notice(`chatting with ${engine.dir} (${engine.backend.name}, ${engine.loaded.dtype}); /help for commands`);
      rl.prompt();
    }
    for await (const raw of rl) {
      const line = raw.trim();
      // "exit" and "quit" without the slash end the session too (as other chat REPLs do), rather than reaching the model
      if (line === '/exit' || line === '/quit' || line === 'exit' || line === 'quit') break;
      if (line === '/help') out(HELP + '\n');
      else if (line === '/reset') {
        session.reset();
        if (deferred.code) recovering = true;
        notice('(new conversation)');
      } else if (line.startsWith('/') && !line.includes(' ')) notice(`unknown command ${line} (/help lists them)`);
      else if (line) await turn(raw);
      if (tty) rl.prompt();
    }
    if (tty) out('\n');
  } finally {
    rl.off('SIGINT', interrupt);
    process.off('SIGINT', interrupt);
    rl.close();
    session.dispose();
    engine.dispose();
  }
}

export function chatCommand(): Command {
  const cmd = new Command('chat')
    .description(
      'chat with a model in its chat template (multi-turn, one KV cache: each turn prefills only its new tokens)',
    )
    .option('--system <text>', 'system prompt (kept across /reset); alias --system-prompt')
    .addOption(new Option('--system-prompt <text>', 'alias of --system').hideHelp())
    .option(
      '--max-context <n>',
      `most tokens the conversation may hold (capped by the model's context); alias -c, --ctx-size`,
      int('--max-context'),
      DEFAULT_MAX_CONTEXT,
    )
    .addOption(new Option('-c, --ctx-size <n>', 'alias of --max-context').argParser(int('--ctx-size')).hideHelp())
    .option('--chat-template <file>', "a Jinja chat template to use instead of the model's (e.g. for a base model)")
    .option('--stats', 'print the backend and weight dtype, then per-turn token counts and speed, to stderr');
  addModelOptions(cmd);
  addSamplingOptions(cmd);
  return cmd.action((o: ChatFlags, c: Command) => run(o, c));
}
