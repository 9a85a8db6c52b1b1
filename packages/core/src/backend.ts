/**
 * Backend choice. Best first: `tensorflow` (tfjs-node-gpu, then tfjs-node), then `wasm` with
 * SIMD, then `cpu`. `webgpu` (Dawn through the `webgpu` npm package) is opt-in only.
 * `MOI_BACKEND` or the `backend` option forces one; a forced backend that cannot start is a
 * BackendError naming the missing package.
 *
 * `MOI_FLUSH_SUBNORMALS=1` (or the `flushSubnormals` option) makes the cpu backend flush float32
 * subnormals to zero in every kernel's inputs and outputs, as a GPU does (flush.ts): the tests'
 * stand-in for a GPU's arithmetic. It needs the cpu backend (chosen when none is forced).
 */
import * as tf from '@tensorflow/tfjs-core';
import { existsSync, readdirSync } from 'node:fs';
import { BackendError } from './errors.ts';
import { initKernels } from './kernels/wasm/index.ts';
import { cpuFlushing, setCpuFlushing } from './flush.ts';
import { shareDeviceWithTfjs } from './kernels/webgpu/device.ts';

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
  skipped: { name: BackendName; package: string; error: string; fix?: string }[];
  /** the cpu backend flushes float32 subnormals to zero, as a GPU does (MOI_FLUSH_SUBNORMALS=1) */
  flushSubnormals: boolean;
}

/** The backend as reports name it: `cpu (flushing subnormals)` for the flushing cpu backend. */
export function backendLabel(r: Pick<BackendReport, 'name' | 'flushSubnormals'>): string {
  return r.flushSubnormals ? `${r.name} (flushing subnormals)` : r.name;
}

interface Candidate {
  name: BackendName;
  packages: string[];
  start: (pkg: string) => Promise<void>;
}

/** A start-up failure that knows what is missing and how to fix it. */
class StartFailure extends Error {
  constructor(
    message: string,
    readonly fix: string,
  ) {
    super(message);
  }
}

/** True when `err` says `pkg` itself is not installed (not a dependency or binding inside it). */
function notInstalled(err: unknown, pkg: string): boolean {
  const e = err as { code?: string; message?: string };
  return (
    (e?.code === 'ERR_MODULE_NOT_FOUND' || e?.code === 'MODULE_NOT_FOUND') &&
    new RegExp(`['"]${pkg.replace(/[/.]/g, '\\$&')}['"/]`).test(e.message ?? '')
  );
}

async function importPackage(pkg: string, fix: string): Promise<any> {
  try {
    return await import(pkg);
  } catch (err) {
    if (notInstalled(err, pkg)) throw new StartFailure(`package ${pkg} is not installed`, fix);
    throw err;
  }
}

async function startTensorflow(pkg: string): Promise<void> {
  try {
    await importPackage(
      pkg,
      `install it (\`pnpm add ${pkg}\`; its install script downloads libtensorflow, so it needs network access${pkg.endsWith('-gpu') ? ', CUDA and cuDNN' : ''})`,
    );
  } catch (err) {
    // A failed tfjs-node(-gpu) import has already registered its kernels; drop them so the next
    // package does not print a 'kernel already registered' warning for each of ~150 kernels.
    for (const k of tf.getKernelsForBackend('tensorflow')) tf.unregisterKernel(k.kernelName, 'tensorflow');
    if (err instanceof StartFailure) throw err;
    throw new StartFailure(
      `${pkg} is installed but its native binding did not load (${describe(err)})`,
      `rebuild it where its install script can download libtensorflow (\`pnpm rebuild ${pkg}\`)` +
        (pkg.endsWith('-gpu') ? ', with the CUDA and cuDNN versions its documentation lists' : ''),
    );
  }
}

async function startWasm(pkg: string): Promise<void> {
  await importPackage(pkg, `install it (\`pnpm add ${pkg}\`)`);
  // Threads do not work in Node's wasm backend; SIMD is detected by tfjs itself. The flag is
  // registered by the package import and read when the backend starts (setBackend).
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
}

async function startCpu(pkg: string): Promise<void> {
  await importPackage(pkg, `install it (\`pnpm add ${pkg}\`)`);
}

const VULKAN_LOADER_DIRS = [
  '/usr/lib/x86_64-linux-gnu',
  '/usr/lib/aarch64-linux-gnu',
  '/usr/lib64',
  '/usr/lib',
  '/usr/local/lib',
];
const VULKAN_ICD_DIRS = ['/usr/share/vulkan/icd.d', '/etc/vulkan/icd.d', '/usr/local/share/vulkan/icd.d'];

/** Why Dawn found no adapter, from what is on disk: the Vulkan loader, then a driver. */
function noAdapterFailure(): StartFailure {
  const drivers =
    (process.env.VK_DRIVER_FILES ?? process.env.VK_ICD_FILENAMES)?.split(':').filter((f) => f && existsSync(f)) ??
    VULKAN_ICD_DIRS.flatMap((d) => {
      try {
        return readdirSync(d).filter((f) => f.endsWith('.json'));
      } catch {
        return [];
      }
    });
  const loader = VULKAN_LOADER_DIRS.some((d) => existsSync(`${d}/libvulkan.so.1`));
  const apt =
    'apt-get install -t <suite>-backports mesa-vulkan-drivers libvulkan1 (Mesa 25 lavapipe; the stock Mesa 22 one is refused by Dawn)';
  if (!loader)
    return new StartFailure(
      'no GPU adapter: the Vulkan loader (libvulkan.so.1) is not installed',
      `install a Vulkan driver and its loader: ${apt}, or your GPU vendor's driver`,
    );
  if (drivers.length === 0)
    return new StartFailure(
      'no GPU adapter: no Vulkan driver is installed (no ICD file in /usr/share/vulkan/icd.d)',
      `install a driver: ${apt}, or your GPU vendor's Vulkan driver`,
    );
  return new StartFailure(
    `no GPU adapter: Dawn rejected every Vulkan driver present (${drivers.join(', ')})`,
    `use a Vulkan 1.1+ driver Dawn accepts: a GPU vendor's driver, or ${apt}`,
  );
}

async function startWebgpu(pkg: string): Promise<void> {
  const dawn: any = await importPackage('webgpu', 'install the Dawn package (`pnpm add webgpu`)');
  const g = globalThis as any;
  Object.assign(g, dawn.globals);
  if (!g.navigator?.gpu) {
    Object.defineProperty(g, 'navigator', {
      value: { ...(g.navigator ?? {}), gpu: dawn.create([]) },
      configurable: true,
    });
  }
  // tfjs only says "no adapter" in a console warning: ask first, and say what is missing
  const adapter = await g.navigator.gpu.requestAdapter();
  if (!adapter) throw noAdapterFailure();
  await importPackage(pkg, `install it (\`pnpm add ${pkg}\`)`);
  // tfjs's webgpu backend over moi's own device (shader-f16, the adapter's limits): our WGSL
  // kernels and tfjs ops then share one device and each other's buffers
  await shareDeviceWithTfjs(pkg);
}

const CANDIDATES: Record<BackendName, Candidate> = {
  tensorflow: {
    name: 'tensorflow',
    packages: ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'],
    start: startTensorflow,
  },
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
async function tryStart(
  c: Candidate,
  skipped: BackendReport['skipped'],
  env: NodeJS.ProcessEnv,
): Promise<string | null> {
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
      skipped.push({
        name: c.name,
        package: pkg,
        error: describe(err),
        ...(err instanceof StartFailure ? { fix: err.fix } : {}),
      });
    }
  }
  return null;
}

export interface InitBackendOptions {
  /** force a backend; defaults to $MOI_BACKEND, else the best available */
  backend?: BackendName | string;
  env?: NodeJS.ProcessEnv;
  /** flush float32 subnormals on the cpu backend; defaults to $MOI_FLUSH_SUBNORMALS (1 or 0) */
  flushSubnormals?: boolean;
}

/** MOI_FLUSH_SUBNORMALS: 1 on, 0 or unset off; anything else is a BackendError naming it. */
function flushFromEnv(env: NodeJS.ProcessEnv): boolean {
  const v = (env.MOI_FLUSH_SUBNORMALS ?? '').trim();
  if (v === '' || v === '0') return false;
  if (v === '1') return true;
  throw new BackendError(`MOI_FLUSH_SUBNORMALS must be 1 (flush subnormals on the cpu backend) or 0, got '${v}'`);
}

/** Choose and start the tfjs backend. Idempotent: a second call with the same choice is a no-op. */
export async function initBackend(opts: InitBackendOptions = {}): Promise<BackendReport> {
  const env = opts.env ?? process.env;
  const forced = (opts.backend ?? env.MOI_BACKEND ?? '').trim().toLowerCase() || null;
  if (forced !== null && !BACKENDS.includes(forced as BackendName)) {
    throw new BackendError(
      `unknown backend '${forced}'${opts.backend ? '' : ' (from MOI_BACKEND)'}; expected one of ${BACKENDS.join(', ')}`,
    );
  }
  const flush = opts.flushSubnormals ?? flushFromEnv(env);
  if (flush && forced !== null && forced !== 'cpu') {
    throw new BackendError(
      `flushing subnormals (${opts.flushSubnormals === undefined ? 'MOI_FLUSH_SUBNORMALS=1' : 'flushSubnormals'}) needs the cpu backend, ` +
        `but backend '${forced}' was requested; use the cpu backend (MOI_BACKEND=cpu)`,
    );
  }
  if (
    current &&
    (forced === null || forced === current.name) &&
    tf.getBackend() === current.name &&
    current.flushSubnormals === flush &&
    cpuFlushing() === flush
  )
    return current;

  const skipped: BackendReport['skipped'] = [];
  if (flush) {
    const pkg = await tryStart(CANDIDATES.cpu, skipped, env);
    if (!pkg)
      throw new BackendError(
        `the flushing cpu backend cannot start: ${skipped.map((s) => `${s.package}: ${s.error}`).join('; ')}`,
      );
    setCpuFlushing(true);
    const by = opts.flushSubnormals === undefined ? 'MOI_FLUSH_SUBNORMALS=1' : 'the flushSubnormals option';
    current = {
      name: 'cpu',
      package: pkg,
      reason: `${forced ? `forced by ${opts.backend ? 'option' : 'MOI_BACKEND'}` : 'chosen'}, flushing subnormals (${by})`,
      skipped,
      flushSubnormals: true,
    };
    return current;
  }
  setCpuFlushing(false);
  if (forced) {
    const c = CANDIDATES[forced as BackendName];
    const pkg = await tryStart(c, skipped, env);
    if (!pkg) {
      const why = skipped.map((s) => `${s.package}: ${s.error}${s.fix ? `; fix: ${s.fix}` : ''}`).join('. ');
      throw new BackendError(`backend '${forced}' was requested but cannot start. ${why}`);
    }
    current = {
      name: c.name,
      package: pkg,
      reason: `forced by ${opts.backend ? 'option' : 'MOI_BACKEND'}`,
      skipped,
      flushSubnormals: false,
    };
    return current;
  }
  for (const name of AUTO_ORDER) {
    const pkg = await tryStart(CANDIDATES[name], skipped, env);
    if (pkg) {
      const reason =
        skipped.length === 0
          ? 'best available'
          : `best available (${skipped.map((s) => `${s.package} unavailable`).join(', ')})`;
      current = { name, package: pkg, reason, skipped, flushSubnormals: false };
      return current;
    }
  }
  throw new BackendError(`no tfjs backend could start: ${skipped.map((s) => `${s.package}: ${s.error}`).join('; ')}`);
}

/**
 * Adopt the tfjs backend that is active now (one registered by the caller, e.g. a test's
 * stand-in) as the chosen one: later initBackend() calls without a forced name keep it.
 */
export function adoptBackend(reason: string): BackendReport {
  const name = tf.getBackend() as BackendName;
  current = {
    name,
    package: 'registered by the caller',
    reason,
    skipped: [],
    flushSubnormals: name === 'cpu' && cpuFlushing(),
  };
  return current;
}

/** The report of the last initBackend(), or null. */
export function backendReport(): BackendReport | null {
  return current;
}
