/**
 * GpuDecodePlan: a whole decoder step on the GPU with fixed shapes, built once for (spec,
 * weights, batch, capacity). It owns every buffer (weights, the KV cache preallocated to the
 * capacity, activations, the step buffer, the record buffer and its staging copy), compiles every
 * pipeline and creates every bind group at build. A decode step then uploads a few scalars (per row:
 * its position, the uniform draw, a forced id, an input id: 16 bytes), encodes one fixed sequence of
 * dispatches in one compute pass, and reads 64 bytes a row once.
 *
 * A decode step, per layer (Llama / Qwen: 6 dispatches; Gemma 2/3 with sandwich norms: 8):
 *   1. qkv GEMV with the input RMSNorm fused (and Qwen2's biases)
 *   2. q/k norms + RoPE + the attention scale on q + the KV-cache append in place
 *   3. attention over the cache (GQA, sliding window, soft-cap; masked by position)
 *   4. o_proj GEMV with the residual add (Gemma 2/3: into a scratch row, then 5.)
 *   5. (Gemma 2/3) post-attention RMSNorm + residual add
 *   6. gate/up GEMV with the pre-MLP RMSNorm fused and SwiGLU / GeGLU(tanh) in its epilogue
 *   7. down_proj GEMV with the residual add (Gemma 2/3: into scratch, then 8.)
 *   8. (Gemma 2/3) post-feed-forward RMSNorm + residual add
 * (+1 reduction after a GEMV that splits K across workgroups: only narrow outputs with a long K,
 * see autoSplitK; never on the SmolLM2 shape), then the head GEMV with the final norm and soft-cap
 * fused (one dispatch per block of the vocabulary that fits a storage binding), and the tail:
 * stats (greedy / forced token, top-K candidates), the sampler (only when a row draws at random),
 * mix (MoI / direct weights, the next input written into the residual stream, the record): 2 or 3
 * dispatches. A step whose inputs are host ids adds one gather; one whose inputs are host
 * embeddings (teacher forcing) uploads them. Otherwise the next step's input is already on the GPU
 * (E[y], or the MoI mix), so a generation loop uploads no ids: per row 16 bytes (position, uniform
 * draw, forced id, input id) go up and one 64-byte record comes back.
 *
 * Design note: how phase B plugs this into the engine (issue 23). As built: @moi/engine's
 * gpu-plans.ts reads the checkpoint into a GpuWeightStore (weights uploaded once, shared by every
 * plan over it) and lends plans per (rows, capacity); gpu-decode.ts runs generate()'s and the
 * Scheduler's rows on them (prefill through the plan; the whole prompt at admission). Not done
 * yet: tables converted block by block (below), and a row mask (idle rows step along).
 * - Weights. The new @moi/models weight interface (layers as objects, whatever their storage)
 *   feeds `GpuModelSpec` (a DecoderSpec satisfies it structurally) and a `WeightsProvider`: the
 *   builder's per-tensor reads (HF names, host f32 / f16 / bf16 words) go straight here, and the
 *   plan does its own layout (stacked q/k/v and gate/up, checkpoint [out, in] rows, no transpose,
 *   rows padded to 8). The plan does not need tfjs tensors for the weights at all, so a webgpu load
 *   holds each matrix once, on the GPU.
 * - Dtypes. `--dtype auto|f32|f16` on webgpu maps to `dtype`: auto = f16 for bf16/f16 checkpoints
 *   (bf16 → f16 at load; a matrix with a value past ±65504 is kept in f32 and `notes` says so, which
 *   the load report prints), f32 for f32 checkpoints; f32 / f16 force it. Norms, biases and the KV
 *   cache stay f32; accumulation is f32 everywhere.
 * - Streaming loads (7B+). The provider is called one tensor at a time and each matrix is uploaded
 *   (mapped at creation) and dropped before the next is read, so the host holds one matrix (and its
 *   f32 staging copy) at a time, not the model. Today the largest one sets the peak: the embedding
 *   table is built whole (Qwen2.5-7B: 152k × 3584 → 2.2 GB f32 staging + 1.1 GB f16); phase B
 *   converts tables block by block, as they are uploaded. Tables are split into blocks under
 *   maxStorageBufferBindingSize (2 GiB on the H200: that f16 table is one block; lavapipe's
 *   128 MiB needs several) and the tail binds them all (7 + blocks ≤ maxStorageBuffersPerShaderStage).
 * - Generate and the scheduler. `Engine` on webgpu builds one plan per (model, batch, capacity);
 *   `generate()` calls prefill(row, promptIds) then step() per token, reading ids, entropy, the
 *   weight on y and logprobs from the records (no tfjs tensors on the hot path). The scheduler's
 *   batched rows are the plan's rows: admitting a request = setRow + resetRow + prefill(row, …)
 *   (chunked by `prefillChunk`, the chunk runs the tiled GEMM), a finished row is simply reset;
 *   idle rows can keep stepping harmlessly in a free slot, or step() gains a row mask. Stop
 *   strings and EOS stay on the host (they read the record's ids).
 * - Prefill. Chunks of up to `prefillChunk` tokens of one row: gather (marking prompt ids for the
 *   repetition penalty), per layer GEMM qkv / rope+append / causal attention over the cache / GEMM
 *   o / GEMM gate-up / GEMM down, then the head on the last token only and the tail for that row.
 *   Sliding layers keep a ring of window + prefillChunk − 1 slots, so a chunk never overwrites a
 *   key one of its own queries still needs.
 * - Soft Thinking, `topK: 'all'` mixing and prior 'processed' are not in the tail yet; phase B keeps
 *   the composite (tfjs ops over `logits()`) for those rows, or extends the tail.
 *
 * Workgroup sizes and limits assumed (checked at device creation, see device.ts): 64 invocations
 * (GEMV, norm, rope, attention, gather, tail mix), 256 (tiled GEMM, tail stats and sampler);
 * ≤ 16 KiB of workgroup memory (GEMM ≤ 13 KiB, tail stats ~7 KiB, GEMV ≤ 6 KiB); storage bindings up to the adapter's maxStorageBufferBindingSize (lavapipe
 * 128 MiB, H200 2 GiB): a KV-cache layer, an activation or a matrix larger than that is refused
 * with a ModelError naming it; the vocabulary tables are split into blocks instead.
 */
import { ModelError, UsageError } from '../../errors.ts';
import type { SamplingParams } from '../../sampling/params.ts';
import { createRng, uniformOpenClosed24, type Rng } from '../../sampling/rng.ts';
import { attentionKernel } from './attention.ts';
import { gpuDevice } from './device.ts';
import { embedBlockBytes, gatherGroups, gatherKernel, type EmbedLayout } from './embed.ts';
import { autoSplitK, linearKernels, padK, splitScratchWords, type LinearShape } from './linear.ts';
import { normKernel } from './norm.ts';
import { ropeKernel, ropeTable } from './rope.ts';
import { counterDiff, COPY_DST, grid, MAP_READ, type GpuCounters, GpuRuntime, type Kernel } from './runtime.ts';
import {
  MIX_MODE_CODE,
  NO_TOKEN,
  packRowParams,
  RECORD_TOP_LOGPROBS,
  RECORD_WORDS,
  ROW_PARAM_WORDS,
  TAIL_MAX_K,
  TAIL_SCRATCH_WORDS,
  tailKernels,
} from './tail.ts';
import {
  catVectors,
  GpuWeightStore,
  need,
  normVector,
  stackRows,
  type GpuModelSpec,
  type HostTensor,
  type StoredMatrix,
  type StoredWeight,
  type WeightsProvider,
} from './weights.ts';

export interface GpuPlanOptions {
  spec: GpuModelSpec;
  /** read once per tensor, only for weights the store does not hold yet */
  weights: WeightsProvider;
  /**
   * weights already on the GPU (shared with other plans; filled by this build where empty). Its
   * dtype is the plan's. Without one the plan uploads and owns its own.
   */
  store?: GpuWeightStore;
  /** rows decoded together */
  batch: number;
  /** tokens a row may hold (prompt + generation); ≤ max_position_embeddings */
  capacity: number;
  /** how the matrices are stored (default f32) */
  dtype?: 'f32' | 'f16';
  /** most tokens of one prefill dispatch sequence (default 64) */
  prefillChunk?: number;
  /** keep repetition / presence / frequency penalty state on the GPU (default false) */
  penalties?: boolean;
  /**
   * split-K of the GEMVs across workgroups: 'auto' (default: where the output is narrow and K
   * long, see autoSplitK), 'off', or a slice count for every GEMV (tests)
   */
  splitK?: 'auto' | 'off' | number;
  runtime?: GpuRuntime;
}

export type GpuMixMode = 'standard' | 'moi' | 'direct';

export interface RowSettings {
  sampling?: Partial<SamplingParams>;
  mix?: { mode: GpuMixMode; beta?: number; topK?: number };
  /** the row's generator for random sampling (default: seeded from sampling.seed, else crypto) */
  rng?: Rng;
}

export interface StepRecord {
  row: number;
  token: number;
  /** normalized entropy H of the mix's prior (0 for standard rows) */
  entropy: number;
  weightOnSampled: number;
  numCandidates: number;
  /** y's raw log-softmax */
  logprob: number;
  topLogprobs: { id: number; logprob: number }[];
}

interface Dispatch {
  kernel: Kernel;
  pipeline: GPUComputePipeline;
  bind: GPUBindGroup;
  groups: [number, number];
  /** the grid's y is the token rows (gather, rope, attention): a shorter prefill chunk dispatches fewer */
  perToken: boolean;
}

interface Layer {
  S: number;
  kc: GPUBuffer;
  vc: GPUBuffer;
  slots: GPUBuffer;
}

const DEFAULT_ROW: Required<Omit<RowSettings, 'rng'>> = {
  sampling: { temperature: 0 },
  mix: { mode: 'standard' },
};

function planError(msg: string): UsageError {
  return new UsageError('E_GPU_PLAN', `gpu plan: ${msg}`);
}

export class GpuDecodePlan {
  readonly spec: GpuModelSpec;
  readonly batch: number;
  readonly capacity: number;
  readonly prefillChunk: number;
  readonly dtype: 'f32' | 'f16';
  readonly penalties: boolean;
  readonly splitK: 'auto' | 'off' | number;
  /** load notes (matrices kept in f32, …): the store's when the plan has one */
  readonly notes: string[];
  /** tokens each row holds (its next position) */
  readonly positions: number[];
  /** counters of the last step() (or prefill()) */
  lastStep: GpuCounters | null = null;
  /** bytes of weights held on the GPU */
  weightBytes = 0;

  private readonly rt: GpuRuntime;
  private readonly buffers: GPUBuffer[] = [];
  /** where the weights live (the plan's own store when none was given: disposed with it) */
  private readonly store: GpuWeightStore;
  private readonly ownStore: boolean;
  private layers: Layer[] = [];
  private decode: Dispatch[] = [];
  /** how many of `decode` are the layers' (the rest: the head) */
  private decodeLayerDispatches = 0;
  private decodeGather!: Dispatch;
  private prefillLayers: Dispatch[][] = [];
  private prefillGather!: Dispatch;
  private prefillHead: Dispatch[] = [];
  /** the tail: stats, sample (only when a row samples at random), mix */
  private decodeTail!: Dispatch[];
  private prefillTail!: Dispatch[];
  private logitsBuf!: GPUBuffer;
  private hDec!: GPUBuffer;
  private paramsBuf!: GPUBuffer;
  private penBuf!: GPUBuffer;
  private recBuf!: GPUBuffer;
  private staging!: GPUBuffer;
  private stepDec!: GPUBuffer;
  private stepPre!: GPUBuffer;
  private readonly rows: { random: boolean; rng: Rng | null; logprobs: number }[];
  private disposed = false;

  private constructor(o: GpuPlanOptions, rt: GpuRuntime) {
    this.spec = o.spec;
    this.batch = o.batch;
    this.capacity = o.capacity;
    this.prefillChunk = o.prefillChunk ?? 64;
    this.dtype = o.store?.dtype ?? o.dtype ?? 'f32';
    this.ownStore = !o.store;
    this.store = o.store ?? new GpuWeightStore(this.dtype);
    this.notes = this.store.notes;
    this.penalties = o.penalties ?? false;
    this.splitK = o.splitK ?? 'auto';
    this.rt = rt;
    this.positions = new Array(o.batch).fill(0);
    this.rows = Array.from({ length: o.batch }, () => ({ random: false, rng: null, logprobs: 0 }));
  }

  /** Build the plan: check, upload the weights, compile every pipeline, make every bind group. */
  static async create(o: GpuPlanOptions): Promise<GpuDecodePlan> {
    checkOptions(o);
    const rt = o.runtime ?? new GpuRuntime(await gpuDevice());
    const plan = new GpuDecodePlan(o, rt);
    try {
      await plan.build(o.weights);
    } catch (err) {
      plan.dispose();
      throw err;
    }
    for (let r = 0; r < plan.batch; r++) plan.setRow(r, {});
    return plan;
  }

  // -------------------------------------------------------------------------------------------
  // build

  private buf(label: string, bytes: number, usage?: number): GPUBuffer {
    const b = this.rt.buffer(label, bytes, usage);
    this.buffers.push(b);
    return b;
  }

  private up(label: string, data: Float32Array | Uint16Array | Uint32Array): GPUBuffer {
    const b = this.rt.upload(label, data);
    this.buffers.push(b);
    return b;
  }

  /** A stored matrix on the GPU (from the store, else made, uploaded and stored), and its storage (f16 may fall back to f32). */
  private upMatrix(label: string, make: () => StoredMatrix): [GPUBuffer, 'f32' | 'f16'] {
    let w = this.store.get(label);
    if (!w) {
      const m = make();
      w = this.store.put(label, { buffers: [this.rt.upload(label, m.data)], dtype: m.dtype });
    }
    return [w.buffers[0], w.dtype];
  }

  /** A weight vector on the GPU (from the store, else made, uploaded and stored). */
  private upVector(label: string, make: () => Float32Array): GPUBuffer {
    const w =
      this.store.get(label) ?? this.store.put(label, { buffers: [this.rt.upload(label, make())], dtype: 'f32' });
    return w.buffers[0];
  }

  private async build(weights: WeightsProvider): Promise<void> {
    const s = this.spec;
    const B = this.batch;
    const T = this.prefillChunk;
    const H = s.hiddenSize;
    const D = s.headDim;
    const nH = s.numHeads;
    const nKV = s.numKvHeads;
    const I = s.intermediateSize;
    const V = s.vocabSize;
    const HS = padK(H);
    const QD = nH * D;
    const QKV = (nH + 2 * nKV) * D;
    const QS = padK(QD);
    const IS = padK(I);
    const MR = Math.max(B, T); // rows of the shared activation buffers
    const eps = s.rmsNormEps;
    const dtype = this.dtype;
    const notes = this.notes;
    const rt = this.rt;
    const t = (name: string, shape: number[]): HostTensor => need(weights, name, shape);

    // ---- activations and the step's small buffers
    const hDec = (this.hDec = this.buf('h (decode)', B * HS * 4));
    const hPre = this.buf('h (prefill)', T * HS * 4);
    const qkv = this.buf('qkv', MR * QKV * 4);
    const q = this.buf('q', MR * QS * 4);
    const ao = this.buf('attention out', MR * QS * 4);
    const act = this.buf('mlp act', MR * IS * 4);
    const tmp = this.buf('scratch', MR * HS * 4);
    this.logitsBuf = this.buf('logits', B * V * 4);
    this.paramsBuf = this.buf('row params', B * ROW_PARAM_WORDS * 4);
    this.recBuf = this.buf('records', B * RECORD_WORDS * 4);
    this.staging = this.buf('records (read)', B * RECORD_WORDS * 4, MAP_READ | COPY_DST);
    // the penalty state (a 16-byte stand-in when the plan keeps none: the kernels bind it either way)
    this.penBuf = this.buf('penalty state', this.penalties ? B * V * 4 : 16);
    const scratch = this.buf('tail scratch', B * TAIL_SCRATCH_WORDS * 4);
    const decWords = 4 * B + 3 * B;
    const preWords = 4 * B + 3 * T;
    this.stepDec = this.buf('step (decode)', decWords * 4);
    this.stepPre = this.buf('step (prefill)', preWords * 4);
    // the decode step buffer's static sections: tail rows, head rows, token rows = identity
    const ident = new Uint32Array(decWords);
    for (let b = 0; b < B; b++) {
      ident[b] = b;
      ident[B + b] = b;
      ident[4 * B + 2 * B + b] = b;
    }
    rt.write(this.stepDec, 0, ident);
    const at = (M: number) => ({ rows: 4 * B + 2 * M, pos: 4 * B, ids: 4 * B + M });

    // ---- rope tables, one per distinct rope
    const tables = new Map<string, GPUBuffer>();
    const tableOf = (rope: GpuModelSpec['layers'][number]['rope']): GPUBuffer => {
      const key = JSON.stringify(rope);
      let b = tables.get(key);
      if (!b) tables.set(key, (b = this.up(`rope table ${key}`, ropeTable(rope, this.capacity))));
      return b;
    };

    // ---- kernels: collected with their buffers, compiled together, then bound
    interface Pending {
      kernel: Kernel;
      buffers: Record<string, GPUBuffer>;
      groups: number | [number, number];
      perToken?: boolean;
      part?: { buffer: GPUBuffer | null };
    }
    // split-K partial sums: one scratch buffer for every split GEMV (they run one after another)
    let partWords = 0;
    const part = { buffer: null as GPUBuffer | null };
    const lin = (shape0: LinearShape, buffers: Record<string, GPUBuffer>): Pending[] => {
      const S = shape0.M > 8 || this.splitK === 'off' ? 1 : this.splitK === 'auto' ? autoSplitK(shape0) : this.splitK;
      const shape = { ...shape0, splitK: S };
      if (S > 1) partWords = Math.max(partWords, splitScratchWords(shape));
      return linearKernels(shape).map(({ kernel, groups }) => ({ kernel, groups, buffers, part }));
    };
    const decPending: Pending[] = [];
    const prePending: Pending[][] = [];
    const unitOffset = s.normUnitOffset;

    for (let l = 0; l < s.numLayers; l++) {
      const p = `model.layers.${l}.`;
      const a = `${p}self_attn.`;
      const ls = s.layers[l];
      // weights
      const [wqkv, qkvDtype] = this.upMatrix(`${a}qkv`, () =>
        stackRows(
          [
            { name: `${a}q_proj.weight`, t: t(`${a}q_proj.weight`, [QD, H]) },
            { name: `${a}k_proj.weight`, t: t(`${a}k_proj.weight`, [nKV * D, H]) },
            { name: `${a}v_proj.weight`, t: t(`${a}v_proj.weight`, [nKV * D, H]) },
          ],
          H,
          dtype,
          notes,
        ),
      );
      const [wo, oDtype] = this.upMatrix(`${a}o_proj`, () =>
        stackRows([{ name: `${a}o_proj.weight`, t: t(`${a}o_proj.weight`, [H, QD]) }], QD, dtype, notes),
      );
      const [wgu, guDtype] = this.upMatrix(`${p}mlp.gate_up`, () =>
        stackRows(
          [
            { name: `${p}mlp.gate_proj.weight`, t: t(`${p}mlp.gate_proj.weight`, [I, H]) },
            { name: `${p}mlp.up_proj.weight`, t: t(`${p}mlp.up_proj.weight`, [I, H]) },
          ],
          H,
          dtype,
          notes,
        ),
      );
      const [wd, dDtype] = this.upMatrix(`${p}mlp.down_proj`, () =>
        stackRows([{ name: `${p}mlp.down_proj.weight`, t: t(`${p}mlp.down_proj.weight`, [H, I]) }], I, dtype, notes),
      );
      const inNorm = this.upVector(`${p}input_layernorm`, () =>
        normVector(t(`${p}input_layernorm.weight`, [H]), unitOffset, HS),
      );
      const mlpNormName = s.sandwichNorms
        ? `${p}pre_feedforward_layernorm.weight`
        : `${p}post_attention_layernorm.weight`;
      const mlpNorm = this.upVector(mlpNormName, () => normVector(t(mlpNormName, [H]), unitOffset, HS));
      const postAttn = s.sandwichNorms
        ? this.upVector(`${p}post_attention_layernorm`, () =>
            normVector(t(`${p}post_attention_layernorm.weight`, [H]), unitOffset, HS),
          )
        : null;
      const postMlp = s.sandwichNorms
        ? this.upVector(`${p}post_feedforward_layernorm`, () =>
            normVector(t(`${p}post_feedforward_layernorm.weight`, [H]), unitOffset, HS),
          )
        : null;
      const qkvBias = s.qkvBias
        ? this.upVector(`${a}qkv bias`, () =>
            catVectors([t(`${a}q_proj.bias`, [QD]), t(`${a}k_proj.bias`, [nKV * D]), t(`${a}v_proj.bias`, [nKV * D])]),
          )
        : null;
      const oBias = s.oBias ? this.upVector(`${a}o bias`, () => catVectors([t(`${a}o_proj.bias`, [H])])) : null;
      const guBias = s.mlpBias
        ? this.upVector(`${p}mlp gate/up bias`, () =>
            catVectors([t(`${p}mlp.gate_proj.bias`, [I]), t(`${p}mlp.up_proj.bias`, [I])]),
          )
        : null;
      const dBias = s.mlpBias
        ? this.upVector(`${p}mlp down bias`, () => catVectors([t(`${p}mlp.down_proj.bias`, [H])]))
        : null;
      const qkNormW = s.qkNorm
        ? this.upVector(`${a}q/k norm`, () => {
            const both = new Float32Array(2 * D);
            both.set(normVector(t(`${a}q_norm.weight`, [D]), unitOffset, D));
            both.set(normVector(t(`${a}k_norm.weight`, [D]), unitOffset, D), D);
            return both;
          })
        : null;
      // the layer's cache: capacity slots, or a sliding layer's ring
      const S = ls.window ? Math.min(this.capacity, ls.window + T - 1) : this.capacity;
      const layer: Layer = {
        S,
        kc: this.buf(`layer ${l} keys`, B * nKV * S * D * 4),
        vc: this.buf(`layer ${l} values`, B * nKV * S * D * 4),
        slots: this.buf(`layer ${l} slot positions`, B * S * 4),
      };
      this.layers.push(layer);
      const table = tableOf(ls.rope);
      if (ls.rope.dim > D || ls.rope.dim % 2)
        throw new ModelError('E_CONFIG', `gpu plan: layer ${l} rotates ${ls.rope.dim} of ${D} head dimensions`);

      const layerKernels = (M: number, h: GPUBuffer, stepBuf: GPUBuffer): Pending[] => {
        const o = at(M);
        const out: Pending[] = [];
        out.push(
          ...lin(
            { M, K: H, N: QKV, w: qkvDtype, xStride: HS, yStride: QKV, norm: { eps }, bias: !!qkvBias },
            { x: h, w: wqkv, nw: inNorm, ...(qkvBias ? { bias: qkvBias } : {}), y: qkv },
          ),
        );
        const rope = ropeKernel(
          {
            M,
            D,
            nH,
            nKV,
            rot: ls.rope.dim,
            S,
            qkNorm: s.qkNorm ? { eps } : null,
            qScale: s.attnScale,
            qkvStride: QKV,
            qStride: QS,
            rowsAt: o.rows,
            posAt: o.pos,
          },
          this.capacity,
        );
        out.push({
          kernel: rope,
          groups: [nH + 2 * nKV, M],
          perToken: true,
          buffers: {
            qkv,
            ...(qkNormW ? { nw: qkNormW } : {}),
            tab: table,
            step: stepBuf,
            q,
            kc: layer.kc,
            vc: layer.vc,
            slots: layer.slots,
          },
        });
        const attn = attentionKernel({
          M,
          D,
          nH,
          nKV,
          S,
          window: ls.window,
          softcap: s.attnSoftcap,
          qStride: QS,
          oStride: QS,
          rowsAt: o.rows,
          posAt: o.pos,
        });
        out.push({
          kernel: attn,
          groups: [nH, M],
          perToken: true,
          buffers: { q, kc: layer.kc, vc: layer.vc, slots: layer.slots, step: stepBuf, o: ao },
        });
        if (s.sandwichNorms) {
          out.push(
            ...lin(
              { M, K: QD, N: H, w: oDtype, xStride: QS, yStride: HS, bias: !!oBias },
              { x: ao, w: wo, ...(oBias ? { bias: oBias } : {}), y: tmp },
            ),
          );
          out.push({
            kernel: normKernel({ M, H, eps, aStride: HS, hStride: HS, residual: true }),
            groups: [M, 1],
            buffers: { a: tmp, nw: postAttn!, h },
          });
        } else {
          out.push(
            ...lin(
              { M, K: QD, N: H, w: oDtype, xStride: QS, yStride: HS, bias: !!oBias, residual: true },
              { x: ao, w: wo, ...(oBias ? { bias: oBias } : {}), y: h },
            ),
          );
        }
        out.push(
          ...lin(
            { M, K: H, N: I, w: guDtype, xStride: HS, yStride: IS, norm: { eps }, bias: !!guBias, pair: s.act },
            { x: h, w: wgu, nw: mlpNorm, ...(guBias ? { bias: guBias } : {}), y: act },
          ),
        );
        if (s.sandwichNorms) {
          out.push(
            ...lin(
              { M, K: I, N: H, w: dDtype, xStride: IS, yStride: HS, bias: !!dBias },
              { x: act, w: wd, ...(dBias ? { bias: dBias } : {}), y: tmp },
            ),
          );
          out.push({
            kernel: normKernel({ M, H, eps, aStride: HS, hStride: HS, residual: true }),
            groups: [M, 1],
            buffers: { a: tmp, nw: postMlp!, h },
          });
        } else {
          out.push(
            ...lin(
              { M, K: I, N: H, w: dDtype, xStride: IS, yStride: HS, bias: !!dBias, residual: true },
              { x: act, w: wd, ...(dBias ? { bias: dBias } : {}), y: h },
            ),
          );
        }
        return out;
      };
      decPending.push(...layerKernels(B, hDec, this.stepDec));
      prePending.push(layerKernels(T, hPre, this.stepPre));
    }

    // ---- embedding and head tables (one table when tied), in blocks under the binding limit
    const finalNorm = this.upVector('model.norm', () => normVector(t('model.norm.weight', [H]), unitOffset, HS));
    const blocksOf = (name: string): { layout: EmbedLayout; buffers: GPUBuffer[] } => {
      const stored: StoredWeight =
        this.store.get(name) ??
        (() => {
          const m = stackRows([{ name, t: t(name, [V, H]) }], H, dtype, notes);
          const rowBytes = HS * (m.dtype === 'f32' ? 4 : 2);
          const blockRows = Math.max(1, Math.min(V, Math.floor(rt.gpu.limits.maxStorageBufferBindingSize / rowBytes)));
          const buffers: GPUBuffer[] = [];
          try {
            for (let r0 = 0; r0 < V; r0 += blockRows) {
              const n = Math.min(blockRows, V - r0);
              const part = m.data.subarray(r0 * HS, (r0 + n) * HS);
              rt.checkSize(`${name} rows ${r0}..${r0 + n}`, embedBlockBytes({ V, H, dtype: m.dtype, blockRows }, n));
              buffers.push(rt.upload(`${name} rows ${r0}..`, part as Float32Array | Uint16Array));
            }
          } catch (err) {
            for (const b of buffers) b.destroy();
            throw err;
          }
          return this.store.put(name, { buffers, dtype: m.dtype, blockRows });
        })();
      return { layout: { V, H, dtype: stored.dtype, blockRows: stored.blockRows! }, buffers: stored.buffers };
    };
    const embed = blocksOf('model.embed_tokens.weight');
    const head = s.tieWordEmbeddings ? embed : blocksOf('lm_head.weight');
    const eBufs = (e: typeof embed): Record<string, GPUBuffer> =>
      Object.fromEntries(e.buffers.map((b, i) => [`e${i}`, b]));
    // the tail's mix binds 7 storage buffers and every block of the table
    const maxStorage = rt.gpu.limits.maxStorageBuffersPerShaderStage;
    if (7 + embed.buffers.length > maxStorage) {
      throw new ModelError(
        'E_GPU_LIMIT',
        `gpu plan: model.embed_tokens.weight takes ${embed.buffers.length} blocks of at most ${rt.gpu.limits.maxStorageBufferBindingSize} bytes; ` +
          `the tail binds 7 + ${embed.buffers.length} storage buffers, over this device's ${maxStorage} (try dtype f16)`,
      );
    }

    const headKernels = (M: number, h: GPUBuffer, stepBuf: GPUBuffer): Pending[] =>
      head.buffers.flatMap((w, i) => {
        const r0 = i * head.layout.blockRows;
        const n = Math.min(head.layout.blockRows, V - r0);
        return lin(
          {
            M,
            K: H,
            N: n,
            w: head.layout.dtype,
            xStride: HS,
            yStride: V,
            yOffset: r0,
            norm: { eps },
            softcap: s.finalSoftcap,
            rowMap: { xRowAt: B, yRowAt: 0 },
          },
          { x: h, w, nw: finalNorm, step: stepBuf, y: this.logitsBuf },
        );
      });
    const tail = tailKernels({
      B,
      V,
      H,
      embed: embed.layout,
      hStride: HS,
      scale: s.embedScale,
      penalties: this.penalties,
    });
    const tailPending = (stepBuf: GPUBuffer, rows: number): Pending[] => {
      const common = { logits: this.logitsBuf, params: this.paramsBuf, step: stepBuf, pen: this.penBuf, scratch };
      return [
        { kernel: tail.stats, groups: [rows, 1], buffers: common },
        { kernel: tail.sample, groups: [rows, 1], buffers: common },
        { kernel: tail.mix, groups: [rows, 1], buffers: { ...common, next: hDec, rec: this.recBuf, ...eBufs(embed) } },
      ];
    };
    const gather = (M: number, h: GPUBuffer, stepBuf: GPUBuffer): Pending => {
      const o = at(M);
      const shape = {
        M,
        embed: embed.layout,
        scale: s.embedScale,
        hStride: HS,
        idsAt: o.ids,
        rowsAt: o.rows,
        penalties: this.penalties,
      };
      return {
        kernel: gatherKernel(shape),
        groups: gatherGroups(shape),
        perToken: true,
        buffers: { step: stepBuf, h, pen: this.penBuf, ...eBufs(embed) },
      };
    };
    this.decodeLayerDispatches = decPending.length;
    decPending.push(...headKernels(B, hDec, this.stepDec));
    const decTail = tailPending(this.stepDec, B);
    const preTail = tailPending(this.stepPre, 1);
    const preHead = headKernels(1, hPre, this.stepPre);
    const decGather = gather(B, hDec, this.stepDec);
    const preGather = gather(T, hPre, this.stepPre);

    if (partWords > 0) part.buffer = this.buf('split-K partial sums', partWords * 4);
    // ---- compile everything (in parallel), then bind
    const all = [...decPending, ...prePending.flat(), ...preHead, ...decTail, ...preTail, decGather, preGather];
    await Promise.all(all.map((p) => rt.pipeline(p.kernel)));
    const maxDim = rt.gpu.limits.maxComputeWorkgroupsPerDimension;
    // one uniform buffer per distinct dims block (layers of one kind share theirs)
    const dimsBuffers = new Map<string, GPUBuffer>();
    const dimsOf = (k: Kernel): GPUBuffer => {
      const key = `${k.code.length}:${k.label}:${Array.from(k.dims!).join(',')}`;
      let b = dimsBuffers.get(key);
      if (!b) {
        dimsBuffers.set(key, (b = rt.dimsBuffer(k)));
        this.buffers.push(b);
      }
      return b;
    };
    const bind = (p: Pending): Dispatch => {
      const pipeline = rt.compiled(p.kernel);
      const groups: [number, number] = typeof p.groups === 'number' ? grid(p.groups, maxDim) : p.groups;
      const buffers: Record<string, GPUBuffer> = p.kernel.dims
        ? { ...p.buffers, dims: dimsOf(p.kernel) }
        : { ...p.buffers };
      if (p.part?.buffer) buffers.part = p.part.buffer;
      return {
        kernel: p.kernel,
        pipeline,
        bind: rt.bindGroup(p.kernel, pipeline, buffers),
        groups,
        perToken: !!p.perToken,
      };
    };
    this.decode = decPending.map(bind);
    this.prefillLayers = prePending.map((ps) => ps.map(bind));
    this.prefillHead = preHead.map(bind);
    this.decodeTail = decTail.map(bind);
    this.prefillTail = preTail.map(bind);
    this.decodeGather = bind(decGather);
    this.prefillGather = bind(preGather);
    this.weightBytes = this.store.bytes;
  }

  // -------------------------------------------------------------------------------------------
  // rows

  private checkRow(row: number): void {
    if (!Number.isInteger(row) || row < 0 || row >= this.batch)
      throw planError(`row ${row} is outside the plan's ${this.batch} rows`);
  }

  /** Set a row's sampling and mixing (uploads its 64-byte parameter block; not part of a step). */
  setRow(row: number, settings: RowSettings): void {
    this.checkRow(row);
    const sp = { ...DEFAULT_ROW.sampling, ...settings.sampling };
    const mix = settings.mix ?? DEFAULT_ROW.mix;
    const temperature = sp.temperature ?? 1;
    const topK = sp.topK ?? 0;
    const topP = sp.topP ?? 1;
    const minP = sp.minP ?? 0;
    const rep = sp.repetitionPenalty ?? 1;
    const pres = sp.presencePenalty ?? 0;
    const freq = sp.frequencyPenalty ?? 0;
    const logprobs = sp.logprobs ?? 0;
    if (!(temperature >= 0)) throw planError(`row ${row}: temperature must be ≥ 0, got ${temperature}`);
    if (!Number.isInteger(topK) || topK < 0) throw planError(`row ${row}: topK must be an integer ≥ 0, got ${topK}`);
    if (!(topP > 0 && topP <= 1)) throw planError(`row ${row}: topP must be in (0, 1], got ${topP}`);
    if (!(minP >= 0 && minP <= 1)) throw planError(`row ${row}: minP must be in [0, 1], got ${minP}`);
    if (!(rep > 0)) throw planError(`row ${row}: repetitionPenalty must be > 0, got ${rep}`);
    if ((rep !== 1 || pres !== 0 || freq !== 0) && !this.penalties)
      throw planError(`row ${row}: penalties need a plan built with penalties: true`);
    if (!Number.isInteger(logprobs) || logprobs < 0 || logprobs > RECORD_TOP_LOGPROBS) {
      throw planError(
        `row ${row}: logprobs must be an integer in [0, ${RECORD_TOP_LOGPROBS}] (a step reads ${RECORD_WORDS * 4} bytes a row), got ${logprobs}`,
      );
    }
    if (!(mix.mode in MIX_MODE_CODE))
      throw planError(`row ${row}: mix mode '${mix.mode}' is not on the GPU tail (standard, moi, direct)`);
    const beta = mix.beta ?? 1;
    const mixK = mix.topK ?? 20;
    if (!(beta >= 0) || !Number.isFinite(beta))
      throw planError(`row ${row}: beta must be a finite number ≥ 0, got ${beta}`);
    if (!Number.isInteger(mixK) || mixK < 1 || mixK > TAIL_MAX_K)
      throw planError(`row ${row}: the mix's topK must be an integer in [1, ${TAIL_MAX_K}], got ${mixK}`);
    const random = temperature > 0;
    const words = packRowParams({
      temperature,
      topK,
      topP,
      minP,
      repetitionPenalty: rep,
      presencePenalty: pres,
      frequencyPenalty: freq,
      mode: mix.mode,
      beta,
      mixK,
      logprobs,
    });
    this.rt.write(this.paramsBuf, row * ROW_PARAM_WORDS * 4, words);
    this.rows[row] = { random, rng: random ? (settings.rng ?? createRng(sp.seed)) : null, logprobs };
  }

  /** Empty a row: position 0, its cache slots marked empty, its penalty state cleared. */
  resetRow(row: number): void {
    this.checkRow(row);
    const enc = this.rt.begin(`reset row ${row}`);
    for (const l of this.layers) enc.clear(l.slots, row * l.S * 4, l.S * 4);
    if (this.penalties) enc.clear(this.penBuf, row * this.spec.vocabSize * 4, this.spec.vocabSize * 4);
    enc.finish();
    this.positions[row] = 0;
  }

  private checkIds(ids: readonly number[], what: string): void {
    const V = this.spec.vocabSize;
    for (const id of ids)
      if (!Number.isInteger(id) || id < 0 || id >= V)
        throw planError(`${what}: token id ${id} is outside the vocabulary [0, ${V})`);
  }

  private checkForced(f: number | null | undefined, what: string): number {
    if (f === null || f === undefined) return NO_TOKEN;
    this.checkIds([f], what);
    return f;
  }

  private draw(row: number): number {
    const r = this.rows[row];
    return r.random ? uniformOpenClosed24(r.rng!) : 1;
  }

  private parse(buf: ArrayBuffer, rows: number[], base: number): StepRecord[] {
    const u = new Uint32Array(buf);
    const f = new Float32Array(buf);
    return rows.map((row, i) => {
      const o = (i + base) * RECORD_WORDS;
      const n = Math.min(u[o + 5], this.rows[row].logprobs);
      const top = Array.from({ length: n }, (_, j) => ({ id: u[o + 6 + 2 * j], logprob: f[o + 7 + 2 * j] }));
      return {
        row,
        token: u[o],
        entropy: f[o + 1],
        weightOnSampled: f[o + 2],
        numCandidates: u[o + 3],
        logprob: f[o + 4],
        topLogprobs: top,
      };
    });
  }

  // -------------------------------------------------------------------------------------------
  // prefill and decode

  /**
   * Prefill a row with `ids` (appended after what it holds), in chunks of up to prefillChunk
   * tokens; the last chunk runs the head on its last token and the tail: the record of the first
   * generated token (or `forced`), whose input embedding is left in the row's residual stream.
   */
  async prefill(row: number, ids: readonly number[], opts: { forced?: number | null } = {}): Promise<StepRecord> {
    this.checkLive();
    this.checkRow(row);
    if (ids.length === 0) throw planError(`prefill of row ${row}: no ids`);
    this.checkIds(ids, `prefill of row ${row}`);
    const forced = this.checkForced(opts.forced, `prefill of row ${row} (forced)`);
    if (this.positions[row] + ids.length > this.capacity) {
      throw new UsageError(
        'E_CONTEXT',
        `gpu plan: row ${row} holds ${this.positions[row]} tokens; ${ids.length} more pass its capacity ${this.capacity}`,
      );
    }
    const B = this.batch;
    const T = this.prefillChunk;
    const before = this.rt.snapshot();
    let rec: StepRecord | null = null;
    for (let c0 = 0; c0 < ids.length; c0 += T) {
      const n = Math.min(T, ids.length - c0);
      const last = c0 + n === ids.length;
      const words = new Uint32Array(4 * B + 3 * T);
      const fl = new Float32Array(words.buffer);
      words[0] = row;
      words[B] = n - 1;
      fl[2 * B] = last ? this.draw(row) : 1;
      words[3 * B] = forced;
      const p0 = this.positions[row];
      for (let i = 0; i < n; i++) {
        words[4 * B + i] = p0 + i;
        words[4 * B + T + i] = ids[c0 + i];
        words[4 * B + 2 * T + i] = row;
      }
      this.rt.write(this.stepPre, 0, words);
      const enc = this.rt.begin(`prefill row ${row}`);
      // token-row grids (gather, rope, attention) cover the chunk's n tokens; the GEMMs compute all
      // T rows (rows past n read stale but finite activations and write rows nothing reads)
      const run = (d: Dispatch) => enc.dispatch(d.pipeline, d.bind, d.groups[0], d.perToken ? n : d.groups[1]);
      run(this.prefillGather);
      for (const layer of this.prefillLayers) for (const d of layer) run(d);
      this.positions[row] += n;
      if (last) {
        for (const d of this.prefillHead) run(d);
        this.runTail(run, this.prefillTail, this.rows[row].random && forced === NO_TOKEN);
        enc.copy(this.recBuf, row * RECORD_WORDS * 4, this.staging, 0, RECORD_WORDS * 4);
      }
      enc.finish();
      if (last) rec = this.parse(await this.rt.readStaging(this.staging, RECORD_WORDS * 4), [row], 0)[0];
    }
    this.lastStep = counterDiff(before, this.rt.snapshot());
    return rec!;
  }

  /**
   * One decode step for every row: each row's input is the embedding its last tail left (E[y] or
   * the mix), or E[ids[row]] when `ids` is given. Returns one record per row.
   */
  async step(
    opts: {
      ids?: readonly number[];
      /** or the input embeddings [B, H] themselves (already scaled; uploaded: for teacher forcing and host-side mixers) */
      embeds?: Float32Array;
      forced?: readonly (number | null | undefined)[];
    } = {},
  ): Promise<StepRecord[]> {
    this.checkLive();
    const B = this.batch;
    const H = this.spec.hiddenSize;
    if (opts.ids) {
      if (opts.ids.length !== B) throw planError(`step: ${opts.ids.length} ids for ${B} rows`);
      this.checkIds(opts.ids, 'step');
    }
    if (opts.embeds) {
      if (opts.ids) throw planError('step: give ids or embeds, not both');
      if (opts.embeds.length !== B * H)
        throw planError(`step: embeds hold ${opts.embeds.length} values for ${B} rows of ${H}`);
      if (!opts.embeds.every(Number.isFinite)) throw planError('step: embeds hold a value that is not finite');
    }
    if (opts.forced && opts.forced.length !== B)
      throw planError(`step: ${opts.forced.length} forced ids for ${B} rows`);
    for (let b = 0; b < B; b++) {
      if (this.positions[b] >= this.capacity)
        throw new UsageError('E_CONTEXT', `gpu plan: row ${b} holds ${this.positions[b]} tokens, its capacity`);
    }
    const before = this.rt.snapshot();
    // the dynamic part of the step buffer: u, forced, positions, ids (words 2B … 6B)
    const words = new Uint32Array(4 * B);
    const fl = new Float32Array(words.buffer);
    for (let b = 0; b < B; b++) {
      fl[b] = this.draw(b);
      words[B + b] = this.checkForced(opts.forced?.[b], `step row ${b} (forced)`);
      words[2 * B + b] = this.positions[b];
      words[3 * B + b] = opts.ids ? opts.ids[b] : 0;
    }
    this.rt.write(this.stepDec, 2 * B * 4, words);
    if (opts.embeds) {
      const HS = padK(H);
      const rows = new Float32Array(B * HS);
      for (let b = 0; b < B; b++) rows.set(opts.embeds.subarray(b * H, (b + 1) * H), b * HS);
      this.rt.write(this.hDec, 0, rows);
    }
    const enc = this.rt.begin('decode step');
    const run = (d: Dispatch) => enc.dispatch(d.pipeline, d.bind, d.groups[0], d.groups[1]);
    if (opts.ids) run(this.decodeGather);
    for (const d of this.decode) run(d);
    this.runTail(
      run,
      this.decodeTail,
      this.rows.some((r, b) => r.random && words[B + b] === NO_TOKEN),
    );
    enc.copy(this.recBuf, 0, this.staging, 0, B * RECORD_WORDS * 4);
    enc.finish();
    const buf = await this.rt.readStaging(this.staging, B * RECORD_WORDS * 4);
    for (let b = 0; b < B; b++) this.positions[b]++;
    this.lastStep = counterDiff(before, this.rt.snapshot());
    return this.parse(
      buf,
      Array.from({ length: B }, (_, b) => b),
      0,
    );
  }

  /** The tail's dispatches: stats, the sampler when some row draws at random, mix. */
  private runTail(run: (d: Dispatch) => void, tail: Dispatch[], sampling: boolean): void {
    run(tail[0]);
    if (sampling) run(tail[1]);
    run(tail[2]);
  }

  /** The raw logits [B, V] of the last head (a debugging and test read, outside the step's counters). */
  async logits(): Promise<Float32Array> {
    this.checkLive();
    return new Float32Array(await this.rt.readBuffer(this.logitsBuf, this.batch * this.spec.vocabSize * 4));
  }

  /** Dispatches of one greedy or mixing decode step (no gather, no sampler), in total and per layer. */
  dispatchesPerStep(): { total: number; perLayer: number; outsideLayers: number } {
    const perLayer = this.decodeLayerDispatches / this.spec.numLayers;
    const total = this.decode.length + 2;
    return { total, perLayer, outsideLayers: total - this.decodeLayerDispatches };
  }

  private checkLive(): void {
    if (this.disposed) throw planError('the plan was disposed');
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const b of this.buffers) b.destroy();
    this.buffers.length = 0;
    if (this.ownStore) this.store.dispose();
  }
}

function checkOptions(o: GpuPlanOptions): void {
  const s = o.spec;
  if (!Number.isInteger(o.batch) || o.batch < 1) throw planError(`batch must be an integer ≥ 1, got ${o.batch}`);
  if (!Number.isInteger(o.capacity) || o.capacity < 1)
    throw planError(`capacity must be an integer ≥ 1, got ${o.capacity}`);
  if (o.capacity > s.maxPositionEmbeddings) {
    throw new ModelError(
      'E_CONTEXT',
      `gpu plan: requested context ${o.capacity} exceeds max_position_embeddings ${s.maxPositionEmbeddings}`,
    );
  }
  const T = o.prefillChunk ?? 64;
  if (!Number.isInteger(T) || T < 1) throw planError(`prefillChunk must be an integer ≥ 1, got ${T}`);
  if (o.dtype !== undefined && o.dtype !== 'f32' && o.dtype !== 'f16')
    throw planError(`dtype must be f32 or f16, got ${JSON.stringify(o.dtype)}`);
  if (o.store && o.dtype !== undefined && o.dtype !== o.store.dtype)
    throw planError(`dtype ${o.dtype} differs from the weight store's ${o.store.dtype}`);
  if (s.layers.length !== s.numLayers)
    throw new ModelError('E_CONFIG', `gpu plan: ${s.layers.length} layer specs for ${s.numLayers} layers`);
  if (s.numHeads % s.numKvHeads !== 0)
    throw new ModelError(
      'E_CONFIG',
      `gpu plan: num_attention_heads ${s.numHeads} is not a multiple of num_key_value_heads ${s.numKvHeads}`,
    );
  if (s.headDim % 4 !== 0 || s.headDim > 256)
    throw new ModelError(
      'E_CONFIG',
      `gpu plan: head_dim ${s.headDim} must be a multiple of 4 and at most 256 (the attention kernel's vec4 loads)`,
    );
  if (s.vocabSize >= 1 << 24)
    throw new ModelError('E_CONFIG', `gpu plan: vocab_size ${s.vocabSize} needs ids below 2^24`);
}
