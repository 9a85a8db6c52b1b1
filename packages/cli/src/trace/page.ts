/**
 * The trace page: each generated token coloured by its normalized entropy H; hovering or focusing
 * a token shows its candidates with p and w and the weight on the sampled token; a Chart.js line
 * chart of H and w_y per step. Several runs (--compare-modes) are shown aligned by step, the first
 * divergence marked.
 */
import { escapeHtml, page } from './html.ts';

export interface TraceStep {
  token: number;
  text: string;
  entropy: number;
  weight: number;
  pSampled: number;
  candidates: { id: number; text: string; p: number; w: number }[];
  /** Soft Thinking rows: the phase this token belongs to, and on the token that ends thinking, why */
  phase?: 'thinking' | 'answer';
  thinkEnd?: 'argmax' | 'cold_stop';
  /** Soft Thinking, soft phase: S in nats (the trace's entropy is S / ln V) */
  softEntropy?: number;
}

export interface TraceRun {
  label: string;
  mode: string;
  text: string;
  finishReason: string;
  steps: TraceStep[];
}

export interface TraceDoc {
  model: string;
  prompt: string;
  runs: TraceRun[];
  /** the settings that ran (seed, temperature, β, ...), shown under the title */
  settings?: Record<string, string | number | boolean | null>;
}

/** The settings line: the ones a reader needs first, then the rest; null (unset) ones as "–". */
export function settingsLine(settings: Record<string, string | number | boolean | null>): string {
  const first = ['mode', 'beta', 'temperature', 'top_p', 'top_k', 'seed', 'max_tokens'];
  const names: Record<string, string> = { beta: 'β', top_p: 'top-p', top_k: 'top-k', max_tokens: 'max tokens' };
  const keys = [...first.filter((k) => k in settings), ...Object.keys(settings).filter((k) => !first.includes(k))];
  return keys
    .map(
      (k) =>
        `<span class="setting" data-k="${escapeHtml(k)}">${escapeHtml(names[k] ?? k.replaceAll('_', ' '))} <b>${escapeHtml(settings[k] === null ? '–' : String(settings[k]))}</b></span>`,
    )
    .join(' · ');
}

/** Background for H in [0, 1]: pale green (certain) through yellow to red (uncertain). */
export function entropyColor(h: number): string {
  const x = Math.min(1, Math.max(0, Number.isFinite(h) ? h : 0));
  return `hsl(${Math.round(120 * (1 - x))}, 75%, ${Math.round(88 - 10 * x)}%)`;
}

const CSS = `
  .run { margin: 1rem 0; }
  .run h2 { margin: .25rem 0; }
  .tokens { white-space: pre-wrap; word-break: break-word; font: 14px/1.9 ui-monospace, monospace; background: #fafbfc; border: 1px solid #e3e6ea; padding: .6rem; }
  .tok { border-radius: 3px; padding: 1px 0; cursor: default; outline: none; }
  .tok:hover, .tok:focus { box-shadow: 0 0 0 2px #1d2330; }
  .tok.diverge { box-shadow: 0 0 0 2px #d11; }
  .prompt { white-space: pre-wrap; color: #556; font: 13px/1.5 ui-monospace, monospace; }
  #tip { position: fixed; z-index: 10; display: none; background: #fff; border: 1px solid #99a; box-shadow: 0 4px 14px #0003; padding: .5rem .6rem; font-size: 13px; min-width: 15rem; }
  #tip table { margin: .3rem 0 0; } #tip td, #tip th { padding: .1rem .4rem; }
  #tip tr.sampled td { font-weight: 600; background: #eef3ff; }
  .legend { display: inline-block; width: 12rem; height: .8rem; vertical-align: middle; background: linear-gradient(90deg, hsl(120,75%,88%), hsl(60,75%,83%), hsl(0,75%,78%)); }
  .tok.soft, .soft-legend { text-decoration: underline dotted #4a3ad8; text-underline-offset: 3px; }
  .think-end { display: inline-block; margin: 0 .3rem; padding: 0 .35rem; border-radius: 3px; background: #4a3ad8; color: #fff; font: 11px/1.6 system-ui, sans-serif; }
  .settings { font-size: 13px; }
  .aligned { overflow-x: auto; border: 1px solid #e3e6ea; }
  .aligned table { margin: 0; font: 13px/1.6 ui-monospace, monospace; }
  .aligned th, .aligned td { white-space: pre; text-align: left; padding: .1rem .25rem; border: 1px solid #eef0f3; }
  .aligned th { background: #f4f5f7; position: sticky; left: 0; }
  .aligned td.differs { box-shadow: inset 0 -3px 0 #d11; }
  .banner { background: #fff1f0; border: 1px solid #f3b4ae; padding: .4rem .6rem; display: inline-block; }
`;

const SCRIPT = `
Chart.defaults.animation = false;
const tip = document.getElementById('tip');
const esc = (s) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
const show = (el) => {
  const run = DATA.runs[+el.dataset.r];
  const s = run.steps[+el.dataset.i];
  const rows = s.candidates.map((c) => '<tr' + (c.id === s.token ? ' class="sampled"' : '') + '><td><code>' + esc(JSON.stringify(c.text)) + '</code></td><td>' + c.id + '</td><td>' + c.p.toFixed(4) + '</td><td>' + c.w.toFixed(4) + '</td></tr>').join('');
  tip.innerHTML = '<div><b>' + esc(run.label) + ' · step ' + el.dataset.i + '</b>: sampled <code>' + esc(JSON.stringify(s.text)) + '</code> (id ' + s.token + ')</div>' +
    (s.phase === 'thinking' ? '<div class="phase">soft phase: next input = Σ w·E over ' + s.candidates.length + ' shown candidates' + (s.softEntropy !== undefined ? ' · S = ' + s.softEntropy.toFixed(4) + ' nats' : '') + (s.thinkEnd ? ' · <b>ends thinking (' + s.thinkEnd.replace('_', ' ') + ')</b>' : '') + '</div>' : s.phase === 'answer' ? '<div class="phase">after thinking: sampled</div>' : '') +
    '<div>H = ' + s.entropy.toFixed(4) + ' · weight on the sampled token w_y = <b class="wy">' + s.weight.toFixed(4) + '</b> · p_y = ' + s.pSampled.toFixed(4) + '</div>' +
    '<table class="cands"><tr><th>candidate</th><th>id</th><th>p</th><th>w</th></tr>' + rows + '</table>';
  const r = el.getBoundingClientRect();
  tip.style.display = 'block';
  tip.style.left = Math.max(4, Math.min(window.innerWidth - tip.offsetWidth - 4, r.left)) + 'px';
  tip.style.top = (r.bottom + 6 + tip.offsetHeight > window.innerHeight ? Math.max(4, r.top - tip.offsetHeight - 6) : r.bottom + 6) + 'px';
};
const hide = () => { tip.style.display = 'none'; };
for (const el of document.querySelectorAll('.tok')) {
  el.addEventListener('mouseenter', () => show(el));
  el.addEventListener('focus', () => show(el));
  el.addEventListener('mouseleave', hide);
  el.addEventListener('blur', hide);
}
const colors = ['#3b6fd8', '#d8563b', '#2f9e5a', '#9c4fd1'];
const steps = Math.max(...DATA.runs.map((r) => r.steps.length), 0);
const datasets = [];
DATA.runs.forEach((run, i) => {
  const c = colors[i % colors.length];
  datasets.push({ label: run.label + ' H', data: run.steps.map((s) => s.entropy), borderColor: c, backgroundColor: c, pointRadius: 1.5 });
  datasets.push({ label: run.label + ' w_y', data: run.steps.map((s) => s.weight), borderColor: c, backgroundColor: c, borderDash: [5, 4], pointRadius: 1.5 });
});
new Chart(document.getElementById('chart'), {
  type: 'line',
  data: { labels: Array.from({ length: steps }, (_, i) => i), datasets },
  options: { maintainAspectRatio: false, interaction: { mode: 'index', intersect: false },
    // legend swatches drawn as short lines, dashed where the line is dashed (w_y)
    // (Chart.js takes a line legend's style from its first point, which has no dash: set it here)
    plugins: { legend: { labels: { usePointStyle: true, pointStyleWidth: 28, generateLabels: (chart) =>
      Chart.defaults.plugins.legend.labels.generateLabels(chart).map((l) => {
        const d = chart.data.datasets[l.datasetIndex];
        return { ...l, pointStyle: 'line', lineDash: d.borderDash ?? [], strokeStyle: d.borderColor, lineWidth: 2 };
      }) } } },
    scales: { y: { min: 0, max: 1 }, x: { title: { display: true, text: 'step' } } } },
});
`;

export function tracePageHtml(doc: TraceDoc, divergence: number | null): string {
  const runs = doc.runs
    .map((run, r) => {
      const toks = run.steps
        .map(
          (s, i) =>
            `<span class="tok${s.phase === 'thinking' ? ' soft' : ''}${divergence === i ? ' diverge' : ''}" tabindex="0" data-r="${r}" data-i="${i}" style="background:${entropyColor(s.entropy)}">${escapeHtml(s.text)}</span>` +
            (s.thinkEnd
              ? `<span class="think-end" data-i="${i}">end of thinking (${s.thinkEnd === 'cold_stop' ? 'cold stop' : 'argmax'})</span>`
              : ''),
        )
        .join('');
      return `<section class="run"><h2>${escapeHtml(run.label)} <span class="muted">(${run.steps.length} tokens, ${escapeHtml(run.finishReason)})</span></h2><div class="tokens">${toks}</div></section>`;
    })
    .join('\n');
  // several runs: a grid with one column per step, so that step i of every run stands in one column
  const longest = Math.max(0, ...doc.runs.map((r) => r.steps.length));
  const aligned =
    doc.runs.length < 2
      ? ''
      : `<h2>Aligned by step</h2><div class="aligned"><table id="aligned">
<tr><th>step</th>${Array.from({ length: longest }, (_, i) => `<th>${i}</th>`).join('')}</tr>
${doc.runs
  .map(
    (run) =>
      `<tr><th>${escapeHtml(run.label)}</th>${Array.from({ length: longest }, (_, i) => {
        const s = run.steps[i];
        if (!s) return '<td></td>';
        const differs = doc.runs.some((o) => o.steps[i]?.token !== s.token);
        return `<td class="${differs ? 'differs' : ''}" data-i="${i}" style="background:${entropyColor(s.entropy)}">${escapeHtml(s.text)}</td>`;
      }).join('')}</tr>`,
  )
  .join('\n')}
</table></div>`;
  const banner =
    doc.runs.length > 1
      ? `<p class="banner" id="divergence">${divergence === null ? 'The runs are identical.' : `First divergence at step ${divergence} (outlined in red).`}</p>`
      : '';
  const body = `<h1>moi trace</h1>
<p class="muted">model ${escapeHtml(doc.model)} · H: <span class="legend"></span> 0 → 1 · hover or focus (Tab) a token for its candidates${doc.runs.some((r) => r.steps.some((s) => s.phase === 'thinking')) ? ' · <span class="soft-legend">dotted</span>: Soft Thinking\'s soft phase (the token shown is the heaviest slot; H = S / ln V)' : ''}</p>
${doc.settings ? `<p class="muted settings" id="settings">${settingsLine(doc.settings)}</p>` : ''}
<details><summary class="muted">prompt</summary><div class="prompt">${escapeHtml(doc.prompt)}</div></details>
${banner}
${runs}
${aligned}
<h2>H and w_y per step</h2>
<div class="chart"><canvas id="chart" role="img" aria-label="entropy and weight on the sampled token per step"></canvas></div>
<div id="tip" role="tooltip"></div>`;
  return page('moi trace', CSS, body, doc, SCRIPT);
}
