/**
 * The kernels module: kernels.wat (WebAssembly text, in this folder) assembled by the `wabt` npm
 * package at first use, cached on disk (the temp folder, named by the source's hash) and in memory
 * per process (the assembled bytes, the compiled module,
 * and one instance per wasm-backend heap), and instantiated over the tfjs wasm backend's own
 * `WebAssembly.Memory` (`backend.wasm.asm.memory`, not in the typings). Kernels then read and
 * write tensors in place at `backend.dataIdMap.get(t.dataId).memoryOffset`.
 *
 * `MOI_KERNELS=0` turns them off (read once, at initKernels); every op then takes its composite
 * fallback made of ordinary tfjs ops, as it does on every other backend.
 */
import { createHash } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';

/** The exported kernel functions (pointers are byte offsets into the wasm backend's heap). */
export interface KernelExports {
  decode_attention(
    q: number, keys: number, valsT: number, slots: number, out: number, scratch: number,
    B: number, nH: number, nKV: number, S: number, D: number, window: number, cap: number,
  ): void;
  rope(x: number, cos: number, sin: number, out: number, B: number, heads: number, D: number): void;
  rms_norm(x: number, res: number, w: number, out: number, sumOut: number, N: number, H: number, L: number, eps: number): void;
  gather_rows(table: number, ids: number, out: number, n: number, H: number, V: number, cols: number): number;
}

const WAT_URL = new URL('./kernels.wat', import.meta.url);

let wasmBytes: Uint8Array | null = null;
let compiled: WebAssembly.Module | null = null;
let enabled = true;
let initialized = false;
const instances = new WeakMap<WebAssembly.Memory, KernelExports>();

/** The module's WebAssembly text. */
export function kernelsSource(): string {
  return readFileSync(WAT_URL, 'utf8');
}

/** Assemble WebAssembly text with wabt (SIMD on), validated. */
export async function assembleWat(text: string, name = 'kernels.wat'): Promise<Uint8Array> {
  const wabt = await (await import('wabt')).default();
  const mod = wabt.parseWat(name, text, { simd: true, sat_float_to_int: true });
  try {
    mod.resolveNames();
    mod.validate();
    return new Uint8Array(mod.toBinary({}).buffer);
  } finally {
    mod.destroy();
  }
}

/** Where the assembled bytes of this exact source are cached on disk (named by its hash). */
export function kernelsCachePath(source = kernelsSource()): string {
  const hash = createHash('sha256').update(source).digest('hex').slice(0, 16);
  return path.join(os.tmpdir(), `moi-kernels-${hash}.wasm`);
}

/**
 * The assembled module bytes: from memory, else from the disk cache (a file named by the
 * source's hash, used only if it validates), else assembled now (about 0.3 s) and cached.
 */
export async function kernelsBinary(): Promise<Uint8Array> {
  if (wasmBytes) return wasmBytes;
  const source = kernelsSource();
  const file = kernelsCachePath(source);
  try {
    const cached = new Uint8Array(readFileSync(file));
    if (WebAssembly.validate(cached as BufferSource)) return (wasmBytes = cached);
  } catch {
    // not cached yet
  }
  wasmBytes = await assembleWat(source);
  try {
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, wasmBytes);
    renameSync(tmp, file);
  } catch {
    // a read-only temp folder: assemble again next time
  }
  return wasmBytes;
}

/**
 * Assemble and compile the module (once per process) and read MOI_KERNELS.
 */
export async function loadKernels(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  enabled = (env.MOI_KERNELS ?? '1').trim() !== '0';
  if (!compiled) compiled = new WebAssembly.Module(await kernelsBinary() as BufferSource);
  initialized = true;
}

/** Turn the kernels on or off for this process (tests run both ways). */
export function setKernelsEnabled(on: boolean): void {
  enabled = on;
}

/** Whether the kernels were turned on (MOI_KERNELS / setKernelsEnabled). */
export function kernelsEnabled(): boolean {
  return enabled;
}

/** The wasm backend's heap, or null on another backend. */
function backendMemory(): WebAssembly.Memory | null {
  if (tf.getBackend() !== 'wasm') return null;
  const mem = (tf.backend() as any).wasm?.asm?.memory;
  return mem instanceof WebAssembly.Memory ? mem : null;
}

/**
 * The kernels instantiated over the current wasm backend's heap, or null where they do not run:
 * another backend, MOI_KERNELS=0, or initKernels not called yet.
 */
export function activeKernels(): KernelExports | null {
  if (!enabled || !initialized || !compiled) return null;
  const mem = backendMemory();
  if (!mem) return null;
  let k = instances.get(mem);
  if (!k) {
    k = new WebAssembly.Instance(compiled, { env: { memory: mem } }).exports as unknown as KernelExports;
    instances.set(mem, k);
  }
  return k;
}

/** A tensor's byte offset in the wasm heap (the wasm backend only). */
export function heapOffset(backend: any, dataId: object): number {
  const info = backend.dataIdMap.get(dataId);
  if (!info || info.memoryOffset == null) throw new Error('kernels: tensor has no memory on the wasm heap');
  return info.memoryOffset as number;
}
