/**
 * The thread pool's worker, as plain JavaScript text run by `new Worker(text, { eval: true })`
 * (no TypeScript loader needed in the worker, whatever launched the main thread).
 *
 * A worker instantiates the shared module over the shared memory, runs the self-tests in its own
 * instance and reports them, then loops: wait for the job generation word to change (spinning on
 * `Atomics.load` for spinMicros, then sleeping in `Atomics.wait`), then take chunks of the job
 * (`claim`: a compare-and-swap on the job's claim word, which names the job's generation, so a
 * worker that slept through jobs cannot take a chunk of a later one) and run each through the
 * kernel the job names, adding 1 to the completed word per chunk (waking the main thread after
 * the last). The main thread takes chunks the same way, so a worker the OS does not schedule in
 * time delays nothing: its chunks are done by whoever is running. A kernel that throws (a trap)
 * records its message in the control block and still counts its chunk, so the main thread never
 * waits forever. The exit word ends the loop.
 *
 * Control words (Int32, byte 0 of the memory; pool.ts owns the numbers): see CTL below.
 */
export const CTL = {
  GEN: 0,
  COMPLETED: 1,
  EXIT: 2,
  OP: 3,
  UNITS: 4,
  GRAIN: 5,
  NCHUNKS: 6,
  ERR: 7,
  /** byte offset of the job's claim word (i64: generation, chunk count, next chunk) */
  CLAIM: 64,
  /** byte offset of the job's argument words */
  ARGS: 256,
  /** byte offset of the error text (UTF-8, ERR_BYTES long, length in word ERR) */
  ERR_TEXT: 1024,
  ERR_BYTES: 1024,
  /** byte offset of the per-thread self-test scratch (64 bytes each) */
  SELFTEST: 4096,
} as const;

export const WORKER_SOURCE = `
'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const { memory, module, id, names, spinMicros, ctlOffsets: C } = workerData;
const ex = new WebAssembly.Instance(module, { env: { memory } }).exports;
const fns = names.map((n) => ex[n]);
const ctl = new Int32Array(memory.buffer, 0, 64);

// the self-tests, in this thread's instance (the same checks as simd.ts runSelfTests)
function selfTest() {
  const fails = [];
  const d = ex.selftest_dot(1, 1, 100);
  if (d !== 104) fails.push('dot(1, 1, 100) = ' + d + ', not 104');
  const bytes = new Uint8Array(memory.buffer, C.SELFTEST + 64 * id, 48);
  const a = new Int8Array(16), b = new Uint8Array(16), c = new Int32Array([5, -9, 1 << 20, -(1 << 20)]);
  let want = 0;
  for (let i = 0; i < 16; i++) { a[i] = ((i * 37) % 255) - 127; b[i] = (i * 53) % 128; want += a[i] * b[i]; }
  for (const v of c) want += v;
  bytes.set(new Uint8Array(a.buffer), 0); bytes.set(b, 16); bytes.set(new Uint8Array(c.buffer), 32);
  const p = C.SELFTEST + 64 * id;
  const d3 = ex.selftest_dot_mem(p, p + 16, p + 32);
  if (d3 !== want) fails.push('dot over mixed lanes = ' + d3 + ', not ' + want);
  const A = 1 + 2 ** -23, B = 1 - 2 ** -23;
  const m = ex.selftest_madd(A, B, -1);
  if (m !== A * B - 1 && m !== 0) fails.push('madd = ' + m);
  return { ok: fails.length === 0, fused: m === A * B - 1, detail: fails.join('; ') };
}
// read the generation before saying ready: the main thread dispatches nothing until then
let seen = Atomics.load(ctl, C.GEN);
parentPort.postMessage({ ready: true, selfTest: selfTest() });

const spinMs = spinMicros / 1000;
for (;;) {
  let g = Atomics.load(ctl, C.GEN);
  if (g === seen) {
    let t0 = performance.now();
    let k = 0;
    while ((g = Atomics.load(ctl, C.GEN)) === seen) {
      if ((++k & 127) === 0 && performance.now() - t0 > spinMs) {
        Atomics.wait(ctl, C.GEN, seen);
        t0 = performance.now();
      }
    }
  }
  seen = g;
  if (Atomics.load(ctl, C.EXIT)) break;
  for (;;) {
    const c = ex.claim(C.CLAIM, g);
    if (c < 0) break;
    // the job is live until this chunk is counted: its words are stable
    const units = ctl[C.UNITS], grain = ctl[C.GRAIN], n = ctl[C.NCHUNKS];
    const b0 = Math.floor((units * c) / n / grain) * grain;
    const b1 = c + 1 === n ? units : Math.floor((units * (c + 1)) / n / grain) * grain;
    if (b1 > b0) {
      try {
        fns[ctl[C.OP]](C.ARGS, b0, b1, id);
      } catch (e) {
        if (Atomics.compareExchange(ctl, C.ERR, 0, -1) === 0) {
          const text = new TextEncoder().encode('worker ' + id + ': ' + String(e && e.message || e)).slice(0, C.ERR_BYTES);
          new Uint8Array(memory.buffer, C.ERR_TEXT, text.length).set(text);
          Atomics.store(ctl, C.ERR, text.length);
        }
      }
    }
    if (Atomics.add(ctl, C.COMPLETED, 1) + 1 === n) Atomics.notify(ctl, C.COMPLETED);
  }
}
`;
