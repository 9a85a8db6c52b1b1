/**
 * GPU arithmetic through the CLI: with MOI_BACKEND=cpu MOI_FLUSH_SUBNORMALS=1 (the cpu backend
 * flushing float32 subnormals, as a GPU does), `moi-gen --json` gives the held-out greedy tokens
 * of every case and the MoI trajectory of reference.json, on every fixture family. Before the
 * mixer's subnormal clamp was removed, every MoI run here stopped with E_NONFINITE at step 1, as
 * it did on an NVIDIA H200 (issue 21).
 *
 * The runs call moi-gen's `main` in this process (a child process costs ~4 s each; there are 30
 * runs), with the two variables in process.env as a user sets them; one run is a real child
 * process, so the variables' path from a shell is covered too, and its --stats line names the
 * backend.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { initBackend, repoRoot, SHARED_MISSING } from '@moi/core';
import { fixtureNames, readReference } from './conformance/helpers.ts';
import { moiGenInProcess } from './support/in-process.ts';

const FLUSHING = { MOI_BACKEND: 'cpu', MOI_FLUSH_SUBNORMALS: '1' };

describe('cli on the flushing cpu backend (GPU arithmetic): held-out greedy and MoI equal the reference', function () {
  this.timeout(300_000);
  const { root, names } = fixtureNames();

  before(function () {
    if (!root || names.length === 0) {
      console.log(SHARED_MISSING);
      this.skip();
    }
  });

  after(async () => {
    await initBackend({ backend: 'wasm' });
  });

  it('every fixture family: greedy of every case, and the MoI trajectory', async () => {
    for (const name of names) {
      const dir = path.join(root!, name);
      const ref = readReference(dir);
      const runs = [
        ...ref.cases.map((c) => ({
          what: `greedy ${c.name}`,
          ids: c.input_ids,
          want: c.greedy.tokens,
          mix: ['--mode', 'standard'],
        })),
        ...ref.moi
          .filter((m) => m.mode === 'moi')
          .map((m) => ({
            what: `moi β=${m.beta}`,
            ids: m.input_ids,
            want: m.tokens,
            mix: ['--mode', 'moi', '--beta', String(m.beta), '--mix-topk', '20'],
          })),
      ];
      for (const r of runs) {
        const { code, stdout } = await moiGenInProcess(
          [
            '--model',
            dir,
            '--ids',
            r.ids.join(','),
            '--temperature',
            '0',
            '-n',
            String(r.want.length),
            '--ignore-eos',
            '--json',
            '-q',
            ...r.mix,
          ],
          FLUSHING,
        );
        assert.equal(code, 0, `${name} ${r.what}: exit code`);
        const out = JSON.parse(stdout) as { backend: string; flush_subnormals: boolean; tokens: number[] };
        assert.equal(out.backend, 'cpu');
        assert.equal(out.flush_subnormals, true, `${name} ${r.what}: the report names the flushing backend`);
        assert.deepEqual(out.tokens, r.want, `${name} ${r.what}: tokens on the flushing cpu backend`);
      }
    }
  });

  it('a child process with MOI_BACKEND=cpu MOI_FLUSH_SUBNORMALS=1: the MoI trajectory, and --stats names the backend', async function () {
    // a fixture without tokenizer.json: ids in, ids out
    const name = names.includes('llama') ? 'llama' : names[0];
    const dir = path.join(root!, name);
    const m = readReference(dir).moi.find((x) => x.mode === 'moi')!;
    const env: NodeJS.ProcessEnv = { ...process.env, ...FLUSHING };
    // --ids and no --json: the generated ids on stdout, space-separated
    const args = [
      '--import',
      'tsx',
      'packages/cli/src/bin.ts',
      '--model',
      dir,
      '--ids',
      m.input_ids.join(','),
      '--temperature',
      '0',
      '-n',
      String(m.tokens.length),
      '--ignore-eos',
      '--mode',
      'moi',
      '--beta',
      String(m.beta),
      '--stats',
      '-q',
    ];
    const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, args, { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        stdout += d;
      });
      child.stderr.setEncoding('utf8').on('data', (d: string) => {
        stderr += d;
      });
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split(/\s+/).map(Number), m.tokens, `${name}: moi trajectory`);
    assert.match(r.stderr, /^\[cpu \(flushing subnormals\), f32/m);
  });
});
