import { existsSync, statSync, type Stats } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Root of this repository (packages/core/src/../../..). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/**
 * The read-only shared/ folder with fixtures and tokenizers: $MOI_SHARED, else ../shared beside
 * the repository. Returns null where it is absent, so tests can skip with a clear message.
 */
export function sharedDir(): string | null {
  const dir = process.env.MOI_SHARED ? path.resolve(process.env.MOI_SHARED) : path.resolve(repoRoot, '../shared');
  return existsSync(path.join(dir, 'fixtures')) ? dir : null;
}

/** Message used by tests that skip because shared/ is missing. */
export const SHARED_MISSING = 'shared/ not found: set MOI_SHARED or place it at ../shared (skipping)';

/** In a mocha hook or test: the shared/ folder, or skip (with SHARED_MISSING) where it is absent. */
export function requireShared(ctx: { skip(): void }): string {
  const dir = sharedDir();
  if (!dir) {
    console.log(SHARED_MISSING);
    ctx.skip();
  }
  return dir!;
}

/**
 * Why `file` cannot be read as a regular file, or null when it can: stat before open, so a
 * directory, FIFO (whose open would block forever), socket or device named like a model file
 * gets a clear error instead of EISDIR or a hang. Symlinks are followed.
 */
export function notRegularFile(file: string): string | null {
  let st: Stats;
  try {
    st = statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? (e as Error).message})`;
  }
  if (st.isFile()) return null;
  const kind = st.isDirectory()
    ? 'a directory'
    : st.isFIFO()
      ? 'a FIFO (named pipe)'
      : st.isSocket()
        ? 'a socket'
        : st.isCharacterDevice() || st.isBlockDevice()
          ? 'a device'
          : 'not a regular file';
  return `is ${kind}, not a regular file`;
}
