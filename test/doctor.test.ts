/**
 * moi-gen doctor (packages/cli/src/doctor/): it passes on wasm, cpu, the flushing cpu backend and
 * webgpu (Dawn; lavapipe in CI), in this process. The model and the cpu reference are made once;
 * the flushing cpu runs through the command itself (MOI_FLUSH_SUBNORMALS=1, --json), and a
 * backend that cannot start ends in a failed verdict, exit 1 and a one-line error. What the
 * checks catch is shown in test/subnormal.test.ts and test/teacher-forced.test.ts; here: that
 * correct backends pass and that the report says what it checked.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { initBackend } from '@moi/core';
import {
  checkBackend,
  doctorReference,
  formatDoctor,
  listBackends,
  type BackendInfo,
  type BackendResult,
  type DoctorReference,
  type DoctorReport,
} from '../packages/cli/src/doctor/doctor.ts';
import { writeDoctorModel } from '../packages/cli/src/doctor/model.ts';
import { moiGenInProcess } from './support/in-process.ts';

/** trajectories of 8 steps (the command's default is 16): lavapipe is slow */
const STEPS = 8;
const CHECKS = ['logits', 'greedy', 'moi', 'batched rows', 'direct (teacher-forced)', 'soft (teacher-forced)'];

function assertPassed(r: BackendResult, label: string): void {
  assert.deepEqual(
    r.checks.map((c) => c.name),
    CHECKS,
    `${label}: the checks`,
  );
  for (const c of r.checks) assert.ok(c.ok, `${label}: ${c.name}: ${c.detail}`);
  assert.ok(r.decode && r.decode.tokPerSec > 0, `${label}: a timed decode`);
}

describe('moi-gen doctor', function () {
  this.timeout(300_000);
  let dir = '';
  let ref: DoctorReference;
  let backends: BackendInfo[];

  before(async () => {
    backends = await listBackends();
    dir = writeDoctorModel();
    ref = await doctorReference(dir, STEPS);
  });
  after(async () => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    await initBackend({ backend: 'wasm' });
  });

  it('lists every backend: whether it starts, or why not; wasm SIMD and threads; tfjs-node', () => {
    assert.deepEqual(
      backends.map((b) => b.name),
      ['tensorflow', 'wasm', 'cpu', 'webgpu'],
    );
    for (const b of backends) assert.ok(b.starts ? b.package : b.why, `${b.name}: a package or a reason`);
    const wasm = backends.find((b) => b.name === 'wasm')!;
    assert.equal(wasm.starts, true);
    assert.equal(typeof wasm.details.simd, 'boolean');
    assert.equal(wasm.details.threads, false);
    assert.match(String(backends[0].details['tfjs-node']), /loaded|not installed|did not load/);
    const webgpu = backends.find((b) => b.name === 'webgpu')!;
    if (webgpu.starts) assert.ok(Number(webgpu.details.maxStorageBufferBindingSize) > 0, 'the adapter limits');
  });

  it('passes on wasm', async () => {
    assertPassed(await checkBackend(dir, ref, { backend: 'wasm' }), 'wasm');
  });

  it('passes on cpu', async () => {
    assertPassed(await checkBackend(dir, ref, { backend: 'cpu', flushSubnormals: false }), 'cpu');
  });

  it('passes on webgpu', async function () {
    const webgpu = backends.find((b) => b.name === 'webgpu')!;
    if (!webgpu.starts) {
      console.log(`      [skip] doctor on webgpu: ${webgpu.why}`);
      this.skip();
    }
    const r = await checkBackend(dir, ref, { backend: 'webgpu' });
    assertPassed(r, 'webgpu');
    console.log(
      `      [doctor] webgpu: decode ${r.decode!.tokPerSec.toFixed(1)} tok/s (cpu ${r.decode!.cpuTokPerSec.toFixed(1)})`,
    );
  });

  it('passes on the flushing cpu backend, through the command (MOI_FLUSH_SUBNORMALS=1, --json)', async () => {
    const { code, stdout, stderr } = await moiGenInProcess(
      ['doctor', '--backend', 'cpu', '--json', '-q', '-n', String(STEPS)],
      { MOI_FLUSH_SUBNORMALS: '1', MOI_BACKEND: undefined },
    );
    assert.equal(code, 0, stderr);
    const report = JSON.parse(stdout) as DoctorReport;
    assert.equal(report.ok, true);
    assert.deepEqual(report.result.backend && [report.result.backend.label, report.result.backend.flushSubnormals], [
      'cpu (flushing subnormals)',
      true,
    ]);
    assertPassed(report.result, 'flushing cpu');
    // the plain text says the same
    const text = formatDoctor(report);
    assert.match(text, /^verdict: all 6 checks passed on cpu \(flushing subnormals\)$/m);
    for (const c of CHECKS) assert.match(text, new RegExp(`^  PASS  ${c.replace(/[()]/g, '\\$&')} `, 'm'));
  });

  it('a backend that cannot start: a failed verdict, exit 1, one error line', async () => {
    const { code, stdout, stderr } = await moiGenInProcess(['doctor', '--backend', 'wasm', '-q'], {
      MOI_FLUSH_SUBNORMALS: '1',
    });
    assert.equal(code, 1);
    assert.match(stdout, /^ {2}FAIL {2}start +flushing subnormals \(MOI_FLUSH_SUBNORMALS=1\) needs the cpu backend/m);
    assert.match(stdout, /^verdict: 1 of 1 checks failed/m);
    assert.match(stderr, /^moi-gen: error: doctor: 1 check\(s\) failed .*: start\n$/);
  });
});
