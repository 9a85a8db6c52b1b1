/**
 * resolveModel: a local folder, or a Hugging Face hub id looked up in the shared hub cache and
 * downloaded into it when missing (config, tokenizer files and safetensors weights only).
 */
import fs from 'node:fs';
import path from 'node:path';
import { ModelError, MoiError, UsageError } from '@moi/core';
import {
  CONFIG_FILE,
  INDEX_FILE,
  WEIGHTS_FILE,
  blobPath,
  expandHome,
  findCachedSnapshot,
  hfHomeDir,
  hubCacheDir,
  linkSnapshotFile,
  markMissing,
  repoFolderName,
  shardNames,
  snapshotDir,
  writeRef,
} from './cache.ts';
import {
  DEFAULT_DEADLINE_MS,
  DEFAULT_MAX_SECONDS,
  DEFAULT_MIN_RATE,
  type FileMeta,
  type HubContext,
  downloadBlob,
  headFile,
} from './download.ts';

export interface DownloadProgress {
  /** Repo file being downloaded. */
  file: string;
  /** Bytes of this file on disk so far (a resumed file starts above 0). */
  bytes: number;
  total?: number;
  /** Bytes of all files of this download so far. */
  overallBytes: number;
  /** Sum of the sizes known so far (grows once the shard list is read). */
  overallTotal?: number;
}

export interface ResolveOptions {
  /** Branch, tag or commit hash; default `main`. */
  revision?: string;
  /** Hub base URL; default HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  /** Access token; default HF_TOKEN, else HUGGING_FACE_HUB_TOKEN, else the token file huggingface-cli writes. */
  token?: string;
  /** Never touch the network; default from HF_HUB_OFFLINE. */
  offline?: boolean;
  /** Hub cache root; default HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub. */
  cacheDir?: string;
  onProgress?: (p: DownloadProgress) => void;
  signal?: AbortSignal;
  /** Environment to read settings from; default process.env. */
  env?: NodeJS.ProcessEnv;
}

/** Files fetched when the repo has them. */
export const OPTIONAL_FILES = [
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'chat_template.jinja',
];

export const DEFAULT_ENDPOINT = 'https://huggingface.co';

/** Same rule as huggingface_hub's validate_repo_id. */
export const REPO_ID = /^(?:[\w.-]+\/)?[\w.-]{1,96}$/;

export function isTruthy(value: string | undefined): boolean {
  return ['1', 'on', 'yes', 'true'].includes((value ?? '').trim().toLowerCase());
}

export function seconds(value: string | undefined, fallback: number): number {
  const n = Number(value);
  return (value !== undefined && Number.isFinite(n) && n > 0 ? n : fallback) * 1000;
}

function positive(value: string | undefined, fallback: number): number {
  const n = Number(value);
  return value !== undefined && Number.isFinite(n) && n > 0 ? n : fallback;
}

/** The hub base URL, which must be an http(s) URL; a bad one is named with where it came from. */
function hubEndpoint(value: string, fromEnv: boolean): string {
  let url: URL | null;
  try {
    url = new URL(value);
  } catch {
    url = null;
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    throw new UsageError(
      'E_HUB_ENDPOINT',
      `${fromEnv ? 'HF_ENDPOINT' : 'the hub endpoint'} ${JSON.stringify(value)} is not an http(s) URL (e.g. ${DEFAULT_ENDPOINT}); fix or unset it`,
    );
  }
  return value.replace(/\/+$/, '');
}

/** opts.token, HF_TOKEN, HUGGING_FACE_HUB_TOKEN, else the file `huggingface-cli login` writes. */
export function hubToken(env: NodeJS.ProcessEnv, token?: string): string | undefined {
  const fromEnv = token ?? env.HF_TOKEN ?? env.HUGGING_FACE_HUB_TOKEN;
  if (fromEnv !== undefined) return fromEnv.trim() || undefined;
  const file = env.HF_TOKEN_PATH ? expandHome(env.HF_TOKEN_PATH, env) : path.join(hfHomeDir(env), 'token');
  try {
    return fs.readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Looks like a filesystem path rather than a hub id. */
function looksLikePath(p: string): boolean {
  return (
    path.isAbsolute(p) ||
    p.startsWith('.') ||
    p.startsWith('~') ||
    p.includes('\\') ||
    p.endsWith('/') ||
    p.split('/').length > 2
  );
}

/** The folder when `p` names an existing one (it must hold config.json), else null. */
function localModelDir(p: string, env: NodeJS.ProcessEnv): string | null {
  const dir = expandHome(p, env);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dir);
  } catch {
    if (looksLikePath(p)) {
      throw new UsageError('E_MODEL_DIR_NOT_FOUND', `model folder ${dir} does not exist`);
    }
    return null;
  }
  if (!stat.isDirectory()) {
    throw new UsageError(
      'E_MODEL_DIR_NOT_FOUND',
      `${dir} is a file; pass the model folder (with config.json) or a hub id like org/name`,
    );
  }
  if (!fs.existsSync(path.join(dir, CONFIG_FILE))) {
    throw new ModelError('E_MODEL_NO_CONFIG', `model folder ${dir} has no ${CONFIG_FILE}`);
  }
  return dir;
}

/**
 * A local model directory for `idOrPath`: an existing folder as given, else the hub cache snapshot
 * of repo@revision, downloaded first when the cache lacks config.json or weights.
 */
export async function resolveModel(idOrPath: string, opts: ResolveOptions = {}): Promise<string> {
  const env = opts.env ?? process.env;
  const local = localModelDir(idOrPath, env);
  if (local) return local;

  const repoId = idOrPath;
  if (!REPO_ID.test(repoId) || repoId.includes('--') || repoId.includes('..') || repoId.endsWith('.git')) {
    throw new UsageError(
      'E_HUB_BAD_ID',
      `${JSON.stringify(idOrPath)} is neither an existing folder nor a hub id like org/name`,
    );
  }
  const revision = opts.revision ?? 'main';
  if (!revision || revision.split('/').some((s) => s === '' || s === '.' || s === '..') || /[\\\0]/.test(revision)) {
    throw new UsageError('E_HUB_BAD_REVISION', `invalid revision ${JSON.stringify(revision)} for ${repoId}`);
  }
  const cacheRoot = hubCacheDir(env, opts.cacheDir);
  const repoDir = path.join(cacheRoot, repoFolderName(repoId));

  const cached = findCachedSnapshot(repoDir, revision);
  if (cached) return cached;

  if (opts.offline ?? isTruthy(env.HF_HUB_OFFLINE)) {
    throw new UsageError(
      'E_HUB_OFFLINE',
      `${repoId}@${revision} is not in the Hugging Face cache (searched ${repoDir}) and offline mode is on ` +
        `(${opts.offline ? 'offline option' : 'HF_HUB_OFFLINE'}); go online once, or set HF_HUB_CACHE/HF_HOME to the cache that has it`,
    );
  }

  const ctx: HubContext = {
    endpoint: hubEndpoint(
      opts.endpoint ?? env.HF_ENDPOINT ?? DEFAULT_ENDPOINT,
      opts.endpoint === undefined && env.HF_ENDPOINT !== undefined,
    ),
    repoId,
    token: hubToken(env, opts.token),
    signal: opts.signal,
    metaTimeoutMs: seconds(env.HF_HUB_ETAG_TIMEOUT, 10),
    readTimeoutMs: seconds(env.HF_HUB_DOWNLOAD_TIMEOUT, 10),
    deadlineMs: seconds(env.MOI_HUB_DEADLINE, DEFAULT_DEADLINE_MS / 1000),
    minRate: positive(env.MOI_HUB_MIN_RATE, DEFAULT_MIN_RATE),
    maxMs: seconds(env.MOI_HUB_MAX_SECONDS, DEFAULT_MAX_SECONDS),
  };
  try {
    return await downloadSnapshot(ctx, repoDir, revision, opts.onProgress);
  } catch (err) {
    throw asCacheError(err, repoDir);
  }
}

/** Filesystem failures (permissions, full disk) as a typed error naming the cache. */
function asCacheError(err: unknown, repoDir: string): unknown {
  if (err instanceof MoiError || !(err instanceof Error) || !('code' in err)) return err;
  return new MoiError(
    'E_HUB_CACHE',
    `cannot write the Hugging Face cache at ${repoDir}: ${err.message}; set HF_HUB_CACHE to a writable folder`,
    { cause: err },
  );
}

/** Fetch the model files of repo@revision into the cache and return the snapshot folder. */
async function downloadSnapshot(
  ctx: HubContext,
  repoDir: string,
  revision: string,
  onProgress?: (p: DownloadProgress) => void,
): Promise<string> {
  const where = `${ctx.repoId}@${revision} on ${ctx.endpoint}`;
  const config = await headFile(ctx, revision, CONFIG_FILE);
  if ('notFound' in config) {
    const what =
      config.notFound === 'RevisionNotFound' ? `revision ${revision} of ${ctx.repoId}` : `repo ${ctx.repoId}`;
    const missingFile = config.notFound === 'EntryNotFound' ? ` (the repo has no ${CONFIG_FILE})` : '';
    throw new UsageError(
      'E_HUB_NOT_FOUND',
      `${what} not found on ${ctx.endpoint}${missingFile}. Check the id; a private or gated repo ` +
        `also answers "not found" without access: set HF_TOKEN to a token that can read it.`,
    );
  }
  // Pin every other file to the commit config.json resolved to, so the snapshot is consistent.
  const commit = config.commit;
  const [optional, index] = await Promise.all([
    Promise.all(OPTIONAL_FILES.map((f) => headFile(ctx, commit, f))),
    headFile(ctx, commit, INDEX_FILE),
  ]);
  const files: FileMeta[] = [config];
  const missing: string[] = [];
  optional.forEach((m, i) => ('notFound' in m ? missing.push(OPTIONAL_FILES[i]) : files.push(m)));

  const progress = new Progress(onProgress, repoDir);
  if (!('notFound' in index)) {
    progress.add([...files, index]);
    await fetchFile(ctx, repoDir, index, progress);
    const indexPath = blobPath(repoDir, index.etag);
    const shards = shardNames(fs.readFileSync(indexPath, 'utf8'), `${ctx.repoId}/${INDEX_FILE}`);
    const shardMetas = await Promise.all(shards.map((f) => headFile(ctx, commit, f)));
    shardMetas.forEach((m, i) => {
      if ('notFound' in m) {
        throw new ModelError(
          'E_HUB_NO_WEIGHTS',
          `${where}: ${INDEX_FILE} lists ${shards[i]}, which the repo does not have`,
        );
      }
    });
    files.push(index, ...(shardMetas as FileMeta[]));
    progress.add(shardMetas as FileMeta[]);
  } else {
    const weights = await headFile(ctx, commit, WEIGHTS_FILE);
    if ('notFound' in weights) {
      throw new ModelError(
        'E_HUB_NO_WEIGHTS',
        `${where} has neither ${WEIGHTS_FILE} nor ${INDEX_FILE} (moi reads safetensors weights only)`,
      );
    }
    files.push(weights);
    progress.add(files);
  }

  for (const meta of files) {
    await fetchFile(ctx, repoDir, meta, progress);
    linkSnapshotFile(repoDir, commit, meta.file, meta.etag);
  }
  for (const file of missing) markMissing(repoDir, commit, file);
  writeRef(repoDir, revision, commit);
  return snapshotDir(repoDir, commit);
}

/** Download one file's blob unless the cache already has it (blobs are shared across revisions). */
async function fetchFile(ctx: HubContext, repoDir: string, meta: FileMeta, progress: Progress): Promise<void> {
  const blob = blobPath(repoDir, meta.etag);
  if (fs.existsSync(blob)) return;
  await downloadBlob(ctx, meta, blob, (bytes) => progress.report(meta, bytes));
  progress.finish(meta);
}

/** Overall byte accounting across the files of one download. */
class Progress {
  private readonly counted = new Set<string>();
  private total = 0;
  private totalKnown = true;
  private done = 0;
  constructor(
    private readonly onProgress: ((p: DownloadProgress) => void) | undefined,
    private readonly repoDir: string,
  ) {}

  /** Count the sizes of files whose blobs are not cached yet. */
  add(metas: FileMeta[]): void {
    for (const m of metas) {
      if (this.counted.has(m.etag) || fs.existsSync(blobPath(this.repoDir, m.etag))) continue;
      this.counted.add(m.etag);
      if (m.size === undefined) this.totalKnown = false;
      else this.total += m.size;
    }
  }

  report(meta: FileMeta, bytes: number): void {
    this.onProgress?.({
      file: meta.file,
      bytes,
      total: meta.size,
      overallBytes: this.done + bytes,
      overallTotal: this.totalKnown ? this.total : undefined,
    });
  }

  finish(meta: FileMeta): void {
    this.done += meta.size ?? fs.statSync(blobPath(this.repoDir, meta.etag)).size;
  }
}
