/**
 * cuBLAS through koffi: one handle per backend, bound to its stream, and a row-major strided-batched
 * GEMM on top of cublasGemmStridedBatchedEx (float32 operands, CUBLAS_COMPUTE_32F: true float32,
 * no TF32, so results match the CPU reference to float32 rounding; or bfloat16 operands with
 * float32 accumulation and a float32 or bfloat16 output, the mixed precision).
 *
 * cuBLAS is column-major. A row-major C [M, N] is the column-major C^T [N, M], and
 * C^T = op(B)^T op(A)^T, so a row-major product is the column-major product with the operands
 * swapped: m = N, n = M, first operand B, second A, each keeping its own transpose flag and its
 * row-major leading dimension.
 */
import { CudaError } from './driver.js';
import { bindFunctions, cublasVersionOf, loadCudaLibrary, type NativeFn } from './libs.js';

const CUBLAS_OP_N = 0;
const CUBLAS_OP_T = 1;
const CUDA_R_32F = 0;
const CUDA_R_16BF = 14;
const CUBLAS_COMPUTE_32F = 68;
const CUBLAS_GEMM_DEFAULT = -1;
const CUBLAS_DEFAULT_MATH = 0;

/** A row-major strided-batched product C[i] = alpha op(A[i]) op(B[i]) + beta C[i] on device addresses. */
export interface RowMajorGemm {
  transA: boolean;
  transB: boolean;
  M: number;
  N: number;
  K: number;
  /** Address of A; lda is the row length of A as stored ([M, K] -> K, or [K, M] when transA -> M). */
  a: number;
  lda: number;
  strideA: number;
  b: number;
  ldb: number;
  strideB: number;
  c: number;
  ldc: number;
  strideC: number;
  alpha: number;
  beta: number;
  batch: number;
  /** Element type of A and B (the accumulation is float32). Default float32. */
  operands?: 'float32' | 'bfloat16';
  /** Element type of C (bfloat16 only with bfloat16 operands). Default float32. */
  output?: 'float32' | 'bfloat16';
}

interface CublasLib {
  path: string;
  version: string;
  f: Record<string, NativeFn>;
}
let libCache: CublasLib | undefined;

function cublasLib(): CublasLib {
  if (libCache) return libCache;
  const { lib, path } = loadCudaLibrary('cublas');
  const f = bindFunctions(lib, [
    'const char *cublasGetStatusName(int status)',
    'int cublasCreate_v2(_Out_ void **handle)',
    'int cublasDestroy_v2(void *handle)',
    'int cublasSetStream_v2(void *handle, void *stream)',
    'int cublasSetMathMode(void *handle, int mode)',
    'int cublasSetWorkspace_v2(void *handle, uint64_t workspace, size_t bytes)',
    // device addresses go as uint64_t: on the 64-bit ABIs a pointer and a uint64_t pass alike
    'int cublasGemmStridedBatchedEx(void *handle, int transa, int transb, int m, int n, int k, const void *alpha, uint64_t A, int Atype, int lda, int64_t strideA, uint64_t B, int Btype, int ldb, int64_t strideB, const void *beta, uint64_t C, int Ctype, int ldc, int64_t strideC, int batchCount, int computeType, int algo)',
  ]);
  libCache = { path, version: cublasVersionOf(lib), f };
  return libCache;
}

/** Loads cuBLAS (once per process) without creating a handle; throws a DeviceError when it is missing. */
export function cublasLibrary(): { path: string; version: string } {
  const { path, version } = cublasLib();
  return { path, version };
}

/** A cuBLAS handle on one stream of the current context. */
export class Cublas {
  readonly path: string;
  /** "major.minor.patch". */
  readonly version: string;
  private readonly f: Record<string, NativeFn>;
  private handle: bigint | null;
  // host scalars for alpha / beta (cuBLAS reads them during the call: CUBLAS_POINTER_MODE_HOST)
  private readonly alpha = new Float32Array(1);
  private readonly beta = new Float32Array(1);

  /**
   * Creates a handle in the current context and binds it to `stream`, with `workspace` (a device
   * buffer the caller owns and keeps alive) as cuBLAS's workspace: NVIDIA's advice for Hopper
   * (32 MiB), and what capturing GEMMs into a CUDA graph needs (cuBLAS must not allocate then).
   */
  constructor(stream: bigint | null, workspace: { ptr: number; bytes: number } | null = null) {
    const lib = cublasLib();
    this.path = lib.path;
    this.version = lib.version;
    this.f = lib.f;
    const h: (bigint | null)[] = [null];
    this.check('cublasCreate_v2', this.f['cublasCreate_v2']!(h));
    this.handle = h[0]!;
    this.check('cublasSetStream_v2', this.f['cublasSetStream_v2']!(this.handle, stream));
    this.check('cublasSetMathMode', this.f['cublasSetMathMode']!(this.handle, CUBLAS_DEFAULT_MATH));
    // after SetStream, which resets the workspace to the default pool
    if (workspace) this.check('cublasSetWorkspace_v2', this.f['cublasSetWorkspace_v2']!(this.handle, workspace.ptr, workspace.bytes));
  }

  private check(call: string, rc: unknown, detail?: string): void {
    const code = rc as number;
    if (code === 0) return;
    const name = (this.f['cublasGetStatusName']!(code) as string | null) ?? `cublasStatus ${code}`;
    throw new CudaError('cublas', call, code, name, detail);
  }

  /** Row-major float32 GEMM (see the file comment for the operand swap). */
  gemm(p: RowMajorGemm): void {
    if (!this.handle) throw new CudaError('cublas', 'cublasGemmStridedBatchedEx', 1, 'CUBLAS_STATUS_NOT_INITIALIZED', 'the handle was destroyed');
    this.alpha[0] = p.alpha;
    this.beta[0] = p.beta;
    const ab = p.operands === 'bfloat16' ? CUDA_R_16BF : CUDA_R_32F;
    const rc = this.f['cublasGemmStridedBatchedEx']!(
      this.handle,
      p.transB ? CUBLAS_OP_T : CUBLAS_OP_N,
      p.transA ? CUBLAS_OP_T : CUBLAS_OP_N,
      p.N, p.M, p.K,
      this.alpha,
      p.b, ab, p.ldb, p.strideB,
      p.a, ab, p.lda, p.strideA,
      this.beta,
      p.c, p.output === 'bfloat16' ? CUDA_R_16BF : CUDA_R_32F, p.ldc, p.strideC,
      p.batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT,
    );
    this.check('cublasGemmStridedBatchedEx', rc, `row-major ${p.batch} x [${p.M}, ${p.K}]${p.transA ? '^T' : ''} x [${p.K}, ${p.N}]${p.transB ? '^T' : ''}, ${p.operands ?? 'float32'} operands, ${p.output ?? 'float32'} output`);
  }

  /** Destroys the handle (idempotent). */
  destroy(): void {
    if (!this.handle) return;
    const h = this.handle;
    this.handle = null;
    this.check('cublasDestroy_v2', this.f['cublasDestroy_v2']!(h));
  }
}
