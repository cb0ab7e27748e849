/**
 * The CUDA backend: the Backend contract (src/backend/backend.ts) on an NVIDIA GPU, driven from
 * TypeScript through koffi. Host code here; kernels in ./kernels/*.cu, compiled by NVRTC for the
 * device at first use (./nvrtc.ts); matrix products by cuBLAS (./cublas.ts).
 *
 * - float32 and bfloat16 tensors (the activations of mixed-precision runs: the ops the denoiser uses
 *   on activations accept either and may mix them with float32 parameters; the rest are float32
 *   only and refuse bfloat16 with a DTypeError); int32 for ids, masks and indices. float64 is the CPU
 *   backend's (gradient checks). A matrix product with any bfloat16 operand or output runs in
 *   bfloat16 on the tensor cores (float32 operands are rounded on the fly) with float32
 *   accumulation; CudaBackendOptions.matmul makes every product do so.
 * - All work goes to one stream in issue order; `toArray` / `write` are synchronous copies, ordered
 *   with that stream. A kernel fault surfaces at the next synchronising call; set
 *   MOE_DIFFUSEQ_CUDA_SYNC=1 to synchronise after every launch and name the kernel that failed.
 * - Argument checks are the CPU backend's (src/backend/check.ts and the same shape rules), so a
 *   mistake throws the same ShapeError / DTypeError / IndexError on either backend. Id and target
 *   range checks read the ids back to the host (a small synchronous copy).
 * - Every op runs on the GPU; nothing falls back to the CPU. moeRoute copies back only what the host
 *   must know: the kept assignments per expert (the grouped matmul's offsets, the order's size) and
 *   the balance / z-loss sums (E + 1 numbers per block of tokens).
 * - Memory comes from a caching allocator (./allocator.ts); `memory()` counts tensor bytes as the
 *   CPU backend does, `allocatorStats()` the device memory reserved.
 */
import { DTypeError, DeviceError, IndexError, ShapeError } from '../../errors.js';
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
  type Replayable,
  type PreparedTable,
  type ScoreOptions,
  type Tensor,
} from '../backend.js';
import { fromBf16Bits, toBf16Bits } from '../bf16.js';
import { checkShapeValid, expectDtype, expectShape, expectSize, floats, lastDim, layerNormShapes, live, rowsOf, sameFloat, sameSize } from '../check.js';
import { groupedMatmulComposed, tiedCrossEntropyComposed, tiedShapes } from '../compose.js';
import { checkRoute, expertCapacity } from '../cpu/moe.js';
import { CachingAllocator, type AllocatorStats } from './allocator.js';
import { Cublas, cublasLibrary, type RowMajorGemm } from './cublas.js';
import { CublasLt } from './cublaslt.js';
import { CU_DEVICE_ATTRIBUTE, CU_FUNC_ATTRIBUTE, CudaError, Driver } from './driver.js';
import { IntRanges, rangeOf } from './int-ranges.js';
import { koffi } from './libs.js';
import { kernelSource, Nvrtc } from './nvrtc.js';

/** Options of {@link CudaBackend}. */
export interface CudaBackendOptions {
  /** Device ordinal (default 0). */
  device?: number;
  /** Synchronise after every kernel launch (default: MOE_DIFFUSEQ_CUDA_SYNC=1). */
  syncEachLaunch?: boolean;
  /**
   * Kernel-level profile: when given, every kernel launch and cuBLAS call is synchronised and its
   * wall time (launch included) added to this map under the kernel's name (GEMMs under their shape).
   */
  launchTimes?: Map<string, [ms: number, calls: number]>;
  /**
   * Operand precision of the matrix products (matmul, groupedMatmul and their backward, the
   * nearest-row search): `float32` (default, matches the CPU to float32 rounding) or `bfloat16`
   * (operands rounded to bf16 on the fly, float32 accumulation and outputs; tensors stay float32).
   * Default: MOE_DIFFUSEQ_MATMUL=bf16 selects bfloat16.
   */
  matmul?: 'float32' | 'bfloat16';
  /**
   * Attention kernels: `mma` (bfloat16 activations with head sizes up to 64 run FlashAttention-2
   * tiles on the tensor cores with mma.sync, everything else the `tiled` kernels), `wgmma` (as mma,
   * but on Hopper's warpgroup instructions where the head size is a multiple of 8; sm_90 only), `auto` (the default: wgmma where the card has it, else mma), `tiled`
   * (FlashAttention-style tiles on float32 CUDA cores, head sizes up to 128 where the card's shared
   * memory allows; the slow twin of `mma`) or `rows` (one warp per query row, float32 only: the
   * slow twin of `tiled`). MOE_DIFFUSEQ_ATTENTION=wgmma, mma, tiled or rows selects one.
   */
  attention?: AttentionKernels;
  /**
   * The MoE's grouped products on bf16 activations: `cublas` (one cuBLAS call per expert, see
   * expertChunks), `mma` (grouped_gemm.cu: every expert in one launch on the tensor cores with
   * mma.sync, for the forward with its bias + GELU, the input gradient, and the weight + bias
   * gradient), `wgmma` (as mma, but every one of them by grouped_wgmma.cu: Hopper's warpgroup
   * instructions, sm_90 only) or `auto` (the default): the forward by wgmma where the card has it,
   * else mma up to GROUPED_MMA_ROWS rows; the backward by mma up to GROUPED_MMA_ROWS rows, where one
   * launch and no read-back of the experts' counts win, cuBLAS above (mma.sync runs at about 240
   * TFLOP/s on an H200, cuBLAS at 400-550; the wgmma backward measured slower than cuBLAS in a base
   * step, see grouped_wgmma_tn_bf16). MOE_DIFFUSEQ_GROUPED=mma, wgmma or cublas forces one.
   * `auto` and `wgmma` also score the vocabulary of a bf16x3 nearestRows / argmaxDot with wgmma
   * (the product and its row argmax in one kernel); `mma` and `cublas` score it through cuBLAS.
   */
  grouped?: 'cublas' | 'mma' | 'wgmma' | 'auto';
}

/** The attention kernel families of the CUDA backend (see CudaBackendOptions.attention). */
export type AttentionKernels = 'auto' | 'wgmma' | 'mma' | 'tiled' | 'rows';

/** A tensor in device memory: a device address (a view is its parent's address plus an offset). */
export class CudaTensor implements Tensor {
  readonly size: number;
  private _disposed = false;
  constructor(
    readonly shape: readonly number[],
    readonly dtype: DType,
    /** Device address of element 0 (0 for an empty tensor). */
    readonly ptr: number,
    private readonly release: (() => void) | null,
    private readonly parent: CudaTensor | null = null,
  ) {
    this.size = sizeOf(shape);
  }
  get isView(): boolean {
    return this.parent !== null;
  }
  /** The allocation this tensor is (a view's parent's, transitively). */
  get root(): CudaTensor {
    return this.parent ? this.parent.root : this;
  }
  get disposed(): boolean {
    return this._disposed || (this.parent !== null && this.parent.disposed);
  }
  dispose(): void {
    if (this._disposed) return;
    this._disposed = true;
    this.release?.();
  }
}

/** Whether a tensor covers all of its allocation. */
const isWhole = (t: CudaTensor): boolean => t.ptr === t.root.ptr && t.size === t.root.size;

/** Narrows a Tensor to a live CudaTensor (the CUDA backend only accepts its own tensors). */
function cu(op: string, t: Tensor): CudaTensor {
  if (!(t instanceof CudaTensor)) throw new ShapeError(op, 'tensor belongs to another backend');
  if (t.disposed) throw new ShapeError(op, `tensor [${t.shape.join(', ')}] was already disposed`);
  return t;
}

/** Which source file holds each kernel (compiled together, on first use of any of them). */
const KERNEL_FILES: Record<string, readonly string[]> = {
  'elementwise.cu': [
    'axpby_f32', 'mul_f32', 'add_broadcast_f32', 'add_broadcast_bf16x8', 'strided_copy_bf16x8', 'activation_bf16x8', 'activation_backward_bf16x8', 'gelu_table_bf16', 'gelu_grad_table_f32', 'reduce_broadcast_f32', 'strided_copy_f32', 'strided_copy_i32', 'strided_reduce_f32',
    'strided_reduce_i32', 'scale_rows_f32', 'add_norm_grad_f32', 'activation_f32', 'activation_backward_f32', 'bias_act_f32', 'scale_f32', 'convert_float', 'convert_float_x4', 'axpby_x4', 'bias_act_bf16x2', 'gelu_backward_bf16x2',
    'gelu_bf16x2', 'bias_act_bf16x8', 'gelu_bf16x8', 'gelu_backward_bf16x8',
  ],
  'random.cu': ['random_uniform_f32', 'random_normal_f32', 'dropout_f32'],
  'diffusion.cu': ['qsample_f32', 'qsample_backward_dz_f32', 'qsample_backward_dm_partial', 'adamw_f32', 'adamw_x4'],
  'reduce.cu': [
    'row_sq_dist_f32', 'sum_partials', 'col_sums_partial_f32', 'col_sums_partial_x2', 'col_sums_partial_bf16x8', 'col_sums_finish_f32', 'col_sums_segments_partial', 'col_sums_segments_bf16x8', 'col_sums_segments_finish', 'softmax_f32', 'softmax_backward_f32', 'layernorm_f32',
    'layernorm_backward_dx_f32', 'cross_entropy_f32', 'cross_entropy_rows256_f32', 'cross_entropy_rows512_f32', 'cross_entropy_rows1024_f32', 'half_sq_norms_f32', 'row_argmax_f32', 'split_bf16x3_f32', 'layernorm_bf16_warp', 'layernorm_backward_dx_bf16_warp', 'layernorm_bf16_vec', 'layernorm_bf16_vec1', 'layernorm_bf16_vec2', 'layernorm_bf16_vec3', 'layernorm_bf16_vec4', 'layernorm_backward_dx_bf16_vec',
    'layernorm_backward_sums_bf16_vec1', 'layernorm_backward_sums_bf16_vec2', 'layernorm_backward_sums_bf16_vec3', 'layernorm_backward_sums_bf16_vec4',
  ],
  'embedding.cu': ['embedding_f32', 'embedding_backward_f32'],
  'moe.cu': ['moe_route_topk_f32', 'moe_route_stats', 'moe_route_lanes_f32', 'moe_route_capacity', 'moe_order_count', 'moe_order_scan', 'moe_order_place', 'moe_order_small', 'moe_permute_f32', 'moe_permute_backward_f32', 'moe_combine_f32', 'moe_combine_backward_f32', 'moe_route_backward_f32', 'moe_permute_bf16v',
    'moe_permute_backward_bf16v', 'moe_combine_bf16v', 'moe_combine_backward_bf16v'],
  'attention.cu': ['attn_fwd_f32', 'attn_bwd_f32'],
  'attention_tiled.cu': [
    'attn_bwd_dot_f32', 'attn_bwd_dot_bf16x8', 'attn_fwd_tiled64_f32', 'attn_bwd_dq_tiled64_f32', 'attn_bwd_dkdv_tiled64_f32', 'attn_fwd_tiled128_f32', 'attn_bwd_dq_tiled128_f32',
    'attn_bwd_dkdv_tiled128_f32',
  ],
  'attention_mma.cu': ['attn_fwd_mma64', 'attn_fwd_wgmma', 'attn_fwd_combine', 'attn_bwd_combine', 'attn_bwd_dq_mma64', 'attn_bwd_dkdv_mma64', 'attn_bwd_dq_wgmma', 'attn_bwd_dkdv_wgmma'],
  'grouped_gemm.cu': ['grouped_gemm_nt_bf16', 'grouped_gemm_nn_bf16', 'grouped_gemm_tn_bf16'],
  'grouped_wgmma.cu': ['grouped_wgmma_nt_bf16', 'grouped_wgmma_nn_bf16', 'grouped_wgmma_tn_bf16', 'grouped_wgmma64_nt_bf16', 'grouped_wgmma256_nt_bf16', 'grouped_tma256_nt_bf16', 'grouped_tma256p_nt_bf16', 'score_argmax_wgmma', 'score_argmax_tma', 'score_argmax_finish', 'xe_tied_stats', 'xe_tied_finish', 'xe_tied_grad'],
};
/**
 * Kernel files that use sm_90a's architecture-specific instructions (wgmma): compiled for sm_90a on
 * sm_90 cards. grouped_wgmma.cu is loaded only there; attention_mma.cu elsewhere too, built for the
 * card without its wgmma kernel (guarded by __CUDA_ARCH_FEAT_SM90_ALL).
 */
const SM90A_FILES = new Set(['grouped_wgmma.cu', 'attention_mma.cu']);
const FILE_OF = new Map<string, string>(Object.entries(KERNEL_FILES).flatMap(([f, ks]) => ks.map((k) => [k, f] as const)));

/** A kernel argument: its C type and value (device addresses are `ptr`). */
/**
 * A kernel argument: its C type and value (device addresses are `ptr`); `tmap`: a 128-byte tensor map
 * passed by value, the value its slot in the backend's tensor-map memory (Driver.tensorMapBf16 wrote it).
 */
type Arg = readonly ['ptr' | 'i32' | 'u32' | 'i64' | 'u64' | 'f32' | 'f64' | 'tmap', number];
const P = (t: CudaTensor | null): Arg => ['ptr', t ? t.ptr : 0];
const A = (addr: number): Arg => ['ptr', addr];
const I = (v: number): Arg => ['i32', v];
const L = (v: number): Arg => ['i64', v];
const U = (v: number): Arg => ['u32', v];
const UL = (v: number): Arg => ['u64', v];
const F = (v: number): Arg => ['f32', v];
const D = (v: number): Arg => ['f64', v];
const B = (v: boolean): Arg => ['i32', v ? 1 : 0];
/** The kernels' `bf` mask (common.cuh): bit j set when tensor j is bfloat16. */
const bfMask = (...ts: (Tensor | null | undefined)[]): number => ts.reduce((m, t, j) => (t?.dtype === 'bfloat16' ? m | (1 << j) : m), 0);
/** bfMask as a kernel argument. */
const BFM = (...ts: (Tensor | null | undefined)[]): Arg => ['i32', bfMask(...ts)];
/** Element size in bytes. */
const ES = (t: Tensor): number => bytesOf(t.dtype);

const MAX_ARGS = 32;
/** Tensor maps one launch may take (slots of 128 bytes, 64-byte aligned). */
const TMAP_SLOTS = 2;
const BLOCK = 256;
const MAX_GRID = 65535;
/** sizeof(CUlaunchConfig) and sizeof(CUlaunchAttribute) (cuda.h, CUDA 12 / 13, 64-bit). */
const LAUNCH_CONFIG_BYTES = 56;
const LAUNCH_ATTRIBUTE_BYTES = 72;
/** CUlaunchAttributeID: the launch may overlap the previous kernel (griddepcontrol in the kernels). */
const CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6;
/** The block sizes of cross_entropy_rows{nt}_f32 (reduce.cu), each holding rows of up to XE_NPT nt logits. */
const XE_BLOCKS = [256, 512, 1024] as const;
/** Logits a thread holds in those kernels (XE_NPT in reduce.cu). */
const XE_NPT = 32;
/** The shortest rows that go to those kernels. */
const XE_MIN_V = 2048;
/** The most assignments moe_order_small (moe.cu) orders in its one block (MOE_ORDER_SMALL there). */
const MOE_ORDER_SMALL = 16384;
/** Threads per block of the row-in-registers LayerNorm kernels (a warp per row). */
const BLOCK_LN = 128;
/**
 * Blocks of layernorm_backward_sums_bf16_vec* (two an SM at C <= 1024: 96 registers a thread at
 * C = 768), each adding its rows' weight-gradient sums into one float64 partial row: one wave on an
 * H100 SXM or H200, and a number of the shape alone, so the sums' order (and bits) do not depend on
 * the card.
 */
const LN_SUM_BLOCKS = 256;
/** The widest row those kernels hold: 8 bf16 per vector, LN_VEC (reduce.cu) vectors per lane. */
const LN_VEC_WIDTH = 8 * 32 * 8;
/** Whether n elements at these addresses can go four at a time (16-byte float32, 8-byte bf16 groups). */
const byFours = (n: number, ...ptrs: number[]): boolean => n % 4 === 0 && ptrs.every((p) => p % 16 === 0);
/**
 * Whether bfloat16 rows of d elements at these addresses can go as 16-byte vectors of eight
 * (moe.cu's `_bf16v` kernels): d a multiple of 8, aligned bases, `rows` x d / 8 below 2^31.
 */
const byVectors = (tensors: readonly CudaTensor[], rows: number, d: number): boolean =>
  d % 8 === 0 && tensors.every((t) => t.dtype === 'bfloat16' && t.ptr % 16 === 0) && rows * (d / 8) < 2 ** 31;
/** Warps per block of the attention kernels and the largest head size their shared memory holds. */
const ATTN_WARPS = 4;
const ATTN_MAX_DH = 1024;
/** Rows of a tile of the tiled attention kernels (AT_T in attention_tiled.cu); they run 256 threads. */
const AT_T = 64;
/** Dynamic shared memory (bytes) of the tiled attention kernels for head-size bucket DH. */
function tiledAttentionShared(DH: number): { fwd: number; dq: number; dkdv: number } {
  const tile = AT_T * (DH + 1);
  const probs = AT_T * (AT_T + 1);
  return { fwd: 4 * (3 * tile + probs), dq: 4 * (4 * tile + probs), dkdv: 4 * (4 * tile + 2 * probs + 2 * AT_T) };
}
/** A GEMM dimension for a profile key: exact when a multiple of 64, else rounded (expert row counts vary). */
const roughDim = (x: number): string => (x % 64 === 0 ? String(x) : `~${x < 1000 ? Math.round(x / 100) * 100 : `${Math.round(x / 1000)}k`}`);
/** Rows per chunk of a two-stage column sum: enough chunks to fill the card (a few thousand blocks), at least 64 rows each. */
function colSumChunkRows(R: number, C: number): number {
  const chunks = Math.max(1, Math.min(Math.ceil(R / 64), Math.ceil(4096 / Math.ceil(C / 32)), 65535));
  return Math.max(1, Math.ceil(R / chunks));
}
/**
 * Row ranges [start, count] that cover n rows of one expert in GEMM shapes that recur: a multiple of
 * SHAPE_QUANTUM, then the rest. cuBLAS chooses an algorithm for every new shape on the host (0.12 ms
 * more per call alone, milliseconds for some calls in a training step: H200, cuBLAS 13.1, the
 * `--items ops` and `kernels` profiles of bench/gpu.ts), and expert row counts change every step, so
 * one call per expert paid that choice on nearly every call; cut this way, at most
 * n / SHAPE_QUANTUM + SHAPE_QUANTUM shapes per weight shape ever occur and each is chosen once.
 * MOE_DIFFUSEQ_SHAPE_QUANTUM=1 turns the cutting off (one call per expert).
 */
function shapeChunks(n: number): [number, number][] {
  const bulk = n - (n % SHAPE_QUANTUM);
  const out: [number, number][] = [];
  if (bulk > 0) out.push([0, bulk]);
  if (n > bulk) out.push([bulk, n - bulk]);
  return out;
}
/**
 * Row ranges [start, count] of the product of one expert's n rows that start at `row` of `total`:
 * n rounded up to a multiple of SHAPE_QUANTUM in one call where the buffers have the rows, else
 * shapeChunks. The rows past the expert's belong to the next experts, whose own products (later on
 * the same stream) overwrite them: one call per expert in a shape that recurs, instead of a second
 * call for the rest of fewer than 128 rows (3-5x slower per row than the bulk, and a new shape).
 * For products whose output rows are the input's rows only (not a sum over rows).
 */
function expertChunks(row: number, n: number, total: number): [number, number][] {
  const up = Math.ceil(n / SHAPE_QUANTUM) * SHAPE_QUANTUM;
  return n > 0 && row + up <= total ? [[0, up]] : shapeChunks(n);
}
const SHAPE_QUANTUM = Math.max(1, Number(process.env['MOE_DIFFUSEQ_SHAPE_QUANTUM'] ?? 128) || 128);
/** A count from the environment variable `name` (digits only), else `fallback`. */
function envCount(name: string, fallback: number): number {
  const v = process.env[name];
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : fallback;
}
/** Key tiles per run of the split forward of the global rows' tiles (about what a window tile walks). */
const SPLIT_TILES = 8;
/** The same for the attention backward's (more runs cost attn_bwd_combine's pass over float32 sums). */
const BWD_SPLIT_TILES = 64;
/** The most rows of a grouped product that the `auto` grouped kernel choice gives to grouped_gemm.cu (see CudaBackendOptions.grouped). */
const GROUPED_MMA_ROWS = 8192;
/** Dynamic shared memory of grouped_gemm.cu's NT and NN kernels (GG_SHARED there: 4 stages of two 128 x 40 bf16 tiles). */
const GROUPED_SHARED = 4 * 2 * 128 * 40 * 2;
/** Dynamic shared memory of attn_fwd_wgmma (AW_SHARED in attention_mma.cu: Q and two (K, V) buffers of 64 x 64 bf16, and 1 KiB to align them). */
const ATTN_WGMMA_SHARED = 5 * 64 * 64 * 2 + 1024;
/** The same for attn_bwd_dq_wgmma / attn_bwd_dkdv_wgmma (AWB_SHARED: the block's two tiles, two buffers of two, 1 KiB to align). */
const ATTN_WGMMA_BWD_SHARED = 6 * 64 * 64 * 2 + 1024;
/** Dynamic shared memory of grouped_wgmma.cu's kernel (GW_SHARED there: 3 stages of two 128 x 64 bf16 tiles, and 1 KiB to align them). */
const GROUPED_WGMMA_SHARED = 3 * 2 * 128 * 64 * 2 + 1024;
/** The same for its one-warpgroup form (grouped_wgmma64_nt_bf16: 64-row A tiles, 128-row B tiles). */
const GROUPED_WGMMA64_SHARED = 3 * (64 + 128) * 64 * 2 + 1024;
/**
 * Rows of a grouped forward product up to which `auto` takes the 64-row wgmma tiles
 * (MOE_DIFFUSEQ_WGMMA64_ROWS): 0, never. Measured on an H200 (2026-11-29, v12): batch-1 sampling's
 * products took 48 us a call in them against 38 us in the two-warpgroup kernel (27.9 against 30.4 ms
 * a sampling run), so they stay an experiment behind the variable until their pipeline is deeper.
 */
const GROUPED_WGMMA64_ROWS = 0;
/** The same for its four-warpgroup form (grouped_wgmma256_nt_bf16: 4 stages of 256-row A tiles and 128-row B tiles). */
const GROUPED_WGMMA256_SHARED = 4 * (256 + 128) * 64 * 2 + 1024;
/**
 * Whether the vocabulary scoring fills its stages by TMA (score_argmax_tma) by default where the
 * driver encodes tensor maps (MOE_DIFFUSEQ_SCORE_TMA=0 / 1 chooses). H200, s16: 1.390 against 1.432
 * ms of a batch-1 sampling run's scorings (ncu), 19.85 against 20.00 ms of wall time (4 rounds).
 */
const SCORE_TMA = true;
/**
 * Rows of a grouped forward product from which `auto` takes the 256-row wgmma tiles
 * (MOE_DIFFUSEQ_WGMMA256_ROWS). Measured on an H200 (2026-11-29, v22c, alternated with the
 * 128-row kernel in one call): batch-16 sampling (65,536 rows) 206.9 against 213.5 ms, training
 * 0.2-1.3% faster, batch-1 sampling (4,096 rows) 20.20 against 20.25 ms, the same; so from 16,384.
 */
const GROUPED_WGMMA256_ROWS = 16384;
/**
 * The same where the 256-row tiles are the persistent TMA kernel (grouped_tma256p_nt_bf16, the
 * default with tensor maps). H200, 2026-11-29 (v24b, one call): batch-1 sampling's 240 grouped
 * forwards (4,096 rows) 6.76 ms against the 128-row kernel's 6.84 (ncu), wall time 20.55 against
 * 20.65 ms (medians of 4 alternated rounds); fewer rows not measured.
 */
const GROUPED_TMA256P_ROWS = 4096;
/** Dynamic shared memory of grouped_gemm.cu's TN kernel (GG_TN_SHARED there: 4 stages of two 32 x 136 bf16 tiles). */
const GROUPED_TN_SHARED = 4 * 2 * 32 * 136 * 2;
/** Elements of the score block of nearestRows / argmaxDot (float32: 128 MiB of scratch). */
const SCORE_BLOCK = 1 << 25;
/** Bytes of cuBLAS's workspace. */
const CUBLAS_WORKSPACE = 32 * 1024 * 1024;
/** Shared memory a kernel may take without opting in. */
const DEFAULT_SHARED = 48 * 1024;

const TWO32 = 4294967296;

function checkSeed(op: string, seed: number, offset: number): void {
  if (!Number.isSafeInteger(seed) || seed < 0 || !Number.isSafeInteger(offset) || offset < 0) {
    throw new RangeError(`${op}: seed and offset must be non-negative safe integers (got ${seed}, ${offset})`);
  }
}

/** The CUDA backend (see the file comment). Create it with createBackend('cuda') or directly. */
export class CudaBackend implements Backend {
  readonly name: string;
  /** The device ordinal. */
  readonly device: number;
  /** Compute capability as a number, e.g. 90. */
  readonly arch: number;
  private readonly driver: Driver;
  private readonly dev: number;
  private readonly ctx: bigint;
  private readonly stream: bigint;
  /**
   * A stream that waits only on events (non-blocking): the routing's statistics come back on it as
   * soon as the routing is done, not after everything queued since (see moeRoute).
   */
  private readonly readStream: bigint;
  private readonly cublas: Cublas;
  /**
   * cuBLASLt for the bf16 products whose bfloat16 bias goes into the epilogue (a Linear's forward
   * under bf16 activations; see cublaslt.ts), null where it is not bound or MOE_DIFFUSEQ_CUBLASLT=0.
   */
  private readonly lt: CublasLt | null;
  private readonly nvrtc: Nvrtc;
  private readonly alloc: CachingAllocator;
  private readonly deviceName: string;
  private readonly totalMem: number;
  private readonly syncEachLaunch: boolean;
  /**
   * The LayerNorm backward's weight gradients summed in the pass that makes dx
   * (layernorm_backward_sums_bf16_vec*); MOE_DIFFUSEQ_FUSED_SUMS=0: a column-sum pass of their own.
   */
  private readonly fusedSums: boolean;
  /**
   * The most key (query) tiles a run of the attention backward's tiles of global rows walks
   * (am_bwd_block in attention_mma.cu): MOE_DIFFUSEQ_ATTN_BWD_SPLIT, default BWD_SPLIT_TILES;
   * 0: one block each in the plain order.
   */
  private readonly bwdSplitTiles: number;
  /**
   * What the host knows of int32 buffers' values (checks of ids without a read-back); a graph
   * replay forgets it all (the recorded kernels write again, with the values of that moment).
   */
  private ints = new IntRanges();
  /** Inside capture(): int32 writes recorded now run again at replays, with whatever values then. */
  private recording = false;
  private readonly launchTimes: Map<string, [number, number]> | null;
  /**
   * Kernels launched twice at each launch (MOE_DIFFUSEQ_REPEAT_KERNELS=name,name: a benchmark's
   * measure of what a kernel adds to the wall time where it runs, a replayed graph included, which a
   * profiler's per-kernel durations do not give; the numbers of a repeated in-place kernel change).
   */
  private readonly repeat: ReadonlySet<string>;
  /** The repeated kernels launched so far (close() names those never launched: a benchmark's figure for them would mean nothing). */
  private readonly repeatSeen = new Set<string>();
  /** Device address of cuBLAS's workspace (0: none, cuBLAS's default pool). */
  private readonly cublasWorkspace: number;
  /** Operand precision of the matrix products (see CudaBackendOptions.matmul). */
  readonly matmulPrecision: 'float32' | 'bfloat16';
  /** Which attention kernels run (see CudaBackendOptions.attention). */
  readonly attentionKernel: AttentionKernels;
  /** Which grouped products run (see CudaBackendOptions.grouped). */
  readonly groupedKernel: 'cublas' | 'mma' | 'wgmma' | 'auto';
  private readonly sharedOptin: number;
  /** The device's multiprocessors (the persistent cross-entropy grid). */
  private readonly smCount: number;
  /** Dynamic shared memory each kernel has been allowed beyond 48 KiB. */
  private readonly sharedAllowed = new Map<string, number>();
  private readonly modules = new Map<string, bigint>();
  private readonly functions = new Map<string, bigint>();
  // kernel parameters: MAX_ARGS 8-byte slots in stable native memory, and the array of their
  // addresses that cuLaunchKernel takes (the driver copies the values at launch, so one buffer serves)
  private readonly argMem: bigint;
  private readonly argPtrs: bigint;
  private readonly argPtrView: DataView;
  /** Native memory of the tensor-map slots (TMAP_SLOTS x 128 bytes from a 64-byte aligned address). */
  private readonly tmapMem: bigint;
  private readonly tmapBase: bigint;
  /**
   * The 256-row grouped forward's stages filled by TMA (a driver with tensor maps). 2, the default:
   * grouped_tma256p_nt_bf16, persistent (a block an SM walks its tiles, the next tile's first stages
   * loaded during an epilogue; H200, v24b: 7.52 ms of a 16 x 2048 step against 7.78, ncu, one call).
   * 1 (MOE_DIFFUSEQ_GROUPED_TMA=1): grouped_tma256_nt_bf16, a block a tile (v23: 7.77 against the
   * cp.async kernel's 8.15). 0 (MOE_DIFFUSEQ_GROUPED_TMA=0): the cp.async kernel.
   */
  private readonly groupedTma: 0 | 1 | 2;
  /**
   * `#define` lines put before every kernel source (MOE_DIFFUSEQ_DEFINES=NAME=V,NAME: a benchmark's
   * what-if variants, such as WHATIF_NO_GELU, which time a kernel without one of its parts and give
   * wrong numbers; empty normally).
   */
  private readonly defines: string;
  /** Grouped forward products of at most this many rows take the 64-row wgmma tiles. */
  private readonly wgmma64Rows: number;
  /** Grouped forward products of at least this many rows take the 256-row wgmma tiles. */
  private readonly wgmma256Rows: number;
  /** The vocabulary scoring's stages filled by TMA (score_argmax_tma; MOE_DIFFUSEQ_SCORE_TMA, see SCORE_TMA). */
  private readonly scoreTma: boolean;
  /** Device addresses of the lookup tables made so far, by the kernel that made them (see table()). */
  private readonly tables = new Map<string, number>();
  /** Whether the bf16 attention runs on wgmma (attentionKernel auto or wgmma, on sm_90). */
  private readonly attnWgmma: boolean;
  /** Programmatic dependent launch: the CUlaunchConfig (and its attribute) every launch fills in; null: plain cuLaunchKernel. */
  private readonly pdl: { config: bigint; view: DataView } | null = null;
  private readonly argView: DataView;
  private live = 0;
  private peak = 0;
  private liveCount = 0;
  private closed = false;

  constructor(opts: CudaBackendOptions = {}) {
    this.device = opts.device ?? 0;
    this.syncEachLaunch = opts.syncEachLaunch ?? process.env['MOE_DIFFUSEQ_CUDA_SYNC'] === '1';
    this.fusedSums = process.env['MOE_DIFFUSEQ_FUSED_SUMS'] !== '0';
    this.bwdSplitTiles = envCount('MOE_DIFFUSEQ_ATTN_BWD_SPLIT', BWD_SPLIT_TILES);
    this.launchTimes = opts.launchTimes ?? null;
    this.repeat = new Set((process.env['MOE_DIFFUSEQ_REPEAT_KERNELS'] ?? '').split(',').map((k) => k.trim()).filter(Boolean));
    for (const k of this.repeat) {
      if (!FILE_OF.has(k)) throw new Error(`MOE_DIFFUSEQ_REPEAT_KERNELS: no kernel is named '${k}' (the names are those of KERNEL_FILES in src/backend/cuda/backend.ts)`);
    }
    this.defines = definesOf(process.env['MOE_DIFFUSEQ_DEFINES'] ?? '');
    this.matmulPrecision = opts.matmul ?? (process.env['MOE_DIFFUSEQ_MATMUL'] === 'bf16' ? 'bfloat16' : 'float32');
    const envAttention = process.env['MOE_DIFFUSEQ_ATTENTION'];
    this.attentionKernel = opts.attention ?? (envAttention === 'rows' || envAttention === 'tiled' || envAttention === 'mma' || envAttention === 'wgmma' ? envAttention : 'auto');
    const envGrouped = process.env['MOE_DIFFUSEQ_GROUPED'];
    this.groupedKernel = opts.grouped ?? (envGrouped === 'mma' || envGrouped === 'wgmma' || envGrouped === 'cublas' ? envGrouped : 'auto');
    this.driver = Driver.get();
    // the libraries first: a missing one is reported before any device state is created
    this.nvrtc = Nvrtc.get();
    cublasLibrary();
    const count = this.driver.deviceCount();
    if (!Number.isInteger(this.device) || this.device < 0 || this.device >= count) {
      throw new DeviceError(`cuda:${this.device} does not exist (${count} CUDA device${count === 1 ? '' : 's'})`, '`moe-diffuseq info` lists the GPUs');
    }
    this.name = `cuda:${this.device}`;
    this.dev = this.driver.device(this.device);
    this.ctx = this.driver.primaryCtxRetain(this.dev);
    this.driver.ctxSetCurrent(this.ctx);
    this.arch = this.driver.attribute(this.dev, CU_DEVICE_ATTRIBUTE.COMPUTE_CAPABILITY_MAJOR) * 10 + this.driver.attribute(this.dev, CU_DEVICE_ATTRIBUTE.COMPUTE_CAPABILITY_MINOR);
    this.attnWgmma = (this.attentionKernel === 'auto' || this.attentionKernel === 'wgmma') && this.arch === 90;
    this.deviceName = this.driver.deviceName(this.dev);
    this.totalMem = this.driver.deviceTotalMem(this.dev);
    this.sharedOptin = this.driver.attribute(this.dev, CU_DEVICE_ATTRIBUTE.MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
    this.smCount = this.driver.attribute(this.dev, CU_DEVICE_ATTRIBUTE.MULTIPROCESSOR_COUNT);
    this.stream = this.driver.streamCreate();
    this.readStream = this.driver.streamCreate(1);
    // cuBLAS's workspace (NVIDIA recommends 32 MiB on Hopper); MOE_DIFFUSEQ_CUBLAS_WORKSPACE=0 leaves cuBLAS its default
    const wsBytes = process.env['MOE_DIFFUSEQ_CUBLAS_WORKSPACE'] === '0' ? 0 : CUBLAS_WORKSPACE;
    this.cublasWorkspace = wsBytes ? this.driver.memAlloc(wsBytes) : 0;
    this.cublas = new Cublas(this.stream, wsBytes ? { ptr: this.cublasWorkspace, bytes: wsBytes } : null);
    // the same workspace: cuBLAS and cuBLASLt calls are ordered on the one stream
    this.lt = process.env['MOE_DIFFUSEQ_CUBLASLT'] === '0' ? null : CublasLt.create(this.stream, { ptr: this.cublasWorkspace, bytes: wsBytes });
    this.alloc = new CachingAllocator(this.driver);
    const k = koffi();
    this.argMem = k.alloc('uint8_t', MAX_ARGS * 8);
    this.argPtrs = k.alloc('uint8_t', MAX_ARGS * 8);
    this.argView = new DataView(k.view(this.argMem, MAX_ARGS * 8));
    const ptrs = new DataView(k.view(this.argPtrs, MAX_ARGS * 8));
    for (let i = 0; i < MAX_ARGS; i++) ptrs.setBigUint64(i * 8, this.argMem + BigInt(i * 8), true);
    this.argPtrView = ptrs;
    this.tmapMem = k.alloc('uint8_t', TMAP_SLOTS * 128 + 64);
    this.tmapBase = (BigInt(this.tmapMem) + 63n) & ~63n;
    const envTma = process.env['MOE_DIFFUSEQ_GROUPED_TMA'];
    this.groupedTma = !this.driver.hasTensorMaps || envTma === '0' ? 0 : envTma === '1' ? 1 : 2;
    this.wgmma64Rows = envCount('MOE_DIFFUSEQ_WGMMA64_ROWS', GROUPED_WGMMA64_ROWS);
    this.wgmma256Rows = envCount('MOE_DIFFUSEQ_WGMMA256_ROWS', this.groupedTma === 2 ? GROUPED_TMA256P_ROWS : GROUPED_WGMMA256_ROWS);
    const sTma = process.env['MOE_DIFFUSEQ_SCORE_TMA'];
    this.scoreTma = this.driver.hasTensorMaps && (sTma === undefined ? SCORE_TMA : sTma === '1');
    // programmatic dependent launch on sm_90 (every kernel starts with pdl_entry, common.cuh):
    // one CUlaunchConfig, rewritten per launch, whose one attribute allows the overlap
    if (this.arch >= 90 && process.env['MOE_DIFFUSEQ_PDL'] !== '0' && this.driver.hasLaunchEx) {
      const bytes = LAUNCH_CONFIG_BYTES + LAUNCH_ATTRIBUTE_BYTES;
      const config = k.alloc('uint8_t', bytes);
      const view = new DataView(k.view(config, bytes));
      for (let i = 0; i < bytes; i++) view.setUint8(i, 0);
      view.setBigUint64(32, BigInt(this.stream), true); // hStream
      view.setBigUint64(40, config + BigInt(LAUNCH_CONFIG_BYTES), true); // attrs: the one after the config
      view.setUint32(48, 1, true); // numAttrs
      view.setUint32(LAUNCH_CONFIG_BYTES, CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, true); // id
      view.setInt32(LAUNCH_CONFIG_BYTES + 8, 1, true); // value.programmaticStreamSerializationAllowed
      this.pdl = { config, view };
    }
  }

  supports(dtype: DType): boolean {
    return dtype !== 'float64';
  }

  describe(): string {
    const wgmma = this.wgmmaOn() ? (this.groupedKernel === 'wgmma' ? ', wgmma grouped products' : ', wgmma grouped forward') : '';
    const mma = this.groupedKernel === 'auto' ? `, mma grouped products up to ${GROUPED_MMA_ROWS} rows` : this.groupedKernel === 'mma' || !this.wgmmaOn() ? ', mma grouped products' : '';
    const grouped = this.groupedKernel === 'cublas' ? '' : `${wgmma}${mma}`;
    // what runs: `auto` and `wgmma` are the mma.sync kernels where the card has no wgmma
    const attn = this.attnWgmma ? 'wgmma' : this.attentionKernel === 'auto' || this.attentionKernel === 'wgmma' ? 'mma' : this.attentionKernel;
    const mm = `float32 + bfloat16, ${attn} attention${grouped}${this.matmulPrecision === 'bfloat16' ? ', every matmul in bf16' : ''}${this.pdl ? ', programmatic dependent launch' : ''}${this.lt ? ', bf16 biases in cuBLASLt epilogues' : ''}`;
    return `${this.name} (${this.deviceName}, ${(this.totalMem / 2 ** 30).toFixed(1)} GiB, sm_${this.arch}; NVRTC ${this.nvrtc.version}, cuBLAS ${this.cublas.version}; ${mm})`;
  }

  /** Device memory reserved by the caching allocator (tensor bytes are in memory()). */
  allocatorStats(): AllocatorStats {
    return this.alloc.stats();
  }

  // ---- kernels -------------------------------------------------------------------------------
  private fn(name: string): bigint {
    const hit = this.functions.get(name);
    if (hit !== undefined) return hit;
    const file = FILE_OF.get(name);
    if (!file) throw new DeviceError(`no CUDA kernel named ${name}`);
    let mod = this.modules.get(file);
    if (mod === undefined) {
      const img = this.nvrtc.compile(file, this.defines + kernelSource(file), this.arch, SM90A_FILES.has(file) && this.arch === 90 ? 'a' : '');
      const image = img.format === 'ptx' ? Buffer.concat([img.image, Buffer.from([0])]) : img.image;
      mod = this.driver.moduleLoadData(image, `${file} (${img.format} for sm_${this.arch}${img.cached ? ', cached' : ''})`);
      this.modules.set(file, mod);
    }
    const f = this.driver.moduleGetFunction(mod, name);
    this.functions.set(name, f);
    return f;
  }

  /**
   * A lookup table of 65,536 entries made by `kernel` (65,536 threads) at the first call and
   * kept until close(): gelu_table_bf16's (GELU of every bf16, 128 KiB) or gelu_grad_table_f32's
   * (256 KiB). 0 inside a recording that finds none yet: the kernels then compute the values, which
   * gives the same results, rather than allocate while a graph is captured.
   */
  private table(kernel: 'gelu_table_bf16' | 'gelu_grad_table_f32'): number {
    let tab = this.tables.get(kernel) ?? 0;
    if (tab === 0 && !this.recording) {
      tab = this.driver.memAlloc(65536 * (kernel === 'gelu_table_bf16' ? 2 : 4));
      this.launch(kernel, 256, 256, [A(tab)]);
      this.tables.set(kernel, tab);
    }
    return tab;
  }
  private geluTable(): number {
    return this.table('gelu_table_bf16');
  }
  private geluGradTable(): number {
    return this.table('gelu_grad_table_f32');
  }
  /** Launches kernel `name` on the backend's stream. */
  private launch(name: string, grid: number, block: number, args: readonly Arg[], sharedBytes = 0): void {
    this.launch2(name, [grid, 1], [block, 1], args, sharedBytes);
  }
  /** Launches kernel `name` with a two-dimensional grid and block. */
  private launch2(name: string, grid: readonly [number, number], block: readonly [number, number], args: readonly Arg[], sharedBytes = 0): void {
    if (this.closed) throw new DeviceError(`${this.name}: used after close()`);
    if (grid[0] <= 0 || grid[1] <= 0) return;
    if (args.length > MAX_ARGS) throw new DeviceError(`kernel ${name}: more than ${MAX_ARGS} arguments`);
    const f = this.fn(name);
    if (sharedBytes > DEFAULT_SHARED && (this.sharedAllowed.get(name) ?? 0) < sharedBytes) {
      this.driver.funcSetAttribute(f, name, CU_FUNC_ATTRIBUTE.MAX_DYNAMIC_SHARED_SIZE_BYTES, sharedBytes);
      this.sharedAllowed.set(name, sharedBytes);
    }
    const v = this.argView;
    let tmapArgs = 0;
    args.forEach(([type, value], i) => {
      const o = i * 8;
      switch (type) {
        case 'ptr':
        case 'u64':
          v.setBigUint64(o, BigInt(value), true);
          break;
        case 'i64':
          v.setBigInt64(o, BigInt(value), true);
          break;
        case 'i32':
          v.setInt32(o, value, true);
          break;
        case 'u32':
          v.setUint32(o, value >>> 0, true);
          break;
        case 'f32':
          v.setFloat32(o, value, true);
          break;
        case 'f64':
          v.setFloat64(o, value, true);
          break;
        case 'tmap':
          tmapArgs++; // its argument pointer is moved to its slot below, inside the try
          break;
      }
    });
    if (tmapArgs === 0) {
      this.launchNow(f, name, grid, block, sharedBytes);
      return;
    }
    // a tensor map's argument pointer goes to its slot for the launch (the driver copies its 128
    // bytes), and back to its 8-byte slot after it, whatever the launch did; the slots are checked
    // before any pointer moves
    const tmaps = args.flatMap(([type, value], i) => (type === 'tmap' ? [[i, this.tensorMapSlot(value)] as const] : []));
    try {
      for (const [i, slot] of tmaps) this.argPtrView.setBigUint64(i * 8, slot, true);
      this.launchNow(f, name, grid, block, sharedBytes);
    } finally {
      for (const [i] of tmaps) this.argPtrView.setBigUint64(i * 8, this.argMem + BigInt(i * 8), true);
    }
  }
  /** The native address of tensor-map slot `i` (written by Driver.tensorMapBf16, passed as a `tmap` argument). */
  private tensorMapSlot(i: number): bigint {
    if (!Number.isInteger(i) || i < 0 || i >= TMAP_SLOTS) throw new DeviceError(`tensor-map slot ${i} outside [0, ${TMAP_SLOTS})`);
    return this.tmapBase + BigInt(i * 128);
  }
  /** launch2's launch proper, its arguments in place. */
  private launchNow(f: bigint, name: string, grid: readonly [number, number], block: readonly [number, number], sharedBytes: number): void {
    const t0 = this.launchTimes ? this.timedStart() : 0;
    if (this.pdl) {
      const c = this.pdl.view;
      c.setUint32(0, grid[0], true);
      c.setUint32(4, grid[1], true);
      c.setUint32(8, 1, true);
      c.setUint32(12, block[0], true);
      c.setUint32(16, block[1], true);
      c.setUint32(20, 1, true);
      c.setUint32(24, sharedBytes, true);
    }
    if (this.repeat.has(name)) this.repeatSeen.add(name);
    for (let n = this.repeat.has(name) ? 2 : 1; n > 0; n--) {
      if (this.pdl) this.driver.launchEx(f, name, this.pdl.config, this.argPtrs, () => `grid ${grid.join('x')}, block ${block.join('x')}, ${sharedBytes} B shared`);
      else this.driver.launch(f, name, { grid: [grid[0], grid[1], 1], block: [block[0], block[1], 1], sharedBytes }, this.stream, this.argPtrs);
    }
    if (this.syncEachLaunch) this.driver.streamSynchronize(this.stream, `after kernel ${name}`);
    if (this.launchTimes) this.timedEnd(name, t0);
  }
  /** Kernel profile (options.launchTimes): drain the stream, then the start time. */
  private timedStart(): number {
    this.driver.streamSynchronize(this.stream, 'profile');
    return performance.now();
  }
  /** Kernel profile: wait for the launch, add its time under `key`. */
  private timedEnd(key: string, t0: number): void {
    this.driver.streamSynchronize(this.stream, `after ${key}`);
    const e = this.launchTimes!.get(key) ?? [0, 0];
    e[0] += performance.now() - t0;
    e[1]++;
    this.launchTimes!.set(key, e);
  }
  /** One thread per element of n (grid-stride kernels). */
  private launchN(name: string, n: number, args: readonly Arg[]): void {
    if (n <= 0) return;
    this.launch(name, Math.min(Math.ceil(n / BLOCK), MAX_GRID), BLOCK, args);
  }
  /** One block per row of R. */
  private launchRows(name: string, R: number, args: readonly Arg[]): void {
    if (R <= 0) return;
    this.launch(name, Math.min(R, MAX_GRID), BLOCK, args);
  }

  capture(work: () => void): Replayable | null {
    // these modes synchronise after launches, which a recording forbids
    if (this.closed || this.syncEachLaunch || this.launchTimes) return null;
    const end = (): bigint | null => {
      try {
        return this.driver.endCapture(this.stream);
      } catch {
        return null; // invalidated by a call that is not allowed while recording
      }
    };
    this.driver.beginCapture(this.stream);
    this.recording = true;
    // the blocks that `work` releases (its temporaries, and anything it frees) hold what the graph
    // reads and writes at every replay: they stay out of the free lists until the graph is disposed
    this.alloc.beginHold();
    try {
      work();
    } catch (e) {
      this.recording = false;
      this.alloc.endHold(false);
      const g = end();
      if (g) this.driver.graphDestroy(g);
      if (e instanceof CudaError) return null;
      throw e;
    }
    this.recording = false;
    const graph = end();
    if (!graph) {
      this.alloc.endHold(false);
      return null;
    }
    let exec: bigint;
    try {
      exec = this.driver.graphInstantiate(graph);
    } catch (e) {
      this.alloc.endHold(false);
      this.driver.graphDestroy(graph);
      if (e instanceof CudaError) return null;
      throw e;
    }
    const held = this.alloc.endHold();
    let live = true;
    return {
      replay: () => {
        if (!live) throw new DeviceError('capture: the graph was disposed');
        this.driver.graphLaunch(exec, this.stream);
        this.ints = new IntRanges();
      },
      dispose: () => {
        if (!live) return;
        live = false;
        this.driver.graphExecDestroy(exec);
        this.driver.graphDestroy(graph);
        // replays queued before stay ordered before any later use of these blocks (one stream)
        if (!this.closed) for (const b of held) this.alloc.release(b.ptr, b.size);
      },
    };
  }

  // ---- memory -------------------------------------------------------------------------------
  private allocTensor(op: string, shape: readonly number[], dtype: DType): CudaTensor {
    if (this.closed) throw new DeviceError(`${this.name}: used after close()`);
    if (dtype === 'float64') throw new DTypeError(op, 'float64 is CPU-only (gradient checks); the CUDA backend holds float32, bfloat16 and int32');
    const size = checkShapeValid(op, shape);
    const bytes = size * bytesOf(dtype);
    if (bytes === 0) {
      this.liveCount++;
      return new CudaTensor([...shape], dtype, 0, () => this.liveCount--);
    }
    const block = this.alloc.alloc(bytes);
    this.live += bytes;
    this.liveCount++;
    if (this.live > this.peak) this.peak = this.live;
    return new CudaTensor([...shape], dtype, block.ptr, () => {
      this.live -= bytes;
      this.liveCount--;
      if (!this.closed) this.alloc.release(block.ptr, block.size);
    });
  }
  /** Device scratch outside the tensor accounting (returned with the function it gets). */
  private scratch(bytes: number): { ptr: number; free: () => void } {
    if (bytes <= 0) return { ptr: 0, free: () => undefined };
    const b = this.alloc.alloc(bytes);
    return { ptr: b.ptr, free: () => this.alloc.release(b.ptr, b.size) };
  }

  empty(shape: readonly number[], dtype: DType = 'float32'): Tensor {
    return this.allocTensor('empty', shape, dtype);
  }
  zeros(shape: readonly number[], dtype: DType = 'float32'): Tensor {
    const t = this.allocTensor('zeros', shape, dtype);
    if (t.size) {
      if (dtype === 'bfloat16') this.driver.memsetD16Async(t.ptr, 0, t.size, this.stream);
      else this.driver.memsetD32Async(t.ptr, 0, t.size, this.stream);
      this.wroteInts(t, [0, 0]);
    }
    return t;
  }
  fromArray(data: ArrayLike<number>, shape: readonly number[], dtype: DType = 'float32'): Tensor {
    const t = this.allocTensor('fromArray', shape, dtype);
    if (data.length !== t.size) {
      t.dispose();
      throw new ShapeError('fromArray', `${data.length} values for shape [${shape.join(', ')}] (${t.size} elements)`);
    }
    try {
      this.write(t, data);
    } catch (e) {
      t.dispose();
      throw e;
    }
    return t;
  }
  toArray(t: Tensor): Float32Array | Float64Array | Int32Array {
    const c = cu('toArray', t);
    if (c.dtype === 'bfloat16') {
      const bits = new Uint16Array(c.size);
      if (c.size) this.driver.memcpyDtoH(bits, c.ptr, c.size * 2);
      return fromBf16Bits(bits);
    }
    const out = c.dtype === 'int32' ? new Int32Array(c.size) : new Float32Array(c.size);
    if (c.size) this.driver.memcpyDtoH(out, c.ptr, c.size * 4);
    return out;
  }
  readLater(ts: readonly Tensor[]): () => (Float32Array | Float64Array | Int32Array)[] {
    const cs = ts.map((t) => cu('readLater', t));
    // an event marks the point in the stream; the read waits for it on the side stream
    const ready = this.driver.eventCreate(false);
    try {
      this.driver.eventRecord(ready, this.stream);
    } catch (e) {
      this.driver.eventDestroy(ready);
      throw e;
    }
    let done = false;
    return () => {
      if (done) throw new DeviceError('readLater: read twice');
      done = true;
      try {
        this.driver.streamWaitEvent(this.readStream, ready);
        const host = cs.map((c) => (c.dtype === 'bfloat16' ? new Uint16Array(c.size) : c.dtype === 'int32' ? new Int32Array(c.size) : new Float32Array(c.size)));
        cs.forEach((c, i) => c.size && this.driver.memcpyDtoHAsync(host[i]!, c.ptr, host[i]!.byteLength, this.readStream));
        this.driver.streamSynchronize(this.readStream);
        return host.map((h) => (h instanceof Uint16Array ? fromBf16Bits(h) : h));
      } finally {
        this.driver.eventDestroy(ready);
      }
    };
  }
  write(t: Tensor, data: ArrayLike<number>): void {
    const c = cu('write', t);
    if (data.length !== c.size) throw new ShapeError('write', `${data.length} values for a tensor of ${c.size} elements`, [c.shape]);
    let host: Float32Array | Int32Array | Uint16Array;
    if (c.dtype === 'bfloat16') host = toBf16Bits(data);
    else if (c.dtype === 'int32') {
      host = new Int32Array(c.size);
      for (let i = 0; i < data.length; i++) {
        const v = data[i]!;
        if (!Number.isInteger(v) || v < -2147483648 || v > 2147483647) throw new ShapeError('write', `int32 tensor got non-integer ${v} at ${i}`);
        host[i] = v;
      }
    } else host = data instanceof Float32Array ? data : Float32Array.from(data);
    // ordered on the stream without waiting for the device (the driver stages the host bytes before
    // it returns): a synchronous copy would drain the queue, once per denoiser call in sampling
    if (c.size) this.driver.memcpyHtoDAsync(c.ptr, host, host.byteLength, this.stream);
    if (host instanceof Int32Array) this.wroteInts(c, rangeOf(host));
  }
  view(t: Tensor, offset: number, shape: readonly number[]): Tensor {
    const c = cu('view', t);
    const size = checkShapeValid('view', shape);
    if (!Number.isInteger(offset) || offset < 0 || offset + size > c.size) {
      throw new ShapeError('view', `elements [${offset}, ${offset + size}) outside a tensor of ${c.size}`, [c.shape, shape]);
    }
    return new CudaTensor([...shape], c.dtype, c.ptr === 0 ? 0 : c.ptr + offset * ES(c), null, c);
  }
  copy(dst: Tensor, src: Tensor): void {
    const d = cu('copy', dst);
    const s = cu('copy', src);
    sameSize('copy', d, s);
    if ((d.dtype === 'int32') !== (s.dtype === 'int32')) throw new ShapeError('copy', `cannot copy ${s.dtype} into ${d.dtype}`);
    if (d.dtype !== s.dtype) this.convert(d.ptr, s.ptr, d.size, bfMask(d, s));
    else if (d.size && d.ptr !== s.ptr) {
      this.driver.memcpyDtoDAsync(d.ptr, s.ptr, d.size * ES(d), this.stream);
      this.wroteInts(d, this.ints.get(s.root));
    }
  }
  fill(t: Tensor, value: number): void {
    const c = cu('fill', t);
    if (!c.size) return;
    if (c.dtype === 'bfloat16') return this.driver.memsetD16Async(c.ptr, toBf16Bits([value])[0]!, c.size, this.stream);
    // the 32-bit pattern the CPU's typed-array fill would store
    const bits = new Uint32Array(c.dtype === 'int32' ? new Int32Array([value]).buffer : new Float32Array([value]).buffer)[0]!;
    this.driver.memsetD32Async(c.ptr, bits, c.size, this.stream);
    this.wroteInts(c, [value, value]);
  }
  memory(): MemoryStats {
    return { liveBytes: this.live, peakBytes: this.peak, liveTensors: this.liveCount };
  }
  resetPeak(): void {
    this.peak = this.live;
  }
  synchronize(): void {
    this.driver.streamSynchronize(this.stream);
  }
  close(): void {
    if (this.closed) return;
    for (const k of this.repeat) {
      if (!this.repeatSeen.has(k)) process.stderr.write(`MOE_DIFFUSEQ_REPEAT_KERNELS: kernel ${k} was never launched\n`);
    }
    try {
      this.driver.streamSynchronize(this.stream);
    } finally {
      this.closed = true;
      this.alloc.emptyCache();
      try {
        this.lt?.destroy();
      } catch {
        /* the rest of close() must still run; cuBLASLt's handle goes with the context anyway */
      }
      this.cublas.destroy();
      if (this.cublasWorkspace) this.driver.memFree(this.cublasWorkspace);
      for (const tab of this.tables.values()) this.driver.memFree(tab);
      this.tables.clear();
      for (const m of this.modules.values()) this.driver.moduleUnload(m);
      this.modules.clear();
      this.functions.clear();
      this.driver.streamDestroy(this.stream);
      this.driver.streamDestroy(this.readStream);
      const k = koffi();
      k.free(this.argMem);
      k.free(this.argPtrs);
      k.free(this.tmapMem);
      if (this.pdl) k.free(this.pdl.config);
      this.driver.primaryCtxRelease(this.dev);
    }
  }

  // ---- randomness ----------------------------------------------------------------------------
  randomNormal(out: Tensor, seed: number, offset: number, std = 1): void {
    const o = cu('randomNormal', out);
    expectDtype('randomNormal', 'out', o, 'float32');
    checkSeed('philox', seed, offset);
    this.launchN('random_normal_f32', Math.ceil(o.size / 4) + 1, [P(o), L(o.size), U(seed % TWO32), U(Math.floor(seed / TWO32)), UL(offset), D(std)]);
  }
  randomUniform(out: Tensor, seed: number, offset: number): void {
    const o = cu('randomUniform', out);
    expectDtype('randomUniform', 'out', o, 'float32');
    checkSeed('philox', seed, offset);
    this.launchN('random_uniform_f32', Math.ceil(o.size / 4) + 1, [P(o), L(o.size), U(seed % TWO32), U(Math.floor(seed / TWO32)), UL(offset)]);
  }

  // ---- elementwise and reductions ------------------------------------------------------------
  axpby(out: Tensor, alpha: number, x: Tensor, beta = 0, y?: Tensor): void {
    const op = 'axpby';
    const o = cu(op, out);
    const xs = cu(op, x);
    const ys = y ? cu(op, y) : null;
    floats(op, out, x, y);
    sameSize(op, out, x, ...(y ? [y] : []));
    if (byFours(o.size, o.ptr, xs.ptr, ys ? ys.ptr : 0)) {
      this.launchN('axpby_x4', o.size / 4, [P(o), P(xs), P(ys), B(!!ys), D(alpha), D(beta), L(o.size / 4), BFM(o, xs, ys)]);
    } else {
      this.launchN('axpby_f32', o.size, [P(o), P(xs), P(ys), B(!!ys), D(alpha), D(beta), L(o.size), BFM(o, xs, ys)]);
    }
  }
  mul(out: Tensor, x: Tensor, y: Tensor): void {
    const op = 'mul';
    sameFloat(op, out, x, y);
    sameSize(op, out, x, y);
    const o = cu(op, out);
    this.launchN('mul_f32', o.size, [P(o), P(cu(op, x)), P(cu(op, y)), L(o.size)]);
  }
  addBroadcast(out: Tensor, x: Tensor, y: Tensor, dims: readonly [number, number, number], yShape: readonly [number, number, number]): void {
    const op = 'addBroadcast';
    floats(op, out, x, y);
    const [Pd, Q, R] = dims;
    checkBroadcast(op, dims, yShape);
    expectSize(op, 'x', x, Pd * Q * R);
    expectSize(op, 'out', out, Pd * Q * R);
    expectSize(op, 'y', y, yShape[0] * yShape[1] * yShape[2]);
    const [o, a, b] = [cu(op, out), cu(op, x), cu(op, y)];
    if (R % 8 === 0 && bf16Vectors(Pd * Q * R, o, a) && b.ptr % 16 === 0) {
      this.launchN('add_broadcast_bf16x8', (Pd * Q * R) / 8, [P(o), P(a), P(b), I(Pd), I(Q), I(R / 8), B(yShape[0] === 1), B(yShape[1] === 1), B(b.dtype === 'bfloat16')]);
      return;
    }
    this.launchN('add_broadcast_f32', Pd * Q * R, [P(o), P(a), P(b), L(Pd), L(Q), L(R), B(yShape[0] === 1), B(yShape[1] === 1), BFM(out, x, y)]);
  }
  reduceBroadcast(dy: Tensor, dout: Tensor, dims: readonly [number, number, number], yShape: readonly [number, number, number], accumulate: boolean): void {
    const op = 'reduceBroadcast';
    floats(op, dy, dout);
    const [Pd, Q, R] = dims;
    checkBroadcast(op, dims, yShape);
    expectSize(op, 'dout', dout, Pd * Q * R);
    expectSize(op, 'dy', dy, yShape[0] * yShape[1] * yShape[2]);
    this.launchN('reduce_broadcast_f32', dy.size, [P(cu(op, dy)), P(cu(op, dout)), L(Pd), L(Q), L(R), B(yShape[0] === 1), B(yShape[1] === 1), B(accumulate), BFM(dy, dout)]);
  }
  stridedCopy(dst: Tensor, src: Tensor, p: { count: number; length: number; srcOffset: number; srcStride: number; dstOffset: number; dstStride: number; accumulate?: boolean }): void {
    const op = 'stridedCopy';
    const d = cu(op, dst);
    const s = cu(op, src);
    if ((d.dtype === 'int32') !== (s.dtype === 'int32')) throw new ShapeError(op, `cannot copy ${s.dtype} into ${d.dtype}`);
    const { count, length } = p;
    if (count <= 0 || length <= 0) return;
    const srcEnd = p.srcOffset + (count - 1) * p.srcStride + length;
    const dstEnd = p.dstOffset + (count - 1) * p.dstStride + length;
    if (p.srcOffset < 0 || p.dstOffset < 0 || p.srcStride < 0 || p.dstStride < 0 || srcEnd > s.size || dstEnd > d.size) {
      throw new ShapeError(op, `block copy of ${count} x ${length} reaches past its operands (src ${s.size}, dst ${d.size} elements)`, [s.shape, d.shape]);
    }
    const sfx = d.dtype === 'int32' ? 'i32' : 'f32';
    // copied ids keep the source's bound; added ones have none the host knows
    this.wroteInts(d, p.accumulate ? null : this.ints.get(s.root));
    // the float kernels take the dtype mask last (either side float32 or bfloat16)
    const bfArg: Arg[] = sfx === 'f32' ? [BFM(d, s)] : [];
    const acc = !!p.accumulate;
    if (count === 1 || p.dstStride >= length) {
      // destination blocks are disjoint: every element in parallel (bf16 in whole 16-byte vectors
      // when everything lines up)
      const v8 = [length, p.srcOffset, p.srcStride, p.dstOffset, p.dstStride].every((n) => n % 8 === 0);
      if (!acc && v8 && bf16Vectors(count * length, d, s) && Math.max(srcEnd, dstEnd) < 2 ** 31) {
        this.launchN('strided_copy_bf16x8', (count * length) / 8, [P(d), P(s), I(count), I(length / 8), I(p.srcOffset / 8), I(p.srcStride / 8), I(p.dstOffset / 8), I(p.dstStride / 8)]);
        return;
      }
      this.launchN(`strided_copy_${sfx}`, count * length, [P(d), P(s), L(count), L(length), L(p.srcOffset), L(p.srcStride), L(p.dstOffset), L(p.dstStride), B(acc), ...bfArg]);
    } else if (p.dstStride === 0 && acc) {
      // every block adds into one row: one thread per element, blocks in order
      this.launchN(`strided_reduce_${sfx}`, length, [P(d), P(s), L(count), L(length), L(p.srcOffset), L(p.srcStride), L(p.dstOffset), ...bfArg]);
    } else {
      // overlapping destination blocks: one launch per block keeps the CPU's order (the last write wins)
      for (let c = 0; c < count; c++) {
        this.launchN(`strided_copy_${sfx}`, length, [P(d), P(s), L(1), L(length), L(p.srcOffset + c * p.srcStride), L(0), L(p.dstOffset + c * p.dstStride), L(0), B(acc), ...bfArg]);
      }
    }
  }
  rowSquaredDistance(out: Tensor, a: Tensor, b?: Tensor): void {
    const op = 'rowSquaredDistance';
    sameFloat(op, out, a, b);
    if (b) sameSize(op, a, b);
    const C = lastDim(a);
    const R = rowsOf(a);
    expectSize(op, 'out', out, R);
    this.launchRows('row_sq_dist_f32', R, [P(cu(op, out)), P(cu(op, a)), P(b ? cu(op, b) : null), B(!!b), L(R), L(C)]);
  }
  scaleRows(out: Tensor, x: Tensor, scale: Tensor, accumulate: boolean): void {
    const op = 'scaleRows';
    sameFloat(op, out, x, scale);
    sameSize(op, out, x);
    const C = lastDim(x);
    const R = rowsOf(x);
    expectSize(op, 'scale', scale, R);
    this.launchN('scale_rows_f32', R * C, [P(cu(op, out)), P(cu(op, x)), P(cu(op, scale)), L(R), L(C), B(accumulate)]);
  }
  addNormGradient(dx: Tensor, x: Tensor, sumSq: Tensor, coef: number): void {
    const op = 'addNormGradient';
    sameFloat(op, dx, x, sumSq);
    sameSize(op, dx, x);
    expectSize(op, 'sumSq', sumSq, 1);
    this.launchN('add_norm_grad_f32', x.size, [P(cu(op, dx)), P(cu(op, x)), P(cu(op, sumSq)), L(x.size), D(coef)]);
  }
  sum(x: Tensor): number {
    return this.reduceSum('sum', x, false);
  }
  sumSquares(x: Tensor): number {
    return this.reduceSum('sumSquares', x, true);
  }
  private reduceSum(op: string, x: Tensor, squares: boolean): number {
    const t = cu(op, x);
    if (t.dtype !== 'int32') sameFloat(op, t);
    if (!t.size) return 0;
    const blocks = Math.min(Math.ceil(t.size / BLOCK), 1024);
    const part = this.scratch(blocks * 8);
    try {
      this.launch('sum_partials', blocks, BLOCK, [A(part.ptr), P(t), L(t.size), B(t.dtype === 'int32'), B(squares)]);
      const host = new Float64Array(blocks);
      this.driver.memcpyDtoH(host, part.ptr, blocks * 8);
      let s = 0;
      for (let i = 0; i < blocks; i++) s += host[i]!;
      return s;
    } finally {
      part.free();
    }
  }

  // ---- matmul --------------------------------------------------------------------------------
  matmul(out: Tensor, a: Tensor, b: Tensor, opts: MatmulOptions = {}): void {
    const op = 'matmul';
    live(op, out, a, b, opts.bias, opts.gelu?.pre);
    floats(op, out, a, b, opts.bias, opts.gelu?.pre);
    if (opts.bias && opts.bias.dtype !== 'float32' && !(opts.bias.dtype === 'bfloat16' && out.dtype === 'bfloat16')) {
      throw new DTypeError(op, `bias must be float32 (or bfloat16 with a bfloat16 out), got ${opts.bias.dtype} with ${out.dtype} out`);
    }
    if (opts.gelu && opts.gelu.pre.dtype !== out.dtype) throw new DTypeError(op, `gelu.pre must be ${out.dtype} like out, got ${opts.gelu.pre.dtype}`);
    if (a.shape.length < 2 || b.shape.length < 2) throw new ShapeError(op, 'operands must have rank >= 2', [a.shape, b.shape]);
    const transA = !!opts.transA;
    const transB = !!opts.transB;
    let M: number, K: number, batch: number;
    let sab = 0;
    let sbb = 0;
    let scb = 0;
    const bR = b.shape[b.shape.length - 2]!;
    const bC = b.shape[b.shape.length - 1]!;
    const N = transB ? bR : bC;
    const Kb = transB ? bC : bR;
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
    const o = cu(op, out);
    // a bfloat16 bias alone (no GELU) in cuBLASLt's epilogue where it has an algorithm for it
    const bias16 = opts.bias?.dtype === 'bfloat16';
    const biased = this.gemm({
      transA, transB, M, N, K,
      a: cu(op, a).ptr, lda: transA ? M : K, strideA: sab,
      b: cu(op, b).ptr, ldb: transB ? K : N, strideB: sbb,
      c: o.ptr, ldc: N, strideC: scb,
      alpha: opts.alpha ?? 1, beta: opts.beta ?? 0, batch,
    }, a.dtype, b.dtype, out.dtype, bias16 && !opts.gelu ? cu(op, opts.bias!).ptr : 0);
    if ((opts.bias && !biased) || opts.gelu) this.biasAct(o.ptr, batch * M, N, opts.bias && !biased ? cu(op, opts.bias).ptr : 0, opts.gelu ? cu(op, opts.gelu.pre).ptr : 0, out.dtype, bias16);
  }

  /**
   * Row-major GEMM through cuBLAS, A, B and C of the given dtypes; empty products handled here
   * (cuBLAS rejects some of them). All float32: a float32 product (unless the backend's matmul
   * option says bfloat16). Any bfloat16: a bfloat16 product, float32 operands rounded into scratch.
   * With `bias16` (the address of a bfloat16 bias [N]; bf16 C only): true when cuBLASLt added it in
   * the product's epilogue, false when the caller must add it.
   */
  private gemm(p: RowMajorGemm, aType: DType = 'float32', bType: DType = 'float32', cType: DType = 'float32', bias16 = 0): boolean {
    if (this.closed) throw new DeviceError(`${this.name}: used after close()`);
    if (p.M === 0 || p.N === 0 || p.batch === 0) return false;
    const c16 = cType === 'bfloat16';
    if (p.K === 0) {
      // C = beta C: nothing to multiply
      this.launchN('scale_f32', p.batch * p.M * p.N, [A(p.c), L(p.batch * p.M * p.N), D(p.beta), B(c16)]);
      return false;
    }
    let biased = false;
    if (this.matmulPrecision === 'float32' && aType !== 'bfloat16' && bType !== 'bfloat16' && !c16) {
      this.cublasGemm(p, 'f32');
    } else {
      // bf16 operands: round the spans of A and B that the product reads into scratch, same layout
      const span = (rows: number, ld: number, stride: number) => (p.batch - 1) * stride + rows * ld;
      const rounded = (ptr: number, type: DType, n: number) => (type === 'bfloat16' ? { ptr, free: () => undefined } : this.bf16Copy(ptr, n));
      const a16 = rounded(p.a, aType, span(p.transA ? p.K : p.M, p.lda, p.strideA));
      try {
        const b16 = rounded(p.b, bType, span(p.transB ? p.N : p.K, p.ldb, p.strideB));
        try {
          const p16: RowMajorGemm = { ...p, a: a16.ptr, b: b16.ptr, operands: 'bfloat16', output: c16 ? 'bfloat16' : 'float32' };
          biased = c16 && bias16 !== 0 && this.ltGemmBias(p16, bias16);
          if (!biased) this.cublasGemm(p16, 'bf16');
        } finally {
          b16.free();
        }
      } finally {
        a16.free();
      }
    }
    if (this.syncEachLaunch) this.driver.streamSynchronize(this.stream, 'after cublasGemmStridedBatchedEx');
    return biased;
  }
  /** A bf16 product with its bfloat16 bias in cuBLASLt's epilogue, timed as `gemm+bias ...` in the kernel profile; false where cuBLASLt declines. */
  private ltGemmBias(p: RowMajorGemm, bias16: number): boolean {
    if (!this.lt) return false;
    const t0 = this.launchTimes ? this.timedStart() : 0;
    const done = this.lt.gemmBias(p, bias16);
    if (done && this.launchTimes) {
      const shape = [p.M, p.N, p.K].map(roughDim).join('x');
      this.timedEnd(`gemm+bias bf16 ${p.transA ? 'T' : 'N'}${p.transB ? 'T' : 'N'} ${shape} -> bf16`, t0);
    }
    return done;
  }
  /** One cuBLAS call, timed under its shape in the kernel profile (options.launchTimes). */
  private cublasGemm(p: RowMajorGemm, operands: 'f32' | 'bf16'): void {
    const t0 = this.launchTimes ? this.timedStart() : 0;
    this.cublas.gemm(p);
    if (this.launchTimes) {
      const shape = [p.M, p.N, p.K].map(roughDim).join('x');
      this.timedEnd(`gemm ${operands} ${p.transA ? 'T' : 'N'}${p.transB ? 'T' : 'N'} ${shape}${p.batch > 1 ? ` x${p.batch}` : ''} -> ${p.output === 'bfloat16' ? 'bf16' : 'f32'}`, t0);
    }
  }
  /** n float32 values at `ptr` rounded to bfloat16 into scratch (freed by the caller). */
  private bf16Copy(ptr: number, n: number): { ptr: number; free: () => void } {
    const t = this.scratch(n * 2);
    this.convert(t.ptr, ptr, n, 1); // bit 0: the destination is bf16
    return t;
  }
  /** n floats from src to dst between float32 and bfloat16 (mask bit 0: dst is bf16, bit 1: src). */
  private convert(dst: number, src: number, n: number, bf: number): void {
    // groups of four over the aligned front, element by element for the last n % 4
    const n4 = byFours(0, dst, src) ? Math.floor(n / 4) : 0;
    if (n4) this.launchN('convert_float_x4', n4, [A(dst), A(src), L(n4), I(bf)]);
    const done = 4 * n4;
    const es = (bit: number): number => ((bf >> bit) & 1 ? 2 : 4);
    if (done < n) this.launchN('convert_float', n - done, [A(dst + done * es(0)), A(src + done * es(1)), L(n - done), I(bf)]);
  }

  /**
   * A float32 weight as the operand of products that run in bf16 anyway (any bf16 operand or output,
   * or the bf16 matmul option): rounded once, whole, into scratch, so that the per-expert GEMMs of a
   * grouped product do not each round their slice again (878 conversion launches in a base step).
   * Otherwise the weight itself. `free` returns the scratch.
   */
  private weightOperand(w: CudaTensor, bf16Product: boolean): { ptr: number; dtype: DType; free: () => void } {
    // a bf16 weight of a cast (Denoiser.castWeights) sits at its parameter's offset, 16-byte aligned
    // only where that offset is a multiple of 8 (not after a 4-element expert_bias, say): copied into
    // aligned scratch so that the one-launch grouped kernels still serve it
    if (w.dtype === 'bfloat16' && w.ptr % 16 !== 0 && w.size > 0) {
      const t = this.scratch(w.size * 2);
      this.convert(t.ptr, w.ptr, w.size, 3);
      return { ...t, dtype: 'bfloat16' };
    }
    if (w.dtype === 'bfloat16' || !(bf16Product || this.matmulPrecision === 'bfloat16') || w.size === 0) return { ptr: w.ptr, dtype: w.dtype, free: () => undefined };
    return { ...this.bf16Copy(w.ptr, w.size), dtype: 'bfloat16' };
  }

  /**
   * Whether grouped_gemm.cu serves a grouped product of `rows` rows of activations `a` and the weight
   * operand `w`, with output width `nOut` and reduction `kRed`: the grouped option (mma or wgmma, or
   * auto up to GROUPED_MMA_ROWS rows) and the kernels' operand conditions (groupedOperands).
   */
  private groupedMma(a: CudaTensor, w: { ptr: number; dtype: DType }, nOut: number, kRed: number, rows: number): boolean {
    const mma = this.groupedKernel === 'mma' || this.groupedKernel === 'wgmma' || (this.groupedKernel === 'auto' && rows <= GROUPED_MMA_ROWS);
    return mma && groupedOperands(a, w, nOut, kRed) && this.sharedOptin >= GROUPED_SHARED;
  }
  /**
   * Whether grouped_wgmma.cu's kernels are on: `grouped` is `auto` or `wgmma` and the card is sm_90
   * (the file is built for sm_90a). They serve the grouped forward products (with `wgmma` the backward too) and the bf16x3
   * vocabulary scoring (score_argmax_wgmma; `grouped: 'mma'` or `'cublas'` scores through cuBLAS).
   */
  private wgmmaOn(): boolean {
    return (this.groupedKernel === 'auto' || this.groupedKernel === 'wgmma') && this.arch === 90;
  }
  /**
   * Whether grouped_wgmma.cu serves a grouped product (`auto` or `wgmma`, at any row count):
   * an sm_90 card (the kernel is built for sm_90a), the operand conditions of groupedOperands, and
   * GROUPED_WGMMA_SHARED bytes of shared memory per block.
   */
  private groupedWgmma(a: CudaTensor, w: { ptr: number; dtype: DType }, nOut: number, kRed: number): boolean {
    return this.wgmmaOn() && groupedOperands(a, w, nOut, kRed) && this.sharedOptin >= GROUPED_WGMMA_SHARED;
  }
  /**
   * The experts' row offsets [E + 1] on the device: a routing's own (`onDevice`), or made from the
   * host counts and copied on the stream (no wait); free after use.
   */
  private expertOffsets(groups: ExpertGroups, onDevice: number): { ptr: number; free: () => void } {
    if (onDevice) return { ptr: onDevice, free: () => undefined };
    const counts = countsOf(groups);
    const off = new Int32Array(counts.length + 1);
    for (let e = 0; e < counts.length; e++) off[e + 1] = off[e]! + counts[e]!;
    const d = this.scratch(off.byteLength);
    this.driver.memcpyHtoDAsync(d.ptr, off, off.byteLength, this.stream);
    return d;
  }
  /**
   * One launch of a grouped product kernel (grouped_gemm.cu's, or grouped_wgmma.cu's: 64-, 128- or
   * 256-row tiles, the last filled by TMA where the driver encodes tensor maps): C (A's `rows` rows
   * grouped by expert) = A times each expert's weight, with the epilogue `flags` ask for. The experts' offsets: `onDevice`
   * (a routing's, with a grid for the most row tiles `rows` rows can make in E groups), else from
   * the host counts (with the exact grid).
   */
  private groupedGemm(op: 'nt' | 'nn' | 'wgmma_nt' | 'wgmma_nn', c: number, a: number, w: number, groups: ExpertGroups, onDevice: number, E: number, rows: number, kRed: number, nOut: number, bias: number, pre: number, flags: number): void {
    if (rows === 0 || nOut === 0) return;
    // few rows (sampling): the wgmma kernel with one warpgroup and 64-row tiles, three blocks per SM
    const small = op === 'wgmma_nt' && rows <= this.wgmma64Rows && this.sharedOptin >= GROUPED_WGMMA64_SHARED;
    // many rows (training, sampling): four warpgroups on 256-row tiles (GROUPED_TMA256P_ROWS, or
    // GROUPED_WGMMA256_ROWS without the persistent TMA kernel)
    const large = op === 'wgmma_nt' && !small && rows >= this.wgmma256Rows && this.sharedOptin >= GROUPED_WGMMA256_SHARED;
    // their stages by TMA: the operands as tensor maps (a tensor map cannot have an empty dimension)
    const tma = large && this.groupedTma && kRed > 0;
    const bm = small ? 64 : large ? 256 : 128;
    const tiles = onDevice ? Math.ceil(rows / bm) + E : countsOf(groups).reduce((t, n) => t + Math.ceil(n / bm), 0);
    const offs = this.expertOffsets(groups, onDevice);
    try {
      const [name, shared, threads] = small
        ? ['grouped_wgmma64_nt_bf16', GROUPED_WGMMA64_SHARED, 128]
        : large
          ? [tma ? (this.groupedTma === 2 ? 'grouped_tma256p_nt_bf16' : 'grouped_tma256_nt_bf16') : 'grouped_wgmma256_nt_bf16', GROUPED_WGMMA256_SHARED, 512]
          : op === 'wgmma_nt' || op === 'wgmma_nn'
            ? [`grouped_${op}_bf16`, GROUPED_WGMMA_SHARED, 256]
            : [`grouped_gemm_${op}_bf16`, GROUPED_SHARED, 256];
      // the wgmma forward kernels take gelu_table_bf16's table for a GELU epilogue (0: computed)
      const tab = op === 'wgmma_nt' ? [A(flags & 4 ? this.geluTable() : 0)] : [];
      let operands: Arg[] = [A(c), A(a), A(w)];
      if (tma) {
        // A in boxes of 64 x 256, the weights as [E nOut, kRed] in boxes of 64 x 128; the TMA kernel
        // takes the two maps before C
        this.driver.tensorMapBf16(this.tensorMapSlot(0), a, rows, kRed, 64, 256);
        this.driver.tensorMapBf16(this.tensorMapSlot(1), w, E * nOut, kRed, 64, 128);
        operands = [['tmap', 0], ['tmap', 1], A(c)];
      }
      // the persistent TMA kernel: a block an SM at most, each walking its tiles
      const grid = tiles * Math.ceil(nOut / 128);
      this.launch(name, tma && this.groupedTma === 2 ? Math.min(grid, this.smCount) : grid, threads, [...operands, A(offs.ptr), I(E), I(kRed), I(nOut), A(bias), A(pre), I(flags), ...tab], shared);
    } finally {
      offs.free();
    }
  }
  /**
   * The shape of a grouped product and how its rows split: [E, N, K] from the weight, the rows A,
   * and the device address of the experts' offsets when `groups` is a routing that has them (then
   * the counts are not read: reading them would wait for the device).
   */
  private groups(op: string, weight: Tensor, groups: ExpertGroups): { E: number; N: number; K: number; Acount: number; onDevice: number } {
    if (groups instanceof CudaRouting && groups.offsets !== 0) {
      const [E, N, K] = groupedShape(op, weight, null);
      if (groups.experts !== E) throw new ShapeError(op, `the routing has ${groups.experts} experts, the weight ${E}`, [weight.shape]);
      return { E, N, K, Acount: groups.order.size, onDevice: groups.offsets };
    }
    const counts = countsOf(groups);
    const [E, N, K] = groupedShape(op, weight, counts);
    return { E, N, K, Acount: counts.reduce((a, b) => a + b, 0), onDevice: 0 };
  }

  /**
   * rows x N block at address c (of `dtype`, and `pre` with it): += bias (a float32 address, or a
   * bfloat16 one with `bias16`, or 0); GELU with the pre-activation saved at `pre` (or 0).
   */
  private biasAct(c: number, rows: number, N: number, bias: number, pre: number, dtype: DType, bias16 = false): void {
    const bf = dtype === 'bfloat16' ? 3 : 0;
    // hasBias: 0 none, 1 float32, 2 bfloat16
    const hb = I(bias === 0 ? 0 : bias16 ? 2 : 1);
    if (bf && N % 8 === 0 && rows * N < 2 ** 31 && c % 16 === 0 && pre % 16 === 0) {
      this.launchN('bias_act_bf16x8', (rows * N) / 8, [A(c), I(rows), I(N), A(bias), hb, A(pre), B(pre !== 0), A(pre !== 0 ? this.geluTable() : 0)]);
      return;
    }
    if (bf && N % 2 === 0 && rows * N < 2 ** 31 && c % 4 === 0 && pre % 4 === 0) {
      this.launchN('bias_act_bf16x2', (rows * N) / 2, [A(c), I(rows), I(N), A(bias), hb, A(pre), B(pre !== 0)]);
      return;
    }
    this.launchN('bias_act_f32', rows * N, [A(c), L(rows), L(N), A(bias), hb, A(pre), B(pre !== 0), I(bf)]);
  }

  biasBackward(db: Tensor, dy: Tensor, accumulate: boolean): void {
    const op = 'biasBackward';
    floats(op, dy);
    expectDtype(op, 'db', db, 'float32');
    const N = db.size;
    if (dy.size % Math.max(N, 1) !== 0 || lastDim(dy) !== N) throw new ShapeError(op, `dy's last dimension must be ${N}`, [db.shape, dy.shape]);
    this.colSums(cu(op, db).ptr, 0, cu(op, dy).ptr, 0, 0, 0, dy.size / Math.max(N, 1), N, accumulate, bfMask(dy));
  }

  /**
   * Column sums of a [R, C] matrix at `dy` into float32 `outB` (+ with `accumulate`); with `x`
   * (LayerNorm: mean and rstd per row) also the sums of dy * xhat into `outA`. `bf`: bit 0 dy,
   * bit 1 x bfloat16. Two kernels: float64 partial sums over chunks of rows in parallel, then a
   * fixed-order sum of the chunks.
   */
  private colSums(outB: number, outA: number, dy: number, x: number, mean: number, rstd: number, R: number, C: number, accumulate: boolean, bf: number): void {
    const ln = x !== 0;
    // bf16 rows of whole 16-byte vectors: eight columns a thread; pairs of columns where C is even
    // and the rows start on a pair's alignment; else one
    const vec8 = (bf & 1) === 1 && (!ln || (bf & 2) === 2) && C % 8 === 0 && [dy, ln ? x : 0].every((p) => p % 16 === 0);
    const pairs = C % 2 === 0 && [dy, ln ? x : 0].every((p) => p % 8 === 0);
    const [name, W] = vec8 ? ['col_sums_partial_bf16x8', 8] : pairs ? ['col_sums_partial_x2', 2] : ['col_sums_partial_f32', 1];
    this.chunkedColSums(R, C, outB, outA, ln, accumulate, (part, n, rowsPerChunk) =>
      this.launch2(name, [Math.ceil(C / (32 * W)), n], [32, 8], [A(part), A(dy), A(x), A(mean), A(rstd), L(R), L(C), L(rowsPerChunk), B(ln), I(bf)]),
    );
  }
  /**
   * The two stages of a column sum over R rows and C columns: `partial` launches stage 1 (n chunks
   * of rowsPerChunk rows, colSumChunkRows' unless given, float64 partial[n][2][C]), then
   * col_sums_finish_f32 adds the chunks in order into outB (and outA with ln).
   */
  private chunkedColSums(R: number, C: number, outB: number, outA: number, ln: boolean, accumulate: boolean, partial: (part: number, n: number, rowsPerChunk: number) => void, rowsPerChunk = colSumChunkRows(R, C)): void {
    if (C <= 0) return;
    const n = Math.ceil(R / rowsPerChunk);
    const part = this.scratch(Math.max(n, 1) * 2 * C * 8);
    try {
      if (R > 0) partial(part.ptr, n, rowsPerChunk);
      this.launch2('col_sums_finish_f32', [Math.ceil(C / 32), 1], [32, 32], [A(outB), A(outA), A(part.ptr), L(R > 0 ? n : 0), L(C), B(ln), B(accumulate)]);
    } finally {
      part.free();
    }
  }
  /**
   * Expert bias gradients: out[e] += the column sums of dy's rows of expert e (counts in order), for
   * every expert in one pair of launches over chunks that never straddle two experts.
   */
  private segmentColSums(out: number, dy: number, counts: readonly number[], C: number, bf: number): void {
    const total = counts.reduce((a, b) => a + b, 0);
    if (C <= 0 || total === 0) return;
    const rowsPerChunk = colSumChunkRows(total, C);
    const chunks: number[] = [];
    const first = new Int32Array(counts.length + 1);
    let row = 0;
    counts.forEach((n, e) => {
      for (let r = 0; r < n; r += rowsPerChunk) chunks.push(row + r, row + Math.min(n, r + rowsPerChunk));
      row += n;
      first[e + 1] = chunks.length / 2;
    });
    const table = new Int32Array([...first, ...chunks]);
    const dev = this.scratch(table.byteLength);
    const part = this.scratch((chunks.length / 2) * C * 8);
    try {
      this.driver.memcpyHtoDAsync(dev.ptr, table, table.byteLength, this.stream);
      const firstPtr = dev.ptr, chunksPtr = dev.ptr + first.byteLength;
      if ((bf & 1) === 1 && C % 8 === 0 && dy % 16 === 0) {
        // bf16 rows of whole 16-byte vectors: eight columns a thread (the chunks sized for one)
        this.launch2('col_sums_segments_bf16x8', [Math.ceil(C / 256), chunks.length / 2], [32, 8], [A(part.ptr), A(dy), A(chunksPtr), L(C)]);
      } else this.launch2('col_sums_segments_partial', [Math.ceil(C / 32), chunks.length / 2], [32, 8], [A(part.ptr), A(dy), A(chunksPtr), L(C), I(bf)]);
      this.launchN('col_sums_segments_finish', counts.length * C, [A(out), A(part.ptr), A(firstPtr), L(counts.length), L(C), I(1)]);
    } finally {
      part.free();
      dev.free();
    }
  }

  // ---- activations, softmax, layernorm --------------------------------------------------------
  activation(out: Tensor, x: Tensor, kind: Activation): void {
    const op = `activation(${kind})`;
    floats(op, out, x);
    sameSize(op, out, x);
    const [o, i] = [cu(op, out), cu(op, x)];
    if (kind === 'gelu' && bf16Vectors(x.size, o, i)) {
      this.launchN('gelu_bf16x8', x.size / 8, [P(o), P(i), I(x.size / 8), A(this.geluTable())]);
      return;
    }
    if (kind === 'gelu' && bf16Pairs(x.size, 1, o, i)) {
      this.launchN('gelu_bf16x2', x.size / 2, [P(o), P(i), I(x.size / 2)]);
      return;
    }
    if (bf16Vectors(x.size, o, i)) {
      this.launchN('activation_bf16x8', x.size / 8, [P(o), P(i), I(x.size / 8), I(actKind(kind))]);
      return;
    }
    this.launchN('activation_f32', x.size, [P(o), P(i), L(x.size), I(actKind(kind)), BFM(out, x)]);
  }
  activationBackward(dx: Tensor, dy: Tensor, x: Tensor, kind: Activation, accumulate: boolean): void {
    const op = `activationBackward(${kind})`;
    floats(op, dx, dy, x);
    sameSize(op, dx, dy, x);
    const [a, b, c] = [cu(op, dx), cu(op, dy), cu(op, x)];
    if (kind === 'gelu' && bf16Vectors(x.size, a, b, c)) {
      this.launchN('gelu_backward_bf16x8', x.size / 8, [P(a), P(b), P(c), I(x.size / 8), B(accumulate), A(this.geluGradTable())]);
      return;
    }
    if (kind === 'gelu' && bf16Pairs(x.size, 1, a, b, c)) {
      this.launchN('gelu_backward_bf16x2', x.size / 2, [P(a), P(b), P(c), I(x.size / 2), B(accumulate)]);
      return;
    }
    if (bf16Vectors(x.size, a, b, c)) {
      this.launchN('activation_backward_bf16x8', x.size / 8, [P(a), P(b), P(c), I(x.size / 8), I(actKind(kind)), B(accumulate)]);
      return;
    }
    this.launchN('activation_backward_f32', x.size, [P(a), P(b), P(c), L(x.size), I(actKind(kind)), B(accumulate), BFM(dx, dy, x)]);
  }
  softmax(out: Tensor, x: Tensor): void {
    const op = 'softmax';
    sameFloat(op, out, x);
    sameSize(op, out, x);
    const C = lastDim(x);
    const R = rowsOf(x);
    this.launchRows('softmax_f32', R, [P(cu(op, out)), P(cu(op, x)), L(R), L(C)]);
  }
  softmaxBackward(dx: Tensor, dy: Tensor, y: Tensor): void {
    const op = 'softmaxBackward';
    sameFloat(op, dx, dy, y);
    sameSize(op, dx, dy, y);
    const C = lastDim(y);
    const R = rowsOf(y);
    this.launchRows('softmax_backward_f32', R, [P(cu(op, dx)), P(cu(op, dy)), P(cu(op, y)), L(R), L(C)]);
  }
  layerNorm(out: Tensor, mean: Tensor, rstd: Tensor, x: Tensor, weight: Tensor, bias: Tensor, eps: number): void {
    const op = 'layerNorm';
    floats(op, out, x);
    sameFloat(op, mean, rstd, weight, bias);
    const { R, C } = layerNormShapes(op, out, mean, rstd, x, weight, bias);
    if (this.layerNormVec(op, out, mean, rstd, null, x, null, weight, bias, eps, R, C)) return;
    if (bf16Pairs(C, R, cu(op, out), cu(op, x))) {
      this.launch('layernorm_bf16_warp', Math.min(Math.ceil(R / 8), MAX_GRID), BLOCK, [P(cu(op, out)), P(cu(op, mean)), P(cu(op, rstd)), P(cu(op, x)), P(cu(op, weight)), P(cu(op, bias)), I(R), I(C), F(eps)]);
      return;
    }
    this.launchRows('layernorm_f32', R, [P(cu(op, out)), P(cu(op, mean)), P(cu(op, rstd)), P(cu(op, x)), P(cu(op, weight)), P(cu(op, bias)), L(R), L(C), D(eps), BFM(out, x)]);
  }
  addLayerNorm(sum: Tensor, out: Tensor, mean: Tensor, rstd: Tensor, a: Tensor, b: Tensor, weight: Tensor, bias: Tensor, eps: number, bBias?: Tensor | null): void {
    const op = 'addLayerNorm';
    // every shape checked before sum is written: a bad call changes nothing
    floats(op, sum, a, b, out);
    sameFloat(op, mean, rstd, weight, bias, bBias);
    sameSize(op, sum, a, b);
    const { R, C } = layerNormShapes(op, out, mean, rstd, a, weight, bias);
    if (bBias) {
      expectSize(op, 'bBias', bBias, C);
      if (cu(op, sum).ptr === cu(op, a).ptr && cu(op, a).ptr !== cu(op, b).ptr) throw new ShapeError(op, 'with bBias, sum may alias b but not a', [sum.shape]);
    }
    if (this.layerNormVec(op, out, mean, rstd, sum, a, b, weight, bias, eps, R, C, bBias ?? null)) return;
    if (bBias) {
      this.addBroadcast(sum, b, bBias, [1, R, C], [1, 1, C]);
      this.axpby(sum, 1, a, 1, sum);
      this.layerNorm(out, mean, rstd, sum, weight, bias, eps);
      return;
    }
    this.axpby(sum, 1, a, 1, b);
    this.layerNorm(out, mean, rstd, sum, weight, bias, eps);
  }
  /**
   * layernorm_bf16_vec when it applies (lnVecFits): LayerNorm of x [R, C], or of sum = x + y
   * (written) when y is given, y first bf16(y + yBias) when yBias is; the caller has checked the
   * shapes. False when it does not apply (the
   * caller takes the general kernels).
   */
  private layerNormVec(op: string, out: Tensor, mean: Tensor, rstd: Tensor, sum: Tensor | null, x: Tensor, y: Tensor | null, weight: Tensor, bias: Tensor, eps: number, R: number, C: number, yBias: Tensor | null = null): boolean {
    const rows = [out, x, ...(sum ? [sum] : []), ...(y ? [y] : [])].map((t) => cu(op, t));
    const [w, b, mu] = [weight, bias, mean].map((t) => cu(op, t)) as [CudaTensor, CudaTensor, CudaTensor];
    const yb = yBias ? cu(op, yBias) : null;
    if (!lnVecFits(C, rows, [w, b, ...(yb ? [yb] : [])], mu)) return false;
    if (R) {
      this.launch(lnVecKernel(C), Math.min(Math.ceil(R / (BLOCK_LN / 32)), MAX_GRID), BLOCK_LN, [P(rows[0]!), P(mu), P(cu(op, rstd)), A(sum ? cu(op, sum).ptr : 0), P(rows[1]!), A(y ? cu(op, y).ptr : 0), A(yb ? yb.ptr : 0), P(w), P(b), I(R), I(C), F(eps)]);
    }
    return true;
  }
  layerNormBackward(dx: Tensor, dweight: Tensor, dbias: Tensor, dy: Tensor, x: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor, accumulate: boolean): void {
    const op = 'layerNormBackward';
    floats(op, dx, dy, x);
    sameFloat(op, dweight, dbias, weight, mean, rstd);
    sameSize(op, dx, dy);
    const { R, C } = layerNormShapes(op, dx, mean, rstd, x, dweight, dbias, ['dweight', 'dbias']);
    expectSize(op, 'weight', weight, C);
    const [g, gw, gb, d, a, w, mu, rs] = [dx, dweight, dbias, dy, x, weight, mean, rstd].map((t) => cu(op, t)) as [CudaTensor, CudaTensor, CudaTensor, CudaTensor, CudaTensor, CudaTensor, CudaTensor, CudaTensor];
    const nv = lnVectorsPerLane(C);
    if (this.fusedSums && lnVecFits(C, [g, d, a], [w], mu) && nv <= 4 && R > 0) {
      // dx and the weight gradients' partial sums in one pass (rpc rows a block of 8 warps; the
      // block count from the shape alone, so the sums' order does not depend on the card)
      const blocks = Math.min(LN_SUM_BLOCKS, Math.ceil(R / 64));
      const rpc = Math.ceil(R / blocks);
      this.chunkedColSums(R, C, gb.ptr, gw.ptr, true, true, (part, n) =>
        this.launch(`layernorm_backward_sums_bf16_vec${nv}`, n, 256, [P(g), P(d), P(a), P(w), P(mu), P(rs), I(R), I(C), I(rpc), B(accumulate), A(part)]),
        rpc);
      return;
    }
    // the weight gradients first: dx may alias dy
    this.colSums(gb.ptr, gw.ptr, d.ptr, a.ptr, mu.ptr, rs.ptr, R, C, true, bfMask(d, a));
    if (lnVecFits(C, [g, d, a], [w], mu)) {
      if (R) this.launch('layernorm_backward_dx_bf16_vec', Math.min(Math.ceil(R / (BLOCK_LN / 32)), MAX_GRID), BLOCK_LN, [P(g), P(d), P(a), P(w), P(mu), P(rs), I(R), I(C), B(accumulate)]);
      return;
    }
    if (bf16Pairs(C, R, g, d, a)) {
      this.launch('layernorm_backward_dx_bf16_warp', Math.min(Math.ceil(R / 8), MAX_GRID), BLOCK, [P(g), P(d), P(a), P(w), P(mu), P(rs), I(R), I(C), B(accumulate)]);
      return;
    }
    this.launchRows('layernorm_backward_dx_f32', R, [P(g), P(d), P(a), P(w), P(mu), P(rs), L(R), L(C), B(accumulate), BFM(g, d, a)]);
  }

  // ---- embedding, cross-entropy ---------------------------------------------------------------
  /** Reads int32 indices back and throws IndexError for the first one outside [0, n). */
  /**
   * Throws an IndexError naming the first value of int32 `t` outside [0, n). Values the host knows
   * (IntRanges) are not read back; the ones it reads back and finds valid become known.
   */
  private checkIndices(op: string, t: CudaTensor, n: number, what: (v: number, i: number) => string): void {
    if (!t.size || this.ints.within(t.root, n)) return;
    const host = this.toArray(t) as Int32Array;
    for (let i = 0; i < host.length; i++) {
      const v = host[i]!;
      if (v < 0 || v >= n) throw new IndexError(op, what(v, i));
    }
    if (isWhole(t)) this.ints.wrote(t.root, true, [0, n - 1]);
  }
  /** int32 `t` was written with values within `range` (null: values the host cannot bound). */
  private wroteInts(t: CudaTensor, range: readonly [number, number] | null): void {
    if (t.dtype !== 'int32' || !t.size) return;
    this.ints.wrote(t.root, isWhole(t), this.recording ? null : range);
  }
  embedding(out: Tensor, table: Tensor, ids: Tensor): void {
    const op = 'embedding';
    sameFloat(op, out, table);
    expectDtype(op, 'ids', ids, 'int32');
    const [V, e] = matrixShape(op, 'table', table);
    expectSize(op, 'out', out, ids.size * e);
    const id = cu(op, ids);
    this.checkIndices(op, id, V, (v, m) => `id ${v} at position ${m} is outside the vocabulary [0, ${V})`);
    this.launchN('embedding_f32', ids.size * e, [P(cu(op, out)), P(cu(op, table)), P(id), L(ids.size), L(e)]);
  }
  embeddingBackward(dtable: Tensor, ids: Tensor, dout: Tensor): void {
    const op = 'embeddingBackward';
    sameFloat(op, dtable, dout);
    expectDtype(op, 'ids', ids, 'int32');
    const [V, e] = matrixShape(op, 'dtable', dtable);
    expectSize(op, 'dout', dout, ids.size * e);
    const id = cu(op, ids);
    this.checkIndices(op, id, V, (v, m) => `id ${v} at position ${m} is outside the vocabulary [0, ${V})`);
    this.launchN('embedding_backward_f32', ids.size * e, [P(cu(op, dtable)), P(id), P(cu(op, dout)), L(ids.size), L(e)]);
  }
  /**
   * On sm_90 with the wgmma kernels on and bf16 operands (x, table and dlogits), grouped_wgmma.cu's
   * xe_tied_stats / xe_tied_finish / xe_tied_grad: the logits computed per 128 x 128 tile and
   * reduced there (twice with dlogits: once for the log-sum-exp, once for the gradient), never
   * written. Otherwise the composition (matmul, then crossEntropy).
   */
  tiedCrossEntropy(loss: Tensor, dlogits: Tensor | null, x: Tensor, table: Tensor, targets: Tensor, weights: Tensor | null): void {
    const op = 'tiedCrossEntropy';
    const { R, V, K } = tiedShapes(op, loss, dlogits, x, table, targets, weights);
    live(op, loss, dlogits, x, table, targets, weights);
    const [xx, tb] = [cu(op, x), cu(op, table)];
    // (xe_tied_grad stores pairs of bf16: dlogits 4-byte aligned)
    const fused = this.wgmmaOn() && this.sharedOptin >= GROUPED_WGMMA_SHARED && xx.dtype === 'bfloat16' && tb.dtype === 'bfloat16' &&
      (!dlogits || (dlogits.dtype === 'bfloat16' && cu(op, dlogits).ptr % 4 === 0)) &&
      loss.dtype === 'float32' && (!weights || weights.dtype === 'float32') && K % 8 === 0 && xx.ptr % 16 === 0 && tb.ptr % 16 === 0 && V > 0;
    if (!fused) {
      tiedCrossEntropyComposed(this, loss, dlogits, x, table, targets, weights);
      return;
    }
    if (!R) return;
    const t = cu(op, targets);
    this.checkIndices(op, t, V, (v, r) => `target ${v} at row ${r} is outside [0, ${V})`);
    const tiles = Math.ceil(V / 128);
    const blocks = Math.ceil(R / 128) * tiles;
    const partM = this.scratch(R * tiles * 4);
    const partS = this.scratch(R * tiles * 8);
    const tgt = this.scratch(R * 4);
    const lse = this.scratch(R * 8);
    try {
      this.launch('xe_tied_stats', blocks, 256, [A(partM.ptr), A(partS.ptr), A(tgt.ptr), P(xx), P(tb), P(t), I(R), I(V), I(K)], GROUPED_WGMMA_SHARED);
      this.launch('xe_tied_finish', Math.min(Math.ceil(R / (BLOCK / 32)), MAX_GRID), BLOCK, [P(cu(op, loss)), A(lse.ptr), A(partM.ptr), A(partS.ptr), A(tgt.ptr), I(R), I(tiles)]);
      if (dlogits) {
        this.launch('xe_tied_grad', blocks, 256, [P(cu(op, dlogits)), A(lse.ptr), P(weights ? cu(op, weights) : null), B(!!weights), P(xx), P(tb), P(t), I(R), I(V), I(K)], GROUPED_WGMMA_SHARED);
      }
    } finally {
      lse.free();
      tgt.free();
      partS.free();
      partM.free();
    }
  }

  crossEntropy(loss: Tensor, dlogits: Tensor | null, logits: Tensor, targets: Tensor, weights: Tensor | null): void {
    const op = 'crossEntropy';
    sameFloat(op, loss, logits, weights);
    floats(op, dlogits); // bfloat16 dlogits: the gradient rounded once for bf16 products
    expectDtype(op, 'targets', targets, 'int32');
    const V = lastDim(logits);
    const R = rowsOf(logits);
    expectSize(op, 'loss', loss, R);
    expectSize(op, 'targets', targets, R);
    if (weights) expectSize(op, 'weights', weights, R);
    if (dlogits) sameSize(op, dlogits, logits);
    const t = cu(op, targets);
    this.checkIndices(op, t, V, (v, r) => `target ${v} at row ${r} is outside [0, ${V})`);
    // rows of 2,048 to 32 x 1,024 logits: the kernel that holds each row in registers (reduce.cu) and
    // reads it once (H200, 1,092 x 30,522: 115 us against 246), in the smallest block that holds it;
    // each block walks rows, so the grid is the blocks that fit at once (64 registers a thread:
    // 1,024 / nt blocks of nt threads per SM). Shorter rows stay with the two-pass kernel, as fast
    // there (1,500) or faster (1,024: 12 us against 15).
    const nt = V >= XE_MIN_V ? XE_BLOCKS.find((b) => V <= XE_NPT * b) : undefined;
    if (nt !== undefined && R < 2 ** 30) {
      this.launch(`cross_entropy_rows${nt}_f32`, Math.min(R, this.smCount * (1024 / nt)), nt, [
        P(cu(op, loss)), P(dlogits ? cu(op, dlogits) : null), B(!!dlogits), P(cu(op, logits)), P(t), P(weights ? cu(op, weights) : null), B(!!weights), I(R), I(V),
        B(dlogits?.dtype === 'bfloat16'),
      ]);
      return;
    }
    this.launchRows('cross_entropy_f32', R, [
      P(cu(op, loss)), P(dlogits ? cu(op, dlogits) : null), B(!!dlogits), P(cu(op, logits)), P(t), P(weights ? cu(op, weights) : null), B(!!weights), L(R), L(V),
      B(dlogits?.dtype === 'bfloat16'),
    ]);
  }

  // ---- attention -----------------------------------------------------------------------------
  private geometry(op: string, qkv: Tensor, spec: AttentionSpec) {
    if (qkv.shape.length !== 3 || qkv.shape[2]! % 3 !== 0) throw new ShapeError(op, 'qkv must be [B, S, 3d]', [qkv.shape]);
    const [Bn, S, d3] = qkv.shape as [number, number, number];
    const d = d3 / 3;
    const H = spec.heads;
    if (!Number.isInteger(H) || H < 1 || d % H !== 0) throw new ShapeError(op, `heads ${H} must divide the width ${d}`, [qkv.shape]);
    const G = spec.globalTokens;
    if (!Number.isInteger(G) || G < 0 || G > S) throw new ShapeError(op, `globalTokens ${G} must be in [0, S = ${S}]`, [qkv.shape]);
    if (spec.kind === 'sliding' && (!Number.isInteger(spec.window) || spec.window < 0 || !Number.isInteger(spec.dilation) || spec.dilation < 1)) {
      throw new ShapeError(op, `sliding attention needs window >= 0 and dilation >= 1 (got ${spec.window}, ${spec.dilation})`);
    }
    const dh = d / H;
    if (dh > ATTN_MAX_DH) throw new ShapeError(op, `head size ${dh} is over the CUDA kernel's limit of ${ATTN_MAX_DH}`, [qkv.shape]);
    return { B: Bn, S, H, dh, G, window: spec.kind === 'full' ? -1 : spec.window, dilation: spec.kind === 'full' ? 1 : spec.dilation, scale: 1 / Math.sqrt(dh) };
  }
  attention(out: Tensor, lse: Tensor, qkv: Tensor, spec: AttentionSpec): void {
    const op = 'attention';
    const bf = this.attentionDtypes(op, lse, qkv, out);
    const g = this.geometry(op, qkv, spec);
    expectShape(op, 'out', out, [g.B, g.S, g.H * g.dh]);
    expectSize(op, 'lse', lse, g.B * g.H * g.S);
    if (this.useMma(bf, g.dh)) {
      // sliding attention with globals: the global rows' tiles (which see every key) walk their
      // keys in runs of about SPLIT_TILES tiles on separate blocks, merged after
      const split = g.window >= 0 && g.G > 0;
      const [o, l, x] = [cu(op, out), cu(op, lse), cu(op, qkv)];
      const mainBlocks = Math.ceil(g.S / AT_T) * g.B * g.H;
      // Hopper: the forward on wgmma (attention_mma.cu's attn_fwd_wgmma: same grid, same results up
      // to the tensor cores' order of addition), which loads whole 16-byte chunks of the heads
      const wg = this.attnWgmma && g.dh % 8 === 0 && x.ptr % 16 === 0;
      const [name, shared] = wg ? ['attn_fwd_wgmma', ATTN_WGMMA_SHARED] : ['attn_fwd_mma64', 0];
      if (!split) {
        this.launch(name, mainBlocks, 128, [P(o), P(l), P(x), I(g.S), I(g.H), I(g.dh), I(g.G), I(g.window), I(g.dilation), F(g.scale), A(0), A(0), I(1), I(0)], shared);
        return;
      }
      const tiles = Math.ceil(g.G / AT_T);
      const parts = Math.max(1, Math.ceil(Math.ceil(g.S / AT_T) / SPLIT_TILES));
      const rows = g.B * g.H * tiles * AT_T * parts;
      const partO = this.scratch(rows * AT_T * 4);
      const partML = this.scratch(rows * 2 * 4);
      try {
        const splitBlocks = tiles * parts * g.B * g.H;
        this.launch(name, splitBlocks + mainBlocks, 128, [P(o), P(l), P(x), I(g.S), I(g.H), I(g.dh), I(g.G), I(g.window), I(g.dilation), F(g.scale), A(partO.ptr), A(partML.ptr), I(parts), I(splitBlocks)], shared);
        this.launch2('attn_fwd_combine', [Math.min(tiles * AT_T, g.S), g.B * g.H], [AT_T, 1], [P(o), P(l), A(partO.ptr), A(partML.ptr), I(g.S), I(g.H), I(g.dh), I(g.G), I(parts)]);
      } finally {
        partML.free();
        partO.free();
      }
      return;
    }
    const tiled = this.tiledBucket(op, g.dh, bf);
    if (tiled) {
      const tiles = Math.ceil(g.S / AT_T);
      this.launch(`attn_fwd_tiled${tiled}_f32`, tiles * g.B * g.H, 256, [
        P(cu(op, out)), P(cu(op, lse)), P(cu(op, qkv)), I(g.S), I(g.H), I(g.dh), I(g.G), I(g.window), I(g.dilation), F(g.scale), B(bf),
      ], tiledAttentionShared(tiled).fwd);
      return;
    }
    const rows = g.B * g.H * g.S;
    this.launch('attn_fwd_f32', Math.min(Math.ceil(rows / ATTN_WARPS), 1 << 20), ATTN_WARPS * 32, [
      P(cu(op, out)), P(cu(op, lse)), P(cu(op, qkv)), I(g.B), I(g.S), I(g.H), I(g.dh), I(g.G), I(g.window), I(g.dilation), F(g.scale),
    ], ATTN_WARPS * 2 * g.dh * 4);
  }
  /**
   * Dtype rules of attention: the log-sum-exp is float32; the activations (qkv, out, and for the
   * backward dout and dqkv) share one dtype, float32 or bfloat16. True for bfloat16.
   */
  private attentionDtypes(op: string, lse: Tensor, qkv: Tensor, ...acts: Tensor[]): boolean {
    expectDtype(op, 'lse', lse, 'float32');
    floats(op, qkv);
    for (const t of acts) if (t.dtype !== qkv.dtype) throw new DTypeError(op, `the activations must share qkv's dtype ${qkv.dtype}, got ${t.dtype}`);
    return qkv.dtype === 'bfloat16';
  }
  /** Whether the tensor-core kernels (attention_mma.cu) serve: bf16 activations, head size up to 64. */
  private useMma(bf: boolean, dh: number): boolean {
    return bf && (this.attentionKernel === 'mma' || this.attentionKernel === 'wgmma' || this.attentionKernel === 'auto') && dh <= 64;
  }
  /**
   * The head-size bucket (64 or 128) of the tiled attention kernels, or 0 for the row kernels
   * (float32 only: bfloat16 activations without a tiled kernel are a DTypeError).
   */
  private tiledBucket(op: string, dh: number, bf: boolean): 64 | 128 | 0 {
    const DH = this.attentionKernel === 'rows' ? 0 : dh <= 64 ? 64 : dh <= 128 ? 128 : 0;
    const sh = DH ? tiledAttentionShared(DH) : null;
    if (sh && Math.max(sh.fwd, sh.dq, sh.dkdv) <= this.sharedOptin) return DH as 64 | 128;
    if (bf) throw new DTypeError(op, `bfloat16 attention needs the tiled kernels (head size up to 128, attention: 'tiled'); head size ${dh}`);
    return 0;
  }
  attentionBackward(dqkv: Tensor, dout: Tensor, qkv: Tensor, out: Tensor, lse: Tensor, spec: AttentionSpec): void {
    const op = 'attentionBackward';
    const bf = this.attentionDtypes(op, lse, qkv, dqkv, dout, out);
    const g = this.geometry(op, qkv, spec);
    expectShape(op, 'out', out, [g.B, g.S, g.H * g.dh]);
    expectShape(op, 'dout', dout, [g.B, g.S, g.H * g.dh]);
    expectShape(op, 'dqkv', dqkv, qkv.shape);
    expectSize(op, 'lse', lse, g.B * g.H * g.S);
    const dq = cu(op, dqkv);
    const rows = g.B * g.H * g.S;
    const mma = this.useMma(bf, g.dh);
    const tiled = mma ? 0 : this.tiledBucket(op, g.dh, bf);
    if (mma || tiled) {
      // every element of dqkv is written (dQ by one kernel, dK and dV by the other): no zeroing
      const D = this.scratch(rows * 4);
      try {
        const [po, pout] = [cu(op, dout).ptr, cu(op, out).ptr];
        if (bf && [8, 16, 32, 64].includes(g.dh) && po % 16 === 0 && pout % 16 === 0) {
          // 16-byte vectors, dh / 8 lanes per (position, head)
          const threads = rows * (g.dh / 8);
          this.launch('attn_bwd_dot_bf16x8', Math.min(Math.ceil(threads / BLOCK), MAX_GRID), BLOCK, [A(D.ptr), A(po), A(pout), I(g.B), I(g.S), I(g.H), I(g.dh)]);
        } else {
          this.launch('attn_bwd_dot_f32', Math.min(Math.ceil(rows / (BLOCK / 32)), MAX_GRID), BLOCK, [A(D.ptr), A(po), A(pout), I(g.B), I(g.S), I(g.H), I(g.dh), B(bf)]);
        }
        const blocks = Math.ceil(g.S / AT_T) * g.B * g.H;
        const args = [P(dq), P(cu(op, dout)), P(cu(op, qkv)), P(cu(op, lse)), A(D.ptr), I(g.S), I(g.H), I(g.dh), I(g.G), I(g.window), I(g.dilation), F(g.scale)] as const;
        if (mma) {
          // Hopper: the products on wgmma (attention_mma.cu), whole 16-byte chunks of the heads
          const wg = this.attnWgmma && g.dh % 8 === 0 && cu(op, qkv).ptr % 16 === 0 && cu(op, dout).ptr % 16 === 0;
          const [nameDq, nameDkdv, shared] = wg ? ['attn_bwd_dq_wgmma', 'attn_bwd_dkdv_wgmma', ATTN_WGMMA_BWD_SHARED] : ['attn_bwd_dq_mma64', 'attn_bwd_dkdv_mma64', 0];
          // sliding attention with globals: the tiles of global rows, which see every row of the
          // other side, walk it in runs of up to bwdSplitTiles tiles on blocks first in each launch
          // (as the forward's), with more than one run their float32 sums added by attn_bwd_combine
          const tiles = Math.ceil(g.G / AT_T);
          const split = g.window >= 0 && g.G > 0 && this.bwdSplitTiles > 0;
          const parts = split ? Math.ceil(Math.ceil(g.S / AT_T) / this.bwdSplitTiles) : 1;
          const splitBlocks = split ? tiles * parts * g.B * g.H : 0;
          const part = parts > 1 ? this.scratch(g.B * g.H * tiles * AT_T * parts * 3 * AT_T * 4) : null;
          try {
            const more = [A(part ? part.ptr : 0), I(parts), I(splitBlocks)] as const;
            this.launch(nameDq, splitBlocks + blocks, 128, [...args, ...more], shared);
            this.launch(nameDkdv, splitBlocks + blocks, 128, [...args, ...more], shared);
            if (part) {
              this.launch2('attn_bwd_combine', [Math.min(tiles * AT_T, g.S), g.B * g.H], [3 * AT_T, 1], [P(dq), A(part.ptr), I(g.S), I(g.H), I(g.dh), I(g.G), I(parts)]);
            }
          } finally {
            part?.free();
          }
        } else {
          const sh = tiledAttentionShared(tiled);
          this.launch(`attn_bwd_dq_tiled${tiled}_f32`, blocks, 256, [...args, B(bf)], sh.dq);
          this.launch(`attn_bwd_dkdv_tiled${tiled}_f32`, blocks, 256, [...args, B(bf)], sh.dkdv);
        }
      } finally {
        D.free();
      }
      return;
    }
    if (dq.size) this.driver.memsetD32Async(dq.ptr, 0, dq.size, this.stream);
    this.launch('attn_bwd_f32', Math.min(Math.ceil(rows / ATTN_WARPS), 1 << 20), ATTN_WARPS * 32, [
      P(dq), P(cu(op, dout)), P(cu(op, qkv)), P(cu(op, out)), P(cu(op, lse)), I(g.B), I(g.S), I(g.H), I(g.dh), I(g.G), I(g.window), I(g.dilation), F(g.scale),
    ], ATTN_WARPS * 3 * g.dh * 4);
  }

  // ---- dropout -------------------------------------------------------------------------------
  dropout(out: Tensor, x: Tensor, p: number, seed: number, offset: number): void {
    const op = 'dropout';
    floats(op, out, x);
    sameSize(op, out, x);
    if (!(p >= 0 && p < 1)) throw new ShapeError(op, `p must be in [0, 1), got ${p}`);
    const o = cu(op, out);
    const a = cu(op, x);
    if (p === 0) return this.copy(o, a);
    if (!Number.isSafeInteger(seed) || seed < 0 || !Number.isSafeInteger(offset) || offset < 0) throw new ShapeError(op, `seed and offset must be non-negative safe integers (got ${seed}, ${offset})`);
    this.launchN('dropout_f32', Math.ceil(o.size / 4) + 1, [P(o), P(a), L(o.size), D(p), U(seed % TWO32), U(Math.floor(seed / TWO32)), UL(offset), BFM(o, a)]);
  }
  dropoutBackward(dx: Tensor, dy: Tensor, p: number, seed: number, offset: number): void {
    this.dropout(dx, dy, p, seed, offset);
  }

  // ---- mixture of experts --------------------------------------------------------------------
  moeRoute(logits: Tensor, opts: MoeRouteOptions): MoeRouting {
    const op = 'moeRoute';
    sameFloat(op, logits, opts.selectionBias);
    const [M, E] = matrixShape(op, 'logits', logits);
    const k = opts.topK;
    if (opts.selectionBias) expectSize(op, 'selectionBias', opts.selectionBias, E);
    checkRoute(M, E, k, opts.seqLen, opts.capacityFactor);
    const lg = cu(op, logits);
    const made: Tensor[] = [];
    const scratch: { free: () => void }[] = [];
    const mk = (shape: number[], dtype: DType): CudaTensor => {
      const t = this.allocTensor(op, shape, dtype);
      made.push(t);
      return t;
    };
    const tmp = (bytes: number): number => {
      const b = this.scratch(bytes);
      scratch.push(b);
      return b.ptr;
    };
    // device memory the routing keeps until it is disposed (the lazily read statistics)
    const retained: { free: () => void }[] = [];
    const retain = (bytes: number): number => {
      const b = this.scratch(bytes);
      retained.push(b);
      return b.ptr;
    };
    const dropless = opts.capacityFactor === undefined;
    try {
      const nA = M * k;
      const probs = mk([M, E], 'float32');
      const lse = mk([M], 'float32');
      const expertIndex = mk([M, k], 'int32');
      const gates = mk([M, k], 'float32');
      const gateNorm = mk([M], 'float32');
      const slot = mk([nA], 'int32');
      const kept = tmp(nA * 4);
      // E <= 32: softmax, top-k and the loss statistics in one launch (routeLaunch); else one thread
      // per token, and the statistics from the float64 probabilities by a second kernel
      const lanes = routeLaunch(M, E);
      const probs64 = lanes ? 0 : tmp(M * E * 8);
      const statBlocks = lanes ? lanes.grid : Math.max(1, Math.min(Math.ceil(M / BLOCK), 64));
      const partial = dropless ? retain(statBlocks * (2 * E + 1) * 8) : tmp(statBlocks * (2 * E + 1) * 8);
      // a dropless order of a few thousand assignments: one block (moe_order_small), else the
      // counting sort over chunks of BLOCK assignments in three launches
      const small = dropless && E <= 32 && nA <= MOE_ORDER_SMALL;
      const chunks = Math.ceil(nA / BLOCK);
      const chunkCounts = small ? 0 : tmp(Math.max(chunks, 1) * E * 4);
      const chunkOffsets = small ? 0 : tmp(Math.max(chunks, 1) * E * 4);
      const totals = dropless ? retain(E * 4) : tmp(E * 4);
      const bias = opts.selectionBias ? cu(op, opts.selectionBias) : null;
      // softmax + top-k per token, the loss statistics per block, capacity drops per sequence
      if (lanes) {
        this.launch('moe_route_lanes_f32', lanes.grid, lanes.block, [
          P(probs), P(lse), P(expertIndex), P(gates), P(gateNorm), A(kept), A(partial), P(lg), P(bias), B(!!bias), L(M), I(E), I(k), I(lanes.lanes),
        ]);
      } else {
        this.launchN('moe_route_topk_f32', M, [P(probs), P(lse), P(expertIndex), P(gates), P(gateNorm), A(kept), A(probs64), P(lg), P(bias), B(!!bias), L(M), L(E), L(k)]);
        this.launch('moe_route_stats', statBlocks, BLOCK, [A(partial), A(probs64), P(lg), P(expertIndex), L(M), L(E), L(k)]);
      }
      if (opts.capacityFactor !== undefined && M > 0) {
        const C = expertCapacity(opts.capacityFactor, opts.seqLen, k, E);
        this.launch('moe_route_capacity', M / opts.seqLen, BLOCK, [A(kept), P(gates), P(expertIndex), L(opts.seqLen), L(E), L(k), L(C)], (E + BLOCK) * 4);
      }
      // the expert order (a stable counting sort by expert); its size comes back to the host
      if (!small) {
        this.launch('moe_order_count', chunks, BLOCK, [A(chunkCounts), P(expertIndex), A(kept), L(nA), L(E)], E * 4);
        this.launch('moe_order_scan', 1, Math.min(1024, Math.max(32, E)), [A(chunkOffsets), A(totals), A(chunkCounts), L(chunks), L(E)]);
      }
      // the loss statistics and counts: read back now when the capacity decides the order's size,
      // else on first use (a forward that never reads them never waits for the device). A dropless
      // routing outside a recording marks its place in the stream with an event, and the first use
      // waits for that point alone: the training step's backward reads each layer's counts while the
      // device may still be on later layers, the head and the loss, and keeps them queued
      const ready = dropless && M > 0 && !this.recording ? this.driver.eventCreate(false) : null;
      if (ready) {
        // the event goes with the routing's retained buffers (or with them on an error below)
        retained.push({ free: () => this.driver.eventDestroy(ready) });
        this.driver.eventRecord(ready, this.stream);
      }
      const read = () => {
        const part = new Float64Array(statBlocks * (2 * E + 1));
        const tot = new Int32Array(E);
        if (ready) {
          this.driver.streamWaitEvent(this.readStream, ready);
          this.driver.memcpyDtoHAsync(part, partial, part.byteLength, this.readStream);
          this.driver.memcpyDtoHAsync(tot, totals, tot.byteLength, this.readStream);
          // (pageable copies return done; the sync makes that independent of the driver's staging)
          this.driver.streamSynchronize(this.readStream);
        } else if (M > 0) {
          this.driver.memcpyDtoH(part, partial, part.byteLength);
          this.driver.memcpyDtoH(tot, totals, tot.byteLength);
        }
        return routeStats(part, tot, M, E, nA, statBlocks);
      };
      if (!dropless) {
        const st = read();
        const order = mk([st.counts.reduce((x, y) => x + y, 0)], 'int32');
        this.launch('moe_order_place', chunks, BLOCK, [P(order), P(slot), P(expertIndex), A(kept), A(chunkOffsets), L(nA), L(E)]);
        return new CudaRouting(M, E, k, probs, lse, expertIndex, gates, gateNorm, order, slot, 0, () => st, () => made.forEach((t) => t.dispose()));
      }
      // dropless: every assignment is kept, the order has M k rows; the experts' row offsets stay on
      // the device for the grouped products (the first chunk's offsets, then the total)
      const order = mk([nA], 'int32');
      const offsets = retain((E + 1) * 4);
      if (small) {
        this.launch('moe_order_small', 1, 1024, [P(order), P(slot), A(totals), A(offsets), P(expertIndex), A(kept), I(nA), I(E)]);
      } else {
        this.launch('moe_order_place', chunks, BLOCK, [P(order), P(slot), P(expertIndex), A(kept), A(chunkOffsets), L(nA), L(E)]);
        if (M > 0) this.driver.memcpyDtoDAsync(offsets, chunkOffsets, E * 4, this.stream);
        else this.driver.memsetD32Async(offsets, 0, E, this.stream);
        this.driver.memsetD32Async(offsets + E * 4, nA, 1, this.stream); // a memset, not an upload: capturable in a CUDA graph
      }
      let st: RouteStats | null = null;
      let released = false;
      return new CudaRouting(M, E, k, probs, lse, expertIndex, gates, gateNorm, order, slot, offsets, () => {
        // statistics read before the release stay readable after it
        if (st) return st;
        if (released) throw new DeviceError('moeRoute: the routing was disposed before its counts were read');
        return (st = read());
      }, () => {
        if (released) return;
        released = true;
        made.forEach((t) => t.dispose());
        retained.forEach((b) => b.free());
      });
    } catch (e) {
      made.forEach((t) => t.dispose());
      retained.forEach((b) => b.free());
      throw e;
    } finally {
      scratch.forEach((b) => b.free());
    }
  }
  moeRouteBackward(dlogits: Tensor, routing: MoeRouting, dgates: Tensor, dAux: number, dZ: number): void {
    const op = 'moeRouteBackward';
    sameFloat(op, dlogits, dgates, routing.probs);
    const { tokens: M, experts: E, topK: k } = routing;
    expectSize(op, 'dlogits', dlogits, M * E);
    expectSize(op, 'dgates', dgates, M * k);
    const share = this.scratch(E * 8);
    try {
      if (E) this.driver.memcpyHtoDAsync(share.ptr, Float64Array.from(routing.loadShare), E * 8, this.stream);
      this.launchN('moe_route_backward_f32', M, [
        P(cu(op, dlogits)), P(cu(op, routing.probs)), P(cu(op, routing.lse)), P(cu(op, routing.expertIndex)), P(cu(op, routing.gates)),
        P(cu(op, routing.gateNorm)), A(share.ptr), P(cu(op, dgates)), D(dAux), D(dZ), L(M), L(E), L(k),
      ]);
    } finally {
      share.free();
    }
  }
  moePermute(xs: Tensor, x: Tensor, routing: MoeRouting): void {
    const op = 'moePermute';
    floats(op, xs, x);
    const d = lastDim(x);
    const Acount = routing.order.size;
    expectSize(op, 'x', x, routing.tokens * d);
    expectSize(op, 'xs', xs, Acount * d);
    const [o, i] = [cu(op, xs), cu(op, x)];
    if (byVectors([o, i], Math.max(Acount, routing.tokens), d)) {
      this.launchN('moe_permute_bf16v', (Acount * d) / 8, [P(o), P(i), P(cu(op, routing.order)), I(Acount), I(d / 8), I(routing.topK)]);
      return;
    }
    this.launchN('moe_permute_f32', Acount * d, [P(o), P(i), P(cu(op, routing.order)), L(Acount), L(d), L(routing.topK), BFM(xs, x)]);
  }
  moePermuteBackward(dx: Tensor, dxs: Tensor, routing: MoeRouting, accumulate: boolean): void {
    const op = 'moePermuteBackward';
    floats(op, dx, dxs);
    const d = lastDim(dx);
    expectSize(op, 'dx', dx, routing.tokens * d);
    expectSize(op, 'dxs', dxs, routing.order.size * d);
    const [g, gs] = [cu(op, dx), cu(op, dxs)];
    if (byVectors([g, gs], Math.max(routing.order.size, routing.tokens), d)) {
      this.launchN('moe_permute_backward_bf16v', (routing.tokens * d) / 8, [P(g), P(gs), P(cu(op, routing.slot)), I(routing.tokens), I(d / 8), I(routing.topK), B(accumulate)]);
      return;
    }
    this.launchN('moe_permute_backward_f32', routing.tokens * d, [P(g), P(gs), P(cu(op, routing.slot)), L(routing.tokens), L(d), L(routing.topK), B(accumulate), BFM(dx, dxs)]);
  }
  moeCombine(y: Tensor, ys: Tensor, routing: MoeRouting, accumulate: boolean): void {
    const op = 'moeCombine';
    floats(op, y, ys);
    const d = lastDim(y);
    const { tokens: M, topK: k } = routing;
    expectSize(op, 'y', y, M * d);
    expectSize(op, 'ys', ys, routing.order.size * d);
    const [o, i] = [cu(op, y), cu(op, ys)];
    if (byVectors([o, i], Math.max(M, routing.order.size), d)) {
      this.launchN('moe_combine_bf16v', (M * d) / 8, [P(o), P(i), P(cu(op, routing.gates)), P(cu(op, routing.slot)), I(M), I(d / 8), I(k), B(accumulate)]);
      return;
    }
    this.launchN('moe_combine_f32', M * d, [P(o), P(i), P(cu(op, routing.gates)), P(cu(op, routing.slot)), L(M), L(d), L(k), B(accumulate), BFM(y, ys)]);
  }
  moeCombineBackward(dys: Tensor, dgates: Tensor, dy: Tensor, ys: Tensor, routing: MoeRouting): void {
    const op = 'moeCombineBackward';
    floats(op, dys, dy, ys);
    expectDtype(op, 'dgates', dgates, 'float32');
    const d = lastDim(dy);
    const { tokens: M, topK: k } = routing;
    expectSize(op, 'dy', dy, M * d);
    expectSize(op, 'ys', ys, routing.order.size * d);
    expectSize(op, 'dys', dys, routing.order.size * d);
    expectSize(op, 'dgates', dgates, M * k);
    const warps = M * k;
    if (!warps) return;
    const grid = Math.min(Math.ceil(warps / (BLOCK / 32)), MAX_GRID);
    const [gs, g, i] = [cu(op, dys), cu(op, dy), cu(op, ys)];
    if (byVectors([gs, g, i], Math.max(M, routing.order.size), d)) {
      this.launch('moe_combine_backward_bf16v', grid, BLOCK, [P(gs), P(cu(op, dgates)), P(g), P(i), P(cu(op, routing.gates)), P(cu(op, routing.slot)), I(M), I(d / 8), I(k)]);
      return;
    }
    this.launch('moe_combine_backward_f32', grid, BLOCK, [
      P(cu(op, dys)), P(cu(op, dgates)), P(cu(op, dy)), P(cu(op, ys)), P(cu(op, routing.gates)), P(cu(op, routing.slot)), L(M), L(d), L(k), BFM(dys, dy, ys),
    ]);
  }
  groupedMatmul(out: Tensor, xs: Tensor, weight: Tensor, bias: Tensor | null, groups: ExpertGroups, opts: GroupedMatmulOptions = {}): void {
    const op = 'groupedMatmul';
    floats(op, out, xs, weight);
    if (bias) expectDtype(op, 'bias', bias, 'float32');
    const gp = opts.gelu?.pre ?? null;
    if (gp && gp.dtype !== out.dtype) throw new DTypeError(op, `gelu.pre must be ${out.dtype} like out, got ${gp.dtype}`);
    if (opts.gather) {
      // the tokens' rows in the routing's order: moe_permute's copy, then the product (which leaves
      // out a pre-activation nobody keeps itself, below). A wgmma kernel that gathered the rows
      // itself (cp.async per row, v17) took 6.4 ms of a base step's fc1 where the permute and
      // grouped_wgmma_nt_bf16 take 0.6 + ~4.9 ms on an H200
      groupedMatmulComposed(this, (oo, xx, ww, bb, g, gelu) => this.groupedMatmul(oo, xx, ww, bb, g, gelu ? { gelu } : {}), out, xs, weight, bias, groups, opts, true);
      return;
    }
    const { E, N, K, Acount, onDevice } = this.groups(op, weight, groups);
    expectSize(op, 'xs', xs, Acount * K);
    expectSize(op, 'out', out, Acount * N);
    if (bias) expectSize(op, 'bias', bias, E * N);
    if (gp) expectSize(op, 'gelu.pre', gp, Acount * N);
    const x = cu(op, xs);
    const w = cu(op, weight);
    const o = cu(op, out);
    const b = bias ? cu(op, bias) : null;
    const pre = gp ? cu(op, gp) : null;
    const wo = this.weightOperand(w, x.dtype === 'bfloat16' || o.dtype === 'bfloat16');
    try {
      // grouped_wgmma.cu: every expert in one launch, the epilogue fused; with a bf16 output it
      // leaves out the pre-activation nobody keeps (flags & 8)
      const dropPre = !!opts.gelu && !pre;
      if (this.groupedWgmma(x, wo, N, K) && (!dropPre || o.dtype === 'bfloat16')) {
        const flags = (o.dtype === 'bfloat16' ? 1 : 0) | (b ? 2 : 0) | (opts.gelu ? 4 : 0) | (dropPre ? 8 : 0);
        this.groupedGemm('wgmma_nt', o.ptr, x.ptr, wo.ptr, groups, onDevice, E, Acount, K, N, b ? b.ptr : 0, pre ? pre.ptr : 0, flags);
        return;
      }
      if (dropPre) {
        // the other paths write a pre-activation: into a temporary
        groupedMatmulComposed(this, (oo, xx, ww, bb, g, gelu) => this.groupedMatmul(oo, xx, ww, bb, g, gelu ? { gelu } : {}), out, xs, weight, bias, groups, opts);
        return;
      }
      const flags = (o.dtype === 'bfloat16' ? 1 : 0) | (b ? 2 : 0) | (pre ? 4 : 0);
      if (this.groupedMma(x, wo, N, K, Acount)) {
        this.groupedGemm('nt', o.ptr, x.ptr, wo.ptr, groups, onDevice, E, Acount, K, N, b ? b.ptr : 0, pre ? pre.ptr : 0, flags);
        return;
      }
      // else a cuBLAS call per expert in a shape that recurs (see expertChunks), and the epilogue
      // once per expert
      const counts = countsOf(groups);
      let row = 0;
      for (let e = 0; e < E; e++) {
        const n = counts[e]!;
        for (const [r0, m] of expertChunks(row, n, Acount)) {
          const at = row + r0;
          // out[rows] = xs[rows] W[e]^T, W[e] [N, K]
          this.gemm({ transA: false, transB: true, M: m, N, K, a: x.ptr + at * K * ES(x), lda: K, strideA: 0, b: wo.ptr + e * N * K * bytesOf(wo.dtype), ldb: K, strideB: 0, c: o.ptr + at * N * ES(o), ldc: N, strideC: 0, alpha: 1, beta: 0, batch: 1 }, x.dtype, wo.dtype, o.dtype);
        }
        if (n > 0 && (b || pre)) this.biasAct(o.ptr + row * N * ES(o), n, N, b ? b.ptr + e * N * 4 : 0, pre ? pre.ptr + row * N * ES(o) : 0, o.dtype);
        row += n;
      }
    } finally {
      wo.free();
    }
  }
  groupedMatmulBackward(dxs: Tensor | null, dweight: Tensor, dbias: Tensor | null, dout: Tensor, xs: Tensor, weight: Tensor, groups: ExpertGroups): void {
    const op = 'groupedMatmulBackward';
    floats(op, dxs, dout, xs, weight);
    sameFloat(op, dweight, dbias);
    const { E, N, K, Acount, onDevice } = this.groups(op, weight, groups);
    expectSize(op, 'dout', dout, Acount * N);
    expectSize(op, 'xs', xs, Acount * K);
    if (dxs) expectSize(op, 'dxs', dxs, Acount * K);
    expectSize(op, 'dweight', dweight, E * N * K);
    if (dbias) expectSize(op, 'dbias', dbias, E * N);
    const g = cu(op, dout);
    const x = cu(op, xs);
    const w = cu(op, weight);
    const gw = cu(op, dweight);
    const gx = dxs ? cu(op, dxs) : null;
    const gb = dbias ? cu(op, dbias) : null;
    // the weight is only an operand of dxs
    const wo = gx ? this.weightOperand(w, g.dtype === 'bfloat16' || gx.dtype === 'bfloat16') : { ptr: w.ptr, dtype: w.dtype, free: () => undefined };
    try {
      // with grouped_wgmma.cu (groupedWgmma) or grouped_gemm.cu (groupedMma), dxs = dout W_e and
      // dW_e (+ db_e) for every expert in one launch each; the per-expert loop below does what they do not
      // (the backward on wgmma only when asked for: in a base step it measured slower than cuBLAS)
      const wgBackward = this.groupedKernel === 'wgmma';
      const wgNN = gx !== null && wgBackward && this.groupedWgmma(g, wo, K, N);
      const oneLaunch = gx !== null && (wgNN || this.groupedMma(g, wo, K, N, Acount));
      if (oneLaunch) this.groupedGemm(wgNN ? 'wgmma_nn' : 'nn', gx.ptr, g.ptr, wo.ptr, groups, onDevice, E, Acount, N, K, 0, 0, gx.dtype === 'bfloat16' ? 1 : 0);
      // dW_e += dout_e^T xs_e: the same operand conditions, dout and xs in the roles of A and W
      const wgTN = gw.dtype === 'float32' && wgBackward && this.groupedWgmma(g, x, K, N);
      const oneLaunchDw = gw.dtype === 'float32' && (wgTN || this.groupedMma(g, x, K, N, Acount));
      if (oneLaunchDw && N > 0 && K > 0 && Acount > 0) {
        const offs = this.expertOffsets(groups, onDevice);
        try {
          // both kernels: a 128 x 128 tile of one expert's dW a block
          const [name, shared] = wgTN ? ['grouped_wgmma_tn_bf16', GROUPED_WGMMA_SHARED] : ['grouped_gemm_tn_bf16', GROUPED_TN_SHARED];
          this.launch(name, E * Math.ceil(N / 128) * Math.ceil(K / 128), 256, [P(gw), P(gb), P(g), P(x), A(offs.ptr), I(E), I(N), I(K)], shared);
        } finally {
          offs.free();
        }
      }
      if ((oneLaunch || !gx) && oneLaunchDw) return;
      const counts = countsOf(groups);
      let row = 0;
      for (let e = 0; e < E; e++) {
        const n = counts[e]!;
        // dxs[rows] = dout[rows] W[e]  ([m, N] x [N, K])
        if (gx && !oneLaunch) {
          for (const [r0, m] of expertChunks(row, n, Acount)) {
            const at = row + r0;
            this.gemm({ transA: false, transB: false, M: m, N: K, K: N, a: g.ptr + at * N * ES(g), lda: N, strideA: 0, b: wo.ptr + e * N * K * bytesOf(wo.dtype), ldb: K, strideB: 0, c: gx.ptr + at * K * ES(gx), ldc: K, strideC: 0, alpha: 1, beta: 0, batch: 1 }, g.dtype, wo.dtype, gx.dtype);
          }
        }
        // dW[e] += dout[rows]^T xs[rows]  ([N, m] x [m, K]): a sum over the expert's rows, exactly
        if (!oneLaunchDw) {
          for (const [r0, m] of shapeChunks(n)) {
            const at = row + r0;
            this.gemm({ transA: true, transB: false, M: N, N: K, K: m, a: g.ptr + at * N * ES(g), lda: N, strideA: 0, b: x.ptr + at * K * ES(x), ldb: K, strideB: 0, c: gw.ptr + e * N * K * 4, ldc: K, strideC: 0, alpha: 1, beta: 1, batch: 1 }, g.dtype, x.dtype, gw.dtype);
          }
        }
        row += n;
      }
      if (gb && !oneLaunchDw) this.segmentColSums(gb.ptr, g.ptr, counts, N, bfMask(g));
    } finally {
      wo.free();
    }
  }

  // ---- diffusion -----------------------------------------------------------------------------
  qSample(xt: Tensor, z0: Tensor, eps: Tensor, m: Tensor | null, sa: Tensor, sb: Tensor, inputMask: Tensor, replaceMask: Tensor): void {
    const op = 'qSample';
    sameFloat(op, xt, z0, eps, m, sa, sb);
    sameSize(op, xt, z0, eps);
    expectDtype(op, 'inputMask', inputMask, 'int32');
    expectDtype(op, 'replaceMask', replaceMask, 'int32');
    const Bn = sa.size;
    expectSize(op, 'sb', sb, Bn);
    const BN = inputMask.size;
    expectSize(op, 'replaceMask', replaceMask, BN);
    if (BN % Bn !== 0 || xt.size % BN !== 0) throw new ShapeError(op, 'masks must be [B, N] and x [B, N, e]', [xt.shape, inputMask.shape, sa.shape]);
    const e = xt.size / BN;
    if (m) expectSize(op, 'm', m, e);
    const N = BN / Bn;
    this.launchN('qsample_f32', BN * e, [
      P(cu(op, xt)), P(cu(op, z0)), P(cu(op, eps)), P(m ? cu(op, m) : null), B(!!m), P(cu(op, sa)), P(cu(op, sb)), P(cu(op, inputMask)), P(cu(op, replaceMask)), L(BN), L(N), L(e),
    ]);
  }
  qSampleBackward(dz0: Tensor, dm: Tensor | null, dxt: Tensor, sa: Tensor, inputMask: Tensor, replaceMask: Tensor): void {
    const op = 'qSampleBackward';
    sameFloat(op, dz0, dm, dxt, sa);
    sameSize(op, dz0, dxt);
    expectDtype(op, 'inputMask', inputMask, 'int32');
    expectDtype(op, 'replaceMask', replaceMask, 'int32');
    const Bn = sa.size;
    const BN = inputMask.size;
    expectSize(op, 'replaceMask', replaceMask, BN);
    if (BN % Bn !== 0 || dxt.size % BN !== 0) throw new ShapeError(op, 'masks must be [B, N] and x [B, N, e]', [dxt.shape, inputMask.shape, sa.shape]);
    const e = dxt.size / BN;
    if (dm) expectSize(op, 'dm', dm, e);
    const N = BN / Bn;
    const [d, a, im, rm] = [cu(op, dxt), cu(op, sa), cu(op, inputMask), cu(op, replaceMask)];
    this.launchN('qsample_backward_dz_f32', BN * e, [P(cu(op, dz0)), P(d), P(a), P(im), P(rm), B(!!dm), L(BN), L(N), L(e)]);
    if (dm) {
      const g = cu(op, dm);
      this.chunkedColSums(BN, e, g.ptr, 0, false, true, (part, n, rowsPerChunk) =>
        this.launch2('qsample_backward_dm_partial', [Math.ceil(e / 32), n], [32, 8], [A(part), P(d), P(a), P(im), P(rm), L(BN), L(N), L(e), L(rowsPerChunk)]),
      );
    }
  }
  nearestRows(out: Tensor, x: Tensor, table: Tensor, opts?: ScoreOptions): void {
    // ||x - t||^2 = ||x||^2 - 2 x.t + ||t||^2: argmax over v of x.t_v - ||t_v||^2 / 2
    this.scoreArg('nearestRows', out, x, table, true, opts?.precision === 'bf16x3', this.preparedFor(table, opts));
  }
  argmaxDot(out: Tensor, x: Tensor, table: Tensor, opts?: ScoreOptions): void {
    this.scoreArg('argmaxDot', out, x, table, false, opts?.precision === 'bf16x3', this.preparedFor(table, opts));
  }
  prepareScores(table: Tensor, opts?: ScoreOptions): PreparedTable | null {
    const op = 'prepareScores';
    expectDtype(op, 'table', table, 'float32');
    const [V, e] = matrixShape(op, 'table', table);
    if (!V || !e) return null;
    const tb = cu(op, table);
    const precision = opts?.precision ?? 'float32';
    const made = this.tableOperands(tb, V, e, true, precision === 'bf16x3');
    let live = true;
    const prep: CudaPreparedTable = {
      table,
      precision,
      ptr: tb.ptr,
      half: made.half,
      t3: made.t3,
      dispose: () => {
        if (!live) return;
        live = false;
        made.free();
      },
      live: () => live,
    };
    return prep;
  }
  /**
   * What the scorings derive from the table tb [V, e] (float32): its half squared norms (float64
   * [V], nearestRows) and its bf16x3 split ([V, 3e] bf16, [hi | lo | hi]), each where asked for (0
   * otherwise), in scratch that `free` returns.
   */
  private tableOperands(tb: CudaTensor, V: number, e: number, half: boolean, split: boolean): { half: number; t3: number; free: () => void } {
    const bufs: { ptr: number; free: () => void }[] = [];
    const free = () => bufs.forEach((b) => b.free());
    try {
      const h = half ? this.scratch(V * 8) : null;
      if (h) bufs.push(h);
      const t3 = split ? this.scratch(V * 3 * e * 2) : null;
      if (t3) bufs.push(t3);
      if (h) this.launchN('half_sq_norms_f32', V, [A(h.ptr), P(tb), L(V), L(e)]);
      if (t3) this.launchN('split_bf16x3_f32', V * e, [A(t3.ptr), P(tb), L(V), L(e), I(1)]);
      return { half: h ? h.ptr : 0, t3: t3 ? t3.ptr : 0, free };
    } catch (err) {
      free();
      throw err;
    }
  }
  /** opts.prepared when it was made by this backend for `table` (same buffer) at opts.precision, else null. */
  private preparedFor(table: Tensor, opts?: ScoreOptions): CudaPreparedTable | null {
    const p = opts?.prepared as CudaPreparedTable | null | undefined;
    if (!p || p.table !== table || p.precision !== (opts?.precision ?? 'float32') || !('half' in p) || !p.live()) return null;
    return p.ptr === cu('prepareScores', table).ptr ? p : null;
  }
  /**
   * Chunked GEMM of x against the table, then a row argmax: never materialises [M, V]. With
   * `split` (ScoreOptions bf16x3) the GEMM is one bf16 tensor-core product over 3e columns:
   * [xh | xh | xl] . [th | tl | th] (a true-float32 product of the 30k-row table took 0.24 ms per
   * 1,100 rows on an H200, 12% of batch-1 sampling).
   */
  private scoreArg(op: string, out: Tensor, x: Tensor, table: Tensor, nearest: boolean, split: boolean, prep: CudaPreparedTable | null = null): void {
    sameFloat(op, x, table);
    expectDtype(op, 'out', out, 'int32');
    const [V, e] = matrixShape(op, 'table', table);
    if (lastDim(x) !== e) throw new ShapeError(op, `x rows must have ${e} elements`, [x.shape, table.shape]);
    const M = rowsOf(x);
    expectSize(op, 'out', out, M);
    if (!M) return;
    const o = cu(op, out);
    const tb = cu(op, table);
    const xx = cu(op, x);
    if (!V) throw new ShapeError(op, 'the table has no rows', [table.shape]);
    this.wroteInts(o, [0, V - 1]); // row indices of the table
    // the split operands (bf16, rows of 3e): x as [hi | hi | lo], the table as [hi | lo | hi]
    const three = split && x.dtype === 'float32' && table.dtype === 'float32';
    // the table's half norms and split from `prep` when given (made once for many calls), else here
    const own = this.tableOperands(tb, V, e, nearest && !prep, three && !prep?.t3);
    const half = nearest ? prep?.half || own.half : 0;
    const t3 = three ? prep?.t3 || own.t3 : 0;
    // on sm_90 with the wgmma kernels on, the split product and its row argmax in one kernel
    const fused = three && (3 * e) % 8 === 0 && this.wgmmaOn() && this.sharedOptin >= GROUPED_WGMMA_SHARED;
    // rows per GEMM: a [chunk, V] float32 score block of at most 128 MiB (about 1,100 rows of a
    // 30k vocabulary; the earlier 16 MiB made 15 small GEMMs and argmaxes for 2,048 rows)
    const chunk = Math.max(1, Math.min(M, Math.floor(SCORE_BLOCK / Math.max(V, 1))));
    let x3: { ptr: number; free: () => void } | null = null;
    let scores: { ptr: number; free: () => void } | null = null;
    try {
      x3 = three ? this.scratch(M * 3 * e * 2) : null;
      scores = fused ? null : this.scratch(chunk * V * 4);
      if (x3) this.launchN('split_bf16x3_f32', M * e, [A(x3.ptr), P(xx), L(M), L(e), I(0)]);
      if (fused && x3) {
        this.scoreArgWgmma(o, x3.ptr, t3, M, V, 3 * e, half);
        return;
      }
      if (!scores) throw new DeviceError(`${op}: no score block`); // unreachable: allocated unless fused
      for (let m0 = 0; m0 < M; m0 += chunk) {
        const n = Math.min(chunk, M - m0);
        if (x3) {
          const K = 3 * e;
          this.cublasGemm({ transA: false, transB: true, M: n, N: V, K, a: x3.ptr + m0 * K * 2, lda: K, strideA: 0, b: t3, ldb: K, strideB: 0, c: scores.ptr, ldc: V, strideC: 0, alpha: 1, beta: 0, batch: 1, operands: 'bfloat16', output: 'float32' }, 'bf16');
        } else {
          this.gemm({ transA: false, transB: true, M: n, N: V, K: e, a: xx.ptr + m0 * e * 4, lda: e, strideA: 0, b: tb.ptr, ldb: e, strideB: 0, c: scores.ptr, ldc: V, strideC: 0, alpha: 1, beta: 0, batch: 1 });
        }
        this.launchRows('row_argmax_f32', n, [P(o), A(scores.ptr), A(half), B(nearest), L(n), L(V), L(m0)]);
      }
    } finally {
      scores?.free();
      x3?.free();
      own.free();
    }
  }
  /**
   * score_argmax_wgmma over rows of X3 [M, K] against T3 [V, K] (bf16, K-major), then
   * score_argmax_finish: out[m] = the best v of row m, from per-(row, 128-column tile) bests (12
   * bytes each: at most 384 MiB of them per chunk of rows, 46k rows of a 30k vocabulary).
   */
  private scoreArgWgmma(o: CudaTensor, x3: number, t3: number, M: number, V: number, K: number, half: number): void {
    const tilesV = Math.ceil(V / 128);
    const chunk = Math.max(1, Math.min(M, Math.floor((SCORE_BLOCK * 4) / (tilesV * 12))));
    const ps = this.scratch(chunk * tilesV * 8);
    const pi = this.scratch(chunk * tilesV * 4);
    try {
      for (let m0 = 0; m0 < M; m0 += chunk) {
        const n = Math.min(chunk, M - m0);
        const blocks = Math.ceil(n / 128) * tilesV;
        const tail = [I(n), I(V), I(K), A(half), B(half !== 0)];
        if (this.scoreTma && K >= 64 && n >= 128) {
          // the chunk's rows of X3 and the table, in boxes of 64 (K) x 128 rows (operands smaller
          // than a box take the cp.async kernel: the TMA scoring was measured and GPU-tested on
          // larger ones only, though the grouped kernels' tests read boxes past a tensor as zeros)
          this.driver.tensorMapBf16(this.tensorMapSlot(0), x3 + m0 * K * 2, n, K, 64, 128);
          this.driver.tensorMapBf16(this.tensorMapSlot(1), t3, V, K, 64, 128);
          this.launch('score_argmax_tma', blocks, 256, [['tmap', 0], ['tmap', 1], A(ps.ptr), A(pi.ptr), ...tail], GROUPED_WGMMA_SHARED);
        } else this.launch('score_argmax_wgmma', blocks, 256, [A(ps.ptr), A(pi.ptr), A(x3 + m0 * K * 2), A(t3), ...tail], GROUPED_WGMMA_SHARED);
        this.launch('score_argmax_finish', Math.min(Math.ceil(n / 8), MAX_GRID), BLOCK, [P(o), A(ps.ptr), A(pi.ptr), I(n), I(tilesV), I(m0)]);
      }
    } finally {
      ps.free();
      pi.free();
    }
  }

  // ---- optimiser -----------------------------------------------------------------------------
  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, o: AdamWOptions): void {
    const op = 'adamw';
    sameFloat(op, param, grad, m, v);
    sameSize(op, param, grad, m, v);
    const bc1 = 1 - o.beta1 ** o.step;
    const bc2 = 1 - o.beta2 ** o.step;
    const decay = 1 - o.lr * o.weightDecay;
    const ptrs = [cu(op, param).ptr, cu(op, grad).ptr, cu(op, m).ptr, cu(op, v).ptr];
    const hyper = [D(o.beta1), D(o.beta2), D(o.lr), D(o.eps), D(bc1), D(bc2), D(decay)];
    // groups of four over the aligned front (adamw_x4), element by element for the rest
    const n4 = byFours(0, ...ptrs) ? Math.floor(param.size / 4) : 0;
    if (n4) this.launchN('adamw_x4', n4, [...ptrs.map(A), L(n4), ...hyper]);
    const done = 4 * n4;
    if (done < param.size) this.launchN('adamw_f32', param.size - done, [...ptrs.map((p) => A(p + done * 4)), L(param.size - done), ...hyper]);
  }
}

/** The CUDA backend's PreparedTable: device addresses of the half norms and (bf16x3) the split table. */
interface CudaPreparedTable extends PreparedTable {
  /** The table's device address when prepared (a tensor reused for another buffer does not match). */
  readonly ptr: number;
  readonly half: number;
  /** 0 unless bf16x3. */
  readonly t3: number;
  live(): boolean;
}

function actKind(kind: Activation): number {
  return kind === 'gelu' ? 0 : kind === 'tanh' ? 1 : 2;
}

function matrixShape(op: string, name: string, t: Tensor): [number, number] {
  if (t.shape.length !== 2) throw new ShapeError(op, `${name} must be a matrix`, [t.shape]);
  return [t.shape[0]!, t.shape[1]!];
}

/** The most blocks of moe_route_lanes_f32: each adds a row of partial sums that the host reads back and adds. */
const ROUTE_BLOCKS = 128;
/**
 * The launch of moe_route_lanes_f32 (moe.cu) for M tokens over E experts, or null for E > 32: G
 * lanes per token (the power of two >= E) and the smallest block of 128, 256 or 512 threads that
 * covers the tokens in at most ROUTE_BLOCKS blocks (else 512 threads and the blocks loop), so that a
 * small batch still spreads over the SMs (H200, CUDA graph replay: 2.7 us at M 2048, E 8, and 8 us at
 * M 32768, against 18 us and 26 us for moe_route_topk_f32 and moe_route_stats).
 */
function routeLaunch(M: number, E: number): { lanes: number; block: number; grid: number } | null {
  if (E > 32) return null;
  let lanes = 1;
  while (lanes < E) lanes *= 2;
  const threads = M * lanes;
  const block = [128, 256].find((b) => Math.ceil(threads / b) <= ROUTE_BLOCKS) ?? 512;
  return { lanes, block, grid: Math.max(1, Math.min(Math.ceil(threads / block), ROUTE_BLOCKS)) };
}

/** A routing's host numbers: kept assignments per expert and the loss statistics. */
interface RouteStats {
  counts: number[];
  loadShare: number[];
  aux: number;
  z: number;
}

/**
 * The routing's statistics from the device's per-block partial sums (`part`: per block, E sums of
 * the probabilities, E assignment counts, the z-loss sum) and the kept counts per expert (`tot`).
 */
function routeStats(part: Float64Array, tot: Int32Array, M: number, E: number, nA: number, statBlocks: number): RouteStats {
  const meanP = new Array<number>(E).fill(0);
  const assigned = new Array<number>(E).fill(0);
  let z = 0;
  for (let b = 0; b < statBlocks; b++) {
    const o = b * (2 * E + 1);
    for (let e = 0; e < E; e++) {
      meanP[e]! += part[o + e]!;
      assigned[e]! += part[o + E + e]!;
    }
    z += part[o + 2 * E]!;
  }
  // an empty batch has no share, no balance loss and no z-loss
  const loadShare = assigned.map((c) => (M > 0 ? c / nA : 0));
  let aux = 0;
  if (M > 0) {
    for (let e = 0; e < E; e++) aux += loadShare[e]! * (meanP[e]! / M);
    aux *= E;
  }
  return { counts: Array.from(tot), loadShare, aux, z: M > 0 ? z / M : 0 };
}

/**
 * The CUDA backend's routing: its tensors, the experts' row offsets on the device (`offsets`, E + 1
 * int32, or 0 when the routing has none: with a capacity factor), and the host numbers from
 * `stats()`, which may read them back on first use.
 */
export class CudaRouting implements MoeRouting {
  constructor(
    readonly tokens: number,
    readonly experts: number,
    readonly topK: number,
    readonly probs: Tensor,
    readonly lse: Tensor,
    readonly expertIndex: Tensor,
    readonly gates: Tensor,
    readonly gateNorm: Tensor,
    readonly order: Tensor,
    readonly slot: Tensor,
    /** Device address of the experts' row offsets [E + 1] (int32), or 0. */
    readonly offsets: number,
    private readonly stats: () => RouteStats,
    private readonly release: () => void,
  ) {}
  get counts(): readonly number[] {
    return this.stats().counts;
  }
  get loadShare(): readonly number[] {
    return this.stats().loadShare;
  }
  get aux(): number {
    return this.stats().aux;
  }
  get z(): number {
    return this.stats().z;
  }
  dispose(): void {
    this.release();
  }
}

/** bf16 tensors of whole 16-byte vectors (8 elements), 16-byte aligned, under 2^31 elements. */
function bf16Vectors(size: number, ...ts: CudaTensor[]): boolean {
  return size % 8 === 0 && size < 2 ** 31 && ts.every((t) => t.dtype === 'bfloat16' && t.ptr % 16 === 0);
}

/**
 * The `#define` lines of MOE_DIFFUSEQ_DEFINES ("NAME=V,NAME": each a C identifier, with an optional
 * value of letters, digits, dots and minus signs); throws on anything else.
 */
export function definesOf(spec: string): string {
  return spec
    .split(',')
    .map((d) => d.trim())
    .filter(Boolean)
    .map((d) => {
      const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:=([A-Za-z0-9_.-]+))?$/.exec(d);
      if (!m) throw new Error(`MOE_DIFFUSEQ_DEFINES: '${d}' is not NAME or NAME=VALUE`);
      return `#define ${m[1]}${m[2] !== undefined ? ` ${m[2]}` : ''}\n`;
    })
    .join('');
}

/**
 * The row-in-registers LayerNorm forward for rows of C: the instance holding exactly the 16-byte
 * vectors a lane needs (C <= 256, 512, 768, 1024), whose loads all go before its stores, or the
 * general one (C <= LN_VEC_WIDTH).
 */
function lnVecKernel(C: number): string {
  const perLane = lnVectorsPerLane(C);
  return perLane <= 4 ? `layernorm_bf16_vec${perLane}` : 'layernorm_bf16_vec';
}
/** 16-byte vectors a lane holds of a row of C bf16 in the row-in-registers LayerNorm kernels (at least 1). */
function lnVectorsPerLane(C: number): number {
  return Math.max(1, Math.ceil(C / 8 / 32));
}

/**
 * Whether the row-in-registers LayerNorm kernels (layernorm_bf16_vec and its backward) serve rows
 * of C: bf16 `rows` of whole 16-byte vectors, at most LN_VEC_WIDTH wide, 16-byte aligned; float32
 * per-column `vectors` (weight, bias), 16-byte aligned; float32 per-row statistics.
 */
function lnVecFits(C: number, rows: CudaTensor[], vectors: CudaTensor[], mean: CudaTensor): boolean {
  return (
    C % 8 === 0 &&
    C <= LN_VEC_WIDTH &&
    rows.every((t) => t.dtype === 'bfloat16' && t.ptr % 16 === 0) &&
    vectors.every((t) => t.dtype === 'float32' && t.ptr % 16 === 0) &&
    mean.dtype === 'float32'
  );
}

/**
 * Whether the bf16 pair kernels (two elements per 32-bit word, 32-bit indices) serve R rows of C
 * elements of these tensors: all bfloat16 and 4-byte aligned, C even, R C below 2^31.
 */
function bf16Pairs(C: number, R: number, ...ts: CudaTensor[]): boolean {
  return C % 2 === 0 && R * C < 2 ** 31 && ts.every((t) => t.dtype === 'bfloat16' && t.ptr % 4 === 0);
}

/**
 * The operands the one-launch grouped kernels (grouped_gemm.cu, grouped_wgmma.cu) take: bf16
 * activations and weight, output width and reduction multiples of 8 (whole 16-byte chunks), 16-byte
 * aligned bases.
 */
function groupedOperands(a: CudaTensor, w: { ptr: number; dtype: DType }, nOut: number, kRed: number): boolean {
  return a.dtype === 'bfloat16' && w.dtype === 'bfloat16' && nOut % 8 === 0 && kRed % 8 === 0 && a.ptr % 16 === 0 && w.ptr % 16 === 0;
}

/** [E, N, K] of a grouped product's weight, and (unless null) counts checked against E. */
function groupedShape(op: string, weight: Tensor, counts: readonly number[] | null): [number, number, number] {
  if (weight.shape.length !== 3) throw new ShapeError(op, 'weight must be [E, N, K]', [weight.shape]);
  const [E, N, K] = weight.shape as [number, number, number];
  if (counts && (counts.length !== E || counts.some((c) => !Number.isInteger(c) || c < 0))) throw new ShapeError(op, `counts must be ${E} non-negative integers`, [weight.shape]);
  return [E, N, K];
}

function checkBroadcast(op: string, dims: readonly number[], y: readonly number[]): void {
  if (dims.length !== 3 || y.length !== 3 || y[2] !== dims[2] || (y[0] !== 1 && y[0] !== dims[0]) || (y[1] !== 1 && y[1] !== dims[1])) {
    throw new ShapeError(op, `cannot broadcast [${y.join(', ')}] over [${dims.join(', ')}]`);
  }
}
