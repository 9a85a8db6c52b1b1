/**
 * Synthetic models for benchmarks: an HF-format folder (config.json, generation_config.json,
 * model.safetensors) holding deterministic pseudo-random weights for every tensor the graph of
 * a config expects. The weights mean nothing; they cost the same compute and memory traffic as
 * real ones, so timings on them are timings on the real shape.
 *
 * Scales keep activations sane: matrices and biases have mean 0, std 0.02; norm weights are
 * 1 ± 0.01, or 0 ± 0.01 where the family applies (1 + w) (Gemma). Each tensor's values depend
 * only on (seed, tensor name), so a file is reproducible whatever order it is written in.
 */
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { f32ToBf16, ModelError, numElements, UsageError, writeSafetensors, type TensorInput } from '@moi/core';
import { expectedTensors, specFromConfig, type RawConfig } from '@moi/models';

export type SynthDType = 'f32' | 'bf16';

export interface SynthProgress {
  /** the tensor whose values were just generated */
  tensor: string;
  /** bytes of tensor data up to and including this tensor, in file order */
  bytes: number;
  totalBytes: number;
}

export interface SynthOptions {
  /** a config.json path, a model folder holding one, or the parsed object */
  config: string | RawConfig;
  /** output folder (created if missing; its three files are overwritten) */
  out: string;
  /** weight dtype in the file (default f32) */
  dtype?: SynthDType;
  /** integer in [0, 2^32) (default 1) */
  seed?: number;
  /**
   * Called after each tensor's values are generated. writeSafetensors reads each tensor's data
   * once to validate and once to write, so the bytes run from 0 to totalBytes twice.
   */
  onProgress?: (p: SynthProgress) => void;
}

export interface SynthResult {
  dir: string;
  modelType: string;
  dtype: SynthDType;
  tensors: number;
  params: number;
  /** size of model.safetensors */
  fileBytes: number;
  seconds: number;
}

const MATRIX_STD = 0.02;
const NORM_STD = 0.01;
const TORCH_DTYPE: Record<SynthDType, string> = { f32: 'float32', bf16: 'bfloat16' };

/** Reads the config argument: an object as given, or JSON from a file or folder/config.json. */
function readConfigArg(config: string | RawConfig): RawConfig {
  if (typeof config !== 'string') {
    if (!config || typeof config !== 'object' || Array.isArray(config))
      throw new UsageError('E_SYNTH_CONFIG', 'synth: config must be a path or a JSON object');
    return config;
  }
  let file = config;
  try {
    if (statSync(file).isDirectory()) file = path.join(file, 'config.json');
  } catch {
    throw new ModelError('E_NO_CONFIG', `${config}: not found`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ModelError('E_CONFIG', `${file}: cannot read config JSON (${(err as Error).message})`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw))
    throw new ModelError('E_CONFIG', `${file}: expected a JSON object`);
  return raw as RawConfig;
}

/** 32-bit FNV-1a over the UTF-16 code units of `s`, started from `h`. */
function fnv1a(s: string, h = 0x811c9dc5): number {
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** One splitmix32 step: returns [next state, output]. */
function splitmix32(x: number): [number, number] {
  x = (x + 0x9e3779b9) | 0;
  let z = x;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [x, (z ^ (z >>> 16)) >>> 0];
}

/** xoshiro128** state for one tensor, from (seed, name) only. */
export function tensorRng(seed: number, name: string): Uint32Array {
  let x = fnv1a(name, fnv1a(`seed:${seed}\u0000`));
  const s = new Uint32Array(4);
  for (let i = 0; i < 4; i++) [x, s[i]] = splitmix32(x);
  if ((s[0] | s[1] | s[2] | s[3]) === 0) s[0] = 1; // the one state xoshiro cannot leave
  return s;
}

// Sum of three 10-bit uniforms (Irwin–Hall, bell-shaped): mean 1534.5, std sqrt((1024²−1)/4).
const IH_MEAN = 1534.5;
const IH_STD = Math.sqrt((1024 * 1024 - 1) / 4);

/**
 * Fills `dst` with mean + std × (bell-shaped noise of unit variance), advancing the xoshiro128**
 * state `s` in place. One 32-bit draw per element: its bits 2..31 make three 10-bit uniforms.
 */
export function fillNoise(dst: Float32Array, s: Uint32Array, mean: number, std: number): void {
  let s0 = s[0] | 0,
    s1 = s[1] | 0,
    s2 = s[2] | 0,
    s3 = s[3] | 0;
  const k = std / IH_STD;
  const base = mean - IH_MEAN * k;
  for (let i = 0; i < dst.length; i++) {
    const m = Math.imul(s1, 5);
    const r = Math.imul((m << 7) | (m >>> 25), 9) >>> 0;
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = (s3 << 11) | (s3 >>> 21);
    dst[i] = base + (((r >>> 2) & 1023) + ((r >>> 12) & 1023) + (r >>> 22)) * k;
  }
  s[0] = s0;
  s[1] = s1;
  s[2] = s2;
  s[3] = s3;
}

/** (mean, std) for a tensor, by its graph name. */
function initFor(name: string, normUnitOffset: boolean): [number, number] {
  if (/norm\.weight$/.test(name)) return [normUnitOffset ? 0 : 1, NORM_STD];
  return [0, MATRIX_STD];
}

const BF16_CHUNK = 1 << 16;

/** One tensor's values in the file dtype (F32 values, or BF16 bits made chunk by chunk). */
function makeTensor(
  seed: number,
  name: string,
  n: number,
  dtype: SynthDType,
  init: [number, number],
): Float32Array | Uint16Array {
  const rng = tensorRng(seed, name);
  if (dtype === 'f32') {
    const out = new Float32Array(n);
    fillNoise(out, rng, init[0], init[1]);
    return out;
  }
  const out = new Uint16Array(n);
  const chunk = new Float32Array(Math.min(n, BF16_CHUNK));
  for (let at = 0; at < n; at += chunk.length) {
    const part = n - at >= chunk.length ? chunk : chunk.subarray(0, n - at);
    fillNoise(part, rng, init[0], init[1]);
    out.set(f32ToBf16(part), at);
  }
  return out;
}

/** Writes the synthetic model folder described by `opts`; see the file comment. */
export function synthesizeModel(opts: SynthOptions): SynthResult {
  const t0 = performance.now();
  const dtype = opts.dtype ?? 'f32';
  const seed = opts.seed ?? 1;
  if (dtype !== 'f32' && dtype !== 'bf16')
    throw new UsageError('E_SYNTH_DTYPE', `synth: dtype must be f32 or bf16, got ${JSON.stringify(dtype)}`);
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32)
    throw new UsageError('E_SYNTH_SEED', `synth: seed must be an integer in [0, 2^32), got ${seed}`);
  if (!opts.out) throw new UsageError('E_SYNTH_OUT', 'synth: no output folder given');

  const config: RawConfig = { ...readConfigArg(opts.config), torch_dtype: TORCH_DTYPE[dtype] };
  const { spec } = specFromConfig(config, typeof opts.config === 'string' ? opts.config : 'config');
  const list = [...expectedTensors(spec)].map(([name, shape]) => ({ name, shape, n: numElements(shape) }));
  const elBytes = dtype === 'f32' ? 4 : 2;
  const totalBytes = list.reduce((a, t) => a + t.n * elBytes, 0);

  mkdirSync(opts.out, { recursive: true });
  writeFileSync(path.join(opts.out, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  const gen: Record<string, unknown> = { _from_model_config: true };
  for (const k of ['bos_token_id', 'eos_token_id', 'pad_token_id'])
    if (config[k] !== undefined && config[k] !== null) gen[k] = config[k];
  writeFileSync(path.join(opts.out, 'generation_config.json'), `${JSON.stringify(gen, null, 2)}\n`);

  // writeSafetensors collects its whole input before writing, so each entry's `data` is a getter
  // that makes the values when asked and keeps only the latest tensor: memory stays about one
  // tensor, and values are the same however often (or in whatever order) they are asked for.
  let heldName: string | null = null;
  let held: Float32Array | Uint16Array | null = null;
  let before = 0;
  const entries: Array<[string, TensorInput]> = list.map(({ name, shape, n }) => {
    const upTo = (before += n * elBytes);
    const entry: TensorInput = {
      dtype: dtype === 'f32' ? 'F32' : 'BF16',
      shape,
      get data() {
        if (heldName !== name) {
          held = null; // let the previous tensor go before making this one
          held = makeTensor(seed, name, n, dtype, initFor(name, spec.normUnitOffset));
          heldName = name;
          opts.onProgress?.({ tensor: name, bytes: upTo, totalBytes });
        }
        return held!;
      },
    };
    return [name, entry];
  });
  const file = path.join(opts.out, 'model.safetensors');
  try {
    writeSafetensors(file, entries, { format: 'pt' });
  } finally {
    held = null;
  }
  return {
    dir: opts.out,
    modelType: spec.modelType,
    dtype,
    tensors: list.length,
    params: list.reduce((a, t) => a + t.n, 0),
    fileBytes: statSync(file).size,
    seconds: (performance.now() - t0) / 1000,
  };
}
