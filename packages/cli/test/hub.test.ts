import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { ModelError, MoiError, UsageError, requireShared, sharedDir } from '@moi/core';
import { resolveModel, hubCacheDir, hasModelFiles, type DownloadProgress } from '../src/hub/index.ts';
import { startHubServer, sha256, gitSha1, type HubServer, type FakeRepo } from './helpers/hub-server.ts';

const COMMIT = 'a'.repeat(8) + '0123456789abcdef0123456789abcdef';
const REPO = 'tiny/stories';
const FOLDER = 'models--tiny--stories';
const FILES = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'model.safetensors',
];

let fixture: Record<string, Buffer>;
let tmpRoot: string;
let server: HubServer | undefined;
let n = 0;

/** A fresh empty folder under this suite's temp root. */
function tmp(): string {
  const dir = path.join(tmpRoot, String(n++));
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/** The blob name the hub gives a file: sha256 for LFS files, git blob sha1 otherwise. */
const etagOf = (repo: FakeRepo, f: string) => (repo.lfs?.includes(f) ? sha256(repo.files[f]) : gitSha1(repo.files[f]));

function storiesRepo(): FakeRepo {
  return { commit: COMMIT, files: { ...fixture }, lfs: ['model.safetensors'] };
}

/** An endpoint URL on which nothing listens: any request to it fails at once. */
async function deadEndpoint(): Promise<string> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return `http://127.0.0.1:${port}`;
}

/** A cache in huggingface_hub's layout, written by hand: blobs, relative snapshot links, refs/main. */
function handCache(root: string, repo: FakeRepo, repoFolder = FOLDER): string {
  const repoDir = path.join(root, repoFolder);
  const snap = path.join(repoDir, 'snapshots', repo.commit);
  fs.mkdirSync(path.join(repoDir, 'blobs'), { recursive: true });
  fs.mkdirSync(snap, { recursive: true });
  fs.mkdirSync(path.join(repoDir, 'refs'), { recursive: true });
  for (const [f, data] of Object.entries(repo.files)) {
    const etag = etagOf(repo, f);
    fs.writeFileSync(path.join(repoDir, 'blobs', etag), data);
    fs.symlinkSync(`../../blobs/${etag}`, path.join(snap, f));
  }
  fs.writeFileSync(path.join(repoDir, 'refs', 'main'), repo.commit);
  return snap;
}

/** Split a safetensors file into two valid shard files and the index that names them. */
function shard(buf: Buffer): { a: Buffer; b: Buffer; index: Buffer } {
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8'));
  const data = buf.subarray(8 + headerLen);
  const names = Object.keys(header)
    .filter((k) => k !== '__metadata__')
    .sort();
  const half = Math.ceil(names.length / 2);
  const weightMap: Record<string, string> = {};
  const build = (part: string[], file: string) => {
    const h: Record<string, unknown> = {};
    const chunks: Buffer[] = [];
    let off = 0;
    for (const name of part) {
      const [s, e] = header[name].data_offsets;
      h[name] = { ...header[name], data_offsets: [off, off + e - s] };
      chunks.push(data.subarray(s, e));
      off += e - s;
      weightMap[name] = file;
    }
    let text = JSON.stringify(h);
    text += ' '.repeat((8 - (text.length % 8)) % 8);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(text.length));
    return Buffer.concat([len, Buffer.from(text), ...chunks]);
  };
  const a = build(names.slice(0, half), 'model-00001-of-00002.safetensors');
  const b = build(names.slice(half), 'model-00002-of-00002.safetensors');
  const index = Buffer.from(
    JSON.stringify({ metadata: { total_size: a.length + b.length }, weight_map: weightMap }, null, 2),
  );
  return { a, b, index };
}

function isCode(
  code: string,
  cls: abstract new (...args: never[]) => Error = MoiError,
  ...patterns: (string | RegExp)[]
) {
  return (err: unknown) => {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${err}`);
    assert.equal((err as MoiError).code, code, (err as Error).message);
    for (const p of patterns) {
      if (typeof p === 'string')
        assert.ok((err as Error).message.includes(p), `message lacks ${p}: ${(err as Error).message}`);
      else assert.match((err as Error).message, p);
    }
    return true;
  };
}

describe('hub: resolveModel', function () {
  this.timeout(20000);

  before(function () {
    const shared = requireShared(this);
    const dir = path.join(shared!, 'fixtures', 'stories260K');
    fixture = Object.fromEntries(FILES.map((f) => [f, fs.readFileSync(path.join(dir, f))]));
    tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'moi-hub-'));
  });

  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  after(() => {
    if (tmpRoot) fs.rmSync(tmpRoot, { recursive: true, force: true });
  });

  it('downloads a model into the huggingface_hub cache layout, then reuses it with no network', async () => {
    const repo = storiesRepo();
    server = await startHubServer({ repos: { [REPO]: repo } });
    const cacheDir = tmp();
    const env = { HF_HOME: tmp() };
    const events: DownloadProgress[] = [];
    const dir = await resolveModel(REPO, {
      endpoint: server.endpoint,
      cacheDir,
      env,
      onProgress: (p) => events.push(p),
    });

    const repoDir = path.join(cacheDir, FOLDER);
    assert.equal(dir, path.join(repoDir, 'snapshots', COMMIT));
    assert.equal(fs.readFileSync(path.join(repoDir, 'refs', 'main'), 'utf8'), COMMIT);
    for (const f of FILES) {
      assert.ok(fixture[f].equals(fs.readFileSync(path.join(dir, f))), `${f} differs`);
      assert.ok(fs.lstatSync(path.join(dir, f)).isSymbolicLink(), `${f} is not a symlink`);
      assert.equal(fs.readlinkSync(path.join(dir, f)), `../../blobs/${etagOf(repo, f)}`);
    }
    // Optional files the repo lacks are absent, and marked as huggingface_hub does.
    for (const f of ['added_tokens.json', 'chat_template.jinja', 'model.safetensors.index.json']) {
      assert.ok(!fs.existsSync(path.join(dir, f)), f);
    }
    assert.ok(fs.existsSync(path.join(repoDir, '.no_exist', COMMIT, 'chat_template.jinja')));
    assert.deepEqual(
      fs.readdirSync(path.join(repoDir, 'blobs')).filter((f) => f.endsWith('.incomplete')),
      [],
    );

    // The weights came through the LFS redirect from the CDN server.
    assert.ok(server.requests.some((r) => r.server === 'cdn' && r.method === 'GET'));

    // Progress: per-file bytes never go back, and the overall count ends at the total of all files.
    const totalBytes = FILES.reduce((s, f) => s + fixture[f].length, 0);
    const last = events[events.length - 1];
    assert.equal(last.overallBytes, totalBytes);
    assert.equal(last.overallTotal, totalBytes);
    const weights = events.filter((e) => e.file === 'model.safetensors');
    assert.ok(weights.length > 1);
    assert.equal(weights[weights.length - 1].bytes, fixture['model.safetensors'].length);
    assert.equal(weights[0].total, fixture['model.safetensors'].length);
    for (let i = 1; i < events.length; i++) {
      assert.ok(events[i].overallBytes >= events[i - 1].overallBytes, 'overallBytes went back');
    }

    // Second resolve: the cache answers, not one request is made.
    const seen = server.requests.length;
    assert.equal(await resolveModel(REPO, { endpoint: server.endpoint, cacheDir, env }), dir);
    assert.equal(server.requests.length, seen);
    await server.close();
    assert.equal(await resolveModel(REPO, { endpoint: server.endpoint, cacheDir, env }), dir);
    // A revision given as the commit hash needs no ref.
    assert.equal(await resolveModel(REPO, { endpoint: server.endpoint, cacheDir, env, revision: COMMIT }), dir);
  });

  it('finds a cache written in huggingface_hub layout via HF_HOME, HF_HUB_CACHE and XDG_CACHE_HOME', async () => {
    const endpoint = await deadEndpoint();
    const repo = storiesRepo();

    const home = tmp();
    const viaHome = handCache(path.join(home, 'hub'), repo);
    assert.equal(await resolveModel(REPO, { endpoint, env: { HF_HOME: home } }), viaHome);

    const hubCache = tmp();
    const viaHubCache = handCache(hubCache, repo);
    // HF_HUB_CACHE wins over HF_HOME (which holds nothing here).
    assert.equal(await resolveModel(REPO, { endpoint, env: { HF_HUB_CACHE: hubCache, HF_HOME: tmp() } }), viaHubCache);

    const xdg = tmp();
    const viaXdg = handCache(path.join(xdg, 'huggingface', 'hub'), repo);
    assert.equal(await resolveModel(REPO, { endpoint, env: { XDG_CACHE_HOME: xdg } }), viaXdg);
    assert.ok(fixture['config.json'].equals(fs.readFileSync(path.join(viaXdg, 'config.json'))));

    // A bare name (no org) maps to models--{name}.
    const bare = tmp();
    const viaBare = handCache(bare, repo, 'models--stories');
    assert.equal(await resolveModel('stories', { endpoint, cacheDir: bare, env: {} }), viaBare);

    assert.equal(hubCacheDir({ HOME: '/h' }), path.join('/h', '.cache', 'huggingface', 'hub'));
    assert.equal(hubCacheDir({ HOME: '/h', HF_HOME: '~/hf' }), path.join('/h', 'hf', 'hub'));
  });

  it('resumes a cut download with a Range request', async () => {
    const repo = storiesRepo();
    const cutAt = 300_000;
    server = await startHubServer({ repos: { [REPO]: repo }, cut: { file: 'model.safetensors', bytes: cutAt } });
    const cacheDir = tmp();
    const env = { HF_HOME: tmp() };
    const opts = { endpoint: server.endpoint, cacheDir, env };

    await assert.rejects(
      resolveModel(REPO, opts),
      isCode('E_HUB_INTERRUPTED', MoiError, 'model.safetensors', 'resume'),
    );
    const part = path.join(cacheDir, FOLDER, 'blobs', `${sha256(fixture['model.safetensors'])}.incomplete`);
    const partSize = fs.statSync(part).size;
    assert.ok(partSize > 0 && partSize <= cutAt, `partial size ${partSize}`);
    assert.ok(fixture['model.safetensors'].subarray(0, partSize).equals(fs.readFileSync(part)));
    assert.ok(!fs.existsSync(path.join(cacheDir, FOLDER, 'refs', 'main')), 'ref written for a failed download');

    const before = server.requests.length;
    const dir = await resolveModel(REPO, opts);
    const ranged = server.requests.slice(before).filter((r) => r.method === 'GET' && r.range);
    assert.deepEqual(
      ranged.map((r) => r.range),
      [`bytes=${partSize}-`, `bytes=${partSize}-`],
    ); // hub hop, then CDN
    assert.ok(ranged.some((r) => r.server === 'cdn'));
    assert.ok(fixture['model.safetensors'].equals(fs.readFileSync(path.join(dir, 'model.safetensors'))));
    assert.ok(!fs.existsSync(part));
  });

  it('gives up on a stalled transfer after HF_HUB_DOWNLOAD_TIMEOUT and resumes later', async () => {
    server = await startHubServer({
      repos: { [REPO]: storiesRepo() },
      cut: { file: 'model.safetensors', bytes: 100_000 },
      stall: true,
    });
    const cacheDir = tmp();
    const opts = { endpoint: server.endpoint, cacheDir, env: { HF_HOME: tmp(), HF_HUB_DOWNLOAD_TIMEOUT: '0.3' } };
    const t0 = Date.now();
    await assert.rejects(resolveModel(REPO, opts), isCode('E_HUB_INTERRUPTED', MoiError, 'no data arrived in time'));
    assert.ok(Date.now() - t0 < 5000);
    const dir = await resolveModel(REPO, opts);
    assert.ok(fixture['model.safetensors'].equals(fs.readFileSync(path.join(dir, 'model.safetensors'))));
  });

  it('stops on an AbortSignal with E_HUB_ABORTED, keeping the partial file for a later resume', async () => {
    server = await startHubServer({ repos: { [REPO]: storiesRepo() } });
    const cacheDir = tmp();
    const opts = { endpoint: server.endpoint, cacheDir, env: { HF_HOME: tmp() } };
    const ctrl = new AbortController();
    const onProgress = (p: DownloadProgress) => {
      if (p.file === 'model.safetensors' && p.bytes > 0) ctrl.abort();
    };
    await assert.rejects(
      resolveModel(REPO, { ...opts, signal: ctrl.signal, onProgress }),
      isCode('E_HUB_ABORTED', MoiError, 'model.safetensors'),
    );
    const part = path.join(cacheDir, FOLDER, 'blobs', `${sha256(fixture['model.safetensors'])}.incomplete`);
    assert.ok(fs.existsSync(part));
    const dir = await resolveModel(REPO, opts);
    assert.ok(fixture['model.safetensors'].equals(fs.readFileSync(path.join(dir, 'model.safetensors'))));
  });

  it('reports a missing repo as E_HUB_NOT_FOUND', async () => {
    server = await startHubServer({ repos: { [REPO]: storiesRepo() } });
    await assert.rejects(
      resolveModel('nobody/nothing', { endpoint: server.endpoint, cacheDir: tmp(), env: { HF_HOME: tmp() } }),
      isCode('E_HUB_NOT_FOUND', UsageError, 'nobody/nothing', server.endpoint, 'HF_TOKEN', 'gated'),
    );
    await assert.rejects(
      resolveModel(REPO, { endpoint: server.endpoint, cacheDir: tmp(), env: { HF_HOME: tmp() }, revision: 'v9' }),
      isCode('E_HUB_NOT_FOUND', UsageError, 'revision v9'),
    );
  });

  it('needs HF_TOKEN for a private repo, and keeps it off the CDN host', async () => {
    const repo = storiesRepo();
    server = await startHubServer({ repos: { [REPO]: repo }, token: 'hf_secret' });
    const endpoint = server.endpoint;
    await assert.rejects(
      resolveModel(REPO, { endpoint, cacheDir: tmp(), env: { HF_HOME: tmp() } }),
      isCode('E_HUB_AUTH', UsageError, 'HF_TOKEN', REPO),
    );
    await assert.rejects(
      resolveModel(REPO, { endpoint, cacheDir: tmp(), env: { HF_HOME: tmp(), HF_TOKEN: 'wrong' } }),
      isCode('E_HUB_AUTH', UsageError, 'refused'),
    );

    const before = server.requests.length;
    const dir = await resolveModel(REPO, { endpoint, cacheDir: tmp(), env: { HF_HOME: tmp(), HF_TOKEN: 'hf_secret' } });
    assert.ok(fixture['model.safetensors'].equals(fs.readFileSync(path.join(dir, 'model.safetensors'))));
    const seen = server.requests.slice(before);
    const hub = seen.filter((r) => r.server === 'hub');
    const cdn = seen.filter((r) => r.server === 'cdn');
    assert.ok(hub.length > 0 && cdn.length > 0);
    assert.ok(hub.every((r) => r.authorization === 'Bearer hf_secret'));
    assert.ok(new URL(server.cdnOrigin).origin !== new URL(endpoint).origin);
    assert.ok(
      cdn.every((r) => r.authorization === undefined),
      'Authorization leaked to the CDN',
    );

    // HUGGING_FACE_HUB_TOKEN and opts.token work too; opts.token wins over the environment.
    await resolveModel(REPO, {
      endpoint,
      cacheDir: tmp(),
      env: { HF_HOME: tmp(), HUGGING_FACE_HUB_TOKEN: 'hf_secret' },
    });
    await resolveModel(REPO, {
      endpoint,
      cacheDir: tmp(),
      env: { HF_HOME: tmp(), HF_TOKEN: 'wrong' },
      token: 'hf_secret',
    });
  });

  it('HF_HUB_OFFLINE=1: E_HUB_OFFLINE on an empty cache, the cached model when filled', async () => {
    const endpoint = await deadEndpoint();
    const cacheDir = tmp();
    const env = { HF_HOME: tmp(), HF_HUB_OFFLINE: '1' };
    await assert.rejects(
      resolveModel(REPO, { endpoint, cacheDir, env }),
      isCode('E_HUB_OFFLINE', UsageError, path.join(cacheDir, FOLDER), 'offline', REPO),
    );
    await assert.rejects(
      resolveModel(REPO, { endpoint, cacheDir, env: { HF_HOME: tmp() }, offline: true }),
      isCode('E_HUB_OFFLINE', UsageError),
    );
    const snap = handCache(cacheDir, storiesRepo());
    assert.equal(await resolveModel(REPO, { endpoint, cacheDir, env }), snap);
  });

  it('downloads sharded weights named by model.safetensors.index.json', async () => {
    const { a, b, index } = shard(fixture['model.safetensors']);
    const files: Record<string, Buffer> = {
      'config.json': fixture['config.json'],
      'tokenizer.json': fixture['tokenizer.json'],
      'model.safetensors.index.json': index,
      'model-00001-of-00002.safetensors': a,
      'model-00002-of-00002.safetensors': b,
    };
    const repo: FakeRepo = {
      commit: COMMIT,
      files,
      lfs: ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'],
    };
    server = await startHubServer({ repos: { 'tiny/sharded': repo } });
    const events: DownloadProgress[] = [];
    const dir = await resolveModel('tiny/sharded', {
      endpoint: server.endpoint,
      cacheDir: tmp(),
      env: { HF_HOME: tmp() },
      onProgress: (p) => events.push(p),
    });
    for (const [f, data] of Object.entries(files)) {
      assert.ok(data.equals(fs.readFileSync(path.join(dir, f))), `${f} differs`);
    }
    assert.ok(!fs.existsSync(path.join(dir, 'model.safetensors')));
    assert.ok(
      !server.requests.some((r) => r.url.endsWith('/model.safetensors')),
      'asked for model.safetensors although an index exists',
    );
    assert.ok(hasModelFiles(dir));
    const total = Object.values(files).reduce((s, d) => s + d.length, 0);
    assert.equal(events[events.length - 1].overallBytes, total);
    assert.equal(events[events.length - 1].overallTotal, total);
  });

  it('returns a local model folder as given, and names a folder without config.json', async () => {
    const dir = path.join(sharedDir()!, 'fixtures', 'stories260K');
    assert.equal(await resolveModel(dir, { offline: true }), dir);
    const empty = tmp();
    await assert.rejects(resolveModel(empty), isCode('E_MODEL_NO_CONFIG', ModelError, empty, 'config.json'));
    const missing = path.join(empty, 'nope');
    await assert.rejects(resolveModel(missing), isCode('E_MODEL_DIR_NOT_FOUND', UsageError, missing));
    await assert.rejects(resolveModel('not a repo!', { env: {} }), isCode('E_HUB_BAD_ID', UsageError));
  });

  it('reports network failures, HTTP errors and repos without safetensors as typed errors', async () => {
    const dead = await deadEndpoint();
    await assert.rejects(
      resolveModel(REPO, { endpoint: dead, cacheDir: tmp(), env: { HF_HOME: tmp() } }),
      isCode('E_HUB_NETWORK', MoiError, dead, 'HF_HUB_OFFLINE'),
    );

    server = await startHubServer({
      repos: {
        [REPO]: storiesRepo(),
        'tiny/noweights': { commit: COMMIT, files: { 'config.json': fixture['config.json'] } },
      },
      failWith: { repo: REPO, file: 'tokenizer.json', status: 500 },
    });
    const opts = () => ({ endpoint: server!.endpoint, cacheDir: tmp(), env: { HF_HOME: tmp() } });
    await assert.rejects(resolveModel(REPO, opts()), isCode('E_HUB_HTTP', MoiError, '500', 'tokenizer.json'));
    await assert.rejects(
      resolveModel('tiny/noweights', opts()),
      isCode('E_HUB_NO_WEIGHTS', ModelError, 'tiny/noweights', 'model.safetensors'),
    );
  });
});
