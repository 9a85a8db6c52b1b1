/**
 * Benchmark of `moi-gen serve` (continuous batching) on a synthetic model shape: 1, 4 and 16
 * concurrent streaming clients. Reports aggregate generation tok/s, time to first token and
 * inter-token latency (p50/p95), and the ratio of aggregate tok/s to batch-1 decode.
 *
 *   node_modules/.bin/tsx bench/serve.ts [--config ../shared/peer-bench/configs/smollm2-135m.json]
 *     [--clients 1,4,16] [--prompt-tokens 64] [--gen-tokens 32] [--requests 2] [--max-seqs 16] [--json FILE]
 *
 * The model folder is written with synthesizeModel (seed 1, f32) into a temp folder; the server
 * is the real binary (`moi-gen serve --port 0`) as a child process; each client sends its
 * requests one after another, streaming, with ignore_eos so every request makes gen-tokens tokens.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { synthesizeModel } from '../packages/cli/src/synth.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: a } = parseArgs({
  options: {
    config: { type: 'string', default: path.resolve(root, '../shared/peer-bench/configs/smollm2-135m.json') },
    clients: { type: 'string', default: '1,4,16' },
    'prompt-tokens': { type: 'string', default: '64' },
    'gen-tokens': { type: 'string', default: '32' },
    requests: { type: 'string', default: '2' },
    'max-seqs': { type: 'string', default: '16' },
    json: { type: 'string' },
  },
});
const clients = a.clients!.split(',').map(Number);
const P = Number(a['prompt-tokens']);
const G = Number(a['gen-tokens']);
const R = Number(a.requests);

const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return NaN;
  const s = xs.slice().sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

interface One {
  ttft: number;
  itl: number[];
  tokens: number;
}

/** One streaming request: time to first token, gaps between tokens (ms). */
async function request(url: string, prompt: number[]): Promise<One> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      prompt,
      max_tokens: G,
      temperature: 0,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const reader = res.body.getReader();
  let buf = '';
  let last = 0;
  let ttft = 0;
  const itl: number[] = [];
  let tokens = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += Buffer.from(value).toString();
    let i: number;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
      const j = JSON.parse(ev.slice(6)) as {
        choices: unknown[];
        usage?: { completion_tokens: number };
        error?: { message: string };
      };
      if (j.error) throw new Error(j.error.message);
      if (j.usage) {
        tokens = j.usage.completion_tokens;
        continue;
      }
      // a synthetic model has no tokenizer: each chunk is one token (its id as text)
      const now = performance.now();
      if (!ttft) ttft = now - t0;
      else itl.push(now - last);
      last = now;
    }
  }
  return { ttft, itl, tokens };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'moi-bench-serve-'));
  const results: Record<string, unknown>[] = [];
  let child: ReturnType<typeof spawn> | null = null;
  try {
    const synth = synthesizeModel({ config: a.config!, out: dir, seed: 1 });
    process.stderr.write(
      `model: ${synth.modelType}, ${(synth.params / 1e6).toFixed(1)}M params (${path.basename(a.config!)})\n`,
    );
    child = spawn(
      process.execPath,
      [
        path.join(root, 'packages/cli/bin/moi-gen.js'),
        'serve',
        '--model',
        dir,
        '--port',
        '0',
        '--max-seqs',
        a['max-seqs']!,
        '--max-model-len',
        String(Math.max(256, P + G + 8)),
        '--max-waiting',
        '1024',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    child.stderr!.on('data', (d) => {
      err += String(d);
    });
    const t0 = Date.now();
    while (!/ on (http:\/\/[\d.]+:\d+)/.test(err)) {
      if (Date.now() - t0 > 120_000 || child.exitCode !== null) throw new Error(`server did not start:\n${err}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    process.stderr.write(err.split('\n').find((l) => l.includes(' on http')) + '\n');
    const url = / on (http:\/\/[\d.]+:\d+)/.exec(err)![1];
    const prompt = (k: number) => Array.from({ length: P }, (_, i) => 1000 + (((i + 131 * k) * 7919) % 40000));
    await request(url, prompt(999)); // warm-up
    let base = 0;
    for (const c of clients) {
      const start = performance.now();
      const runs = await Promise.all(
        Array.from({ length: c }, async (_, k) => {
          const out: One[] = [];
          for (let r = 0; r < R; r++) out.push(await request(url, prompt(k * R + r)));
          return out;
        }),
      );
      const wall = (performance.now() - start) / 1000;
      const all = runs.flat();
      const tokens = all.reduce((n, o) => n + o.tokens, 0);
      const tokPerSec = tokens / wall;
      if (c === clients[0]) base = tokPerSec;
      const row = {
        clients: c,
        requests: all.length,
        tokens,
        seconds: Number(wall.toFixed(2)),
        aggregateTokPerSec: Number(tokPerSec.toFixed(1)),
        ttftP50Ms: Math.round(
          pct(
            all.map((o) => o.ttft),
            50,
          ),
        ),
        ttftP95Ms: Math.round(
          pct(
            all.map((o) => o.ttft),
            95,
          ),
        ),
        itlP50Ms: Math.round(
          pct(
            all.flatMap((o) => o.itl),
            50,
          ),
        ),
        itlP95Ms: Math.round(
          pct(
            all.flatMap((o) => o.itl),
            95,
          ),
        ),
        ratioToBatch1: Number((tokPerSec / base).toFixed(2)),
      };
      results.push(row);
      process.stdout.write(`${JSON.stringify(row)}\n`);
    }
    process.stdout.write(
      '\n| clients | aggregate tok/s | × batch-1 | TTFT p50 / p95 (ms) | ITL p50 / p95 (ms) |\n|---|---|---|---|---|\n',
    );
    for (const r of results as {
      clients: number;
      aggregateTokPerSec: number;
      ratioToBatch1: number;
      ttftP50Ms: number;
      ttftP95Ms: number;
      itlP50Ms: number;
      itlP95Ms: number;
    }[]) {
      process.stdout.write(
        `| ${r.clients} | ${r.aggregateTokPerSec} | ${r.ratioToBatch1} | ${r.ttftP50Ms} / ${r.ttftP95Ms} | ${r.itlP50Ms} / ${r.itlP95Ms} |\n`,
      );
    }
    if (a.json)
      writeFileSync(
        a.json,
        JSON.stringify({ config: a.config, promptTokens: P, genTokens: G, requestsPerClient: R, results }, null, 2),
      );
  } finally {
    if (child && child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child!.once('exit', r));
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
