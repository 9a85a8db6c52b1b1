/**
 * loadModel(dir): config.json → family → spec; safetensors → checked, sanitized, laid out weights.
 * Reports progress by bytes read, for the CLI's progress bar.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { Checkpoint, DTYPE_SIZE, ModelError, notRegularFile, ropeInvFreq, type TensorInfo } from '@moi/core';
import { ConfigReader, type RawConfig } from './config.ts';
import { Decoder } from './decoder.ts';
import type { Family } from './family.ts';
import { checkBufferLimits } from './limits.ts';
import { canRelease } from './pack.ts';
import { familyFor } from './registry.ts';
import type { DecoderSpec } from './spec.ts';
import { buildWeights, checkNames, checkShape, expectedTensors } from './weights.ts';

export interface LoadProgress {
  /** bytes of checkpoint read so far */
  bytes: number;
  totalBytes: number;
  /** bytes of checkpoint whose tensors are also laid out and packed (the rest of the load work) */
  builtBytes: number;
  /** the tensor just read, or '' in the last report, once the model is built */
  tensor: string;
  phase: 'read' | 'done';
}

export interface LoadOptions {
  onProgress?: (p: LoadProgress) => void;
  /** keep the original weight blocks after XNNPACK packs them (wasm; see pack.ts) */
  keepWeights?: boolean;
  /**
   * How the matrices are held (issue 15). Today 'auto' (default) and 'f32' load f32 (16-bit
   * checkpoints widened exactly); 'bf16' and 'q8' are refused with E_DTYPE until their kernels exist.
   */
  dtype?: DtypeChoice;
}

/** The --dtype values. */
export const DTYPE_CHOICES = ['auto', 'f32', 'bf16', 'q8'] as const;
export type DtypeChoice = (typeof DTYPE_CHOICES)[number];
/** What the matrices were loaded as (f16 checkpoints stay f16 under 'auto'). */
export type WeightDtype = 'f32' | 'bf16' | 'f16' | 'q8';

export interface LoadedModel {
  dir: string;
  /** config.json as parsed */
  config: RawConfig;
  family: Family<any>;
  /** the family's typed config (HF field names) */
  familyConfig: unknown;
  spec: DecoderSpec;
  model: Decoder;
  /** bytes of the checkpoint files' tensors */
  checkpointBytes: number;
  /** bytes held by the weights in memory */
  weightBytes: number;
  /** what the matrices are held as, and why (e.g. 'bf16 checkpoint kept in 16 bits') */
  dtype: WeightDtype;
  dtypeNote: string;
  loadSeconds: number;
  dispose(): void;
}

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

export function readConfig(dir: string): RawConfig {
  const file = path.join(dir, 'config.json');
  if (!existsSync(file)) throw new ModelError('E_NO_CONFIG', `${file}: not found (a model folder needs config.json and safetensors weights)`);
  const problem = notRegularFile(file);
  if (problem) throw new ModelError('E_CONFIG', `${file}: cannot read it: it ${problem}`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ModelError('E_CONFIG', `${file}: not valid JSON (${(err as Error).message})`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new ModelError('E_CONFIG', `${file}: expected a JSON object`);
  return raw as RawConfig;
}

/** Parse a config object into its family and spec (no weights). */
export function specFromConfig(config: RawConfig, source = 'config.json'): { family: Family<any>; familyConfig: unknown; spec: DecoderSpec } {
  const family = familyFor(config.model_type, source);
  const familyConfig = family.parseConfig(new ConfigReader(config, source));
  const spec: DecoderSpec = family.toSpec(familyConfig);
  // an unsupported or incomplete rope_scaling fails here, naming the file, not at the first forward
  for (const rope of new Set(spec.layers.map((l) => l.rope))) {
    let r: ReturnType<typeof ropeInvFreq>;
    try {
      r = ropeInvFreq(rope);
    } catch (err) {
      if (err instanceof ModelError) throw new ModelError(err.code, `${source}: ${err.message}`);
      throw err;
    }
    // the bounds on each field should make this impossible; a combination of them must not either
    if (!r.invFreq.every((f) => Number.isFinite(f) && f > 0) || !(Number.isFinite(r.attentionScaling) && r.attentionScaling > 0)) {
      throw new ModelError('E_CONFIG', `${source}: rope_theta (${rope.base}) and rope_scaling (${JSON.stringify(rope.scaling)}) give non-finite rotary frequencies`);
    }
  }
  return { family, familyConfig, spec };
}

/**
 * Before any weight is read: the bytes each tensor's header declares are the bytes its shape
 * and dtype need (as the config implies the shape), and their sum is what will be read.
 */
function checkBytes(expected: Map<string, number[]>, info: (g: string) => TensorInfo, dir: string): number {
  let total = 0;
  for (const [g, shape] of expected) {
    const t = info(g);
    const want = shape.reduce((n, d) => n * d, 1) * DTYPE_SIZE[t.dtype];
    if (t.byteLength !== want) {
      throw new ModelError('E_SHAPE', `${dir}: tensor ${t.name} holds ${t.byteLength} bytes but the config implies [${shape.join(', ')}] of ${t.dtype} = ${want} bytes`);
    }
    total += want;
  }
  return total;
}

export async function loadModel(dir: string, opts: LoadOptions = {}): Promise<LoadedModel> {
  const t0 = performance.now();
  if (opts.dtype === 'bf16' || opts.dtype === 'q8') {
    // packed 16/8-bit weights need the wasm GEMV kernels (issue 15), not built yet
    throw new ModelError('E_DTYPE', `dtype ${opts.dtype}: weights are held in f32 only for now (use 'auto' or 'f32')`);
  }
  const config = readConfig(dir);
  const { family, familyConfig, spec } = specFromConfig(config, path.join(dir, 'config.json'));
  const ckpt = Checkpoint.open(dir);
  try {
    // checkpoint name → graph name
    const source = new Map<string, string>();
    for (const name of ckpt.names()) {
      let g = family.sanitize(name);
      if (g === 'lm_head.weight' && spec.tieWordEmbeddings) g = null; // a tied head saved anyway
      if (g === null) continue;
      if (source.has(g)) throw new ModelError('E_DUPLICATE_TENSOR', `${dir}: tensors ${source.get(g)} and ${name} both map to ${g}`);
      source.set(g, name);
    }
    const expected = expectedTensors(spec);
    checkNames(expected, new Set(source.keys()), dir);
    for (const [g, shape] of expected) {
      const info = ckpt.info(source.get(g)!);
      checkShape(source.get(g)!, shape, info.shape, dir);
      if (!FLOAT_DTYPES.has(info.dtype)) {
        throw new ModelError('E_DTYPE', `${dir}: tensor ${source.get(g)} is ${info.dtype}; weights must be F32, F16, BF16 or F64 (quantized checkpoints are not supported)`);
      }
    }

    const totalBytes = checkBytes(expected, (g) => ckpt.info(source.get(g)!), dir);
    // A tensor counts as built once the work after its read is done: the layout and packing of
    // what was read before tensor k end when tensor k is read, the rest when the model is built.
    let bytes = 0;
    let builtBytes = 0;
    const read = (g: string) => {
      const name = source.get(g)!;
      const info = ckpt.info(name);
      builtBytes = bytes;
      const data = ckpt.readFloat32(name);
      bytes += info.byteLength;
      opts.onProgress?.({ bytes, totalBytes, builtBytes, tensor: name, phase: 'read' });
      return { data, shape: info.shape };
    };
    const weights = buildWeights(spec, read, { release: opts.keepWeights ? false : canRelease() });
    const model = new Decoder(spec, weights);
    try {
      checkBufferLimits(weights, dir);
    } catch (err) {
      model.dispose();
      throw err;
    }
    opts.onProgress?.({ bytes: totalBytes, totalBytes, builtBytes: totalBytes, tensor: '', phase: 'done' });
    let weightBytes = 0;
    const seen = new Set<tf.Tensor>();
    const count = (t: tf.Tensor | null) => { if (t && !seen.has(t)) { seen.add(t); weightBytes += t.size * 4; } };
    count(weights.embed); count(weights.finalNorm); count(weights.lmHead);
    for (const l of weights.layers) for (const t of Object.values(l)) count(t as tf.Tensor | null);
    return {
      dir, config, family, familyConfig, spec, model,
      checkpointBytes: totalBytes,
      weightBytes,
      dtype: 'f32',
      dtypeNote: 'f32',
      loadSeconds: (performance.now() - t0) / 1000,
      dispose: () => model.dispose(),
    };
  } finally {
    ckpt.close();
  }
}
