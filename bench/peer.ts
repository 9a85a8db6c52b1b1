/**
 * Side-by-side benchmark: our engine vs llama.cpp (node-llama-cpp, CPU) on the same synthetic
 * model shapes, at the same weight dtype, same prompt, same lengths and the same thread count
 * (each count of --threads, default 1 and all cores: llama.cpp's --threads and ours, the wasm
 * thread pool's).
 *
 *   node_modules/.bin/tsx bench/peer.ts [--config NAME[,NAME]|all] [--dtype f32|bf16|q8[,...]] [--threads 1,max] [--dry-run]
 *
 * Per shape: (1) copy the shared peer-bench folder to a writable scratch folder and install
 * node-llama-cpp there (never into this repository; the install is kept for reuse), (2) write the
 * synthetic model once with peer-bench's make-synthetic.mjs (seed 1; f32 when f32 runs, else
 * bf16), then per dtype (3) convert it to GGUF at the matching type (f32, bf16, q8_0), (4) per
 * thread count run bench-llamacpp.mjs (f32 KV cache, like ours), our llamacpp-batch.mjs (llama.cpp's
 * batched decode at our bench's batch sizes, copied beside it) and `moi-gen bench --dtype D
 * --threads N --json` on the same folder, one after the other; (5) print a table (each engine's
 * figures, ours ÷ llama.cpp, each engine's speed-up over its own 1-thread run, each engine's
 * batch-16 aggregate ÷ its batch 1, MoI ÷ standard) and write all the JSON to one file. The plan (arguments, commander,
 * heap check) is packages/cli/src/bench/peer-plan.ts. See bench/README.md.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CommanderError,
  PlanError,
  parsePeerArgs,
  planAll,
  LLAMACPP_BATCH,
  type DtypeRun,
  type PeerDtype,
  type PeerOptions,
  type ShapePlan,
  type Step,
} from '../packages/cli/src/bench/peer-plan.ts';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function fail(msg: string): never {
  console.error(`peer: ${msg}`);
  process.exit(2);
}

function log(msg: string): void {
  console.error(`[peer] ${msg}`);
}

/** Runs a step, stderr shown live; returns stdout, or throws with the exit status. */
function run(o: PeerOptions, step: Step): string {
  const [cmd, args, cwd] =
    step.cwd === 'scratch'
      ? [process.execPath, step.args, o.scratch]
      : [path.join(REPO, 'node_modules/.bin/tsx'), step.args, REPO]; // what `pnpm moi-gen` runs, without pnpm's own output
  log(`${path.basename(cmd)} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0)
    throw new Error(
      `${path.basename(cmd)} ${args.join(' ')} exited with ${r.status ?? r.signal}\n${r.stdout.slice(-2000)}`,
    );
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
  // our llama.cpp batched-decode script runs beside peer-bench's (it imports node-llama-cpp and lib/util.mjs there)
  const batch = path.join(scratch, LLAMACPP_BATCH);
  if (fs.existsSync(batch)) fs.chmodSync(batch, 0o644);
  fs.copyFileSync(path.join(REPO, 'bench', LLAMACPP_BATCH), batch);
}

/** npm install in the scratch copy unless the pinned node-llama-cpp is already there. */
function ensureNodeLlamaCpp(o: PeerOptions): void {
  const want = JSON.parse(fs.readFileSync(path.join(o.scratch, 'package.json'), 'utf8')).dependencies?.[
    'node-llama-cpp'
  ];
  const have = path.join(o.scratch, 'node_modules', 'node-llama-cpp', 'package.json');
  if (fs.existsSync(have) && JSON.parse(fs.readFileSync(have, 'utf8')).version === want) {
    log(`node-llama-cpp ${want} already installed in ${o.scratch}/node_modules`);
    return;
  }
  log('npm install --no-audit --no-fund (node-llama-cpp, in the scratch folder)');
  const r = spawnSync('npm', ['install', '--no-audit', '--no-fund'], {
    cwd: o.scratch,
    encoding: 'utf8',
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  if (r.status !== 0)
    throw new Error(`npm install in ${o.scratch} exited with ${r.status ?? r.signal ?? r.error?.message}`);
}

// ---- results

interface Row {
  config: string;
  dtype: PeerDtype;
  threads: number;
  gguf_type: string;
  model_dir: string;
  ours: Record<string, any> | null;
  llamacpp: Record<string, any> | null;
  /** llama.cpp's batched decode (bench/llamacpp-batch.mjs): { batches: { "16": tok/s, ... } } */
  llamacpp_batch: Record<string, any> | null;
  errors: string[];
  ratios: {
    prefill: number | null;
    decode: number | null;
    /** our decode at this dtype ÷ our f32 decode on the same shape (null unless f32 ran too) */
    decode_vs_our_f32: number | null;
    ours_vs_roofline: number | null;
    llamacpp_vs_roofline: number | null;
    /** each engine's decode (prefill) at this thread count ÷ its own at 1 thread (null without a 1-thread row) */
    ours_decode_vs_1_thread: number | null;
    llamacpp_decode_vs_1_thread: number | null;
    ours_prefill_vs_1_thread: number | null;
    llamacpp_prefill_vs_1_thread: number | null;
    /** our batch-16 aggregate decode ÷ our batch-1 decode */
    batch16_vs_1: number | null;
    /** llama.cpp's batch-16 aggregate decode ÷ its batch-1 decode */
    llamacpp_batch16_vs_1: number | null;
    /** our batch-16 aggregate ÷ llama.cpp's */
    batch16: number | null;
  };
  ids_match: boolean | null;
}

const r2 = (x: number | null) => (x === null || !Number.isFinite(x) ? null : Math.round(x * 1000) / 1000);
const div = (a: unknown, b: unknown) => (typeof a === 'number' && typeof b === 'number' && b > 0 ? r2(a / b) : null);

/** Roofline decode tok/s from our bench's roofline block (bytes per token at the dtype, and bandwidth). */
function rooflineTokS(ours: Record<string, any> | null): number | null {
  const rf = ours?.roofline;
  if (!rf || typeof rf.bytes_per_token !== 'number' || typeof rf.bandwidth_gb_s !== 'number' || rf.bytes_per_token <= 0)
    return null;
  return (rf.bandwidth_gb_s * 1e9) / rf.bytes_per_token;
}

function benchDtype(o: PeerOptions, plan: ShapePlan, r: DtypeRun): Row {
  const row: Row = {
    config: plan.config,
    dtype: r.dtype,
    threads: r.threads,
    gguf_type: r.ggufType,
    model_dir: plan.source.dir,
    ours: null,
    llamacpp: null,
    llamacpp_batch: null,
    errors: [],
    ratios: noRatios(),
    ids_match: null,
  };
  if (r.llamacpp) {
    try {
      if (r.toGguf) run(o, r.toGguf);
      row.llamacpp = lastJson(run(o, r.llamacpp), 'bench-llamacpp');
      if (r.llamacppBatch) row.llamacpp_batch = lastJson(run(o, r.llamacppBatch), LLAMACPP_BATCH);
    } catch (e) {
      row.errors.push(`llama.cpp: ${(e as Error).message}`);
    } finally {
      if (!o.keepModels && r.lastOfDtype) fs.rmSync(r.gguf, { force: true });
    }
  }
  if (r.ours) {
    try {
      row.ours = lastJson(run(o, r.ours), 'moi-gen bench');
      if (row.ours.dtype !== r.dtype)
        row.errors.push(
          `ours: asked for --dtype ${r.dtype}, the bench loaded ${row.ours.dtype} (${row.ours.dtypeNote})`,
        );
      if (row.ours.threads !== r.threads && row.ours.threads_note)
        row.errors.push(`ours: asked for --threads ${r.threads}, the bench ran ${row.ours.threads_note}`);
    } catch (e) {
      row.errors.push(`ours: ${(e as Error).message}`);
    }
  }
  const ours = row.ours;
  const ll = row.llamacpp;
  const roof = rooflineTokS(ours);
  row.ratios = {
    ...noRatios(),
    prefill: div(ours?.prefill_tok_s, ll?.prefill_tok_s),
    decode: div(ours?.decode_tok_s?.standard, ll?.decode_tok_s),
    decode_vs_our_f32: null,
    ours_vs_roofline:
      typeof ours?.roofline?.ratio === 'number' ? r2(ours.roofline.ratio) : div(ours?.decode_tok_s?.standard, roof),
    llamacpp_vs_roofline: div(ll?.decode_tok_s, roof),
    batch16_vs_1: div(ours?.batch_decode_tok_s?.['16'], ours?.decode_tok_s?.standard),
    llamacpp_batch16_vs_1: div(row.llamacpp_batch?.batches?.['16'], ll?.decode_tok_s),
    batch16: div(ours?.batch_decode_tok_s?.['16'], row.llamacpp_batch?.batches?.['16']),
  };
  if (Array.isArray(ours?.first_ids) && Array.isArray(ll?.first_ids)) {
    row.ids_match =
      ours!.first_ids.length === ll!.first_ids.length &&
      ours!.first_ids.every((id: number, i: number) => id === ll!.first_ids[i]);
  }
  return row;
}

function noRatios(): Row['ratios'] {
  return {
    prefill: null,
    decode: null,
    decode_vs_our_f32: null,
    ours_vs_roofline: null,
    llamacpp_vs_roofline: null,
    ours_decode_vs_1_thread: null,
    llamacpp_decode_vs_1_thread: null,
    ours_prefill_vs_1_thread: null,
    llamacpp_prefill_vs_1_thread: null,
    batch16_vs_1: null,
    llamacpp_batch16_vs_1: null,
    batch16: null,
  };
}

function benchShape(o: PeerOptions, plan: ShapePlan): Row[] {
  const rows: Row[] = [];
  try {
    run(o, plan.source.make);
  } catch (e) {
    return plan.runs.map((r) => ({
      config: plan.config,
      dtype: r.dtype,
      threads: r.threads,
      gguf_type: r.ggufType,
      model_dir: plan.source.dir,
      ours: null,
      llamacpp: null,
      llamacpp_batch: null,
      errors: [`make-synthetic: ${(e as Error).message}`],
      ratios: noRatios(),
      ids_match: null,
    }));
  }
  try {
    for (const r of plan.runs) rows.push(benchDtype(o, plan, r));
  } finally {
    if (!o.keepModels) fs.rmSync(plan.source.dir, { recursive: true, force: true });
  }
  // each dtype's decode speed-up over our own f32 on this shape, at the same thread count; each
  // engine's speed-up over its own 1-thread run at the same dtype
  for (const r of rows) {
    const f32 = rows.find((x) => x.dtype === 'f32' && x.threads === r.threads)?.ours?.decode_tok_s?.standard;
    r.ratios.decode_vs_our_f32 = r.dtype !== 'f32' ? div(r.ours?.decode_tok_s?.standard, f32) : null;
    const one = rows.find((x) => x.dtype === r.dtype && x.threads === 1);
    if (one && r.threads !== 1) {
      r.ratios.ours_decode_vs_1_thread = div(r.ours?.decode_tok_s?.standard, one.ours?.decode_tok_s?.standard);
      r.ratios.llamacpp_decode_vs_1_thread = div(r.llamacpp?.decode_tok_s, one.llamacpp?.decode_tok_s);
      r.ratios.ours_prefill_vs_1_thread = div(r.ours?.prefill_tok_s, one.ours?.prefill_tok_s);
      r.ratios.llamacpp_prefill_vs_1_thread = div(r.llamacpp?.prefill_tok_s, one.llamacpp?.prefill_tok_s);
    }
  }
  return rows;
}

function table(rows: Row[]): string {
  const f = (x: unknown, d = 1) => (typeof x === 'number' ? x.toFixed(d) : '–');
  // 'ours ×1t' / 'llama ×1t': decode at this thread count ÷ the same engine's at 1 thread
  const head = [
    'shape',
    'dtype',
    'threads',
    'simd',
    'prefill ours',
    'prefill llama.cpp',
    'ours÷llama',
    'decode ours',
    'decode moi',
    'moi÷std',
    'decode llama.cpp',
    'ours÷llama',
    'ours ×1t',
    'llama ×1t',
    'batch16 ours',
    'b16÷b1',
    'batch16 llama.cpp',
    'b16÷b1 llama',
    'b16 ours÷llama',
    'ours÷our f32',
    'peak RSS ours',
    'peak RSS llama.cpp',
    'ours÷roofline',
    'first_ids',
  ];
  const body = rows.map((r) => [
    r.config,
    `${r.dtype}/${r.gguf_type}`,
    String(r.threads),
    r.ours ? String(r.ours.simd ?? 'tfjs') : '–',
    f(r.ours?.prefill_tok_s),
    f(r.llamacpp?.prefill_tok_s),
    f(r.ratios.prefill, 3),
    f(r.ours?.decode_tok_s?.standard),
    f(r.ours?.decode_tok_s?.moi),
    f(r.ours?.moi_overhead, 3),
    f(r.llamacpp?.decode_tok_s),
    f(r.ratios.decode, 3),
    f(r.ratios.ours_decode_vs_1_thread, 2),
    f(r.ratios.llamacpp_decode_vs_1_thread, 2),
    f(r.ours?.batch_decode_tok_s?.['16']),
    f(r.ratios.batch16_vs_1, 2),
    f(r.llamacpp_batch?.batches?.['16']),
    f(r.ratios.llamacpp_batch16_vs_1, 2),
    f(r.ratios.batch16, 2),
    f(r.ratios.decode_vs_our_f32, 2),
    typeof r.ours?.peak_rss_mb === 'number' ? `${f(r.ours.peak_rss_mb, 0)} MB` : '–',
    typeof r.llamacpp?.peak_rss_mb === 'number' ? `${f(r.llamacpp.peak_rss_mb, 0)} MB` : '–',
    f(r.ratios.ours_vs_roofline, 3),
    r.ids_match === null ? '–' : r.ids_match ? 'equal' : 'DIFFER',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  const out = [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)];
  for (const r of rows) {
    if (r.ids_match === false)
      out.push(
        `${r.config} ${r.dtype} ×${r.threads}: first_ids ours ${JSON.stringify(r.ours!.first_ids)} vs llama.cpp ${JSON.stringify(r.llamacpp!.first_ids)}`,
      );
    for (const e of r.errors) out.push(`${r.config} ${r.dtype} ×${r.threads}: ${e.split('\n')[0]}`);
  }
  return out.join('\n');
}

function main(): void {
  let o: PeerOptions;
  try {
    o = parsePeerArgs(process.argv.slice(2), REPO);
  } catch (e) {
    if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : 2); // commander printed the message (or the help)
    throw e;
  }
  if (!fs.existsSync(path.join(o.peer, 'bench-llamacpp.mjs')))
    fail(`${o.peer}: not a peer-bench folder (no bench-llamacpp.mjs); pass --peer DIR`);
  let plans: ShapePlan[];
  try {
    plans = planAll(o);
  } catch (e) {
    if (e instanceof PlanError) fail(e.message);
    throw e;
  }
  if (o.dryRun) {
    console.log(JSON.stringify({ options: o, plans }, null, 2));
    return;
  }
  syncScratch(o.peer, o.scratch);
  if (!o.skipLlamacpp) ensureNodeLlamaCpp(o);
  const load0 = os.loadavg();
  const rows: Row[] = [];
  for (const plan of plans) rows.push(...benchShape(o, plan));
  const load1 = os.loadavg();

  const result = {
    date: new Date().toISOString(),
    host: {
      cpus: os.cpus().length,
      cpu_model: os.cpus()[0]?.model ?? null,
      mem_gb: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
    },
    settings: {
      prompt_tokens: o.promptTokens,
      gen_tokens: o.genTokens,
      repeat: o.repeat,
      threads: o.threads,
      dtypes: o.dtypes,
      weights:
        'synthetic, seed 1 (peer-bench make-synthetic.mjs), written once per shape: f32 when f32 runs, else bf16',
      llamacpp_kv: 'f32',
      peer_bench: o.peer,
      scratch: o.scratch,
    },
    load_average: { start: load0, end: load1 },
    results: rows,
  };
  fs.mkdirSync(path.dirname(o.out), { recursive: true });
  fs.writeFileSync(o.out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(table(rows));
  console.log(
    `\nNode ${process.version}; load average ${load0.map((x) => x.toFixed(2)).join(' ')} at the start, ${load1.map((x) => x.toFixed(2)).join(' ')} at the end`,
  );
  console.log(`\nJSON: ${o.out}`);
  if (rows.some((r) => r.errors.length)) process.exitCode = 1;
}

main();
