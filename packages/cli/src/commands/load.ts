/** Loading an engine for a command, with progress on a TTY. */
import { backendLabel, ModelError, UsageError } from '@moi/core';
import { Engine } from '@moi/engine';
import { hubResolver } from '../hub/index.ts';
import { makeProgress, prefillChunkFor, showProgress, type Progress } from '../progress.ts';
import { dtypeLabel, modelArg, type DtypeChoice } from './options.ts';
import { atEnd } from './usage.ts';

export interface ModelFlags {
  model: string;
  backend?: string;
  dtype?: DtypeChoice;
  threads?: number;
  revision?: string;
  quiet?: boolean;
  verbose?: boolean;
  /** false with --no-check-tensors: skip the load's NaN/Inf weight check */
  checkTensors?: boolean;
}

export async function loadEngine(o: ModelFlags, forceQuiet = false): Promise<{ engine: Engine; progress: Progress }> {
  const progress = makeProgress(showProgress(Boolean(o.quiet) || forceQuiet));
  const engine = await Engine.load(modelArg(o.model), {
    backend: o.backend,
    dtype: o.dtype,
    threads: o.threads,
    checkTensors: o.checkTensors ?? true,
    resolve: hubResolver({ revision: o.revision, onProgress: (p) => progress.download(p) }),
    onLoad: (p) => progress.load(p),
  }).catch((err: unknown) => {
    // A model folder that is not there is a runtime failure of the command (exit 1), as a bad
    // model file is; exit 2 stays for bad flags and values.
    if (err instanceof UsageError && err.code === 'E_MODEL_DIR_NOT_FOUND')
      throw new ModelError(err.code, err.message, { cause: err });
    throw err;
  });
  atEnd(() => engine.dispose());
  progress.stop();
  if (progress.prefillChunk !== undefined) progress.prefillChunk = prefillChunkFor(engine.loaded.checkpointBytes);
  if (o.verbose) {
    const s = engine.spec;
    const l = engine.loaded;
    process.stderr.write(
      `moi-gen: loaded ${engine.dir}: ${s.modelType}, ${s.numLayers} layers, hidden ${s.hiddenSize}, vocab ${s.vocabSize}, ` +
        `context ${s.maxPositionEmbeddings}; ${(l.checkpointBytes / 1e6).toFixed(1)} MB in ${l.loadSeconds.toFixed(2)} s on ${backendLabel(engine.backend)}, weights ${dtypeLabel(l)}, ${l.threads.note}` +
        `${engine.tokenizer ? '' : '; no tokenizer.json (ids in, ids out)'}\n`,
    );
  }
  return { engine, progress };
}
