/**
 * The README's command lines, run as written (issue 24, items 3 and 11):
 * - the Quick start's first command prints the generated text and nothing else: no npm warning
 *   (npx reads the repository's .npmrc), no pnpm banner; and its install declares every
 *   dependency that has a build script (allowBuilds), so pnpm draws no "Ignored build scripts" box;
 * - the Server section's `serve … &` then `kill $!`: the PID is the server's, so the kill leaves
 *   no server behind (through `pnpm moi-gen serve &` it would end pnpm and orphan the server).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { repoRoot, requireShared } from '@moi/core';
import { buildCli, moiGen, runCli } from './support/cli.ts';

const readme = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');

/** The fenced sh blocks of the README. */
const shBlocks = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]);

/** The commands of a block: one per line, comments and blank lines dropped. */
const commands = (block: string) =>
  block
    .split('\n')
    .filter((l) => l.trim() && !l.trim().startsWith('#'))
    .map((l) => l.replace(/\s+#.*$/, '').trim());

/** A TCP port that was free a moment ago. */
async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

/** Whether something accepts connections on the port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

describe('README: the command lines as written', function () {
  this.timeout(180_000);

  it("Quick start's first command: only the generated text on stdout, no npm warning on stderr", async function () {
    const shared = requireShared(this);
    const first = commands(shBlocks[0])[0];
    const [install, generate] = first.split(' && ');
    assert.match(install, /^npx -y pnpm@[\d.]+ install --frozen-lockfile/);
    assert.match(generate, /^npx -y pnpm@[\d.]+ moi-gen /);
    const line = generate.replaceAll('../shared', shared);
    // as from a shell: without the npm_config_* variables that `pnpm test` hands its scripts
    const shellEnv = Object.fromEntries(
      Object.keys(process.env)
        .filter((k) => /^(npm|pnpm)_/i.test(k))
        .map((k) => [k, undefined]),
    );
    const r = await runCli([], { command: ['bash', '-c', line], env: shellEnv });
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /^npm warn|Unknown project config|^\s*WARN\b/im);
    // the text alone: what the same command line prints in-process
    const argv = line
      .slice(line.indexOf(' moi-gen ') + ' moi-gen '.length)
      .match(/"[^"]*"|\S+/g)!
      .map((a) => a.replace(/^"(.*)"$/, '$1'));
    const same = await moiGen(argv);
    assert.equal(same.code, 0, same.stderr);
    assert.ok(same.stdout.length > 20);
    assert.equal(r.stdout, same.stdout);
  });

  it('the install declares every dependency with a build script in allowBuilds (no "Ignored build scripts" box)', () => {
    const yaml = fs.readFileSync(path.join(repoRoot, 'pnpm-workspace.yaml'), 'utf8');
    const block = /^allowBuilds:\n((?:[ \t]+.*\n|[ \t]*#.*\n|\n)*)/m.exec(yaml);
    assert.ok(block, 'pnpm-workspace.yaml has allowBuilds');
    const declared = new Set([...block[1].matchAll(/^[ \t]+['"]?([^'":#\s]+)['"]?:/gm)].map((m) => m[1]));
    // every package in the store pnpm would run a script for: install scripts, or a binding.gyp
    const store = path.join(repoRoot, 'node_modules/.pnpm');
    const withScripts = new Set<string>();
    for (const entry of fs.readdirSync(store)) {
      const nm = path.join(store, entry, 'node_modules');
      if (!fs.existsSync(nm)) continue;
      const dirs = fs
        .readdirSync(nm)
        .flatMap((d) => (d.startsWith('@') ? fs.readdirSync(path.join(nm, d)).map((x) => `${d}/${x}`) : [d]));
      for (const d of dirs) {
        const dir = path.join(nm, d);
        if (fs.lstatSync(dir).isSymbolicLink()) continue; // a dependency's link, not the package itself
        const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
          name: string;
          scripts?: Record<string, string>;
        };
        const s = pkg.scripts ?? {};
        if (s.preinstall || s.install || s.postinstall || fs.existsSync(path.join(dir, 'binding.gyp')))
          withScripts.add(pkg.name);
      }
    }
    assert.ok(withScripts.has('esbuild'), `the walk finds build scripts (found: ${[...withScripts].join(', ')})`);
    const missing = [...withScripts].filter((n) => !declared.has(n));
    assert.deepEqual(missing, [], `allowBuilds in pnpm-workspace.yaml has no entry for ${missing.join(', ')}`);
  });

  it("Server's `serve … &` then `kill $!`: the PID is the server's, and the kill leaves no server running", async function () {
    const shared = requireShared(this);
    const block = shBlocks.find((b) => /kill \$!/.test(b));
    assert.ok(block, 'the README shows how to stop the server by its PID');
    const [start, stop] = commands(block);
    assert.match(start, / serve .*&$/);
    assert.equal(stop, 'kill $!');
    const port = await freePort();
    const line = start.replace('DIR', path.join(shared, 'fixtures/stories260K')).replace('8000', String(port));
    await buildCli();
    // the README's two lines, with a wait between them until the server answers
    const script = `${line}\nfor i in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/${port}) 2>/dev/null && break; sleep 0.1; done\n${stop}\nwait\n`;
    const shell = spawn('bash', ['-c', script], { cwd: repoRoot, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    shell.stderr.on('data', (d) => {
      err += d;
    });
    try {
      // 'exit', not 'close': a server left running would hold the pipes open
      const code = await new Promise<number | null>((resolve) => shell.on('exit', resolve));
      await Promise.race([new Promise((r) => shell.stderr.once('end', r)), new Promise((r) => setTimeout(r, 2000))]);
      assert.equal(code, 0, err);
      assert.match(err, /moi-gen serve: .* on http:\/\/127\.0\.0\.1:\d+/, 'the server started');
      assert.match(err, /SIGTERM: stopping/, 'the signal reached the server');
      // nothing answers on the port any more
      let open = true;
      for (let i = 0; i < 50 && open; i++) {
        open = await listening(port);
        if (open) await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(open, false, `a server still answers on port ${port} after kill $!`);
    } finally {
      try {
        process.kill(-shell.pid!, 'SIGKILL');
      } catch {
        /* the group has ended */
      }
    }
  });
});
