/**
 * The CPU backend: tensors in one shared WebAssembly memory; float32 matrix products and attention
 * on WebAssembly SIMD kernels spread over worker threads; everything else as plain loops, which are
 * also the float64 reference every other backend is checked against.
 */
import { DTypeError, IndexError, ShapeError } from '../../errors.js';
import {
  bytesOf,
  countsOf,
  sizeOf,
  type Activation,
  type AdamWOptions,
  type AttentionSpec,
  type Backend,
  type DType,
  type ExpertGroups,
  type GroupedMatmulOptions,
  type MatmulOptions,
  type MemoryStats,
  type MoeRouteOptions,
  type MoeRouting,
  type ScoreOptions,
  type Tensor,
} from '../backend.js';
import { checkShapeValid, expectDtype, expectShape, expectSize, lastDim, layerNormShapes, live, rowsOf, sameFloat, sameSize } from '../check.js';
import { groupedMatmulComposed, tiedCrossEntropyComposed } from '../compose.js';
import { philoxNormal, philoxUniform } from '../philox.js';
import { attentionBackwardRef, attentionForwardRef, type AttnGeometry } from './attention.js';
import { gemmF32, gemmReference, type GemmProblem } from './gemm.js';
import { defaultThreads, KernelPool, kernelsUseFma } from './kernels.js';
import { gelu32, gelu64, geluGrad32, geluGrad64, silu, siluGrad } from './math.js';
import { LinearMemory } from './memory.js';
import { routeBackward, routeTokens } from './moe.js';
import { cpu, CpuTensor, type CpuArray, type FArray } from './tensor.js';

const RESERVED = 1 << 16; // the kernels' own static area (HEAP_BASE) lives below this

/** Options of {@link CpuBackend}. */
export interface CpuBackendOptions {
  /** Worker threads for large kernels, the caller included (default: MOE_DIFFUSEQ_THREADS or the core count). */
  threads?: number;
  /**
   * float32 attention kernels: `blocked` (default: blocks of query rows as small GEMMs; dilation > 1
   * uses the row kernels) or `rows` (one query row at a time: the slow twin, kept for checking).
   */
  attentionKernel?: 'blocked' | 'rows';
}

/** The CPU backend. */
export class CpuBackend implements Backend {
  readonly name = 'cpu';
  private readonly mem: LinearMemory;
  private readonly pool: KernelPool;
  private gemmWs = 0;
  private readonly gemmWsBytes: number;
  private scratch = 0;
  private scratchSize = 0;
  private closed = false;
  private readonly attnKernel: 'blocked' | 'rows';

  constructor(opts: CpuBackendOptions = {}) {
    this.attnKernel = opts.attentionKernel ?? 'blocked';
    this.mem = new LinearMemory(RESERVED);
    const threads = opts.threads ?? defaultThreads();
    this.pool = new KernelPool(this.mem, threads);
    if (this.pool.constant('HEAP_BASE') > RESERVED) throw new Error('kernel static data exceeds the reserved area');
    this.gemmWsBytes = Math.ceil(this.pool.constant('GEMM_WS_BYTES') / 64) * 64;
  }

  /** Threads the kernels use. */
  get threads(): number {
    return this.pool.threads;
  }

  supports(dtype: DType): boolean {
    return dtype !== 'bfloat16';
  }

  describe(): string {
    return `cpu (WebAssembly SIMD${kernelsUseFma() ? ' + relaxed FMA' : ''} kernels, ${this.pool.threads} thread${this.pool.threads > 1 ? 's' : ''})`;
  }

  // ---- memory -------------------------------------------------------------------------------
  private alloc(shape: readonly number[], dtype: DType): CpuTensor {
    if (this.closed) throw new Error('CpuBackend: used after close()');
    if (dtype === 'bfloat16') throw new DTypeError('alloc', 'bfloat16 tensors are the CUDA backend\'s (mixed precision); the CPU computes in float32 or float64');
    const size = checkShapeValid('alloc', shape);
    const bytes = size * bytesOf(dtype);
    const off = this.mem.alloc(bytes);
    const buf = this.mem.buffer;
    const data: CpuArray =
      dtype === 'float64' ? new Float64Array(buf, off, size) : dtype === 'int32' ? new Int32Array(buf, off, size) : new Float32Array(buf, off, size);
    return new CpuTensor([...shape], dtype, data, off, (o) => this.mem.release(o));
  }

  empty(shape: readonly number[], dtype: DType = 'float32'): Tensor {
    return this.alloc(shape, dtype);
  }
  zeros(shape: readonly number[], dtype: DType = 'float32'): Tensor {
    const t = this.alloc(shape, dtype);
    t.data.fill(0);
    return t;
  }
  fromArray(data: ArrayLike<number>, shape: readonly number[], dtype: DType = 'float32'): Tensor {
    const t = this.alloc(shape, dtype);
    if (data.length !== t.size) throw new ShapeError('fromArray', `${data.length} values for shape [${shape.join(', ')}] (${t.size} elements)`);
    this.write(t, data);
    return t;
  }
  toArray(t: Tensor): Float32Array | Float64Array | Int32Array {
    return cpu('toArray', t).data.slice();
  }
  readLater(ts: readonly Tensor[]): () => (Float32Array | Float64Array | Int32Array)[] {
    const copies = ts.map((t) => this.toArray(t)); // the work is done: its results are copied now
    return () => copies;
  }
  write(t: Tensor, data: ArrayLike<number>): void {
    const c = cpu('write', t);
    if (data.length !== c.size) throw new ShapeError('write', `${data.length} values for a tensor of ${c.size} elements`, [c.shape]);
    if (c.dtype === 'int32') {
      for (let i = 0; i < data.length; i++) {
        const v = data[i]!;
        if (!Number.isInteger(v) || v < -2147483648 || v > 2147483647) throw new ShapeError('write', `int32 tensor got non-integer ${v} at ${i}`);
        c.data[i] = v;
      }
    } else if (ArrayBuffer.isView(data)) c.data.set(data as unknown as ArrayLike<number>);
    else for (let i = 0; i < data.length; i++) c.data[i] = data[i]!;
  }
  view(t: Tensor, offset: number, shape: readonly number[]): Tensor {
    const c = cpu('view', t);
    const size = checkShapeValid('view', shape);
    if (!Number.isInteger(offset) || offset < 0 || offset + size > c.size) {
      throw new ShapeError('view', `elements [${offset}, ${offset + size}) outside a tensor of ${c.size}`, [c.shape, shape]);
    }
    const data = c.data.subarray(offset, offset + size) as CpuArray;
    return new CpuTensor([...shape], c.dtype, data, c.byteOffset + offset * bytesOf(c.dtype), null, c);
  }
  copy(dst: Tensor, src: Tensor): void {
    const d = cpu('copy', dst);
    const s = cpu('copy', src);
    sameSize('copy', d, s);
    if ((d.dtype === 'int32') !== (s.dtype === 'int32')) throw new ShapeError('copy', `cannot copy ${s.dtype} into ${d.dtype}`);
    d.data.set(s.data);
  }
  fill(t: Tensor, value: number): void {
    cpu('fill', t).data.fill(value);
  }
  memory(): MemoryStats {
    return { liveBytes: this.mem.liveBytes, peakBytes: this.mem.peakBytes, liveTensors: this.mem.liveAllocations };
  }
  resetPeak(): void {
    this.mem.resetPeak();
  }
  synchronize(): void {}
  close(): void {
    this.pool.close();
    this.closed = true;
  }

  /** Per-thread kernel workspace (kept for the backend's life; not counted as tensor memory). */
  private gemmWorkspace(): number {
    if (!this.gemmWs) this.gemmWs = this.mem.alloc(this.gemmWsBytes * this.pool.threads, true);
    return this.gemmWs;
  }
  /** Byte offset of a workspace of at least `bytes` (grown on demand, not counted). */
  private scratchBytesAt(bytes: number): number {
    if (this.scratchSize < bytes) {
      if (this.scratch) this.mem.release(this.scratch);
      this.scratchSize = Math.max(bytes, 4096);
      this.scratch = this.mem.alloc(this.scratchSize, true);
    }
    return this.scratch;
  }

  // ---- randomness ----------------------------------------------------------------------------
  randomNormal(out: Tensor, seed: number, offset: number, std = 1): void {
    const o = cpu('randomNormal', out);
    expectDtype('randomNormal', 'out', o, 'float32', 'float64');
    philoxNormal(o.data, seed, offset, std);
  }
  randomUniform(out: Tensor, seed: number, offset: number): void {
    const o = cpu('randomUniform', out);
    expectDtype('randomUniform', 'out', o, 'float32', 'float64');
    philoxUniform(o.data, seed, offset);
  }

  // ---- elementwise and reductions ------------------------------------------------------------
  axpby(out: Tensor, alpha: number, x: Tensor, beta = 0, y?: Tensor): void {
    const op = 'axpby';
    const o = cpu(op, out).data as FArray;
    const xs = cpu(op, x).data as FArray;
    sameFloat(op, out, x, y);
    sameSize(op, out, x, ...(y ? [y] : []));
    if (y) {
      const ys = cpu(op, y).data as FArray;
      for (let i = 0; i < o.length; i++) o[i] = alpha * xs[i]! + beta * ys[i]!;
    } else for (let i = 0; i < o.length; i++) o[i] = alpha * xs[i]!;
  }
  mul(out: Tensor, x: Tensor, y: Tensor): void {
    const op = 'mul';
    sameFloat(op, out, x, y);
    sameSize(op, out, x, y);
    const o = cpu(op, out).data;
    const a = cpu(op, x).data;
    const b = cpu(op, y).data;
    for (let i = 0; i < o.length; i++) o[i] = a[i]! * b[i]!;
  }
  addBroadcast(out: Tensor, x: Tensor, y: Tensor, dims: readonly [number, number, number], yShape: readonly [number, number, number]): void {
    const op = 'addBroadcast';
    sameFloat(op, out, x, y);
    const [P, Q, R] = dims;
    checkBroadcast(op, dims, yShape);
    expectSize(op, 'x', x, P * Q * R);
    expectSize(op, 'out', out, P * Q * R);
    expectSize(op, 'y', y, yShape[0] * yShape[1] * yShape[2]);
    const o = cpu(op, out).data;
    const a = cpu(op, x).data;
    const b = cpu(op, y).data;
    const qb = yShape[1] === 1 ? 0 : R;
    for (let p = 0; p < P; p++)
      for (let q = 0; q < Q; q++) {
        const xo = (p * Q + q) * R;
        const yo = (yShape[0] === 1 ? 0 : p) * (yShape[1] === 1 ? 1 : Q) * R + q * qb;
        for (let r = 0; r < R; r++) o[xo + r] = a[xo + r]! + b[yo + r]!;
      }
  }
  reduceBroadcast(dy: Tensor, dout: Tensor, dims: readonly [number, number, number], yShape: readonly [number, number, number], accumulate: boolean): void {
    const op = 'reduceBroadcast';
    sameFloat(op, dy, dout);
    const [P, Q, R] = dims;
    checkBroadcast(op, dims, yShape);
    expectSize(op, 'dout', dout, P * Q * R);
    expectSize(op, 'dy', dy, yShape[0] * yShape[1] * yShape[2]);
    const g = cpu(op, dy).data;
    const d = cpu(op, dout).data;
    if (!accumulate) g.fill(0);
    for (let p = 0; p < P; p++)
      for (let q = 0; q < Q; q++) {
        const xo = (p * Q + q) * R;
        const yo = (yShape[0] === 1 ? 0 : p) * (yShape[1] === 1 ? 1 : Q) * R + (yShape[1] === 1 ? 0 : q * R);
        for (let r = 0; r < R; r++) g[yo + r]! += d[xo + r]!;
      }
  }
  stridedCopy(dst: Tensor, src: Tensor, p: { count: number; length: number; srcOffset: number; srcStride: number; dstOffset: number; dstStride: number; accumulate?: boolean }): void {
    const op = 'stridedCopy';
    const d = cpu(op, dst);
    const s = cpu(op, src);
    if ((d.dtype === 'int32') !== (s.dtype === 'int32')) throw new ShapeError(op, `cannot copy ${s.dtype} into ${d.dtype}`);
    const { count, length } = p;
    if (count <= 0 || length <= 0) return;
    const srcEnd = p.srcOffset + (count - 1) * p.srcStride + length;
    const dstEnd = p.dstOffset + (count - 1) * p.dstStride + length;
    if (p.srcOffset < 0 || p.dstOffset < 0 || p.srcStride < 0 || p.dstStride < 0 || srcEnd > s.size || dstEnd > d.size) {
      throw new ShapeError(op, `block copy of ${count} x ${length} reaches past its operands (src ${s.size}, dst ${d.size} elements)`, [s.shape, d.shape]);
    }
    for (let c = 0; c < count; c++) {
      const so = p.srcOffset + c * p.srcStride;
      const dO = p.dstOffset + c * p.dstStride;
      if (p.accumulate) for (let i = 0; i < length; i++) d.data[dO + i]! += s.data[so + i]!;
      else d.data.set(s.data.subarray(so, so + length), dO);
    }
  }
  rowSquaredDistance(out: Tensor, a: Tensor, b?: Tensor): void {
    const op = 'rowSquaredDistance';
    sameFloat(op, out, a, b);
    if (b) sameSize(op, a, b);
    const C = lastDim(a);
    const R = rowsOf(a);
    expectSize(op, 'out', out, R);
    const o = cpu(op, out).data;
    const x = cpu(op, a).data;
    const y = b ? cpu(op, b).data : null;
    for (let r = 0; r < R; r++) {
      let s = 0;
      for (let c = 0; c < C; c++) {
        const v = y ? x[r * C + c]! - y[r * C + c]! : x[r * C + c]!;
        s += v * v;
      }
      o[r] = s;
    }
  }
  scaleRows(out: Tensor, x: Tensor, scale: Tensor, accumulate: boolean): void {
    const op = 'scaleRows';
    sameFloat(op, out, x, scale);
    sameSize(op, out, x);
    const C = lastDim(x);
    const R = rowsOf(x);
    expectSize(op, 'scale', scale, R);
    const o = cpu(op, out).data;
    const a = cpu(op, x).data;
    const s = cpu(op, scale).data;
    for (let r = 0; r < R; r++) {
      const f = s[r]!;
      if (accumulate) for (let c = 0; c < C; c++) o[r * C + c]! += f * a[r * C + c]!;
      else for (let c = 0; c < C; c++) o[r * C + c] = f * a[r * C + c]!;
    }
  }
  sum(x: Tensor): number {
    const d = cpu('sum', x).data;
    let s = 0;
    for (let i = 0; i < d.length; i++) s += d[i]!;
    return s;
  }
  addNormGradient(dx: Tensor, x: Tensor, sumSq: Tensor, coef: number): void {
    const op = 'addNormGradient';
    sameFloat(op, dx, x, sumSq);
    sameSize(op, dx, x);
    expectSize(op, 'sumSq', sumSq, 1);
    const ss = cpu(op, sumSq).data[0]!;
    if (!(ss > 0)) return;
    const r = coef / Math.sqrt(ss);
    const d = cpu(op, dx).data;
    const a = cpu(op, x).data;
    for (let i = 0; i < d.length; i++) d[i]! += r * a[i]!;
  }
  sumSquares(x: Tensor): number {
    const d = cpu('sumSquares', x).data;
    let s = 0;
    for (let i = 0; i < d.length; i++) s += d[i]! * d[i]!;
    return s;
  }

  // ---- matmul --------------------------------------------------------------------------------
  matmul(out: Tensor, a: Tensor, b: Tensor, opts: MatmulOptions = {}): void {
    const op = 'matmul';
    live(op, out, a, b, opts.bias, opts.gelu?.pre);
    const dtype = sameFloat(op, out, a, b, opts.bias, opts.gelu?.pre);
    if (a.shape.length < 2 || b.shape.length < 2) throw new ShapeError(op, 'operands must have rank >= 2', [a.shape, b.shape]);
    const transA = !!opts.transA;
    const transB = !!opts.transB;
    let M: number, K: number, N: number, Kb: number, batch: number;
    let sab = 0;
    let sbb = 0;
    let scb = 0;
    const bR = b.shape[b.shape.length - 2]!;
    const bC = b.shape[b.shape.length - 1]!;
    N = transB ? bR : bC;
    Kb = transB ? bC : bR;
    if (b.shape.length === 2) {
      // unbatched B (a weight): A's leading dims fold into its rows
      const aCols = lastDim(a);
      const aRows = a.size / Math.max(aCols, 1);
      M = transA ? aCols : aRows;
      K = transA ? aRows : aCols;
      batch = 1;
    } else {
      const lead = a.shape.slice(0, -2);
      const blead = b.shape.slice(0, -2);
      if (lead.length !== blead.length || lead.some((s, i) => s !== blead[i])) throw new ShapeError(op, 'batch dimensions differ', [a.shape, b.shape]);
      batch = sizeOf(lead);
      const aR = a.shape[a.shape.length - 2]!;
      const aC = a.shape[a.shape.length - 1]!;
      M = transA ? aC : aR;
      K = transA ? aR : aC;
      sab = M * K;
      sbb = N * Kb;
      scb = M * N;
    }
    if (K !== Kb) throw new ShapeError(op, `inner dimensions differ (${K} vs ${Kb})`, [a.shape, b.shape]);
    expectSize(op, 'out', out, batch * M * N);
    if (opts.bias) expectSize(op, 'bias', opts.bias, N);
    if (opts.gelu) expectSize(op, 'gelu.pre', opts.gelu.pre, batch * M * N);
    const p: GemmProblem = {
      M, N, K,
      aOff: 0, sam: transA ? 1 : K, sak: transA ? M : 1,
      bOff: 0, sbk: transB ? 1 : N, sbn: transB ? K : 1,
      cOff: 0, ldc: N,
      alpha: opts.alpha ?? 1, beta: opts.beta ?? 0,
      batch, sab, sbb, scb,
    };
    this.gemm(dtype, p, cpu(op, a), cpu(op, b), cpu(op, out));
    if (opts.bias || opts.gelu) this.biasAct(cpu(op, out), batch * M, N, opts.bias ? cpu(op, opts.bias) : null, opts.gelu ? cpu(op, opts.gelu.pre) : null, 0, 0);
  }

  private gemm(dtype: 'float32' | 'float64', p: GemmProblem, a: CpuTensor, b: CpuTensor, c: CpuTensor): void {
    if (dtype === 'float32') gemmF32(this.pool, p, a.byteOffset, b.byteOffset, c.byteOffset, this.gemmWorkspace(), this.gemmWsBytes);
    else gemmReference(p, a.data as FArray, b.data as FArray, c.data as FArray);
  }

  /** rows x N block of c starting at element cOff: += bias (at element biasOff); gelu with pre saved. */
  private biasAct(c: CpuTensor, rows: number, N: number, bias: CpuTensor | null, pre: CpuTensor | null, cOff: number, biasOff: number): void {
    if (rows === 0) return;
    if (c.dtype === 'float32') {
      const nth = rows * N >= 1 << 16 ? this.pool.threads : 1;
      this.pool.run('bias_act_f32', [c.byteOffset + cOff * 4, rows, N, bias ? bias.byteOffset + biasOff * 4 : 0, pre ? 1 : 0, pre ? pre.byteOffset + cOff * 4 : 0], nth);
      return;
    }
    const o = c.data as FArray;
    for (let i = 0; i < rows; i++) {
      const r = cOff + i * N;
      if (bias) for (let j = 0; j < N; j++) o[r + j]! += bias.data[biasOff + j]!;
      if (pre)
        for (let j = 0; j < N; j++) {
          pre.data[r + j] = o[r + j]!;
          o[r + j] = gelu64(o[r + j]!);
        }
    }
  }

  biasBackward(db: Tensor, dy: Tensor, accumulate: boolean): void {
    const op = 'biasBackward';
    sameFloat(op, db, dy);
    const N = db.size;
    if (dy.size % Math.max(N, 1) !== 0 || lastDim(dy) !== N) throw new ShapeError(op, `dy's last dimension must be ${N}`, [db.shape, dy.shape]);
    const g = cpu(op, db).data;
    const d = cpu(op, dy).data;
    const acc = new Float64Array(N);
    const rows = dy.size / N;
    for (let i = 0; i < rows; i++) for (let j = 0; j < N; j++) acc[j]! += d[i * N + j]!;
    for (let j = 0; j < N; j++) g[j] = (accumulate ? g[j]! : 0) + acc[j]!;
  }

  // ---- activations, softmax, layernorm --------------------------------------------------------
  activation(out: Tensor, x: Tensor, kind: Activation): void {
    const op = `activation(${kind})`;
    const dtype = sameFloat(op, out, x);
    sameSize(op, out, x);
    if (kind === 'gelu' && dtype === 'float32') {
      this.pool.run('gelu_f32', [cpu(op, x).byteOffset, cpu(op, out).byteOffset, x.size], x.size >= 1 << 15 ? this.pool.threads : 1);
      return;
    }
    const o = cpu(op, out).data;
    const a = cpu(op, x).data;
    const f = kind === 'tanh' ? Math.tanh : kind === 'silu' ? silu : dtype === 'float32' ? gelu32 : gelu64;
    for (let i = 0; i < o.length; i++) o[i] = f(a[i]!);
  }
  activationBackward(dx: Tensor, dy: Tensor, x: Tensor, kind: Activation, accumulate: boolean): void {
    const op = `activationBackward(${kind})`;
    const dtype = sameFloat(op, dx, dy, x);
    sameSize(op, dx, dy, x);
    if (kind === 'gelu' && dtype === 'float32') {
      this.pool.run('gelu_bwd_f32', [cpu(op, dx).byteOffset, cpu(op, dy).byteOffset, cpu(op, x).byteOffset, x.size, accumulate ? 1 : 0], x.size >= 1 << 15 ? this.pool.threads : 1);
      return;
    }
    const g = cpu(op, dx).data;
    const d = cpu(op, dy).data;
    const a = cpu(op, x).data;
    const f =
      kind === 'tanh'
        ? (v: number) => {
            const t = Math.tanh(v);
            return 1 - t * t;
          }
        : kind === 'silu'
          ? siluGrad
          : dtype === 'float32'
            ? geluGrad32
            : geluGrad64;
    if (accumulate) for (let i = 0; i < g.length; i++) g[i]! += f(a[i]!) * d[i]!;
    else for (let i = 0; i < g.length; i++) g[i] = f(a[i]!) * d[i]!;
  }
  softmax(out: Tensor, x: Tensor): void {
    const op = 'softmax';
    sameFloat(op, out, x);
    sameSize(op, out, x);
    const C = lastDim(x);
    const o = cpu(op, out).data;
    const a = cpu(op, x).data;
    for (let r = 0; r < rowsOf(x); r++) {
      let mx = -Infinity;
      for (let c = 0; c < C; c++) mx = Math.max(mx, a[r * C + c]!);
      let s = 0;
      for (let c = 0; c < C; c++) s += Math.exp(a[r * C + c]! - mx);
      for (let c = 0; c < C; c++) o[r * C + c] = Math.exp(a[r * C + c]! - mx) / s;
    }
  }
  softmaxBackward(dx: Tensor, dy: Tensor, y: Tensor): void {
    const op = 'softmaxBackward';
    sameFloat(op, dx, dy, y);
    sameSize(op, dx, dy, y);
    const C = lastDim(y);
    const g = cpu(op, dx).data;
    const d = cpu(op, dy).data;
    const p = cpu(op, y).data;
    for (let r = 0; r < rowsOf(y); r++) {
      let dot = 0;
      for (let c = 0; c < C; c++) dot += d[r * C + c]! * p[r * C + c]!;
      for (let c = 0; c < C; c++) g[r * C + c] = p[r * C + c]! * (d[r * C + c]! - dot);
    }
  }
  layerNorm(out: Tensor, mean: Tensor, rstd: Tensor, x: Tensor, weight: Tensor, bias: Tensor, eps: number): void {
    const op = 'layerNorm';
    sameFloat(op, out, mean, rstd, x, weight, bias);
    const { R, C } = layerNormShapes(op, out, mean, rstd, x, weight, bias);
    const o = cpu(op, out).data;
    const a = cpu(op, x).data;
    const w = cpu(op, weight).data;
    const b = cpu(op, bias).data;
    const mu = cpu(op, mean).data;
    const rs = cpu(op, rstd).data;
    for (let r = 0; r < R; r++) {
      const base = r * C;
      let m = 0;
      for (let c = 0; c < C; c++) m += a[base + c]!;
      m /= C;
      let v = 0;
      for (let c = 0; c < C; c++) {
        const t = a[base + c]! - m;
        v += t * t;
      }
      const s = 1 / Math.sqrt(v / C + eps);
      mu[r] = m;
      rs[r] = s;
      for (let c = 0; c < C; c++) o[base + c] = (a[base + c]! - m) * s * w[c]! + b[c]!;
    }
  }
  addLayerNorm(sum: Tensor, out: Tensor, mean: Tensor, rstd: Tensor, a: Tensor, b: Tensor, weight: Tensor, bias: Tensor, eps: number, bBias?: Tensor | null): void {
    // every shape checked before sum is written: a bad call changes nothing
    const op = 'addLayerNorm';
    sameFloat(op, sum, out, mean, rstd, a, b, weight, bias, bBias);
    sameSize(op, sum, a, b);
    const { R, C } = layerNormShapes(op, out, mean, rstd, a, weight, bias);
    if (bBias) {
      expectSize(op, 'bBias', bBias, C);
      if (sum === a && a !== b) throw new ShapeError(op, 'with bBias, sum may alias b but not a', [sum.shape]);
      this.addBroadcast(sum, b, bBias, [1, R, C], [1, 1, C]);
      this.axpby(sum, 1, a, 1, sum);
    } else {
      this.axpby(sum, 1, a, 1, b);
    }
    this.layerNorm(out, mean, rstd, sum, weight, bias, eps);
  }
  layerNormBackward(dx: Tensor, dweight: Tensor, dbias: Tensor, dy: Tensor, x: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor, accumulate: boolean): void {
    const op = 'layerNormBackward';
    sameFloat(op, dx, dweight, dbias, dy, x, weight, mean, rstd);
    sameSize(op, dx, dy);
    const { R, C } = layerNormShapes(op, dx, mean, rstd, x, dweight, dbias, ['dweight', 'dbias']);
    expectSize(op, 'weight', weight, C);
    const g = cpu(op, dx).data;
    const gw = cpu(op, dweight).data;
    const gb = cpu(op, dbias).data;
    const d = cpu(op, dy).data;
    const a = cpu(op, x).data;
    const w = cpu(op, weight).data;
    const mu = cpu(op, mean).data;
    const rs = cpu(op, rstd).data;
    for (let r = 0; r < R; r++) {
      const base = r * C;
      const m = mu[r]!;
      const s = rs[r]!;
      // dxhat = dy w; dx = s (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
      let m1 = 0;
      let m2 = 0;
      for (let c = 0; c < C; c++) {
        const xh = (a[base + c]! - m) * s;
        const dxh = d[base + c]! * w[c]!;
        m1 += dxh;
        m2 += dxh * xh;
        gw[c]! += d[base + c]! * xh;
        gb[c]! += d[base + c]!;
      }
      m1 /= C;
      m2 /= C;
      for (let c = 0; c < C; c++) {
        const xh = (a[base + c]! - m) * s;
        const v = s * (d[base + c]! * w[c]! - m1 - xh * m2);
        g[base + c] = accumulate ? g[base + c]! + v : v;
      }
    }
  }

  // ---- embedding, cross-entropy ---------------------------------------------------------------
  embedding(out: Tensor, table: Tensor, ids: Tensor): void {
    const op = 'embedding';
    sameFloat(op, out, table);
    expectDtype(op, 'ids', ids, 'int32');
    const [V, e] = matrixShape(op, 'table', table);
    expectSize(op, 'out', out, ids.size * e);
    const o = cpu(op, out).data;
    const t = cpu(op, table).data;
    const id = cpu(op, ids).data;
    for (let m = 0; m < id.length; m++) {
      const v = id[m]!;
      if (v < 0 || v >= V) throw new IndexError(op, `id ${v} at position ${m} is outside the vocabulary [0, ${V})`);
      o.set(t.subarray(v * e, v * e + e), m * e);
    }
  }
  embeddingBackward(dtable: Tensor, ids: Tensor, dout: Tensor): void {
    const op = 'embeddingBackward';
    sameFloat(op, dtable, dout);
    expectDtype(op, 'ids', ids, 'int32');
    const [V, e] = matrixShape(op, 'dtable', dtable);
    expectSize(op, 'dout', dout, ids.size * e);
    const g = cpu(op, dtable).data;
    const d = cpu(op, dout).data;
    const id = cpu(op, ids).data;
    for (let m = 0; m < id.length; m++) {
      const v = id[m]!;
      if (v < 0 || v >= V) throw new IndexError(op, `id ${v} at position ${m} is outside the vocabulary [0, ${V})`);
      for (let c = 0; c < e; c++) g[v * e + c]! += d[m * e + c]!;
    }
  }
  tiedCrossEntropy(loss: Tensor, dlogits: Tensor | null, x: Tensor, table: Tensor, targets: Tensor, weights: Tensor | null): void {
    tiedCrossEntropyComposed(this, loss, dlogits, x, table, targets, weights);
  }
  crossEntropy(loss: Tensor, dlogits: Tensor | null, logits: Tensor, targets: Tensor, weights: Tensor | null): void {
    const op = 'crossEntropy';
    sameFloat(op, loss, dlogits, logits, weights);
    expectDtype(op, 'targets', targets, 'int32');
    const V = lastDim(logits);
    const R = rowsOf(logits);
    expectSize(op, 'loss', loss, R);
    expectSize(op, 'targets', targets, R);
    if (weights) expectSize(op, 'weights', weights, R);
    if (dlogits) sameSize(op, dlogits, logits);
    const t = cpu(op, targets).data;
    for (let r = 0; r < R; r++) if (t[r]! < 0 || t[r]! >= V) throw new IndexError(op, `target ${t[r]} at row ${r} is outside [0, ${V})`);
    if (logits.dtype === 'float32') {
      const nth = R * V >= 1 << 16 ? this.pool.threads : 1;
      this.pool.run('xent_f32', [cpu(op, logits).byteOffset, cpu(op, targets).byteOffset, weights ? cpu(op, weights).byteOffset : 0, cpu(op, loss).byteOffset, dlogits ? cpu(op, dlogits).byteOffset : 0, R, V], nth);
      return;
    }
    const l = cpu(op, loss).data;
    const x = cpu(op, logits).data;
    const w = weights ? cpu(op, weights).data : null;
    const g = dlogits ? cpu(op, dlogits).data : null;
    for (let r = 0; r < R; r++) {
      const base = r * V;
      const y = t[r]!;
      if (y < 0 || y >= V) throw new IndexError(op, `target ${y} at row ${r} is outside [0, ${V})`);
      let mx = -Infinity;
      for (let c = 0; c < V; c++) mx = Math.max(mx, x[base + c]!);
      let s = 0;
      for (let c = 0; c < V; c++) s += Math.exp(x[base + c]! - mx);
      const lse = mx + Math.log(s);
      l[r] = lse - x[base + y]!;
      if (g) {
        const wr = w ? w[r]! : 1;
        for (let c = 0; c < V; c++) g[base + c] = wr * Math.exp(x[base + c]! - lse);
        g[base + y]! -= wr;
      }
    }
  }

  // ---- attention -----------------------------------------------------------------------------
  private geometry(op: string, qkv: Tensor, spec: AttentionSpec): AttnGeometry {
    if (qkv.shape.length !== 3 || qkv.shape[2]! % 3 !== 0) throw new ShapeError(op, 'qkv must be [B, S, 3d]', [qkv.shape]);
    const [B, S, d3] = qkv.shape as [number, number, number];
    const d = d3 / 3;
    const H = spec.heads;
    if (!Number.isInteger(H) || H < 1 || d % H !== 0) throw new ShapeError(op, `heads ${H} must divide the width ${d}`, [qkv.shape]);
    const G = spec.globalTokens;
    if (!Number.isInteger(G) || G < 0 || G > S) throw new ShapeError(op, `globalTokens ${G} must be in [0, S = ${S}]`, [qkv.shape]);
    if (spec.kind === 'sliding' && (!Number.isInteger(spec.window) || spec.window < 0 || !Number.isInteger(spec.dilation) || spec.dilation < 1)) {
      throw new ShapeError(op, `sliding attention needs window >= 0 and dilation >= 1 (got ${spec.window}, ${spec.dilation})`);
    }
    const dh = d / H;
    return { B, S, H, dh, G, window: spec.kind === 'full' ? -1 : spec.window, dilation: spec.kind === 'full' ? 1 : spec.dilation, scale: 1 / Math.sqrt(dh) };
  }
  private attnWorkspace(g: AttnGeometry, blocked: boolean): { base: number; per: number } {
    const bytes = blocked ? this.pool.call('attn_blk_ws_bytes', g.S) : g.S * 8 + 64;
    const per = Math.ceil(bytes / 64) * 64;
    return { base: this.scratchBytesAt(per * this.pool.threads), per };
  }
  /** Whether the blocked kernels serve this pattern (float32, dilation 1 or full). */
  private blocked(g: AttnGeometry): boolean {
    return this.attnKernel === 'blocked' && g.dilation === 1;
  }
  attention(out: Tensor, lse: Tensor, qkv: Tensor, spec: AttentionSpec): void {
    const op = 'attention';
    const dtype = sameFloat(op, out, lse, qkv);
    const g = this.geometry(op, qkv, spec);
    expectShape(op, 'out', out, [g.B, g.S, g.H * g.dh]);
    expectSize(op, 'lse', lse, g.B * g.H * g.S);
    const o = cpu(op, out);
    const l = cpu(op, lse);
    const q = cpu(op, qkv);
    if (dtype === 'float64') return attentionForwardRef(g, q.data as FArray, o.data as FArray, l.data as FArray);
    const blocked = this.blocked(g);
    const ws = this.attnWorkspace(g, blocked);
    const nth = g.B * g.H > 1 ? this.pool.threads : 1;
    if (blocked) this.pool.run('attn_fwd_blk_f32', [q.byteOffset, o.byteOffset, l.byteOffset, g.B, g.S, g.H, g.dh, g.G, g.window, g.scale, ws.base, ws.per], nth);
    else this.pool.run('attn_fwd_f32', [q.byteOffset, o.byteOffset, l.byteOffset, g.B, g.S, g.H, g.dh, g.G, g.window, g.dilation, g.scale, ws.base, ws.per], nth);
  }
  attentionBackward(dqkv: Tensor, dout: Tensor, qkv: Tensor, out: Tensor, lse: Tensor, spec: AttentionSpec): void {
    const op = 'attentionBackward';
    const dtype = sameFloat(op, dqkv, dout, qkv, out, lse);
    const g = this.geometry(op, qkv, spec);
    expectShape(op, 'out', out, [g.B, g.S, g.H * g.dh]);
    expectShape(op, 'dout', dout, [g.B, g.S, g.H * g.dh]);
    expectShape(op, 'dqkv', dqkv, qkv.shape);
    expectSize(op, 'lse', lse, g.B * g.H * g.S);
    const q = cpu(op, qkv);
    const o = cpu(op, out);
    const l = cpu(op, lse);
    const d = cpu(op, dout);
    const dq = cpu(op, dqkv);
    if (dtype === 'float64') return attentionBackwardRef(g, q.data as FArray, o.data as FArray, l.data as FArray, d.data as FArray, dq.data as FArray);
    const blocked = this.blocked(g);
    const ws = this.attnWorkspace(g, blocked);
    const nth = g.B * g.H > 1 ? this.pool.threads : 1;
    if (blocked) this.pool.run('attn_bwd_blk_f32', [q.byteOffset, o.byteOffset, l.byteOffset, d.byteOffset, dq.byteOffset, g.B, g.S, g.H, g.dh, g.G, g.window, g.scale, ws.base, ws.per], nth);
    else this.pool.run('attn_bwd_f32', [q.byteOffset, o.byteOffset, l.byteOffset, d.byteOffset, dq.byteOffset, g.B, g.S, g.H, g.dh, g.G, g.window, g.dilation, g.scale, ws.base, ws.per], nth);
  }

  // ---- dropout -------------------------------------------------------------------------------
  private dropoutMask(n: number, p: number, seed: number, offset: number): Float64Array {
    const u = new Float64Array(n);
    philoxUniform(u, seed, offset);
    const s = 1 / (1 - p);
    for (let i = 0; i < n; i++) u[i] = u[i]! >= p ? s : 0;
    return u;
  }
  dropout(out: Tensor, x: Tensor, p: number, seed: number, offset: number): void {
    const op = 'dropout';
    sameFloat(op, out, x);
    sameSize(op, out, x);
    if (!(p >= 0 && p < 1)) throw new ShapeError(op, `p must be in [0, 1), got ${p}`);
    const o = cpu(op, out).data;
    const a = cpu(op, x).data;
    if (p === 0) return void o.set(a);
    if (out.dtype === 'float32') {
      if (!Number.isSafeInteger(seed) || seed < 0 || !Number.isSafeInteger(offset) || offset < 0) throw new ShapeError(op, `seed and offset must be non-negative safe integers (got ${seed}, ${offset})`);
      const lo = seed % 4294967296;
      const hi = Math.floor(seed / 4294967296);
      this.pool.run('dropout_f32', [cpu(op, x).byteOffset, cpu(op, out).byteOffset, x.size, p, lo, hi, offset], x.size >= 1 << 15 ? this.pool.threads : 1);
      return;
    }
    const mask = this.dropoutMask(o.length, p, seed, offset);
    for (let i = 0; i < o.length; i++) o[i] = a[i]! * mask[i]!;
  }
  dropoutBackward(dx: Tensor, dy: Tensor, p: number, seed: number, offset: number): void {
    this.dropout(dx, dy, p, seed, offset);
  }

  // ---- mixture of experts --------------------------------------------------------------------
  moeRoute(logits: Tensor, opts: MoeRouteOptions): MoeRouting {
    const op = 'moeRoute';
    const dtype = sameFloat(op, logits, opts.selectionBias);
    const [M, E] = matrixShape(op, 'logits', logits);
    const k = opts.topK;
    if (opts.selectionBias) expectSize(op, 'selectionBias', opts.selectionBias, E);
    const r = routeTokens({
      logits: cpu(op, logits).data,
      M, E, k,
      seqLen: opts.seqLen,
      capacityFactor: opts.capacityFactor,
      selectionBias: opts.selectionBias ? cpu(op, opts.selectionBias).data : undefined,
    });
    const tensors = [
      this.fromArray(r.probs, [M, E], dtype),
      this.fromArray(r.lse, [M], dtype),
      this.fromArray(r.expertIndex, [M, k], 'int32'),
      this.fromArray(r.gates, [M, k], dtype),
      this.fromArray(r.gateNorm, [M], dtype),
      this.fromArray(r.order, [r.order.length], 'int32'),
      this.fromArray(r.slot, [M * k], 'int32'),
    ] as const;
    return {
      tokens: M, experts: E, topK: k,
      probs: tensors[0], lse: tensors[1], expertIndex: tensors[2], gates: tensors[3], gateNorm: tensors[4], order: tensors[5], slot: tensors[6],
      counts: r.counts, loadShare: r.loadShare, aux: r.aux, z: r.z,
      dispose: () => tensors.forEach((t) => t.dispose()),
    };
  }
  moeRouteBackward(dlogits: Tensor, routing: MoeRouting, dgates: Tensor, dAux: number, dZ: number): void {
    const op = 'moeRouteBackward';
    sameFloat(op, dlogits, dgates, routing.probs);
    const { tokens: M, experts: E, topK: k } = routing;
    expectSize(op, 'dlogits', dlogits, M * E);
    expectSize(op, 'dgates', dgates, M * k);
    routeBackward(
      M, E, k,
      cpu(op, routing.probs).data, cpu(op, routing.lse).data, cpu(op, routing.expertIndex).data, cpu(op, routing.gates).data,
      cpu(op, routing.gateNorm).data, routing.loadShare, cpu(op, dgates).data, dAux, dZ, cpu(op, dlogits).data,
    );
  }
  moePermute(xs: Tensor, x: Tensor, routing: MoeRouting): void {
    const op = 'moePermute';
    sameFloat(op, xs, x);
    const d = lastDim(x);
    const A = routing.order.size;
    expectSize(op, 'x', x, routing.tokens * d);
    expectSize(op, 'xs', xs, A * d);
    const out = cpu(op, xs).data;
    const src = cpu(op, x).data;
    const order = cpu(op, routing.order).data;
    for (let a = 0; a < A; a++) {
      const m = Math.floor(order[a]! / routing.topK);
      out.set(src.subarray(m * d, m * d + d), a * d);
    }
  }
  moePermuteBackward(dx: Tensor, dxs: Tensor, routing: MoeRouting, accumulate: boolean): void {
    const op = 'moePermuteBackward';
    sameFloat(op, dx, dxs);
    const d = lastDim(dx);
    const A = routing.order.size;
    expectSize(op, 'dx', dx, routing.tokens * d);
    expectSize(op, 'dxs', dxs, A * d);
    const g = cpu(op, dx).data;
    const s = cpu(op, dxs).data;
    const order = cpu(op, routing.order).data;
    if (!accumulate) g.fill(0);
    for (let a = 0; a < A; a++) {
      const m = Math.floor(order[a]! / routing.topK);
      for (let c = 0; c < d; c++) g[m * d + c]! += s[a * d + c]!;
    }
  }
  moeCombine(y: Tensor, ys: Tensor, routing: MoeRouting, accumulate: boolean): void {
    const op = 'moeCombine';
    sameFloat(op, y, ys, routing.gates);
    const d = lastDim(y);
    const { tokens: M, topK: k } = routing;
    expectSize(op, 'y', y, M * d);
    expectSize(op, 'ys', ys, routing.order.size * d);
    const o = cpu(op, y).data;
    const s = cpu(op, ys).data;
    const gates = cpu(op, routing.gates).data;
    const slot = cpu(op, routing.slot).data;
    for (let m = 0; m < M; m++) {
      if (!accumulate) o.fill(0, m * d, m * d + d);
      for (let r = 0; r < k; r++) {
        const a = slot[m * k + r]!;
        if (a < 0) continue;
        const g = gates[m * k + r]!;
        for (let c = 0; c < d; c++) o[m * d + c]! += g * s[a * d + c]!;
      }
    }
  }
  moeCombineBackward(dys: Tensor, dgates: Tensor, dy: Tensor, ys: Tensor, routing: MoeRouting): void {
    const op = 'moeCombineBackward';
    sameFloat(op, dys, dgates, dy, ys);
    const d = lastDim(dy);
    const { tokens: M, topK: k } = routing;
    expectSize(op, 'dy', dy, M * d);
    expectSize(op, 'ys', ys, routing.order.size * d);
    expectSize(op, 'dys', dys, routing.order.size * d);
    expectSize(op, 'dgates', dgates, M * k);
    const gd = cpu(op, dys).data;
    const gg = cpu(op, dgates).data;
    const dd = cpu(op, dy).data;
    const s = cpu(op, ys).data;
    const gates = cpu(op, routing.gates).data;
    const slot = cpu(op, routing.slot).data;
    for (let m = 0; m < M; m++)
      for (let r = 0; r < k; r++) {
        const a = slot[m * k + r]!;
        if (a < 0) {
          gg[m * k + r] = 0;
          continue;
        }
        const g = gates[m * k + r]!;
        let dot = 0;
        for (let c = 0; c < d; c++) {
          gd[a * d + c] = g * dd[m * d + c]!;
          dot += dd[m * d + c]! * s[a * d + c]!;
        }
        gg[m * k + r] = dot;
      }
  }
  groupedMatmul(out: Tensor, xs: Tensor, weight: Tensor, bias: Tensor | null, groups: ExpertGroups, opts: GroupedMatmulOptions = {}): void {
    if (opts.gather || (opts.gelu && !opts.gelu.pre)) {
      groupedMatmulComposed(this, (o, x, w, b, g, gelu) => this.groupedMatmul(o, x, w, b, g, gelu ? { gelu } : {}), out, xs, weight, bias, groups, opts);
      return;
    }
    const op = 'groupedMatmul';
    const counts = countsOf(groups);
    const dtype = sameFloat(op, out, xs, weight, bias, opts.gelu?.pre);
    const [E, N, K] = groupedShape(op, weight, counts);
    const A = counts.reduce((a, b) => a + b, 0);
    expectSize(op, 'xs', xs, A * K);
    expectSize(op, 'out', out, A * N);
    if (bias) expectSize(op, 'bias', bias, E * N);
    const gp = opts.gelu?.pre ?? null;
    if (gp) expectSize(op, 'gelu.pre', gp, A * N);
    const x = cpu(op, xs);
    const w = cpu(op, weight);
    const o = cpu(op, out);
    const b = bias ? cpu(op, bias) : null;
    const pre = gp ? cpu(op, gp) : null;
    let row = 0;
    for (let e = 0; e < E; e++) {
      const n = counts[e]!;
      if (n > 0) {
        // out[rows] = xs[rows] W[e]^T: W[e] is [N, K], so B(k, j) = W[e][j, k]
        this.gemm(dtype, { M: n, N, K, aOff: row * K, sam: K, sak: 1, bOff: e * N * K, sbk: 1, sbn: K, cOff: row * N, ldc: N, alpha: 1, beta: 0, batch: 1, sab: 0, sbb: 0, scb: 0 }, x, w, o);
        if (b || pre) this.biasAct(o, n, N, b, pre, row * N, e * N);
      }
      row += n;
    }
  }
  groupedMatmulBackward(dxs: Tensor | null, dweight: Tensor, dbias: Tensor | null, dout: Tensor, xs: Tensor, weight: Tensor, groups: ExpertGroups): void {
    const op = 'groupedMatmulBackward';
    const counts = countsOf(groups);
    const dtype = sameFloat(op, dxs, dweight, dbias, dout, xs, weight);
    const [E, N, K] = groupedShape(op, weight, counts);
    const A = counts.reduce((a, b) => a + b, 0);
    expectSize(op, 'dout', dout, A * N);
    expectSize(op, 'xs', xs, A * K);
    if (dxs) expectSize(op, 'dxs', dxs, A * K);
    expectSize(op, 'dweight', dweight, E * N * K);
    if (dbias) expectSize(op, 'dbias', dbias, E * N);
    const g = cpu(op, dout);
    const x = cpu(op, xs);
    const w = cpu(op, weight);
    const gw = cpu(op, dweight);
    const gx = dxs ? cpu(op, dxs) : null;
    const gb = dbias ? (cpu(op, dbias).data as FArray) : null;
    let row = 0;
    for (let e = 0; e < E; e++) {
      const n = counts[e]!;
      if (n > 0) {
        // dxs[rows] = dout[rows] W[e] ([n, N] x [N, K])
        if (gx) this.gemm(dtype, { M: n, N: K, K: N, aOff: row * N, sam: N, sak: 1, bOff: e * N * K, sbk: K, sbn: 1, cOff: row * K, ldc: K, alpha: 1, beta: 0, batch: 1, sab: 0, sbb: 0, scb: 0 }, g, w, gx);
        // dW[e] += dout[rows]^T xs[rows] ([N, n] x [n, K])
        this.gemm(dtype, { M: N, N: K, K: n, aOff: row * N, sam: 1, sak: N, bOff: row * K, sbk: K, sbn: 1, cOff: e * N * K, ldc: K, alpha: 1, beta: 1, batch: 1, sab: 0, sbb: 0, scb: 0 }, g, x, gw);
        if (gb) for (let i = 0; i < n; i++) for (let j = 0; j < N; j++) gb[e * N + j]! += g.data[(row + i) * N + j]!;
      } else if (gx === null) {
        /* nothing routed to this expert: its gradient stays as it is */
      }
      row += n;
    }
  }

  // ---- diffusion -----------------------------------------------------------------------------
  qSample(xt: Tensor, z0: Tensor, eps: Tensor, m: Tensor | null, sa: Tensor, sb: Tensor, inputMask: Tensor, replaceMask: Tensor): void {
    const op = 'qSample';
    sameFloat(op, xt, z0, eps, m, sa, sb);
    sameSize(op, xt, z0, eps);
    expectDtype(op, 'inputMask', inputMask, 'int32');
    expectDtype(op, 'replaceMask', replaceMask, 'int32');
    const B = sa.size;
    expectSize(op, 'sb', sb, B);
    const BN = inputMask.size;
    expectSize(op, 'replaceMask', replaceMask, BN);
    if (BN % B !== 0 || xt.size % BN !== 0) throw new ShapeError(op, 'masks must be [B, N] and x [B, N, e]', [xt.shape, inputMask.shape, sa.shape]);
    const e = xt.size / BN;
    if (m) expectSize(op, 'm', m, e);
    const N = BN / B;
    const o = cpu(op, xt).data;
    const z = cpu(op, z0).data;
    const n = cpu(op, eps).data;
    const mm = m ? cpu(op, m).data : null;
    const a = cpu(op, sa).data;
    const s = cpu(op, sb).data;
    const im = cpu(op, inputMask).data;
    const rm = cpu(op, replaceMask).data;
    for (let i = 0; i < BN; i++) {
      const b = Math.floor(i / N);
      const base = i * e;
      if (!im[i]) o.set(z.subarray(base, base + e), base);
      else if (rm[i] && mm) o.set(mm, base);
      else {
        const ab = a[b]!;
        const nb = s[b]!;
        for (let c = 0; c < e; c++) {
          const mc = mm ? mm[c]! : 0;
          o[base + c] = ab * (z[base + c]! - mc) + nb * n[base + c]! + mc;
        }
      }
    }
  }
  qSampleBackward(dz0: Tensor, dm: Tensor | null, dxt: Tensor, sa: Tensor, inputMask: Tensor, replaceMask: Tensor): void {
    const op = 'qSampleBackward';
    sameFloat(op, dz0, dm, dxt, sa);
    sameSize(op, dz0, dxt);
    expectDtype(op, 'inputMask', inputMask, 'int32');
    expectDtype(op, 'replaceMask', replaceMask, 'int32');
    const B = sa.size;
    const BN = inputMask.size;
    expectSize(op, 'replaceMask', replaceMask, BN);
    if (BN % B !== 0 || dxt.size % BN !== 0) throw new ShapeError(op, 'masks must be [B, N] and x [B, N, e]', [dxt.shape, inputMask.shape, sa.shape]);
    const e = dxt.size / BN;
    if (dm) expectSize(op, 'dm', dm, e);
    const N = BN / B;
    const gz = cpu(op, dz0).data;
    const gm = dm ? cpu(op, dm).data : null;
    const d = cpu(op, dxt).data;
    const a = cpu(op, sa).data;
    const im = cpu(op, inputMask).data;
    const rm = cpu(op, replaceMask).data;
    for (let i = 0; i < BN; i++) {
      const base = i * e;
      if (!im[i]) for (let c = 0; c < e; c++) gz[base + c]! += d[base + c]!;
      else if (rm[i] && gm) for (let c = 0; c < e; c++) gm[c]! += d[base + c]!;
      else {
        const ab = a[Math.floor(i / N)]!;
        for (let c = 0; c < e; c++) {
          gz[base + c]! += ab * d[base + c]!;
          if (gm) gm[c]! += (1 - ab) * d[base + c]!;
        }
      }
    }
  }
  /** `opts.precision` is ignored: the CPU computes float32 products always. */
  nearestRows(out: Tensor, x: Tensor, table: Tensor, _opts?: ScoreOptions): void {
    // ||x - t||^2 = ||x||^2 - 2 x.t + ||t||^2: argmin over v of ||t_v||^2 - 2 x.t_v
    this.scoreArg('nearestRows', out, x, table, true);
  }
  argmaxDot(out: Tensor, x: Tensor, table: Tensor, _opts?: ScoreOptions): void {
    this.scoreArg('argmaxDot', out, x, table, false);
  }
  /** Chunked argmax over v of x.t_v (- ||t_v||^2 / 2 when nearest): never materialises [M, V]. */
  private scoreArg(op: string, out: Tensor, x: Tensor, table: Tensor, nearest: boolean): void {
    const dtype = sameFloat(op, x, table);
    expectDtype(op, 'out', out, 'int32');
    const [V, e] = matrixShape(op, 'table', table);
    if (lastDim(x) !== e) throw new ShapeError(op, `x rows must have ${e} elements`, [x.shape, table.shape]);
    const M = rowsOf(x);
    expectSize(op, 'out', out, M);
    const o = cpu(op, out).data;
    const tb = cpu(op, table);
    const xx = cpu(op, x);
    const half = new Float64Array(V);
    if (nearest) for (let v = 0; v < V; v++) {
      let s = 0;
      for (let c = 0; c < e; c++) s += tb.data[v * e + c]! ** 2;
      half[v] = s / 2;
    }
    const chunk = Math.max(1, Math.min(M, Math.floor((1 << 22) / Math.max(V, 1))));
    const scores = dtype === 'float32' ? this.alloc([chunk * V], 'float32') : this.alloc([chunk * V], 'float64');
    try {
      for (let m0 = 0; m0 < M; m0 += chunk) {
        const n = Math.min(chunk, M - m0);
        this.gemm(dtype, { M: n, N: V, K: e, aOff: m0 * e, sam: e, sak: 1, bOff: 0, sbk: 1, sbn: e, cOff: 0, ldc: V, alpha: 1, beta: 0, batch: 1, sab: 0, sbb: 0, scb: 0 }, xx, tb, scores);
        for (let i = 0; i < n; i++) {
          let best = 0;
          let bestS = -Infinity;
          for (let v = 0; v < V; v++) {
            const s = scores.data[i * V + v]! - half[v]!;
            if (s > bestS) {
              bestS = s;
              best = v;
            }
          }
          o[m0 + i] = best;
        }
      }
    } finally {
      scores.dispose();
    }
  }

  // ---- optimiser -----------------------------------------------------------------------------
  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, o: AdamWOptions): void {
    const op = 'adamw';
    sameFloat(op, param, grad, m, v);
    sameSize(op, param, grad, m, v);
    const p = cpu(op, param).data;
    const g = cpu(op, grad).data;
    const mm = cpu(op, m).data;
    const vv = cpu(op, v).data;
    const bc1 = 1 - o.beta1 ** o.step;
    const bc2 = 1 - o.beta2 ** o.step;
    const decay = 1 - o.lr * o.weightDecay;
    for (let i = 0; i < p.length; i++) {
      const gi = g[i]!;
      const mi = o.beta1 * mm[i]! + (1 - o.beta1) * gi;
      const vi = o.beta2 * vv[i]! + (1 - o.beta2) * gi * gi;
      mm[i] = mi;
      vv[i] = vi;
      p[i] = p[i]! * decay - (o.lr * (mi / bc1)) / (Math.sqrt(vi / bc2) + o.eps);
    }
  }
}

function matrixShape(op: string, name: string, t: Tensor): [number, number] {
  if (t.shape.length !== 2) throw new ShapeError(op, `${name} must be a matrix`, [t.shape]);
  return [t.shape[0]!, t.shape[1]!];
}

function groupedShape(op: string, weight: Tensor, counts: readonly number[]): [number, number, number] {
  if (weight.shape.length !== 3) throw new ShapeError(op, 'weight must be [E, N, K]', [weight.shape]);
  const [E, N, K] = weight.shape as [number, number, number];
  if (counts.length !== E || counts.some((c) => !Number.isInteger(c) || c < 0)) throw new ShapeError(op, `counts must be ${E} non-negative integers`, [weight.shape]);
  return [E, N, K];
}

function checkBroadcast(op: string, dims: readonly number[], y: readonly number[]): void {
  if (dims.length !== 3 || y.length !== 3 || y[2] !== dims[2] || (y[0] !== 1 && y[0] !== dims[0]) || (y[1] !== 1 && y[1] !== dims[1])) {
    throw new ShapeError(op, `cannot broadcast [${y.join(', ')}] over [${dims.join(', ')}]`);
  }
}
