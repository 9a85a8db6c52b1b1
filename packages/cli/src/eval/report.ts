/**
 * DIR/report.html: one self-contained page (Chart.js inlined) with accuracy per mode and its
 * Wilson interval, the paired table, accuracy against output length, and a per-problem drill-down
 * with each mode's completion and verdict side by side.
 */
import fs from 'node:fs';
import { escapeHtml, page } from '../trace/html.ts';
import type { ResultRecord, Summary } from './summary.ts';

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** Equal-count bins of completion length (at most 8), with each mode's accuracy per bin. */
export function lengthBins(records: ResultRecord[], modes: string[]): { labels: string[]; series: Record<string, (number | null)[]> } {
  const lengths = records.map((r) => r.completion_tokens).sort((a, b) => a - b);
  const edges: number[] = [];
  const nb = Math.min(8, new Set(lengths).size);
  for (let i = 1; i < nb; i++) edges.push(lengths[Math.floor((i * lengths.length) / nb)]);
  const bounds = [...new Set(edges)];
  const binOf = (n: number) => bounds.filter((e) => n >= e).length;
  const nBins = bounds.length + 1;
  const labels = Array.from({ length: nBins }, (_, i) => {
    const lo = i === 0 ? lengths[0] ?? 0 : bounds[i - 1];
    const hi = i === nBins - 1 ? lengths[lengths.length - 1] ?? 0 : bounds[i] - 1;
    return lo === hi ? `${lo}` : `${lo}–${hi}`;
  });
  const series: Record<string, (number | null)[]> = {};
  for (const m of modes) {
    const right = new Array(nBins).fill(0);
    const n = new Array(nBins).fill(0);
    for (const r of records) {
      if (r.mode !== m) continue;
      const b = binOf(r.completion_tokens);
      n[b]++;
      if (r.correct) right[b]++;
    }
    series[m] = n.map((c, i) => (c ? right[i] / c : null));
  }
  return { labels, series };
}

function pairedTable(s: Summary): string {
  if (!s.paired.length) return '<p class="muted">One mode only: nothing to pair.</p>';
  const boot = s.samples > 1;
  const rows = s.paired.map((p) => `<tr><td>${escapeHtml(p.mode)} vs ${escapeHtml(p.baseline)}</td><td>${p.pairs}</td><td>${p.b}</td><td>${p.c}</td>` +
    `<td>${(100 * p.diff).toFixed(1)} pt</td><td>${p.mcnemar_p.toPrecision(3)}</td>` +
    `${boot && p.bootstrap95 ? `<td>${pct(p.bootstrap95.lo)} – ${pct(p.bootstrap95.hi)}</td>` : ''}</tr>`).join('');
  return `<table id="paired"><tr><th>comparison</th><th>pairs</th><th>b (base ✓, mode ✗)</th><th>c (base ✗, mode ✓)</th><th>Δ accuracy</th><th>McNemar exact p</th>${boot ? '<th>bootstrap 95% CI of Δ</th>' : ''}</tr>${rows}</table>`;
}

function modeTable(s: Summary): string {
  const rows = s.modes.map((m) => `<tr><td>${escapeHtml(m.mode)}${m.mode_used.some((u) => u !== m.mode) ? ` <span class="muted">(ran: ${escapeHtml(m.mode_used.join(', '))})</span>` : ''}</td>` +
    `<td>${m.n}</td><td>${m.correct}</td><td>${pct(m.accuracy)}</td><td>${pct(m.wilson95[0])} – ${pct(m.wilson95[1])}</td><td>${m.format_only}</td>` +
    `<td>${m.mean_completion_tokens.toFixed(1)}</td><td>${m.mean_entropy?.toFixed(3) ?? '–'}</td><td>${m.mean_weight?.toFixed(3) ?? '–'}</td></tr>`).join('');
  return `<table id="modes"><tr><th>mode</th><th>n</th><th>correct</th><th>accuracy</th><th>95% CI (Wilson)</th><th>format only</th><th>mean tokens</th><th>mean H</th><th>mean w_y</th></tr>${rows}</table>`;
}

function drillDown(s: Summary, records: ResultRecord[]): string {
  const modes = s.modes.map((m) => m.mode);
  const byKey = new Map(records.map((r) => [r.key, r]));
  const problems = [...new Set(records.map((r) => r.problem))].sort((a, b) => a - b);
  return problems.map((p) => {
    const first = records.find((r) => r.problem === p)!;
    const parts: string[] = [];
    let marks = '';
    for (let k = 0; k < s.samples; k++) {
      const cols = modes.map((m) => {
        const r = byKey.get(`${p}/${k}/${m}`);
        if (!r) return '<div class="col"><em>missing</em></div>';
        if (k === 0) marks += `<span class="${r.correct ? 'ok' : 'bad'}">${escapeHtml(m)} ${r.correct ? '✓' : '✗'}</span> `;
        return `<div class="col"><div class="head ${r.correct ? 'ok' : 'bad'}">${escapeHtml(m)}${s.samples > 1 ? ` · sample ${k}` : ''}: ${r.correct ? 'correct' : 'wrong'}` +
          ` · ${r.completion_tokens} tokens · extracted ${r.extracted === null ? '<em>none</em>' : `<code>${escapeHtml(r.extracted)}</code>`}` +
          `${r.reason ? ` <span class="muted">(${escapeHtml(r.reason)})</span>` : ''}</div><pre>${escapeHtml(r.completion)}</pre></div>`;
      }).join('');
      parts.push(`<div class="cols">${cols}</div>`);
    }
    return `<details class="problem" id="p${p}"><summary>#${p} · answer <code>${escapeHtml(JSON.stringify(first.answer))}</code> · ${marks}</summary>` +
      `<details class="prompt"><summary class="muted">prompt</summary><pre>${escapeHtml(first.prompt)}</pre></details>${parts.join('')}</details>`;
  }).join('\n');
}

const CSS = `
  .cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(280px, 1fr)); gap: .75rem; margin: .5rem 0 1rem; }
  .col pre, .prompt pre { white-space: pre-wrap; word-break: break-word; background: #f6f7f9; padding: .5rem; max-height: 22rem; overflow: auto; margin: .25rem 0; }
  .ok { color: #13783b; } .bad { color: #b3261e; }
  details.problem { border-top: 1px solid #e3e6ea; padding: .35rem 0; }
  summary { cursor: pointer; }
`;

const SCRIPT = `
Chart.defaults.animation = false;
const colors = ['#3b6fd8', '#d8563b', '#2f9e5a', '#9c4fd1'];
const modes = DATA.summary.modes;
new Chart(document.getElementById('acc'), {
  type: 'bar',
  data: {
    labels: modes.map((m) => m.mode),
    datasets: [
      { label: 'accuracy', data: modes.map((m) => m.accuracy), backgroundColor: modes.map((_, i) => colors[i % colors.length] + '99'), order: 2 },
      { label: '95% Wilson interval', data: modes.map((m) => m.wilson95), backgroundColor: '#1d2330', barPercentage: 0.06, grouped: false, order: 1 },
    ],
  },
  options: { maintainAspectRatio: false, scales: { y: { min: 0, max: 1, title: { display: true, text: 'accuracy' } } } },
});
new Chart(document.getElementById('len'), {
  type: 'line',
  data: {
    labels: DATA.length.labels,
    datasets: modes.map((m, i) => ({ label: m.mode, data: DATA.length.series[m.mode], borderColor: colors[i % colors.length], backgroundColor: colors[i % colors.length], spanGaps: true })),
  },
  options: { maintainAspectRatio: false, scales: { y: { min: 0, max: 1, title: { display: true, text: 'accuracy' } }, x: { title: { display: true, text: 'completion tokens (equal-count bins)' } } } },
});
`;

export function reportHtml(summary: Summary, records: ResultRecord[]): string {
  const modes = summary.modes.map((m) => m.mode);
  const body = `<h1>moi eval: ${escapeHtml(summary.task)}</h1>
<p class="muted">model ${escapeHtml(summary.model)} · data ${escapeHtml(summary.source)} · ${summary.problems} problems × ${summary.samples} sample(s) × ${modes.length} modes</p>
<h2>Accuracy per mode</h2>
<div class="chart"><canvas id="acc" role="img" aria-label="accuracy per mode with 95% Wilson intervals"></canvas></div>
${modeTable(summary)}
<h2>Paired comparison</h2>
${pairedTable(summary)}
<h2>Accuracy against output length</h2>
<div class="chart"><canvas id="len" role="img" aria-label="accuracy against completion length"></canvas></div>
<h2>Problems</h2>
${drillDown(summary, records)}`;
  return page(`moi eval: ${summary.task}`, CSS, body, { summary, length: lengthBins(records, modes) }, SCRIPT);
}

export function writeReport(file: string, summary: Summary, records: ResultRecord[]): void {
  fs.writeFileSync(file, reportHtml(summary, records));
}
