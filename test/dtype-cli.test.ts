/**
 * `--dtype` through the CLI on the real stories260K model (test/support/cli.ts: in-process through
 * main(argv); child processes for the cpu backend and the server):
 * - a value outside auto|f32|bf16|q8 exits 2 on every command, with commander's message naming
 *   the flag, before anything loads;
 * - generate --json / --stats, score --json, bench --json, serve's start-up line and /v1/models
 *   carry the loaded dtype and its note; f32 and auto (an f32 checkpoint) give the reference's
 *   greedy tokens;
 * - bf16 and q8 (the packed loader): the dtype is reported, the q8 weight bytes are the hand
 *   computation's, q8 on the cpu backend (widened at load) gives wasm q8's logits;
 * - eval's run.json records --dtype: a resume with another is refused, a run.json from before the
 *   flag resumes under the default.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sharedDir, SHARED_MISSING } from '@moi/core';
import { moiGen, pool as all, spawnCli } from './support/cli.ts';

const shared = sharedDir();
const model = shared ? path.join(shared, 'fixtures', 'stories260K') : '';

const run = (args: string[]) => moiGen(args);
/** A child process: --backend cpu switches the tfjs backend, which must not happen in the test process. */
const runProcess = (args: string[]) => moiGen(args, { process: true });

interface GenerateJson {
  backend: string;
  dtype: string;
  dtypeNote: string;
  tokens: number[];
}
interface ScoreJson {
  backend: string;
  dtype: string;
  dtypeNote: string;
  logits: number[][];
}

const PROMPT = 'Once upon a time';

describe('cli: --dtype', function () {
  this.timeout(300_000);
  let greedy: number[];

  before(function () {
    if (!shared) {
      console.log(`      ${SHARED_MISSING}`);
      this.skip();
    }
    const ref = JSON.parse(fs.readFileSync(path.join(model, 'reference.json'), 'utf8')) as {
      cases: { input_ids: number[]; greedy: { tokens: number[] } }[];
    };
    const c = ref.cases.find((x) => x.input_ids.join() === '1,403,407,261,378');
    assert.ok(c, 'stories260K reference has the "Once upon a time" case');
    greedy = c.greedy.tokens;
  });

  it('a bad value exits 2 on every command, naming --dtype and the choices', async () => {
    const commands: string[][] = [
      ['-m', model, PROMPT],
      ['chat', '-m', model],
      ['score', '-m', model, PROMPT],
      ['serve', '-m', model],
      ['eval', '-m', model, '--task', 'countdown:gen', '--out', path.join(os.tmpdir(), 'moi-never-written')],
      ['bench', '-m', model],
    ];
    const results = await all(commands.map((c) => () => run([...c, '--dtype', 'fp8'])));
    results.forEach((r, i) => {
      const label = commands[i][0];
      assert.equal(r.code, 2, `${label}: ${r.stderr}`);
      assert.equal(r.stdout, '', label);
      assert.match(
        r.stderr,
        /^moi-gen: error: option '--dtype <dtype>' argument 'fp8' is invalid\. Allowed choices are auto, f32, bf16, q8\./,
        label,
      );
    });
  });

  it('f32 and auto: --json and --stats report f32, and the tokens are the reference greedy ones', async () => {
    const n = Math.min(12, greedy.length);
    const [f32, auto, stats, score] = await all([
      () =>
        run(['-m', model, '--dtype', 'f32', '--json', '--temperature', '0', '-n', String(n), '--ignore-eos', PROMPT]),
      () => run(['-m', model, '--json', '--temperature', '0', '-n', String(n), '--ignore-eos', PROMPT]),
      () => run(['-m', model, '--dtype', 'auto', '--stats', '--temperature', '0', '-n', '4', PROMPT]),
      () => run(['score', '-m', model, '--dtype', 'f32', '--json', PROMPT]),
    ]);
    for (const [r, label] of [
      [f32, '--dtype f32'],
      [auto, 'default (auto)'],
    ] as const) {
      assert.equal(r.code, 0, r.stderr);
      const j = JSON.parse(r.stdout) as GenerateJson;
      assert.equal(j.dtype, 'f32', label);
      assert.match(j.dtypeNote, /f32 checkpoint/, label);
      assert.deepEqual(j.tokens, greedy.slice(0, n), label);
    }
    assert.equal(stats.code, 0, stats.stderr);
    assert.match(stats.stderr, /^\[wasm, f32 checkpoint[^\]]*\] prompt 5 tok, [\d.]+ tok\/s/m);
    assert.equal(score.code, 0, score.stderr);
    const s = JSON.parse(score.stdout) as ScoreJson;
    assert.equal(s.dtype, 'f32');
    assert.equal(s.logits.length, 5);
  });

  it('bf16 and q8: reported by generate and bench; q8 holds the hand-computed bytes; q8 on cpu widens to the same logits', async function () {
    const [bf16, q8, q8cpu, q8score, f32score, bench] = await all([
      () => run(['-m', model, '--dtype', 'bf16', '--json', '--temperature', '0', '-n', '6', PROMPT]),
      () => run(['-m', model, '--dtype', 'q8', '--json', '--stats', '--temperature', '0', '-n', '6', PROMPT]),
      () => runProcess(['score', '-m', model, '--dtype', 'q8', '--backend', 'cpu', '--json', PROMPT]),
      () => run(['score', '-m', model, '--dtype', 'q8', '--backend', 'wasm', '--json', PROMPT]),
      () => run(['score', '-m', model, '--dtype', 'f32', '--backend', 'wasm', '--json', PROMPT]),
      () =>
        run([
          'bench',
          '-m',
          model,
          '--dtype',
          'q8',
          '--backend',
          'wasm',
          '--json',
          '--prompt-tokens',
          '8',
          '--gen-tokens',
          '4',
          '--repeat',
          '1',
          '--batches',
          '',
          '-q',
        ]),
    ]);
    if (/held in f32 only for now/.test(bf16.stderr)) {
      // the loader before the packed weights (issue 15's loader branch) refuses bf16/q8 with E_DTYPE
      console.log('      (skipped: this loader refuses --dtype bf16/q8)');
      this.skip();
    }
    for (const [r, dtype, note] of [
      [bf16, 'bf16', /rounded to bf16/],
      [q8, 'q8', /quantized/],
    ] as const) {
      assert.equal(r.code, 0, r.stderr);
      const j = JSON.parse(r.stdout) as GenerateJson;
      assert.equal(j.backend, 'wasm');
      assert.equal(j.dtype, dtype);
      assert.match(j.dtypeNote, note);
      assert.equal(j.tokens.length, 6);
    }
    assert.equal(bench.code, 0, bench.stderr);
    const b = JSON.parse(bench.stdout) as {
      dtype: string;
      dtypeNote: string;
      weight_bytes: number;
      roofline: { bytes_per_token: number };
      kernels_active: boolean;
      kernels_off: unknown;
      threads_note: string;
      step_profile: { by_name: Record<string, number> };
    };
    assert.equal(b.dtype, 'q8');
    // the matrices ran in the thread pool (wasm's default, at one thread too), not as tfjs kernels;
    // our attention/norm kernels ran; no kernels-off twin runs over packed weights
    assert.equal(b.kernels_active, true);
    assert.equal(b.kernels_off, null);
    assert.match(b.threads_note, /^threads 1 \(pool, simd /);
    assert.equal(b.step_profile.by_name.MoiPackedMatMul, undefined, JSON.stringify(b.step_profile.by_name));
    assert.ok((b.step_profile.by_name.MoiDecodeAttention ?? 0) > 0, JSON.stringify(b.step_profile.by_name));
    assert.match(b.dtypeNote, /quantized/);
    // stories260K: hidden 64, intermediate 172, 5 layers, 8 heads and 4 KV heads of 8, vocab 512, tied.
    // In the thread pool each layer holds its fused groups, q|k|v [128, 64], o [64, 64], gate|up
    // [344, 64] and down [64, 172], rows and columns padded to 32 (344 → 352, 172 → 192): q8 is
    // one byte per value + an f32 scale per block of 32 along each padded row; norms f32.
    const mats = [
      [128, 64],
      [64, 64],
      [344, 64],
      [64, 172],
    ];
    const p32 = (n: number) => Math.ceil(n / 32) * 32;
    const q8Bytes = (r: number, c: number) => p32(r) * p32(c) + p32(r) * (p32(c) / 32) * 4;
    // Packed matrices carry no folded scale: each layer also holds the attention scale as an f32
    // outScale over its fused q|k|v outputs (64 + 32 + 32).
    const want =
      5 * mats.reduce((n, [r, c]) => n + q8Bytes(r, c), 0) + q8Bytes(512, 64) + (5 * 2 * 64 + 64) * 4 + 5 * 128 * 4;
    assert.equal(want, 307_200);
    assert.equal(b.weight_bytes, want);
    assert.equal(b.roofline.bytes_per_token, want, 'a tied table is the head: read whole every step');
    // the cpu backend holds q8 widened to f32 (dequantized at load): wasm q8's logits up to summation
    // order and the pool's int8 rounding of each matmul's input per block of 32 (llama.cpp's
    // Q8_0 × Q8_0: an element by at most max|block|/254, a row by √32/254 of its norm; 4 matmul
    // stages a layer and the head, first order, as in packed.test.ts)
    assert.equal(q8cpu.code, 0, q8cpu.stderr);
    assert.equal(q8score.code, 0, q8score.stderr);
    const cpu = JSON.parse(q8cpu.stdout) as ScoreJson;
    const wasm = JSON.parse(q8score.stdout) as ScoreJson;
    const f32 = JSON.parse(f32score.stdout) as ScoreJson;
    assert.equal(cpu.backend, 'cpu');
    assert.equal(cpu.dtype, 'f32');
    assert.match(cpu.dtypeNote, /^cpu: .*widened to f32 at load/);
    assert.equal(wasm.dtype, 'q8');
    const maxDiff = (a: number[][], b: number[][]) =>
      Math.max(...a.flatMap((row, t) => row.map((v, i) => Math.abs(v - b[t][i]))));
    const scale = Math.max(...f32.logits.flat().map(Math.abs));
    const tol = 1e-5 + ((4 * 5 + 1) * Math.sqrt(32)) / 254;
    assert.ok(
      maxDiff(cpu.logits, wasm.logits) <= tol * scale,
      `cpu vs wasm q8: ${maxDiff(cpu.logits, wasm.logits)} over ${tol} × ${scale}`,
    );
    assert.ok(
      maxDiff(cpu.logits, f32.logits) > 1e-5 * scale && maxDiff(wasm.logits, f32.logits) > 1e-5 * scale,
      'q8 logits are not the f32 ones (the weights were quantized)',
    );
  });

  it('serve: the start-up line and /v1/models carry the dtype', async () => {
    const srv = await spawnCli(['serve', '-m', model, '--dtype', 'f32', '--port', '0', '--max-seqs', '1']);
    let exited = false;
    void srv.done.then(() => {
      exited = true;
    });
    try {
      let url: string | undefined;
      for (let i = 0; i < 1200 && !url && !exited; i++) {
        await new Promise((r) => setTimeout(r, 50));
        url = /on (http:\/\/\S+)/.exec(srv.stderr())?.[1];
      }
      assert.ok(url, `serve started: ${srv.stderr()}`);
      assert.match(srv.stderr(), /^moi-gen serve: \S+ \(llama, wasm, weights f32 checkpoint[^)]*\) on http/m);
      const models = (await (await fetch(`${url}/v1/models`)).json()) as {
        data: { dtype: string; dtypeNote: string }[];
      };
      assert.equal(models.data[0].dtype, 'f32');
      assert.match(models.data[0].dtypeNote, /f32 checkpoint/);
    } finally {
      srv.child.kill('SIGTERM');
    }
    const r = await srv.done;
    assert.equal(r.code, 0, r.stderr);
  });

  it('eval: run.json records --dtype; a resume with another is refused; a run.json from before --dtype resumes as auto', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moi-dtype-eval-'));
    try {
      const args = (out: string, ...more: string[]) => [
        'eval',
        '--model',
        model,
        '--task',
        'countdown:gen',
        '--limit',
        '2',
        '--modes',
        'standard',
        '--max-tokens',
        '3',
        '--temperature',
        '0',
        '--seed',
        '3',
        '--out',
        out,
        '-q',
        ...more,
      ];
      const a = path.join(tmp, 'a');
      const b = path.join(tmp, 'b');
      const [ra, rb] = await all([() => run(args(a, '--dtype', 'f32')), () => run(args(b))]);
      assert.equal(ra.code, 0, ra.stderr);
      assert.equal(rb.code, 0, rb.stderr);
      assert.equal(JSON.parse(fs.readFileSync(path.join(a, 'run.json'), 'utf8')).dtype, 'f32');
      assert.equal(JSON.parse(fs.readFileSync(path.join(b, 'run.json'), 'utf8')).dtype, 'auto');
      // another dtype in the same folder: refused before a model loads, naming the setting
      const other = await run(args(a, '--dtype', 'q8'));
      assert.equal(other.code, 2);
      assert.match(other.stderr, /holds a run with different settings \(dtype: "f32" there, "q8" now\)/);
      // a run.json written before --dtype existed (no dtype key) is an auto run
      const file = path.join(b, 'run.json');
      const { dtype: _d, ...legacy } = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
      fs.writeFileSync(file, JSON.stringify(legacy, null, 2) + '\n');
      const resumed = await run(args(b));
      assert.equal(resumed.code, 0, resumed.stderr);
      assert.match(resumed.stderr, /resumed: 2 results/);
      const refused = await run(args(b, '--dtype', 'f32'));
      assert.equal(refused.code, 2);
      assert.match(refused.stderr, /different settings \(dtype: "auto" there, "f32" now\)/);
      // with --endpoint the server holds the weights: --dtype is refused, not ignored
      const ep = await run([
        'eval',
        '--model',
        'm',
        '--task',
        'countdown:gen',
        '--endpoint',
        'http://127.0.0.1:9/v1',
        '--dtype',
        'q8',
        '--out',
        path.join(tmp, 'ep'),
      ]);
      assert.equal(ep.code, 2);
      assert.match(ep.stderr, /--dtype is for in-process runs/);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
