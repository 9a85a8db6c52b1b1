/**
 * An Engine is a loaded model plus what generation needs beside it: tokenizer (when the folder
 * has one), generation_config defaults and EOS ids. `Engine.load` resolves hub ids, starts the
 * backend and loads the weights, reporting progress by bytes.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { initBackend, type BackendReport } from '@moi/core';
import { loadModel, type DtypeChoice, type LoadedModel, type LoadProgress } from '@moi/models';
import { resolveModel, type DownloadProgress } from '../hub/index.ts';
import { eosIds, loadTokenizer, readGenerationConfig, type GenerationConfig, type Tokenizer } from '../text/index.ts';

export interface EngineLoadOptions {
  /** force a tfjs backend (else MOI_BACKEND, else the best available) */
  backend?: string;
  onDownload?: (p: DownloadProgress) => void;
  onLoad?: (p: LoadProgress) => void;
  /** hub options */
  revision?: string;
  offline?: boolean;
  /** weight dtype: auto (default), f32, bf16 or q8 (see loadModel) */
  dtype?: DtypeChoice;
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
    const backend = await initBackend({ backend: opts.backend });
    const dir = await resolveModel(model, { onProgress: opts.onDownload, revision: opts.revision, offline: opts.offline });
    const loaded = await loadModel(dir, { onProgress: opts.onLoad, dtype: opts.dtype });
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
