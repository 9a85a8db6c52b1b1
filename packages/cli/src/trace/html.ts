/**
 * Pieces of the self-contained HTML pages (eval report, token trace): escaping, JSON embedded as
 * data, and Chart.js inlined from its own built file (no network when the page opens).
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** JSON safe inside a <script> element. */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

let chartJs: string | null = null;

/** Chart.js's UMD build, read from node_modules, ready to inline. */
export function chartJsSource(): string {
  if (chartJs === null) {
    const main = createRequire(import.meta.url).resolve('chart.js');
    chartJs = fs
      .readFileSync(path.join(path.dirname(main), 'chart.umd.min.js'), 'utf8')
      .replace(/<\/script/gi, '<\\/script');
  }
  return chartJs;
}

export const BASE_CSS = `
  body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem; color: #1d2330; background: #fff; }
  h1 { font-size: 1.35rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
  table { border-collapse: collapse; margin: .5rem 0; }
  th, td { border: 1px solid #d5d9e0; padding: .25rem .6rem; text-align: right; }
  th:first-child, td:first-child { text-align: left; }
  .muted { color: #667; }
  .chart { position: relative; width: min(100%, 820px); height: 300px; }
`;

/** A whole page: title, CSS, body HTML, the data, Chart.js, and the page's script. */
export function page(title: string, css: string, body: string, data: unknown, script: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>${BASE_CSS}${css}</style></head>
<body>
${body}
<script type="application/json" id="data">${scriptJson(data)}</script>
<script>${chartJsSource()}</script>
<script>
const DATA = JSON.parse(document.getElementById('data').textContent);
${script}
</script>
</body></html>
`;
}
