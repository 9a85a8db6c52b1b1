/**
 * The moi-gen entry point's lazy commands (packages/cli/src/bin.ts):
 * - each COMMANDS entry's summary and usage are what the loaded command's own help says, so the
 *   top-level help (built from the entries alone) lists the commands as they are;
 * - `moi-gen --help` in a fresh process imports no command module, tfjs, fastify or openai
 *   (what each module the binary imports is recorded by a module resolve hook);
 * - a command line that commander dispatches differently from commandFor's guess still runs the
 *   right command (the placeholder asks main to load it and parse again).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Help } from 'commander';
import { repoRoot } from '@moi/core';
import { COMMANDS, commandFor } from '../src/bin.ts';
import { buildCli, runInProcess } from '../../../test/support/cli.ts';

describe('cli: the entry point loads commands lazily', function () {
  it("each entry's summary and usage equal the loaded command's description and help term", async () => {
    const help = new Help();
    for (const entry of COMMANDS) {
      const cmd = await entry.load();
      assert.equal(cmd.name(), entry.name);
      assert.equal(entry.summary, cmd.description(), `${entry.name}: summary`);
      assert.equal(`${entry.name} ${entry.usage}`, help.subcommandTerm(cmd), `${entry.name}: usage`);
    }
  });

  it('--help in a fresh process imports no command module, tfjs, fastify or openai', async function () {
    await buildCli();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moi-bin-'));
    try {
      const log = path.join(dir, 'resolved.txt');
      const hook = path.join(dir, 'hook.mjs');
      fs.writeFileSync(
        hook,
        `import fs from 'node:fs';
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  fs.appendFileSync(${JSON.stringify(log)}, r.url + '\\n');
  return r;
}`,
      );
      const register = `import { register } from 'node:module'; import { pathToFileURL } from 'node:url'; register(${JSON.stringify(new URL(`file://${hook}`).href)}, pathToFileURL('./'));`;
      const r = spawnSync(
        process.execPath,
        ['--import', `data:text/javascript,${encodeURIComponent(register)}`, 'packages/cli/bin/moi-gen.js', '--help'],
        { cwd: repoRoot, encoding: 'utf8' },
      );
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /Commands:\n {2}generate \[options\] \[prompt\.\.\.\]/);
      const urls = fs.readFileSync(log, 'utf8').trim().split('\n');
      assert.ok(
        urls.some((u) => u.endsWith('/packages/cli/dist/bin.js')),
        'the hook saw the compiled entry point',
      );
      const heavy = urls.filter((u) =>
        /\/commands\/(?!usage\.js)|tfjs|fastify|openai|@moi\/engine|\/engine\/dist\//.test(u),
      );
      assert.deepEqual(heavy, []);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('commandFor guesses the command commander runs; a wrong guess is corrected by loading it', async () => {
    assert.equal(commandFor([]), 'generate');
    assert.equal(commandFor(['--model', 'M', 'hi']), 'generate');
    assert.equal(commandFor(['chat', '--model', 'M']), 'chat');
    assert.equal(commandFor(['help', 'eval']), 'eval');
    assert.equal(commandFor(['--help']), null);
    assert.equal(commandFor(['-V']), null);
    // `--help` after `--` is a prompt word: commandFor guesses the top-level help, commander
    // dispatches generate, which then asks for its required --model
    assert.equal(commandFor(['hello', '--', '--help']), null);
    const r = await runInProcess(['hello', '--', '--help']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^moi-gen: error: required option '-m, --model <dir\|id>' not specified/);
    // `help NAME` prints NAME's own help, options and all
    const h = await runInProcess(['help', 'eval']);
    assert.equal(h.code, 0, h.stderr);
    assert.match(h.stdout, /^Usage: moi-gen eval \[options\] \[command\]/);
    assert.match(h.stdout, /--task <task>/);
  });
});
