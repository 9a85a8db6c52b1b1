/**
 * HTTP side of the hub client: file metadata (HEAD on /{repo}/resolve/{rev}/{file}) and resumable
 * blob downloads, with Node's built-in fetch. Redirects are followed by hand so the Authorization
 * header never reaches another origin (the hub sends LFS files to a CDN).
 */
import fs from 'node:fs';
import path from 'node:path';
import { MoiError, UsageError } from '@moi/core';
import { isSafeName, normalizeEtag } from './cache.ts';

/** Where and how to talk to the hub, for one repo. */
export interface HubContext {
  endpoint: string;
  repoId: string;
  token?: string;
  signal?: AbortSignal;
  /** Limit for a metadata request, ms (HF_HUB_ETAG_TIMEOUT). */
  metaTimeoutMs: number;
  /** Longest wait for the next bytes of a download, ms (HF_HUB_DOWNLOAD_TIMEOUT). */
  readTimeoutMs: number;
  /**
   * Overall deadline of one file: it must arrive within `deadlineMs` plus its size at
   * `minRate` bytes/s (MOI_HUB_DEADLINE, MOI_HUB_MIN_RATE). Defaults: DEFAULT_DEADLINE_MS, DEFAULT_MIN_RATE.
   */
  deadlineMs?: number;
  minRate?: number;
  /**
   * Absolute cap of one file's deadline, ms (MOI_HUB_MAX_SECONDS, default DEFAULT_MAX_SECONDS):
   * whatever size a server announces, a file that has not arrived by then fails.
   */
  maxMs?: number;
}

/** Grace period of every file's deadline (MOI_HUB_DEADLINE, seconds). */
export const DEFAULT_DEADLINE_MS = 60_000;
/** Slowest average transfer accepted, bytes/s (MOI_HUB_MIN_RATE). */
export const DEFAULT_MIN_RATE = 100_000;
/** The cap of every file's deadline, seconds (MOI_HUB_MAX_SECONDS): one hour. */
export const DEFAULT_MAX_SECONDS = 3600;
/** Node's longest timer (2^31 − 1 ms, about 24.8 days): longer ones fire at once, with a TimeoutOverflowWarning. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
/** A delay as a timer can take it: 1 ms .. MAX_TIMER_MS (NaN → MAX_TIMER_MS). */
export function timerMs(ms: number): number {
  return Number.isNaN(ms) ? MAX_TIMER_MS : Math.min(MAX_TIMER_MS, Math.max(1, ms));
}
/** A file whose size the server does not announce may not exceed this. */
export const MAX_UNSIZED_BYTES = 2 ** 31;

/** What a HEAD request tells about one repo file. */
export interface FileMeta {
  file: string;
  url: string;
  /** Blob name: X-Linked-Etag (LFS) or ETag, normalized. */
  etag: string;
  /** X-Repo-Commit: the commit the revision resolved to. */
  commit: string;
  /** X-Linked-Size (LFS) or Content-Length, where given. */
  size?: number;
}

/** `{endpoint}/{repo}/resolve/{revision}/{file}`. */
export function fileUrl(endpoint: string, repoId: string, revision: string, file: string): string {
  const base = endpoint.replace(/\/+$/, '');
  const encFile = file.split('/').map(encodeURIComponent).join('/');
  return `${base}/${repoId}/resolve/${encodeURIComponent(revision)}/${encFile}`;
}

const MAX_REDIRECTS = 10;

function baseHeaders(): Record<string, string> {
  // identity: a gzip-encoded answer would not match Content-Length, and Range must count raw bytes.
  return { 'user-agent': `moi/0.1 (node ${process.versions.node})`, 'accept-encoding': 'identity' };
}

/** `E_HUB_NETWORK` or `E_HUB_ABORTED` for a failed fetch or body read. */
function networkError(ctx: HubContext, url: string, file: string, err: unknown, timedOut: boolean): MoiError {
  if (ctx.signal?.aborted) {
    return new MoiError('E_HUB_ABORTED', `download of ${ctx.repoId}/${file} was cancelled`, { cause: err });
  }
  const host = new URL(url).origin;
  const via = host === new URL(ctx.endpoint).origin ? '' : ` (redirected from ${ctx.endpoint})`;
  const cause = err as { cause?: { code?: string; message?: string }; message?: string };
  const why = timedOut ? 'timed out' : (cause?.cause?.code ?? cause?.cause?.message ?? cause?.message ?? String(err));
  return new MoiError(
    'E_HUB_NETWORK',
    `cannot reach ${host}${via} for ${ctx.repoId}/${file}: ${why}. ` +
      'Check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use only the local cache.',
    { cause: err },
  );
}

/** A typed error for an HTTP status other than 404 (which callers decide on). */
export function statusError(ctx: HubContext, res: Response, file: string): MoiError {
  const detail = res.headers.get('x-error-message') ?? res.headers.get('x-error-code');
  const tail = detail ? `: ${detail}` : '';
  if (res.status === 401 || res.status === 403) {
    const tokenNote = ctx.token
      ? 'the token sent (opts.token, HF_TOKEN or HUGGING_FACE_HUB_TOKEN) was refused or has no access to it'
      : 'no token was sent: set HF_TOKEN to an access token (https://huggingface.co/settings/tokens)';
    return new UsageError(
      'E_HUB_AUTH',
      `${ctx.endpoint} refused access to ${ctx.repoId} (HTTP ${res.status} on ${file}${tail}). ` +
        `The repo may be private or gated, or may not exist; ${tokenNote}. ` +
        'For a gated model, also accept its terms on the model page.',
    );
  }
  const hint = res.status === 429 ? ' (rate limited: wait, or set HF_TOKEN)' : '';
  return new MoiError(
    'E_HUB_HTTP',
    `HTTP ${res.status} ${res.statusText} from ${new URL(res.url || ctx.endpoint).origin} for ${ctx.repoId}/${file}${tail}${hint}`,
  );
}

/**
 * fetch with redirects followed by hand. Authorization is sent only while every hop stays on the
 * first URL's origin. `stopAt` may end the chain at a redirect (HEAD on an LFS file keeps the
 * hub's own 302, whose headers carry the metadata).
 */
async function fetchFollow(
  ctx: HubContext,
  file: string,
  url: string,
  method: 'GET' | 'HEAD',
  extra: Record<string, string>,
  signal: AbortSignal,
  isTimedOut: () => boolean,
  stopAt?: (res: Response) => boolean,
): Promise<Response> {
  const origin = new URL(url).origin;
  let sameOrigin = true;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    const scheme = new URL(url).protocol;
    if (scheme !== 'http:' && scheme !== 'https:') {
      // file:, data:, ftp: ... never followed (a file: redirect would read this machine's files)
      throw new MoiError(
        'E_HUB_REDIRECT',
        `${ctx.endpoint} redirected ${ctx.repoId}/${file} to a ${scheme.slice(0, -1)}: URL, ` +
          'which is not followed (only http and https are)',
      );
    }
    const headers: Record<string, string> = { ...baseHeaders(), ...extra };
    if (ctx.token && sameOrigin) headers.authorization = `Bearer ${ctx.token}`;
    let res: Response;
    try {
      res = await fetch(url, { method, headers, redirect: 'manual', signal });
    } catch (err) {
      throw networkError(ctx, url, file, err, isTimedOut());
    }
    const location = res.headers.get('location');
    if (res.status < 300 || res.status >= 400 || !location || stopAt?.(res)) return res;
    await res.body?.cancel().catch(() => {});
    url = new URL(location, url).toString();
    if (new URL(url).origin !== origin) sameOrigin = false;
  }
  throw new MoiError('E_HUB_HTTP', `too many redirects for ${ctx.repoId}/${file} from ${ctx.endpoint}`);
}

/** An AbortSignal that fires on the caller's signal or after `ms` without a `touch()`. */
function idleSignal(ms: number, outer?: AbortSignal) {
  const ctrl = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ctrl.abort(new Error(`no data for ${ms} ms`));
  }, timerMs(ms));
  const signal = outer ? AbortSignal.any([outer, ctrl.signal]) : ctrl.signal;
  return { signal, touch: () => timer.refresh(), done: () => clearTimeout(timer), timedOut: () => timedOut };
}

/**
 * HEAD one file. Returns its metadata, or `{ notFound }` (with the hub's X-Error-Code, such as
 * RepoNotFound, RevisionNotFound or EntryNotFound) on 404. Other failures throw typed errors.
 */
export async function headFile(
  ctx: HubContext,
  revision: string,
  file: string,
): Promise<FileMeta | { notFound: string }> {
  const url = fileUrl(ctx.endpoint, ctx.repoId, revision, file);
  const idle = idleSignal(ctx.metaTimeoutMs, ctx.signal);
  let res: Response;
  try {
    const hubAnswer = (r: Response) => r.headers.has('x-repo-commit') || r.headers.has('x-linked-etag');
    res = await fetchFollow(ctx, file, url, 'HEAD', {}, idle.signal, idle.timedOut, hubAnswer);
  } finally {
    idle.done();
  }
  await res.body?.cancel().catch(() => {});
  if (res.status === 404) return { notFound: res.headers.get('x-error-code') ?? '' };
  if (res.status >= 400) throw statusError(ctx, res, file);
  const etagHeader = res.headers.get('x-linked-etag') ?? res.headers.get('etag');
  const commit = res.headers.get('x-repo-commit');
  const etag = etagHeader ? normalizeEtag(etagHeader) : '';
  if (!commit || !isSafeName(commit) || !isSafeName(etag)) {
    throw new MoiError(
      'E_HUB_BAD_RESPONSE',
      `${ctx.endpoint} answered for ${ctx.repoId}/${file} without a usable X-Repo-Commit/ETag ` +
        `(got commit ${JSON.stringify(commit)}, etag ${JSON.stringify(etagHeader)}); is HF_ENDPOINT a Hugging Face hub?`,
    );
  }
  const sizeText = res.headers.get('x-linked-size') ?? (res.status === 200 ? res.headers.get('content-length') : null);
  const size = sizeText !== null && /^\d+$/.test(sizeText) ? Number(sizeText) : undefined;
  return { file, url: fileUrl(ctx.endpoint, ctx.repoId, commit, file), etag, commit, size };
}

/** Total size from `Content-Range: bytes a-b/total`, with the start offset. */
function parseContentRange(value: string | null): { start: number; total?: number } | null {
  const m = value && /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(value.trim());
  if (!m) return null;
  return { start: Number(m[1]), total: m[2] === '*' ? undefined : Number(m[2]) };
}

function sizeOf(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

/**
 * Download `meta` into `blob`, through `blob.incomplete`. A partial file from an earlier attempt
 * is resumed with `Range: bytes={size}-` (appended on 206, restarted on 200). `onBytes` gets the
 * bytes of this file present so far. A cut connection keeps the partial file and throws
 * `E_HUB_INTERRUPTED`; the final size is checked against Content-Length / Content-Range.
 */
export async function downloadBlob(
  ctx: HubContext,
  meta: FileMeta,
  blob: string,
  onBytes: (bytes: number) => void,
): Promise<void> {
  const part = `${blob}.incomplete`;
  fs.mkdirSync(path.dirname(blob), { recursive: true });
  let start = sizeOf(part);
  if (meta.size !== undefined && start > meta.size) {
    fs.rmSync(part, { force: true });
    start = 0;
  }
  if (start === 0 || start !== meta.size) {
    await fetchInto(ctx, meta, part, start, onBytes);
  }
  const got = sizeOf(part);
  if (meta.size !== undefined && got !== meta.size) {
    fs.rmSync(part, { force: true }); // the server's answer disagrees with its own metadata: start over next time
    throw new MoiError(
      'E_HUB_BAD_RESPONSE',
      `${ctx.repoId}/${meta.file}: received ${got} bytes but the hub announced ${meta.size}`,
    );
  }
  onBytes(got);
  fs.renameSync(part, blob);
}

/**
 * The overall deadline of one transfer: grace + bytes/minRate after it starts, where bytes is the
 * size still to come (or, for a file of unknown size, what has come so far), and never past the
 * absolute cap (maxMs: a 1 TB announcement cannot stretch it). Aborts `ctrl` when it passes;
 * re-arms itself while an unsized file keeps the average rate. Timers stay within Node's limit.
 */
function transferDeadline(ctx: HubContext, ctrl: AbortController, toCome: () => number) {
  const grace = ctx.deadlineMs ?? DEFAULT_DEADLINE_MS;
  const rate = ctx.minRate ?? DEFAULT_MIN_RATE;
  const cap = ctx.maxMs ?? DEFAULT_MAX_SECONDS * 1000;
  const t0 = performance.now();
  let passed = false;
  const due = () => t0 + Math.min(cap, grace + (toCome() / rate) * 1000);
  let timer: NodeJS.Timeout;
  const arm = () => {
    timer = setTimeout(
      () => {
        if (performance.now() < due()) return arm();
        passed = true;
        ctrl.abort(new Error('deadline passed'));
      },
      timerMs(due() - performance.now()),
    );
  };
  arm();
  return { passed: () => passed, seconds: () => (due() - t0) / 1000, done: () => clearTimeout(timer) };
}

/** One GET into `part` from byte `start`; returns the offset the written bytes began at. */
async function fetchInto(
  ctx: HubContext,
  meta: FileMeta,
  part: string,
  start: number,
  onBytes: (bytes: number) => void,
): Promise<number> {
  const deadlineCtrl = new AbortController();
  const outer = ctx.signal ? AbortSignal.any([ctx.signal, deadlineCtrl.signal]) : deadlineCtrl.signal;
  const idle = idleSignal(ctx.readTimeoutMs, outer);
  let written = start;
  const deadline = transferDeadline(ctx, deadlineCtrl, () =>
    meta.size !== undefined ? meta.size - start : written - start,
  );
  try {
    const range: Record<string, string> = start > 0 ? { range: `bytes=${start}-` } : {};
    let res = await fetchFollow(ctx, meta.file, meta.url, 'GET', range, idle.signal, idle.timedOut);
    if (res.status === 416 && start > 0) {
      // Our partial file is not a prefix the server knows: drop it and fetch the whole file.
      await res.body?.cancel().catch(() => {});
      fs.rmSync(part, { force: true });
      start = written = 0;
      res = await fetchFollow(ctx, meta.file, meta.url, 'GET', {}, idle.signal, idle.timedOut);
    }
    if (res.status === 404) {
      await res.body?.cancel().catch(() => {});
      throw new MoiError(
        'E_HUB_HTTP',
        `HTTP 404 for ${ctx.repoId}/${meta.file} on ${ctx.endpoint} although its metadata was found`,
      );
    }
    if (res.status !== 200 && res.status !== 206) {
      await res.body?.cancel().catch(() => {});
      throw statusError(ctx, res, meta.file);
    }
    let expected: number | undefined;
    if (res.status === 206) {
      const cr = parseContentRange(res.headers.get('content-range'));
      if (!cr || cr.start !== start) {
        await res.body?.cancel().catch(() => {});
        fs.rmSync(part, { force: true });
        throw new MoiError(
          'E_HUB_BAD_RESPONSE',
          `${ctx.repoId}/${meta.file}: asked for bytes from ${start}, got Content-Range ${res.headers.get('content-range')}; run again to restart`,
        );
      }
      expected = cr.total;
    } else {
      start = written = 0; // 200: the server ignored Range, so restart the file
      const len = res.headers.get('content-length');
      expected = len !== null && /^\d+$/.test(len) ? Number(len) : undefined;
    }
    if (!res.body) throw new MoiError('E_HUB_BAD_RESPONSE', `${ctx.repoId}/${meta.file}: empty response body`);
    // The most bytes this file may have: what HEAD announced, else what this answer announces.
    const limit = meta.size ?? expected ?? MAX_UNSIZED_BYTES;
    if (expected !== undefined && meta.size !== undefined && expected !== meta.size) {
      await res.body.cancel().catch(() => {});
      fs.rmSync(part, { force: true });
      throw new MoiError(
        'E_HUB_BAD_RESPONSE',
        `${ctx.repoId}/${meta.file}: the download announces ${expected} bytes but the file's metadata announced ${meta.size}`,
      );
    }
    onBytes(written);
    const fh = await fs.promises.open(part, start > 0 ? 'a' : 'w');
    let tooLong = false;
    try {
      const reader = res.body.getReader();
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (err) {
          if (deadline.passed()) throw pastDeadline(ctx, meta, part, written, deadline.seconds(), err);
          throw interrupted(ctx, meta, part, written, expected, err, idle.timedOut());
        }
        if (chunk.done) break;
        idle.touch();
        let bytes = chunk.value;
        if (written + bytes.byteLength > limit) {
          // never keep a byte past the announced size
          bytes = bytes.subarray(0, limit - written);
          tooLong = true;
        }
        await fh.write(bytes);
        written += bytes.byteLength;
        onBytes(written);
        if (tooLong) {
          await reader.cancel().catch(() => {});
          break;
        }
      }
    } finally {
      await fh.close();
    }
    if (tooLong) {
      fs.rmSync(part, { force: true }); // the server disagrees with itself: start over next time
      const what =
        meta.size !== undefined || expected !== undefined
          ? `the ${limit} bytes announced`
          : `${limit} bytes (no size was announced)`;
      throw new MoiError(
        'E_HUB_BAD_RESPONSE',
        `${ctx.repoId}/${meta.file} from ${ctx.endpoint}: the server sent more than ${what}; the download was stopped`,
      );
    }
    if (expected !== undefined && written !== expected) {
      throw interrupted(ctx, meta, part, written, expected, undefined, false);
    }
    return start;
  } catch (err) {
    if (deadline.passed() && !(err instanceof MoiError && err.code === 'E_HUB_DEADLINE')) {
      throw pastDeadline(ctx, meta, part, written, deadline.seconds(), err);
    }
    throw err;
  } finally {
    idle.done();
    deadline.done();
  }
}

/** `E_HUB_DEADLINE`: the file did not arrive in time (the partial file stays, to resume). */
function pastDeadline(
  ctx: HubContext,
  meta: FileMeta,
  part: string,
  written: number,
  seconds: number,
  err: unknown,
): MoiError {
  const of = meta.size !== undefined ? ` of ${meta.size}` : '';
  return new MoiError(
    'E_HUB_DEADLINE',
    `download of ${ctx.repoId}/${meta.file} from ${ctx.endpoint} did not finish within its deadline of ${seconds.toFixed(1)} s ` +
      `(${written}${of} bytes arrived; MOI_HUB_DEADLINE + size / MOI_HUB_MIN_RATE, at most MOI_HUB_MAX_SECONDS); run again to resume from the partial file ${part}`,
    { cause: err },
  );
}

/** `E_HUB_INTERRUPTED` (or `E_HUB_ABORTED`) for a download that stopped early; the partial file stays. */
function interrupted(
  ctx: HubContext,
  meta: FileMeta,
  part: string,
  written: number,
  expected: number | undefined,
  err: unknown,
  timedOut: boolean,
): MoiError {
  if (ctx.signal?.aborted) {
    return new MoiError(
      'E_HUB_ABORTED',
      `download of ${ctx.repoId}/${meta.file} was cancelled; run again to resume (partial file ${part})`,
      { cause: err },
    );
  }
  const of = expected !== undefined ? ` of ${expected}` : '';
  const why = timedOut ? 'no data arrived in time' : 'the connection was cut';
  return new MoiError(
    'E_HUB_INTERRUPTED',
    `download of ${ctx.repoId}/${meta.file} from ${ctx.endpoint} stopped after ${written}${of} bytes (${why}); ` +
      `run again to resume from the partial file ${part}`,
    err === undefined ? undefined : { cause: err },
  );
}
