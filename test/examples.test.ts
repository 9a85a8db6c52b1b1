/**
 * The notebook-style examples run as they are (as `npx tsx examples/<name>.ts` would) and print
 * their sections, with numbers that agree with what each one claims to show.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { repoRoot, sharedDir, SHARED_MISSING } from '@moi/core';

function runExample(name: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join('examples', name)], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The lines of a section: from its '## ' heading to the next one. */
function section(out: string, heading: string): string[] {
  const start = out.indexOf(`## ${heading}`);
  assert.ok(start >= 0, `no section "${heading}" in:\n${out}`);
  const next = out.indexOf('\n## ', start + 3);
  return out
    .slice(start, next < 0 ? undefined : next)
    .split('\n')
    .slice(1)
    .filter((l) => l.trim());
}

describe('examples/', function () {
  before(function () {
    if (!sharedDir()) {
      console.log(SHARED_MISSING);
      this.skip();
    }
  });

  it('01-standard-vs-moi: three texts and a per-token table of H and w', async function () {
    const { code, stdout, stderr } = await runExample('01-standard-vs-moi.ts');
    assert.equal(code, 0, stderr);
    assert.match(section(stdout, '1. Model')[0], /5 layers, hidden 64, vocab 512/);
    const texts = section(stdout, '2. Texts');
    assert.match(texts[0], /\[1, 403, 407, 261, 378\]/); // the fixture's ids for the prompt
    for (const mode of ['standard', 'moi β=1', 'direct'])
      assert.ok(
        texts.some((l) => l.startsWith(mode)),
        mode,
      );
    const rows = section(stdout, '3. Per-token table').slice(1);
    assert.equal(rows.length, 40);
    for (const row of rows) {
      // moi and direct columns: H in [0, 1]; moi's weight on the sampled token is at least
      // (β + 1 − H)/(β + 1) ≥ 1/2 with β = 1, and direct's is p_y ≤ 1
      const [, hm, wm, hd, wd] = row.match(/([\d.]+)\s+([\d.]+) \|.*?([\d.]+)\s+([\d.]+)$/)!.map(Number);
      for (const h of [hm, hd]) assert.ok(h >= 0 && h <= 1, row);
      assert.ok(wm >= (2 - hm) / 2 - 1e-3 && wm <= 1, row);
      assert.ok(wd > 0 && wd <= 1, row);
    }
    assert.equal(section(stdout, '4. First difference from standard decoding').length, 2);
  });

  it('02-batched: three rows decoded together, one forward per step', async function () {
    const { code, stdout, stderr } = await runExample('02-batched.ts');
    assert.equal(code, 0, stderr);
    assert.equal(section(stdout, '2. Requests').length, 3);
    const m = section(stdout, '3. Forwards')[0].match(
      /^(\d+) forwards: 3 prefills \+ (\d+) decode steps for (\d+) tokens in (\d+) steps/,
    );
    assert.ok(m, stdout);
    const [, forwards, decode, tokens, steps] = m.map(Number);
    // every step but the last feeds all live rows in one forward
    assert.equal(decode, steps - 1);
    assert.equal(forwards, 3 + steps - 1);
    assert.ok(tokens > steps, 'more tokens than steps: rows shared forwards');
    const results = section(stdout, '4. Results');
    assert.equal(results.length, 6);
    assert.match(results[0], /^row 0 \(standard, T=0\)/);
    assert.match(results[1], /32 tokens, finish: length, mean H —/);
    assert.match(results[2], /^row 1 \(moi β=1/);
    assert.match(results[3], /mean H 0\.\d{3}/);
    assert.match(results[4], /^row 2 \(direct/);
  });

  it('03-chat: the Qwen3 template, then a session whose second turn prefills only new tokens', async function () {
    const { code, stdout, stderr } = await runExample('03-chat.ts');
    assert.equal(code, 0, stderr);
    const a = section(stdout, 'A. Qwen3 chat template').join('\n');
    assert.match(a, /<\|im_start\|>system\nYou tell short stories for children\.<\|im_end\|>\n<\|im_start\|>user\n/);
    assert.match(a, /→ 26 tokens: \[151644, /); // <|im_start|> is 151644 in Qwen's vocabulary
    const b = section(stdout, 'B. Chat session on').join('\n');
    const turns = [...b.matchAll(/\[prompt (\d+) tokens: (\d+) reused from the cache, (\d+) prefilled/g)].map((x) =>
      x.slice(1).map(Number),
    );
    assert.equal(turns.length, 2);
    const [[p1, r1, f1], [p2, r2, f2]] = turns;
    assert.deepEqual([p1, r1, f1], [5, 0, 5]);
    assert.equal(r2 + f2, p2);
    // turn 1's prompt and all but the last of its 32 reply tokens stay in the cache
    assert.equal(r2, 5 + 31);
    const c = section(stdout, 'C. Prefill per turn');
    assert.equal(c[1], `turn 2: ${f2} of ${p2} tokens prefilled (${r2} reused)`);
  });
});
