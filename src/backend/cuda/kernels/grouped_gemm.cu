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
// GG_STAGES steps ahead in dynamic shared memory (GG_SHARED bytes, which the host asks for).
// Out-of-range rows and columns load as zeros (cp.async with a source size of 0). Fragments come from
// shared memory with ldmatrix (transposed for the NN weight). Requires Kr and Nc multiples of 8 and
// 16-byte aligned bases (the host checks; otherwise it uses the cuBLAS path).
//
// Speed (H200, `bench/gpu.js --items ops`, fc1 of base at 16 x 2048: 8 x 8256 x 768 -> 1536): 242
// TFLOP/s against cuBLAS's ~550 per expert. ncu: every shared address is a 32-bit base plus
// constants (a generic pointer converted per ldmatrix / cp.async cost ~470 integer instructions per
// 32 mma per warp: 171 TFLOP/s); 256-row tiles by 512 threads (a quarter less L2 traffic) were
// slower (208). mma.sync reaches about half of Hopper's tensor throughput; cuBLAS's kernels use
// wgmma, as grouped_wgmma.cu does for the forward on sm_90 cards (410 TFLOP/s): under `auto` these
// kernels serve the backward of small products and every product on other cards.
//
// Blocks: for each expert ceil(count / 128) row tiles x ceil(Nc / 128) column tiles, experts in
// order; a block finds its expert by walking off[] (E is small). The grid is an upper bound (the
// host's ceil(rows / 128) + E row tiles); blocks past the last tile return.

#define GG_BM 128
#define GG_BN 128
#define GG_BK 32
#define GG_LDA (GG_BK + 8)   // A tile [GG_BM][GG_LDA] and the NT weight tile [GG_BN][GG_LDA]
#define GG_LDB (GG_BN + 8)   // k-major tiles [GG_BK][GG_LDB]: the NN weight, both TN operands
#define GG_THREADS 256        // every kernel here: 8 warps (each thread loads two 16-byte chunks per tile)
#define GG_STAGES 4           // tiles in flight
#define GG_TILE_BYTES (GG_BM * GG_LDA * 2)  // one A or B tile of a stage (a k-major tile, GG_BK * GG_LDB * 2, is smaller)
#define GG_SHARED (GG_STAGES * 2 * GG_TILE_BYTES)  // dynamic shared memory of the NT / NN kernels (81,920 bytes)
#define GG_KTILE_BYTES (GG_BK * GG_LDB * 2)
#define GG_TN_SHARED (GG_STAGES * 2 * GG_KTILE_BYTES)  // of the TN kernel (69,632 bytes)

// One thread's two 16-byte chunks of every stage's tile of one operand: global sources that move
// by `step` elements per k step, byte offsets in the stage, whether the chunk's fixed coordinate is
// in range, and its k coordinate within the step (the k bound is checked per step: Kr and the
// experts' rows need not be multiples of GG_BK; chunks never straddle it, sizes being multiples of 8).
template <int N>
struct GgChunks {
  const bf16_t *src[N];
  u32 dst[N];
  bool ok[N];
  int k[N];
  i64 step;
};
// A row tile: rows [r0, r0 + 128) (valid below rEnd) x GG_BK columns (k) of a row-major [.., ld]
// matrix into [128][GG_LDA]; chunk j of thread t: row t / 4 + 64 j, columns 8 (t % 4) ...
__device__ __forceinline__ GgChunks<2> gg_row_tile(const bf16_t *M, i64 r0, i64 rEnd, int ld) {
  GgChunks<2> c;
  const int t = threadIdx.x;
#pragma unroll
  for (int j = 0; j < 2; j++) {
    const int row = (t >> 2) + 64 * j, col = (t & 3) * 8;
    c.src[j] = M + (r0 + row) * ld + col;
    c.dst[j] = (u32)(row * GG_LDA + col) * 2;
    c.ok[j] = r0 + row < rEnd;
    c.k[j] = col;
  }
  c.step = GG_BK;
  return c;
}
// A k-major tile: GG_BK rows (k) x columns [c0, c0 + 128) (valid below cEnd) of a row-major [.., ld]
// matrix, from row 0, into [GG_BK][GG_LDB]; chunk j of thread t: row t / 16 + 16 j, columns 8 (t % 16) ...
__device__ __forceinline__ GgChunks<2> gg_kmajor_tile(const bf16_t *M, int c0, int cEnd, int ld) {
  GgChunks<2> c;
  const int t = threadIdx.x;
#pragma unroll
  for (int j = 0; j < 2; j++) {
    const int row = (t >> 4) + 16 * j, col = (t & 15) * 8;
    c.src[j] = M + (i64)row * ld + c0 + col;
    c.dst[j] = (u32)(row * GG_LDB + col) * 2;
    c.ok[j] = c0 + col < cEnd;
    c.k[j] = row;
  }
  c.step = (i64)GG_BK * ld;
  return c;
}
// The step at k0's copies into the stage at shared address `stage` (out-of-range chunks read
// nothing from `any`, a valid address, and land as zeros); the sources move on one step.
template <int N>
__device__ __forceinline__ void gg_issue(GgChunks<N> &c, u32 stage, int k0, int kEnd, const bf16_t *any) {
#pragma unroll
  for (int j = 0; j < N; j++) {
    const bool v = c.ok[j] && c.k[j] + k0 < kEnd;
    cp_async16(stage + c.dst[j], v ? (const void *)c.src[j] : (const void *)any, v ? 16u : 0u);
    c.src[j] += c.step;
  }
}

// The B fragments of NJ n8 tiles (the warp's 8 NJ columns) for a k16 step of a k-major tile, at
// `addr` (the lane's row (lane & 7) + 8 ((lane >> 3) & 1) and column 8 (lane >> 4) of the warp's
// block): transposing ldmatrix of blocks (k 0-7, n 0-7), (k 8-15, n 0-7), then the next 8 columns.
template <int NJ>
__device__ __forceinline__ void gg_bfrags_kmajor(u32 b[NJ][2], u32 addr) {
#pragma unroll
  for (int nj = 0; nj < NJ; nj += 2) {
    u32 r[4];
    ldsm_x4_t(r, addr + nj * 8 * 2);
    b[nj][0] = r[0];
    b[nj][1] = r[1];
    b[nj + 1][0] = r[2];
    b[nj + 1][1] = r[3];
  }
}
template <int NJ>
__device__ __forceinline__ void gg_mma_tile(float acc[4][NJ][4], const u32 a[4][4], const u32 b[NJ][2]) {
#pragma unroll
  for (int mi = 0; mi < 4; mi++)
#pragma unroll
    for (int nj = 0; nj < NJ; nj++) mma_bf16(acc[mi][nj], a[mi], b[nj][0], b[nj][1]);
}

template <bool NN>
__device__ __forceinline__ void gg_body(void *C, const bf16_t *A, const bf16_t *W, const int *off, int E, int Kr, int Nc, const float *bias, void *pre, int flags) {
  constexpr int BM = GG_BM, NJ = 4;  // warps 2 x 4, each 64 x 32 of the tile (4 x NJ mma tiles)
  constexpr u32 A_BYTES = GG_TILE_BYTES;
  // GG_STAGES A tiles, then GG_STAGES B tiles
  extern __shared__ __align__(16) bf16_t gg_dyn[];
  const u32 sA = smem_addr(gg_dyn), sB = sA + GG_STAGES * A_BYTES;
  // which expert and tile
  const int tilesN = (Nc + GG_BN - 1) / GG_BN;
  GroupedTile gt;
  if (!grouped_tile(gt, off, E, BM, GG_BN, tilesN, blockIdx.x)) return;
  const int e = gt.e, n0 = gt.n0;
  const i64 r0 = gt.r0, rEnd = gt.rEnd;
  const bf16_t *We = W + (i64)e * Kr * Nc;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
  const int wm = (warp >> 2) * 64, wn = (warp & 3) * 32;  // the warp's corner in the tile
  GgChunks<2> la = gg_row_tile(A, r0, rEnd, Kr);
  GgChunks<2> lb = NN ? gg_kmajor_tile(We, n0, Nc, Nc) : gg_row_tile(We, n0, Nc, Kr);
  // the lane's ldmatrix addresses within a stage (plus constants per fragment): A [BM][GG_LDA]
  // blocks (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15); the NT weight
  // [128][GG_LDA] blocks (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
  const u32 aLane = (u32)((wm + (lane & 7) + ((lane >> 3) & 1) * 8) * GG_LDA + (lane >> 4) * 8) * 2;
  const u32 bLane = NN ? (u32)(((lane & 7) + ((lane >> 3) & 1) * 8) * GG_LDB + wn + (lane >> 4) * 8) * 2
                       : (u32)((wn + (lane & 7) + (lane >> 4) * 8) * GG_LDA + ((lane >> 3) & 1) * 8) * 2;
  float acc[4][NJ][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < NJ; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;
  const int steps = (Kr + GG_BK - 1) / GG_BK;
  int kLoad = 0;
  auto load = [&](int stage) {
    gg_issue(la, sA + stage * A_BYTES, kLoad, Kr, A);
    gg_issue(lb, sB + stage * GG_TILE_BYTES, kLoad, Kr, W);
    kLoad += GG_BK;
  };
  cp_pipeline_start<GG_STAGES>(steps, load);
  for (int s = 0; s < steps; s++) {
    cp_async_wait<GG_STAGES - 2>();  // step s's tiles have landed (this thread's copies)
    __syncthreads();           // ... everyone's; and everyone is done with step s - 1's stage
    cp_pipeline_refill<GG_STAGES>(s, steps, load);
    const u32 as = sA + (s % GG_STAGES) * A_BYTES + aLane, bs = sB + (s % GG_STAGES) * GG_TILE_BYTES + bLane;
#pragma unroll
    for (int kk = 0; kk < GG_BK; kk += 16) {
      u32 a[4][4], b[NJ][2];
#pragma unroll
      for (int mi = 0; mi < 4; mi++) ldsm_x4(a[mi], as + (mi * 16 * GG_LDA + kk) * 2);
      if (NN) gg_bfrags_kmajor<NJ>(b, bs + kk * GG_LDB * 2);
      else {
#pragma unroll
        for (int nj = 0; nj < NJ; nj += 2) {
          u32 r[4];
          ldsm_x4(r, bs + (nj * 8 * GG_LDA + kk) * 2);
          b[nj][0] = r[0];
          b[nj][1] = r[1];
          b[nj + 1][0] = r[2];
          b[nj + 1][1] = r[3];
        }
      }
      gg_mma_tile<NJ>(acc, a, b);
    }
  }
  // epilogue: bias, GELU with the pre-activation saved, store (flags: 1 C bf16, 2 bias, 4 pre/GELU)
  const bool cbf = flags & 1, hasBias = flags & 2, gelu = flags & 4;
  float bv[NJ][2];  // the thread's bias pairs (its columns are the same in every row)
#pragma unroll
  for (int nj = 0; nj < NJ; nj++) {
    const int col = n0 + wn + nj * 8 + 2 * tq;
    const bool in = hasBias && col < Nc;
    bv[nj][0] = in ? bias[(i64)e * Nc + col] : 0.0f;
    bv[nj][1] = in ? bias[(i64)e * Nc + col + 1] : 0.0f;
  }
#pragma unroll
  for (int mi = 0; mi < 4; mi++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const i64 r = r0 + wm + mi * 16 + g + h * 8;
      if (r >= rEnd) continue;
#pragma unroll
      for (int nj = 0; nj < NJ; nj++) {
        const int col = n0 + wn + nj * 8 + 2 * tq;
        if (col >= Nc) continue;  // Nc is even: col + 1 < Nc too
        float v0 = acc[mi][nj][2 * h], v1 = acc[mi][nj][2 * h + 1];
        if (hasBias) {
          v0 = v0 + bv[nj][0];
          v1 = v1 + bv[nj][1];
        }
        store_pair_act(C, pre, r * Nc + col, v0, v1, cbf, gelu);
      }
    }
}

extern "C" __global__ void __launch_bounds__(GG_THREADS, 2) grouped_gemm_nt_bf16(void *C, const bf16_t *A, const bf16_t *W, const int *off, int E, int Kr, int Nc,
                                                                      const float *bias, void *pre, int flags) {
  pdl_entry();
  gg_body<false>(C, A, W, off, E, Kr, Nc, bias, pre, flags);
}
extern "C" __global__ void __launch_bounds__(GG_THREADS, 2) grouped_gemm_nn_bf16(void *C, const bf16_t *A, const bf16_t *W, const int *off, int E, int Kr, int Nc,
                                                                      const float *bias, void *pre, int flags) {
  pdl_entry();
  gg_body<true>(C, A, W, off, E, Kr, Nc, bias, pre, flags);
}

// The weight gradient of every expert in one launch (TN): dW_e [Nm, Kn] += G_e^T X_e, where G_e and
// X_e are expert e's rows of G [rows, Nm] and X [rows, Kn] (bf16, row-major), and with dB the bias
// gradient dB_e [Nm] += the column sums of G_e (float32 sums, from the tiles already in shared
// memory). dW and dB are float32 [E, Nm, Kn] and [E, Nm]. Block (e, m tile, n tile) owns a 128 x 128
// tile of dW_e (no atomics) and walks the expert's rows GG_BK at a time, GG_STAGES steps in flight
// (GG_TN_SHARED bytes of dynamic shared memory): both operands sit in shared memory k-major
// ([GG_BK rows][128 columns]) and reach the tensor cores through transposing ldmatrix.
extern "C" __global__ void __launch_bounds__(GG_THREADS, 2) grouped_gemm_tn_bf16(float *dW, float *dB, const bf16_t *G, const bf16_t *X, const int *off, int E, int Nm,
                                                                      int Kn) {
  pdl_entry();
  extern __shared__ __align__(16) bf16_t gg_dyn[];
  const u32 sA = smem_addr(gg_dyn), sB = sA + GG_STAGES * GG_KTILE_BYTES;
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
  GgChunks<2> la = gg_kmajor_tile(Ge, m0, Nm, Nm);
  GgChunks<2> lb = gg_kmajor_tile(Xe, n0, Kn, Kn);
  // A = G_e^T: element (m, k) sits at as[k][m]; the transposing ldmatrix of the 8 x 8 blocks
  // (k 0-7, m 0-7), (k 0-7, m 8-15), (k 8-15, m 0-7), (k 8-15, m 8-15) gives a0..a3
  const u32 aLane = (u32)(((lane & 7) + (lane >> 4) * 8) * GG_LDB + wm + ((lane >> 3) & 1) * 8) * 2;
  const u32 bLane = (u32)(((lane & 7) + ((lane >> 3) & 1) * 8) * GG_LDB + wn + (lane >> 4) * 8) * 2;
  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;
  const int steps = (rows + GG_BK - 1) / GG_BK;
  int kLoad = 0;
  auto load = [&](int stage) {
    gg_issue(la, sA + stage * GG_KTILE_BYTES, kLoad, rows, G);
    gg_issue(lb, sB + stage * GG_KTILE_BYTES, kLoad, rows, X);
    kLoad += GG_BK;
  };
  cp_pipeline_start<GG_STAGES>(steps, load);
  for (int s = 0; s < steps; s++) {
    cp_async_wait<GG_STAGES - 2>();
    __syncthreads();
    cp_pipeline_refill<GG_STAGES>(s, steps, load);
    const int stage = s % GG_STAGES;
    if (sums && threadIdx.x < GG_BM) {
      // rows past the expert's end were loaded as zeros
      const bf16_t *as = gg_dyn + stage * (GG_KTILE_BYTES / 2);
#pragma unroll 8
      for (int k = 0; k < GG_BK; k++) bsum += bf2f(as[k * GG_LDB + threadIdx.x]);
    }
    const u32 as = sA + stage * GG_KTILE_BYTES + aLane, bs = sB + stage * GG_KTILE_BYTES + bLane;
#pragma unroll
    for (int kk = 0; kk < GG_BK; kk += 16) {
      u32 a[4][4], b[4][2];
#pragma unroll
      for (int mi = 0; mi < 4; mi++) ldsm_x4_t(a[mi], as + (kk * GG_LDB + mi * 16) * 2);
      gg_bfrags_kmajor<4>(b, bs + kk * GG_LDB * 2);
      gg_mma_tile<4>(acc, a, b);
    }
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
        float2 *w = (float2 *)(We + (i64)m * Kn + n);
        const float2 old = *w;
        *w = make_float2(old.x + acc[mi][nj][2 * h], old.y + acc[mi][nj][2 * h + 1]);
      }
    }
  if (sums && threadIdx.x < GG_BM && m0 + (int)threadIdx.x < Nm) dB[(i64)e * Nm + m0 + threadIdx.x] += bsum;
}
