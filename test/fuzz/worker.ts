/**
 * A fuzz worker: runs cases start..end-1 of a seed in-process and prints one JSON line per case
 * (CaseResult) on stdout. The parent (main.ts) watches it for hangs and crashes.
 */
import os from 'node:os';
import path from 'node:path';
import { prepareFuzz, runCase } from './check.ts';

const [seed, start, end, fixtures] = [
  Number(process.argv[2]),
  Number(process.argv[3]),
  Number(process.argv[4]),
  process.argv[5],
];
await prepareFuzz();
const dir = path.join(os.tmpdir(), `moi-fuzz-${process.pid}`);
for (let i = start; i < end; i++) {
  process.stdout.write(JSON.stringify({ start: i }) + '\n');
  const r = await runCase(seed, i, fixtures, dir);
  process.stdout.write(JSON.stringify(r) + '\n');
}
process.exit(0);
