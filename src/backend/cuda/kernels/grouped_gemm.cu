// Grouped GEMM for the mixture of experts: every expert's product in one launch, bf16 operands on
// the tensor cores (mma.sync m16n8k16, float32 accumulation), no cuBLAS call per expert (whose
// algorithm choice on the host cost up to milliseconds per new row count). The per-expert cuBLAS
// path of backend.ts is the slow twin these are tested against.
//
// The rows of A [rows, Kr] (row-major, bf16) are grouped by expert: expert e owns rows
// [off[e], off[e + 1]) (off on the device, E + 1 ints). For each expert,
//   NT (the forward):      C[rows, :] = A[rows, :] W_e^T, W_e [Nc, Kr] row-major (W [E, Nc, Kr]);
//   NN (the input grad):   C[rows, :] = A[rows, :] W_e,   W_e [Kr, Nc] row-major (W [E, Kr, Nc]);
// C [rows, Nc] row-major, bf16 or float32. The forward's epilogue adds bias[e, col] (float32) and
// with `pre` stores the pre-activation and GELU (erf) of it (of the stored, rounded value).
//
// A block of 256 threads (8 warps, 2 x 4) computes a 128 x 128 tile of one expert's rows in steps of
// 32 along Kr; each warp owns 64 x 32 (4 x 4 mma tiles). Tiles stream global -> shared with cp.async
// GG_STAGES steps ahead in dynamic shared memory (GG_SHARED bytes, which the host asks for): with
// two stages one step's 32 mma per warp could not cover the next tiles' load latency (145-180
// TFLOP/s against cuBLAS's 260-410, H200). Out-of-range rows and columns load as zeros (cp.async
// with a source size of 0). Fragments come from shared memory with
// ldmatrix (transposed for the NN weight). Requires Kr and Nc multiples of 8 and 16-byte aligned
// bases (the host checks; otherwise it uses the cuBLAS path).
//
// Blocks: for each expert ceil(count / 128) row tiles x ceil(Nc / 128) column tiles, experts in
// order; a block finds its expert by walking off[] (E is small). The grid is an upper bound (the
// host's ceil(rows / 128) + E row tiles); blocks past the last tile return.

#define GG_BM 128
#define GG_BN 128
#define GG_BK 32
#define GG_LDA (GG_BK + 8)   // A tile [GG_BM][GG_LDA] and the NT weight tile [GG_BN][GG_LDA]
#define GG_LDB (GG_BN + 8)   // the NN weight tile [GG_BK][GG_LDB]
#define GG_THREADS 256        // every kernel here: 8 warps (the load loops unroll on it)
#define GG_STAGES 4           // NT / NN: tiles in flight
#define GG_TILE (GG_BM * GG_LDA)  // elements of one A or B tile of a stage (the NN weight tile, GG_BK * GG_LDB, is smaller)
#define GG_SHARED (GG_STAGES * 2 * GG_TILE * 2)  // bytes of dynamic shared memory of the NT / NN kernels (81,920)

__device__ __forceinline__ u32 gg_smem(const void *p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}
// 16 bytes global -> shared, the bytes past `bytes` (0-16) zero-filled
__device__ __forceinline__ void gg_cp16(void *dst, const void *src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(gg_smem(dst)), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void gg_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void gg_wait1() { asm volatile("cp.async.wait_group 1;\n" ::); }
// until at most N of this thread's newest copy groups are in flight
template <int N>
__device__ __forceinline__ void gg_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
__device__ __forceinline__ void gg_ldsm4(u32 r[4], const bf16_t *p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(gg_smem(p)));
}
__device__ __forceinline__ void gg_ldsm4t(u32 r[4], const bf16_t *p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(gg_smem(p)));
}
__device__ __forceinline__ void gg_mma(float *c, const u32 *a, u32 b0, u32 b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Rows [r0, r0 + 128) (valid below rEnd) x columns [k0, k0 + 32) (valid below kEnd) of a row-major
// bf16 matrix with `ld` elements per row into a [128][GG_LDA] shared tile: 512 chunks of 16 bytes,
// two per thread.
__device__ __forceinline__ void gg_load_rows(bf16_t *dst, const bf16_t *src, i64 r0, i64 rEnd, int k0, int kEnd, i64 ld) {
#pragma unroll
  for (int c = threadIdx.x; c < GG_BM * (GG_BK / 8); c += GG_THREADS) {
    const int row = c >> 2, col = (c & 3) * 8;
    const i64 r = r0 + row;
    const int k = k0 + col;
    const int bytes = (r < rEnd && k < kEnd) ? min(8, kEnd - k) * 2 : 0;
    gg_cp16(dst + row * GG_LDA + col, bytes ? (const void *)(src + r * ld + k) : (const void *)src, bytes);
  }
}
// Rows [k0, k0 + 32) (valid below kEnd) x columns [n0, n0 + 128) (valid below nEnd) of a row-major
// bf16 matrix [.., ld] into a [32][GG_LDB] shared tile (the NN weight).
__device__ __forceinline__ void gg_load_cols(bf16_t *dst, const bf16_t *src, int k0, int kEnd, int n0, int nEnd, i64 ld) {
#pragma unroll
  for (int c = threadIdx.x; c < GG_BK * (GG_BN / 8); c += GG_THREADS) {
    const int row = c >> 4, col = (c & 15) * 8;
    const int k = k0 + row, n = n0 + col;
    const int bytes = (k < kEnd && n < nEnd) ? min(8, nEnd - n) * 2 : 0;
    gg_cp16(dst + row * GG_LDB + col, bytes ? (const void *)(src + (i64)k * ld + n) : (const void *)src, bytes);
  }
}

// The B fragments of four n8 tiles (columns wn .. wn + 31) for the k16 step at row kk of a k-major
// shared tile [GG_BK][GG_LDB] (transposing ldmatrix: blocks (k 0-7, n 0-7), (k 8-15, n 0-7), then
// the next 8 columns), and the 4 x 4 products of the warp's A fragments with them.
__device__ __forceinline__ void gg_bfrags_kmajor(u32 b[4][2], const bf16_t *bs, int kk, int wn, int lane) {
#pragma unroll
  for (int nj = 0; nj < 4; nj += 2) {
    u32 r[4];
    gg_ldsm4t(r, bs + (kk + (lane & 7) + ((lane >> 3) & 1) * 8) * GG_LDB + wn + nj * 8 + (lane >> 4) * 8);
    b[nj][0] = r[0];
    b[nj][1] = r[1];
    b[nj + 1][0] = r[2];
    b[nj + 1][1] = r[3];
  }
}
__device__ __forceinline__ void gg_mma_4x4(float acc[4][4][4], const u32 a[4][4], const u32 b[4][2]) {
#pragma unroll
  for (int mi = 0; mi < 4; mi++)
#pragma unroll
    for (int nj = 0; nj < 4; nj++) gg_mma(acc[mi][nj], a[mi], b[nj][0], b[nj][1]);
}

template <bool NN>
__device__ void gg_body(void *C, const bf16_t *A, const bf16_t *W, const int *off, int E, int Kr, int Nc, const float *bias, void *pre, int flags) {
  // GG_STAGES A tiles, then GG_STAGES B tiles
  extern __shared__ __align__(16) bf16_t gg_dyn[];
  bf16_t *As = gg_dyn, *Bs = gg_dyn + GG_STAGES * GG_TILE;
  // which expert and tile
  const int tilesN = (Nc + GG_BN - 1) / GG_BN;
  int t = blockIdx.x, e = 0;
  for (; e < E; e++) {
    const int tiles = (off[e + 1] - off[e] + GG_BM - 1) / GG_BM * tilesN;
    if (t < tiles) break;
    t -= tiles;
  }
  if (e == E) return;
  const i64 r0 = (i64)off[e] + (i64)(t / tilesN) * GG_BM, rEnd = off[e + 1];
  const int n0 = (t % tilesN) * GG_BN;
  const bf16_t *We = W + (i64)e * Kr * Nc;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
  const int wm = (warp >> 2) * 64, wn = (warp & 3) * 32;  // the warp's corner in the tile
  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;
  const int steps = (Kr + GG_BK - 1) / GG_BK;
  auto load = [&](int stage, int k0) {
    gg_load_rows(As + stage * GG_TILE, A, r0, rEnd, k0, Kr, Kr);
    if (NN) gg_load_cols(Bs + stage * GG_TILE, We, k0, Kr, n0, Nc, Nc);
    else gg_load_rows(Bs + stage * GG_TILE, We, n0, Nc, k0, Kr, Kr);
  };
  // one commit group per step, empty ones included, so that after step s's wait the groups still in
  // flight are exactly those of the GG_STAGES - 2 steps after it
#pragma unroll
  for (int p = 0; p < GG_STAGES - 1; p++) {
    if (p < steps) load(p, p * GG_BK);
    gg_commit();
  }
  for (int s = 0; s < steps; s++) {
    gg_wait<GG_STAGES - 2>();  // step s's tiles have landed (this thread's copies)
    __syncthreads();           // ... everyone's; and everyone is done with step s - 1's stage
    const int next = s + GG_STAGES - 1;
    if (next < steps) load(next % GG_STAGES, next * GG_BK);  // into step s - 1's stage
    gg_commit();
    const bf16_t *as = As + (s % GG_STAGES) * GG_TILE, *bs = Bs + (s % GG_STAGES) * GG_TILE;
#pragma unroll
    for (int kk = 0; kk < GG_BK; kk += 16) {
      u32 a[4][4], b[4][2];
#pragma unroll
      for (int mi = 0; mi < 4; mi++) gg_ldsm4(a[mi], as + (wm + mi * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * GG_LDA + kk + (lane >> 4) * 8);
      if (NN) gg_bfrags_kmajor(b, bs, kk, wn, lane);
      else {
        // the NT weight tile is n-major [GG_BN][GG_LDA]: blocks (n 0-7, k 0-7), (n 0-7, k 8-15), ...
#pragma unroll
        for (int nj = 0; nj < 4; nj += 2) {
          u32 r[4];
          gg_ldsm4(r, bs + (wn + nj * 8 + (lane & 7) + (lane >> 4) * 8) * GG_LDA + kk + ((lane >> 3) & 1) * 8);
          b[nj][0] = r[0];
          b[nj][1] = r[1];
          b[nj + 1][0] = r[2];
          b[nj + 1][1] = r[3];
        }
      }
      gg_mma_4x4(acc, a, b);
    }
  }
  // epilogue: bias, GELU with the pre-activation saved, store (flags: 1 C bf16, 2 bias, 4 pre/GELU)
  const bool cbf = flags & 1, hasBias = flags & 2, gelu = flags & 4;
#pragma unroll
  for (int mi = 0; mi < 4; mi++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const i64 r = r0 + wm + mi * 16 + g + h * 8;
      if (r >= rEnd) continue;
#pragma unroll
      for (int nj = 0; nj < 4; nj++) {
        const int col = n0 + wn + nj * 8 + 2 * tq;
        if (col >= Nc) continue;  // Nc is even: col + 1 < Nc too
        float v0 = acc[mi][nj][2 * h], v1 = acc[mi][nj][2 * h + 1];
        if (hasBias) {
          v0 = v0 + bias[(i64)e * Nc + col];
          v1 = v1 + bias[(i64)e * Nc + col + 1];
        }
        const i64 at = r * Nc + col;
        if (gelu) {
          // the pre-activation has C's dtype; GELU of the stored value (a recomputation from pre
          // gives the same bits)
          if (cbf) {
            const u32 pv = pack_bf2(v0, v1);
            ((u32 *)pre)[at >> 1] = pv;
            v0 = bf_lo(pv);
            v1 = bf_hi(pv);
          } else {
            ((float *)pre)[at] = v0;
            ((float *)pre)[at + 1] = v1;
          }
          v0 = gelu_f(v0);
          v1 = gelu_f(v1);
        }
        if (cbf) ((u32 *)C)[at >> 1] = pack_bf2(v0, v1);
        else {
          ((float *)C)[at] = v0;
          ((float *)C)[at + 1] = v1;
        }
      }
    }
}

extern "C" __global__ void __launch_bounds__(GG_THREADS, 2) grouped_gemm_nt_bf16(void *C, const bf16_t *A, const bf16_t *W, const int *off, int E, int Kr, int Nc,
                                                                      const float *bias, void *pre, int flags) {
  gg_body<false>(C, A, W, off, E, Kr, Nc, bias, pre, flags);
}
extern "C" __global__ void __launch_bounds__(GG_THREADS, 2) grouped_gemm_nn_bf16(void *C, const bf16_t *A, const bf16_t *W, const int *off, int E, int Kr, int Nc,
                                                                      const float *bias, void *pre, int flags) {
  gg_body<true>(C, A, W, off, E, Kr, Nc, bias, pre, flags);
}

// The weight gradient of every expert in one launch (TN): dW_e [Nm, Kn] += G_e^T X_e, where G_e and
// X_e are expert e's rows of G [rows, Nm] and X [rows, Kn] (bf16, row-major), and with dB the bias
// gradient dB_e [Nm] += the column sums of G_e (float32 sums, from the tiles already in shared
// memory). dW and dB are float32 [E, Nm, Kn] and [E, Nm]. Block (e, m tile, n tile) owns a 128 x 128
// tile of dW_e (no atomics) and walks the expert's rows 32 at a time: both operands sit in shared
// memory k-major ([32 rows][128 columns]) and reach the tensor cores through transposing ldmatrix.
extern "C" __global__ void __launch_bounds__(256) grouped_gemm_tn_bf16(float *dW, float *dB, const bf16_t *G, const bf16_t *X, const int *off, int E, int Nm,
                                                                      int Kn) {
  __shared__ __align__(16) bf16_t As[2][GG_BK * GG_LDB], Bs[2][GG_BK * GG_LDB];
  const int tilesM = (Nm + GG_BM - 1) / GG_BM, tilesN = (Kn + GG_BN - 1) / GG_BN;
  const int e = blockIdx.x / (tilesM * tilesN), t = blockIdx.x % (tilesM * tilesN);
  if (e >= E) return;
  const int m0 = (t / tilesN) * GG_BM, n0 = (t % tilesN) * GG_BN;
  const int rows = off[e + 1] - off[e];
  if (rows <= 0) return;
  const bf16_t *Ge = G + (i64)off[e] * Nm, *Xe = X + (i64)off[e] * Kn;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
  const int wm = (warp >> 2) * 64, wn = (warp & 3) * 32;
  const bool sums = dB != nullptr && n0 == 0;  // the first column tile also sums the bias gradient
  float bsum = 0.0f;                            // column m0 + threadIdx.x of G_e (threads < 128)
  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;
  const int steps = (rows + GG_BK - 1) / GG_BK;
  auto load = [&](int stage, int r0) {
    gg_load_cols(As[stage], Ge, r0, rows, m0, Nm, Nm);
    gg_load_cols(Bs[stage], Xe, r0, rows, n0, Kn, Kn);
  };
  load(0, 0);
  gg_commit();
  for (int s = 0; s < steps; s++) {
    if (s + 1 < steps) load((s + 1) & 1, (s + 1) * GG_BK);
    gg_commit();
    gg_wait1();
    __syncthreads();
    const bf16_t *as = As[s & 1], *bs = Bs[s & 1];
    if (sums && threadIdx.x < GG_BM) {
      // rows past the expert's end were loaded as zeros
#pragma unroll 8
      for (int k = 0; k < GG_BK; k++) bsum += bf2f(as[k * GG_LDB + threadIdx.x]);
    }
#pragma unroll
    for (int kk = 0; kk < GG_BK; kk += 16) {
      u32 a[4][4], b[4][2];
      // A = G_e^T: element (m, k) sits at as[k][m]; the transposing ldmatrix of the 8 x 8 blocks
      // (k 0-7, m 0-7), (k 0-7, m 8-15), (k 8-15, m 0-7), (k 8-15, m 8-15) gives a0..a3
#pragma unroll
      for (int mi = 0; mi < 4; mi++) gg_ldsm4t(a[mi], as + (kk + (lane & 7) + (lane >> 4) * 8) * GG_LDB + wm + mi * 16 + ((lane >> 3) & 1) * 8);
      gg_bfrags_kmajor(b, bs, kk, wn, lane);
      gg_mma_4x4(acc, a, b);
    }
    __syncthreads();
  }
  float *We = dW + (i64)e * Nm * Kn;
#pragma unroll
  for (int mi = 0; mi < 4; mi++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int m = m0 + wm + mi * 16 + g + h * 8;
      if (m >= Nm) continue;
#pragma unroll
      for (int nj = 0; nj < 4; nj++) {
        const int n = n0 + wn + nj * 8 + 2 * tq;
        if (n >= Kn) continue;  // Kn is even
        We[(i64)m * Kn + n] += acc[mi][nj][2 * h];
        We[(i64)m * Kn + n + 1] += acc[mi][nj][2 * h + 1];
      }
    }
  if (sums && threadIdx.x < GG_BM && m0 + (int)threadIdx.x < Nm) dB[(i64)e * Nm + m0 + threadIdx.x] += bsum;
}
