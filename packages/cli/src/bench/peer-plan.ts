/**
 * bench/peer.ts's arguments and plan: which synthetic models, GGUF files and benchmark runs a
 * side-by-side comparison with llama.cpp takes, as plain argument lists. Kept apart from the
 * running so that `--dry-run` prints exactly what would run (and a test can check it without
 * llama.cpp), and so the script gets commander from this package.
 *
 * Dtypes pair up as: f32 ↔ GGUF f32, bf16 ↔ GGUF bf16, q8 ↔ GGUF q8_0 (llama.cpp's Q8_0; ours is
 * the same blocks of 32 int8 with an f32 scale where llama.cpp keeps an f16 one).
 *
 * Threads: each thread count of `--threads` (default 1 and all cores) runs both engines with that
 * count (llama.cpp's --threads, our bench's --threads), one after the other, per dtype.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { estimateHeap, specFromConfig, WASM_HEAP_BYTES, type RawConfig } from '@moi/models';
import { Scheduler } from '@moi/engine';
import { WASM_HEAP_LIMIT, weightBytes as heldBytes } from './heap.ts';

/** The four standard shapes (`--config all`). */
export const PEER_STANDARD = ['smollm2-135m', 'qwen2.5-0.5b', 'qwen3-0.6b', 'gemma-3-270m'] as const;
/** Larger published shapes: selectable by name, not in `all` (minutes each; f32 does not fit our heap). */
export const PEER_LARGE = ['qwen3-1.7b', 'qwen2.5-1.5b'] as const;
export const PEER_DTYPES = ['f32', 'bf16', 'q8'] as const;
export type PeerDtype = (typeof PEER_DTYPES)[number];
/** bench/llamacpp-batch.mjs: copied into the scratch folder beside peer-bench's scripts, run there */
export const LLAMACPP_BATCH = 'llamacpp-batch.mjs';
/** to-gguf.mjs --type for each of our dtypes */
export const GGUF_TYPE: Record<PeerDtype, string> = { f32: 'f32', bf16: 'bf16', q8: 'q8_0' };

export interface PeerOptions {
  peer: string;
  configs: string[];
  dtypes: PeerDtype[];
  scratch: string;
  out: string;
  promptTokens: number;
  genTokens: number;
  repeat: number;
  /** thread counts, each run by both engines (ascending, distinct) */
  threads: number[];
  /** batched-decode sizes for `moi-gen bench` (null: its default, 4,16; none on the larger shapes) */
  batches: number[] | null;
  backend?: string;
  keepModels: boolean;
  skipOurs: boolean;
  skipLlamacpp: boolean;
  dryRun: boolean;
}

const positive =
  (flag: string) =>
  (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${flag} needs a positive integer`);
    return n;
  };

/** `--threads 1,2` or `1,max` (max = the cores this process may use). */
function threadList(v: string): number[] {
  const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  const list = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => (s === 'max' ? cores : Number(s)));
  if (!list.length || list.some((n) => !Number.isInteger(n) || n < 1 || n > 256)) {
    throw new InvalidArgumentError('give thread counts from 1 to 256 (or max: all cores), comma-separated, e.g. 1,max');
  }
  return [...new Set(list)].sort((a, b) => a - b);
}

function dtypeList(v: string): PeerDtype[] {
  const list = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (!list.length) throw new InvalidArgumentError(`give one or more of ${PEER_DTYPES.join(', ')}, comma-separated`);
  for (const d of list) {
    if (!(PEER_DTYPES as readonly string[]).includes(d))
      throw new InvalidArgumentError(`"${d}" is not one of ${PEER_DTYPES.join(', ')}`);
  }
  if (new Set(list).size !== list.length) throw new InvalidArgumentError('a dtype is listed twice');
  // always in the order f32, bf16, q8: f32 first, as the others' speed-up is over it
  return PEER_DTYPES.filter((d) => list.includes(d));
}

function configList(v: string): string[] {
  const all = [...PEER_STANDARD, ...PEER_LARGE] as string[];
  const list = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const out: string[] = [];
  for (const c of list) {
    if (c === 'all') out.push(...PEER_STANDARD);
    else if (all.includes(c)) out.push(c);
    else throw new InvalidArgumentError(`"${c}" is not one of ${all.join(', ')} or all`);
  }
  if (!out.length) throw new InvalidArgumentError('give a shape or all');
  return [...new Set(out)];
}

function batchList(v: string): number[] {
  const list = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  if (list.some((n) => !Number.isInteger(n) || n < 1))
    throw new InvalidArgumentError('batch sizes are positive integers, comma-separated (empty for none)');
  return list;
}

export function peerProgram(repo: string): Command {
  return new Command('peer')
    .description(
      'our engine next to llama.cpp (node-llama-cpp, CPU) on synthetic models of published shapes, same dtype, prompt, lengths and threads',
    )
    .option('--peer <dir>', 'the peer-bench folder', path.resolve(repo, '../shared/peer-bench'))
    .option(
      '--config <names>',
      `${PEER_STANDARD.join(', ')} or all (the four); also ${PEER_LARGE.join(', ')}; comma-separated`,
      configList,
      [...PEER_STANDARD],
    )
    .option(
      '--dtype <list>',
      'weights on both sides: f32 (GGUF f32), bf16 (GGUF bf16), q8 (GGUF q8_0); a comma list runs each (e.g. f32,bf16,q8)',
      dtypeList,
      ['f32'],
    )
    .option(
      '--scratch <dir>',
      'writable work folder: the peer-bench copy, its node_modules (node-llama-cpp, kept), models/ and results/',
      path.join(process.env.TMPDIR || os.tmpdir(), 'moi-peer-bench'),
    )
    .option('--out <file>', 'combined JSON (default SCRATCH/results/peer-<time>.json)')
    .option('--prompt-tokens <n>', 'prompt length', positive('--prompt-tokens'), 128)
    .option('--gen-tokens <n>', 'decode steps timed', positive('--gen-tokens'), 64)
    .option('--repeat <n>', 'runs per figure (medians)', positive('--repeat'), 3)
    .option(
      '--threads <list>',
      'thread counts, each run by both engines (comma-separated; max = all cores)',
      threadList,
      threadList('1,max'),
    )
    .addOption(
      new Option('--backend <name>', 'passed to moi-gen bench').choices(['tensorflow', 'wasm', 'cpu', 'webgpu']),
    )
    .option(
      '--batches <list>',
      'passed to moi-gen bench: batched-decode sizes (default 4,16; none on the larger shapes)',
      batchList,
    )
    .option('--keep-models', 'keep the generated safetensors/GGUF files (default: delete each when done)')
    .option('--skip-ours', 'run llama.cpp only')
    .option('--skip-llamacpp', 'run ours only')
    .option('--dry-run', 'print the plan (every command, as JSON) and run nothing')
    .configureOutput({ outputError: (str, write) => write(`peer: ${str}`) });
}

/**
 * Parsed options; a bad flag or value throws commander's error, its message already written
 * (to stderr, or to `writeErr`).
 */
export function parsePeerArgs(argv: string[], repo: string, writeErr?: (s: string) => void): PeerOptions {
  const p = peerProgram(repo).exitOverride();
  if (writeErr) p.configureOutput({ writeErr });
  p.parse(argv, { from: 'user' });
  const o = p.opts() as {
    peer: string;
    config: string[];
    dtype: PeerDtype[];
    scratch: string;
    out?: string;
    promptTokens: number;
    genTokens: number;
    repeat: number;
    threads: number[];
    backend?: string;
    batches?: number[];
    keepModels?: boolean;
    skipOurs?: boolean;
    skipLlamacpp?: boolean;
    dryRun?: boolean;
  };
  const scratch = path.resolve(o.scratch);
  return {
    peer: path.resolve(o.peer),
    configs: o.config,
    dtypes: o.dtype,
    scratch,
    out: o.out
      ? path.resolve(o.out)
      : path.join(scratch, 'results', `peer-${new Date().toISOString().replace(/[:.]/g, '-')}.json`),
    promptTokens: o.promptTokens,
    genTokens: o.genTokens,
    repeat: o.repeat,
    threads: o.threads,
    backend: o.backend,
    batches: o.batches ?? null,
    keepModels: Boolean(o.keepModels),
    skipOurs: Boolean(o.skipOurs),
    skipLlamacpp: Boolean(o.skipLlamacpp),
    dryRun: Boolean(o.dryRun),
  };
}

export { CommanderError };

// ---- the plan

/** One command: `node SCRIPT args` in peer-bench's scratch copy, or `tsx bin.ts bench ...` in the repo. */
export interface Step {
  cwd: 'scratch' | 'repo';
  args: string[];
}

export interface DtypeRun {
  dtype: PeerDtype;
  /** both engines' thread count */
  threads: number;
  ggufType: string;
  gguf: string;
  /** the conversion, on a dtype's first thread count (null after: the GGUF is reused) */
  toGguf: Step | null;
  /** whether this is the dtype's last run (its GGUF may go) */
  lastOfDtype: boolean;
  llamacpp: Step | null;
  /** llama.cpp's batched decode at the batch sizes ours runs (bench/llamacpp-batch.mjs; null without batches) */
  llamacppBatch: Step | null;
  ours: Step | null;
}

export interface ShapePlan {
  config: string;
  /** the synthetic model, written once for the shape: f32 when f32 runs, else bf16 (exact for bf16; q8 quantizes from it) */
  source: { dtype: 'f32' | 'bf16'; dir: string; make: Step };
  /** the bytes our weights take at each dtype run, and the KV cache of the bench (against WASM_HEAP_LIMIT) */
  heap: { dtype: PeerDtype; weightBytes: number; kvBytes: number; fits: boolean }[];
  runs: DtypeRun[];
}

export class PlanError extends Error {}

const GB = (n: number) => `${(n / 1e9).toFixed(2)} GB`;

/**
 * The plan for one shape. Throws PlanError when one of our runs could not fit the wasm heap
 * (weights at the dtype + the bench's KV cache), before anything is written.
 */
export function planShape(o: PeerOptions, name: string, config: RawConfig): ShapePlan {
  const large = (PEER_LARGE as readonly string[]).includes(name);
  const batches = o.batches ?? (large ? [] : null);
  const { spec } = specFromConfig(config, `${name}.json`);
  // the batch sizes our bench runs (its default 4, 16 when --batches is not given)
  const sizes = batches ?? [4, 16];
  const rows = Math.max(1, ...sizes);
  const kvBytes = Scheduler.kvBytesFor(spec, rows, o.promptTokens + o.genTokens + 1);
  // the loader's own check (E_MEMORY), and room for the bench's KV cache beside the weights
  const fits = (d: PeerDtype) =>
    estimateHeap(spec, d).total <= WASM_HEAP_BYTES && heldBytes(spec, d) + kvBytes <= WASM_HEAP_LIMIT;
  const heap = o.dtypes.map((dtype) => ({ dtype, weightBytes: heldBytes(spec, dtype), kvBytes, fits: fits(dtype) }));
  if (!o.skipOurs) {
    const over = heap.filter((h) => !h.fits);
    if (over.length) {
      const fitting = heap.filter((h) => h.fits).map((h) => h.dtype);
      const others = PEER_DTYPES.filter(fits);
      throw new PlanError(
        over
          .map(
            (h) =>
              `${name} at ${h.dtype}: ${GB(h.weightBytes)} of weights + ${GB(h.kvBytes)} of KV cache ` +
              `(${rows} row${rows > 1 ? 's' : ''} × ${o.promptTokens + o.genTokens + 1} tokens) do not fit the wasm heap (${GB(WASM_HEAP_LIMIT)} of its 4 GiB)`,
          )
          .join('; ') +
          `; run it with --dtype ${(fitting.length ? fitting : others).join(',') || 'q8'}${batches?.length ? ' or fewer --batches' : ''}, or with --skip-ours`,
      );
    }
  }
  const models = path.join(o.scratch, 'models');
  const sourceDtype = o.dtypes.includes('f32') ? 'f32' : 'bf16';
  const dir = path.join(models, `${name}-${sourceDtype}`);
  const make: Step = {
    cwd: 'scratch',
    args: [
      'make-synthetic.mjs',
      '--config',
      `configs/${name}.json`,
      '--out',
      dir,
      '--seed',
      '1',
      '--dtype',
      sourceDtype,
    ],
  };
  const batched = sizes.filter((b) => b > 1);
  const runs = o.dtypes.flatMap((dtype) =>
    o.threads.map((threads, ti): DtypeRun => {
      const ggufType = GGUF_TYPE[dtype];
      const gguf = path.join(models, `${name}-${ggufType}.gguf`);
      const lengths = ['--prompt-tokens', String(o.promptTokens), '--gen-tokens', String(o.genTokens)];
      // a llama.cpp script's arguments (f32 KV cache, like ours)
      const llamaArgs = (script: string, repeat: number, extra: string[] = []) => [
        script,
        '--gguf',
        gguf,
        ...lengths,
        '--threads',
        String(threads),
        '--repeat',
        String(repeat),
        ...extra,
        '--kv',
        'f32',
      ];
      return {
        dtype,
        threads,
        ggufType,
        gguf,
        lastOfDtype: ti === o.threads.length - 1,
        toGguf:
          o.skipLlamacpp || ti > 0
            ? null
            : { cwd: 'scratch', args: ['to-gguf.mjs', '--model', dir, '--out', gguf, '--type', ggufType] },
        llamacpp: o.skipLlamacpp ? null : { cwd: 'scratch', args: llamaArgs('bench-llamacpp.mjs', o.repeat) },
        // as our bench: at most two timed runs per batch size
        llamacppBatch:
          o.skipLlamacpp || !batched.length
            ? null
            : {
                cwd: 'scratch',
                args: llamaArgs(LLAMACPP_BATCH, Math.min(o.repeat, 2), ['--batches', batched.join(',')]),
              },
        ours: o.skipOurs
          ? null
          : {
              cwd: 'repo',
              args: [
                'packages/cli/src/bin.ts',
                'bench',
                '--model',
                dir,
                '--dtype',
                dtype,
                ...lengths,
                '--repeat',
                String(o.repeat),
                '--threads',
                String(threads),
                ...(o.backend ? ['--backend', o.backend] : []),
                ...(batches ? ['--batches', batches.join(',')] : []),
                '--json',
              ],
            },
      };
    }),
  );
  return { config: name, source: { dtype: sourceDtype, dir, make }, heap, runs };
}

/** Every shape's plan; the configs are read from the peer-bench folder. */
export function planAll(o: PeerOptions): ShapePlan[] {
  return o.configs.map((name) => {
    const file = path.join(o.peer, 'configs', `${name}.json`);
    if (!fs.existsSync(file)) throw new PlanError(`${file}: no such config in the peer-bench folder (pass --peer DIR)`);
    return planShape(o, name, JSON.parse(fs.readFileSync(file, 'utf8')) as RawConfig);
  });
}
