/**
 * moi-gen: generate text from Hugging Face safetensors models on TensorFlow.js, with Mixture of
 * Inputs decoding. Subcommands: generate (default), chat, score, bench, synth.
 *
 * Exit codes, for every subcommand: 0 ok, 1 runtime failure (bad model file, download, ...),
 * 2 bad usage (flags, values, a prompt too long for the context), 130 interrupted (SIGINT).
 * Every message starts with `moi-gen: error:` (or `moi-gen: warning:`). A closed stdout (a
 * reader such as `head -1` that has seen enough) ends the process quietly with 0.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { MoiError } from '@moi/core';
import { generateCommand } from './commands/generate.ts';
import { scoreCommand } from './commands/score.ts';
import { benchCommand } from './commands/bench.ts';
import { extraCommands } from './commands/extra.ts';
import { synthCommand } from './commands/synth.ts';
import { serveCommand } from './commands/serve.ts';
import {
  deferred, exitCodeOf, interruption, mistypedCommand, mistypedCommandError, operands, PREFIX, printError,
} from './commands/usage.ts';
import { evalCommand } from './commands/eval.ts';
import { doctorCommand } from './commands/doctor.ts';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

const HELP_HINT = '(run with --help for usage)';

export function program(): Command {
  const p = new Command('moi-gen')
    .description('Run Llama, Qwen and Gemma safetensors models on TensorFlow.js, with Mixture of Inputs decoding')
    .version(pkg.version, '-V, --version')
    .showHelpAfterError(HELP_HINT)
    .exitOverride();
  p.addCommand(generateCommand(), { isDefault: true });
  p.addCommand(scoreCommand());
  for (const c of extraCommands()) p.addCommand(c);
  p.addCommand(benchCommand());
  p.addCommand(synthCommand());
  p.addCommand(evalCommand());
  p.addCommand(serveCommand());
  p.addCommand(doctorCommand());
  // commander's own messages ("error: unknown option ...") get moi-gen's one prefix
  const output = { outputError: (str: string, write: (s: string) => void) => write(str.replace(/^error:/, `${PREFIX} error:`)) };
  p.configureOutput(output);
  for (const c of p.commands) c.exitOverride().showHelpAfterError(HELP_HINT).configureOutput(output);
  return p;
}

/**
 * A lone word that is not a subcommand but looks like one (`chatt`, `bnech`) is refused rather
 * than generated from: the default command's only operand, a single word close to a name.
 */
function checkMistypedCommand(p: Command, argv: string[]): void {
  const names = p.commands.flatMap((c) => [c.name(), ...c.aliases()]).concat('help');
  const generate = p.commands.find((c) => c.name() === 'generate')!;
  const valueFlags = new Set(generate.options.filter((o) => o.required || o.optional).flatMap((o) => [o.long, o.short]).filter((f): f is string => Boolean(f)));
  const words = operands(argv, valueFlags);
  if (words.length !== 1 || argv.includes('--')) return;
  const meant = mistypedCommand(words[0], names);
  if (meant) throw mistypedCommandError(words[0], meant);
}

export async function main(argv: string[]): Promise<number> {
  try {
    const p = program();
    checkMistypedCommand(p, argv);
    await p.parseAsync(argv, { from: 'user' });
    return interruption.happened ? 130 : deferred.code;
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version end here with exit code 0; usage errors were already printed
      return err.exitCode === 0 ? 0 : 2;
    }
    if (interruption.happened) return 130;
    if (err instanceof MoiError) {
      printError(err);
      return exitCodeOf(err);
    }
    const e = err as Error;
    process.stderr.write(`${PREFIX} internal error: ${e?.stack ?? String(err)}\n`);
    return 1;
  }
}

/** Exit now with `code`, once stdout has been handed what was written. */
function exitAfterFlush(code: number): void {
  process.stdout.write('', () => process.exit(code));
}

// Run when executed directly (not when imported by tests).
if (process.argv[1] && /bin\.ts$|moi-gen(\.js)?$/.test(process.argv[1])) {
  // A reader that closed stdout has seen enough: stop quietly (without a listener the error
  // would reach the wasm runtime's uncaught-exception hook, which prints its whole source).
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    process.exit(err.code === 'EPIPE' ? 0 : 1);
  });
  process.stderr.on('error', () => {});
  // SIGINT: generate and chat stop cleanly on it (their own handlers, then exit 130); the other
  // commands keep Node's default, death by the signal, which a shell reports as 130 too.
  const code = await main(process.argv.slice(2));
  // Exit explicitly: the wasm runtime keeps handles open, and its uncaught-exception hook would
  // print its whole source on a stray error.
  exitAfterFlush(code);
}
