import { ThreadPool } from './index.ts';
import os from 'node:os';
for (const spin of [100, 1000]) {
  const pool = await ThreadPool.create({ threads: 2, spinMicros: spin });
  const r = [];
  for (let i = 0; i < 7; i++) r.push(pool.emptyJobMicros(2000));
  r.sort((a, b) => a - b);
  console.log('spin', spin, 'µs round trip min/median/max', r[0].toFixed(2), r[3].toFixed(2), r[6].toFixed(2), 'load', os.loadavg()[0]);
  // with gaps between jobs (a decode step's host work between ops)
  const g = [];
  for (let k = 0; k < 2000; k++) { const t0 = performance.now(); while (performance.now() - t0 < 0.02); const t1 = performance.now(); pool.dispatch('noop', 2, 1); g.push((performance.now() - t1) * 1000); }
  g.sort((a, b) => a - b);
  console.log('  with 20 µs gaps: median', g[1000].toFixed(2), 'p90', g[1800].toFixed(2));
  await pool.dispose();
}
