/**
 * The thread pool's machinery (src/kernels/wasm/threads): the relaxed-SIMD self-tests (they catch
 * Node 20/21's Liftoff trap on the int8 dot, which a Liftoff compile shows, and pass in the
 * TurboFan-only compile the pool uses), the shared-memory allocator, the pool's life cycle
 * (workers started, stopped, none left; a pool never disposed does not hold the process open),
 * traps reported as typed errors with the pool still usable, and bad input refused with typed
 * errors.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import { ModelError, UsageError } from '../src/errors.ts';
import {
  assembleThreadsWat,
  compileOptimized,
  defaultThreads,
  enableRelaxedSimd,
  matmul,
  MAX_DEFAULT_THREADS,
  runSelfTests,
  selfTestWat,
  SharedHeap,
  ThreadPool,
  uploadWeight,
  type SelfTestResult,
} from '../src/kernels/wasm/threads/index.ts';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

describe('thread pool: relaxed SIMD detection', function () {
  this.timeout(120_000);

  /**
   * The self-tests of a module holding only them, compiled the normal way or the pool's way. Each
   * module gets a uniquely named extra export: V8 shares compiled code between modules of equal
   * bytes, whatever the flags were when it compiled them.
   */
  let unique = 0;
  async function selfTestsCompiled(optimized: boolean): Promise<SelfTestResult> {
    const text = selfTestWat('relaxed').replace(/\)\s*$/, `(func (export "u${process.pid}_${unique++}")))`);
    const bytes = await assembleThreadsWat(text);
    const memory = new WebAssembly.Memory({ initial: 1, maximum: 65536, shared: true });
    if (optimized) {
      const ex = new WebAssembly.Instance(compileOptimized(bytes), { env: { memory } }).exports as never;
      return runSelfTests(ex, new Uint8Array(memory.buffer), 0);
    }
    // Liftoff for certain: a normal compile may have its hot functions tiered up to TurboFan in
    // the background before the self-tests run (seen once in CI), which hides the trap
    v8.setFlagsFromString('--liftoff');
    v8.setFlagsFromString('--liftoff-only');
    try {
      const mod = new WebAssembly.Module(bytes as BufferSource);
      const ex = new WebAssembly.Instance(mod, { env: { memory } }).exports as never;
      return runSelfTests(ex, new Uint8Array(memory.buffer), 0);
    } finally {
      v8.setFlagsFromString('--no-liftoff-only');
    }
  }

  it("the self-tests catch the Liftoff trap in a Liftoff-compiled module on Node 20/21, and pass in the pool's compile", async function () {
    if (!enableRelaxedSimd()) this.skip(); // no relaxed SIMD in this Node: the plain path is tested elsewhere
    const major = Number(process.versions.node.split('.')[0]);
    const normal = await selfTestsCompiled(false);
    if (major === 20 || major === 21) {
      assert.equal(normal.ok, false, 'a Liftoff-compiled relaxed dot must fail its self-test on Node 20/21');
      assert.match(normal.detail, /dot\(1, 1, 100\) = 8, not 104/);
    } else {
      assert.equal(normal.ok, true, normal.detail);
    }
    const optimized = await selfTestsCompiled(true);
    assert.equal(optimized.ok, true, optimized.detail);
  });

  it('MOI_SIMD=simd128 forces the plain path, and the pool reports why', async () => {
    const saved = process.env.MOI_SIMD;
    process.env.MOI_SIMD = 'simd128';
    try {
      const pool = await ThreadPool.create({ threads: 1 });
      assert.equal(pool.info.simd, 'simd128');
      assert.equal(pool.info.fused, false);
      assert.match(pool.info.fallback ?? '', /MOI_SIMD/);
      await pool.dispose();
    } finally {
      if (saved === undefined) delete process.env.MOI_SIMD;
      else process.env.MOI_SIMD = saved;
    }
  });
});

describe('thread pool: shared heap', () => {
  it('allocates aligned blocks, coalesces freed neighbours, grows, and keeps data across growth', () => {
    const heap = new SharedHeap(1 << 17, 1 << 26);
    const a = heap.alloc(100);
    const b = heap.alloc(1000);
    const c = heap.alloc(10);
    for (const x of [a, b, c]) assert.equal(x.ptr % 64, 0);
    assert.ok(a.ptr > 0 && b.ptr >= a.ptr + 100 && c.ptr >= b.ptr + 1000);
    heap.f32(b.ptr, 4).set([1, 2, 3, 4]);
    heap.release(a);
    heap.release(c);
    const d = heap.alloc(64); // fits where a was
    assert.equal(d.ptr, a.ptr);
    const size0 = heap.size;
    const big = heap.alloc(4 << 20); // grows
    assert.ok(heap.size > size0);
    assert.deepEqual([...heap.f32(b.ptr, 4)], [1, 2, 3, 4]);
    heap.f32(big.ptr + (4 << 20) - 4, 1)[0] = 7; // the end of the new block is addressable
    heap.release(b);
    heap.release(d);
    heap.release(big);
    assert.equal(heap.blocks, 0);
    // all free again, coalesced: one block as large as everything fits at the first offset
    assert.equal(heap.alloc(heap.size - a.ptr).ptr, a.ptr);
  });

  it('refuses what cannot fit, double frees and foreign pointers, with typed errors', () => {
    const heap = new SharedHeap(1 << 17, 1 << 20);
    assert.throws(
      () => heap.alloc(2 << 20, 'a big weight'),
      (e: unknown) => e instanceof ModelError && e.code === 'E_ALLOC' && /a big weight needs/.test(e.message),
    );
    const a = heap.alloc(10);
    heap.release(a);
    assert.throws(() => heap.release(a), /no live block/);
    assert.throws(() => heap.release(12345), /no live block/);
    assert.throws(() => heap.alloc(-1), /cannot allocate/);
  });
});

describe('thread pool: life cycle and errors', function () {
  this.timeout(120_000);

  it('defaults to the available cores, capped', () => {
    const n = defaultThreads();
    assert.ok(n >= 1 && n <= MAX_DEFAULT_THREADS);
  });

  it('refuses a bad thread count', async () => {
    for (const threads of [0, 1.5, 300, Number.NaN]) {
      await assert.rejects(
        ThreadPool.create({ threads }),
        (e: unknown) => e instanceof UsageError && e.code === 'E_THREADS',
      );
    }
  });

  it('starts threads − 1 workers and stops them all; refuses use after dispose', async () => {
    const pool = await ThreadPool.create({ threads: 3 });
    assert.equal(pool.liveWorkers, 2);
    assert.ok(pool.emptyJobMicros(200) > 0);
    await pool.dispose();
    assert.equal(pool.liveWorkers, 0);
    await pool.dispose(); // twice is fine
    assert.throws(
      () => pool.dispatch('noop', 4),
      (e: unknown) => e instanceof UsageError && e.code === 'E_POOL_DISPOSED',
    );
  });

  it('reports a trapping kernel as a typed error after the job, and stays usable', async () => {
    const pool = await ThreadPool.create({ threads: 2 });
    try {
      const w = uploadWeight(
        pool,
        { kind: 'f32', values: Float32Array.from({ length: 64 * 32 }, (_, i) => (i % 7) - 3) },
        64,
        32,
      );
      const x = Float32Array.from({ length: 32 }, (_, i) => i / 10);
      const before = matmul(pool, w, x, 1);
      // a job whose x pointer lies past the end of the memory: every chunk traps
      pool.args().i32.set([w.data.ptr, w.rowBytes, 0x7fff0000, 128, 1, 32, 0x7fff0000, 256, 4]);
      assert.throws(
        () => pool.dispatch('mm_f32', 64, 8),
        (e: unknown) =>
          e instanceof ModelError && e.code === 'E_KERNEL' && /mm_f32 failed in .*out of bounds/.test(e.message),
      );
      assert.deepEqual(matmul(pool, w, x, 1), before);
    } finally {
      await pool.dispose();
    }
  });

  it('refuses bad weights with typed errors naming the weight', async () => {
    const pool = await ThreadPool.create({ threads: 1 });
    try {
      assert.throws(
        () => uploadWeight(pool, { kind: 'f32', values: new Float32Array(10) }, 3, 4, 'model.layers.0.mlp'),
        /model\.layers\.0\.mlp: 10 values for \[3, 4\]/,
      );
      const q = new Int8Array(64);
      q[37] = -128;
      assert.throws(
        () => uploadWeight(pool, { kind: 'q8', q, d: new Float32Array(2) }, 2, 32, 'w'),
        (e: unknown) => e instanceof ModelError && e.code === 'E_Q8_RANGE' && /row 1, column 5/.test(e.message),
      );
      const w = uploadWeight(pool, { kind: 'f32', values: new Float32Array(12) }, 3, 4);
      assert.throws(() => matmul(pool, w, new Float32Array(7), 2), /not 2 rows of 4/);
    } finally {
      await pool.dispose();
    }
  });

  it('a process that never disposes its pool still exits', () => {
    const script = `import { ThreadPool, uploadWeight, matmul } from './packages/core/src/kernels/wasm/threads/index.ts';
      const pool = await ThreadPool.create({ threads: 2 });
      const w = uploadWeight(pool, { kind: 'f32', values: new Float32Array(64 * 32).fill(1) }, 64, 32);
      console.log(matmul(pool, w, new Float32Array(32).fill(1), 1)[0]);`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: REPO,
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(r.signal, null, `the process had to be killed (${r.signal}): it hung`);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), '32');
  });
});
