/**
 * The subnormal-flushing cpu backend (flush.ts): with it, kernels see and produce float32
 * subnormals as zero, as a GPU does; without it (plain cpu) they keep them. Checked against
 * hand-computed values: log(max(0, 1e-38)) is −∞ flushed and ln(1e-38) ≈ −87.50 plain; 1e-20² is
 * 0 flushed and 1e-40 (a subnormal) plain. Also: the caller's tensors are never changed, nothing
 * leaks, it is switched off again, and initBackend names it and refuses it off the cpu backend.
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { backendLabel, BackendError, cpuFlushing, FLT_MIN_NORMAL, initBackend } from '../src/index.ts';

const read = (t: tf.Tensor) => Array.from(t.dataSync());

describe('flushing cpu backend (MOI_FLUSH_SUBNORMALS)', () => {
  after(async () => {
    await initBackend({ backend: 'wasm' });
    assert.equal(cpuFlushing(), false, 'leaving the cpu backend switches flushing off');
  });

  it('log(maximum(0, 1e-38)) is −∞ on it and finite on plain cpu', async () => {
    const plain = await initBackend({ backend: 'cpu', flushSubnormals: false });
    assert.equal(plain.flushSubnormals, false);
    const finite = tf.tidy(() => read(tf.log(tf.maximum(tf.scalar(0), 1e-38)))[0]);
    assert.ok(Math.abs(finite - Math.log(1e-38)) < 1e-3, `plain cpu: ${finite}`);

    const r = await initBackend({ backend: 'cpu', flushSubnormals: true });
    assert.equal(tf.getBackend(), 'cpu');
    assert.equal(r.flushSubnormals, true);
    assert.equal(backendLabel(r), 'cpu (flushing subnormals)');
    assert.equal(
      tf.tidy(() => read(tf.log(tf.maximum(tf.scalar(0), 1e-38)))[0]),
      -Infinity,
    );
  });

  it('flushes results and operands below 2^-126, keeps the smallest normal, keeps the sign', async () => {
    await initBackend({ backend: 'cpu', flushSubnormals: true });
    tf.tidy(() => {
      assert.deepEqual(read(tf.mul(tf.tensor1d([1e-20, -1e-20]), 1e-20)), [0, -0]); // results: 1e-40 → 0
      assert.deepEqual(read(tf.exp(tf.scalar(-100))), [0]); // e^-100 ≈ 3.7e-44
      assert.deepEqual(read(tf.mul(tf.scalar(FLT_MIN_NORMAL), 1)), [Math.fround(FLT_MIN_NORMAL)]);
      // operands: an upload keeps its bits (as a GPU buffer does); a kernel reads it as zero
      const x = tf.tensor1d([1e-39, 2, -5e-40]);
      assert.deepEqual(read(tf.mul(x, 1)), [0, 2, -0]);
      assert.deepEqual(read(tf.greater(x, 0)), [0, 1, 0]);
      assert.deepEqual(read(tf.concat([x, x])), [0, 2, -0, 0, 2, -0]); // array inputs
      assert.deepEqual(read(tf.reshape(x, [3, 1])), [0, 2, -0]); // a kernel that returns its input
      assert.equal(x.dataSync()[0], Math.fround(1e-39), "the caller's tensor is not changed");
    });
    await initBackend({ backend: 'cpu', flushSubnormals: false });
    tf.tidy(() => {
      assert.equal(read(tf.mul(tf.scalar(1e-20), 1e-20))[0], Math.fround(1e-40), 'plain cpu keeps the subnormal');
      assert.deepEqual(read(tf.greater(tf.tensor1d([1e-39]), 0)), [1]);
    });
  });

  it('leaks neither tensors nor backend buffers', async () => {
    await initBackend({ backend: 'cpu', flushSubnormals: true });
    const x = tf.tensor1d([1e-39, 1, 3e-39]);
    const step = () =>
      tf.tidy(() => tf.sum(tf.reshape(tf.concat([tf.mul(x, 2), tf.exp(tf.neg(tf.mul(x, 1e4)))]), [2, 3])).dataSync());
    step();
    const before = tf.memory();
    for (let i = 0; i < 5; i++) step();
    const after = tf.memory();
    assert.equal(after.numTensors, before.numTensors);
    assert.equal(after.numDataBuffers, before.numDataBuffers);
    x.dispose();
  });

  it('initBackend: MOI_FLUSH_SUBNORMALS=1 picks the cpu backend, refuses another, rejects a bad value', async () => {
    await initBackend({ backend: 'wasm' });
    const r = await initBackend({ env: { MOI_FLUSH_SUBNORMALS: '1' } });
    assert.equal(r.name, 'cpu');
    assert.equal(r.flushSubnormals, true);
    assert.match(r.reason, /MOI_FLUSH_SUBNORMALS=1/);
    assert.equal(cpuFlushing(), true);
    await assert.rejects(
      initBackend({ env: { MOI_BACKEND: 'wasm', MOI_FLUSH_SUBNORMALS: '1' } }),
      (e: unknown) => e instanceof BackendError && /needs the cpu backend.*'wasm'/.test((e as Error).message),
    );
    await assert.rejects(
      initBackend({ env: { MOI_BACKEND: 'cpu', MOI_FLUSH_SUBNORMALS: 'yes' } }),
      (e: unknown) =>
        e instanceof BackendError && /MOI_FLUSH_SUBNORMALS must be 1 .* got 'yes'/.test((e as Error).message),
    );
    const off = await initBackend({ env: { MOI_BACKEND: 'cpu', MOI_FLUSH_SUBNORMALS: '0' } });
    assert.equal(off.flushSubnormals, false);
    assert.equal(cpuFlushing(), false);
    assert.ok(
      tf.tidy(() => Number.isFinite(read(tf.log(tf.maximum(tf.scalar(0), 1e-38)))[0])),
      'switched off again',
    );
  });
});
