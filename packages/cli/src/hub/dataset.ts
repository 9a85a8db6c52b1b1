/**
 * Hugging Face dataset repos: the parquet files of one split (of one config, where the repo has
 * several), or files chosen by name, through the same cache layout and download code as models
 * (huggingface_hub's layout, with `datasets--` folders):
 *
 *   {cache}/datasets--{org}--{name}/refs/{revision}, blobs/{etag}, snapshots/{commit}/{file}
 *
 * The file list comes from `GET {endpoint}/api/datasets/{id}/revision/{rev}` (its `sha` and
 * `siblings`), as huggingface_hub's dataset_info reads it. A cached snapshot that holds the split
 * is used without the network; HF_HUB_OFFLINE=1 forbids the network.
 */
import fs from 'node:fs';
import path from 'node:path';
import { MoiError, UsageError } from '@moi/core';
import {
  blobPath,
  hubCacheDir,
  isSafeName,
  isSafeRepoFile,
  linkSnapshotFile,
  readRef,
  snapshotDir,
  writeRef,
} from './cache.ts';
import { type HubContext, downloadBlob, headFile, statusError } from './download.ts';
import { DEFAULT_ENDPOINT, REPO_ID, hubToken, isTruthy, seconds, type ResolveOptions } from './resolve.ts';

export interface DatasetOptions extends Omit<ResolveOptions, 'onProgress'> {
  /** split to read; default `train` */
  split?: string;
  /**
   * config (subset) to read: its files are under `{config}/`, as in the hub's parquet conversion
   * (revision `refs/convert/parquet`: `{config}/{split}/0000.parquet`)
   */
  config?: string;
}

/** `org/name` -> `datasets--org--name`. */
export function datasetFolderName(repoId: string): string {
  return ['datasets', ...repoId.split('/')].join('--');
}

/** Does a repo file belong to the split? `{split}-*.parquet`, `{split}.parquet`, or under a `{split}/` folder. */
export function isSplitParquet(file: string, split: string): boolean {
  if (!file.endsWith('.parquet')) return false;
  const parts = file.split('/');
  const base = parts[parts.length - 1];
  return parts.slice(0, -1).includes(split) || base === `${split}.parquet` || base.startsWith(`${split}-`);
}

/** A split's parquet file inside a config's folder: also `{config}/{name}-{split}.parquet` (older conversions). */
export function isConfigSplitParquet(file: string, config: string, split: string): boolean {
  if (!file.startsWith(`${config}/`)) return false;
  const rest = file.slice(config.length + 1);
  return (
    isSplitParquet(rest, split) ||
    (rest.endsWith('.parquet') &&
      !rest.includes('/') &&
      new RegExp(`-${split.replace(/\W/g, '\\$&')}(-\\d+-of-\\d+)?\\.parquet$`).test(rest))
  );
}

function listSnapshot(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[]).map((f) => f.split(path.sep).join('/'));
}

/** Which files of a dataset repo to fetch. */
export interface FileChoice {
  /** the wanted files among the repo's (or the cached snapshot's) */
  pick(files: string[]): string[];
  /** when the wanted names are known up front: the cache serves them only when it has all */
  exact?: string[];
  /** the error when the repo has none of them */
  none(repoId: string, revision: string, files: string[]): string;
  /** its code (default E_DATASET_NO_PARQUET) */
  code?: string;
}

/** Local paths of the parquet files of `repoId`'s split (and config), downloading them into the hub cache when it lacks them. */
export async function resolveDatasetParquet(repoId: string, opts: DatasetOptions = {}): Promise<string[]> {
  const split = opts.split ?? 'train';
  const config = opts.config;
  const wanted = (f: string) => (config ? isConfigSplitParquet(f, config, split) : isSplitParquet(f, split));
  return resolveDatasetFiles(
    repoId,
    {
      pick: (files) => files.filter(wanted),
      none: (id, revision, files) => {
        const parquet = files.filter((f) => f.endsWith('.parquet'));
        const what = config ? `config "${config}", split "${split}"` : `split "${split}"`;
        return parquet.length
          ? `dataset ${id}@${revision} has no parquet files for ${what} (it has: ${parquet.slice(0, 8).join(', ')})`
          : `dataset ${id}@${revision} has no parquet files (moi reads parquet datasets only)`;
      },
    },
    opts,
  );
}

/** Local paths of the chosen files of a dataset repo, downloading them into the hub cache when it lacks them. */
export async function resolveDatasetFiles(
  repoId: string,
  choice: FileChoice,
  opts: DatasetOptions = {},
): Promise<string[]> {
  const env = opts.env ?? process.env;
  const split = opts.split ?? 'train';
  if (!REPO_ID.test(repoId) || repoId.includes('--') || repoId.includes('..')) {
    throw new UsageError('E_HUB_BAD_ID', `${JSON.stringify(repoId)} is not a hub dataset id like org/name`);
  }
  const revision = opts.revision ?? 'main';
  const repoDir = path.join(hubCacheDir(env, opts.cacheDir), datasetFolderName(repoId));
  const cachedCommit = readRef(repoDir, revision);
  if (cachedCommit) {
    const dir = snapshotDir(repoDir, cachedCommit);
    const have = listSnapshot(dir);
    const files = choice.exact
      ? choice.exact.every((f) => have.includes(f))
        ? choice.exact
        : []
      : choice.pick(have).sort();
    if (files.length) return files.map((f) => path.join(dir, f));
  }
  if (opts.offline ?? isTruthy(env.HF_HUB_OFFLINE)) {
    throw new UsageError(
      'E_HUB_OFFLINE',
      `dataset ${repoId}@${revision} (${choice.exact ? choice.exact.join(', ') : `${opts.config ? `config ${opts.config}, ` : ''}split ${split}`}) is not in the Hugging Face cache (searched ${repoDir}) and offline mode is on ` +
        `(${opts.offline ? 'offline option' : 'HF_HUB_OFFLINE'}); go online once, or set HF_HUB_CACHE/HF_HOME to the cache that has it`,
    );
  }
  const endpoint = (opts.endpoint ?? env.HF_ENDPOINT ?? DEFAULT_ENDPOINT).replace(/\/+$/, '');
  const ctx: HubContext = {
    endpoint,
    // fileUrl joins `{endpoint}/{repoId}/resolve/...`: the `datasets/` prefix gives the dataset URL
    repoId: `datasets/${repoId}`,
    token: hubToken(env, opts.token),
    signal: opts.signal,
    metaTimeoutMs: seconds(env.HF_HUB_ETAG_TIMEOUT, 10),
    readTimeoutMs: seconds(env.HF_HUB_DOWNLOAD_TIMEOUT, 10),
  };
  const info = await datasetInfo(ctx, repoId, revision);
  const files = choice.pick(info.files).sort();
  if (files.length === 0 || (choice.exact && files.length !== choice.exact.length)) {
    throw new UsageError(choice.code ?? 'E_DATASET_NO_PARQUET', choice.none(repoId, revision, info.files));
  }
  try {
    for (const file of files) {
      const meta = await headFile(ctx, info.commit, file);
      if ('notFound' in meta)
        throw new MoiError('E_HUB_HTTP', `dataset ${repoId}: ${file} is listed but not found (${meta.notFound})`);
      const blob = blobPath(repoDir, meta.etag);
      if (!fs.existsSync(blob)) await downloadBlob(ctx, meta, blob, () => {});
      linkSnapshotFile(repoDir, info.commit, file, meta.etag);
    }
    writeRef(repoDir, revision, info.commit);
  } catch (err) {
    if (err instanceof MoiError || !(err instanceof Error) || !('code' in err)) throw err;
    throw new MoiError(
      'E_HUB_CACHE',
      `cannot write the Hugging Face cache at ${repoDir}: ${err.message}; set HF_HUB_CACHE to a writable folder`,
      { cause: err },
    );
  }
  const dir = snapshotDir(repoDir, info.commit);
  return files.map((f) => path.join(dir, f));
}

/** The commit and file list of a dataset revision. */
async function datasetInfo(
  ctx: HubContext,
  repoId: string,
  revision: string,
): Promise<{ commit: string; files: string[] }> {
  const url = `${ctx.endpoint}/api/datasets/${repoId}/revision/${encodeURIComponent(revision)}`;
  const headers: Record<string, string> = { 'user-agent': `moi/0.1 (node ${process.versions.node})` };
  if (ctx.token) headers.authorization = `Bearer ${ctx.token}`;
  let res: Response;
  try {
    res = await fetch(url, {
      headers,
      signal: AbortSignal.any([AbortSignal.timeout(ctx.metaTimeoutMs), ...(ctx.signal ? [ctx.signal] : [])]),
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
    throw new MoiError(
      'E_HUB_NETWORK',
      `cannot reach ${ctx.endpoint} for dataset ${repoId}: ${cause}. Check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use only the local cache.`,
      { cause: err },
    );
  }
  if (res.status === 404) {
    throw new UsageError(
      'E_HUB_NOT_FOUND',
      `dataset ${repoId}@${revision} not found on ${ctx.endpoint}. Check the id; a private or gated dataset also answers "not found" without access: set HF_TOKEN.`,
    );
  }
  if (!res.ok) throw statusError(ctx, res, 'dataset info');
  let body: { sha?: unknown; siblings?: unknown };
  try {
    body = (await res.json()) as typeof body;
  } catch (err) {
    throw new MoiError('E_HUB_BAD_RESPONSE', `${ctx.endpoint}: the dataset info of ${repoId} is not JSON`, {
      cause: err,
    });
  }
  const commit = typeof body.sha === 'string' ? body.sha : '';
  if (!isSafeName(commit) || !Array.isArray(body.siblings)) {
    throw new MoiError(
      'E_HUB_BAD_RESPONSE',
      `${ctx.endpoint}: the dataset info of ${repoId} has no usable sha and siblings`,
    );
  }
  const files = body.siblings
    .map((s) => (s as { rfilename?: unknown })?.rfilename)
    .filter((f): f is string => typeof f === 'string' && isSafeRepoFile(f));
  return { commit, files };
}
