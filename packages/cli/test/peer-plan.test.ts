// bench/peer.ts's arguments and plan (src/bench/peer-plan.ts), without llama.cpp: which model is
// written once per shape, which GGUF type pairs with which of our dtypes, and the refusal of a
// dtype that cannot fit the wasm heap; then the script itself with --dry-run.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot, requireShared } from '@moi/core';
import { PEER_STANDARD, PlanError, parsePeerArgs, planAll, type ShapePlan } from '../src/bench/peer-plan.ts';

describe('bench: peer.ts plan (--dtype, shapes, heap)', function () {
  let peer: string;
  let scratch: string;
  const opts = (...argv: string[]) => parsePeerArgs(['--peer', peer, '--scratch', scratch, ...argv], repoRoot);

  before(function () {
    peer = path.join(requireShared(this), 'peer-bench');
    scratch = path.join(os.tmpdir(), 'moi-peer-plan-test'); // never written by a plan
  });

  it('--dtype f32,q8: one f32 model, GGUF f32 and q8_0, our bench at --dtype f32 and q8 on the same folder', () => {
    const o = opts('--config', 'smollm2-135m', '--dtype', 'q8,f32', '--threads', '1');
    assert.deepEqual(o.dtypes, ['f32', 'q8'], 'f32 first: the others are compared with it');
    const [plan] = planAll(o);
    const dir = path.join(scratch, 'models', 'smollm2-135m-f32');
    assert.deepEqual(plan.source.make.args, [
      'make-synthetic.mjs',
      '--config',
      'configs/smollm2-135m.json',
      '--out',
      dir,
      '--seed',
      '1',
      '--dtype',
      'f32',
    ]);
    assert.deepEqual(
      plan.runs.map((r) => [r.dtype, r.ggufType]),
      [
        ['f32', 'f32'],
        ['q8', 'q8_0'],
      ],
    );
    for (const r of plan.runs) {
      assert.deepEqual(r.toGguf!.args, ['to-gguf.mjs', '--model', dir, '--out', r.gguf, '--type', r.ggufType]);
      // a llama.cpp script's arguments at this plan's lengths, 1 thread, f32 KV cache
      const llama = (script: string, repeat: string, extra: string[] = []) => [
        script,
        '--gguf',
        r.gguf,
        '--prompt-tokens',
        '128',
        '--gen-tokens',
        '64',
        '--threads',
        '1',
        '--repeat',
        repeat,
        ...extra,
        '--kv',
        'f32',
      ];
      assert.deepEqual(r.llamacpp!.args, llama('bench-llamacpp.mjs', '3'));
      assert.deepEqual(r.ours!.args, [
        'packages/cli/src/bin.ts',
        'bench',
        '--model',
        dir,
        '--dtype',
        r.dtype,
        '--prompt-tokens',
        '128',
        '--gen-tokens',
        '64',
        '--repeat',
        '3',
        '--threads',
        '1',
        '--json',
      ]);
      // llama.cpp's batched decode at our bench's default batch sizes, two timed runs at most
      assert.deepEqual(r.llamacppBatch!.args, llama('llamacpp-batch.mjs', '2', ['--batches', '4,16']));
      assert.equal(r.ours!.cwd, 'repo');
      assert.equal(r.llamacpp!.cwd, 'scratch');
      assert.equal(r.llamacppBatch!.cwd, 'scratch');
    }
    assert.notEqual(plan.runs[0].gguf, plan.runs[1].gguf);
    assert.ok(plan.heap.every((h) => h.fits));
    assert.ok(!fs.existsSync(scratch), 'planning writes nothing');
  });

  it('without f32 the model is written in bf16; all = the four standard shapes; settings pass through', () => {
    const plans = planAll(
      opts(
        '--dtype',
        'bf16,q8',
        '--threads',
        '2',
        '--prompt-tokens',
        '32',
        '--batches',
        '2',
        '--backend',
        'wasm',
        '--skip-llamacpp',
      ),
    );
    assert.deepEqual(
      plans.map((p) => p.config),
      [...PEER_STANDARD],
    );
    for (const p of plans) {
      assert.equal(p.source.dtype, 'bf16');
      assert.ok(p.source.make.args.join(' ').endsWith('--dtype bf16'));
      assert.deepEqual(
        p.runs.map((r) => [r.dtype, r.toGguf, r.llamacpp, r.llamacppBatch]),
        [
          ['bf16', null, null, null],
          ['q8', null, null, null],
        ],
      );
      const ours = p.runs[1].ours!.args.join(' ');
      assert.match(ours, /--dtype q8 --prompt-tokens 32 .*--backend wasm --batches 2 --json$/);
    }
  });

  it('the larger shapes: selectable, not in all; f32 refused with the figures, bf16 and q8 planned without batches', () => {
    assert.throws(
      () => planAll(opts('--config', 'qwen3-1.7b', '--dtype', 'f32,q8')),
      (e: unknown) => {
        assert.ok(e instanceof PlanError);
        assert.match(
          e.message,
          /qwen3-1\.7b at f32: 8\.13 GB of weights \+ [\d.]+ GB of KV cache .* do not fit the wasm heap \(4\.03 GB of its 4 GiB\); run it with --dtype q8/,
        );
        return true;
      },
    );
    const plans: ShapePlan[] = planAll(opts('--config', 'qwen3-1.7b,qwen2.5-1.5b', '--dtype', 'bf16,q8'));
    assert.deepEqual(
      plans.map((p) => p.config),
      ['qwen3-1.7b', 'qwen2.5-1.5b'],
    );
    for (const p of plans) {
      for (const r of p.runs) {
        const args = r.ours!.args;
        assert.equal(args[args.indexOf('--batches') + 1], '', 'no batched decode: one row of KV cache');
        assert.equal(r.llamacppBatch, null, 'nor for llama.cpp');
      }
    }
    // llama.cpp alone may run f32 (its memory is not our heap)
    assert.equal(planAll(opts('--config', 'qwen2.5-1.5b', '--dtype', 'f32', '--skip-ours'))[0].runs[0].ours, null);
  });

  it('--threads 1,max: both engines at each count, per dtype; one GGUF conversion per dtype', () => {
    const cores = os.availableParallelism();
    const o = opts('--config', 'smollm2-135m', '--dtype', 'f32,q8', '--threads', 'max,1,1');
    assert.deepEqual(o.threads, cores > 1 ? [1, cores] : [1], 'distinct and ascending');
    const [plan] = planAll(opts('--config', 'smollm2-135m', '--dtype', 'f32,q8', '--threads', '1,3'));
    assert.deepEqual(
      plan.runs.map((r) => [r.dtype, r.threads, r.toGguf !== null, r.lastOfDtype]),
      [
        ['f32', 1, true, false],
        ['f32', 3, false, true],
        ['q8', 1, true, false],
        ['q8', 3, false, true],
      ],
    );
    for (const r of plan.runs) {
      const ll = r.llamacpp!.args;
      const ours = r.ours!.args;
      assert.equal(ll[ll.indexOf('--threads') + 1], String(r.threads));
      assert.equal(ours[ours.indexOf('--threads') + 1], String(r.threads));
    }
    let message = '';
    assert.throws(
      () =>
        parsePeerArgs(['--threads', '0'], repoRoot, (s) => {
          message += s;
        }),
      (e: unknown) => (e as { code?: string }).code === 'commander.invalidArgument',
    );
    assert.match(message, /option '--threads <list>' argument '0' is invalid/);
  });

  it('bad values: commander errors naming the flag', () => {
    for (const [argv, flag] of [
      [['--dtype', 'f16'], '--dtype'],
      [['--dtype', 'f32,f32'], '--dtype'],
      [['--config', 'llama-70b'], '--config'],
      [['--repeat', '0'], '--repeat'],
    ] as const) {
      let message = '';
      assert.throws(
        () =>
          parsePeerArgs([...argv], repoRoot, (s) => {
            message += s;
          }),
        (e: unknown) => (e as { code?: string }).code === 'commander.invalidArgument',
        flag,
      );
      assert.match(message, new RegExp(`^peer: error: option '${flag} <\\w+>' argument`), flag);
    }
  });

  it('the script: --dry-run prints the plan as JSON; a bad dtype or a plan that cannot fit exits 2', function () {
    const script = (...argv: string[]) =>
      spawnSync(process.execPath, ['--import', 'tsx', 'bench/peer.ts', '--peer', peer, '--scratch', scratch, ...argv], {
        cwd: repoRoot,
        encoding: 'utf8',
      });
    const r = script('--config', 'smollm2-135m', '--dtype', 'f32,q8', '--threads', '1', '--dry-run');
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { plans: ShapePlan[] };
    assert.deepEqual(
      out.plans.map((p) => [p.config, p.source.dtype, p.runs.map((x) => x.ggufType)]),
      [['smollm2-135m', 'f32', ['f32', 'q8_0']]],
    );
    const bad = script('--dtype', 'int4', '--dry-run');
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /peer: error: option '--dtype <list>' argument 'int4' is invalid/);
    const big = script('--config', 'qwen2.5-1.5b', '--dtype', 'f32', '--dry-run');
    assert.equal(big.status, 2);
    assert.match(big.stderr, /peer: qwen2\.5-1\.5b at f32: 7\.11 GB of weights/);
    assert.ok(!fs.existsSync(scratch), 'a dry run writes nothing');
  });
});
