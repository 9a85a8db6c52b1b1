/**
 * The Hugging Face hub cache, in the layout huggingface_hub uses, so models fetched by Python
 * tools are reused and ours are reused by them:
 *
 *   {cache}/models--{org}--{name}/refs/{revision}          holds the commit hash
 *   {cache}/models--{org}--{name}/blobs/{etag}             the file bytes
 *   {cache}/models--{org}--{name}/snapshots/{commit}/{f}   relative symlink to ../../blobs/{etag}
 *   {cache}/models--{org}--{name}/.no_exist/{commit}/{f}   empty marker: f is not in the repo
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SafetensorsError } from '@moi/core';

export const CONFIG_FILE = 'config.json';
export const WEIGHTS_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';

/** `~` or `~/x` to the home folder, as huggingface_hub's expanduser does. */
export function expandHome(p: string, env: NodeJS.ProcessEnv = process.env): string {
  if (p !== '~' && !p.startsWith('~/') && !p.startsWith('~\\')) return p;
  return path.join(env.HOME || os.homedir(), p.slice(1));
}

/** HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
export function hfHomeDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HOME) return expandHome(env.HF_HOME, env);
  const xdg = env.XDG_CACHE_HOME ? expandHome(env.XDG_CACHE_HOME, env) : path.join(env.HOME || os.homedir(), '.cache');
  return path.join(xdg, 'huggingface');
}

/** The hub cache root: cacheDir, else HF_HUB_CACHE (or its old name HUGGINGFACE_HUB_CACHE), else {HF_HOME}/hub. */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env, cacheDir?: string): string {
  const dir = cacheDir ?? env.HF_HUB_CACHE ?? env.HUGGINGFACE_HUB_CACHE;
  return dir ? expandHome(dir, env) : path.join(hfHomeDir(env), 'hub');
}

/** `org/name` -> `models--org--name`. */
export function repoFolderName(repoId: string): string {
  return ['models', ...repoId.split('/')].join('--');
}

/** A full 40-hex git commit hash (a revision that needs no ref lookup). */
export function isCommitHash(revision: string): boolean {
  return /^[0-9a-f]{40}$/.test(revision);
}

/** The hub's ETag as a blob name: without `W/` and quotes. */
export function normalizeEtag(etag: string): string {
  return etag
    .trim()
    .replace(/^W\//, '')
    .replace(/^"(.*)"$/, '$1');
}

/** A name safe to use as one path component (etag, commit): no separators, no leading dot. */
export function isSafeName(name: string): boolean {
  return /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(name);
}

/** A repo file path safe to join under a snapshot: relative, `/`-separated, no `..` or empty parts. */
export function isSafeRepoFile(file: string): boolean {
  if (!file || file.includes('\\') || file.includes('\0') || file.startsWith('/')) return false;
  return file.split('/').every((part) => part !== '' && part !== '.' && part !== '..');
}

/** The commit a revision points at: the revision itself when it is a hash, else refs/{revision}. */
export function readRef(repoDir: string, revision: string): string | null {
  if (isCommitHash(revision)) return revision;
  try {
    const commit = fs.readFileSync(path.join(repoDir, 'refs', revision), 'utf8').trim();
    return isSafeName(commit) ? commit : null;
  } catch {
    return null;
  }
}

/** Record that `revision` resolves to `commit` (skipped when the revision is the commit). */
export function writeRef(repoDir: string, revision: string, commit: string): void {
  if (revision === commit) return;
  const ref = path.join(repoDir, 'refs', revision);
  fs.mkdirSync(path.dirname(ref), { recursive: true });
  fs.writeFileSync(ref, commit);
}

export function snapshotDir(repoDir: string, commit: string): string {
  return path.join(repoDir, 'snapshots', commit);
}

export function blobPath(repoDir: string, etag: string): string {
  return path.join(repoDir, 'blobs', etag);
}

/** Point snapshots/{commit}/{file} at blobs/{etag} with a relative symlink (a copy where links are refused). */
export function linkSnapshotFile(repoDir: string, commit: string, file: string, etag: string): void {
  const dest = path.join(snapshotDir(repoDir, commit), file);
  const blob = blobPath(repoDir, etag);
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  fs.rmSync(dest, { force: true });
  try {
    fs.symlinkSync(path.relative(path.dirname(dest), blob), dest);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
    fs.copyFileSync(blob, dest); // e.g. Windows without developer mode
  }
}

/** Remember that an optional file is absent at this commit, as huggingface_hub does. */
export function markMissing(repoDir: string, commit: string, file: string): void {
  const marker = path.join(repoDir, '.no_exist', commit, file);
  fs.mkdirSync(path.dirname(marker), { recursive: true });
  fs.writeFileSync(marker, '');
}

/** The shard file names a model.safetensors.index.json lists in its weight_map, unique and in order. */
export function shardNames(indexText: string, where: string): string[] {
  let index: unknown;
  try {
    index = JSON.parse(indexText);
  } catch (err) {
    throw new SafetensorsError('E_HUB_BAD_INDEX', where, `not valid JSON (${(err as Error).message})`);
  }
  const map = (index as { weight_map?: unknown } | null)?.weight_map;
  if (!map || typeof map !== 'object' || Array.isArray(map)) {
    throw new SafetensorsError('E_HUB_BAD_INDEX', where, 'has no weight_map object');
  }
  const names = [...new Set(Object.values(map as Record<string, unknown>))];
  for (const name of names) {
    if (typeof name !== 'string' || !isSafeRepoFile(name)) {
      throw new SafetensorsError(
        'E_HUB_BAD_INDEX',
        where,
        `weight_map names an invalid shard file ${JSON.stringify(name)}`,
      );
    }
  }
  if (names.length === 0) throw new SafetensorsError('E_HUB_BAD_INDEX', where, 'weight_map is empty');
  return names as string[];
}

/** True when `dir` has config.json and complete safetensors weights (one file, or an index and all its shards). */
export function hasModelFiles(dir: string): boolean {
  if (!fs.existsSync(path.join(dir, CONFIG_FILE))) return false;
  if (fs.existsSync(path.join(dir, WEIGHTS_FILE))) return true;
  const index = path.join(dir, INDEX_FILE);
  if (!fs.existsSync(index)) return false;
  try {
    return shardNames(fs.readFileSync(index, 'utf8'), index).every((f) => fs.existsSync(path.join(dir, f)));
  } catch {
    return false;
  }
}

/** The cached snapshot folder for repo@revision when it holds a usable model, else null. */
export function findCachedSnapshot(repoDir: string, revision: string): string | null {
  const commit = readRef(repoDir, revision);
  if (!commit) return null;
  const dir = snapshotDir(repoDir, commit);
  return hasModelFiles(dir) ? dir : null;
}
