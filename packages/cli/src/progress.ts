/**
 * What a person at a terminal sees while a model downloads, loads and prefills: progress bars by
 * bytes and a prefill count, on stderr. Nothing at all when stdout is not a TTY, or with --quiet.
 *
 * The load bar covers reading and building (layout, packing) to 100%. The prefill bar appears
 * once a prefill has run for PREFILL_AFTER_MS (MOI_PROGRESS_AFTER_MS overrides it, for tests);
 * so that it can, prefill runs in chunks of about a second while a bar may be shown
 * (prefillChunkFor; on SmolLM2-135M, 64-token chunks cost ~1.5% of prefill speed, 32 ~12%).
 */
import cliProgress from 'cli-progress';
import type { DownloadProgress } from './hub/index.ts';
import type { LoadProgress } from '@moi/models';

export interface Progress {
  download(p: DownloadProgress): void;
  load(p: LoadProgress): void;
  /** a prefill is about to start (the bar's clock) */
  begin(): void;
  prefill(p: { row: number; done: number; total: number }): void;
  /** prompt tokens per prefill forward while progress can be shown (undefined: the engine's default) */
  prefillChunk?: number;
  /** end whatever bar is open */
  stop(): void;
}

const MB = 1024 * 1024;

export function showProgress(quiet: boolean): boolean {
  return !quiet && Boolean(process.stdout.isTTY) && Boolean(process.stderr.isTTY);
}

const silent: Progress = { download() {}, load() {}, begin() {}, prefill() {}, stop() {} };

export const PREFILL_AFTER_MS = 1000;
/**
 * Prompt tokens per prefill forward while a bar may be shown: about a second or less on the wasm
 * backend (Qwen3-0.6B at f32, 2.4 GB, prefills ~27 tok/s; SmolLM2-135M ~110 tok/s).
 */
export function prefillChunkFor(checkpointBytes: number): number {
  return checkpointBytes > 1e9 ? 32 : 64;
}

export function makeProgress(enabled: boolean): Progress {
  if (!enabled) return silent;
  let bar: cliProgress.SingleBar | null = null;
  let kind = '';
  const open = (name: string, total: number, format: string) => {
    if (kind === name && bar) return bar;
    bar?.stop();
    kind = name;
    bar = new cliProgress.SingleBar(
      { stream: process.stderr, format, hideCursor: true, clearOnComplete: true },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0);
    return bar;
  };
  const after = Number(process.env.MOI_PROGRESS_AFTER_MS ?? PREFILL_AFTER_MS);
  let t0 = performance.now();
  return {
    prefillChunk: 64,
    begin() {
      t0 = performance.now();
    },
    download(p) {
      const total = Math.max(1, Math.round((p.overallTotal ?? p.total ?? p.bytes) / MB));
      const b = open('download', total, 'downloading {bar} {value}/{total} MB  {file}');
      b.setTotal(total);
      b.update(Math.round(p.overallBytes / MB), { file: p.file });
    },
    load(p) {
      // reading and building (layout, packing) each count for half of the bar
      const total = Math.max(1, Math.round(p.totalBytes / MB));
      open('load', total, 'loading     {bar} {value}/{total} MB').update(Math.round((p.bytes + p.builtBytes) / 2 / MB));
      if (p.phase === 'done') this.stop();
    },
    prefill(p) {
      if (p.done >= p.total) return this.stop();
      if (performance.now() - t0 < after) return;
      open(`prefill${p.row}`, p.total, 'prefill     {bar} {value}/{total} tokens').update(p.done);
    },
    stop() {
      bar?.stop();
      bar = null;
      kind = '';
    },
  };
}
