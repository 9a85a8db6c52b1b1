/**
 * Downloads are bounded: a loopback server that lies about a file's size (announces 1,000 bytes,
 * then streams without end), streams without end with no size, or drips one byte every 2 s.
 * Each download ends with a typed error within its deadline (MOI_HUB_DEADLINE +
 * size / MOI_HUB_MIN_RATE, set small here), and no more than the announced size is ever on disk.
 * A bad HF_ENDPOINT gets its own message.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { MoiError, UsageError } from '@moi/core';
import { resolveModel } from '../src/hub/index.ts';

const COMMIT = '0123456789abcdef0123456789abcdef01234567';
const ETAG = 'b'.repeat(40);
type Mode = 'lie' | 'endless' | 'drip';

/** A hub whose config.json misbehaves as `mode` says; model.safetensors answers HEAD only. */
async function badHub(mode: Mode): Promise<{ endpoint: string; close(): Promise<void> }> {
  const timers = new Set<NodeJS.Timeout>();
  const server = http.createServer((req, res) => {
    const file = decodeURIComponent((req.url ?? '').split('?')[0])
      .split('/resolve/')[1]
      ?.split('/')
      .slice(1)
      .join('/');
    const head = { 'x-repo-commit': COMMIT, etag: `"${ETAG}"` };
    if (file !== 'config.json' && file !== 'model.safetensors') {
      return void res.writeHead(404, { 'x-error-code': 'EntryNotFound', 'x-repo-commit': COMMIT }).end();
    }
    const sized = mode !== 'endless';
    if (req.method === 'HEAD') {
      return void res.writeHead(200, { ...head, ...(sized ? { 'content-length': '1000' } : {}) }).end();
    }
    // GET: never a content-length (chunked), whatever was announced
    res.writeHead(200, head);
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    if (mode === 'drip') {
      const t = setInterval(() => res.write('a'), 2000);
      timers.add(t);
      res.write('a');
      res.on('close', () => clearInterval(t));
      return;
    }
    if (mode === 'lie') {
      // as fast as the socket takes it
      const pump = () => {
        while (!res.destroyed && res.write(chunk)) {
          /* fill the socket buffer */
        }
        if (!res.destroyed) res.once('drain', pump);
      };
      return void pump();
    }
    // endless: 64 KiB every 5 ms (about 13 MB/s, so the test does not fill the disk)
    const t = setInterval(() => res.write(chunk), 5);
    timers.add(t);
    res.on('close', () => clearInterval(t));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    endpoint,
    close: () =>
      new Promise<void>((r) => {
        for (const t of timers) clearInterval(t);
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

/** The largest size any file under `dir` reaches while `p` runs (sampled every 5 ms), and p's outcome. */
async function watchDisk<T>(dir: string, p: Promise<T>): Promise<{ max: number; error: unknown; ms: number }> {
  const t0 = performance.now();
  let max = 0;
  const sizes = (d: string): number[] => {
    if (!fs.existsSync(d)) return [];
    return fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => {
      const f = path.join(d, e.name);
      if (e.isDirectory()) return sizes(f);
      try {
        return [fs.lstatSync(f).size];
      } catch {
        return [];
      }
    });
  };
  const timer = setInterval(() => {
    max = Math.max(max, ...sizes(dir));
  }, 5);
  let error: unknown = null;
  try {
    await p;
  } catch (e) {
    error = e;
  }
  clearInterval(timer);
  max = Math.max(max, ...sizes(dir));
  return { max, error, ms: performance.now() - t0 };
}

describe('hub: bounded downloads (loopback server)', function () {
  this.timeout(30_000);
  let root: string;
  before(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'moi-hub-bounds-'));
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  const env = (endpoint: string, extra: Record<string, string> = {}) => ({
    HF_ENDPOINT: endpoint,
    HF_HOME: path.join(root, 'home'),
    HF_HUB_DOWNLOAD_TIMEOUT: '10',
    MOI_HUB_DEADLINE: '1',
    MOI_HUB_MIN_RATE: '1000',
    ...extra,
  });

  it('a server that announces 1,000 bytes and streams without end: E_HUB_BAD_RESPONSE at once, never over 1,000 bytes on disk', async () => {
    const hub = await badHub('lie');
    const cacheDir = path.join(root, 'lie');
    try {
      const r = await watchDisk(cacheDir, resolveModel('org/lie', { cacheDir, env: env(hub.endpoint) }));
      assert.ok(r.error instanceof MoiError && r.error.code === 'E_HUB_BAD_RESPONSE', String(r.error));
      assert.match((r.error as Error).message, /more than the 1000 bytes announced/);
      assert.ok(r.max <= 1000, `${r.max} bytes on disk`);
      assert.ok(r.ms < 2000, `${r.ms} ms`);
      const left = fs.readdirSync(path.join(cacheDir, 'models--org--lie', 'blobs'));
      assert.deepEqual(left, [], 'the oversized partial file is removed');
    } finally {
      await hub.close();
    }
  });

  it('a server that streams without end and announces no size: E_HUB_DEADLINE within the deadline', async () => {
    const hub = await badHub('endless');
    const cacheDir = path.join(root, 'endless');
    try {
      // a rate no loopback transfer reaches, so the deadline stays about MOI_HUB_DEADLINE = 1 s
      const r = await watchDisk(
        cacheDir,
        resolveModel('org/endless', { cacheDir, env: env(hub.endpoint, { MOI_HUB_MIN_RATE: '1e12' }) }),
      );
      assert.ok(r.error instanceof MoiError && r.error.code === 'E_HUB_DEADLINE', String(r.error));
      assert.match((r.error as Error).message, /MOI_HUB_DEADLINE/);
      assert.ok(r.ms >= 900 && r.ms < 4000, `${r.ms} ms`);
      assert.ok(r.max > 64 * 1024, 'it did stream');
    } finally {
      await hub.close();
    }
  });

  it('a server that drips one byte every 2 s: E_HUB_DEADLINE after 1 s + 1,000 B / 1,000 B/s, not the idle timeout', async () => {
    const hub = await badHub('drip');
    const cacheDir = path.join(root, 'drip');
    try {
      const r = await watchDisk(cacheDir, resolveModel('org/drip', { cacheDir, env: env(hub.endpoint) }));
      assert.ok(r.error instanceof MoiError && r.error.code === 'E_HUB_DEADLINE', String(r.error));
      assert.match((r.error as Error).message, /deadline of 2\.0 s/);
      assert.ok(r.ms >= 1900 && r.ms < 5000, `${r.ms} ms`);
      assert.ok(r.max <= 1000);
    } finally {
      await hub.close();
    }
  });

  it('HF_ENDPOINT that is not a URL: E_HUB_ENDPOINT naming it, not a cache error', async () => {
    const cacheDir = path.join(root, 'endpoint');
    for (const bad of ['not a url', 'ftp://example.com']) {
      await assert.rejects(
        resolveModel('org/x', { cacheDir, env: { HF_ENDPOINT: bad, HF_HOME: path.join(root, 'home') } }),
        (e: unknown) => {
          assert.ok(e instanceof UsageError && e.code === 'E_HUB_ENDPOINT', String(e));
          assert.match(e.message, /HF_ENDPOINT/);
          assert.ok(e.message.includes(JSON.stringify(bad)));
          assert.doesNotMatch(e.message, /cache/);
          return true;
        },
      );
    }
  });
});
