/**
 * Side-by-side benchmark: our engine vs llama.cpp (node-llama-cpp, CPU) on the same synthetic
 * model shapes, same f32 weights, same prompt, same lengths, one thread each.
 *
 *   node_modules/.bin/tsx bench/peer.ts [--config smollm2-135m|qwen2.5-0.5b|qwen3-0.6b|gemma-3-270m|all]
 *
 * Per config: (1) copy the shared peer-bench folder to a writable scratch folder and install
 * node-llama-cpp there (never into this repository; the install is kept for reuse), (2) write
 * the synthetic model with peer-bench's make-synthetic.mjs (seed 1, f32), (3) convert it to
 * GGUF (f32), (4) run bench-llamacpp.mjs (f32 KV cache, like ours) and `moi-gen bench --json`
 * on the same folder, (5) print a table and write all the JSON to one file.
 * See bench/README.md.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CONFIGS = ['smollm2-135m', 'qwen2.5-0.5b', 'qwen3-0.6b', 'gemma-3-270m'];

interface Options {
  peer: string;
  config: string;
  scratch: string;
  out: string;
  promptTokens: number;
  genTokens: number;
  repeat: number;
  threads: number;
  keepModels: boolean;
  skipOurs: boolean;
  skipLlamacpp: boolean;
  /** extra flags for `moi-gen bench` (--backend, --batches) */
  oursArgs: string[];
}

const USAGE = `usage: tsx bench/peer.ts [options]
  --peer DIR          the peer-bench folder (default ../shared/peer-bench beside the repo)
  --config NAME|all   ${CONFIGS.join(', ')} or all (default all)
  --scratch DIR       writable work folder (default $TMPDIR/moi-peer-bench); holds the copy,
                      its node_modules (node-llama-cpp, kept), models/ and results/
  --out FILE          combined JSON (default SCRATCH/results/peer-<time>.json)
  --prompt-tokens N   (default 128)   --gen-tokens N (default 64)   --repeat N (default 3)
  --threads N         llama.cpp threads (default 1: our wasm backend is single-threaded)
  --backend NAME      passed to moi-gen bench (default: its own choice, or $MOI_BACKEND)
  --batches LIST      passed to moi-gen bench (its batched-decode sizes; default 4,16)
  --keep-models       keep the generated safetensors/GGUF files (default: delete after each config)
  --skip-ours | --skip-llamacpp   run one side only`;

function parseArgs(argv: string[]): Options {
  const scratch = path.join(process.env.TMPDIR || os.tmpdir(), 'moi-peer-bench');
  const o: Options = {
    peer: path.resolve(REPO, '../shared/peer-bench'), config: 'all', scratch, out: '',
    promptTokens: 128, genTokens: 64, repeat: 3, threads: 1, keepModels: false, skipOurs: false, skipLlamacpp: false, oursArgs: [],
  };
  const num = (flag: string, v: string | undefined): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) fail(`${flag} needs a positive integer, got ${JSON.stringify(v)}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) fail(`${a} needs a value`);
      return v;
    };
    switch (a) {
      case '--peer': o.peer = path.resolve(val()); break;
      case '--config': o.config = val(); break;
      case '--scratch': o.scratch = path.resolve(val()); break;
      case '--out': o.out = path.resolve(val()); break;
      case '--prompt-tokens': o.promptTokens = num(a, val()); break;
      case '--gen-tokens': o.genTokens = num(a, val()); break;
      case '--repeat': o.repeat = num(a, val()); break;
      case '--threads': o.threads = num(a, val()); break;
      case '--backend': o.oursArgs.push('--backend', val()); break;
      case '--batches': o.oursArgs.push('--batches', val()); break;
      case '--keep-models': o.keepModels = true; break;
      case '--skip-ours': o.skipOurs = true; break;
      case '--skip-llamacpp': o.skipLlamacpp = true; break;
      case '-h': case '--help': console.log(USAGE); process.exit(0);
      default: fail(`unknown option ${a}\n${USAGE}`);
    }
  }
  if (o.config !== 'all' && !CONFIGS.includes(o.config)) fail(`--config must be one of ${CONFIGS.join(', ')} or all, got ${o.config}`);
  if (!fs.existsSync(path.join(o.peer, 'bench-llamacpp.mjs'))) fail(`${o.peer}: not a peer-bench folder (no bench-llamacpp.mjs); pass --peer DIR`);
  if (!o.out) o.out = path.join(o.scratch, 'results', `peer-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  return o;
}

function fail(msg: string): never {
  console.error(`peer: ${msg}`);
  process.exit(2);
}

function log(msg: string): void {
  console.error(`[peer] ${msg}`);
}

/** Runs a command, stderr shown live; returns stdout, or throws with the exit status. */
function run(cmd: string, args: string[], cwd: string): string {
  log(`${path.basename(cmd)} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${path.basename(cmd)} ${args.join(' ')} exited with ${r.status ?? r.signal}\n${r.stdout.slice(-2000)}`);
  return r.stdout;
}

/** The last stdout line that is a JSON object. */
function lastJson(stdout: string, what: string): Record<string, any> {
  const lines = stdout.trim().split('\n').reverse();
  for (const line of lines) {
    if (!line.trim().startsWith('{')) continue;
    try {
      return JSON.parse(line);
    } catch {
      // not JSON after all; keep looking
    }
  }
  throw new Error(`${what}: no JSON line in its output:\n${stdout.slice(-2000)}`);
}

/** Copies peer-bench's files (not node_modules) into the scratch folder and makes them writable. */
function syncScratch(peer: string, scratch: string): void {
  fs.mkdirSync(scratch, { recursive: true });
  const copy = (src: string, dst: string) => {
    for (const e of fs.readdirSync(src, { withFileTypes: true })) {
      if (e.name === 'node_modules') continue;
      const s = path.join(src, e.name);
      const d = path.join(dst, e.name);
      if (e.isDirectory()) {
        fs.mkdirSync(d, { recursive: true });
        fs.chmodSync(d, 0o755);
        copy(s, d);
      } else if (e.isFile()) {
        if (fs.existsSync(d)) fs.chmodSync(d, 0o644);
        fs.copyFileSync(s, d);
        fs.chmodSync(d, 0o644);
      }
    }
  };
  copy(peer, scratch);
}

/** npm install in the scratch copy unless the pinned node-llama-cpp is already there. */
function ensureNodeLlamaCpp(scratch: string): void {
  const want = JSON.parse(fs.readFileSync(path.join(scratch, 'package.json'), 'utf8')).dependencies?.['node-llama-cpp'];
  const have = path.join(scratch, 'node_modules', 'node-llama-cpp', 'package.json');
  if (fs.existsSync(have) && JSON.parse(fs.readFileSync(have, 'utf8')).version === want) {
    log(`node-llama-cpp ${want} already installed in ${scratch}/node_modules`);
    return;
  }
  run('npm', ['install', '--no-audit', '--no-fund'], scratch);
}

interface Row {
  config: string;
  model_dir: string;
  ours: Record<string, any> | null;
  llamacpp: Record<string, any> | null;
  errors: string[];
  ratios: {
    prefill: number | null;
    decode: number | null;
    ours_vs_roofline: number | null;
    llamacpp_vs_roofline: number | null;
  };
  ids_match: boolean | null;
}

const r2 = (x: number | null) => (x === null || !Number.isFinite(x) ? null : Math.round(x * 1000) / 1000);
const div = (a: unknown, b: unknown) => (typeof a === 'number' && typeof b === 'number' && b > 0 ? r2(a / b) : null);

/** Roofline decode tok/s from our bench's roofline block (bytes per token and bandwidth). */
function rooflineTokS(ours: Record<string, any> | null): number | null {
  const rf = ours?.roofline;
  if (!rf || typeof rf.bytes_per_token !== 'number' || typeof rf.bandwidth_gb_s !== 'number' || rf.bytes_per_token <= 0) return null;
  return (rf.bandwidth_gb_s * 1e9) / rf.bytes_per_token;
}

function benchOne(o: Options, name: string): Row {
  const models = path.join(o.scratch, 'models');
  const dir = path.join(models, `${name}-f32`);
  const gguf = `${dir}.gguf`;
  const row: Row = {
    config: name, model_dir: dir, ours: null, llamacpp: null, errors: [],
    ratios: { prefill: null, decode: null, ours_vs_roofline: null, llamacpp_vs_roofline: null }, ids_match: null,
  };
  const node = process.execPath;
  try {
    run(node, ['make-synthetic.mjs', '--config', `configs/${name}.json`, '--out', dir, '--seed', '1', '--dtype', 'f32'], o.scratch);
    if (!o.skipLlamacpp) {
      try {
        run(node, ['to-gguf.mjs', '--model', dir, '--out', gguf, '--type', 'f32'], o.scratch);
        row.llamacpp = lastJson(run(node, ['bench-llamacpp.mjs', '--gguf', gguf,
          '--prompt-tokens', String(o.promptTokens), '--gen-tokens', String(o.genTokens),
          '--threads', String(o.threads), '--repeat', String(o.repeat), '--kv', 'f32'], o.scratch), 'bench-llamacpp');
      } catch (e) {
        row.errors.push(`llama.cpp: ${(e as Error).message}`);
      }
    }
    if (!o.skipOurs) {
      try {
        // what `pnpm moi-gen` runs, without pnpm's own output on stdout
        row.ours = lastJson(run(path.join(REPO, 'node_modules/.bin/tsx'), ['packages/cli/src/bin.ts', 'bench', '--model', dir,
          '--prompt-tokens', String(o.promptTokens), '--gen-tokens', String(o.genTokens), '--repeat', String(o.repeat), ...o.oursArgs, '--json'], REPO), 'moi-gen bench');
      } catch (e) {
        row.errors.push(`ours: ${(e as Error).message}`);
      }
    }
  } catch (e) {
    row.errors.push(`make-synthetic: ${(e as Error).message}`);
  } finally {
    if (!o.keepModels) {
      fs.rmSync(dir, { recursive: true, force: true });
      fs.rmSync(gguf, { force: true });
    }
  }
  const ours = row.ours;
  const ll = row.llamacpp;
  const roof = rooflineTokS(ours);
  row.ratios = {
    prefill: div(ours?.prefill_tok_s, ll?.prefill_tok_s),
    decode: div(ours?.decode_tok_s?.standard, ll?.decode_tok_s),
    ours_vs_roofline: typeof ours?.roofline?.ratio === 'number' ? r2(ours.roofline.ratio) : div(ours?.decode_tok_s?.standard, roof),
    llamacpp_vs_roofline: div(ll?.decode_tok_s, roof),
  };
  if (Array.isArray(ours?.first_ids) && Array.isArray(ll?.first_ids)) {
    row.ids_match = ours!.first_ids.length === ll!.first_ids.length && ours!.first_ids.every((id: number, i: number) => id === ll!.first_ids[i]);
  }
  return row;
}

function table(rows: Row[]): string {
  const f = (x: unknown, d = 1) => (typeof x === 'number' ? x.toFixed(d) : '–');
  const head = ['shape', 'prefill ours', 'prefill llama.cpp', 'ours÷llama', 'decode ours', 'decode moi', 'decode llama.cpp', 'ours÷llama',
    'ours÷roofline', 'llama÷roofline', 'first_ids'];
  const body = rows.map((r) => [
    r.config,
    f(r.ours?.prefill_tok_s), f(r.llamacpp?.prefill_tok_s), f(r.ratios.prefill, 3),
    f(r.ours?.decode_tok_s?.standard), f(r.ours?.decode_tok_s?.moi), f(r.llamacpp?.decode_tok_s), f(r.ratios.decode, 3),
    f(r.ratios.ours_vs_roofline, 3), f(r.ratios.llamacpp_vs_roofline, 3),
    r.ids_match === null ? '–' : r.ids_match ? 'equal' : 'DIFFER',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  const out = [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)];
  for (const r of rows) {
    if (r.ids_match === false) out.push(`${r.config}: first_ids ours ${JSON.stringify(r.ours!.first_ids)} vs llama.cpp ${JSON.stringify(r.llamacpp!.first_ids)}`);
    for (const e of r.errors) out.push(`${r.config}: ${e.split('\n')[0]}`);
  }
  return out.join('\n');
}

function main(): void {
  const o = parseArgs(process.argv.slice(2));
  const names = o.config === 'all' ? CONFIGS : [o.config];
  syncScratch(o.peer, o.scratch);
  if (!o.skipLlamacpp) ensureNodeLlamaCpp(o.scratch);
  const rows: Row[] = [];
  for (const name of names) rows.push(benchOne(o, name));

  const result = {
    date: new Date().toISOString(),
    host: { cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model ?? null, mem_gb: Math.round(os.totalmem() / 2 ** 30), node: process.version },
    settings: {
      prompt_tokens: o.promptTokens, gen_tokens: o.genTokens, repeat: o.repeat, llamacpp_threads: o.threads,
      weights: 'f32 synthetic, seed 1 (peer-bench make-synthetic.mjs)', llamacpp_kv: 'f32', peer_bench: o.peer, scratch: o.scratch,
    },
    results: rows,
  };
  fs.mkdirSync(path.dirname(o.out), { recursive: true });
  fs.writeFileSync(o.out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(table(rows));
  console.log(`\nJSON: ${o.out}`);
  if (rows.some((r) => r.errors.length)) process.exitCode = 1;
}

main();
