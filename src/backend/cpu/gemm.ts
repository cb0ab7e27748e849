/**
 * Matrix products on the CPU: the float64 reference loop (the oracle, also used for float64 data)
 * and the float32 fast path (WebAssembly SIMD gemm_f32 on all threads).
 */
import type { FArray } from './tensor.js';
import type { KernelPool } from './kernels.js';

/** A strided GEMM problem in element units (see gemm_f32 in assembly/index.ts). */
export interface GemmProblem {
  M: number;
  N: number;
  K: number;
  /** Element offsets into the arrays and strides: A(i,k) = a[aOff + i sam + k sak]. */
  aOff: number;
  sam: number;
  sak: number;
  bOff: number;
  sbk: number;
  sbn: number;
  cOff: number;
  ldc: number;
  alpha: number;
  beta: number;
  batch: number;
  sab: number;
  sbb: number;
  scb: number;
}

/** C = alpha A B + beta C by plain loops (i, k, j order for locality), accumulating in float64. */
export function gemmReference(p: GemmProblem, a: FArray, b: FArray, c: FArray): void {
  const acc = new Float64Array(p.N);
  for (let bt = 0; bt < p.batch; bt++) {
    const ao = p.aOff + bt * p.sab;
    const bo = p.bOff + bt * p.sbb;
    const co = p.cOff + bt * p.scb;
    for (let i = 0; i < p.M; i++) {
      acc.fill(0);
      for (let k = 0; k < p.K; k++) {
        const av = a[ao + i * p.sam + k * p.sak]!;
        if (av === 0) continue;
        const brow = bo + k * p.sbk;
        for (let j = 0; j < p.N; j++) acc[j]! += av * b[brow + j * p.sbn]!;
      }
      const crow = co + i * p.ldc;
      for (let j = 0; j < p.N; j++) {
        c[crow + j] = p.beta === 0 ? p.alpha * acc[j]! : p.alpha * acc[j]! + p.beta * c[crow + j]!;
      }
    }
  }
}

/** Work below this many multiply-adds runs on the calling thread alone (thread wake-up costs ~20 us). */
const THREAD_MIN_MACS = 1 << 17;

/**
 * float32 GEMM through the SIMD kernel. `aByte`, `bByte`, `cByte` are the arrays' byte offsets in
 * linear memory; `ws` is the per-thread workspace base, `wsBytes` its per-thread size.
 */
export function gemmF32(pool: KernelPool, p: GemmProblem, aByte: number, bByte: number, cByte: number, ws: number, wsBytes: number): void {
  if (p.M === 0 || p.N === 0 || p.batch === 0) return;
  const macs = p.M * p.N * p.K * p.batch;
  const nth = macs >= THREAD_MIN_MACS ? pool.threads : 1;
  // each thread uses its own workspace at ws + tid * wsBytes
  pool.run(
    'gemm_f32',
    [
      p.M, p.N, p.K,
      aByte + p.aOff * 4, p.sam, p.sak, p.sab,
      bByte + p.bOff * 4, p.sbk, p.sbn, p.sbb,
      cByte + p.cOff * 4, p.ldc, p.scb,
      p.alpha, p.beta, p.batch,
      ws, wsBytes,
    ],
    nth,
  );
}
