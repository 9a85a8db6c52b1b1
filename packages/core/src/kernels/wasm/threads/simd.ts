/**
 * Which SIMD path the thread pool's kernels run: 'relaxed' (WebAssembly relaxed SIMD: the fused
 * multiply-add `f32x4.relaxed_madd` and the int8 dot `i32x4.relaxed_dot_i8x16_i7x16_add_s`) or
 * 'simd128' (plain SIMD, multiply then add, int8 products through 16-bit dots).
 *
 * Finding out, once per process:
 * - Relaxed SIMD is on by default from Node 22. Node 20 and 21 have it behind
 *   `--experimental-wasm-relaxed-simd`; V8's flags are per process (main thread and workers
 *   alike), and `v8.setFlagsFromString` sets it before our module is compiled. It is set only if a
 *   tiny relaxed module does not validate without it.
 * - On Node 20/21 V8's baseline compiler (Liftoff) gets the int8 dot wrong (twice the dot, the
 *   accumulator dropped: a = b = 1, c = 100 gives 8, not 104); the optimizing tier (TurboFan) is
 *   right, and a function in Liftoff tiers up to TurboFan once hot, changing its answer mid-run.
 *   So the kernels module is compiled with Liftoff off and lazy compilation off
 *   (`--no-liftoff --no-wasm-lazy-compilation` for the one synchronous compile, then back to the
 *   defaults unless the process was started with them): every function is TurboFan code from
 *   the start, and stays so. Measured on Node 20.20 (V8 11.3): compiled that way the dot gives 104
 *   on its first call in the main thread and in workers; compiled normally it gives 8 until
 *   tier-up (and 8 in a fresh worker).
 * - The module exports self-tests of both instructions, which run in the very code the kernels
 *   run in (same module, same tier) in the main thread and in every worker: the dot with a = b = 1,
 *   c = 100 (must be 104) and on mixed signs against integers computed here; relaxed_madd on a
 *   case where fused and unfused differ (either is allowed by the spec; we report which). Any
 *   failure, or a compile error, falls back to 'simd128'. The Node version is never trusted alone.
 *
 * - V8 shares compiled code between modules with equal bytes, whatever the flags were when it
 *   compiled them: a module compiled normally earlier in the process would hand its Liftoff code
 *   to compileOptimized. Our module's bytes are ours alone and only compileOptimized compiles
 *   them; were that ever not so, the self-tests would catch the Liftoff dot and fall back.
 *
 * Which Node takes which path: Node 20.20 (measured here): 'relaxed', through the flag and the
 * TurboFan-only compile; a normal compile fails the self-test (8, not 104). Node 21: the same by
 * the finding (not measured here). Node ≥ 22: relaxed SIMD on by default, right in both
 * tiers (not measured here). A Node without relaxed SIMD, or any self-test failure: 'simd128'.
 *
 * `MOI_SIMD=simd128` forces the plain path (tests run both).
 */
import v8 from 'node:v8';

export type SimdPath = 'relaxed' | 'simd128';

/** The self-test exports every variant of the module has (relaxed: the instructions; simd128: their plain forms). */
export interface SelfTestExports {
  /** lane 0 of the int8 dot of splat(a) (i8) and splat(b) (0..127) plus splat(c): 4·a·b + c */
  selftest_dot(a: number, b: number, c: number): number;
  /** the int8 dot of 16 bytes at p (signed) and q (0..127) plus 4 i32 at r, lanes summed */
  selftest_dot_mem(p: number, q: number, r: number): number;
  /** lane 0 of madd(splat(a), splat(b), splat(c)) */
  selftest_madd(a: number, b: number, c: number): number;
}

export interface SelfTestResult {
  ok: boolean;
  /** whether relaxed_madd rounded once (fused) */
  fused: boolean;
  /** what failed, for the report */
  detail: string;
}

/**
 * A module using relaxed SIMD, for the validation probe: one function () -> v128 whose body is
 * (v128.const 0) three times, then f32x4.relaxed_madd (opcode 0xfd 0x105).
 */
function probeBytes(): Uint8Array {
  const zero = [0xfd, 0x0c, ...new Array(16).fill(0)];
  const body = [0x00, ...zero, ...zero, ...zero, 0xfd, 0x85, 0x02, 0x0b]; // no locals, ..., end
  return new Uint8Array([
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00, // magic, version 1
    0x01,
    0x05,
    0x01,
    0x60,
    0x00,
    0x01,
    0x7b, // type section: () -> v128
    0x03,
    0x02,
    0x01,
    0x00, // function section: function 0 of type 0
    0x0a,
    body.length + 2,
    0x01,
    body.length,
    ...body, // code section
  ]);
}

/** Whether this V8 validates relaxed SIMD now. */
export function relaxedValidates(): boolean {
  try {
    return WebAssembly.validate(probeBytes() as BufferSource);
  } catch {
    return false;
  }
}

let flagTried = false;

/**
 * Make relaxed SIMD available if this Node needs a flag for it (Node 20/21); returns whether it
 * validates afterwards.
 */
export function enableRelaxedSimd(): boolean {
  if (relaxedValidates()) return true;
  if (!flagTried) {
    flagTried = true;
    try {
      v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
    } catch {
      // a V8 without the flag: the plain path
    }
  }
  return relaxedValidates();
}

/** Whether the process was started with a V8 flag (then it is left as it was). */
function startedWith(flag: string): boolean {
  const args = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  return args.some((a) => a === flag || a.replace(/_/g, '-') === flag);
}

/**
 * Compile bytes with every function compiled by TurboFan up front (Liftoff and lazy compilation
 * off for this one synchronous compile; see the header), then restore V8's defaults.
 */
export function compileOptimized(bytes: Uint8Array): WebAssembly.Module {
  const restore: string[] = [];
  if (!startedWith('--no-liftoff')) restore.push('--liftoff');
  if (!startedWith('--no-wasm-lazy-compilation')) restore.push('--wasm-lazy-compilation');
  try {
    v8.setFlagsFromString('--no-liftoff');
    v8.setFlagsFromString('--no-wasm-lazy-compilation');
  } catch {
    // flags not settable: the self-tests still decide
  }
  try {
    return new WebAssembly.Module(bytes as BufferSource);
  } finally {
    for (const f of restore) {
      try {
        v8.setFlagsFromString(f);
      } catch {
        // nothing to restore
      }
    }
  }
}

/** Two f32 whose product plus −1 differs between fused (−2^-46) and unfused (0) evaluation. */
const MADD_A = 1 + 2 ** -23;
const MADD_B = 1 - 2 ** -23;

/**
 * Run the self-tests through a module instance's exports. `scratch` is a byte offset of 48 free
 * bytes in its memory and `bytes` a view of that memory. Returns ok = false with what failed.
 */
export function runSelfTests(ex: SelfTestExports, bytes: Uint8Array, scratch: number): SelfTestResult {
  const fails: string[] = [];
  const d = ex.selftest_dot(1, 1, 100);
  if (d !== 104) fails.push(`dot(1, 1, 100) = ${d}, not 104`);
  const d2 = ex.selftest_dot(-128, 127, -7);
  if (d2 !== 4 * -128 * 127 - 7) fails.push(`dot(-128, 127, -7) = ${d2}, not ${4 * -128 * 127 - 7}`);
  // mixed signs on distinct lanes, against integers computed here
  const a = new Int8Array(16);
  const b = new Uint8Array(16);
  const c = new Int32Array([5, -9, 1 << 20, -(1 << 20)]);
  let want = 0;
  for (let i = 0; i < 16; i++) {
    a[i] = ((i * 37) % 255) - 127;
    b[i] = (i * 53) % 128;
    want += a[i] * b[i];
  }
  for (const v of c) want += v;
  bytes.set(new Uint8Array(a.buffer), scratch);
  bytes.set(b, scratch + 16);
  bytes.set(new Uint8Array(c.buffer), scratch + 32);
  const d3 = ex.selftest_dot_mem(scratch, scratch + 16, scratch + 32);
  if (d3 !== want) fails.push(`dot over mixed lanes = ${d3}, not ${want}`);
  const m = ex.selftest_madd(MADD_A, MADD_B, -1);
  const fusedValue = MADD_A * MADD_B - 1; // exact in f64, and an f32 (−2^-46)
  if (m !== fusedValue && m !== 0)
    fails.push(`madd(1 + 2^-23, 1 − 2^-23, −1) = ${m}, neither fused (${fusedValue}) nor unfused (0)`);
  const m2 = ex.selftest_madd(3, 5, 7);
  if (m2 !== 22) fails.push(`madd(3, 5, 7) = ${m2}, not 22`);
  return { ok: fails.length === 0, fused: m === fusedValue, detail: fails.join('; ') };
}
