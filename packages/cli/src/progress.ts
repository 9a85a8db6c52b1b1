/**
 * What a person at a terminal sees while a model downloads, loads and prefills: progress bars by
 * bytes and a prefill count, on stderr. Nothing at all when stdout is not a TTY, or with --quiet.
 */
import cliProgress from 'cli-progress';
import type { DownloadProgress } from './hub/index.ts';
import type { LoadProgress } from '@moi/models';

export interface Progress {
  download(p: DownloadProgress): void;
  load(p: LoadProgress): void;
  prefill(p: { row: number; done: number; total: number }): void;
  /** end whatever bar is open */
  stop(): void;
}

const MB = 1024 * 1024;

export function showProgress(quiet: boolean): boolean {
  return !quiet && Boolean(process.stdout.isTTY) && Boolean(process.stderr.isTTY);
}

const silent: Progress = { download() {}, load() {}, prefill() {}, stop() {} };

export function makeProgress(enabled: boolean): Progress {
  if (!enabled) return silent;
  let bar: cliProgress.SingleBar | null = null;
  let kind = '';
  const open = (name: string, total: number, format: string) => {
    if (kind === name && bar) return bar;
    bar?.stop();
    kind = name;
    bar = new cliProgress.SingleBar({ stream: process.stderr, format, hideCursor: true, clearOnComplete: true }, cliProgress.Presets.shades_classic);
    bar.start(total, 0);
    return bar;
  };
  return {
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
      if (p.total < 64) return;
      open(`prefill${p.row}`, p.total, 'prefill     {bar} {value}/{total} tokens').update(p.done);
      if (p.done >= p.total) this.stop();
    },
    stop() {
      bar?.stop();
      bar = null;
      kind = '';
    },
  };
}
