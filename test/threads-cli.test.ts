/**
 * `--threads N` through the CLI (issue 26 phase B) on the real stories260K model
 * (test/support/cli.ts: in-process through main(argv); a child process for the server):
 * - a value outside 1..256 exits 2 on every command that loads a model, naming --threads, before
 *   anything loads; a bad $MOI_THREADS names MOI_THREADS;
 * - generate --json / --stats, score --json, bench --json, doctor and serve's start-up line carry
 *   the thread count and the pool's SIMD path; at 2 threads the greedy tokens are still the
 *   reference's (the f32 weights in the pool), at 1 thread the matrices stay on tfjs's kernels.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sharedDir, SHARED_MISSING } from '@moi/core';
import { moiGen, pool as all, spawnCli } from './support/cli.ts';

const shared = sharedDir();
const model = shared ? path.join(shared, 'fixtures', 'stories260K') : '';
const PROMPT = 'Once upon a time';

interface GenerateJson {
  threads: number;
  simd: string | null;
  tokens: number[];
}

describe('cli: --threads', function () {
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
    greedy = ref.cases.find((x) => x.input_ids.join() === '1,403,407,261,378')!.greedy.tokens;
  });

  it('a bad value exits 2 on every command, naming --threads; a bad MOI_THREADS names it', async () => {
    const commands: string[][] = [
      ['-m', model, PROMPT],
      ['chat', '-m', model],
      ['score', '-m', model, PROMPT],
      ['serve', '-m', model],
      ['eval', '-m', model, '--task', 'countdown:gen', '--out', path.join(os.tmpdir(), 'moi-never-written')],
      ['bench', '-m', model],
      ['doctor'],
    ];
    for (const bad of ['0', '257', 'two', '1.5']) {
      const results = await all(commands.map((c) => () => moiGen([...c, '--threads', bad])));
      results.forEach((r, i) => {
        const label = `${commands[i][0]} --threads ${bad}`;
        assert.equal(r.code, 2, `${label}: ${r.stderr}`);
        assert.equal(r.stdout, '', label);
        assert.match(r.stderr, /^moi-gen: error: --threads must be an integer from 1 to 256 .*got "/, label);
      });
    }
    const env = await moiGen(['-m', model, '-n', '2', PROMPT], { env: { MOI_THREADS: 'lots' } });
    assert.equal(env.code, 2, env.stderr);
    assert.match(env.stderr, /MOI_THREADS must be an integer from 1 to 256 .*got "lots"/);
  });

  it('generate, score and bench report the threads and the SIMD path; 2 threads keep the reference greedy tokens', async () => {
    const n = Math.min(12, greedy.length);
    const [two, one, stats, score, bench] = await all([
      () =>
        moiGen([
          '-m',
          model,
          '--threads',
          '2',
          '--json',
          '--temperature',
          '0',
          '-n',
          String(n),
          '--ignore-eos',
          PROMPT,
        ]),
      () =>
        moiGen([
          '-m',
          model,
          '--threads',
          '1',
          '--json',
          '--temperature',
          '0',
          '-n',
          String(n),
          '--ignore-eos',
          PROMPT,
        ]),
      () => moiGen(['-m', model, '--threads', '3', '--stats', '--temperature', '0', '-n', '4', PROMPT]),
      () => moiGen(['score', '-m', model, '--threads', '2', '--json', PROMPT]),
      () =>
        moiGen([
          'bench',
          '-m',
          model,
          '--threads',
          '2',
          '--json',
          '--prompt-tokens',
          '8',
          '--gen-tokens',
          '4',
          '--repeat',
          '1',
          '--batches',
          '',
          '--no-roofline',
          '-q',
        ]),
    ]);
    for (const r of [two, one, stats, score, bench]) assert.equal(r.code, 0, r.stderr);
    const j2 = JSON.parse(two.stdout) as GenerateJson;
    const j1 = JSON.parse(one.stdout) as GenerateJson;
    assert.equal(j2.threads, 2);
    assert.match(String(j2.simd), /^(relaxed|simd128)$/);
    assert.deepEqual(j2.tokens, greedy.slice(0, n));
    // one thread runs the pool too (its main thread alone), on the same SIMD path
    assert.equal(j1.threads, 1);
    assert.equal(j1.simd, j2.simd);
    assert.deepEqual(j1.tokens, greedy.slice(0, n));
    assert.match(
      stats.stderr,
      /^\[wasm, f32 checkpoint in f32, threads 3 \(pool, simd (relaxed|simd128)[^\]]*\] prompt 5 tok/m,
    );
    const s = JSON.parse(score.stdout) as { threads: number; simd: string };
    assert.equal(s.threads, 2);
    const b = JSON.parse(bench.stdout) as { threads: number; simd: string | null; threads_note: string };
    assert.equal(b.threads, 2);
    assert.equal(b.simd, j2.simd);
    assert.match(b.threads_note, /^threads 2 \(pool, simd /);
  });

  it('doctor reports the threads it checked, and passes on the pool', async () => {
    const r = await moiGen(['doctor', '--backend', 'wasm', '--threads', '2', '-n', '4', '-q']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ {2}info {2}threads +threads 2 \(pool, simd (relaxed|simd128)/m);
    assert.match(r.stdout, /verdict: all \d+ checks passed on wasm/);
  });

  it('serve: the start-up line carries the threads', async () => {
    const srv = await spawnCli(['serve', '-m', model, '--threads', '2', '--port', '0', '--max-seqs', '1']);
    let exited = false;
    void srv.done.then(() => {
      exited = true;
    });
    try {
      let line: string | undefined;
      for (let i = 0; i < 1200 && !line && !exited; i++) {
        await new Promise((r) => setTimeout(r, 50));
        line = /^moi-gen serve: .* on http:\/\/\S+ · .*$/m.exec(srv.stderr())?.[0];
      }
      assert.ok(line, `serve started: ${srv.stderr()}`);
      assert.match(line, / on http:\/\/\S+ · threads 2 \(pool, simd (relaxed|simd128)/);
    } finally {
      srv.child.kill('SIGTERM');
    }
    const r = await srv.done;
    assert.equal(r.code, 0, r.stderr);
  });
});
