/**
 * DIR/report.html: one self-contained page (Chart.js inlined) with accuracy per mode and its
 * Wilson interval, pass@k, the paired table, accuracy against output length, and a per-problem
 * drill-down with each mode's completion and verdict side by side. Code tasks add the execution
 * outcomes per mode, the sandbox's protections, and per completion how its program did (passed,
 * wrong answer, timeout, runtime error, …, at which test) and the program that ran.
 *
 * The run's settings (β, temperature, top-p, max tokens, dtype, seed, date) head the page. The
 * accuracy chart draws each Wilson interval as whiskers over the accuracy bar, with the accuracy
 * as a labelled dot (readable at 0%, where the bar has no height); the length chart becomes bars
 * when the completions fall in fewer than three length bins (every one at max tokens: one bin).
 */
import fs from 'node:fs';
import { escapeHtml, page } from '../trace/html.ts';
import { EXEC_STATUSES, type Execution } from './scorers.ts';
import type { ResultRecord, Summary } from './summary.ts';

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** What the run was given, for the page's settings line (unset ones are the model's defaults). */
export interface ReportSettings {
  beta?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  maxTokens?: number;
  dtype?: string;
  seed?: number;
  endpoint?: string;
  /** when the report was written (ISO 8601) */
  date?: string;
}

function settingsLine(r: ReportSettings): string {
  const v = (x: unknown, unset = 'model default') => escapeHtml(x === undefined || x === null ? unset : String(x));
  const items: [string, string, string][] = [
    ['beta', 'β', v(r.beta, 'default')],
    ['temperature', 'temperature', v(r.temperature)],
    ['top_p', 'top-p', v(r.topP)],
    ['max_tokens', 'max tokens', v(r.maxTokens)],
    ['dtype', 'dtype', v(r.dtype, r.endpoint ? "the server's" : 'auto')],
    ['seed', 'seed', v(r.seed)],
    ['date', 'date', v(r.date, '–')],
  ];
  if (r.topK !== undefined) items.splice(3, 0, ['top_k', 'top-k', v(r.topK)]);
  if (r.endpoint) items.push(['endpoint', 'endpoint', v(r.endpoint)]);
  return items.map(([k, name, val]) => `<span class="setting" data-k="${k}">${name} <b>${val}</b></span>`).join(' · ');
}

/** An expected answer as a person reads it: text as is, a list joined, an object as "key: value" pairs. */
export function answerText(answer: unknown): string {
  if (answer === null || answer === undefined) return '–';
  if (typeof answer === 'string') return answer;
  if (typeof answer === 'number' || typeof answer === 'boolean') return String(answer);
  if (Array.isArray(answer)) return answer.map(answerText).join(', ');
  if (typeof answer === 'object') {
    return Object.entries(answer as Record<string, unknown>)
      .map(([k, x]) => `${k}: ${Array.isArray(x) ? `[${answerText(x)}]` : answerText(x)}`)
      .join(' · ');
  }
  return String(answer);
}

/** Equal-count bins of completion length (at most 8), with each mode's accuracy per bin. */
export function lengthBins(
  records: ResultRecord[],
  modes: string[],
): { labels: string[]; series: Record<string, (number | null)[]> } {
  const lengths = records.map((r) => r.completion_tokens).sort((a, b) => a - b);
  const edges: number[] = [];
  const nb = Math.min(8, new Set(lengths).size);
  for (let i = 1; i < nb; i++) edges.push(lengths[Math.floor((i * lengths.length) / nb)]);
  const bounds = [...new Set(edges)];
  const binOf = (n: number) => bounds.filter((e) => n >= e).length;
  const nBins = bounds.length + 1;
  const labels = Array.from({ length: nBins }, (_, i) => {
    const lo = i === 0 ? (lengths[0] ?? 0) : bounds[i - 1];
    const hi = i === nBins - 1 ? (lengths[lengths.length - 1] ?? 0) : bounds[i] - 1;
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
  const rows = s.paired
    .map(
      (p) =>
        `<tr><td>${escapeHtml(p.mode)} vs ${escapeHtml(p.baseline)}</td><td>${p.pairs}</td><td>${p.b}</td><td>${p.c}</td>` +
        `<td>${(100 * p.diff).toFixed(1)} pt</td><td>${p.mcnemar_p.toPrecision(3)}</td>` +
        `${boot && p.bootstrap95 ? `<td>${pct(p.bootstrap95.lo)} – ${pct(p.bootstrap95.hi)}</td>` : ''}</tr>`,
    )
    .join('');
  return `<table id="paired"><tr><th>comparison</th><th>pairs</th><th>b (base ✓, mode ✗)</th><th>c (base ✗, mode ✓)</th><th>Δ accuracy</th><th>McNemar exact p</th>${boot ? '<th>bootstrap 95% CI of Δ</th>' : ''}</tr>${rows}</table>`;
}

function modeTable(s: Summary): string {
  const rows = s.modes
    .map(
      (m) =>
        `<tr><td>${escapeHtml(m.mode)}${m.mode_used.some((u) => u !== m.mode) ? ` <span class="muted">(ran: ${escapeHtml(m.mode_used.join(', '))})</span>` : ''}</td>` +
        `<td>${m.n}</td><td>${m.correct}</td><td>${pct(m.accuracy)}</td><td>${pct(m.wilson95[0])} – ${pct(m.wilson95[1])}</td><td>${m.format_only}</td><td>${m.no_answer ?? '–'}</td>` +
        `<td>${m.mean_completion_tokens.toFixed(1)}</td><td>${m.mean_entropy?.toFixed(3) ?? '–'}</td><td>${m.mean_weight?.toFixed(3) ?? '–'}</td></tr>`,
    )
    .join('');
  return `<table id="modes"><tr><th>mode</th><th>n</th><th>correct</th><th>accuracy</th><th>95% CI (Wilson)</th><th>format only</th><th>no answer</th><th>mean tokens</th><th>mean H</th><th>mean w_y</th></tr>${rows}</table>`;
}

/** pass@k per mode, and the paired bootstrap of its difference from the baseline. */
function passAtTable(s: Summary): string {
  const ks = s.pass_at_k ?? [1];
  const head = ks.map((k) => `<th>pass@${k}</th>`).join('');
  const rows = s.modes
    .map(
      (m) =>
        `<tr><td>${escapeHtml(m.mode)}</td>${ks.map((k) => `<td>${pct(m.pass_at?.[`pass@${k}`] ?? 0)}</td>`).join('')}</tr>`,
    )
    .join('');
  const paired = s.paired
    .map(
      (p) =>
        `<tr><td>${escapeHtml(p.mode)} vs ${escapeHtml(p.baseline)}</td>${ks
          .map((k) => {
            const x = p.pass_at?.[`pass@${k}`];
            return `<td>${x ? `${(100 * x.diff).toFixed(1)} pt <span class="muted">(${pct(x.bootstrap95.lo)} – ${pct(x.bootstrap95.hi)})</span>` : '–'}</td>`;
          })
          .join('')}</tr>`,
    )
    .join('');
  return (
    `<table id="passk"><tr><th>mode</th>${head}</tr>${rows}${paired ? `<tr><th>Δ (paired bootstrap 95% CI over problems)</th>${ks.map(() => '<th></th>').join('')}</tr>${paired}` : ''}</table>` +
    '<p class="muted">pass@k: the unbiased estimator 1 − C(n−c, k)/C(n, k) per problem (n samples, c correct), averaged over problems.</p>'
  );
}

/** Completions per execution outcome (code tasks). */
function executionTable(s: Summary): string {
  const rows = s.modes
    .filter((m) => m.execution)
    .map(
      (m) =>
        `<tr><td>${escapeHtml(m.mode)}</td>${EXEC_STATUSES.map((st) => `<td>${m.execution![st]}</td>`).join('')}</tr>`,
    )
    .join('');
  return `<table id="execution"><tr><th>mode</th>${EXEC_STATUSES.map((st) => `<th>${st.replace('_', ' ')}</th>`).join('')}</tr>${rows}</table>`;
}

function sandboxNote(s: Summary): string {
  const b = s.sandbox;
  if (!b) return '';
  const yes = (x: boolean) => (x ? 'yes' : '<strong class="bad">no</strong>');
  return (
    `<table id="sandbox"><tr><th>python</th><td>${escapeHtml(`${b.python} ${b.python_version}`)}</td></tr><tr><th>runs as</th><td>${escapeHtml(b.user)}</td></tr>` +
    `<tr><th>network namespace (no network)</th><td>${yes(b.network_namespace)}</td></tr><tr><th>PID namespace</th><td>${yes(b.pid_namespace)}</td></tr>` +
    `<tr><th>no_new_privs</th><td>${yes(b.no_new_privs)}</td></tr>` +
    `<tr><th>limits per test</th><td>${b.limits.cpu_seconds} s CPU, ${b.limits.wall_seconds} s idle wall clock, ${b.limits.address_space_mib} MiB address space, ${b.limits.extra_processes} more processes, ${escapeHtml(b.limits.output_bytes)} bytes of output, ${b.limits.file_bytes} bytes per file</td></tr>` +
    `<tr><th>environment</th><td>${escapeHtml(b.env.join(', '))} only</td></tr><tr><th>working folder</th><td>${escapeHtml(b.workdir)}</td></tr>` +
    `<tr><th>workers</th><td>${b.workers}, ${escapeHtml(b.priority)}</td></tr>` +
    `${b.degraded.length ? `<tr><th>degraded</th><td class="bad">${b.degraded.map(escapeHtml).join('<br>')}</td></tr>` : ''}</table>`
  );
}

const EXEC_TEXT: Record<string, string> = {
  passed: 'passed',
  wrong_answer: 'wrong answer',
  timeout: 'timeout',
  runtime_error: 'runtime error',
  memory: 'memory limit',
  output_limit: 'output limit',
  no_code: 'no code',
};

function executionLine(e: Execution): string {
  const tests = e.status === 'no_code' ? '' : ` · ${e.passed}/${e.total} tests passed · ${e.seconds.toFixed(2)} s`;
  return (
    `<div class="exec ${e.status === 'passed' ? 'ok' : 'bad'}">execution: <strong>${EXEC_TEXT[e.status] ?? escapeHtml(e.status)}</strong>${tests}` +
    `${e.detail ? ` <span class="muted">— ${escapeHtml(e.detail)}</span>` : ''}</div>`
  );
}

function drillDown(s: Summary, records: ResultRecord[]): string {
  const modes = s.modes.map((m) => m.mode);
  const byKey = new Map(records.map((r) => [r.key, r]));
  const problems = [...new Set(records.map((r) => r.problem))].sort((a, b) => a - b);
  return problems
    .map((p) => {
      const first = records.find((r) => r.problem === p)!;
      const parts: string[] = [];
      let marks = '';
      for (let k = 0; k < s.samples; k++) {
        const cols = modes
          .map((m) => {
            const r = byKey.get(`${p}/${k}/${m}`);
            if (!r) return '<div class="col"><em>missing</em></div>';
            if (k === 0)
              marks += `<span class="${r.correct ? 'ok' : 'bad'}">${escapeHtml(m)} ${r.correct ? '✓' : '✗'}</span> `;
            if (r.execution) {
              // a program: the verdict is how it ran; the program itself folds out
              return (
                `<div class="col"><div class="head ${r.correct ? 'ok' : 'bad'}">${escapeHtml(m)}${s.samples > 1 ? ` · sample ${k}` : ''}: ${r.correct ? 'correct' : 'wrong'}` +
                ` · ${r.completion_tokens} tokens</div>${executionLine(r.execution)}` +
                `${r.extracted !== null ? `<details class="code"><summary class="muted">program that ran</summary><pre>${escapeHtml(r.extracted)}</pre></details>` : ''}` +
                `<pre>${escapeHtml(r.completion)}</pre></div>`
              );
            }
            return (
              `<div class="col"><div class="head ${r.correct ? 'ok' : 'bad'}">${escapeHtml(m)}${s.samples > 1 ? ` · sample ${k}` : ''}: ${r.correct ? 'correct' : 'wrong'}` +
              ` · ${r.completion_tokens} tokens · extracted ${r.extracted === null ? '<em>none</em>' : `<code>${escapeHtml(r.extracted)}</code>`}` +
              `${r.reason ? ` <span class="muted">(${escapeHtml(r.reason)})</span>` : ''}</div><pre>${escapeHtml(r.completion)}</pre></div>`
            );
          })
          .join('');
        parts.push(`<div class="cols">${cols}</div>`);
      }
      const meta = first.meta
        ? ` <span class="muted">${escapeHtml(
            Object.entries(first.meta)
              .map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(' / ') : String(v)}`)
              .join(' · '),
          )}</span>`
        : '';
      return (
        `<details class="problem" id="p${p}"><summary>#${p} · answer <span class="answer">${escapeHtml(answerText(first.answer))}</span> · ${marks}${meta}</summary>` +
        `<details class="prompt"><summary class="muted">prompt</summary><pre>${escapeHtml(first.prompt)}</pre></details>${parts.join('')}</details>`
      );
    })
    .join('\n');
}

const CSS = `
  .cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(280px, 1fr)); gap: .75rem; margin: .5rem 0 1rem; }
  .col pre, .prompt pre { white-space: pre-wrap; word-break: break-word; background: #f6f7f9; padding: .5rem; max-height: 22rem; overflow: auto; margin: .25rem 0; }
  .ok { color: #13783b; } .bad { color: #b3261e; }
  .exec { margin: .2rem 0; } details.code pre { max-height: 16rem; }
  #sandbox th { text-align: left; font-weight: normal; color: #445; } #sandbox td { text-align: left; }
  details.problem { border-top: 1px solid #e3e6ea; padding: .35rem 0; }
  summary { cursor: pointer; }
  .answer { font-family: ui-monospace, monospace; background: #f6f7f9; padding: 0 .25rem; }
  .settings { font-size: 13px; }
`;

const SCRIPT = `
Chart.defaults.animation = false;
const colors = ['#3b6fd8', '#d8563b', '#2f9e5a', '#9c4fd1'];
const modes = DATA.summary.modes;
const INK = '#1d2330';
// each mode's Wilson interval as whiskers (a vertical line with caps) over its bar, and the
// accuracy as a dot with its value: at 0% the bar has no height, the interval stays an interval
const whiskers = {
  id: 'whiskers',
  afterDatasetsDraw(chart) {
    const { ctx, scales: { y } } = chart;
    ctx.save();
    ctx.strokeStyle = INK; ctx.fillStyle = INK; ctx.lineWidth = 2; ctx.font = '12px system-ui, sans-serif';
    chart.getDatasetMeta(0).data.forEach((bar, i) => {
      const [lo, hi] = modes[i].wilson95;
      const x = bar.x, cap = 9, y0 = y.getPixelForValue(lo), y1 = y.getPixelForValue(hi), ya = y.getPixelForValue(modes[i].accuracy);
      ctx.beginPath();
      ctx.moveTo(x, y0); ctx.lineTo(x, y1);
      ctx.moveTo(x - cap, y0); ctx.lineTo(x + cap, y0);
      ctx.moveTo(x - cap, y1); ctx.lineTo(x + cap, y1);
      ctx.stroke();
      ctx.beginPath(); ctx.arc(x, ya, 4, 0, 2 * Math.PI); ctx.fill();
      ctx.fillText((100 * modes[i].accuracy).toFixed(1) + '%', x + cap + 4, ya - 4);
    });
    ctx.restore();
  },
};
new Chart(document.getElementById('acc'), {
  type: 'bar',
  data: {
    labels: modes.map((m) => m.mode),
    datasets: [
      { label: 'accuracy', data: modes.map((m) => m.accuracy), backgroundColor: modes.map((_, i) => colors[i % colors.length] + '99'), pointStyle: 'rect' },
      // legend only: the whiskers are drawn by the plugin
      { type: 'line', label: '95% Wilson interval', data: [], borderColor: INK, backgroundColor: INK, borderWidth: 2, pointStyle: 'line' },
    ],
  },
  options: { maintainAspectRatio: false, plugins: { legend: { labels: { usePointStyle: true } } },
    scales: { y: { min: 0, max: 1, title: { display: true, text: 'accuracy' } } } },
  plugins: [whiskers],
});
// fewer than three length bins (e.g. every completion at max tokens): bars, not a line of one point
const bars = DATA.length.labels.length < 3;
new Chart(document.getElementById('len'), {
  type: bars ? 'bar' : 'line',
  data: {
    labels: DATA.length.labels,
    datasets: modes.map((m, i) => ({ label: m.mode, data: DATA.length.series[m.mode], borderColor: colors[i % colors.length], backgroundColor: colors[i % colors.length] + (bars ? '99' : ''), spanGaps: true, pointRadius: 4, minBarLength: 3 })),
  },
  options: { maintainAspectRatio: false, scales: { y: { min: 0, max: 1, title: { display: true, text: 'accuracy' } },
    x: { offset: true, title: { display: true, text: bars && DATA.length.labels.length === 1 ? 'completion tokens (every completion has ' + DATA.length.labels[0] + ')' : 'completion tokens (equal-count bins)' } } } },
});
`;

export function reportHtml(summary: Summary, records: ResultRecord[], settings?: ReportSettings): string {
  const modes = summary.modes.map((m) => m.mode);
  const body = `<h1>moi eval: ${escapeHtml(summary.task)}</h1>
<p class="muted">model ${escapeHtml(summary.model)} · data ${escapeHtml(summary.source)} · ${summary.problems} problems × ${summary.samples} sample(s) × ${modes.length} modes</p>
${settings ? `<p class="muted settings" id="settings">${settingsLine(settings)}</p>` : ''}
<h2>Accuracy per mode</h2>
<div class="chart"><canvas id="acc" role="img" aria-label="accuracy per mode with 95% Wilson intervals"></canvas></div>
${modeTable(summary)}
<h2>pass@k</h2>
${passAtTable(summary)}
${summary.modes.some((m) => m.execution) ? `<h2>Execution</h2>\n${executionTable(summary)}\n${sandboxNote(summary)}` : ''}
<h2>Paired comparison</h2>
${pairedTable(summary)}
<h2>Accuracy against output length</h2>
<div class="chart"><canvas id="len" role="img" aria-label="accuracy against completion length"></canvas></div>
<h2>Problems</h2>
${drillDown(summary, records)}`;
  return page(`moi eval: ${summary.task}`, CSS, body, { summary, length: lengthBins(records, modes) }, SCRIPT);
}

export function writeReport(file: string, summary: Summary, records: ResultRecord[], settings?: ReportSettings): void {
  fs.writeFileSync(file, reportHtml(summary, records, settings));
}
