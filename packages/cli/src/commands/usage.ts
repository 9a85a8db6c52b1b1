/**
 * How moi-gen talks to a person about usage: one error prefix, warnings for flags that are
 * capped or have no effect, messages that name the flags typed (not internal field names), a
 * "did you mean" for a mistyped subcommand, the familiar aliases other tools use, and the
 * interrupted state behind exit code 130.
 */
import { MoiError, UsageError } from '@moi/core/errors';

export const PREFIX = 'moi-gen:';

/** `moi-gen: warning: …` on stderr. */
export function warn(message: string): void {
  process.stderr.write(`${PREFIX} warning: ${message}\n`);
}

/** Set when SIGINT stopped a command that handles it itself; main then exits 130. */
export const interruption = { happened: false };

/** The exit code of a failure that a command reported and went on from (a chat turn); 0 = none. */
export const deferred = { code: 0 };

/** What a command holds until it ends (the loaded engine): released by main when it returns. */
const held: (() => void)[] = [];

/** Have `release` run when the command ends (main runs it, whatever the outcome). */
export function atEnd(release: () => void): void {
  held.push(release);
}

/** Run (and forget) everything registered with atEnd, last first. */
export function releaseAtEnd(): void {
  for (const release of held.splice(0).reverse()) release();
}

/** Exit code of an error: 2 for bad usage, 1 for anything else that failed. */
export function exitCodeOf(err: MoiError): number {
  return err instanceof UsageError ? 2 : 1;
}

/** `moi-gen: error: …` on stderr. */
export function printError(err: MoiError): void {
  process.stderr.write(`${PREFIX} error: ${withHints(flagError(err)).message}\n`);
}

/** A failure the command goes on from (one chat turn): printed now, the exit code kept for the end. */
export function reportTurnError(err: MoiError): void {
  printError(err);
  if (!deferred.code) deferred.code = exitCodeOf(err);
}

/** Adds what the person can do about some errors. */
function withHints(err: MoiError): MoiError {
  if (err.code === 'E_NO_CHAT_TEMPLATE' && !err.message.includes('--chat-template')) {
    const Cls = err.constructor as new (code: string, message: string, opts?: { cause?: unknown }) => MoiError;
    return new Cls(err.code, `${err.message}; pass a Jinja template with --chat-template FILE`, { cause: err });
  }
  return err;
}

// ---- internal names → the flags a person typed

/**
 * The CLI flag of a request path (`sampling.topP` → `--top-p`): the settings table's, registered
 * by options.ts (which the commands with settings load), so that this file loads no engine.
 */
let flagOfPath: (path: string) => string | undefined = () => undefined;
export function registerFlagNames(lookup: (path: string) => string | undefined): void {
  flagOfPath = lookup;
}

/** Rewrites a validation message from the engine so it names CLI flags. */
export function withFlagNames(message: string): string {
  return message
    .replace(/\bsampling\.(\w+)/g, (m: string) => flagOfPath(m) ?? m)
    .replace(/^moi: /, '')
    .replace(/\boption topK\b/g, '--mix-topk')
    .replace(/\boption beta\b/g, '--beta')
    .replace(/\bunknown mode\b/g, 'unknown --mode')
    .replace(/\bunknown prior\b/g, 'unknown --mix-prior')
    .replace(/\bmax tokens\b/g, '--max-tokens');
}

/** A MoiError of the same class and code with the message's internal names replaced by flags. */
export function flagError(err: MoiError): MoiError {
  const message = withFlagNames(err.message);
  if (message === err.message) return err;
  const Cls = err.constructor as new (code: string, message: string, opts?: { cause?: unknown }) => MoiError;
  return new Cls(err.code, message, { cause: err });
}

// ---- "did you mean"

/** Optimal-string-alignment distance: edits, with a swap of neighbours counted as one. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/**
 * The subcommand a word was probably meant to be, or null: a single lowercase word, not a
 * command itself, within one edit of a short command name (two of a longer one; at most
 * `maxEdits` when given).
 */
export function mistypedCommand(word: string, names: string[], maxEdits = Infinity): string | null {
  if (!/^[a-z][a-z-]{1,15}$/.test(word) || names.includes(word)) return null;
  let best: { name: string; d: number } | null = null;
  for (const name of names) {
    const d = editDistance(word, name);
    if (d <= Math.min(maxEdits, name.length <= 4 ? 1 : 2) && (!best || d < best.d)) best = { name, d };
  }
  return best?.name ?? null;
}

/** The usage error for a word that looks like a mistyped subcommand. */
export function mistypedCommandError(word: string, name: string): UsageError {
  return new UsageError(
    'E_USAGE',
    `unknown command '${word}': did you mean '${name}'? ` +
      `(to generate from the word '${word}' as a prompt, write: moi-gen generate -p ${word} …)`,
  );
}

/**
 * The operands (non-option words) of `argv` for a command whose options are `valueFlags` (flags
 * that take a value) — enough to tell a prompt from a mistyped command before parsing.
 */
export function operands(argv: string[], valueFlags: Set<string>): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      out.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('-') && a.length > 1) {
      if (!a.includes('=') && valueFlags.has(a)) i++;
      continue;
    }
    out.push(a);
  }
  return out;
}
