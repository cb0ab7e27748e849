// Hopper's warpgroup tensor-core instructions (wgmma, sm_90a): the grouped forward product, and the
// vocabulary scoring of nearestRows / argmaxDot with its row argmax (score_argmax_wgmma, below).
//
// The forward grouped product (NT) on Hopper's warpgroup tensor-core instructions (wgmma, sm_90a):
// every expert's C[rows, :] = A[rows, :] W_e^T (+ bias, GELU with the pre-activation saved) in one
// launch, as grouped_gemm.cu's grouped_gemm_nt_bf16 (same arguments, same epilogue, its twin in the
// tests), at the throughput mma.sync cannot reach on this card (about half of it: grouped_gemm.cu
// measured 242 TFLOP/s against cuBLAS's ~550 on fc1 of base, H200).
//
// A block of 256 threads (two warpgroups) computes a 128 x 128 tile of one expert's rows; warpgroup
// g owns rows 64 g .. 64 g + 63 and issues wgmma m64n128k16 (64 float32 accumulators per thread).
// Both operands are K-major in shared memory with the 128-byte swizzle: a tile row is 64 bf16 (one
// step of K), 16-byte chunk c of row r sits at chunk c ^ (r % 8) of its 128 bytes, and the matrix
// descriptors say so (stride 1024 bytes between groups of 8 rows; a k16 step moves the start 32
// bytes). Tiles arrive with cp.async GW_STAGES - 1 steps ahead; after a step's copies land, a proxy
// fence and a barrier make them visible to the tensor cores' (async) proxy. Each step's wgmma are
// waited for before the next barrier (its stage is refilled after it), so the tensor cores idle at
// the step boundaries unless the SM's other block fills them.
//
// The grid and the experts' offsets are grouped_gemm.cu's; requires Kr and Nc multiples of 8 and
// 16-byte aligned bases (the host checks).

#define GW_BM 128
#define GW_BN 128
#define GW_BK 64
#define GW_THREADS 256
#define GW_STAGES 3
#define GW_TILE_BYTES (GW_BM * GW_BK * 2)  // 16 KiB: one A or B tile of a stage
#define GW_SHARED (GW_STAGES * 2 * GW_TILE_BYTES + 1024)  // + alignment of the swizzled tiles to 1024 bytes (99,328)

// d += a b for one k16 step (the accumulators start at zero, so every step accumulates); TA / TB:
// A / B MN-major in shared memory (the transposed layouts, bf16 only), else K-major
template <int TA = 0, int TB = 0>
__device__ __forceinline__ void gw_mma(float d[64], u64 a, u64 b) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %66, 0;\n"
      " wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, %67, %68;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(a), "l"(b), "n"(1), "n"(TA), "n"(TB));
}

// One thread's N 16-byte chunks of a tile of rows x 64 columns per stage: rows t / 8 + STEP j
// (STEP = threads / 8), chunk t % 8 of the row (stored at chunk (t % 8) ^ (row % 8): the swizzle;
// row % 8 is the same for the thread's rows, STEP being a multiple of 8).
template <int N>
struct GwChunks {
  const bf16_t *src[N];
  bool ok[N];
  u32 dst;  // byte offset of chunk 0's row in the stage; row j adds STEP j * 128
  int k;    // the chunk's first column
};
template <int N, int STEP>
__device__ __forceinline__ GwChunks<N> gw_rows(const bf16_t *M, i64 r0, i64 rEnd, int ld) {
  GwChunks<N> c;
  const int t = threadIdx.x, row = t >> 3, chunk = t & 7;
#pragma unroll
  for (int j = 0; j < N; j++) {
    c.src[j] = M + (r0 + row + STEP * j) * ld + chunk * 8;
    c.ok[j] = r0 + row + STEP * j < rEnd;
  }
  c.dst = (u32)(row * 128 + ((chunk ^ (row & 7)) * 16));
  c.k = chunk * 8;
  return c;
}
template <int N, int STEP>
__device__ __forceinline__ void gw_issue(GwChunks<N> &c, u32 stage, int k0, int kEnd, const bf16_t *any) {
  const bool kin = c.k + k0 < kEnd;
#pragma unroll
  for (int j = 0; j < N; j++) {
    const bool v = c.ok[j] && kin;
    cp_async16(stage + c.dst + j * STEP * 128, v ? (const void *)c.src[j] : (const void *)any, v ? 16u : 0u);
    c.src[j] += GW_BK;
  }
}

// A K-major operand's loader: rows r0 .. rEnd - 1 of M (ld elements a row), 64 columns of K a
// step (gw_rows / gw_issue: N chunks a thread, rows STEP apart).
template <int N, int STEP>
struct GwKMajor {
  GwChunks<N> c;
  __device__ __forceinline__ GwKMajor(const bf16_t *M, i64 r0, i64 rEnd, int ld) : c(gw_rows<N, STEP>(M, r0, rEnd, ld)) {}
  __device__ __forceinline__ void issue(u32 stage, int k0, int kEnd, const bf16_t *any) { gw_issue<N, STEP>(c, stage, k0, kEnd, any); }
};
// An MN-major operand's loader (256 threads): the step's 64 rows of K of M (row k at M + k ld),
// columns c0 .. c0 + 127 (those from cEnd on zero), as two 64-column halves 8 KiB apart, each in
// 128-byte swizzled rows (16-byte chunk c of row k at chunk c ^ (k % 8)): the canonical MN-major
// layout of the 128-byte swizzle, 64 columns an atom, the atoms LBO = 8192 bytes apart, groups of 8
// rows of K SBO = 1024 bytes apart (gw_desc_mn). Thread t copies chunk t % 16 of rows t / 16 + 16 j.
struct GwMNMajor {
  const bf16_t *src;
  i64 ld;
  int row;
  bool ok;
  u32 dst;
  __device__ __forceinline__ GwMNMajor(const bf16_t *M, int ld_, int c0, int cEnd) {
    const int t = threadIdx.x, c = t & 15;
    row = t >> 4;
    ld = ld_;
    src = M + (i64)row * ld + c0 + c * 8;
    ok = c0 + c * 8 < cEnd;  // cEnd is a multiple of 8: whole chunks
    dst = (u32)((c >> 3) * 8192 + row * 128 + (((c & 7) ^ (row & 7)) << 4));
  }
  __device__ __forceinline__ void issue(u32 stage, int k0, int kEnd, const bf16_t *any) {
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const bool v = ok && k0 + row + 16 * j < kEnd;
      cp_async16(stage + dst + j * 16 * 128, v ? (const void *)(src + (i64)(16 * j) * ld) : (const void *)any, v ? 16u : 0u);
    }
    src += (i64)GW_BK * ld;
  }
};
// The descriptor of an MN-major tile of two 64-column atoms (GwMNMajor): a k16 step moves the start
// 16 rows (2,048 bytes)
__device__ __forceinline__ u64 gw_desc_mn(u32 addr) {
  return (u64)((addr & 0x3FFFF) >> 4) | ((u64)(8192 >> 4) << 16) | ((u64)(1024 >> 4) << 32) | ((u64)1 << 62);
}
struct GwNoHook {
  __device__ __forceinline__ void operator()(int) const {}
};

// The main loop of the kernels: WG warpgroups (64 WG rows of A, 128 WG threads) per block; d (zeroed
// here) = this warpgroup's 64 rows of the block's A tile times its 128-column B tile, over K (a
// multiple of 8) in steps of GW_BK, GW_STAGES deep (see the file comment); the A stages take
// 8 KiB WG each at sA, the B stages 16 KiB each at sB. la / lb load them (GwKMajor, or GwMNMajor
// with TA / TB); `any` operands give cp.async a valid address for zero-filled copies. hook(stage)
// runs while a step's products are in flight (the TN kernel's bias sums read the stage).
// S stages; INF = 1 keeps a step's wgmma group in flight through the next step's barrier and
// copies (wait_group 1), the copies then running S - 2 steps ahead instead of S - 1: a refill may
// only take the stage of a step whose products every warpgroup has waited for.
template <int WG, int TA, int TB, class LA, class LB, class Hook, int S = GW_STAGES, int INF = 0>
__device__ __forceinline__ void gw_loop(float d[64], LA &la, LB &lb, const bf16_t *anyA, const bf16_t *anyB, int K, u32 sA, u32 sB, const Hook &hook) {
  constexpr int A_BYTES = 64 * WG * GW_BK * 2;
  const int wg = threadIdx.x >> 7;  // warpgroup: rows 64 wg .. (K-major A), or A's atom wg (MN-major)
#pragma unroll
  for (int i = 0; i < 64; i++) d[i] = 0.0f;
  const int steps = (K + GW_BK - 1) / GW_BK;
  int kLoad = 0;
  auto load = [&](int stage) {
    la.issue(sA + stage * A_BYTES, kLoad, K, anyA);
    lb.issue(sB + stage * GW_TILE_BYTES, kLoad, K, anyB);
    kLoad += GW_BK;
  };
  constexpr int D = S - 1 - INF;  // steps whose copies are issued ahead
  static_assert(D >= 1, "a step's copies ahead at least");
  cp_pipeline_start<D + 1>(steps, load);
  for (int s = 0; s < steps; s++) {
    cp_async_wait<D - 1>();
    // the copies (generic proxy) are to be read by wgmma (async proxy)
    wg_proxy_fence();
    __syncthreads();  // everyone's copies of step s landed; everyone's wgmma of step s - 1 - INF finished
    if (s + D < steps) load((s + D) % S);  // the stage of step s - 1 - INF
    cp_async_commit();
    // both layouts put warpgroup wg's part of A 64 x 128 bytes (8 KiB) into the stage
    const u32 a = sA + (s % S) * A_BYTES + wg * 64 * 128, b = sB + (s % S) * GW_TILE_BYTES;
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < GW_BK / 16; kk++) gw_mma<TA, TB>(d, TA ? gw_desc_mn(a + kk * 2048) : gw_desc(a + kk * 32), TB ? gw_desc_mn(b + kk * 2048) : gw_desc(b + kk * 32));
    wg_commit();
    hook(s % S);
    if constexpr (INF) {
      wg_wait1();
    } else {
      wg_wait0();
    }
  }
  if constexpr (INF) {
    wg_wait0();
#pragma unroll
    for (int i = 0; i < 64; i++) wg_pin(d[i]);
  }
}
// gw_loop with both operands K-major: A's rows r0 .. rEnd - 1 and B's rows n0 .. nEnd - 1 (ld K).
template <int WG, int S = GW_STAGES, int INF = 0>
__device__ __forceinline__ void gw_mainloop(float d[64], const bf16_t *A, i64 r0, i64 rEnd, const bf16_t *B, int n0, int nEnd, const bf16_t *anyA,
                                            const bf16_t *anyB, int K, u32 sA, u32 sB) {
  constexpr int STEP = 16 * WG;
  GwKMajor<4, STEP> la(A, r0, rEnd, K);
  GwKMajor<8 / WG, STEP> lb(B, n0, nEnd, K);
  gw_loop<WG, 0, 0, GwKMajor<4, STEP>, GwKMajor<8 / WG, STEP>, GwNoHook, S, INF>(d, la, lb, anyA, anyB, K, sA, sB, GwNoHook());
}

// ---- Tensor Memory Accelerator loads (grouped_tma256_nt_bf16) ----
// A CUtensorMap as a kernel parameter (opaque, 128 bytes, 64-byte aligned; the host's
// cuTensorMapEncodeTiled writes it)
struct __align__(64) TmaMap {
  u64 w[16];
};
__device__ __forceinline__ void mbar_init(u32 bar, u32 count) { asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory"); }
// arrive, and add `bytes` to the transactions the current phase waits for
__device__ __forceinline__ void mbar_expect_tx(u32 bar, u32 bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// until the phase of parity `parity` has completed (a fresh barrier is in phase 0)
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
  asm volatile(
      "{\n .reg .pred p;\n GW_MBAR_WAIT:\n mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra GW_MBAR_WAIT;\n}\n" ::"r"(bar), "r"(parity)
      : "memory");
}
// the box of the tensor map at (c0 inner, c1 outer) into shared memory at dst, completing on bar
__device__ __forceinline__ void tma_load_2d(u32 dst, const TmaMap *map, int c0, int c1, u32 bar) {
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst), "l"((u64)map), "r"(c0),
               "r"(c1), "r"(bar)
               : "memory");
}
// Step s of a TMA-filled main loop (gw_tma_loop, the persistent kernel): once stage s % S's boxes
// have landed (its mbarrier's phase), warpgroup wg's products of the step on it (A parts A_BYTES
// apart, wg's 64 rows of each), leaving one wgmma group in flight (INF = 1) or none.
template <int S, int A_BYTES, int INF = 1>
__device__ __forceinline__ void gw_tma_step(float d[64], u32 sA, u32 sB, u32 bars, int s, int wg) {
  mbar_wait(bars + 8 * (s % S), (u32)(s / S) & 1);
  const u32 a = sA + (s % S) * A_BYTES + wg * 64 * 128, b = sB + (s % S) * GW_TILE_BYTES;
  wg_fence();
#pragma unroll
  for (int kk = 0; kk < GW_BK / 16; kk++) gw_mma(d, gw_desc(a + kk * 32), gw_desc(b + kk * 32));
  wg_commit();
  if constexpr (INF) {
    wg_wait1();
  } else {
    wg_wait0();
  }
}
// gw_loop's K-major main loop with a wgmma group in flight (INF = 1: the copies S - 2 steps ahead),
// its stages filled by the Tensor Memory Accelerator instead of every thread's cp.async (~140
// instructions a thread a step in the 256-row kernel): thread 0 issues a step's A box (64 x 64 WG
// rows from row rowA) and W box (64 x 128 from row rowW) onto the stage's mbarrier (S of them at
// bars), which counts their bytes; everyone waits on it. The boxes are written with the 128-byte
// swizzle gw_desc reads; rows past the expert's end are the next expert's (or zeros past the
// tensor), whose products the epilogue does not store; K past its end reads zeros. INF = 0 waits
// for each step's products (as gw_loop's), so the boxes go S - 1 steps ahead instead of S - 2.
template <int WG, int S, int INF = 1>
__device__ __forceinline__ void gw_tma_loop(float d[64], const TmaMap *mA, const TmaMap *mW, int rowA, int rowW, int K, u32 sA, u32 sB, u32 bars) {
  constexpr int A_BYTES = 64 * WG * GW_BK * 2, D = S - 1 - INF;
  static_assert(D >= 1, "a step's copies ahead at least");
  const int wg = threadIdx.x >> 7;
  const bool issuer = threadIdx.x == 0;
#pragma unroll
  for (int i = 0; i < 64; i++) d[i] = 0.0f;
  const int steps = (K + GW_BK - 1) / GW_BK;
  auto load = [&](int s) {
    const u32 bar = bars + 8 * (s % S);
    mbar_expect_tx(bar, A_BYTES + GW_TILE_BYTES);
    tma_load_2d(sA + (s % S) * A_BYTES, mA, s * GW_BK, rowA, bar);
    tma_load_2d(sB + (s % S) * GW_TILE_BYTES, mW, s * GW_BK, rowW, bar);
  };
  if (issuer) {
#pragma unroll
    for (int i = 0; i < S; i++) mbar_init(bars + 8 * i, 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    for (int p = 0; p < D && p < steps; p++) load(p);
  }
  for (int s = 0; s < steps; s++) {
    // every warpgroup's products of step s - 1 - INF are done (wait_group INF at the end of step
    // s - 1): their stage takes step s + D's boxes; at s = 0, the barriers' initialisation is seen
    __syncthreads();
    if (issuer && s + D < steps) load(s + D);
    gw_tma_step<S, A_BYTES, INF>(d, sA, sB, bars, s, wg);
  }
  if constexpr (INF) {
    wg_wait0();
#pragma unroll
    for (int i = 0; i < 64; i++) wg_pin(d[i]);
  }
}

// GELU of a row's 16 bf16 pairs (gelu_pair): from the table with its 32 lookups issued together,
// not one pair's two at a time (v21: each pair waited behind a branch for the one before, from L2),
// or computed where tab is null.
__device__ __forceinline__ void gw_gelu16(u32 out[16], const bf16_t *tab) {
  if (tab) {
    u32 lo[16], hi[16];
#pragma unroll
    for (int j = 0; j < 16; j++) {
      lo[j] = __ldg(tab + (out[j] & 0xffffu));
      hi[j] = __ldg(tab + (out[j] >> 16));
    }
#pragma unroll
    for (int j = 0; j < 16; j++) out[j] = lo[j] | (hi[j] << 16);
  } else {
#pragma unroll
    for (int j = 0; j < 16; j++) out[j] = gelu_pair(out[j], nullptr);
  }
}

// The m64n128 accumulator layout: warp w of a warpgroup holds rows 16 w + lane / 4 (d[4 j],
// d[4 j + 1]) and + 8 (d[4 j + 2], d[4 j + 3]) at columns 8 j + 2 (lane % 4), + 1.
// Row half h's 16 pairs (tq = lane % 4) with the tile's bias (sbias, 128 floats of shared memory,
// when hasBias), rounded to bf16 pairs.
__device__ __forceinline__ void gw_pack16(u32 out[16], const float d[64], int h, int tq, const float *sbias, bool hasBias) {
#pragma unroll
  for (int j = 0; j < 16; j++) {
    const int c = j * 8 + 2 * tq;
    float v0 = d[4 * j + 2 * h], v1 = d[4 * j + 2 * h + 1];
    if (hasBias) {
      v0 = v0 + sbias[c];
      v1 = v1 + sbias[c + 1];
    }
    out[j] = pack_bf2(v0, v1);
  }
}
// A warpgroup's 64 rows from r0 as float32 outputs, straight from the accumulators (rows from rEnd
// and columns from Nc skipped; warp, g = lane / 4 and tq = lane % 4 place the thread in the
// layout), with the bias as gw_pack16 and GELU (its input kept at pre) when gelu.
__device__ __forceinline__ void gw_store_f32(const float d[64], void *C, void *pre, i64 r0, i64 rEnd, int n0, int Nc, const float *sbias, bool hasBias, bool gelu,
                                             int warp, int g, int tq) {
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const i64 r = r0 + warp * 16 + g + h * 8;
    if (r >= rEnd) continue;
#pragma unroll
    for (int j = 0; j < 16; j++) {
      const int col = n0 + j * 8 + 2 * tq;
      if (col >= Nc) continue;  // Nc is even: col + 1 < Nc too
      float v0 = d[4 * j + 2 * h], v1 = d[4 * j + 2 * h + 1];
      if (hasBias) {
        v0 = v0 + sbias[j * 8 + 2 * tq];
        v1 = v1 + sbias[j * 8 + 2 * tq + 1];
      }
      store_pair_act(C, pre, r * Nc + col, v0, v1, false, gelu);
    }
  }
}

// The grouped product with WG warpgroups per block: tiles of 64 WG rows x 128 columns. NN: each
// expert's W_e is [Kr, Nc] (C = A W_e, the input gradient of a grouped product; B MN-major), else
// [Nc, Kr] (C = A W_e^T, the forward).
// flags: 1 bf16 C, 2 bias, 4 GELU with its pre-activation stored at `pre`, 8 (with 4 and a bf16 C)
// the pre-activation not stored (a forward without backward).
// TMA: the operands from the tensor maps mA ([rows, Kr]) and mW ([E Nc, Kr]) by gw_tma_loop (its
// mbarriers at bars), A and W unused.
template <int WG, bool NN = false, int S = GW_STAGES, int INF = 0, bool TMA = false>
__device__ __forceinline__ void gw_nt(void *C, const bf16_t *A, const bf16_t *W, const int *off, int E, int Kr, int Nc, const float *bias, void *pre, int flags,
                                      unsigned char *gw_dyn, float *gw_bias, const bf16_t *geluTab = nullptr, const TmaMap *mA = nullptr,
                                      const TmaMap *mW = nullptr, u32 bars = 0) {
  constexpr int BM = 64 * WG;
  const u32 base = (smem_addr(gw_dyn) + 1023) & ~1023u;
  const u32 sA = base, sB = base + S * BM * GW_BK * 2;
  const int tilesN = (Nc + GW_BN - 1) / GW_BN;
  GroupedTile gt;
  if (!grouped_tile(gt, off, E, BM, GW_BN, tilesN, blockIdx.x)) return;
  const int e = gt.e, n0 = gt.n0;
  const i64 r0 = gt.r0, rEnd = gt.rEnd;
  const int wg = threadIdx.x >> 7;  // warpgroup: rows 64 wg ..
  float d[64];
  if constexpr (TMA) {
    gw_tma_loop<WG, S>(d, mA, mW, (int)r0, e * Nc + n0, Kr, sA, sB, bars);
  } else if constexpr (NN) {
    const bf16_t *We = W + (i64)e * Kr * Nc;
    static_assert(WG == 2, "GwMNMajor copies with 256 threads");
    GwKMajor<4, 32> la(A, r0, rEnd, Kr);
    GwMNMajor lb(We, Nc, n0, Nc);
    gw_loop<2, 0, 1>(d, la, lb, A, W, Kr, sA, sB, GwNoHook());
  } else {
    const bf16_t *We = W + (i64)e * Kr * Nc;
    gw_mainloop<WG, S, INF>(d, A, r0, rEnd, We, n0, Nc, A, W, Kr, sA, sB);
  }
  // epilogue: the accumulator layout of m64n128: warp w of the warpgroup holds rows 16 w + lane / 4
  // (d[4 j], d[4 j + 1]) and + 8 (d[4 j + 2], d[4 j + 3]) at columns 8 j + 2 (lane % 4), + 1
  const int warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
  const bool cbf = flags & 1, hasBias = flags & 2, gelu = flags & 4, keepPre = gelu && !(flags & 8);
  // the tile's bias columns through shared memory, read before any store: loaded between the
  // stores (which might alias it, for all the compiler knows) each waited on global memory (ncu:
  // the epilogue's additions were 38% of the kernel's stalls)
  if (hasBias && threadIdx.x < GW_BN) gw_bias[threadIdx.x] = n0 + (int)threadIdx.x < Nc ? bias[(i64)e * Nc + n0 + threadIdx.x] : 0.0f;
  __syncthreads();
  if (cbf) {
    // bf16 outputs through shared memory (the stages are free once every warpgroup's last wgmma is
    // done: the barrier above), then whole 16-byte chunks of rows to global memory: the pairs'
    // 4-byte stores straight from the accumulators cost fc1 of base 0.23 of its 0.61 ms (H200)
    constexpr int PITCH = GW_BN * 2 + 16;  // bytes a staged row: 16 of padding, no bank conflicts
    static_assert(2 * BM * PITCH <= S * (BM + GW_BN) * GW_BK * 2, "the staged outputs fit in the stages");
    unsigned char *stage = gw_dyn + (base - smem_addr(gw_dyn));
    unsigned char *sC = stage, *sP = stage + BM * PITCH;
    // a row's 16 pairs a pass, each phase a loop of its own with the flags tested outside it: the
    // 32 table lookups of a pass are issued together, not one pair's two at a time after a branch
    // (each waited for before the next pair's, from L2: the table does not fit beside the stages)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int row = wg * 64 + warp * 16 + g + h * 8;
      u32 out[16];
      gw_pack16(out, d, h, tq, gw_bias, hasBias);
      if (gelu) {
        if (keepPre) {
#pragma unroll
          for (int j = 0; j < 16; j++) *(u32 *)(sP + row * PITCH + (j * 8 + 2 * tq) * 2) = out[j];
        }
        gw_gelu16(out, geluTab);
      }
#pragma unroll
      for (int j = 0; j < 16; j++) *(u32 *)(sC + row * PITCH + (j * 8 + 2 * tq) * 2) = out[j];
    }
    __syncthreads();
    for (int x = threadIdx.x; x < BM * (GW_BN / 8); x += 128 * WG) {
      const int row = x / (GW_BN / 8), chunk = x % (GW_BN / 8);
      const i64 r = r0 + row;
      const int col = n0 + chunk * 8;
      if (r >= rEnd || col >= Nc) continue;  // Nc is a multiple of 8: whole chunks
      *(uint4 *)((bf16_t *)C + r * Nc + col) = *(const uint4 *)(sC + row * PITCH + chunk * 16);
      if (keepPre) *(uint4 *)((bf16_t *)pre + r * Nc + col) = *(const uint4 *)(sP + row * PITCH + chunk * 16);
    }
    return;
  }
  gw_store_f32(d, C, pre, r0 + wg * 64, rEnd, n0, Nc, gw_bias, hasBias, gelu, warp, g, tq);
}
// geluTab: gelu_table_bf16's table for the GELU epilogue (null: computed; the same bits either way).
extern "C" __global__ void __launch_bounds__(GW_THREADS, 2) grouped_wgmma_nt_bf16(void *C, const bf16_t *A, const bf16_t *W, const int *off, int E, int Kr,
                                                                       int Nc, const float *bias, void *pre, int flags, const bf16_t *geluTab) {
  pdl_entry();
  extern __shared__ __align__(16) unsigned char gw_dyn[];
  __shared__ float gw_bias[GW_BN];
  gw_nt<2>(C, A, W, off, E, Kr, Nc, bias, pre, flags, gw_dyn, gw_bias, geluTab);
}
// The input gradient of the grouped product, C = A W_e per expert (W [E, Kr, Nc], bf16), as
// grouped_gemm.cu's grouped_gemm_nn_bf16 (same arguments; flags & 1: bf16 C, else float32).
extern "C" __global__ void __launch_bounds__(GW_THREADS, 2) grouped_wgmma_nn_bf16(void *C, const bf16_t *A, const bf16_t *W, const int *off, int E, int Kr,
                                                                       int Nc, const float *bias, void *pre, int flags) {
  pdl_entry();
  extern __shared__ __align__(16) unsigned char gw_dyn[];
  __shared__ float gw_bias[GW_BN];
  gw_nt<2, true>(C, A, W, off, E, Kr, Nc, bias, pre, flags, gw_dyn, gw_bias);
}
// The weight gradient of every expert in one launch, as grouped_gemm.cu's grouped_gemm_tn_bf16 (same
// arguments and grid): dW_e [Nm, Kn] += G_e^T X_e (float32) and dB_e [Nm] += the column sums of G_e,
// G_e and X_e being expert e's rows of G [rows, Nm] and X [rows, Kn] (bf16). Block (e, m tile, n
// tile) owns a 128 x 128 tile of dW_e and walks the expert's rows 64 at a time; both operands are
// MN-major in shared memory (GwMNMajor), warpgroup g taking A's 64-column atom g (rows m0 + 64 g ..).
// The first column tile's threads < 128 also sum column m0 + t of G_e from the staged A tile while
// the step's products run.
extern "C" __global__ void __launch_bounds__(GW_THREADS, 2) grouped_wgmma_tn_bf16(float *dW, float *dB, const bf16_t *G, const bf16_t *X, const int *off, int E,
                                                                       int Nm, int Kn) {
  pdl_entry();
  extern __shared__ __align__(16) unsigned char gw_dyn[];
  const u32 base = (smem_addr(gw_dyn) + 1023) & ~1023u;
  const u32 sA = base, sB = base + GW_STAGES * GW_TILE_BYTES;
  const int tilesM = (Nm + GW_BM - 1) / GW_BM, tilesN = (Kn + GW_BN - 1) / GW_BN;
  const int e = blockIdx.x / (tilesM * tilesN), t = blockIdx.x % (tilesM * tilesN);
  if (e >= E) return;
  const int m0 = (t / tilesN) * GW_BM, n0 = (t % tilesN) * GW_BN;
  const int rows = off[e + 1] - off[e];
  if (rows <= 0) return;
  const bf16_t *Ge = G + (i64)off[e] * Nm, *Xe = X + (i64)off[e] * Kn;
  GwMNMajor la(Ge, Nm, m0, Nm);
  GwMNMajor lb(Xe, Kn, n0, Kn);
  // column m = threadIdx.x of the A tile: atom m / 64, chunk (m % 64) / 8, element m % 8; rows past
  // the expert's end and columns past Nm were loaded as zeros
  const bool sums = dB != nullptr && n0 == 0 && threadIdx.x < GW_BM;
  float bsum = 0.0f;
  const int m = threadIdx.x & (GW_BM - 1), mAtom = (m >> 6) * 8192, mChunk = (m & 63) >> 3, mElem = (m & 7) * 2;
  const unsigned char *stages = gw_dyn + (base - smem_addr(gw_dyn));
  auto hook = [&](int stage) {
    if (!sums) return;
    const unsigned char *at = stages + stage * GW_TILE_BYTES + mAtom + mElem;
#pragma unroll 8
    for (int k = 0; k < GW_BK; k++) bsum += bf2f(*(const bf16_t *)(at + k * 128 + ((mChunk ^ (k & 7)) << 4)));
  };
  float d[64];
  gw_loop<2, 1, 1>(d, la, lb, G, X, rows, sA, sB, hook);
  // the accumulators of m64n128 (see gw_nt): warpgroup wg's rows m0 + 64 wg + 16 warp + g (+ 8)
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
  float *We = dW + (i64)e * Nm * Kn;
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const int r = m0 + wg * 64 + warp * 16 + g + h * 8;
    if (r >= Nm) continue;
#pragma unroll
    for (int j = 0; j < 16; j++) {
      const int col = n0 + j * 8 + 2 * tq;
      if (col >= Kn) continue;  // Kn is even
      float2 *w = (float2 *)(We + (i64)r * Kn + col);
      const float2 old = *w;
      *w = make_float2(old.x + d[4 * j + 2 * h], old.y + d[4 * j + 2 * h + 1]);
    }
  }
  if (sums && m0 + m < Nm) dB[(i64)e * Nm + m0 + m] += bsum;
}
// The same with one warpgroup and 64-row tiles (three blocks per SM: 73 KiB of shared memory
// each): for few rows per expert (batch-1 sampling: 8 x ~516 rows made 480 tiles of 128 rows, the
// fifth of each expert nearly empty, 1.8 waves at two blocks per SM).
extern "C" __global__ void __launch_bounds__(128, 3) grouped_wgmma64_nt_bf16(void *C, const bf16_t *A, const bf16_t *W, const int *off, int E, int Kr, int Nc,
                                                                        const float *bias, void *pre, int flags, const bf16_t *geluTab) {
  pdl_entry();
  extern __shared__ __align__(16) unsigned char gw_dyn[];
  __shared__ float gw_bias[GW_BN];
  gw_nt<1>(C, A, W, off, E, Kr, Nc, bias, pre, flags, gw_dyn, gw_bias, geluTab);
}
// The same with four warpgroups, 256-row tiles and 4 stages (193 KiB: one block per SM), for many
// rows per expert (training). A 256-row tile reads a step's W tile once for 256 rows, a quarter
// less L2 traffic a product, but that bought little (H200, v22: 8.14 against 8.21 ms a 16 x 2048
// step, and 9.10 with each step's wgmma waited): the products are bound by each SM's issue and
// waits rather than by L2. (cuBLAS's kernel for the same shapes has 256 x 128 tiles too.)
#define GW256_STAGES 4
#ifndef GW256_INFLIGHT
#define GW256_INFLIGHT 1  // a wgmma group in flight (gw_loop): one block an SM has no other block to fill its waits
#endif
extern "C" __global__ void __launch_bounds__(512, 1) grouped_wgmma256_nt_bf16(void *C, const bf16_t *A, const bf16_t *W, const int *off, int E, int Kr, int Nc,
                                                                         const float *bias, void *pre, int flags, const bf16_t *geluTab) {
  pdl_entry();
  extern __shared__ __align__(16) unsigned char gw_dyn[];
  __shared__ float gw_bias[GW_BN];
  gw_nt<4, false, GW256_STAGES, GW256_INFLIGHT>(C, A, W, off, E, Kr, Nc, bias, pre, flags, gw_dyn, gw_bias, geluTab);
}
// The same with its stages filled by the Tensor Memory Accelerator (gw_tma_loop): A and W as tensor
// maps (the host's cuTensorMapEncodeTiled: A [rows, Kr] in boxes of 64 x 256, W [E Nc, Kr] in boxes
// of 64 x 128, both with the 128-byte swizzle). Requires rows + 255 and E Nc within int, and Kr > 0.
extern "C" __global__ void __launch_bounds__(512, 1) grouped_tma256_nt_bf16(const __grid_constant__ TmaMap mA, const __grid_constant__ TmaMap mW, void *C, const int *off,
                                                                       int E, int Kr, int Nc, const float *bias, void *pre, int flags, const bf16_t *geluTab) {
  pdl_entry();
  extern __shared__ __align__(16) unsigned char gw_dyn[];
  __shared__ float gw_bias[GW_BN];
  __shared__ __align__(8) u64 gw_bars[GW256_STAGES];
  gw_nt<4, false, GW256_STAGES, 1, true>(C, nullptr, nullptr, off, E, Kr, Nc, bias, pre, flags, gw_dyn, gw_bias, geluTab, &mA, &mW, smem_addr(gw_bars));
}

// ---- the persistent TMA grouped forward (grouped_tma256p_nt_bf16) ----
// A warpgroup's named barrier (ids 1-4: 0 is __syncthreads'): its 128 threads only
__device__ __forceinline__ void gw_wg_sync(int wg) { asm volatile("bar.sync %0, 128;\n" ::"r"(wg + 1) : "memory"); }

// The epilogue of warpgroup wg's 64 rows of a 256 x 128 tile (gw_nt's, per warpgroup): bias, GELU
// (gelu_table_bf16's table or computed) with the pre-activation kept unless flags & 8, bf16 outputs
// staged (rows 0-31 at areaLo, 32-63 at areaHi, 256 bytes a row, 16-byte chunk c of row r at chunk
// c ^ (r % 16): no bank conflicts without padding) a pass each for the pre-activation and the
// output, then whole chunks to global memory; float32 outputs stored from the accumulators. wbias:
// the warpgroup's own 128 floats of shared memory. Only the warpgroup's threads synchronise
// (gw_wg_sync).
__device__ __forceinline__ void gw_epilogue_wg(const float d[64], void *C, void *pre, int flags, const float *bias, float *wbias, const bf16_t *geluTab,
                                               const GroupedTile &gt, int Nc, unsigned char *areaLo, unsigned char *areaHi, int wg) {
  const int t = threadIdx.x & 127, warp = t >> 5, lane = t & 31, g = lane >> 2, tq = lane & 3;
  const bool cbf = flags & 1, hasBias = flags & 2, gelu = flags & 4, keepPre = gelu && !(flags & 8);
  const int e = gt.e, n0 = gt.n0;
  const i64 r0 = gt.r0 + wg * 64, rEnd = gt.rEnd;
  auto at = [&](int row, int chunk) { return (row < 32 ? areaLo : areaHi) + (row & 31) * 256 + ((chunk ^ (row & 15)) << 4); };
  wbias[t] = hasBias && n0 + t < Nc ? bias[(i64)e * Nc + n0 + t] : 0.0f;
  gw_wg_sync(wg);
  if (!cbf) {
    gw_store_f32(d, C, pre, r0, rEnd, n0, Nc, wbias, hasBias, gelu, warp, g, tq);
    gw_wg_sync(wg);  // wbias is rewritten by the next tile
    return;
  }
  // the sums with their bias, rounded to bf16 pairs once (32 registers where d took 64)
  u32 pk[2][16];
#pragma unroll
  for (int h = 0; h < 2; h++) gw_pack16(pk[h], d, h, tq, wbias, hasBias);
  // pass 0: the pre-activation (kept GELU inputs), pass 1: the output
  for (int pass = keepPre ? 0 : 1; pass < 2; pass++) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int row = warp * 16 + g + h * 8;
      u32 out[16];
#pragma unroll
      for (int j = 0; j < 16; j++) out[j] = pk[h][j];
#ifdef WHATIF_NO_GELU  // the epilogue without its GELU-table lookups (wrong numbers)
      if (false) {
#else
      if (pass == 1 && gelu) {
#endif
        gw_gelu16(out, geluTab);
      }
#pragma unroll
      for (int j = 0; j < 16; j++) *(u32 *)(at(row, j) + 4 * tq) = out[j];
    }
    gw_wg_sync(wg);
    bf16_t *dst = (bf16_t *)(pass == 0 ? pre : C);
#pragma unroll
    for (int it = 0; it < 8; it++) {
      const int x = t + 128 * it, row = x >> 4, chunk = x & 15;
      const i64 r = r0 + row;
      const int col = n0 + chunk * 8;
#ifdef WHATIF_NO_STORES  // the epilogue without its global stores (wrong numbers): its arithmetic and staging alone
      if (r < 0)
#else
      if (r < rEnd && col < Nc)
#endif
        *(uint4 *)(dst + r * Nc + col) = *(const uint4 *)at(row, chunk);
    }
    gw_wg_sync(wg);  // the staging (and wbias) are rewritten by the next pass or tile
  }
}

// The persistent kernel's tiles in the order of their cost, for up to 32 experts: every expert's
// whole row tiles of BM rows first (expert after expert, as grouped_tile), then the experts' partial
// last row tiles, most 64-row quarters first, so that the smaller tiles fill the last, partial
// round of a block's tiles (batch-1 sampling: ~516 rows an expert, a few rows in its third tile;
// ncu: fc1 32.1 against 33.1 us). Built once a launch by warp 0 (one load of the offsets a lane,
// shuffles and ballots), read by every tile's lookup from shared memory (a walk over the global
// offsets at every tile, 40 dependent loads for a partial tile, cost ~6 us a launch). Warpgroups
// whose rows were all past the expert's end skipping their products made it slower (1-3%): the
// step is not bound by the products alone.
struct GwTileOrder {
  int wholeEnd[32];  // [e]: the whole tiles of experts 0..e
  int start[33];     // [e]: expert e's first row (off[e]), [E]: the rows' end
  int part[32];      // [j]: the expert of the j-th partial tile row
  int whole, parts;
};
__device__ __forceinline__ void gw_order_build(GwTileOrder &T, const int *off, int E, int BM, int tilesN) {
  const int lane = threadIdx.x & 31;
  const int a = lane < E ? off[lane] : 0, b = lane < E ? off[lane + 1] : 0;
  const int n = b - a, q = (n % BM + 63) / 64;  // q: the partial tile's quarters (0: none)
  int incl = n / BM * tilesN;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(FULL_MASK, incl, o);
    if (lane >= o) incl += y;
  }
  int rank = 0;  // among the partial tiles: more quarters first, then expert order
  for (int c = BM / 64; c > 0; c--) {
    const u32 m = __ballot_sync(FULL_MASK, q == c);
    if (c > q) rank += __popc(m);
    if (c == q) rank += __popc(m & ((1u << lane) - 1));
  }
  const u32 has = __ballot_sync(FULL_MASK, q > 0);
  T.wholeEnd[lane] = incl;
  T.start[lane] = a;
  if (lane == E - 1) T.start[E] = b;
  if (q > 0) T.part[rank] = lane;
  if (lane == 31) T.whole = incl, T.parts = __popc(has);
}
// The block's tile `blk` in GwTileOrder's order (false past the last).
__device__ __forceinline__ bool gw_order_tile(GroupedTile &G, const GwTileOrder &T, int E, int BM, int BN, int tilesN, int blk) {
  int e, t;
  if (blk < T.whole) {
    e = 0;
    for (int i = 0; i < E; i++) e += T.wholeEnd[i] <= blk;  // independent loads, no walk
    t = blk - (e > 0 ? T.wholeEnd[e - 1] : 0);
    G.r0 = (i64)T.start[e] + (i64)(t / tilesN) * BM;
  } else {
    const int j = (blk - T.whole) / tilesN;
    if (j >= T.parts) return false;
    e = T.part[j];
    t = (blk - T.whole) % tilesN;
    const int n = T.start[e + 1] - T.start[e];
    G.r0 = (i64)T.start[e] + (n - n % BM);
  }
  G.e = e;
  G.rEnd = T.start[e + 1];
  G.n0 = (t % tilesN) * BN;
  return true;
}

// grouped_tma256_nt_bf16 made persistent: a grid of at most one block an SM, block b taking the
// tiles b, b + gridDim.x, ... (GwTileOrder's order: whole row tiles first, the partial ones last;
// `tiles` need not be exact: an index past the last tile ends the block). The steps of its tiles
// are one sequence g = 0, 1, ... (every tile has the same steps), so thread 0's loads run D = S - 2
// steps ahead across a tile's end: the next tile's first stages land during this one's epilogue.
// Each warpgroup stages its rows in its own quarters (the 64 rows of A its own wgmma read) of the A
// parts of the tile's last two stages: its own products are done (wait_group 0) while the other
// warpgroups may still be reading theirs, and those stages are refilled only after the next step's
// barrier (a desk review's simulation found the first version, which staged two warpgroups' rows in
// one half of an A part, racing the other warpgroups' last products). A proxy fence orders the
// generic accesses before the TMA writes those stages again.
extern "C" __global__ void __launch_bounds__(512, 1) grouped_tma256p_nt_bf16(const __grid_constant__ TmaMap mA, const __grid_constant__ TmaMap mW, void *C, const int *off,
                                                                        int E, int Kr, int Nc, const float *bias, void *pre, int flags, const bf16_t *geluTab) {
  constexpr int S = GW256_STAGES, BM = 256, A_BYTES = BM * GW_BK * 2, D = S - 2;
  static_assert(S >= 4 && 32 * 256 == 64 * 128, "a warpgroup's 32 staged rows fill its quarter of an A part");
  pdl_entry();
  extern __shared__ __align__(16) unsigned char gw_dyn[];
  __shared__ float gw_wbias[4][GW_BN];
  __shared__ __align__(8) u64 gw_bars[S];
  __shared__ GwTileOrder order;
  const u32 base = (smem_addr(gw_dyn) + 1023) & ~1023u;
  const u32 sA = base, sB = base + S * A_BYTES, bars = smem_addr(gw_bars);
  unsigned char *stages = gw_dyn + (base - smem_addr(gw_dyn));
  const int tilesN = (Nc + GW_BN - 1) / GW_BN;
  const int steps = (Kr + GW_BK - 1) / GW_BK;
  const int wg = threadIdx.x >> 7;
  const bool issuer = threadIdx.x == 0;
  // more than 32 experts: grouped_tile's order, found by its walk
  const bool ordered = E <= 32;
  if (ordered && threadIdx.x < 32) gw_order_build(order, off, E, BM, tilesN);
  __syncthreads();
  auto tile = [&](GroupedTile &G, int blk) { return ordered ? gw_order_tile(G, order, E, BM, GW_BN, tilesN, blk) : grouped_tile(G, off, E, BM, GW_BN, tilesN, blk); };
  // thread 0's loads, one step a call: step lg of the sequence, step lk of the block's tile lti (lt,
  // found once a tile: a lookup at every step, then grouped_tile's walk of ~8 dependent loads, held
  // warpgroup 0's products back, and through the barrier everyone's)
  int lg = 0, lk = 0, lti = 0;
  bool lvalid = false;
  GroupedTile lt;
  auto load = [&]() {
    if (lk == 0) lvalid = tile(lt, blockIdx.x + lti * gridDim.x);
    if (lvalid) {  // past the block's last tile: nothing waits for it
      const u32 bar = bars + 8 * (lg % S);
      mbar_expect_tx(bar, A_BYTES + GW_TILE_BYTES);
      tma_load_2d(sA + (lg % S) * A_BYTES, &mA, lk * GW_BK, (int)lt.r0, bar);
      tma_load_2d(sB + (lg % S) * GW_TILE_BYTES, &mW, lk * GW_BK, lt.e * Nc + lt.n0, bar);
    }
    lg++;
    if (++lk == steps) lk = 0, lti++;
  };
  if (issuer) {
#pragma unroll
    for (int i = 0; i < S; i++) mbar_init(bars + 8 * i, 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    for (int p = 0; p < D; p++) load();
  }
  int g = 0;
  for (int i = 0;; i++) {
    GroupedTile gt;
    if (!tile(gt, blockIdx.x + i * gridDim.x)) break;
    float d[64];
#pragma unroll
    for (int q = 0; q < 64; q++) d[q] = 0.0f;
    for (int k = 0; k < steps; k++, g++) {
      // every warpgroup's products of step g - 2 are done, and the epilogue before is finished:
      // step g + D's boxes may fill step g - 2's stage
      __syncthreads();
      if (issuer) load();  // step g + D (issued after the products instead: v24b, 8.07 ms against 7.77)
      gw_tma_step<S, A_BYTES>(d, sA, sB, bars, g, wg);
    }
    wg_wait0();
#pragma unroll
    for (int q = 0; q < 64; q++) wg_pin(d[q]);
    // the tile's last two steps' stages (g - 2 and g - 1; with one step, g - 2 is an earlier
    // tile's or no step's): rows 0-31 in this warpgroup's quarter of the first's A part, 32-63 in
    // its quarter of the second's
    const int x = (g - 2 + S) % S, y = (g - 1) % S;
    unsigned char *own = stages + wg * 64 * 128;
#ifdef WHATIF_NO_EPILOGUE
    // what an epilogue overlapped with the next tile's products could save at most (wrong numbers);
    // the sums stay live (a store that never runs), or ptxas drops three of the four products
    if (flags < 0) {
      float sum = 0.0f;
#pragma unroll
      for (int q = 0; q < 64; q++) sum += d[q];
      ((float *)C)[threadIdx.x] = sum;
    }
#else
    gw_epilogue_wg(d, C, pre, flags, bias, gw_wbias[wg], geluTab, gt, Nc, own + x * A_BYTES, own + y * A_BYTES, wg);
#endif
    // the staging's generic-proxy accesses before the async proxy (TMA) writes those stages again
    wg_proxy_fence();
  }
}

// ---- the vocabulary's scores and their row argmax in one pass (nearestRows / argmaxDot, bf16x3) ----
// Block (row tile, column tile) computes S = X3 T3^T for 128 rows x 128 table rows (both operands
// K-major bf16 [., K], K = 3e: [xh | xh | xl] . [th | tl | th], see split_bf16x3_f32), exactly as
// gw_mainloop (grouped_wgmma_nt_bf16's) with one group, and keeps of each row only its best column:
// score = S - half[v] in float64 (half = ||t_v||^2 / 2, nearestRows; 0 for argmaxDot), ties to the
// lower v, as row_argmax_f32. part[row][tile] = (score, v); score_argmax_finish takes the best tile.
// The [rows, V] float32 scores of the cuBLAS path (134 MB per 1,100 rows of a 30k vocabulary,
// written and read back) never exist. Requires K a multiple of 8 and 16-byte aligned X3, T3.
// score_argmax_wgmma's epilogue: of block (row tile at r0, column tile vt at n0) the best column of
// each of its rows, from the products d of its warpgroup's 64 rows.
__device__ __forceinline__ void score_argmax_parts(const float d[64], double *partScore, int *partIndex, i64 r0, int n0, int vt, int tilesV, int M, int V,
                                                   const double *half, int useHalf) {
  // the epilogue's layout (grouped_wgmma_nt_bf16): the lane's rows 16 w + lane / 4 (+ 8 for h = 1),
  // columns 8 j + 2 (lane % 4) (+ 1); a row's 128 columns lie in the lane's quad
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
  __shared__ double gw_half[GW_BN];
  if (threadIdx.x < GW_BN) gw_half[threadIdx.x] = useHalf && n0 + (int)threadIdx.x < V ? half[n0 + threadIdx.x] : 0.0;
  __syncthreads();
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const i64 r = r0 + wg * 64 + warp * 16 + g + h * 8;
    double best = NEG_INF_D;
    int bi = -1;
    // the lane's columns in increasing order: strict > keeps the lower on ties
#pragma unroll
    for (int j = 0; j < 16; j++) {
#pragma unroll
      for (int q = 0; q < 2; q++) {
        const int c = j * 8 + 2 * tq + q;
        if (n0 + c < V) {
          const double sc = (double)d[4 * j + 2 * h + q] - gw_half[c];
          if (bi < 0 || sc > best) {
            best = sc;
            bi = n0 + c;
          }
        }
      }
    }
    // the quad's best: larger score, or equal and lower column (a lane without columns has bi -1)
#pragma unroll
    for (int o = 1; o < 4; o <<= 1) {
      const double ob = __shfl_xor_sync(FULL_MASK, best, o);
      const int oi = __shfl_xor_sync(FULL_MASK, bi, o);
      if (oi >= 0 && (bi < 0 || ob > best || (ob == best && oi < bi))) {
        best = ob;
        bi = oi;
      }
    }
    if (tq == 0 && r < M) {
      partScore[r * tilesV + vt] = best;
      partIndex[r * tilesV + vt] = bi;
    }
  }
}
// A scoring block's stages and tile, the column tile fastest: the blocks at work share their row
// tile, the table stays in L2.
struct ScoreTile {
  u32 sA, sB;
  int tilesV, vt, n0;
  i64 r0;
};
__device__ __forceinline__ ScoreTile score_tile(const unsigned char *dyn, int V) {
  ScoreTile st;
  const u32 base = (smem_addr(dyn) + 1023) & ~1023u;
  st.sA = base;
  st.sB = base + GW_STAGES * GW_TILE_BYTES;
  st.tilesV = (V + GW_BN - 1) / GW_BN;
  const int vt = blockIdx.x % st.tilesV, mt = blockIdx.x / st.tilesV;
  st.vt = vt;
  st.r0 = (i64)mt * GW_BM;
  st.n0 = vt * GW_BN;
  return st;
}
extern "C" __global__ void __launch_bounds__(GW_THREADS, 2) score_argmax_wgmma(double *partScore, int *partIndex, const bf16_t *X, const bf16_t *T, int M, int V,
                                                                        int K, const double *half, int useHalf) {
  pdl_entry();
  extern __shared__ __align__(16) unsigned char gw_dyn[];
  const ScoreTile st = score_tile(gw_dyn, V);
  float d[64];
  gw_mainloop<2>(d, X, st.r0, M, T, st.n0, V, X, T, K, st.sA, st.sB);
  score_argmax_parts(d, partScore, partIndex, st.r0, st.n0, st.vt, st.tilesV, M, V, half, useHalf);
}
// The same with its stages filled by the Tensor Memory Accelerator (gw_tma_loop with each step's
// products waited for, so the boxes go two steps ahead as the cp.async copies do): thread 0 issues
// a step's X box and T box (64 x 128 each) in place of every thread's cp.async and its address
// arithmetic (in the cp.async kernel the ALU is the busiest pipe, 48% of issue slots busy: ncu,
// s16), a large part of a tile whose K = 3e = 384 is 6 steps. X3 and T3 as tensor maps ([M, K] and
// [V, K], boxes of 64 x 128, the 128-byte swizzle; rows past their ends read zeros). The same
// products in the same order: the same parts, bit for bit.
extern "C" __global__ void __launch_bounds__(GW_THREADS, 2) score_argmax_tma(const __grid_constant__ TmaMap mX, const __grid_constant__ TmaMap mT, double *partScore,
                                                                      int *partIndex, int M, int V, int K, const double *half, int useHalf) {
  pdl_entry();
  extern __shared__ __align__(16) unsigned char gw_dyn[];
  __shared__ __align__(8) u64 gw_bars[GW_STAGES];
  const ScoreTile st = score_tile(gw_dyn, V);
  float d[64];
  gw_tma_loop<2, GW_STAGES, 0>(d, &mX, &mT, (int)st.r0, st.n0, K, st.sA, st.sB, smem_addr(gw_bars));
  score_argmax_parts(d, partScore, partIndex, st.r0, st.n0, st.vt, st.tilesV, M, V, half, useHalf);
}

// out[row0 + r] = the best of row r's tiles (score_argmax_wgmma's parts, in column order: strict >
// keeps the lower column on ties). A warp per row.
extern "C" __global__ void score_argmax_finish(int *out, const double *partScore, const int *partIndex, int M, int tiles, int row0) {
  pdl_entry();
  const int lane = threadIdx.x & 31;
  for (int r = (blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < M; r += (gridDim.x * blockDim.x) >> 5) {
    double best = NEG_INF_D;
    int bi = -1;
    for (int t = lane; t < tiles; t += 32) {
      const double s = partScore[(i64)r * tiles + t];
      const int i = partIndex[(i64)r * tiles + t];
      if (i >= 0 && (bi < 0 || s > best)) {
        best = s;
        bi = i;
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const double ob = __shfl_xor_sync(FULL_MASK, best, o);
      const int oi = __shfl_xor_sync(FULL_MASK, bi, o);
      if (oi >= 0 && (bi < 0 || ob > best || (ob == best && oi < bi))) {
        best = ob;
        bi = oi;
      }
    }
    if (lane == 0) out[row0 + r] = bi;
  }
}

// ---- the tied head's cross-entropy without its logits in memory (tiedCrossEntropy) ---------------
// Block (row tile, vocabulary tile), the vocabulary fastest, as score_argmax_wgmma: S = X T^T for 128
// rows of X [M, K] and 128 rows of the table T [V, K] (bf16, K-major; gw_mainloop), the float32
// logits that crossEntropy would read. xe_tied_stats keeps per (row, tile) the tile's max m and the
// float64 sum of the float32 exp2f((s - m) log2 e) (cross_entropy_rows' terms, from the tile's max
// instead of the row's), and the target's logit from the tile that holds it; xe_tied_finish merges
// the tiles: lse = M + ln sum_t s_t e^(m_t - M); loss = lse - x_target. xe_tied_grad computes the
// tile again and writes crossEntropy's gradient w e^(s - lse), minus w at the target, in bf16. The
// [M, V] float32 logits (134 MB per 1,100 rows of a 30k vocabulary), written by a cuBLAS kernel at
// ~180 TFLOP/s and read back, never exist.
#define XE_LOG2E 1.4426950408889634

// Where a block's tile is (its row tile r0, first column n0, vocabulary tile vt of tilesV) and this
// thread's place in the epilogue layout of grouped_wgmma_nt_bf16: rows r0 + 64 wg + 16 warp + g
// (+ 8), columns n0 + 8 j + 2 tq (+ 1).
struct XeTile {
  i64 r0;
  int n0, vt, tilesV, wg, warp, g, tq;
  // this thread's row of half h (0: rows g, 1: g + 8)
  __device__ __forceinline__ i64 row(int h) const { return r0 + wg * 64 + warp * 16 + g + h * 8; }
};
// The block's S tile into d.
__device__ __forceinline__ XeTile xe_tile(float d[64], const bf16_t *X, const bf16_t *T, int M, int V, int K, unsigned char *dyn) {
  const u32 base = (smem_addr(dyn) + 1023) & ~1023u;
  const u32 sA = base, sB = base + GW_STAGES * GW_TILE_BYTES;
  XeTile p;
  p.tilesV = (V + GW_BN - 1) / GW_BN;
  p.vt = blockIdx.x % p.tilesV;
  p.r0 = (i64)(blockIdx.x / p.tilesV) * GW_BM;
  p.n0 = p.vt * GW_BN;
  p.wg = threadIdx.x >> 7;
  p.warp = (threadIdx.x >> 5) & 3;
  p.g = (threadIdx.x & 31) >> 2;
  p.tq = threadIdx.x & 3;
  gw_mainloop<2>(d, X, p.r0, M, T, p.n0, V, X, T, K, sA, sB);
  return p;
}

extern "C" __global__ void __launch_bounds__(GW_THREADS, 2) xe_tied_stats(float *partM, double *partS, float *tgt, const bf16_t *X, const bf16_t *T,
                                                                   const int *targets, int M, int V, int K) {
  pdl_entry();
  extern __shared__ __align__(16) unsigned char gw_dyn[];
  float d[64];
  const XeTile p = xe_tile(d, X, T, M, V, K, gw_dyn);
  const int n0 = p.n0, tq = p.tq;
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const i64 r = p.row(h);
    // the row's 128 columns lie in the lane's quad: column n0 (tq 0) is always below V
    float m = NEG_INF_F;
#pragma unroll
    for (int j = 0; j < 16; j++) {
#pragma unroll
      for (int q = 0; q < 2; q++)
        if (n0 + j * 8 + 2 * tq + q < V) m = fmaxf(m, d[4 * j + 2 * h + q]);
    }
    m = fmaxf(m, __shfl_xor_sync(FULL_MASK, m, 1));
    m = fmaxf(m, __shfl_xor_sync(FULL_MASK, m, 2));
    double s = 0.0;
    const int t = r < M ? targets[r] : -1;
#pragma unroll
    for (int j = 0; j < 16; j++) {
#pragma unroll
      for (int q = 0; q < 2; q++) {
        const int c = n0 + j * 8 + 2 * tq + q;
        if (c < V) s += (double)exp2f((float)(((double)d[4 * j + 2 * h + q] - (double)m) * XE_LOG2E));
        if (c == t) tgt[r] = d[4 * j + 2 * h + q];  // one lane of one block
      }
    }
    s += __shfl_xor_sync(FULL_MASK, s, 1);
    s += __shfl_xor_sync(FULL_MASK, s, 2);
    if (tq == 0 && r < M) {
      partM[r * p.tilesV + p.vt] = m;
      partS[r * p.tilesV + p.vt] = s;
    }
  }
}

// A warp per row: lse[r] (float64) and loss[r] = (float)(lse - x_target).
extern "C" __global__ void xe_tied_finish(float *loss, double *lse, const float *partM, const double *partS, const float *tgt, int M, int tiles) {
  pdl_entry();
  const int lane = threadIdx.x & 31;
  for (int r = (blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < M; r += (gridDim.x * blockDim.x) >> 5) {
    float mx = NEG_INF_F;
    for (int t = lane; t < tiles; t += 32) mx = fmaxf(mx, partM[(i64)r * tiles + t]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, o));
    double L = 0.0;
    for (int t = lane; t < tiles; t += 32) L += partS[(i64)r * tiles + t] * exp((double)partM[(i64)r * tiles + t] - (double)mx);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) L += __shfl_xor_sync(FULL_MASK, L, o);
    if (lane == 0) {
      const double l = (double)mx + log(L);
      lse[r] = l;
      loss[r] = (float)(l - (double)tgt[r]);
    }
  }
}

// dlogits [M, V] bf16 = w (e^(s - lse) - [c = target]), as cross_entropy_rows writes it: w times the
// float32 exp2f rounded once to float32, then w subtracted at the target in float64.
extern "C" __global__ void __launch_bounds__(GW_THREADS, 2) xe_tied_grad(bf16_t *dlogits, const double *lse, const float *weights, int hasW, const bf16_t *X,
                                                                  const bf16_t *T, const int *targets, int M, int V, int K) {
  pdl_entry();
  extern __shared__ __align__(16) unsigned char gw_dyn[];
  float d[64];
  const XeTile p = xe_tile(d, X, T, M, V, K, gw_dyn);
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const i64 r = p.row(h);
    if (r >= M) continue;
    const double l = lse[r];
    const float w = hasW ? weights[r] : 1.0f;
    const int t = targets[r];
    bf16_t *row = dlogits + r * V;
#pragma unroll
    for (int j = 0; j < 16; j++) {
      const int c = p.n0 + j * 8 + 2 * p.tq;
      float gv[2];
#pragma unroll
      for (int q = 0; q < 2; q++) {
        gv[q] = w * exp2f((float)(((double)d[4 * j + 2 * h + q] - l) * XE_LOG2E));
        if (c + q == t) gv[q] = (float)((double)gv[q] - (double)w);
      }
      // a 4-byte pair where the row's pairs are aligned (V even), else element by element
      if ((V & 1) == 0 && c + 1 < V) *(u32 *)(row + c) = pack_bf2(gv[0], gv[1]);
      else {
        if (c < V) row[c] = f2bf(gv[0]);
        if (c + 1 < V) row[c + 1] = f2bf(gv[1]);
      }
    }
  }
}
