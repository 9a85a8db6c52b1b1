/** Loading an engine for a command, with progress on a TTY. */
import { Engine } from '../engine/engine.ts';
import { makeProgress, showProgress, type Progress } from '../progress.ts';
import { modelArg } from './options.ts';

export interface ModelFlags { model: string; backend?: string; revision?: string; quiet?: boolean }

export async function loadEngine(o: ModelFlags, forceQuiet = false): Promise<{ engine: Engine; progress: Progress }> {
  const progress = makeProgress(showProgress(Boolean(o.quiet) || forceQuiet));
  const engine = await Engine.load(modelArg(o.model), {
    backend: o.backend,
    revision: o.revision,
    offline: undefined,
    onDownload: (p) => progress.download(p),
    onLoad: (p) => progress.load(p),
  });
  progress.stop();
  return { engine, progress };
}
