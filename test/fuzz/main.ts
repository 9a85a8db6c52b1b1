/**
 * `pnpm fuzz [--cases N] [--seed S] [--jobs J]`: N mutated model folders (default 3,000, seed 1),
 * each loaded and generated from in worker processes (J at a time, default 2). A worker silent
 * for more than 10 s on one case is killed and the case counted as a hang; a worker that dies
 * (a heap out-of-memory abort, a signal) counts its case as a crash; the next worker resumes
 * after it. Prints the outcome counts (typed MoiError, ok = loaded with finite logits, untyped,
 * hang, crash/OOM, leak) overall and per kind of mutation, and the non-finite loads (a case that
 * loaded and then met NaN/Inf logits, E_NONFINITE: its weights should have failed the load's
 * check, E_NONFINITE_WEIGHTS); exits 1 unless every case was typed or ok and none was a
 * non-finite load.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { repoRoot, sharedDir, SHARED_MISSING } from '@moi/core';
import type { CaseResult } from './check.ts';

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
const CASES = arg('cases', 3000);
const SEED = arg('seed', 1);
const JOBS = arg('jobs', 2);
const HANG_MS = 10_000;

const shared = sharedDir();
if (!shared) {
  console.error(SHARED_MISSING);
  process.exit(2);
}
const fixtures = path.join(shared, 'fixtures');
const results: CaseResult[] = [];
const t0 = performance.now();

/** Run cases [start, end) in workers, restarting after a hang or crash. */
async function runRange(start: number, end: number): Promise<void> {
  let next = start;
  while (next < end) {
    next = await new Promise<number>((resolve) => {
      const child = spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          path.join(repoRoot, 'test/fuzz/worker.ts'),
          String(SEED),
          String(next),
          String(end),
          fixtures,
        ],
        { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let current = next;
      let buf = '';
      let stderr = '';
      let timer: NodeJS.Timeout | null = null;
      let hung = false;
      const arm = () => {
        if (timer) clearTimeout(timer);
        timer = setTimeout(() => {
          hung = true;
          child.kill('SIGKILL');
        }, HANG_MS + 5_000); // startup and the case's own guard
      };
      arm();
      child.stderr.on('data', (d) => {
        stderr = (stderr + d).slice(-2000);
      });
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        buf += d;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          const m = JSON.parse(line) as { start: number } | CaseResult;
          if ('start' in m) {
            current = m.start;
            arm();
            continue;
          }
          results.push(m);
          current = m.index + 1;
          if (results.length % 250 === 0)
            process.stderr.write(
              `fuzz: ${results.length}/${CASES} cases, ${((performance.now() - t0) / 1000).toFixed(0)} s\n`,
            );
        }
      });
      child.on('close', (code, signal) => {
        if (timer) clearTimeout(timer);
        if (current >= end) return resolve(end);
        const outcome = hung ? 'hang' : 'crash';
        const why = hung
          ? `no answer in ${HANG_MS + 5000} ms`
          : `worker exited with ${code ?? signal}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`;
        results.push({
          index: current,
          base: '?',
          what: '?',
          outcome: outcome as CaseResult['outcome'],
          detail: why,
          ms: 0,
        });
        resolve(current + 1);
      });
    });
  }
}

const per = Math.ceil(CASES / JOBS);
await Promise.all(Array.from({ length: JOBS }, (_, j) => runRange(j * per, Math.min(CASES, (j + 1) * per))));

const seconds = (performance.now() - t0) / 1000;
const count = (xs: CaseResult[]) =>
  xs.reduce((m, r) => ({ ...m, [r.outcome]: (m[r.outcome] ?? 0) + 1 }), {} as Record<string, number>);
const groups = new Map<string, CaseResult[]>();
for (const r of results) {
  const g = r.what.split(':')[0];
  groups.set(g, [...(groups.get(g) ?? []), r]);
}
console.log(`fuzz: ${results.length} cases, seed ${SEED}, ${JOBS} workers, ${seconds.toFixed(0)} s`);
console.log('outcomes:', JSON.stringify(count(results)));
for (const [g, rs] of groups) console.log(`  ${g}: ${rs.length} cases ${JSON.stringify(count(rs))}`);
const slowest = results.reduce((a, b) => (b.ms > a.ms ? b : a), results[0]);
console.log(
  `slowest case: #${slowest.index} ${slowest.base} ${slowest.what} ${slowest.ms.toFixed(0)} ms (${slowest.outcome})`,
);
const codes = new Map<string, number>();
for (const r of results) if (r.outcome === 'typed') codes.set(r.detail, (codes.get(r.detail) ?? 0) + 1);
console.log(
  'error codes:',
  [...codes]
    .sort((a, b) => b[1] - a[1])
    .map(([c, n]) => `${c} ${n}`)
    .join(', '),
);
const nonFiniteLoads = results.filter((r) => r.outcome === 'typed' && r.detail === 'E_NONFINITE');
console.log(`non-finite loads (loaded, then NaN/Inf logits): ${nonFiniteLoads.length}`);
const bad = [...results.filter((r) => r.outcome !== 'typed' && r.outcome !== 'ok'), ...nonFiniteLoads];
for (const r of bad.slice(0, 30)) console.log(`  BAD #${r.index} ${r.base} ${r.what}: ${r.outcome} ${r.detail}`);
process.exit(bad.length ? 1 : 0);
