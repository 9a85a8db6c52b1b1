/**
 * WGSL attention over the preallocated KV cache, for decode (one query per row) and prefill (T
 * queries of one row, causal) alike: one workgroup of 64 invocations per (query head, token row).
 *
 * - GQA: query head h reads kv head ⌊h / (nH / nKV)⌋.
 * - The mask comes from positions, as @moi/core's positionMask: slot s of the row holds position
 *   slots[row·S + s] − 1 (0 = empty); a query at position p sees it when it is ≤ p and, with a
 *   sliding window w, when p − it < w. Only slots < min(S, p + 1) can hold a position ≤ p, so the
 *   work grows with the context, not with the preallocated capacity.
 * - Gemma 2's attention soft-cap: cap·tanh(score / cap) (argument clamped to ±15).
 * - Online softmax over chunks of 256 slots (4 per invocation): scores in workgroup memory, the
 *   running max and sum rescaled per chunk, each invocation owning ⌈D/64⌉ output dimensions.
 *   Masked slots weigh exactly 0 (no subnormal clamps; a finite sentinel, never −∞ arithmetic).
 *
 * The attention scale is already on q (the rope kernel applies it). D must be a multiple of 4
 * (vec4 loads of q and k) and ≤ 256.
 */
import { DimsLayout, type Kernel } from './runtime.ts';

export interface AttentionShape {
  M: number;
  D: number;
  nH: number;
  nKV: number;
  S: number;
  window: number | null;
  softcap: number | null;
  qStride: number;
  oStride: number;
  rowsAt: number;
  posAt: number;
}

export const ATTN_CHUNK = 256;

const DIMS = new DimsLayout([
  ['d', 'u32'],
  ['s', 'u32'],
  ['nkv', 'u32'],
  ['g', 'u32'],
  ['window', 'u32'],
  ['cap', 'f32'],
  ['qs', 'u32'],
  ['os', 'u32'],
  ['rows', 'u32'],
  ['pos', 'u32'],
] as const);

/** Dispatch [nH, M]. Bindings: dims, q, kc, vc, slots, step, o. */
export function attentionKernel(s: AttentionShape): Kernel {
  if (s.D % 4 !== 0 || s.D > 256)
    throw new Error(`attention kernel: head_dim ${s.D} must be a multiple of 4 and ≤ 256`);
  const code = /* wgsl */ `
${DIMS.wgsl(0)}
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> vc: array<f32>;
@group(0) @binding(4) var<storage, read> slots: array<u32>;
@group(0) @binding(5) var<storage, read> step: array<u32>;
@group(0) @binding(6) var<storage, read_write> o: array<f32>;
const CH = ${ATTN_CHUNK}u;
const NEG = -3.0e38;
var<workgroup> qs: array<vec4<f32>, 64>;
var<workgroup> sc: array<f32, ${ATTN_CHUNK}>;
var<workgroup> redm: array<f32, 64>;
var<workgroup> reds: array<f32, 64>;
var<workgroup> nsw: u32;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let D = d.d;
  let D4 = D / 4u;
  let S = d.s;
  let NKV = d.nkv;
  let h = wid.x;
  let m = wid.y;
  let row = step[d.rows + m];
  let qpos = step[d.pos + m];
  let kvh = h / d.g;
  for (var k = t; k < D4; k = k + 64u) {
    let b = m * d.qs + h * D + 4u * k;
    qs[k] = vec4<f32>(q[b], q[b + 1u], q[b + 2u], q[b + 3u]);
  }
  if (t == 0u) { nsw = min(S, qpos + 1u); }
  let nS = workgroupUniformLoad(&nsw);
  let kb = (row * NKV + kvh) * S;
  var mx = NEG;
  var l = 0.0;
  var acc: array<f32, 4>;
  for (var c0 = 0u; c0 < nS; c0 = c0 + CH) {
    var lmax = NEG;
    for (var i = 0u; i < 4u; i = i + 1u) {
      let s = c0 + t + 64u * i;
      var v = NEG;
      if (s < nS) {
        let sp = slots[row * S + s];
        if (sp > 0u && sp - 1u <= qpos && (d.window == 0u || qpos - (sp - 1u) < d.window)) {
          var dotv = 0.0;
          for (var k = 0u; k < D4; k = k + 1u) { dotv = dotv + dot(qs[k], kc[(kb + s) * D4 + k]); }
          if (d.cap > 0.0) { dotv = tanh(clamp(dotv / d.cap, -15.0, 15.0)) * d.cap; }
          v = dotv;
        }
      }
      sc[t + 64u * i] = v;
      lmax = max(lmax, v);
    }
    redm[t] = lmax;
    workgroupBarrier();
    for (var w = 32u; w > 0u; w = w / 2u) {
      if (t < w) { redm[t] = max(redm[t], redm[t + w]); }
      workgroupBarrier();
    }
    let newM = max(mx, redm[0]);
    let alpha = exp(mx - newM);
    var lsum = 0.0;
    for (var i = 0u; i < 4u; i = i + 1u) {
      let v = sc[t + 64u * i];
      var p = 0.0;
      if (v > -1.0e38) { p = exp(v - newM); }
      sc[t + 64u * i] = p;
      lsum = lsum + p;
    }
    reds[t] = lsum;
    workgroupBarrier();
    for (var w = 32u; w > 0u; w = w / 2u) {
      if (t < w) { reds[t] = reds[t] + reds[t + w]; }
      workgroupBarrier();
    }
    l = l * alpha + reds[0];
    mx = newM;
    let n = min(CH, nS - c0);
    for (var j = 0u; j < 4u; j = j + 1u) {
      let k = t + 64u * j;
      if (k >= D) { break; }
      var a = acc[j] * alpha;
      for (var s2 = 0u; s2 < n; s2 = s2 + 1u) {
        let p = sc[s2];
        if (p != 0.0) { a = a + p * vc[(kb + c0 + s2) * D + k]; }
      }
      acc[j] = a;
    }
    workgroupBarrier();
  }
  for (var j = 0u; j < 4u; j = j + 1u) {
    let k = t + 64u * j;
    if (k < D) { o[m * d.os + h * D + k] = acc[j] / l; }
  }
}
`;
  return {
    label: 'attention',
    code,
    entry: 'main',
    bindings: ['dims', 'q', 'kc', 'vc', 'slots', 'step', 'o'],
    dims: DIMS.pack({
      d: s.D,
      s: s.S,
      nkv: s.nKV,
      g: s.nH / s.nKV,
      window: s.window ?? 0,
      cap: s.softcap ?? 0,
      qs: s.qStride,
      os: s.oStride,
      rows: s.rowsAt,
      pos: s.posAt,
    }),
  };
}
