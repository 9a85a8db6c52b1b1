/**
 * `moi-gen chat` as a child process (test/support/cli.ts): piped (one message per line) and at a
 * pseudo-terminal (util-linux `script`), over stories260K given a small chat template in a temp
 * model folder.
 * The expected replies are greedy generations over the rendered conversation, computed here.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { requireShared, sharedDir } from '@moi/core';
import { Engine } from '@moi/engine';
import { generateOne } from '@moi/engine';
import { hasScript, plain, runCli, spawnCli } from './support/cli.ts';

const TEMPLATE =
  "{% for m in messages %}{% if m.role == 'user' %}{{ bos_token }}{{ m.content }}" +
  "{% elif m.role == 'assistant' %}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}";
const U1 = 'Once upon a time';
const U2 = 'Lily went to the park';

/** Run the CLI with stdin piped; resolves when it exits (killed after 30 s). */
const runPiped = (args: string[], input: string) => runCli(args, { input, killAfterMs: 30_000 });

/**
 * Drive the CLI at a pseudo-terminal: `steps` are run in order, each waiting until the screen
 * matches `when` and then typing `send`. Resolves with the screen when the program exits.
 */
async function runTty(
  args: string[],
  steps: { when: (screen: string) => boolean; send: string }[],
): Promise<{ code: number | null; screen: string }> {
  const run = await spawnCli(args, { tty: true, keepStdin: true, killAfterMs: 30_000 });
  const advance = () => {
    while (steps.length && steps[0].when(plain(run.stdout() + run.stderr())))
      run.child.stdin.write(steps.shift()!.send);
  };
  run.child.stdout.on('data', advance);
  run.child.stderr.on('data', advance);
  const r = await run.done;
  return { code: r.code, screen: plain(r.stdout + r.stderr) };
}

const count = (s: string, sub: string) => s.split(sub).length - 1;

describe('cli: moi-gen chat', function () {
  let tmp: string;
  let model: string;
  let engine: Engine;

  before(async function () {
    const shared = requireShared(this);
    const src = path.join(shared!, 'fixtures/stories260K');
    tmp = mkdtempSync(path.join(os.tmpdir(), 'moi-chat-cli-'));
    model = path.join(tmp, 'stories-chat');
    spawnSync('mkdir', [model]);
    for (const f of [
      'config.json',
      'generation_config.json',
      'model.safetensors',
      'special_tokens_map.json',
      'tokenizer.json',
    ]) {
      symlinkSync(path.join(src, f), path.join(model, f));
    }
    const config = JSON.parse(readFileSync(path.join(src, 'tokenizer_config.json'), 'utf8'));
    writeFileSync(path.join(model, 'tokenizer_config.json'), JSON.stringify({ ...config, chat_template: TEMPLATE }));
    engine = await Engine.load(model, { backend: 'wasm' });
  });
  after(() => {
    engine?.dispose();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  /** The greedy reply to a conversation, by a fresh generation over its rendering (by hand). */
  async function expected(turns: string[], maxTokens: number): Promise<string[]> {
    const tok = engine.tokenizer!;
    const replies: string[] = [];
    let text = '';
    for (const u of turns) {
      text += `<s>${u}`;
      const ids = tok.encode(text, { addSpecialTokens: false });
      const r = await generateOne(engine, { promptIds: ids, maxTokens, sampling: { temperature: 0 } });
      replies.push(r.done.text);
      text += `${r.done.text}</s>`;
    }
    return replies;
  }

  it('piped: one message per line, each reply followed by a blank line', async function () {
    const [r1, r2] = await expected([U1, U2], 12);
    const run = await runPiped(
      ['chat', '-m', model, '--temperature', '0', '--max-tokens', '12', '--stats'],
      `${U1}\n${U2}\n`,
    );
    assert.equal(run.code, 0, run.stderr);
    assert.ok(r1.length > 10 && r2.length > 10);
    assert.equal(run.stdout, `${r1}\n\n${r2}\n\n`);
    // --stats: the second turn prefilled only its new tokens (last reply token, </s>, <s>, 8 words' tokens)
    const turns = [...run.stderr.matchAll(/prefilled (\d+)/g)].map((m) => Number(m[1]));
    assert.deepEqual(turns, [5, 11]);
  });

  it('piped: /reset starts over, unknown commands are refused, /exit ends', async function () {
    const [r1] = await expected([U1], 8);
    const run = await runPiped(
      ['chat', '-m', model, '--temperature', '0', '--max-tokens', '8'],
      `${U1}\n${U2}\n/reset\n/nope\n${U1}\n/exit\n${U2}\n`,
    );
    assert.equal(run.code, 0, run.stderr);
    const replies = run.stdout.split('\n\n').filter(Boolean);
    assert.equal(replies.length, 3, run.stdout);
    assert.equal(replies[0], r1);
    assert.equal(replies[2], r1, 'after /reset the first reply comes again');
    assert.match(run.stderr, /new conversation/);
    assert.match(run.stderr, /unknown command \/nope/);
  });

  it('issue 9: a failed turn sets the exit code until /reset and a good turn; "exit" without the slash ends the session', async function () {
    const args = ['chat', '-m', model, '--temperature', '0', '--max-tokens', '8', '--max-context', '16'];
    // turn 2 overflows the 16-token context: reported, and the run ends with exit 2
    const failed = await runPiped(args, `${U1}\n${U2}\n`);
    assert.equal(failed.code, 2, failed.stderr);
    assert.match(failed.stderr, /context|holds at most/);
    // the same, then /reset and a good turn: recovered, exit 0
    const recovered = await runPiped(args, `${U1}\n${U2}\n/reset\n${U1}\n/exit\n`);
    assert.equal(recovered.code, 0, recovered.stderr);
    assert.equal(recovered.stdout.split('\n\n').filter(Boolean).length, 2);
    // /reset alone does not clear it: a failure after it stands
    const again = await runPiped(args, `${U1}\n${U2}\n/reset\n${U1}\n${U2}\n`);
    assert.equal(again.code, 2, again.stderr);
    // exit / quit without a slash: the session ends there (the next line never reaches the model)
    for (const word of ['exit', 'quit']) {
      const r = await runPiped(
        ['chat', '-m', model, '--temperature', '0', '--max-tokens', '4'],
        `${U1}\n${word}\n${U2}\n`,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.split('\n\n').filter(Boolean).length, 1, `${word}: ${JSON.stringify(r.stdout)}`);
    }
  });

  it('a model without a chat template: usage error, exit 2', async function () {
    const run = await runPiped(['chat', '-m', path.join(sharedDir()!, 'fixtures/stories260K')], 'hi\n');
    assert.equal(run.code, 2);
    assert.match(run.stderr, /no chat template/);
    assert.equal(run.stdout, '');
  });

  describe('at a terminal (script from util-linux)', function () {
    before(function () {
      if (!hasScript()) {
        console.log('      `script` (util-linux) not found: skipping the pseudo-terminal tests');
        this.skip();
      }
    });

    it('prompts, streams two turns, /reset, /exit', async function () {
      const [r1, r2] = await expected([U1, U2], 12);
      const prompts = (n: number) => (s: string) => count(s, '> ') >= n;
      const { code, screen } = await runTty(
        ['chat', '-m', model, '-q', '--temperature', '0', '--max-tokens', '12'],
        [
          { when: prompts(1), send: `${U1}\r` },
          { when: prompts(2), send: `${U2}\r` },
          { when: prompts(3), send: '/reset\r' },
          { when: prompts(4), send: `${U1}\r` },
          { when: prompts(5), send: '/exit\r' },
        ],
      );
      assert.equal(code, 0, screen);
      assert.match(screen, /\/help for commands/);
      const expectScreen = `> ${U1}\n${r1}\n> ${U2}\n${r2}\n> /reset\n(new conversation)\n> ${U1}\n${r1}\n> /exit\n`;
      assert.ok(screen.includes(expectScreen), `screen:\n${screen}\nexpected to contain:\n${expectScreen}`);
    });

    it('Ctrl-C stops a reply and the session goes on; Ctrl-C at the prompt exits', async function () {
      const [r1] = await expected([U1], 400); // long enough that Ctrl-C lands mid-reply
      const { code, screen } = await runTty(
        ['chat', '-m', model, '-q', '--temperature', '0', '--max-tokens', '400'],
        [
          { when: (s) => count(s, '> ') >= 1, send: `${U1}\r` },
          // the reply has begun: interrupt it
          { when: (s) => s.includes(`${U1}\n,`), send: '\x03' },
          { when: (s) => count(s, '> ') >= 2, send: `${U2}\r` },
          { when: (s) => count(s, '> ') >= 3, send: '\x03' },
        ],
      );
      assert.equal(code, 130, screen); // interrupted: the one exit code every subcommand uses for it
      assert.match(screen, /\(reply stopped\)\n> /);
      const stopped = screen.slice(screen.indexOf(`> ${U1}\n`) + U1.length + 3, screen.indexOf('\n(reply stopped)'));
      assert.ok(
        stopped.length > 0 && stopped.length < r1.length && r1.startsWith(stopped),
        `partial reply: ${JSON.stringify(stopped)}`,
      );
      // the next turn got a reply, then the prompt came back and Ctrl-C ended the program
      const after = screen.slice(screen.indexOf(`> ${U2}\n`));
      assert.match(after, new RegExp(`^> ${U2}\\n.{20,}`, 's'));
      assert.equal(count(screen, '> '), 3);
    });
  });
});
