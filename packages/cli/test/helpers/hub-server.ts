/**
 * A loopback fake of the Hugging Face hub's file API for tests: `/{repo}/resolve/{rev}/{file}`
 * with ETag / X-Repo-Commit headers, LFS files sent by 302 to a "CDN" server (on 127.0.0.2 where
 * that address can be bound, so the redirect crosses origins), and Range support. Only 127.0.0.x.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeRepo {
  commit: string;
  files: Record<string, Buffer>;
  /** Files served like LFS objects: 302 to the CDN, X-Linked-Etag = sha256. */
  lfs?: string[];
}

export interface HubServerOptions {
  repos: Record<string, FakeRepo>;
  /** When set, the hub answers 401 unless `Authorization: Bearer {token}`. */
  token?: string;
  /** Cut the connection after `bytes` body bytes, on the first GET of `file` (hub or CDN). */
  cut?: { file: string; bytes: number };
  /** Like `cut`, but the connection stays open with no more data (a stalled transfer). */
  stall?: boolean;
  /** Answer this status for a file of one repo. */
  failWith?: { repo: string; file: string; status: number };
}

export interface SeenRequest {
  server: 'hub' | 'cdn';
  method: string;
  url: string;
  authorization?: string;
  range?: string;
}

export interface HubServer {
  endpoint: string;
  /** Origin of the CDN server (differs from `endpoint` when 127.0.0.2 could be bound). */
  cdnOrigin: string;
  requests: SeenRequest[];
  close(): Promise<void>;
}

export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** Git's blob id, which the hub uses as the ETag of small (non-LFS) files. */
export const gitSha1 = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

/** Serve `data` honouring `Range: bytes=a-` / `bytes=a-b`; optionally cut after `cutAfter` bytes. */
function sendBody(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  data: Buffer,
  headers: Record<string, string>,
  cutAfter?: number,
  stall?: boolean,
) {
  let start = 0;
  let end = data.length - 1;
  const m = req.headers.range && /^bytes=(\d+)-(\d*)$/.exec(req.headers.range);
  if (m) {
    start = Number(m[1]);
    if (m[2]) end = Math.min(end, Number(m[2]));
    if (start >= data.length) {
      res.writeHead(416, { 'content-range': `bytes */${data.length}` }).end();
      return;
    }
  }
  const body = data.subarray(start, end + 1);
  const status = m ? 206 : 200;
  res.writeHead(status, {
    ...headers,
    'accept-ranges': 'bytes',
    'content-length': String(body.length),
    ...(m ? { 'content-range': `bytes ${start}-${end}/${data.length}` } : {}),
  });
  if (req.method === 'HEAD') return void res.end();
  if (cutAfter !== undefined && cutAfter < body.length) {
    res.write(body.subarray(0, cutAfter), () => (stall ? undefined : res.socket?.destroy()));
    return;
  }
  res.end(body);
}

function listen(server: http.Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

export async function startHubServer(opts: HubServerOptions): Promise<HubServer> {
  const requests: SeenRequest[] = [];
  const blobs = new Map<string, { data: Buffer; file: string }>();
  for (const repo of Object.values(opts.repos)) {
    for (const f of repo.lfs ?? []) blobs.set(sha256(repo.files[f]), { data: repo.files[f], file: f });
  }
  let cutDone = false;
  const cutFor = (file: string, method?: string) => {
    if (!opts.cut || cutDone || method !== 'GET' || opts.cut.file !== file) return undefined;
    cutDone = true;
    return opts.cut.bytes;
  };
  const record = (server: 'hub' | 'cdn', req: http.IncomingMessage) =>
    requests.push({
      server,
      method: req.method ?? '',
      url: req.url ?? '',
      authorization: req.headers.authorization,
      range: req.headers.range,
    });

  const cdn = http.createServer((req, res) => {
    record('cdn', req);
    const m = /^\/lfs\/([0-9a-f]{64})(?:\?.*)?$/.exec(req.url ?? '');
    const blob = m && blobs.get(m[1]);
    if (!blob) return void res.writeHead(404).end();
    sendBody(req, res, blob.data, { etag: `"cdn-${m[1].slice(0, 8)}"` }, cutFor(blob.file, req.method), opts.stall);
  });
  let cdnHost = '127.0.0.2';
  let cdnPort: number;
  try {
    cdnPort = await listen(cdn, cdnHost);
  } catch {
    cdnHost = '127.0.0.1';
    cdnPort = await listen(cdn, cdnHost);
  }
  const cdnOrigin = `http://${cdnHost}:${cdnPort}`;

  const hub = http.createServer((req, res) => {
    record('hub', req);
    const url = decodeURIComponent((req.url ?? '').split('?')[0]);
    // dataset repos are keyed `datasets/{org}/{name}`; their info is /api/datasets/{id}/revision/{rev}
    // (a revision such as refs/convert/parquet comes URL-encoded as one segment)
    const info = /^\/api\/datasets\/([^/]+\/[^/]+)\/revision\/(.+)$/.exec(url);
    const infoRepo = info && opts.repos[`datasets/${info[1]}`];
    if (info) {
      if (!infoRepo) return void res.writeHead(404, { 'x-error-code': 'RepoNotFound' }).end();
      const body = JSON.stringify({
        id: info[1],
        sha: infoRepo.commit,
        siblings: Object.keys(infoRepo.files).map((rfilename) => ({ rfilename })),
      });
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(body);
    }
    const m = /^\/((?:datasets\/)?[^/]+(?:\/[^/]+)?)\/resolve\/([^/]+)\/(.+)$/.exec(url);
    const err = (status: number, code: string, extra: Record<string, string> = {}) =>
      res.writeHead(status, { 'x-error-code': code, 'x-error-message': code, ...extra }).end();
    if (!m) return err(404, 'RepoNotFound');
    const [, repoId, rev, file] = m;
    if (opts.token && req.headers.authorization !== `Bearer ${opts.token}`) {
      return err(401, 'RepoNotFound');
    }
    const repo = opts.repos[repoId];
    if (!repo) return err(404, 'RepoNotFound');
    if (rev !== 'main' && rev !== repo.commit) return err(404, 'RevisionNotFound');
    const commitHeader = { 'x-repo-commit': repo.commit };
    if (opts.failWith?.repo === repoId && opts.failWith.file === file)
      return err(opts.failWith.status, 'Boom', commitHeader);
    const data = repo.files[file];
    if (!data) return err(404, 'EntryNotFound', commitHeader);
    if (repo.lfs?.includes(file)) {
      const hash = sha256(data);
      res.writeHead(302, {
        ...commitHeader,
        location: `${cdnOrigin}/lfs/${hash}?signature=fake`,
        'x-linked-etag': `"${hash}"`,
        'x-linked-size': String(data.length),
        etag: `W/"pointer-${hash.slice(0, 8)}"`,
        'content-length': '0',
      });
      return void res.end();
    }
    sendBody(req, res, data, { ...commitHeader, etag: `"${gitSha1(data)}"` }, cutFor(file, req.method), opts.stall);
  });
  const hubPort = await listen(hub, '127.0.0.1');

  return {
    endpoint: `http://127.0.0.1:${hubPort}`,
    cdnOrigin,
    requests,
    close: async () => {
      await Promise.all([closeServer(hub), closeServer(cdn)]);
    },
  };
}
