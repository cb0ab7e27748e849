/**
 * cuBLASLt through koffi, for what cublasGemmStridedBatchedEx cannot do: a bias added in the
 * product's epilogue (CUBLASLT_EPILOGUE_BIAS), so that a bf16 linear layer's output is written once
 * instead of written, read back and written again by a separate bias pass (the qkv projection's
 * `bias_act`: 1.35 ms of a base training step and 1.4 ms of a batch-1 sampling run on an H200).
 * The bias is bfloat16, as the output: cuBLASLt 13 offers no algorithm for a float32 bias with a
 * bfloat16 output (H200, 2026-11-29); the denoiser passes its bf16 weight copy's bias (the rounding
 * PyTorch's autocast gives a Linear's bias too).
 *
 * Row-major to column-major as in cublas.ts: a row-major C [M, N] = op(A) op(B) is the column-major
 * C^T [N, M] = op(B)^T op(A)^T, so cuBLASLt's first operand is our B and its second our A. The bias
 * runs along C^T's rows, i.e. our N: one value per output feature, as a Linear's bias.
 *
 * A plan (descriptors, layouts and the heuristic's algorithm) is made once per shape, transpose
 * and pointer alignment, and kept; where cuBLASLt offers no algorithm (an older library, a bias type
 * it refuses) the plan is null and the caller adds the bias itself, as before.
 */
import { CudaError } from './driver.js';
import { bindFunctions, loadCudaLibrary, type NativeFn } from './libs.js';
import type { RowMajorGemm } from './cublas.js';

const CUDA_R_32F = 0;
const CUDA_R_16BF = 14;
const CUBLAS_COMPUTE_32F = 68;
// cublasLtMatmulDescAttributes_t
const DESC_TRANSA = 3;
const DESC_TRANSB = 4;
const DESC_EPILOGUE = 7;
const DESC_BIAS_POINTER = 8;
const DESC_BIAS_DATA_TYPE = 26;
const EPILOGUE_BIAS = 4;
// cublasLtMatmulPreferenceAttributes_t
const PREF_MAX_WORKSPACE_BYTES = 1;
const PREF_MIN_ALIGNMENT_A_BYTES = 5;
const PREF_MIN_ALIGNMENT_B_BYTES = 6;
const PREF_MIN_ALIGNMENT_C_BYTES = 7;
const PREF_MIN_ALIGNMENT_D_BYTES = 8;
/** sizeof(cublasLtMatmulHeuristicResult_t): the algorithm (8 x uint64), workspaceSize, state, wavesCount, reserved[4]. */
const HEURISTIC_RESULT_BYTES = 96;
/** Offset of workspaceSize in it. */
const RESULT_WORKSPACE_AT = 64;

interface LtLib {
  f: Record<string, NativeFn>;
}
let libCache: LtLib | null | undefined;

/** libcublasLt (loaded with cuBLAS, which depends on it), or null where it cannot be bound. */
function ltLib(): LtLib | null {
  if (libCache !== undefined) return libCache;
  try {
    const { lib } = loadCudaLibrary('cublasLt');
    const f = bindFunctions(lib, [
      'int cublasLtCreate(_Out_ void **handle)',
      'int cublasLtDestroy(void *handle)',
      'int cublasLtMatmulDescCreate(_Out_ void **desc, int computeType, int scaleType)',
      'int cublasLtMatmulDescDestroy(void *desc)',
      'int cublasLtMatmulDescSetAttribute(void *desc, int attr, const void *buf, size_t bytes)',
      'int cublasLtMatrixLayoutCreate(_Out_ void **layout, int type, uint64_t rows, uint64_t cols, int64_t ld)',
      'int cublasLtMatrixLayoutDestroy(void *layout)',
      'int cublasLtMatmulPreferenceCreate(_Out_ void **pref)',
      'int cublasLtMatmulPreferenceDestroy(void *pref)',
      'int cublasLtMatmulPreferenceSetAttribute(void *pref, int attr, const void *buf, size_t bytes)',
      'int cublasLtMatmulAlgoGetHeuristic(void *handle, void *desc, void *a, void *b, void *c, void *d, void *pref, int requested, void *results, _Out_ int *returned)',
      // device addresses go as uint64_t, as in cublas.ts
      'int cublasLtMatmul(void *handle, void *desc, const void *alpha, uint64_t A, void *Adesc, uint64_t B, void *Bdesc, const void *beta, uint64_t C, void *Cdesc, uint64_t D, void *Ddesc, const void *algo, uint64_t workspace, size_t workspaceBytes, void *stream)',
    ]);
    libCache = { f };
  } catch {
    libCache = null;
  }
  return libCache;
}

/** A product's descriptors and algorithm, made once. */
interface Plan {
  desc: bigint;
  layouts: bigint[];
  /** The heuristic's result (its first 64 bytes are the algorithm). */
  result: Buffer;
}

/** The largest power of two (at most 256) dividing a device address: the alignment cuBLASLt may assume. */
function alignmentOf(ptr: number): number {
  let a = 1;
  while (a < 256 && ptr % (a * 2) === 0) a *= 2;
  return a;
}

/** A cuBLASLt handle for bf16 products with a bfloat16 bias in the epilogue, on one stream. */
export class CublasLt {
  private readonly f: Record<string, NativeFn>;
  private handle: bigint | null;
  private readonly plans = new Map<string, Plan | null>();
  private readonly alpha = new Float32Array([1]);
  private readonly beta = new Float32Array([0]);

  private constructor(
    lib: LtLib,
    private readonly stream: bigint | null,
    private readonly workspace: { ptr: number; bytes: number },
  ) {
    this.f = lib.f;
    const h: (bigint | null)[] = [null];
    this.check('cublasLtCreate', this.f['cublasLtCreate']!(h));
    this.handle = h[0]!;
  }

  /** A handle, or null where libcublasLt cannot be bound or refuses a handle (the caller keeps its bias pass). */
  static create(stream: bigint | null, workspace: { ptr: number; bytes: number }): CublasLt | null {
    const lib = ltLib();
    if (!lib) return null;
    try {
      return new CublasLt(lib, stream, workspace);
    } catch {
      return null;
    }
  }

  private check(call: string, rc: unknown, detail?: string): void {
    const code = rc as number;
    if (code !== 0) throw new CudaError('cublas', call, code, `cublasStatus ${code}`, detail);
  }

  /**
   * Row-major C [M, N] = op(A) op(B) + bias [N] (broadcast over the rows): bf16 A, B and C, float32
   * accumulation and a bfloat16 bias (16-byte aligned), one call, alpha 1 and beta 0, no batch. False
   * (nothing done) otherwise, or where cuBLASLt has no algorithm for it.
   */
  gemmBias(p: RowMajorGemm, bias: number): boolean {
    // the heuristic cannot be told the bias's alignment and its kernels may load it 16 bytes at a
    // time (a misaligned one faults on the device, past any fallback): only 16-byte aligned biases
    if (!this.handle || p.batch !== 1 || p.alpha !== 1 || p.beta !== 0 || bias % 16 !== 0) return false;
    const key = [p.transA, p.transB, p.M, p.N, p.K, p.lda, p.ldb, p.ldc, alignmentOf(p.a), alignmentOf(p.b), alignmentOf(p.c)].join(' ');
    let plan = this.plans.get(key);
    if (plan === undefined) {
      try {
        plan = this.plan(p, bias);
      } catch {
        // an attribute this cuBLASLt does not know (an older library): the bias pass, as without it
        plan = null;
      }
      this.plans.set(key, plan);
    }
    if (!plan) return false;
    this.setDesc(plan.desc, DESC_BIAS_POINTER, new BigUint64Array([BigInt(bias)]));
    const [la, lb, lc] = plan.layouts as [bigint, bigint, bigint];
    const rc = this.f['cublasLtMatmul']!(
      this.handle, plan.desc, this.alpha,
      p.b, la, p.a, lb, this.beta,
      p.c, lc, p.c, lc,
      plan.result, this.workspace.ptr, this.workspace.bytes, this.stream,
    );
    if (rc !== 0) {
      // refused at the call (e.g. an alignment the heuristic did not see): the plain path from now on
      this.plans.set(key, null);
      this.free(plan);
      return false;
    }
    return true;
  }

  /** The descriptors and the heuristic's algorithm for p, or null where cuBLASLt offers none. */
  private plan(p: RowMajorGemm, bias: number): Plan | null {
    const made: (bigint | null)[] = [null];
    this.check('cublasLtMatmulDescCreate', this.f['cublasLtMatmulDescCreate']!(made, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const desc = made[0]!;
    const layouts: bigint[] = [];
    let pref: bigint | null = null;
    try {
      this.setDesc(desc, DESC_TRANSA, new Int32Array([p.transB ? 1 : 0]));
      this.setDesc(desc, DESC_TRANSB, new Int32Array([p.transA ? 1 : 0]));
      this.setDesc(desc, DESC_EPILOGUE, new Uint32Array([EPILOGUE_BIAS]));
      this.setDesc(desc, DESC_BIAS_POINTER, new BigUint64Array([BigInt(bias)]));
      this.setDesc(desc, DESC_BIAS_DATA_TYPE, new Int32Array([CUDA_R_16BF]));
      // column-major layouts as stored: cuBLASLt's A is our B ([K, N] row-major = N x K column-major
      // when not transposed), its B our A, C = D our C
      const layout = (rows: number, cols: number, ld: number): bigint => {
        const l: (bigint | null)[] = [null];
        this.check('cublasLtMatrixLayoutCreate', this.f['cublasLtMatrixLayoutCreate']!(l, CUDA_R_16BF, rows, cols, ld));
        layouts.push(l[0]!);
        return l[0]!;
      };
      layout(p.transB ? p.K : p.N, p.transB ? p.N : p.K, p.ldb);
      layout(p.transA ? p.M : p.K, p.transA ? p.K : p.M, p.lda);
      layout(p.N, p.M, p.ldc);
      const pr: (bigint | null)[] = [null];
      this.check('cublasLtMatmulPreferenceCreate', this.f['cublasLtMatmulPreferenceCreate']!(pr));
      pref = pr[0]!;
      this.setPref(pref, PREF_MAX_WORKSPACE_BYTES, new BigUint64Array([BigInt(this.workspace.bytes)]));
      this.setPref(pref, PREF_MIN_ALIGNMENT_A_BYTES, new Uint32Array([alignmentOf(p.b)]));
      this.setPref(pref, PREF_MIN_ALIGNMENT_B_BYTES, new Uint32Array([alignmentOf(p.a)]));
      this.setPref(pref, PREF_MIN_ALIGNMENT_C_BYTES, new Uint32Array([alignmentOf(p.c)]));
      this.setPref(pref, PREF_MIN_ALIGNMENT_D_BYTES, new Uint32Array([alignmentOf(p.c)]));
      const result = Buffer.alloc(HEURISTIC_RESULT_BYTES);
      const returned: number[] = [0];
      const rc = this.f['cublasLtMatmulAlgoGetHeuristic']!(this.handle, desc, layouts[0], layouts[1], layouts[2], layouts[2], pref, 1, result, returned);
      if (rc !== 0 || returned[0]! < 1 || Number(result.readBigUInt64LE(RESULT_WORKSPACE_AT)) > this.workspace.bytes) {
        this.free({ desc, layouts, result });
        return null;
      }
      return { desc, layouts, result };
    } catch (e) {
      this.free({ desc, layouts, result: Buffer.alloc(0) });
      throw e;
    } finally {
      if (pref) this.f['cublasLtMatmulPreferenceDestroy']!(pref);
    }
  }

  private setDesc(desc: bigint, attr: number, value: ArrayBufferView): void {
    this.check('cublasLtMatmulDescSetAttribute', this.f['cublasLtMatmulDescSetAttribute']!(desc, attr, value, value.byteLength), `attribute ${attr}`);
  }
  private setPref(pref: bigint, attr: number, value: ArrayBufferView): void {
    this.check('cublasLtMatmulPreferenceSetAttribute', this.f['cublasLtMatmulPreferenceSetAttribute']!(pref, attr, value, value.byteLength), `attribute ${attr}`);
  }
  private free(plan: Plan): void {
    for (const l of plan.layouts) this.f['cublasLtMatrixLayoutDestroy']!(l);
    this.f['cublasLtMatmulDescDestroy']!(plan.desc);
  }

  /** Frees the plans and the handle (idempotent). */
  destroy(): void {
    if (!this.handle) return;
    for (const plan of this.plans.values()) if (plan) this.free(plan);
    this.plans.clear();
    const h = this.handle;
    this.handle = null;
    this.check('cublasLtDestroy', this.f['cublasLtDestroy']!(h));
  }
}
