/**
 * Backend choice. Best first: `tensorflow` (tfjs-node-gpu, then tfjs-node), then `wasm` with
 * SIMD, then `cpu`. `webgpu` (Dawn through the `webgpu` npm package) is opt-in only.
 * `MOI_BACKEND` or the `backend` option forces one; a forced backend that cannot start is a
 * BackendError naming the missing package.
 */
import * as tf from '@tensorflow/tfjs-core';
import { BackendError } from './errors.ts';
import { initKernels } from './kernels/index.ts';

export type BackendName = 'tensorflow' | 'wasm' | 'cpu' | 'webgpu';
export const BACKENDS: readonly BackendName[] = ['tensorflow', 'wasm', 'cpu', 'webgpu'];

export interface BackendReport {
  /** the tfjs backend now active */
  name: BackendName;
  /** why it was chosen, in words */
  reason: string;
  /** the npm package that provides it */
  package: string;
  /** backends tried before it, with why they did not start */
  skipped: { name: BackendName; package: string; error: string }[];
}

interface Candidate { name: BackendName; packages: string[]; start: (pkg: string) => Promise<void> }

async function startTensorflow(pkg: string): Promise<void> {
  try {
    await import(pkg);
  } catch (err) {
    // A failed tfjs-node(-gpu) import has already registered its kernels; drop them so the next
    // package does not print a 'kernel already registered' warning for each of ~150 kernels.
    for (const k of tf.getKernelsForBackend('tensorflow')) tf.unregisterKernel(k.kernelName, 'tensorflow');
    throw err;
  }
}

async function startWasm(pkg: string): Promise<void> {
  await import(pkg);
  // Threads do not work in Node's wasm backend; SIMD is detected by tfjs itself. The flag is
  // registered by the package import and read when the backend starts (setBackend).
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
}

async function startCpu(pkg: string): Promise<void> {
  await import(pkg);
}

async function startWebgpu(pkg: string): Promise<void> {
  const dawn: any = await import('webgpu');
  const g = globalThis as any;
  Object.assign(g, dawn.globals);
  if (!g.navigator?.gpu) {
    Object.defineProperty(g, 'navigator', { value: { ...(g.navigator ?? {}), gpu: dawn.create([]) }, configurable: true });
  }
  await import(pkg);
}

const CANDIDATES: Record<BackendName, Candidate> = {
  tensorflow: { name: 'tensorflow', packages: ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'], start: startTensorflow },
  wasm: { name: 'wasm', packages: ['@tensorflow/tfjs-backend-wasm'], start: startWasm },
  cpu: { name: 'cpu', packages: ['@tensorflow/tfjs-backend-cpu'], start: startCpu },
  webgpu: { name: 'webgpu', packages: ['@tensorflow/tfjs-backend-webgpu'], start: startWebgpu },
};

const AUTO_ORDER: BackendName[] = ['tensorflow', 'wasm', 'cpu'];

let current: BackendReport | null = null;

function describe(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split('\n')[0].slice(0, 300);
}

/** Try to bring up one backend from one of its packages; returns the package used or throws. */
async function tryStart(c: Candidate, skipped: BackendReport['skipped'], env: NodeJS.ProcessEnv): Promise<string | null> {
  for (const pkg of c.packages) {
    try {
      await c.start(pkg);
      if (await tf.setBackend(c.name)) {
        await tf.ready();
        if (c.name === 'wasm') await initKernels(env); // our own SIMD kernels (MOI_KERNELS=0: off)
        return pkg;
      }
      skipped.push({ name: c.name, package: pkg, error: 'tf.setBackend returned false' });
    } catch (err) {
      skipped.push({ name: c.name, package: pkg, error: describe(err) });
    }
  }
  return null;
}

export interface InitBackendOptions {
  /** force a backend; defaults to $MOI_BACKEND, else the best available */
  backend?: BackendName | string;
  env?: NodeJS.ProcessEnv;
}

/** Choose and start the tfjs backend. Idempotent: a second call with the same choice is a no-op. */
export async function initBackend(opts: InitBackendOptions = {}): Promise<BackendReport> {
  const env = opts.env ?? process.env;
  const forced = (opts.backend ?? env.MOI_BACKEND ?? '').trim().toLowerCase() || null;
  if (forced !== null && !BACKENDS.includes(forced as BackendName)) {
    throw new BackendError(`unknown backend '${forced}'${opts.backend ? '' : ' (from MOI_BACKEND)'}; expected one of ${BACKENDS.join(', ')}`);
  }
  if (current && (forced === null || forced === current.name) && tf.getBackend() === current.name) return current;

  const skipped: BackendReport['skipped'] = [];
  if (forced) {
    const c = CANDIDATES[forced as BackendName];
    const pkg = await tryStart(c, skipped, env);
    if (!pkg) {
      const why = skipped.map((s) => `${s.package}: ${s.error}`).join('; ');
      throw new BackendError(`backend '${forced}' was requested but cannot start. Install ${c.packages.join(' or ')}` +
        `${forced === 'webgpu' ? ' and the `webgpu` (Dawn) package' : ''}. (${why})`);
    }
    current = { name: c.name, package: pkg, reason: `forced by ${opts.backend ? 'option' : 'MOI_BACKEND'}`, skipped };
    return current;
  }
  for (const name of AUTO_ORDER) {
    const pkg = await tryStart(CANDIDATES[name], skipped, env);
    if (pkg) {
      const reason = skipped.length === 0 ? 'best available' :
        `best available (${skipped.map((s) => `${s.package} unavailable`).join(', ')})`;
      current = { name, package: pkg, reason, skipped };
      return current;
    }
  }
  throw new BackendError(`no tfjs backend could start: ${skipped.map((s) => `${s.package}: ${s.error}`).join('; ')}`);
}

/** The report of the last initBackend(), or null. */
export function backendReport(): BackendReport | null {
  return current;
}
