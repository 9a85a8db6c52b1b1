/**
 * moi-gen: generate text from Hugging Face safetensors models on TensorFlow.js, with Mixture of
 * Inputs decoding. Subcommands: generate (default), chat, score, bench, synth.
 *
 * Exit codes: 0 ok, 1 runtime failure (bad model file, ...), 2 bad usage (flags, values).
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { MoiError, UsageError } from '@moi/core';
import { generateCommand } from './commands/generate.ts';
import { scoreCommand } from './commands/score.ts';
import { benchCommand } from './commands/bench.ts';
import { extraCommands } from './commands/extra.ts';
import { synthCommand } from './commands/synth.ts';
import { evalCommand } from './commands/eval.ts';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

export function program(): Command {
  const p = new Command('moi-gen')
    .description('Run Llama, Qwen and Gemma safetensors models on TensorFlow.js, with Mixture of Inputs decoding')
    .version(pkg.version, '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  p.addCommand(generateCommand(), { isDefault: true });
  p.addCommand(scoreCommand());
  for (const c of extraCommands()) p.addCommand(c);
  p.addCommand(benchCommand());
  p.addCommand(synthCommand());
  p.addCommand(evalCommand());
  for (const c of p.commands) c.exitOverride().showHelpAfterError('(run with --help for usage)');
  return p;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version end here with exit code 0; usage errors were already printed
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof MoiError) {
      process.stderr.write(`moi-gen: error: ${err.message}\n`);
      return err instanceof UsageError ? 2 : 1;
    }
    const e = err as Error;
    process.stderr.write(`moi-gen: internal error: ${e?.stack ?? String(err)}\n`);
    return 1;
  }
}

// Run when executed directly (not when imported by tests).
if (process.argv[1] && /bin\.ts$|moi-gen(\.js)?$/.test(process.argv[1])) {
  const code = await main(process.argv.slice(2));
  // Exit explicitly: the wasm runtime keeps handles open, and its uncaught-exception hook would
  // print its whole source on a stray error.
  process.stdout.write('', () => process.exit(code));
}
