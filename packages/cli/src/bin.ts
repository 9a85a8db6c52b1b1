/**
 * moi-gen: generate text from Hugging Face safetensors models on TensorFlow.js, with Mixture of
 * Inputs decoding. Subcommands: generate (default), score, chat, bench, synth, eval, serve.
 *
 * Exit codes, for every subcommand: 0 ok, 1 runtime failure (bad model file, download, ...),
 * 2 bad usage (flags, values, a prompt too long for the context), 130 interrupted (SIGINT).
 * Every message starts with `moi-gen: error:` (or `moi-gen: warning:`). A closed stdout (a
 * reader such as `head -1` that has seen enough) ends the process quietly with 0.
 *
 * Start-up: the subcommands are listed in COMMANDS by name and summary, and only the one a
 * command line runs is imported; the others stay placeholders that the top-level help lists.
 * `moi-gen --help` thus loads neither tfjs nor the server. A new subcommand is one line there.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Command, CommanderError, Help } from 'commander';
import { MoiError } from '@moi/core/errors';
import {
  deferred,
  exitCodeOf,
  interruption,
  mistypedCommand,
  mistypedCommandError,
  operands,
  PREFIX,
  printError,
  releaseAtEnd,
} from './commands/usage.ts';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

const HELP_HINT = '(run with --help for usage)';

// ---- the subcommands

export interface CommandEntry {
  name: string;
  /** what follows the name in the top-level help (a test holds it to the loaded command's) */
  usage: string;
  /** the one-line summary in the top-level help (a test holds it to the command's description) */
  summary: string;
  /** imports the command's module and builds the command */
  load: () => Promise<Command>;
}

const entry = (name: string, usage: string, summary: string, load: () => Promise<Command>): CommandEntry => ({
  name,
  usage,
  summary,
  load,
});

/** Every subcommand, in the order of the help; the first is the default. */
export const COMMANDS: readonly CommandEntry[] = [
  entry(
    'generate',
    '[options] [prompt...]',
    'generate text from a prompt (standard decoding or Mixture of Inputs)',
    async () => (await import('./commands/generate.ts')).generateCommand(),
  ),
  entry(
    'score',
    '[options] [prompt...]',
    'print the next-token logits at every position of a prompt (no cache, one forward)',
    async () => (await import('./commands/score.ts')).scoreCommand(),
  ),
  entry(
    'chat',
    '[options]',
    'chat with a model in its chat template (multi-turn, one KV cache: each turn prefills only its new tokens)',
    async () => (await import('./commands/chat.ts')).chatCommand(),
  ),
  entry(
    'bench',
    '[options]',
    'measure load, prefill and decode speed (standard, moi, direct, batched) against a measured memory-bandwidth roofline',
    async () => (await import('./commands/bench.ts')).benchCommand(),
  ),
  entry(
    'synth',
    '[options]',
    'write a model folder (config.json + model.safetensors) of a real shape with deterministic random weights',
    async () => (await import('./commands/synth.ts')).synthCommand(),
  ),
  entry(
    'eval',
    '[options]',
    'paired evaluation of decoding modes (Countdown, AIME, GPQA, LiveCodeBench, JSONL) with statistics, resume and an HTML report',
    async () => (await import('./commands/eval.ts')).evalCommand(),
  ),
  entry(
    'serve',
    '[options]',
    'serve the model over an OpenAI-compatible HTTP API (as vLLM does), with MoI per request (moi_mode, moi_beta, ...)',
    async () => (await import('./commands/serve.ts')).serveCommand(),
  ),
  entry(
    'doctor',
    '[options]',
    'check this machine: which backends start (GPU adapter and limits, wasm SIMD, tfjs-node), then the chosen backend against cpu on a small random model',
    async () => (await import('./commands/doctor.ts')).doctorCommand(),
  ),
];

const DEFAULT_COMMAND = COMMANDS[0].name;

/** Commander dispatched to a subcommand that was not loaded: main loads it and parses again. */
class NotLoaded extends Error {
  constructor(readonly command: string) {
    super(`moi-gen: the ${command} command was not loaded`);
  }
}

/**
 * The subcommand a command line runs, by commander's rules: the first operand when it names one
 * (`help NAME` shows NAME's help), else the default command, except for the top-level help and
 * version. Only a guess that saves loading the rest: a wrong one is corrected through NotLoaded.
 */
export function commandFor(argv: string[]): string | null {
  const names = COMMANDS.map((c) => c.name);
  const ops = argv[0] === '--' ? argv.slice(1) : argv;
  if (ops[0] === 'help') return names.includes(ops[1]) ? ops[1] : null;
  if (names.includes(ops[0])) return ops[0];
  if (argv[0] === '-V' || argv[0] === '--version') return null;
  if (argv.includes('-h') || argv.includes('--help')) return null; // the top-level help
  return DEFAULT_COMMAND;
}

/** The program with the commands in `load` built for real and the others as placeholders. */
export async function program(load: ReadonlySet<string>): Promise<Command> {
  const p = new Command('moi-gen')
    .description('Run Llama, Qwen and Gemma safetensors models on TensorFlow.js, with Mixture of Inputs decoding')
    .version(pkg.version, '-V, --version')
    .showHelpAfterError(HELP_HINT)
    .exitOverride();
  const built = await Promise.all(COMMANDS.map((c) => (load.has(c.name) ? c.load() : Promise.resolve(null))));
  const placeholders = new Set<Command>();
  COMMANDS.forEach((c, i) => {
    let cmd = built[i];
    if (!cmd) {
      cmd = new Command(c.name).description(c.summary).helpOption(false).allowUnknownOption().allowExcessArguments();
      placeholders.add(cmd);
    }
    p.addCommand(cmd, { isDefault: c.name === DEFAULT_COMMAND });
  });
  p.hook('preSubcommand', (_p, sub) => {
    if (placeholders.has(sub)) throw new NotLoaded(sub.name());
  });
  // the top-level help lists each command as its own help would (options and arguments)
  const usage = new Map(COMMANDS.map((c) => [c.name, c.usage]));
  p.configureHelp({
    subcommandTerm(this: Help, cmd: Command) {
      const u = usage.get(cmd.name());
      return u ? `${cmd.name()} ${u}` : Help.prototype.subcommandTerm.call(this, cmd);
    },
  });
  // commander's own messages ("error: unknown option ...") get moi-gen's one prefix
  const output = {
    outputError: (str: string, write: (s: string) => void) => write(str.replace(/^error:/, `${PREFIX} error:`)),
  };
  p.configureOutput(output);
  for (const c of p.commands) c.exitOverride().showHelpAfterError(HELP_HINT).configureOutput(output);
  return p;
}

// ---- mistyped subcommands

/** True for a flag `generate` does not take (`--task` on `moi-gen evl --task …`). */
function unknownFlag(arg: string, flags: Set<string>): boolean {
  if (!arg.startsWith('-') || arg === '-' || arg === '--' || /^-\d/.test(arg)) return false;
  const name = arg.startsWith('--') ? arg.split('=')[0] : arg.slice(0, 2);
  return !flags.has(name);
}

/**
 * A word that is not a subcommand but looks like one is refused rather than generated from:
 * - the default command's only operand, a single word close to a name (`chatt`, `bnech`);
 * - the first word of the command line (the subcommand's place), when it is one edit from a
 *   name of five letters or more (`genrate --model M hello`), or close to a name and followed by
 *   a flag that generate does not take (`evl --model M --task countdown:gen`).
 * A prompt whose first word merely resembles a short name (`what is …` and `chat`) still generates.
 */
function checkMistypedCommand(p: Command, argv: string[]): void {
  const generate = p.commands.find((c) => c.name() === DEFAULT_COMMAND)!;
  const names = p.commands.flatMap((c) => [c.name(), ...c.aliases()]).concat('help');
  const flags = new Set(
    generate.options
      .flatMap((o) => [o.long, o.short])
      .filter((f): f is string => Boolean(f))
      .concat('-h', '--help'),
  );
  const valueFlags = new Set(
    generate.options
      .filter((o) => o.required || o.optional)
      .flatMap((o) => [o.long, o.short])
      .filter((f): f is string => Boolean(f)),
  );
  const words = operands(argv, valueFlags);
  if (words.length === 1 && !argv.includes('--')) {
    const meant = mistypedCommand(words[0], names);
    if (meant) throw mistypedCommandError(words[0], meant);
  }
  const first = argv[0] ?? '';
  const meant = mistypedCommand(first, names);
  if (!meant) return;
  const oneEditFromLong = meant.length >= 5 && mistypedCommand(first, names, 1) === meant;
  if (oneEditFromLong || argv.slice(1).some((a) => unknownFlag(a, flags))) throw mistypedCommandError(first, meant);
}

// ---- running a command line

/**
 * Run one command line (the arguments after `moi-gen`) and return its exit code. Output goes to
 * process.stdout/stderr; what a command loaded (the engine) is released before it returns, so
 * tests can call it in-process, one command line at a time.
 */
export async function main(argv: string[]): Promise<number> {
  interruption.happened = false;
  deferred.code = 0;
  try {
    const load = new Set<string>();
    const first = commandFor(argv);
    if (first) load.add(first);
    for (;;) {
      const p = await program(load);
      if (load.has(DEFAULT_COMMAND)) checkMistypedCommand(p, argv);
      try {
        await p.parseAsync(argv, { from: 'user' });
      } catch (err) {
        if (err instanceof NotLoaded && !load.has(err.command)) {
          load.add(err.command);
          continue;
        }
        throw err;
      }
      return interruption.happened ? 130 : deferred.code;
    }
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
  } finally {
    releaseAtEnd();
  }
}

/** Exit now with `code`, once stdout has been handed what was written. */
function exitAfterFlush(code: number): void {
  process.stdout.write('', () => process.exit(code));
}

/** The process around main: the binary (packages/cli/bin/moi-gen.js) calls this. */
export async function cli(argv: string[]): Promise<void> {
  // A reader that closed stdout has seen enough: stop quietly (without a listener the error
  // would reach the wasm runtime's uncaught-exception hook, which prints its whole source).
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    process.exit(err.code === 'EPIPE' ? 0 : 1);
  });
  process.stderr.on('error', () => {});
  // SIGINT: generate and chat stop cleanly on it (their own handlers, then exit 130); the other
  // commands keep Node's default, death by the signal, which a shell reports as 130 too.
  const code = await main(argv);
  // Exit explicitly: the wasm runtime keeps handles open, and its uncaught-exception hook would
  // print its whole source on a stray error.
  exitAfterFlush(code);
}

// Run when executed directly (`tsx packages/cli/src/bin.ts …`), not when imported.
function runDirectly(): boolean {
  try {
    return Boolean(process.argv[1]) && pathToFileURL(realpathSync(process.argv[1])).href === import.meta.url;
  } catch {
    return false;
  }
}
if (runDirectly()) await cli(process.argv.slice(2));
