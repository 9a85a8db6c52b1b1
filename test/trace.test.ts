/**
 * Per-step trace candidates (GenerateRequest.trace): checked against the reference MoI trajectory
 * of stories260K (float64 transformers), against the mixer's own diagnostics, and for the
 * invariants: tracing changes no token, costs no extra device read, leaks no tensor.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { sharedDir, SHARED_MISSING } from '@moi/core';
import { Engine } from '@moi/engine';
import { generateOne, type GenerateRequest } from '@moi/engine';
import { firstDivergence, promptForDisplay, traceModes } from '../packages/cli/src/trace/trace.ts';
import { moiGen } from './support/cli.ts';

interface MoiRef {
  mode: string;
  beta: number;
  input_ids: number[];
  tokens: number[];
  entropy: number[];
}

const shared = sharedDir();

describe('trace: per-step candidates', function () {
  let engine: Engine;
  let ref: MoiRef[];
  before(async function () {
    if (!shared) {
      console.log(`      ${SHARED_MISSING}`);
      this.skip();
    }
    const dir = path.join(shared!, 'fixtures', 'stories260K');
    engine = await Engine.load(dir, { backend: 'wasm' });
    ref = (JSON.parse(fs.readFileSync(path.join(dir, 'reference.json'), 'utf8')) as { moi: MoiRef[] }).moi;
  });
  after(() => engine?.dispose());

  it("H and w_y follow the reference MoI trajectory and equal the mixer's diagnostics", async () => {
    const r = ref.find((x) => x.mode === 'moi')!;
    const steps = 16;
    const { events } = await generateOne(engine, {
      promptIds: r.input_ids,
      maxTokens: steps,
      ignoreEos: true,
      sampling: { temperature: 0 },
      mix: { mode: 'moi', beta: r.beta },
      trace: 5,
    });
    assert.deepEqual(
      events.map((e) => e.token),
      r.tokens.slice(0, steps),
    );
    events.forEach((e, i) => {
      const t = e.trace!;
      assert.ok(Math.abs(t.entropy - r.entropy[i]) < 1e-4, `step ${i}: H ${t.entropy} vs reference ${r.entropy[i]}`);
      assert.ok(Math.abs(t.entropy - e.mix!.entropy) < 1e-5, `step ${i}: H vs mixer`);
      assert.ok(Math.abs(t.weight - e.mix!.weight) < 1e-5, `step ${i}: w_y vs mixer`);
      // moi, β = 1: w_y = (H p_y + (2 − H)) / 2
      assert.ok(Math.abs(t.weight - (t.entropy * t.pSampled + 2 - t.entropy) / 2) < 1e-5, `step ${i}: w_y formula`);
      assert.equal(t.candidates.length, 5);
      assert.equal(t.candidates[0].id, e.token, 'greedy: the sampled token is the top candidate');
      for (let j = 1; j < 5; j++) assert.ok(t.candidates[j].p <= t.candidates[j - 1].p);
      for (const c of t.candidates.slice(1))
        assert.ok(Math.abs(c.w - (t.entropy * c.p) / 2) < 1e-5, 'w_i = H p_i / (β+1) off the sampled token');
    });
  });

  it('standard and direct rows: w = [i = y] and w = p', async () => {
    const r = ref[0];
    const base: GenerateRequest = {
      promptIds: r.input_ids,
      maxTokens: 8,
      ignoreEos: true,
      sampling: { temperature: 0 },
      trace: 3,
    };
    const std = await generateOne(engine, { ...base, mix: { mode: 'standard' } });
    for (const e of std.events) {
      assert.equal(e.mix, null);
      assert.equal(e.trace!.weight, 1);
      assert.ok(e.trace!.entropy > 0 && e.trace!.entropy < 1);
      assert.deepEqual(
        e.trace!.candidates.map((c) => c.w),
        [1, 0, 0],
      );
    }
    const direct = await generateOne(engine, { ...base, mix: { mode: 'direct' } });
    for (const e of direct.events) {
      assert.ok(Math.abs(e.trace!.weight - e.trace!.pSampled) < 1e-6);
      for (const c of e.trace!.candidates) assert.ok(Math.abs(c.w - c.p) < 1e-6);
    }
  });

  it('changes no token, adds no device read, leaks no tensor', async () => {
    const req: GenerateRequest = {
      promptIds: [1, 403, 407, 261, 378],
      maxTokens: 12,
      ignoreEos: true,
      sampling: { temperature: 1, seed: 9 },
      mix: { mode: 'moi' },
    };
    const plain = await generateOne(engine, req);
    const before = tf.memory().numTensors;
    const reads = { n: 0 };
    const orig = { dataSync: tf.Tensor.prototype.dataSync, data: tf.Tensor.prototype.data };
    tf.Tensor.prototype.dataSync = function (this: tf.Tensor) {
      reads.n++;
      return orig.dataSync.call(this);
    } as typeof orig.dataSync;
    tf.Tensor.prototype.data = function (this: tf.Tensor) {
      reads.n++;
      return orig.data.call(this);
    } as typeof orig.data;
    let traced: Awaited<ReturnType<typeof generateOne>>;
    try {
      traced = await generateOne(engine, { ...req, trace: 10 });
    } finally {
      Object.assign(tf.Tensor.prototype, orig);
    }
    assert.deepEqual(traced.done.tokens, plain.done.tokens);
    assert.equal(reads.n, 12, 'one read per step');
    assert.equal(tf.memory().numTensors, before);
    assert.ok(traced.events.every((e) => e.trace!.candidates.length === 10));
  });

  it('compares modes on the same prompt and seed, finding the first divergence', async () => {
    const req: GenerateRequest = {
      promptIds: ref[0].input_ids,
      maxTokens: 24,
      ignoreEos: true,
      sampling: { temperature: 0 },
    };
    const runs = await traceModes(engine, req, ['standard', 'moi']);
    const d = firstDivergence(runs);
    const a = runs[0].steps.map((s) => s.token);
    const b = runs[1].steps.map((s) => s.token);
    const expected = a.findIndex((t, i) => t !== b[i]);
    assert.equal(d, expected === -1 ? null : expected);
    assert.equal(firstDivergence([runs[0], runs[0]]), null);
    assert.deepEqual(
      runs[1].steps.map((s) => s.token),
      ref[0].tokens.slice(0, 24),
    ); // moi greedy = the reference
  });
});

describe("trace: the --trace path and the page's prompt", function () {
  this.timeout(60_000);
  before(function () {
    if (!shared) {
      console.log(`      ${SHARED_MISSING}`);
      this.skip();
    }
  });

  it('a missing folder is a usage error before anything is generated; a good path says where the page went', async () => {
    const model = path.join(shared!, 'fixtures', 'stories260K');
    const missing = path.join(
      fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'moi-trace-')),
      'no',
      'such',
      'x.html',
    );
    const r = await moiGen(['--model', model, '--max-tokens', '4', '--trace', missing, 'Once']);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stdout, '', 'nothing generated');
    assert.match(r.stderr, /--trace .*x\.html: the folder .*such does not exist/);
    assert.doesNotMatch(r.stderr, /ENOENT|^\s+at /m);
    const file = path.join(path.dirname(path.dirname(path.dirname(missing))), 'ok.html');
    const ok = await moiGen(['--model', model, '--max-tokens', '4', '--temperature', '0', '--trace', file, 'Once']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok(fs.existsSync(file));
    assert.ok(ok.stderr.includes(`trace page written to ${file}`), ok.stderr);
  });

  it('the prompt is shown as its special tokens and text, without the space a whole decode puts after <s>', async () => {
    const { loadTokenizer } = await import('@moi/engine');
    const tok = loadTokenizer(path.join(shared!, 'fixtures', 'stories260K'));
    const ids = [1, 403, 407, 261, 378];
    assert.equal(tok.decode(ids), '<s> Once upon a time', 'a whole decode has the stray space');
    assert.equal(promptForDisplay(tok, ids), '<s>Once upon a time');
    assert.equal(promptForDisplay(null, ids), '1,403,407,261,378');
  });
});
