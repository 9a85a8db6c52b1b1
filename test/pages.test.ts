/**
 * The HTML pages in a real browser: Debian's chromium, headless, driven by puppeteer-core. The eval
 * report and the trace page render (non-blank screenshots, charts drawn, no console errors, no
 * network), and hovering or focusing a token shows its candidates. Skips where chromium is absent
 * (.ci/run installs it).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sharedDir, SHARED_MISSING } from '@moi/core';
import { Engine } from '@moi/engine';
import type { Completer, CompletionRequest, CompletionResult } from '../packages/cli/src/eval/completer.ts';
import { runEval } from '../packages/cli/src/eval/runner.ts';
import { loadTask } from '../packages/cli/src/eval/tasks.ts';
import { traceModes, traceRequest, writeTracePage } from '../packages/cli/src/trace/trace.ts';
import {
  canvasInk,
  chromiumPath,
  distinctColors,
  launchChromium,
  openPage,
  type Browser,
} from '../packages/cli/test/helpers/browser.ts';
import { moiGen } from './support/cli.ts';

/** A scripted completer: right on even problems in moi mode, on multiples of 3 in standard. */
class ScriptedCompleter implements Completer {
  readonly name = 'scripted';
  async *complete(requests: CompletionRequest[]): AsyncIterable<CompletionResult> {
    for (const r of requests) {
      const p = Number(r.key.split('/')[0]);
      const m = /Using the numbers \[([\d, ]+)\], create an equation that equals (\d+)/.exec(r.promptText)!;
      const { solveCountdown } = await import('../packages/cli/src/eval/solver.ts');
      const right = r.mode === 'moi' ? p % 2 === 0 : p % 3 === 0;
      const answer = right ? solveCountdown(m[1].split(', ').map(Number), Number(m[2])) : '1 + 1';
      const body = `${'thinking <b>not html</b> & more '.repeat(1 + (p % 5))}</think> <answer>${answer}</answer>`;
      yield {
        key: r.key,
        completion: body,
        promptTokens: 50,
        completionTokens: 10 + 7 * (p % 5),
        finishReason: 'stop',
        seconds: 0.01,
        meanEntropy: 0.4,
        meanWeight: r.mode === 'moi' ? 0.7 : 1,
        modeUsed: r.mode,
      };
    }
  }
  async close() {}
}

describe('pages in headless chromium', function () {
  this.timeout(120_000);
  const chromium = chromiumPath();
  let browser: Browser;
  let tmp: string;

  before(async function () {
    if (!chromium) {
      console.log('      chromium is not installed (apt-get install -y chromium): page tests skipped');
      this.skip();
    }
    if (!sharedDir()) {
      console.log(`      ${SHARED_MISSING}`);
      this.skip();
    }
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moi-pages-'));
    browser = await launchChromium(chromium!);
  });
  after(async () => {
    await browser?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('the eval report renders: charts, paired table, drill-down; no errors, no network', async () => {
    const task = await loadTask('countdown:gen', { limit: 12, seed: 2 });
    const out = path.join(tmp, 'report');
    await runEval(
      task,
      {
        model: 'scripted',
        task: 'countdown:gen',
        modes: ['standard', 'moi'],
        beta: 0.5,
        samples: 1,
        seed: 2,
        sampling: { temperature: 0.6, topP: 0.95 },
        maxTokens: 8,
        dtype: 'bf16',
      },
      { out, completer: new ScriptedCompleter(), tokenizer: null, progress: false },
    );
    const file = path.join(out, 'report.html');
    const { page, errors } = await openPage(browser, file);
    const png = await page.screenshot({ fullPage: true });
    assert.ok((await distinctColors(page, png)) > 50, 'the screenshot is not blank');
    assert.ok((await canvasInk(page, '#acc')) > 1000, 'accuracy chart drawn');
    assert.ok((await canvasInk(page, '#len')) > 1000, 'length chart drawn');
    const cells = await page.$$eval('#modes tr', (rows) =>
      rows.slice(1).map((r) => [...r.querySelectorAll('td')].slice(0, 4).map((td) => td.textContent)),
    );
    // moi right on problems 0,2,..,10 (6 of 12); standard on 0,3,6,9 (4 of 12)
    assert.deepEqual(cells, [
      ['standard', '12', '4', '33.3%'],
      ['moi', '12', '6', '50.0%'],
    ]);
    const paired = await page.$eval('#paired tr:nth-child(2)', (r) =>
      [...r.querySelectorAll('td')].map((td) => td.textContent),
    );
    // b: standard right, moi wrong = {3, 9}; c: standard wrong, moi right = {2, 4, 8, 10}
    assert.deepEqual(paired.slice(0, 4), ['moi vs standard', '12', '2', '4']);
    await page.click('#p3 > summary');
    const cols = await page.$$eval('#p3 .col .head', (els) => els.map((e) => e.textContent));
    assert.equal(cols.length, 2);
    assert.match(cols[0]!, /^standard: correct/);
    assert.match(cols[1]!, /^moi: wrong/);
    assert.equal(await page.$$eval('#p3 pre b', (x) => x.length), 0, 'completions are shown as text, not HTML');
    // the run's settings head the page
    const settings = await page.$eval('#settings', (e) => e.textContent!);
    for (const want of ['β 0.5', 'temperature 0.6', 'top-p 0.95', 'max tokens 8', 'dtype bf16', 'seed 2'])
      assert.ok(settings.includes(want), `${want} in ${settings}`);
    assert.match(settings, /date \d{4}-\d\d-\d\dT/);
    // the expected answer as text, not JSON
    const answer = await page.$eval('#p3 .answer', (e) => e.textContent!);
    assert.doesNotMatch(answer, /[{}"]/);
    assert.match(answer, /target: \d+/);
    assert.deepEqual(errors, []);
    await page.close();
  });

  it('the report at 0% with every completion at max tokens: the interval is drawn as whiskers, the length chart as bars', async () => {
    const task = await loadTask('countdown:gen', { limit: 8, seed: 3 });
    const out = path.join(tmp, 'report0');
    const wrong: Completer = {
      name: 'wrong',
      async *complete(requests) {
        for (const r of requests)
          yield {
            key: r.key,
            completion: '<answer>1 + 1</answer>',
            promptTokens: 50,
            completionTokens: 8,
            finishReason: 'length',
            seconds: 0.01,
            meanEntropy: 0.4,
            meanWeight: 1,
            modeUsed: r.mode,
          };
      },
      async close() {},
    };
    await runEval(
      task,
      {
        model: 'wrong',
        task: 'countdown:gen',
        modes: ['standard', 'moi'],
        samples: 1,
        seed: 3,
        sampling: {},
        maxTokens: 8,
      },
      { out, completer: wrong, tokenizer: null, progress: false },
    );
    const { page, errors } = await openPage(browser, path.join(out, 'report.html'));
    fs.writeFileSync(path.join(tmp, 'report0.png'), await page.screenshot({ fullPage: true }));
    // the accuracy bars have no height: what is drawn is the whiskers, the dots and their labels
    assert.ok((await canvasInk(page, '#acc')) > 1000, 'the intervals are drawn');
    // the whiskers' column above each bar is dark from 0 up to the Wilson upper bound
    const dark = await page.$eval('#acc', (el) => {
      const c = el as HTMLCanvasElement;
      const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 200 && d[i] < 60 && d[i + 1] < 60 && d[i + 2] < 70) n++;
      return n;
    });
    assert.ok(dark > 200, `dark whisker pixels: ${dark}`);
    // one length bin (every completion 8 tokens): bars with ink, and the axis says so
    assert.ok((await canvasInk(page, '#len')) > 3000, 'the length chart is readable');
    assert.deepEqual(errors, []);
    await page.close();
  });

  it('the trace page renders; hovering or focusing a token shows its candidates and w_y', async () => {
    const engine = await Engine.load(path.join(sharedDir()!, 'fixtures', 'stories260K'), { backend: 'wasm' });
    const file = path.join(tmp, 'trace.html');
    try {
      const promptIds = [1, 403, 407, 261, 378];
      const runs = await traceModes(
        engine,
        { promptIds, maxTokens: 30, ignoreEos: true, sampling: { temperature: 1, seed: 4 } },
        ['standard', 'moi'],
        { top: 6 },
      );
      writeTracePage(file, { model: 'stories260K', prompt: engine.tokenizer!.decode(promptIds), runs });
      const { page, errors } = await openPage(browser, file);
      const png = await page.screenshot({ fullPage: true });
      assert.ok((await distinctColors(page, png)) > 50, 'the screenshot is not blank');
      assert.ok((await canvasInk(page, '#chart')) > 1000, 'H / w_y chart drawn');
      assert.equal(await page.$$eval('.tok', (x) => x.length), runs[0].steps.length + runs[1].steps.length);
      // hover the 5th token of the moi run
      await page.hover('.tok[data-r="1"][data-i="4"]');
      const tip = await page.$eval('#tip', (e) => ({
        shown: getComputedStyle(e).display !== 'none',
        rows: e.querySelectorAll('.cands tr').length - 1,
        wy: e.querySelector('.wy')?.textContent,
      }));
      assert.ok(tip.shown, 'the tooltip shows on hover');
      assert.equal(tip.rows, 6);
      assert.equal(tip.wy, runs[1].steps[4].weight.toFixed(4));
      // keyboard: focus another token
      await page.mouse.move(0, 0);
      await page.focus('.tok[data-r="0"][data-i="2"]');
      const focused = await page.$eval('#tip', (e) => ({
        shown: getComputedStyle(e).display !== 'none',
        text: e.textContent,
      }));
      assert.ok(focused.shown);
      assert.match(focused.text!, /standard · step 2/);
      const marked = await page.$$eval('.tok.diverge', (x) => x.map((e) => (e as HTMLElement).dataset.i));
      const banner = await page.$eval('.banner', (e) => e.textContent);
      if (runs[0].steps.some((s, i) => s.token !== runs[1].steps[i]?.token)) {
        assert.equal(marked.length, 2);
        assert.match(banner!, new RegExp(`First divergence at step ${marked[0]}`));
      } else {
        assert.match(banner!, /identical/);
      }
      assert.deepEqual(errors, []);
      await page.close();
    } finally {
      engine.dispose();
    }
  });

  it("the trace page shows Soft Thinking's soft phase, its slots and weights, and where it ended", async () => {
    const engine = await Engine.load(path.join(sharedDir()!, 'fixtures', 'stories260K'), { backend: 'wasm' });
    const file = path.join(tmp, 'soft-trace.html');
    try {
      const promptIds = [1, 403, 407, 261, 378];
      const request = (thinkEndId: number) => ({
        promptIds,
        maxTokens: 20,
        ignoreEos: true,
        sampling: { temperature: 0.6, seed: 3 },
        mix: { mode: 'soft' as const, soft: { thinkEndId, temperature: 1, topP: 1, minP: 0 } },
      });
      // a pilot run finds the token recorded at step 4: as think-end, thinking ends there by argmax
      const pilot = await traceRequest(engine, request(0), 'pilot');
      const id = pilot.steps[4].token;
      const end = pilot.steps.findIndex((s) => s.token === id);
      const run = await traceRequest(engine, request(id), 'soft', { top: 12 });
      writeTracePage(file, { model: 'stories260K', prompt: engine.tokenizer!.decode(promptIds), runs: [run] });
      const { page, errors } = await openPage(browser, file);
      assert.equal(
        await page.$$eval('.tok.soft', (x) => x.length),
        end + 1,
        'the soft phase, think-end included, is marked',
      );
      assert.deepEqual(
        await page.$$eval('.think-end', (x) => x.map((e) => [(e as HTMLElement).dataset.i, e.textContent])),
        [[String(end), 'end of thinking (argmax)']],
      );
      const mixed = run.steps.findIndex((st, i) => i < end && st.candidates.length > 1);
      assert.ok(mixed >= 0, 'a soft step with several slots');
      await page.hover(`.tok[data-r="0"][data-i="${mixed}"]`);
      const tip = await page.$eval('#tip', (e) => ({
        phase: e.querySelector('.phase')?.textContent,
        w: [...e.querySelectorAll('.cands tr')].slice(1).map((r) => Number(r.lastElementChild!.textContent)),
      }));
      assert.match(tip.phase!, /^soft phase: next input = Σ w·E over \d+ shown candidates · S = [\d.]+ nats$/);
      assert.deepEqual(
        tip.w,
        run.steps[mixed].candidates.map((c) => Number(c.w.toFixed(4))),
      );
      assert.ok(
        Math.abs(tip.w.reduce((a, b) => a + b, 0) - 1) < 1e-3,
        'the shown slots (all of max_topk 10) carry the whole input',
      );
      await page.hover(`.tok[data-r="0"][data-i="${end + 1}"]`);
      assert.equal(await page.$eval('#tip .phase', (e) => e.textContent), 'after thinking: sampled');
      assert.deepEqual(errors, []);
      await page.close();
    } finally {
      engine.dispose();
    }
  });

  it('moi-gen generate --trace --compare-modes writes the page', async () => {
    const file = path.join(tmp, 'cli-trace.html');
    const { code, stdout } = await moiGen([
      '--model',
      path.join(sharedDir()!, 'fixtures', 'stories260K'),
      '--max-tokens',
      '20',
      '--temperature',
      '0.7',
      '--seed',
      '9',
      '--beta',
      '2',
      '--trace',
      file,
      '--compare-modes',
      'standard,moi',
      'Once upon a time',
    ]);
    assert.equal(code, 0);
    const { page, errors } = await openPage(browser, file);
    assert.deepEqual(await page.$$eval('.run h2', (x) => x.map((e) => e.firstChild!.textContent!.trim())), [
      'standard',
      'moi',
    ]);
    // what ran is on the page: seed, temperature and β
    const settings = await page.$eval('#settings', (e) => e.textContent!);
    for (const s of ['seed 9', 'temperature 0.7', 'β 2'])
      assert.ok(settings.includes(s), `${s} in ${JSON.stringify(settings)}`);
    assert.equal(await page.$eval('.prompt', (e) => e.textContent), '<s>Once upon a time');
    // the runs aligned by step: one row per run, step i of each in column i
    const grid = await page.$$eval('#aligned tr', (rows) => rows.map((r) => [...r.children].map((c) => c.textContent)));
    assert.deepEqual(
      grid.slice(1).map((r) => r[0]),
      ['standard', 'moi'],
    );
    assert.equal(grid[0].length, 21);
    const spans = await page.$$eval('.run', (runs) =>
      runs.map((r) => [...r.querySelectorAll('.tok')].map((t) => t.textContent)),
    );
    assert.deepEqual(
      grid.slice(1).map((r) => r.slice(1, 1 + spans[0].length)),
      [spans[0], spans[1].slice(0, spans[0].length)],
    );
    // the tokens' texts where they stand add up to the printed text (leading spaces kept)
    const printed = stdout
      .split('\n')
      .filter((l) => l.startsWith('['))
      .map((l) => l.replace(/^\[\w+\] /, ''));
    assert.deepEqual(
      spans.map((t) => t.join('')),
      printed,
    );
    fs.writeFileSync(path.join(tmp, 'cli-trace.png'), await page.screenshot({ fullPage: true }));
    assert.deepEqual(errors, []);
    await page.close();
  });
});
