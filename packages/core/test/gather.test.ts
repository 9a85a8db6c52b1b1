/**
 * gatherRows (kernels.wat's gather_rows behind a tfjs op): rows of a [V, H] table and columns of
 * an [H, V] table, equal to the composite (tf.gather) and to values read straight from the host
 * array, over odd widths (tails of 1–3 floats), repeated ids, the first and last id, a large
 * vocabulary; an id outside the table is a typed error; no tensors leak.
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { randn, rng } from './kernel-data.ts';
import { gatherRows, initBackend, kernelDispatches, resetKernelDispatches, setKernelsEnabled } from '../src/index.ts';

function values(n: number, seed: number): Float32Array {
  return randn(rng(seed), n);
}

describe('kernels: gatherRows equals the host values and the composite (wasm)', function () {
  before(async () => {
    await initBackend({ backend: 'wasm' });
  });
  after(() => setKernelsEnabled(true));

  for (const [V, H] of [
    [7, 1],
    [50, 3],
    [97, 13],
    [1000, 64],
    [262_144, 6],
  ] as const) {
    for (const layout of ['rows', 'cols'] as const) {
      it(`${layout}: V ${V}, H ${H}`, function () {
        const host = values(V * H, V + H); // row-major [V, H] or [H, V]
        const ids = [0, V - 1, Math.floor(V / 2), 0, V - 1, Math.floor(V / 3)];
        const want = ids.flatMap((id) =>
          Array.from({ length: H }, (_, h) => host[layout === 'rows' ? id * H + h : h * V + id]),
        );
        const before = tf.memory().numTensors;
        const table = tf.tensor2d(host, layout === 'rows' ? [V, H] : [H, V]);
        const idt = tf.tensor1d(ids, 'int32');
        for (const on of [true, false]) {
          setKernelsEnabled(on);
          resetKernelDispatches();
          const y = gatherRows(table, idt, layout);
          assert.equal(kernelDispatches().MoiGatherRows ?? 0, on ? 1 : 0, 'the kernel ran exactly when on');
          assert.deepEqual(y.shape, [ids.length, H]);
          assert.deepEqual(Array.from(y.dataSync()), want, `kernels ${on ? 'on' : 'off'}: exact values`);
          y.dispose();
        }
        tf.dispose([table, idt]);
        assert.equal(tf.memory().numTensors, before, 'no tensors left');
      });
    }
  }

  it('an id outside the table is a typed error (E_INDEX), leaking nothing', function () {
    setKernelsEnabled(true);
    const table = tf.tensor2d(values(40, 1), [10, 4]);
    for (const bad of [10, -1]) {
      const ids = tf.tensor1d([1, bad], 'int32');
      const before = tf.memory().numTensors;
      assert.throws(
        () => gatherRows(table, ids, 'rows'),
        (e: any) => e.code === 'E_INDEX' && /#1/.test(e.message),
      );
      assert.equal(tf.memory().numTensors, before);
      ids.dispose();
    }
    table.dispose();
  });
});
