/**
 * Downloads have an absolute deadline: a loopback hub that announces a 1e12-byte file (1 TB) and
 * drips one byte every 100 ms ends within MOI_HUB_MAX_SECONDS (2 s here) with E_HUB_DEADLINE,
 * and no TimeoutOverflowWarning is emitted (the announced size would ask for a timer of 1e10 ms,
 * past Node's 2^31 − 1). A redirect to a file: URL is refused with a typed error naming the
 * scheme (it used to say "cannot reach null"), and nothing is read from this machine's files.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { MoiError } from '@moi/core';
import { resolveModel } from '../src/hub/index.ts';
import { timerMs, MAX_TIMER_MS } from '../src/hub/download.ts';

const COMMIT = '0123456789abcdef0123456789abcdef01234567';
const ETAG = 'c'.repeat(40);

/** A hub whose config.json is `huge` (announced 1e12 bytes, dripping) or redirects to `file:`. */
async function hub(mode: 'huge' | 'file'): Promise<{ endpoint: string; requests: string[]; close(): Promise<void> }> {
  const timers = new Set<NodeJS.Timeout>();
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    const file = decodeURIComponent((req.url ?? '').split('?')[0])
      .split('/resolve/')[1]
      ?.split('/')
      .slice(1)
      .join('/');
    const head = { 'x-repo-commit': COMMIT, etag: `"${ETAG}"` };
    if (file !== 'config.json' && file !== 'model.safetensors') {
      return void res.writeHead(404, { 'x-error-code': 'EntryNotFound', 'x-repo-commit': COMMIT }).end();
    }
    if (mode === 'file' && req.method === 'GET')
      return void res.writeHead(302, { location: 'file:///etc/passwd' }).end();
    if (req.method === 'HEAD') return void res.writeHead(200, { ...head, 'content-length': '1000000000000' }).end();
    res.writeHead(200, { ...head, 'content-length': '1000000000000' });
    const t = setInterval(() => res.write('a'), 100);
    timers.add(t);
    res.on('close', () => clearInterval(t));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () =>
      new Promise<void>((r) => {
        for (const t of timers) clearInterval(t);
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

describe("hub: an absolute deadline per file, timers within Node's limit, http(s) redirects only", function () {
  this.timeout(30_000);
  let root: string;
  before(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'moi-hub-deadline-'));
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));
  const env = (endpoint: string) => ({
    HF_ENDPOINT: endpoint,
    HF_HOME: path.join(root, 'home'),
    HF_HUB_DOWNLOAD_TIMEOUT: '10',
    MOI_HUB_MAX_SECONDS: '2',
  });

  it('timerMs clamps every delay to 1 .. 2^31 − 1 ms', () => {
    assert.equal(MAX_TIMER_MS, 2147483647);
    assert.equal(timerMs(1e10), MAX_TIMER_MS);
    assert.equal(timerMs(Infinity), MAX_TIMER_MS);
    assert.equal(timerMs(NaN), MAX_TIMER_MS);
    assert.equal(timerMs(-5), 1);
    assert.equal(timerMs(1500), 1500);
  });

  it('a 1 TB announcement that drips ends within MOI_HUB_MAX_SECONDS = 2 s with E_HUB_DEADLINE, and no TimeoutOverflowWarning', async () => {
    const h = await hub('huge');
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    const t0 = performance.now();
    try {
      await assert.rejects(
        resolveModel('org/huge', { cacheDir: path.join(root, 'huge'), env: env(h.endpoint) }),
        (e: unknown) => {
          assert.ok(e instanceof MoiError && e.code === 'E_HUB_DEADLINE', String(e));
          assert.match(e.message, /deadline of 2\.0 s/);
          assert.match(e.message, /MOI_HUB_MAX_SECONDS/);
          return true;
        },
      );
      const ms = performance.now() - t0;
      assert.ok(ms >= 1900 && ms < 5000, `${ms} ms`);
      await new Promise((r) => setTimeout(r, 50)); // warnings are emitted on a later tick
      assert.deepEqual(
        warnings.filter((w) => /TimeoutOverflow/.test(w)),
        [],
      );
    } finally {
      process.off('warning', onWarning);
      await h.close();
    }
  });

  it('a redirect to file:///etc/passwd: E_HUB_REDIRECT naming the scheme, not "cannot reach null"', async () => {
    const h = await hub('file');
    try {
      await assert.rejects(
        resolveModel('org/file', { cacheDir: path.join(root, 'file'), env: env(h.endpoint) }),
        (e: unknown) => {
          assert.ok(e instanceof MoiError && e.code === 'E_HUB_REDIRECT', String(e));
          assert.match(e.message, /to a file: URL, which is not followed/);
          assert.doesNotMatch(e.message, /null/);
          return true;
        },
      );
      const blobs = path.join(root, 'file', 'models--org--file', 'blobs');
      const kept = fs.existsSync(blobs) ? fs.readdirSync(blobs).filter((f) => !f.endsWith('.incomplete')) : [];
      assert.deepEqual(kept, [], 'nothing was stored');
    } finally {
      await h.close();
    }
  });
});
