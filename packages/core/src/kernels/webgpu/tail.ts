/**
 * WGSL: the tail of a step on the GPU, one workgroup per row in two or three dispatches: the
 * logits processors, sampling, Mixture of Inputs, the next input embedding, and a record of
 * RECORD_WORDS u32 (64 bytes) per row: the only thing a step reads back.
 * - `tail-stats` (256 invocations): maxima, the greedy / forced token, y's log-sum-exp, and the
 *   top-K candidates of the raw logits, sorted, into a per-row scratch block;
 * - `tail-sample` (256; dispatched only when some row samples at random): the filters and the draw;
 * - `tail-mix` (64): the mix weights, the record, the penalty count, h = scale · Σ w_i E[i].
 * (Split so that lavapipe compiles each part in seconds, and greedy steps never compile the sampler.)
 *
 * Per row, from its raw logits x (the head's output, final soft-cap applied):
 * 1. processed logits, as @moi/core's sampling chain (HF order): repetition penalty over prompt ∪
 *    generated ids (x > 0 → x / p, else x · p), presence/frequency penalties over generated ids,
 *    temperature. The penalty state lives on the GPU ([B, V] u32: bit 31 = in the prompt, the low
 *    bits = times generated), marked by the prefill's gather and counted here: no per-step upload.
 * 2. the token y: the forced id if the host gave one; else greedy = argmax of the processed logits
 *    (lower id first on ties); else a random draw: top-k (exactly k by rank, ties to the lower id,
 *    as tf.topk), top-p (token i survives while the mass strictly before it in descending order is
 *    < p − TOP_P_SLACK, found by bisection over the 56-bit key (value, id) in one workgroup),
 *    min-p (exp(x − max) ≥ min_p·(1 − MIN_P_SLACK)), then inverse-CDF sampling in id order with
 *    the host's uniform u ∈ (0, 1] (uploaded: 4 bytes a row): y = the first i with cdf_i ≥ u·total.
 * 3. the candidates: the top-K of the raw logits (K = the mix's top-K, 20 by default, or the
 *    logprobs asked for if more), by a 7-ps radix select over (value, id) keys with workgroup
 *    atomics, then sorted (value descending, id ascending).
 * 4. the mix (README's "Mixture of Inputs, exactly", as @moi/moi's leanMix): candidates = top-K ∪
 *    {y}; p = softmax of their raw logits; H = entropy(p) / log|C| clamped to [0, 1];
 *    w = a·p + b·[i = y] with moi a = H/(β+1), b = (β+1−H)/(β+1); direct a = 1, b = 0; standard
 *    a = 0, b = 1. The next input h = scale · Σ w_i E[i] is written into the row's hidden state.
 * 5. the record: y, H, the weight on y, |C|, y's raw logprob, and up to 5 top logprobs (id, value).
 *
 * Subnormal-safe: no clamps like max(p, 1e-38); p·log p is skipped where p = 0; masked values use
 * predicates, never −∞ arithmetic.
 */
import type { SamplingParams } from '../../sampling/params.ts';
import { MIN_P_SLACK, TOP_P_SLACK } from '../../sampling/processors.ts';
import { embedAccess, embedBindings, embedBlocks, embedDims, type EmbedLayout } from './embed.ts';
import { f32 } from './linear.ts';
import { DimsLayout, type Kernel } from './runtime.ts';

/** u32 words per row of the step's read: 64 bytes. */
export const RECORD_WORDS = 16;
/** top logprobs that fit in a record */
export const RECORD_TOP_LOGPROBS = (RECORD_WORDS - 6) / 2;
/** the most candidates a row may select (the mix's K, or logprobs) */
export const TAIL_MAX_K = 64;
/** no forced token */
export const NO_TOKEN = 0xffffffff;

/** Words of one row's parameters (RowParams below). */
export const ROW_PARAM_WORDS = 16;
export const MIX_MODE_CODE = { standard: 0, moi: 1, direct: 2 } as const;

export interface TailShape {
  /** rows of the plan (the step buffer's sections are B words each) */
  B: number;
  V: number;
  H: number;
  embed: EmbedLayout;
  /** next-input row stride (floats) */
  hStride: number;
  scale: number | null;
  /** read and count the penalty state (its buffer is bound either way) */
  penalties: boolean;
}

/** A row's parameters as the tail reads them (RowParams in the WGSL): the sampling fields as the host sampler's. */
export interface TailRowParams extends Pick<
  SamplingParams,
  'temperature' | 'topK' | 'topP' | 'minP' | 'repetitionPenalty' | 'presencePenalty' | 'frequencyPenalty'
> {
  mode: keyof typeof MIX_MODE_CODE;
  beta: number;
  /** the mix's top-K */
  mixK: number;
  /** top logprobs to record (≤ RECORD_TOP_LOGPROBS) */
  logprobs: number;
}

/** The ROW_PARAM_WORDS words of a row's parameters. */
export function packRowParams(p: TailRowParams): Uint32Array {
  const words = new Uint32Array(ROW_PARAM_WORDS);
  const f = new Float32Array(words.buffer);
  f[0] = p.temperature;
  words[1] = p.topK;
  f[2] = p.topP;
  f[3] = p.minP;
  f[4] = p.repetitionPenalty;
  f[5] = p.presencePenalty;
  f[6] = p.frequencyPenalty;
  words[7] = MIX_MODE_CODE[p.mode];
  f[8] = p.beta;
  words[9] = p.mixK;
  words[10] = p.logprobs;
  words[11] = p.temperature > 0 ? 1 : 0;
  return words;
}

/** u32 words of a row's scratch block between the tail's dispatches */
export const TAIL_SCRATCH_WORDS = 8 + 2 * TAIL_MAX_K;

/** Offsets (u32 words) of the tail's sections in a step buffer: tail rows, u draws, forced ids. */
export function tailOffsets(B: number): { rows: number; u: number; forced: number } {
  return { rows: 0, u: 2 * B, forced: 3 * B };
}

const DIMS = new DimsLayout([
  ['v', 'u32'],
  ['h', 'u32'],
  ['hs', 'u32'],
  ['scale', 'f32'],
  ['ep', 'u32'],
  ['brows', 'u32'],
  ['rows', 'u32'],
  ['u', 'u32'],
  ['forced', 'u32'],
  ['chunk', 'u32'],
  ['pen', 'u32'],
] as const);

const BIND_DECL: Record<string, string> = {
  logits: 'var<storage, read> logits: array<f32>;',
  params: 'var<storage, read> params: array<RowParams>;',
  step: 'var<storage, read> step: array<u32>;',
  pen: 'var<storage, read_write> pen: array<u32>;',
  scratch: 'var<storage, read_write> scratch: array<u32>;',
  next: 'var<storage, read_write> next: array<f32>;',
  rec: 'var<storage, read_write> rec: array<u32>;',
};

/** What the three kernels share: params, dims, bindings, keys, the processed logits. */
function prelude(names: string[], wg: number): string {
  const fixed = names.filter((n) => BIND_DECL[n]);
  return /* wgsl */ `
struct RowParams {
  temperature: f32, topK: u32, topP: f32, minP: f32,
  repPen: f32, presPen: f32, freqPen: f32, mode: u32,
  beta: f32, mixK: u32, nLogprobs: u32, random: u32,
  p0: u32, p1: u32, p2: u32, p3: u32,
}
struct RowStep { row: u32, u: f32, forced: u32, pad: u32 }
${DIMS.wgsl(0)}
${fixed.map((n, i) => `@group(0) @binding(${i + 1}) ${BIND_DECL[n]}`).join('\n')}
const WG = ${wg}u;
const KMAX = ${TAIL_MAX_K}u;
const SCR = ${TAIL_SCRATCH_WORDS}u;
const NONE = 0xffffffffu;
const NEG = -3.0e38;
var<workgroup> wp: RowParams;
var<workgroup> ws: RowStep;
var<private> LB: u32;

// keys: (order-preserving bits of the value, 0xffffff − id): a larger key = a larger value, then a lower id
fn okey(f: f32) -> u32 {
  if (f == 0.0) { return 0x80000000u; }
  let b = bitcast<u32>(f);
  if ((b & 0x80000000u) != 0u) { return ~b; }
  return b | 0x80000000u;
}
fn ckey(f: f32, i: u32) -> vec2<u32> { return vec2<u32>(okey(f), 0xffffffu - i); }
fn kgt(a: vec2<u32>, b: vec2<u32>) -> bool { return a.x > b.x || (a.x == b.x && a.y > b.y); }
fn kge(a: vec2<u32>, b: vec2<u32>) -> bool { return a.x > b.x || (a.x == b.x && a.y >= b.y); }

// the processed logits: penalties (when the plan keeps their state), then temperature
fn proc(i: u32, P: RowParams) -> f32 {
  var x = logits[LB + i];
  if (d.pen != 0u) {
    let st = pen[LB + i];
    let cnt = f32(st & 0x7fffffffu);
    if (st != 0u) { if (x > 0.0) { x = x / P.repPen; } else { x = x * P.repPen; } }
    x = x - (cnt * P.freqPen + select(0.0, 1.0, cnt > 0.0) * P.presPen);
  }
  if (P.temperature > 0.0) { x = x / P.temperature; }
  return x;
}
`;
}

/** The row's parameters and step values, made uniform (all of the workgroup's control flow reads them). */
const LOAD_ROW = /* wgsl */ `
  if (t == 0u) {
    let row = step[d.rows + wid.x];
    wp = params[row];
    ws = RowStep(row, bitcast<f32>(step[d.u + wid.x]), step[d.forced + wid.x], 0u);
  }
  let P = workgroupUniformLoad(&wp);
  let R = workgroupUniformLoad(&ws);
  LB = R.row * d.v;
  let SB = R.row * SCR;
`;

// radix select of the k-th largest key, 8 bits a pass (4 over the value, 3 over the id); two
// histograms alternate so that one is counted while the other is cleared: 2 barriers a pass
// (lavapipe compiles every barrier as a coroutine split, seconds apiece, so barriers are few)
const SELECT = /* wgsl */ `
var<workgroup> hist: array<atomic<u32>, 512>;
var<workgroup> outu: vec2<u32>;
fn digitOf(k: vec2<u32>, ps: u32) -> u32 {
  if (ps < 4u) { return (k.x >> (24u - 8u * ps)) & 255u; }
  return (k.y >> (16u - 8u * (ps - 4u))) & 255u;
}
fn prefixMatches(k: vec2<u32>, p: vec2<u32>, ps: u32) -> bool {
  if (ps == 0u) { return true; }
  if (ps < 4u) { let sh = 32u - 8u * ps; return (k.x >> sh) == (p.x >> sh); }
  if (k.x != p.x) { return false; }
  if (ps == 4u) { return true; }
  let sh = 24u - 8u * (ps - 4u);
  return (k.y >> sh) == (p.y >> sh);
}
fn selectKth(raw: bool, kth: u32, t: u32, P: RowParams) -> vec2<u32> {
  var prefix = vec2<u32>(0u, 0u);
  var remain = kth;
  atomicStore(&hist[t], 0u);
  workgroupBarrier();
  for (var ps = 0u; ps < 7u; ps = ps + 1u) {
    let h0 = (ps % 2u) * 256u;
    for (var i = t; i < d.v; i = i + WG) {
      var k: vec2<u32>;
      if (raw) { k = ckey(logits[LB + i], i); } else { k = ckey(proc(i, P), i); }
      if (prefixMatches(k, prefix, ps)) { atomicAdd(&hist[h0 + digitOf(k, ps)], 1u); }
    }
    atomicStore(&hist[(256u - h0) + t], 0u);
    workgroupBarrier();
    if (t == 0u) {
      var cum = 0u;
      var dg = 255u;
      loop {
        let c = atomicLoad(&hist[h0 + dg]);
        if (cum + c >= remain || dg == 0u) { break; }
        cum = cum + c;
        dg = dg - 1u;
      }
      outu = vec2<u32>(dg, remain - cum);
    }
    let r = workgroupUniformLoad(&outu);
    remain = r.y;
    if (ps < 4u) { prefix.x = prefix.x | (r.x << (24u - 8u * ps)); } else { prefix.y = prefix.y | (r.x << (16u - 8u * (ps - 4u))); }
  }
  return prefix;
}
`;

function names(s: TailShape, which: 'stats' | 'sample' | 'mix'): string[] {
  if (which === 'mix')
    return ['dims', 'logits', 'params', 'step', 'pen', 'scratch', 'next', 'rec', ...embedBindings(s.embed)];
  return ['dims', 'logits', 'params', 'step', 'pen', 'scratch'];
}

function dimsOf(s: TailShape): Uint32Array {
  const off = tailOffsets(s.B);
  return DIMS.pack({
    v: s.V,
    h: s.H,
    hs: s.hStride,
    scale: s.scale ?? 1,
    ...embedDims(s.embed),
    rows: off.rows,
    u: off.u,
    forced: off.forced,
    chunk: Math.ceil(s.V / 256),
    pen: s.penalties ? 1 : 0,
  });
}

/** tail-stats: one workgroup of 256 per tail row. */
export function tailStatsKernel(s: TailShape): Kernel {
  if (s.V >= 1 << 24) throw new Error(`tail kernel: vocabulary ${s.V} needs ids below 2^24`);
  const bind = names(s, 'stats');
  const code = /* wgsl */ `${prelude(bind, 256)}
${SELECT}
struct Stat { rmax: f32, pmax: f32, best: vec2<u32> }
var<workgroup> redf: array<f32, 256>;
var<workgroup> redg: array<f32, 256>;
var<workgroup> redk: array<vec2<u32>, 256>;
var<workgroup> outs: Stat;
var<workgroup> outf: f32;
var<workgroup> ncand: atomic<u32>;
var<workgroup> candId: array<u32, ${TAIL_MAX_K}>;
var<workgroup> candVal: array<f32, ${TAIL_MAX_K}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
${LOAD_ROW}
  let V = d.v;
  // raw max, processed max and the top key of the processed logits
  var rmax = NEG;
  var pmax = NEG;
  var best = vec2<u32>(0u, 0u);
  var se = 0.0;
  for (var i = t; i < V; i = i + WG) {
    rmax = max(rmax, logits[LB + i]);
    let p = proc(i, P);
    pmax = max(pmax, p);
    let k = ckey(p, i);
    if (kgt(k, best)) { best = k; }
  }
  redf[t] = rmax;
  redg[t] = pmax;
  redk[t] = best;
  workgroupBarrier();
  if (t == 0u) {
    var s = Stat(redf[0], redg[0], redk[0]);
    for (var j = 1u; j < WG; j = j + 1u) {
      s.rmax = max(s.rmax, redf[j]);
      s.pmax = max(s.pmax, redg[j]);
      if (kgt(redk[j], s.best)) { s.best = redk[j]; }
    }
    outs = s;
  }
  let st = workgroupUniformLoad(&outs);
  // the raw log-sum-exp (y's logprob and the top logprobs)
  for (var i = t; i < V; i = i + WG) { se = se + exp(logits[LB + i] - st.rmax); }
  redf[t] = se;
  workgroupBarrier();
  if (t == 0u) {
    var a = 0.0;
    for (var j = 0u; j < WG; j = j + 1u) { a = a + redf[j]; }
    outf = a;
  }
  let lse = st.rmax + log(workgroupUniformLoad(&outf));

  // the candidates: the top-K of the raw logits (the mix's K, or the logprobs asked for if more)
  let mixing = P.mode != 0u && P.mixK > 0u;
  let kSel = min(max(select(0u, P.mixK, mixing), P.nLogprobs), min(V, KMAX));
  if (kSel > 0u) {
    let thr = selectKth(true, kSel, t, P);
    if (t == 0u) { atomicStore(&ncand, 0u); }
    workgroupBarrier();
    for (var i = t; i < V; i = i + WG) {
      let x = logits[LB + i];
      if (kge(ckey(x, i), thr)) {
        let at = atomicAdd(&ncand, 1u);
        if (at < KMAX) { candId[at] = i; candVal[at] = x; }
      }
    }
    workgroupBarrier();
  }
  if (t == 0u) {
    // sorted: value descending, id ascending
    for (var a = 1u; a < kSel; a = a + 1u) {
      let id = candId[a];
      let v = candVal[a];
      var b = a;
      while (b > 0u && kgt(ckey(v, id), ckey(candVal[b - 1u], candId[b - 1u]))) {
        candId[b] = candId[b - 1u];
        candVal[b] = candVal[b - 1u];
        b = b - 1u;
      }
      candId[b] = id;
      candVal[b] = v;
    }
    for (var a = 0u; a < kSel; a = a + 1u) {
      scratch[SB + 8u + a] = candId[a];
      scratch[SB + 8u + KMAX + a] = bitcast<u32>(candVal[a]);
    }
    var y = 0xffffffu - st.best.y;
    if (R.forced != NONE) { y = min(R.forced, V - 1u); }
    scratch[SB] = y;
    scratch[SB + 1u] = bitcast<u32>(lse);
    scratch[SB + 2u] = bitcast<u32>(st.pmax);
    scratch[SB + 3u] = st.best.x;
    scratch[SB + 4u] = st.best.y;
    scratch[SB + 5u] = kSel;
  }
}
`;
  return { label: 'tail-stats', code, entry: 'main', bindings: bind, dims: dimsOf(s) };
}

/** tail-sample: one workgroup of 256 per tail row (a row that does not sample returns at once). */
export function tailSampleKernel(s: TailShape): Kernel {
  const bind = names(s, 'sample');
  const code = /* wgsl */ `${prelude(bind, 256)}
${SELECT}
var<workgroup> redf: array<f32, 256>;
var<workgroup> redg: array<f32, 16>;
var<workgroup> outf: f32;
var<workgroup> part: array<f32, 257>;
var<workgroup> chosen: atomic<u32>;
var<workgroup> lastKept: atomic<u32>;

fn sumAll(v: f32, t: u32) -> f32 {
  redf[t] = v;
  workgroupBarrier();
  if (t < 16u) {
    var a = 0.0;
    for (var j = 0u; j < 16u; j = j + 1u) { a = a + redf[t * 16u + j]; }
    redg[t] = a;
  }
  workgroupBarrier();
  if (t == 0u) {
    var a = 0.0;
    for (var j = 0u; j < 16u; j = j + 1u) { a = a + redg[j]; }
    outf = a;
  }
  return workgroupUniformLoad(&outf);
}

// what survives top-k (key ≥ k), top-p (key > p) and min-p (e ≥ minr); the top token always does
struct Keep { k: vec2<u32>, p: vec2<u32>, minr: f32, mp: f32, top: vec2<u32> }
fn kept(i: u32, P: RowParams, kp: Keep) -> f32 {
  let x = proc(i, P);
  let key = ckey(x, i);
  let e = exp(x - kp.mp);
  let isTop = key.x == kp.top.x && key.y == kp.top.y;
  if (!isTop && (!kge(key, kp.k) || !kgt(key, kp.p) || e < kp.minr)) { return -1.0; }
  return e;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
${LOAD_ROW}
  if (R.forced != NONE || P.random == 0u) { return; }
  let V = d.v;
  var kp = Keep(vec2<u32>(0u, 0u), vec2<u32>(0u, 0u), 0.0, bitcast<f32>(scratch[SB + 2u]), vec2<u32>(scratch[SB + 3u], scratch[SB + 4u]));
  if (P.topK > 0u && P.topK < V) { kp.k = selectKth(false, P.topK, t, P); }
  if (P.topP < 1.0) {
    // pass 0: the mass top-k keeps → the limit; passes 1…56: bisection over the 56-bit key for the
    // largest c whose mass above is still ≥ the limit (tokens with a key > c survive)
    var limit = 0.0;
    var ans = vec2<u32>(0u, 0u);
    for (var it = 0u; it < 57u; it = it + 1u) {
      var c = ans;
      if (it >= 1u && it <= 32u) { c.x = c.x | (1u << (32u - it)); }
      if (it > 32u) { c.y = c.y | (1u << (56u - it)); }
      var s = 0.0;
      for (var i = t; i < V; i = i + WG) {
        let x = proc(i, P);
        let key = ckey(x, i);
        if (kge(key, kp.k) && kgt(key, c)) { s = s + exp(x - kp.mp); }
      }
      let m = sumAll(s, t);
      if (it == 0u) { limit = (P.topP - ${f32(TOP_P_SLACK)}) * m; } else if (m >= limit) { ans = c; }
    }
    kp.p = ans;
  }
  if (P.minP > 0.0) { kp.minr = P.minP * ${f32(1 - MIN_P_SLACK)}; }
  // inverse CDF in id order: each invocation sums a contiguous chunk of ids; the one whose
  // [prefix, prefix + sum) holds u·total walks its chunk to the first i with cdf_i ≥ u·total
  let lo = min(V, t * d.chunk);
  let hi = min(V, lo + d.chunk);
  var sum = 0.0;
  var last = NONE;
  for (var i = lo; i < hi; i = i + 1u) {
    let e = kept(i, P, kp);
    if (e >= 0.0) { sum = sum + e; last = i; }
  }
  part[t + 1u] = sum;
  if (t == 0u) { atomicStore(&chosen, NONE); atomicStore(&lastKept, 0u); }
  workgroupBarrier();
  if (last != NONE) { atomicMax(&lastKept, last); }
  if (t == 0u) {
    part[0] = 0.0;
    for (var j = 1u; j <= WG; j = j + 1u) { part[j] = part[j - 1u] + part[j]; }
  }
  workgroupBarrier();
  let goal = R.u * part[WG];
  if (part[t] < goal && goal <= part[t + 1u]) {
    var run = part[t];
    var pick = last;
    for (var i = lo; i < hi; i = i + 1u) {
      let e = kept(i, P, kp);
      if (e >= 0.0) {
        run = run + e;
        if (run >= goal) { pick = i; break; }
      }
    }
    atomicMin(&chosen, pick);
  }
  workgroupBarrier();
  if (t == 0u) {
    let c = atomicLoad(&chosen);
    scratch[SB] = select(atomicLoad(&lastKept), c, c != NONE);
  }
}
`;
  return { label: 'tail-sample', code, entry: 'main', bindings: bind, dims: dimsOf(s) };
}

/** tail-mix: one workgroup of 64 per tail row. */
export function tailMixKernel(s: TailShape): Kernel {
  const bind = names(s, 'mix');
  const code = /* wgsl */ `${prelude(bind, 64)}
${embedAccess(s.embed, bind.length - embedBlocks(s.embed))}
var<workgroup> slotId: array<u32, ${TAIL_MAX_K + 1}>;
var<workgroup> slotW: array<f32, ${TAIL_MAX_K + 1}>;
var<workgroup> nslots: u32;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
${LOAD_ROW}
  if (t == 0u) {
    let y = scratch[SB];
    let lse = bitcast<f32>(scratch[SB + 1u]);
    let kSel = scratch[SB + 5u];
    let yv = logits[LB + y];
    var H = 0.0;
    var wY = 1.0;
    var n = 1u;
    slotId[0] = y;
    slotW[0] = 1.0;
    if (P.mode != 0u && P.mixK > 0u) {
      // candidates C = top-K ∪ {y}; p = softmax over C; H = entropy(p) / log|C|; w = a·p + b·[i = y]
      let K = min(P.mixK, kSel);
      let top = bitcast<f32>(scratch[SB + 8u + KMAX]);
      var yIn = false;
      var z = 0.0;
      for (var a = 0u; a < K; a = a + 1u) {
        if (scratch[SB + 8u + a] == y) { yIn = true; }
        z = z + exp(bitcast<f32>(scratch[SB + 8u + KMAX + a]) - top);
      }
      if (!yIn) { z = z + exp(yv - top); }
      n = select(K + 1u, K, yIn);
      var ent = 0.0;
      for (var a = 0u; a < n; a = a + 1u) {
        var v = yv;
        if (a < K) { v = bitcast<f32>(scratch[SB + 8u + KMAX + a]); }
        let p = exp(v - top) / z;
        if (p > 0.0) { ent = ent + p * log(p); }
      }
      if (n > 1u) { H = clamp(-ent / log(f32(n)), 0.0, 1.0); }
      var ca = 0.0;
      var da = 0.0;
      var db = 0.0;
      if (P.mode == ${MIX_MODE_CODE.moi}u) { ca = 1.0 / (P.beta + 1.0); db = 1.0; } else if (P.mode == ${MIX_MODE_CODE.direct}u) { da = 1.0; }
      let ka = H * ca + da;
      let kb = db - H * ca;
      wY = 0.0;
      for (var a = 0u; a < n; a = a + 1u) {
        var v = yv;
        var id = y;
        if (a < K) { v = bitcast<f32>(scratch[SB + 8u + KMAX + a]); id = scratch[SB + 8u + a]; }
        let isY = select(0.0, 1.0, id == y);
        let w = ka * (exp(v - top) / z) + kb * isY;
        slotId[a] = id;
        slotW[a] = w;
        wY = wY + w * isY;
      }
    }
    nslots = n;
    // the record: y, H, the weight on y, |C|, y's raw logprob, the top logprobs
    let rb = R.row * ${RECORD_WORDS}u;
    rec[rb] = y;
    rec[rb + 1u] = bitcast<u32>(H);
    rec[rb + 2u] = bitcast<u32>(wY);
    rec[rb + 3u] = n;
    rec[rb + 4u] = bitcast<u32>(yv - lse);
    let nl = min(min(P.nLogprobs, kSel), ${RECORD_TOP_LOGPROBS}u);
    rec[rb + 5u] = nl;
    for (var a = 0u; a < ${RECORD_TOP_LOGPROBS}u; a = a + 1u) {
      var id = NONE;
      var lp = 0.0;
      if (a < nl) { id = scratch[SB + 8u + a]; lp = bitcast<f32>(scratch[SB + 8u + KMAX + a]) - lse; }
      rec[rb + 6u + 2u * a] = id;
      rec[rb + 7u + 2u * a] = bitcast<u32>(lp);
    }
    if (d.pen != 0u) { pen[LB + y] = pen[LB + y] + 1u; }
  }
  // the next input: scale · Σ w_i E[i]
  let ns = workgroupUniformLoad(&nslots);
  for (var k = t; k < d.h; k = k + WG) {
    var acc = 0.0;
    for (var a = 0u; a < ns; a = a + 1u) { acc = acc + slotW[a] * erow(slotId[a], k); }
    next[R.row * d.hs + k] = acc * d.scale;
  }
}
`;
  return {
    label: `tail-mix ${s.embed.dtype}${embedBlocks(s.embed) > 1 ? ` ${embedBlocks(s.embed)} blocks` : ''}`,
    code,
    entry: 'main',
    bindings: bind,
    dims: dimsOf(s),
  };
}

/** The tail's kernels, in dispatch order (the sampler only when some row samples at random). */
export function tailKernels(s: TailShape): { stats: Kernel; sample: Kernel; mix: Kernel } {
  return { stats: tailStatsKernel(s), sample: tailSampleKernel(s), mix: tailMixKernel(s) };
}
