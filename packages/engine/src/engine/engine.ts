/**
 * An Engine is a loaded model plus what generation needs beside it: tokenizer (when the folder
 * has one), generation_config defaults and EOS ids. `Engine.load` starts the backend and loads
 * the weights from a folder, reporting progress by bytes; a hub id needs a resolver handed in
 * (`@moi/cli`'s `hubResolver`), so the engine itself knows no network.
 */
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { initBackend, UsageError, type BackendReport } from '@moi/core';
import { loadModel, type DtypeChoice, type LoadedModel, type LoadProgress } from '@moi/models';
import { eosIds, loadTokenizer, readGenerationConfig, type GenerationConfig, type Tokenizer } from '../text/index.ts';

/** Turns what the user named (a hub id, say) into a model folder on disk. */
export type ModelResolver = (model: string) => Promise<string>;

export interface EngineLoadOptions {
  /** force a tfjs backend (else MOI_BACKEND, else the best available) */
  backend?: string;
  /** the cpu backend flushes float32 subnormals, as a GPU does (else MOI_FLUSH_SUBNORMALS) */
  flushSubnormals?: boolean;
  onLoad?: (p: LoadProgress) => void;
  /** maps the model argument to a folder (hub ids); without one the argument must be a folder */
  resolve?: ModelResolver;
  /** weight dtype: auto (default), f32, bf16 or q8 (see loadModel) */
  dtype?: DtypeChoice;
  /** check every weight for NaN/±Inf/|w| ≥ 2^64 at load, E_NONFINITE_WEIGHTS (default true; see loadModel) */
  checkTensors?: boolean;
}

/** Without a resolver, the model argument is a folder: a missing one is a typed error naming it. */
async function localFolder(model: string): Promise<string> {
  const dir = path.resolve(model);
  if (!existsSync(dir)) {
    const hint = /^[\w.-]+\/[\w.-]+$/.test(model) ? ' (a hub id needs a resolver: `resolve: hubResolver()` from @moi/cli)' : '';
    throw new UsageError('E_MODEL_DIR_NOT_FOUND', `model folder ${dir} does not exist${hint}`);
  }
  if (!statSync(dir).isDirectory()) throw new UsageError('E_MODEL_DIR_NOT_FOUND', `${dir} is a file; pass the model folder (with config.json)`);
  return dir;
}

export class Engine {
  private constructor(
    readonly dir: string,
    readonly backend: BackendReport,
    readonly loaded: LoadedModel,
    readonly tokenizer: Tokenizer | null,
    readonly generationConfig: GenerationConfig,
    /** every id that ends generation (generation_config ∪ config ∪ tokenizer) */
    readonly eosTokenIds: number[],
  ) {}

  static async load(model: string, opts: EngineLoadOptions = {}): Promise<Engine> {
    const backend = await initBackend({ backend: opts.backend, flushSubnormals: opts.flushSubnormals });
    const dir = await (opts.resolve ?? localFolder)(model);
    const loaded = await loadModel(dir, { onProgress: opts.onLoad, dtype: opts.dtype, checkTensors: opts.checkTensors });
    const tokenizer = existsSync(path.join(dir, 'tokenizer.json')) ? loadTokenizer(dir) : null;
    const generationConfig = readGenerationConfig(dir);
    return new Engine(dir, backend, loaded, tokenizer, generationConfig, eosIds(dir, tokenizer ?? undefined));
  }

  get model() {
    return this.loaded.model;
  }

  get spec() {
    return this.loaded.spec;
  }

  dispose(): void {
    this.loaded.dispose();
  }
}
