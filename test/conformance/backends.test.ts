/**
 * Backend conformance on the CPU-side backends: every fixture's checks (helpers.ts) on wasm (the
 * baseline), cpu, cpu flushing subnormals (MOI_FLUSH_SUBNORMALS: what a GPU does to float32), and
 * the tensorflow stand-in (tfjs-backend-cpu's kernels under the name
 * `tensorflow`, restricted to exactly the kernels the installed @tensorflow/tfjs-node registers).
 * A kernel the stand-in lacks must make the engine fail: that is what keeps the engine within
 * tfjs-node's kernel set.
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { adoptBackend, initBackend, SHARED_MISSING } from '@moi/core';
import {
  conformance,
  fixtureNames,
  wasmBaseline,
  registerTensorflowStandIn,
  tfjsNodeKernelNames,
  type FixtureRun,
} from './helpers.ts';

describe('conformance: wasm, cpu and the tensorflow stand-in', function () {
  this.timeout(300_000);
  const { root, names } = fixtureNames();
  let baseline: Map<string, FixtureRun>;
  let nodeKernels: string[];

  before(async function () {
    if (!root || names.length === 0) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    nodeKernels = await tfjsNodeKernelNames();
  });

  after(async () => {
    await initBackend({ backend: 'wasm' });
  });

  it('wasm: all fixtures (the baseline for the others)', async () => {
    const r = await wasmBaseline(names, root!);
    baseline = r.runs;
    console.log(
      `      [conformance] wasm: worst logits diff ${r.worstRel.toExponential(1)} × scale over ${names.length} fixtures`,
    );
  });

  it('cpu: all fixtures, trajectories equal the wasm run', async () => {
    await initBackend({ backend: 'cpu' });
    const r = await conformance(names, root!, baseline);
    console.log(`      [conformance] cpu: worst logits diff ${r.worstRel.toExponential(1)} × scale`);
  });

  it("cpu flushing subnormals (a GPU's float32 arithmetic): all fixtures, trajectories equal the wasm run", async () => {
    const report = await initBackend({ backend: 'cpu', flushSubnormals: true });
    assert.equal(report.flushSubnormals, true);
    try {
      const r = await conformance(names, root!, baseline);
      console.log(
        `      [conformance] cpu flushing subnormals: worst logits diff ${r.worstRel.toExponential(1)} × scale`,
      );
    } finally {
      await initBackend({ backend: 'cpu', flushSubnormals: false });
    }
  });

  it("tfjs-node's kernel list is read from the installed package", () => {
    assert.ok(nodeKernels.length > 100, `only ${nodeKernels.length} kernels read`);
    for (const k of ['BatchMatMul', 'Softmax', 'GatherV2', 'TopK']) assert.ok(nodeKernels.includes(k), k);
  });

  it('tensorflow stand-in: all fixtures, trajectories equal the wasm run', async () => {
    await initBackend({ backend: 'cpu' });
    const undo = await registerTensorflowStandIn(nodeKernels);
    try {
      adoptBackend('conformance stand-in for tfjs-node');
      assert.equal(tf.getBackend(), 'tensorflow');
      const r = await conformance(names, root!, baseline);
      console.log(
        `      [conformance] tensorflow stand-in (${nodeKernels.length} kernels): worst logits diff ${r.worstRel.toExponential(1)} × scale`,
      );
    } finally {
      await initBackend({ backend: 'cpu' });
      undo();
    }
  });

  it('a kernel the stand-in lacks makes it fail', async () => {
    await initBackend({ backend: 'cpu' });
    const missing = 'Softmax';
    const undo = await registerTensorflowStandIn(nodeKernels.filter((k) => k !== missing));
    try {
      adoptBackend('conformance stand-in without Softmax');
      await assert.rejects(
        conformance([names[0]], root!, baseline),
        new RegExp(`'${missing}' not registered for backend 'tensorflow'`),
      );
    } finally {
      await initBackend({ backend: 'cpu' });
      undo();
    }
  });
});
