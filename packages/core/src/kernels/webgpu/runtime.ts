/**
 * A small WebGPU runtime for moi's own kernels: a pipeline cache (WGSL module + entry point +
 * override constants → one compute pipeline, created once per device), buffers and bind groups
 * created by their owner once (a plan makes all of its own when it is built), one command
 * encoder and one compute pass per step, one small read at its end, and counters of everything a
 * step does: dispatches, bytes uploaded (every writeBuffer and every buffer mapped at creation),
 * bytes read back, and pipelines, bind groups and buffers created. The counters feed
 * `moi-gen bench --json`'s `gpu_step` (issue 23): after warm-up a decode step must create none.
 */
import type {} from 'webgpu';
import { ModelError, UsageError } from '../../errors.ts';
import { flushTfjs, type GpuDevice } from './device.ts';

export interface GpuCounters {
  dispatches: number;
  uploads_bytes: number;
  readback_bytes: number;
  /** device→host reads (a plan's step makes one) */
  readbacks: number;
  new_pipelines: number;
  new_bind_groups: number;
  new_buffers: number;
}

export function zeroCounters(): GpuCounters {
  return {
    dispatches: 0,
    uploads_bytes: 0,
    readback_bytes: 0,
    readbacks: 0,
    new_pipelines: 0,
    new_bind_groups: 0,
    new_buffers: 0,
  };
}

/** b − a, field by field. */
export function counterDiff(a: GpuCounters, b: GpuCounters): GpuCounters {
  const out = zeroCounters();
  for (const k of Object.keys(out) as (keyof GpuCounters)[]) out[k] = b[k] - a[k];
  return out;
}

/**
 * A WGSL program and the names of its bindings (group 0, bindings 0, 1, … in this order). Shapes
 * are not baked into the code: they travel in `dims`, a small uniform block bound as 'dims', so one
 * pipeline serves every model shape (lavapipe's LLVM takes seconds to a minute per pipeline).
 */
export interface Kernel {
  label: string;
  code: string;
  entry: string;
  bindings: readonly string[];
  /** the uniform block's words (u32 and f32 bits), when the kernel has a 'dims' binding */
  dims?: Uint32Array;
  /** override constants, if the module declares any */
  constants?: Record<string, number>;
}

/** A uniform struct of 4-byte fields (u32 or f32): its WGSL, and its words for given values. */
export class DimsLayout<F extends string> {
  constructor(readonly fields: readonly (readonly [F, 'u32' | 'f32'])[]) {}

  /** `struct Dims {…}` and `var<uniform> d: Dims` at `binding` */
  wgsl(binding: number): string {
    const n = this.fields.length;
    const pad = (4 - (n % 4)) % 4;
    const members = [
      ...this.fields.map(([f, t]) => `${f}: ${t}`),
      ...Array.from({ length: pad }, (_, i) => `pad${i}: u32`),
    ];
    return `struct Dims { ${members.join(', ')} }\n@group(0) @binding(${binding}) var<uniform> d: Dims;`;
  }

  pack(values: Record<F, number>): Uint32Array {
    const words = new Uint32Array(Math.ceil(this.fields.length / 4) * 4);
    const f = new Float32Array(words.buffer);
    this.fields.forEach(([name, ty], i) => {
      const v = values[name];
      if (typeof v !== 'number' || !Number.isFinite(v))
        throw new Error(`dims field ${name}: ${v} is not a finite number`);
      if (ty === 'u32') {
        if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`dims field ${name}: ${v} is not a u32`);
        words[i] = v;
      } else {
        if (v !== 0 && Math.abs(v) < 1.1754943508222875e-38) throw new Error(`dims field ${name}: ${v} is subnormal`);
        f[i] = v;
      }
    });
    return words;
  }
}

export const STORAGE = 0x0080; // GPUBufferUsage.STORAGE (the global is only defined once Dawn is loaded)
export const COPY_SRC = 0x0004;
export const COPY_DST = 0x0008;
export const MAP_READ = 0x0001;
export const UNIFORM = 0x0040;

/** Workgroups in 2-D when one dimension would pass the device's maximum. */
export function grid(groups: number, maxPerDim: number): [number, number] {
  if (groups <= maxPerDim) return [Math.max(1, groups), 1];
  const y = Math.ceil(groups / maxPerDim);
  return [Math.ceil(groups / y), y];
}

export class GpuRuntime {
  readonly device: GPUDevice;
  readonly counters: GpuCounters = zeroCounters();
  private readonly pipelines = new Map<string, Promise<GPUComputePipeline>>();
  private readonly ready = new Map<string, GPUComputePipeline>();

  constructor(readonly gpu: GpuDevice) {
    this.device = gpu.device;
  }

  /** A copy of the running totals. */
  snapshot(): GpuCounters {
    return { ...this.counters };
  }

  // -------------------------------------------------------------------------------------------
  // pipelines

  private key(k: Kernel): string {
    return `${k.entry}\u0000${JSON.stringify(k.constants ?? {})}\u0000${k.code}`;
  }

  /** The compute pipeline of a kernel: compiled once per device; a WGSL error is a ModelError naming the kernel. */
  async pipeline(k: Kernel): Promise<GPUComputePipeline> {
    const key = this.key(k);
    let p = this.pipelines.get(key);
    if (!p) {
      this.counters.new_pipelines++;
      p = this.compile(k);
      this.pipelines.set(key, p);
      p.then(
        (pl) => this.ready.set(key, pl),
        () => this.pipelines.delete(key),
      );
    }
    return p;
  }

  /** The pipeline of a kernel already compiled (a plan's step uses only these: no compile on the hot path). */
  compiled(k: Kernel): GPUComputePipeline {
    const p = this.ready.get(this.key(k));
    if (!p) throw new UsageError('E_GPU_PLAN', `kernel ${k.label}: its pipeline was not compiled before the step`);
    return p;
  }

  private async compile(k: Kernel): Promise<GPUComputePipeline> {
    const module = this.device.createShaderModule({ label: k.label, code: k.code });
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((m) => m.type === 'error');
    if (errors.length) {
      const lines = k.code.split('\n');
      const shown = errors
        .map((e) => `${e.lineNum}:${e.linePos} ${e.message}\n    ${lines[e.lineNum - 1] ?? ''}`)
        .join('\n');
      throw new ModelError('E_GPU_KERNEL', `WGSL kernel ${k.label} does not compile:\n${shown}`);
    }
    try {
      return await this.device.createComputePipelineAsync({
        label: k.label,
        layout: 'auto',
        compute: { module, entryPoint: k.entry, constants: k.constants },
      });
    } catch (err) {
      throw new ModelError(
        'E_GPU_KERNEL',
        `WGSL kernel ${k.label}: pipeline creation failed: ${(err as Error).message}`,
      );
    }
  }

  // -------------------------------------------------------------------------------------------
  // buffers

  /** Refuse a buffer the device cannot bind, naming it. */
  checkSize(label: string, bytes: number, binding = true): void {
    const lim = this.gpu.limits;
    const max = binding ? lim.maxStorageBufferBindingSize : lim.maxBufferSize;
    if (bytes > max) {
      throw new ModelError(
        'E_GPU_LIMIT',
        `${label}: ${bytes} bytes exceed this device's ${binding ? 'maxStorageBufferBindingSize' : 'maxBufferSize'} (${max} bytes on ${this.gpu.description})`,
      );
    }
  }

  /** A zero-filled storage buffer (size rounded up to 16 bytes, so vec4 views fit). */
  buffer(label: string, bytes: number, usage = STORAGE | COPY_SRC | COPY_DST): GPUBuffer {
    const size = Math.max(16, Math.ceil(bytes / 16) * 16);
    if (usage & STORAGE) this.checkSize(label, size);
    this.counters.new_buffers++;
    return this.device.createBuffer({ label, size, usage });
  }

  /** A storage buffer holding `data` (mapped at creation: counted as uploaded bytes). */
  upload(label: string, data: ArrayBufferView, usage = STORAGE | COPY_SRC | COPY_DST): GPUBuffer {
    const size = Math.max(16, Math.ceil(data.byteLength / 16) * 16);
    if (usage & STORAGE) this.checkSize(label, size);
    this.counters.new_buffers++;
    const buf = this.device.createBuffer({ label, size, usage, mappedAtCreation: true });
    new Uint8Array(buf.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    buf.unmap();
    this.counters.uploads_bytes += data.byteLength;
    return buf;
  }

  /** queue.writeBuffer, counted. */
  write(buffer: GPUBuffer, offset: number, data: ArrayBufferView): void {
    this.device.queue.writeBuffer(buffer, offset, data.buffer, data.byteOffset, data.byteLength);
    this.counters.uploads_bytes += data.byteLength;
  }

  /** The uniform buffer of a kernel's dims (the caller owns it). */
  dimsBuffer(k: Kernel): GPUBuffer {
    if (!k.dims) throw new UsageError('E_GPU_PLAN', `kernel ${k.label} has no dims`);
    return this.upload(`${k.label} dims`, k.dims, UNIFORM | COPY_DST);
  }

  /** A bind group of a kernel's bindings, by name (every binding must be given). */
  bindGroup(k: Kernel, pipeline: GPUComputePipeline, buffers: Record<string, GPUBuffer>): GPUBindGroup {
    const entries = k.bindings.map((name, binding) => {
      const buffer = buffers[name];
      if (!buffer) throw new UsageError('E_GPU_PLAN', `kernel ${k.label}: no buffer for binding '${name}'`);
      return { binding, resource: { buffer } };
    });
    this.counters.new_bind_groups++;
    return this.device.createBindGroup({ label: k.label, layout: pipeline.getBindGroupLayout(0), entries });
  }

  // -------------------------------------------------------------------------------------------
  // steps

  /** One command encoder with one compute pass; `finish` submits it. */
  begin(label: string): GpuStep {
    return new GpuStep(this, label);
  }

  /** Read `bytes` from `staging` (a MAP_READ buffer the step copied into); counted. */
  async readStaging(staging: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
    await staging.mapAsync(0x0001 /* GPUMapMode.READ */, 0, Math.ceil(bytes / 4) * 4);
    const out = staging.getMappedRange(0, Math.ceil(bytes / 4) * 4).slice(0, bytes);
    staging.unmap();
    this.counters.readback_bytes += bytes;
    this.counters.readbacks++;
    return out;
  }

  /** Read a whole storage buffer (tests and debugging; makes a staging buffer each time). */
  async readBuffer(src: GPUBuffer, bytes = src.size): Promise<ArrayBuffer> {
    const size = Math.ceil(bytes / 4) * 4;
    const staging = this.buffer(`${src.label}:read`, size, MAP_READ | COPY_DST);
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(src, 0, staging, 0, size);
    flushTfjs();
    this.device.queue.submit([enc.finish()]);
    const out = await this.readStaging(staging, bytes);
    staging.destroy();
    return out;
  }
}

/** One step's command encoder: dispatches in one compute pass, then copies, then submit. */
export class GpuStep {
  private readonly encoder: GPUCommandEncoder;
  private pass: GPUComputePassEncoder | null = null;

  constructor(
    private readonly rt: GpuRuntime,
    label: string,
  ) {
    this.encoder = rt.device.createCommandEncoder({ label });
  }

  dispatch(pipeline: GPUComputePipeline, bindGroup: GPUBindGroup, x: number, y = 1, z = 1): void {
    if (!this.pass) this.pass = this.encoder.beginComputePass();
    this.pass.setPipeline(pipeline);
    this.pass.setBindGroup(0, bindGroup);
    this.pass.dispatchWorkgroups(x, y, z);
    this.rt.counters.dispatches++;
  }

  private endPass(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
  }

  /** Zero a range of a buffer (a reset, not a dispatch). */
  clear(buffer: GPUBuffer, offset: number, size: number): void {
    this.endPass();
    this.encoder.clearBuffer(buffer, offset, size);
  }

  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, size: number): void {
    this.endPass();
    this.encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, size);
  }

  /** Submit the step's commands (after any tfjs-webgpu has recorded on the shared device). */
  finish(): void {
    this.endPass();
    flushTfjs();
    this.rt.device.queue.submit([this.encoder.finish()]);
  }
}
