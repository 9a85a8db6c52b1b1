/**
 * The README's "Library" example is examples/00-stream.ts, word for word, and it runs: it streams
 * text equal to the CLI's for the same settings and ends with its summary line.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot, requireShared } from '@moi/core';
import { moiGen } from './support/cli.ts';

describe('README: the Library example', function () {
  it('is examples/00-stream.ts, and streams what moi-gen prints for the same settings', async function () {
    const shared = requireShared(this);
    const readme = readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Library'));
    const snippet = /```ts\n([\s\S]*?)```/.exec(section)![1];
    const file = readFileSync(path.join(repoRoot, 'examples/00-stream.ts'), 'utf8');
    const code = file
      .split('\n')
      .filter((l) => !l.startsWith('//'))
      .join('\n')
      .trim();
    assert.equal(snippet.trim(), code);
    assert.ok(snippet.trim().split('\n').length <= 15);

    const model = path.join(shared, 'fixtures', 'stories260K');
    const ex = spawnSync(process.execPath, ['--import', 'tsx', 'examples/00-stream.ts', model], {
      cwd: repoRoot,
      encoding: 'utf8',
    });
    assert.equal(ex.status, 0, ex.stderr);
    const cli = await moiGen([
      '--model',
      model,
      '--temperature',
      '0',
      '-n',
      '48',
      '--mode',
      'moi',
      '--beta',
      '1',
      'Once upon a time',
    ]);
    assert.equal(cli.code, 0, cli.stderr);
    const [text, summary] = ex.stdout.split('\n[');
    assert.equal(text + '\n', cli.stdout);
    assert.match(summary, /^(length|stop): \d+ tokens, [\d.]+ tok\/s\]\n$/);
  });
});
