/**
 * Hub datasets: parquet files written here (hyparquet-writer), served by the loopback fake hub,
 * downloaded into the HF cache layout, read with hyparquet; then offline from the cache alone.
 * Also: prompts rendered through a real chat template (Qwen3's).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { readParquet } from '../src/eval/data.ts';
import { datasetFolderName, isSplitParquet, resolveDatasetParquet } from '../src/hub/dataset.ts';
import { loadEvalTask, loadTask } from '../src/eval/tasks.ts';
import { renderPrompt } from '../src/eval/runner.ts';
import { loadTokenizer } from '@moi/engine';
import { sharedDir } from '@moi/core';
import { startHubServer, type HubServer } from './helpers/hub-server.ts';

const COMMIT = 'c0ffee'.padEnd(40, '0');

function countdownParquet(): Buffer {
  return Buffer.from(
    parquetWriteBuffer({
      columnData: [
        { name: 'target', data: [60, 24, 13], type: 'INT32' },
        {
          name: 'nums',
          data: [
            [44, 19, 35],
            [3, 3, 8, 8],
            [95, 4, 7],
          ],
        },
      ],
    }),
  );
}

function aimeParquet(rows: { problem: string; answer: string }[]): Buffer {
  return Buffer.from(
    parquetWriteBuffer({
      columnData: [
        { name: 'id', data: rows.map((_, i) => BigInt(i)), type: 'INT64' },
        { name: 'problem', data: rows.map((r) => r.problem), type: 'STRING' },
        { name: 'answer', data: rows.map((r) => r.answer), type: 'STRING' },
      ],
    }),
  );
}

function gpqaParquet(questions: string[]): Buffer {
  const col = (name: string, f: (q: string) => string) => ({ name, data: questions.map(f), type: 'STRING' as const });
  return Buffer.from(
    parquetWriteBuffer({
      columnData: [
        col('Record ID', (q) => `rec-${q}`),
        col('Question', (q) => `Question ${q}?`),
        col('Correct Answer', (q) => `right ${q}`),
        col('Incorrect Answer 1', (q) => `wrong1 ${q}`),
        col('Incorrect Answer 2', (q) => `wrong2 ${q}`),
        col('Incorrect Answer 3', (q) => `wrong3 ${q}`),
      ],
    }),
  );
}

/** LiveCodeBench rows as the dataset's test*.jsonl files hold them (private tests as plain JSON here). */
function lcbJsonl(ids: [string, string][]): Buffer {
  return Buffer.from(
    ids
      .map(([id, date]) =>
        JSON.stringify({
          question_title: `title ${id}`,
          question_content: `Print ${id}.`,
          platform: 'atcoder',
          question_id: id,
          contest_id: 'abc',
          contest_date: date,
          starter_code: '',
          difficulty: 'easy',
          public_test_cases: JSON.stringify([{ input: '', output: `${id}\n`, testtype: 'stdin' }]),
          private_test_cases: '[]',
          metadata: '{}',
        }),
      )
      .join('\n') + '\n',
  );
}

describe('eval: hub datasets (fake hub, parquet)', () => {
  let hub: HubServer;
  let cache: string;
  const aimeRows = [
    { problem: 'Find $x$ if \\begin{cases} x = 2 \\end{cases}.', answer: '2' },
    { problem: 'What is 7·6?', answer: '042' },
  ];

  before(async () => {
    cache = fs.mkdtempSync(path.join(os.tmpdir(), 'moi-ds-'));
    hub = await startHubServer({
      repos: {
        'datasets/test-org/countdown': {
          commit: COMMIT,
          files: {
            'README.md': Buffer.from('# countdown\n'),
            'data/train-00000-of-00001.parquet': countdownParquet(),
            'data/test-00000-of-00001.parquet': countdownParquet(),
          },
          lfs: ['data/train-00000-of-00001.parquet'],
        },
        'datasets/test-org/aime': { commit: COMMIT, files: { 'train.parquet': aimeParquet(aimeRows) } },
        'datasets/test-org/json-only': { commit: COMMIT, files: { 'data.jsonl': Buffer.from('{}\n') } },
      },
    });
  });
  after(async () => {
    await hub.close();
    fs.rmSync(cache, { recursive: true, force: true });
  });

  it("picks the split's parquet files", () => {
    assert.ok(isSplitParquet('data/train-00000-of-00002.parquet', 'train'));
    assert.ok(isSplitParquet('default/train/0000.parquet', 'train'));
    assert.ok(isSplitParquet('train.parquet', 'train'));
    assert.ok(!isSplitParquet('data/test-00000.parquet', 'train'));
    assert.ok(!isSplitParquet('data/train.jsonl', 'train'));
  });

  it('downloads into the HF cache layout and reads the rows', async () => {
    const env = { HF_ENDPOINT: hub.endpoint, HF_HUB_CACHE: cache, HF_TOKEN: '' };
    const files = await resolveDatasetParquet('test-org/countdown', { env });
    const repoDir = path.join(cache, datasetFolderName('test-org/countdown'));
    assert.equal(datasetFolderName('test-org/countdown'), 'datasets--test-org--countdown');
    assert.deepEqual(files, [path.join(repoDir, 'snapshots', COMMIT, 'data/train-00000-of-00001.parquet')]);
    assert.equal(fs.readFileSync(path.join(repoDir, 'refs', 'main'), 'utf8'), COMMIT);
    assert.ok(fs.lstatSync(files[0]).isSymbolicLink(), 'snapshot files link to blobs');
    assert.match(fs.readlinkSync(files[0]), /^\.\.\/\.\.\/\.\.\/blobs\/[0-9a-f]{64}$/); // LFS: sha256 etag
    const rows = await readParquet(files);
    assert.deepEqual(rows, [
      { target: 60, nums: [44, 19, 35] },
      { target: 24, nums: [3, 3, 8, 8] },
      { target: 13, nums: [95, 4, 7] },
    ]);
    assert.ok(hub.requests.some((r) => r.url === '/api/datasets/test-org/countdown/revision/main'));
  });

  it('reads from the cache alone when offline, and says so when the cache lacks it', async () => {
    const before = hub.requests.length;
    const files = await resolveDatasetParquet('test-org/countdown', {
      env: { HF_HUB_CACHE: cache, HF_HUB_OFFLINE: '1' },
    });
    assert.equal(files.length, 1);
    assert.equal(hub.requests.length, before, 'no request offline');
    await assert.rejects(
      resolveDatasetParquet('test-org/aime', { env: { HF_HUB_CACHE: cache, HF_HUB_OFFLINE: '1' } }),
      (e: Error & { code?: string }) => e.code === 'E_HUB_OFFLINE' && /test-org\/aime/.test(e.message),
    );
  });

  it('names what is missing: an unknown dataset, a split or parquet files', async () => {
    const env = { HF_ENDPOINT: hub.endpoint, HF_HUB_CACHE: cache, HF_TOKEN: '' };
    await assert.rejects(
      resolveDatasetParquet('test-org/nope', { env }),
      (e: Error & { code?: string }) => e.code === 'E_HUB_NOT_FOUND',
    );
    await assert.rejects(
      resolveDatasetParquet('test-org/countdown', { env, split: 'validation' }),
      /no parquet files for split "validation"/,
    );
    await assert.rejects(resolveDatasetParquet('test-org/json-only', { env }), /has no parquet files/);
    await assert.rejects(
      resolveDatasetParquet('not an id', { env }),
      (e: Error & { code?: string }) => e.code === 'E_HUB_BAD_ID',
    );
  });

  it('loads countdown and aime tasks from hub ids, with their prompts', async () => {
    const saved = { ...process.env };
    Object.assign(process.env, { HF_ENDPOINT: hub.endpoint, HF_HUB_CACHE: cache, HF_TOKEN: '' });
    delete process.env.HF_HUB_OFFLINE;
    try {
      const cd = await loadTask('countdown:test-org/countdown', { limit: 2 });
      assert.equal(cd.problems.length, 2);
      assert.deepEqual(cd.problems[1].answer, { target: 24, numbers: [3, 3, 8, 8] });
      assert.match(
        cd.problems[1].messages[0].content,
        /^A conversation between User and Assistant[\s\S]*Using the numbers \[3, 3, 8, 8\], create an equation that equals 24\.[\s\S]*<\/answer>\.\n$/,
      );
      assert.equal(cd.problems[1].assistantPrefix, 'Let me solve this step by step.\n<think>');
      const aime = await loadTask('aime:test-org/aime');
      assert.equal(aime.problems.length, 2);
      assert.equal(
        aime.problems[0].messages[0].content,
        'Question: Find $x$ if \\begin{cases} x = 2 \\end{cases}.\n\nPlease reason step by step, and put your final answer within \\boxed{}.',
      );
      assert.ok(!aime.problems[0].raw.includes('\b'), 'no backspace character');
      assert.equal(aime.score('so \\boxed{42}', aime.problems[1].answer).correct, true);
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
  });
});

describe('eval: gpqa and livecodebench from the hub (fake hub)', () => {
  let hub: HubServer;
  let cache: string;
  let saved: NodeJS.ProcessEnv;
  before(async () => {
    cache = fs.mkdtempSync(path.join(os.tmpdir(), 'moi-ds2-'));
    hub = await startHubServer({
      repos: {
        'datasets/Idavidrein/gpqa': {
          commit: 'beef'.padEnd(40, '1'),
          files: {
            'gpqa_diamond/train/0000.parquet': gpqaParquet(['d1', 'd2', 'd3']),
            'gpqa_main/train/0000.parquet': gpqaParquet(['m1', 'm2']),
          },
        },
        'datasets/livecodebench/code_generation_lite': {
          commit: 'feed'.padEnd(40, '2'),
          files: {
            'test.jsonl': lcbJsonl([
              ['p1', '2023-05-10T00:00:00'],
              ['p2', '2023-08-20T00:00:00'],
            ]),
            'test2.jsonl': lcbJsonl([['p3', '2024-04-01T00:00:00']]),
            'test3.jsonl': lcbJsonl([['p4', '2024-06-01T00:00:00']]),
            'code_generation_lite.py': Buffer.from('# the loading script\n'),
          },
          lfs: ['test.jsonl'],
        },
      },
    });
    saved = { ...process.env };
    Object.assign(process.env, { HF_ENDPOINT: hub.endpoint, HF_HUB_CACHE: cache, HF_TOKEN: 'hf_x' });
    delete process.env.HF_HUB_OFFLINE;
  });
  after(async () => {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
    await hub.close();
    fs.rmSync(cache, { recursive: true, force: true });
  });

  it('gpqa: the Diamond config of the parquet conversion, options shuffled and recorded', async () => {
    const t = await loadTask('gpqa', { seed: 2 });
    assert.equal(t.kind, 'gpqa');
    assert.equal(t.problems.length, 3, 'gpqa_diamond only, not gpqa_main');
    assert.match(t.source, /^Idavidrein\/gpqa gpqa_diamond/);
    assert.ok(
      hub.requests.some((r) => r.url === '/api/datasets/Idavidrein/gpqa/revision/refs%2Fconvert%2Fparquet'),
      'the conversion branch, encoded',
    );
    assert.ok(
      hub.requests.every((r) => r.server !== 'hub' || r.authorization === 'Bearer hf_x'),
      'the token goes with every request (gated)',
    );
    const p = t.problems[1];
    assert.match(
      p.messages[0].content,
      /^Answer the following multiple choice question[\s\S]*\n\nQuestion d2\?\n\nA\) /,
    );
    const order = p.meta!.order as string[];
    assert.equal(order['ABCD'.indexOf(p.answer as string)], 'Correct Answer');
    assert.ok(p.messages[0].content.includes(`${p.answer}) right d2`));
    assert.equal(t.score(`Answer: ${p.answer}`, p.answer).correct, true);
    // the same seed, the same shuffle; offline from the cache
    process.env.HF_HUB_OFFLINE = '1';
    try {
      const again = await loadTask('gpqa', { seed: 2 });
      assert.deepEqual(
        again.problems.map((q) => q.meta),
        t.problems.map((q) => q.meta),
      );
    } finally {
      delete process.env.HF_HUB_OFFLINE;
    }
  });

  it('livecodebench: a release picks the files, a window the dates; the cache serves a release it holds whole', async () => {
    const ids = async (o: Parameters<typeof loadEvalTask>[1]) =>
      (await loadEvalTask('livecodebench', o)).problems.map((p) => (p.answer as { question_id: string }).question_id);
    assert.deepEqual(await ids({ release: 'release_v2' }), ['p1', 'p2', 'p3']);
    assert.deepEqual(await ids({ release: 'v3' }), ['p4']);
    assert.deepEqual(await ids({ release: 'release_latest' }), ['p1', 'p2', 'p3', 'p4']);
    assert.deepEqual(await ids({ release: 'release_latest', startDate: '2023-08-01', endDate: '2024-04-01' }), [
      'p2',
      'p3',
    ]);
    const t = await loadEvalTask('livecodebench', { release: 'release_v2', limit: 1 });
    assert.equal(t.kind, 'livecodebench');
    assert.equal(t.source, 'livecodebench/code_generation_lite (release_v2)');
    assert.deepEqual(t.problems[0].meta, {
      title: 'title p1',
      platform: 'atcoder',
      difficulty: 'easy',
      contest_date: '2023-05-10T00:00:00',
    });
    await assert.rejects(
      loadEvalTask('livecodebench', { release: 'release_v5' }),
      (e: Error & { code?: string }) =>
        e.code === 'E_DATASET_NO_FILES' &&
        /lacks the files of release_v5 .*it has: test\.jsonl, test2\.jsonl, test3\.jsonl/.test(e.message),
    );
    await assert.rejects(
      loadEvalTask('livecodebench', { startDate: '2024-13-01' }),
      /--start-date must be a date YYYY-MM-DD/,
    );
    await assert.rejects(
      loadEvalTask('countdown:gen', { release: 'v1' }),
      /--release, --start-date and --end-date are for --task livecodebench/,
    );
    // offline: release_v2's files are cached; a release needing a file never fetched is refused by name
    const fresh = fs.mkdtempSync(path.join(os.tmpdir(), 'moi-ds3-'));
    try {
      process.env.HF_HUB_CACHE = fresh;
      assert.deepEqual(await ids({ release: 'v1' }), ['p1', 'p2']);
      process.env.HF_HUB_OFFLINE = '1';
      assert.deepEqual(await ids({ release: 'v1' }), ['p1', 'p2']);
      await assert.rejects(
        loadEvalTask('livecodebench', { release: 'release_v2' }),
        (e: Error & { code?: string }) => e.code === 'E_HUB_OFFLINE' && /test\.jsonl, test2\.jsonl/.test(e.message),
      );
    } finally {
      delete process.env.HF_HUB_OFFLINE;
      process.env.HF_HUB_CACHE = cache;
      fs.rmSync(fresh, { recursive: true, force: true });
    }
  });
});

describe('eval: prompts through a chat template', () => {
  it('renders the user turn with the template, then the assistant prefix (Qwen3)', async function () {
    const shared = sharedDir();
    if (!shared) this.skip();
    const tok = loadTokenizer(path.join(shared!, 'tokenizers', 'qwen3'));
    const task = await loadTask('countdown:gen', { limit: 1, seed: 1 });
    const p = task.problems[0];
    const { text, ids } = renderPrompt(tok, p);
    assert.equal(
      text,
      `<|im_start|>user\n${p.messages[0].content}<|im_end|>\n<|im_start|>assistant\nLet me solve this step by step.\n<think>`,
    );
    assert.deepEqual(ids, tok.encode(text, { addSpecialTokens: false }));
    // without a template: the raw TinyZero text, tokenized as a plain prompt
    const raw = renderPrompt(null, p);
    assert.equal(raw.text, p.raw);
    assert.match(p.raw, /\nAssistant: Let me solve this step by step\.\n<think>$/);
  });
});
