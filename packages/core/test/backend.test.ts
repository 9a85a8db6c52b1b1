/**
 * initBackend's choice, forcing and errors. Backend state is process-global, so each scenario
 * runs in its own child process (test/fixtures/backend-child.ts), all started at once.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { BACKENDS } from '../src/backend.ts';

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const coreDir = fileURLToPath(new URL('..', import.meta.url));
const child = fileURLToPath(new URL('./fixtures/backend-child.ts', import.meta.url));

function run(
  file: string,
  args: string[],
  cwd: string,
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const base = { ...process.env };
  delete base.MOI_BACKEND;
  return new Promise((resolve) => {
    execFile(file, args, { cwd, env: { ...base, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** Run one child scenario and parse its `REPORT <json>` line. */
async function scenario(name: string, env: Record<string, string>): Promise<any> {
  const r = await run(process.execPath, ['--import', 'tsx', child, name], repoRoot, env);
  const line = r.stdout
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('REPORT '));
  assert.ok(
    r.code === 0 && line,
    `child '${name}' ${JSON.stringify(env)} failed (exit ${r.code}):\n${r.stdout}\n${r.stderr}`,
  );
  return JSON.parse(line.slice('REPORT '.length));
}

/** Independent probe: can plain Node load tfjs-node(-gpu) from @moi/core? */
async function tensorflowImportable(): Promise<boolean> {
  const code = `for (const p of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    try { require(p); console.log('yes'); process.exit(0); } catch {} } console.log('no');`;
  const r = await run(process.execPath, ['-e', code], coreDir, {});
  return r.stdout.trim().split('\n').pop() === 'yes';
}

describe('backend', function () {
  this.timeout(90_000);
  let tfImportable = false;
  let auto: any;
  let wasmThenCpu: any;
  let cpuThenWasm: any;

  before(async () => {
    [tfImportable, auto, wasmThenCpu, cpuThenWasm] = await Promise.all([
      tensorflowImportable(),
      scenario('auto', {}),
      scenario('switch', { MOI_BACKEND: 'wasm', SWITCH_TO: 'cpu' }),
      scenario('switch', { MOI_BACKEND: ' CPU ', SWITCH_TO: 'wasm' }),
    ]);
  });

  it('default: tensorflow where tfjs-node loads, else wasm, with the skipped packages named', () => {
    const r = auto.report;
    const expected = tfImportable ? 'tensorflow' : 'wasm';
    assert.equal(r.name, expected, `report ${JSON.stringify(r)}`);
    assert.equal(auto.backend, expected);
    assert.deepEqual(auto.matmul, [19, 22, 43, 50]);
    assert.match(r.reason, /best available/);
    if (!tfImportable) {
      assert.equal(r.package, '@tensorflow/tfjs-backend-wasm');
      assert.deepEqual(
        r.skipped.map((s: any) => s.package),
        ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'],
      );
      for (const s of r.skipped) {
        assert.equal(s.name, 'tensorflow');
        assert.ok(typeof s.error === 'string' && s.error.length > 0, 'skipped entry says why');
      }
      for (const p of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'])
        assert.ok(r.reason.includes(`${p} unavailable`), r.reason);
    }
  });

  it('MOI_BACKEND=wasm forces wasm (single-threaded) and computes a matmul right', () => {
    const w = wasmThenCpu;
    assert.equal(w.first.name, 'wasm');
    assert.equal(w.first.package, '@tensorflow/tfjs-backend-wasm');
    assert.equal(w.first.reason, 'forced by MOI_BACKEND');
    assert.deepEqual(w.first.skipped, []);
    assert.equal(w.firstBackend, 'wasm');
    assert.deepEqual(w.firstMatmul, [19, 22, 43, 50]);
    assert.equal(w.wasmMultithread, false);
    assert.equal(w.again, true, 'a second initBackend() returns the same report');
  });

  it('MOI_BACKEND is trimmed and case-insensitive: " CPU " forces cpu', () => {
    const c = cpuThenWasm;
    assert.equal(c.first.name, 'cpu');
    assert.equal(c.first.package, '@tensorflow/tfjs-backend-cpu');
    assert.equal(c.first.reason, 'forced by MOI_BACKEND');
    assert.equal(c.firstBackend, 'cpu');
    assert.deepEqual(c.firstMatmul, [19, 22, 43, 50]);
  });

  it('the backend option forces a backend and wins over MOI_BACKEND (wasm→cpu, cpu→wasm)', () => {
    for (const [r, to] of [
      [wasmThenCpu, 'cpu'],
      [cpuThenWasm, 'wasm'],
    ] as const) {
      assert.equal(r.second.name, to);
      assert.equal(r.second.reason, 'forced by option');
      assert.equal(r.secondBackend, to);
      assert.deepEqual(r.secondMatmul, [19, 22, 43, 50]);
      assert.equal(r.backendReportIsSecond, true, 'backendReport() is the last report');
    }
  });

  it('an unknown backend is a BackendError listing the valid names (option or MOI_BACKEND)', () => {
    for (const r of [wasmThenCpu, cpuThenWasm]) {
      for (const [attempt, bad] of [
        [r.bogusOption, 'bogus'],
        [r.bogusEnv, 'bogus'],
      ] as const) {
        assert.ok(attempt.error, `expected an error, got ${JSON.stringify(attempt)}`);
        assert.equal(attempt.error.name, 'BackendError');
        assert.equal(attempt.error.code, 'E_BACKEND');
        assert.ok(attempt.error.message.includes(`'${bad}'`), attempt.error.message);
        for (const name of ['tensorflow', 'wasm', 'cpu', 'webgpu'])
          assert.ok(attempt.error.message.includes(name), `${name} in ${attempt.error.message}`);
      }
      assert.match(r.bogusEnv.error.message, /MOI_BACKEND/);
      // the active backend is untouched by a refused request
      assert.equal(r.bogusOption.backend, r.secondBackend);
    }
    assert.deepEqual([...BACKENDS].sort(), ['cpu', 'tensorflow', 'wasm', 'webgpu']);
  });

  it('forcing tensorflow without tfjs-node is a BackendError naming @tensorflow/tfjs-node', () => {
    for (const r of [wasmThenCpu, cpuThenWasm]) {
      const t = r.tensorflow;
      if (tfImportable) {
        assert.equal(t.ok?.name, 'tensorflow', JSON.stringify(t));
        assert.equal(t.backend, 'tensorflow');
        continue;
      }
      assert.ok(t.error, `expected an error, got ${JSON.stringify(t)}`);
      assert.equal(t.error.name, 'BackendError');
      assert.equal(t.error.code, 'E_BACKEND');
      assert.match(t.error.message, /@tensorflow\/tfjs-node(?!-gpu)/);
      assert.match(t.error.message, /tensorflow/);
      assert.equal(t.backend, r.secondBackend, 'the previous backend stays active');
    }
  });
});
