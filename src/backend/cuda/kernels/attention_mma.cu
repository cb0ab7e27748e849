// Tensor-core sliding-window + global-token attention (SPEC section 2) for bfloat16 activations and
// head sizes up to 64: the FlashAttention-2 algorithm of attention_tiled.cu (same tiles, same
// ranges, the log-sum-exp saved, probabilities recomputed in the backward, dQ and dK/dV by two
// kernels that each own their output rows: no atomics), with every product on the tensor cores
// (mma.sync m16n8k16, bf16 operands, float32 accumulation). The probabilities and dS are rounded to
// bf16 between the two products of each step, as FlashAttention does; row statistics stay float32.
// attention_tiled.cu (float32 CUDA cores) is the slow twin these are tested against. On sm_90 the
// file is built for sm_90a and also holds the same three kernels on Hopper's warpgroup instructions
// (attn_fwd_wgmma, attn_bwd_dq_wgmma, attn_bwd_dkdv_wgmma, at the end), sharing the ranges, masks,
// online softmax, split runs and stores.
//
// A block is 4 warps; it owns a tile of 64 rows (queries for the forward and dQ, keys for dK/dV),
// 16 per warp, and walks the tiles of the other side that its rows can see (at_ranges). Tiles sit
// in shared memory as bf16 rows padded to AM_LD elements, which makes the fragment loads of the
// mma free of bank conflicts. Fragment layout of m16n8k16 (PTX ISA): with g = lane / 4 and
// t = lane % 4, A (16 x 16, row-major) holds rows g and g + 8, columns 2t, 2t + 1 and 2t + 8,
// 2t + 9; B (16 x 8, column-major) holds rows 2t, 2t + 1 and 2t + 8, 2t + 9 of column g; the
// accumulator holds rows g and g + 8, columns 2t and 2t + 1.

#define AM_T 64
#define AM_DH 64
#define AM_LD (AM_DH + 8)
#define AM_TS (AM_T * AM_LD)  // elements of one tile in shared memory
#define AM_LOG2E 1.4426950408889634f
#define AM_LN2 0.6931471805599453f
#define AM_THREADS 128  // every kernel here runs 4 warps per block: the load loops unroll on it

// two consecutive bf16 (a 4-byte aligned pair)
__device__ __forceinline__ u32 am_ld2(const bf16_t *p) { return *(const u32 *)p; }

// Rows [t0, t0 + AM_T) of one head's slice (column `col` of rows of `stride` elements) into a shared
// tile; rows at or past `end` and columns at or past dh read as zero. 16-byte loads when the slice
// is 16-byte aligned (dh a multiple of 8 and an aligned base), else element by element.
__device__ __forceinline__ void am_load(bf16_t *dst, const bf16_t *src, int t0, int end, i64 stride, int col, int dh) {
  if ((dh & 7) == 0 && (((u64)src) & 15) == 0) {
#pragma unroll
    for (int idx = threadIdx.x; idx < AM_T * (AM_DH / 8); idx += AM_THREADS) {
      const int row = idx / (AM_DH / 8), x = (idx % (AM_DH / 8)) * 8;
      const int g = t0 + row;
      uint4 v = make_uint4(0u, 0u, 0u, 0u);
      if (g < end && x < dh) v = *(const uint4 *)(src + (i64)g * stride + col + x);
      *(uint4 *)(dst + row * AM_LD + x) = v;
    }
  } else {
    for (int idx = threadIdx.x; idx < AM_T * AM_DH; idx += AM_THREADS) {
      const int row = idx / AM_DH, x = idx % AM_DH;
      const int g = t0 + row;
      dst[row * AM_LD + x] = (g < end && x < dh) ? src[(i64)g * stride + col + x] : (bf16_t)0;
    }
  }
}

// am_load through cp.async (16 bytes per copy, zero-filled past `end` and dh): the copies land while
// the block computes on the other buffer; am_wait, then a barrier, makes them visible. Unaligned
// slices fall back to am_load's element loads (visible after the barrier).
__device__ __forceinline__ void am_load_async(bf16_t *dst, const bf16_t *src, int t0, int end, i64 stride, int col, int dh);
// wait until at most `pending` (0 or 1) groups of this thread's copies are in flight
__device__ __forceinline__ void am_wait(bool pending) {
  if (pending) cp_async_wait<1>();
  else cp_async_wait<0>();
}

// The tiles of AM_T rows of the other side that a tile's rows see (at_ranges), numbered 0 .. total - 1
// across its one or two ranges: tile k starts at row `start` and its range ends at `end`.
struct AmTiles {
  int lo0, hi0, lo1, hi1, n0, total;  // scalars: a run-time index into arrays put them in local memory
};
__device__ __forceinline__ AmTiles am_tiles(int a0, int a1, int S, int G, int w, int r) {
  int lo[2], hi[2];
  const int nr = at_ranges(a0, a1, S, G, w, r, lo, hi);
  AmTiles T;
  T.lo0 = lo[0];
  T.hi0 = hi[0];
  T.lo1 = nr > 1 ? lo[1] : 0;
  T.hi1 = nr > 1 ? hi[1] : 0;
  T.n0 = T.hi0 > T.lo0 ? (T.hi0 - T.lo0 + AM_T - 1) / AM_T : 0;
  T.total = T.n0 + (T.hi1 > T.lo1 ? (T.hi1 - T.lo1 + AM_T - 1) / AM_T : 0);
  return T;
}
__device__ __forceinline__ void am_tile(const AmTiles &T, int k, int &start, int &end) {
  const bool first = k < T.n0;
  start = first ? T.lo0 + k * AM_T : T.lo1 + (k - T.n0) * AM_T;
  end = first ? T.hi0 : T.hi1;
}
// Run `part` of `parts` equal runs of a walk's `total` tiles: [begin, end), empty past the last.
__device__ __forceinline__ void am_run(int total, int part, int parts, int &begin, int &end) {
  const int per = (total + parts - 1) / parts;
  begin = min(total, part * per);
  end = min(total, (part + 1) * per);
}

// A fragments (AM_DH / 16 of them) of the warp's 16 rows of a tile in shared memory.
__device__ __forceinline__ void am_afrags(u32 f[AM_DH / 16][4], const bf16_t *tile, int warp, int g, int t) {
#pragma unroll
  for (int kk = 0; kk < AM_DH / 16; kk++) {
    const bf16_t *p = tile + (warp * 16 + g) * AM_LD + kk * 16 + 2 * t;
    f[kk][0] = am_ld2(p);
    f[kk][1] = am_ld2(p + 8 * AM_LD);
    f[kk][2] = am_ld2(p + 8);
    f[kk][3] = am_ld2(p + 8 * AM_LD + 8);
  }
}

__device__ __forceinline__ void am_load_async(bf16_t *dst, const bf16_t *src, int t0, int end, i64 stride, int col, int dh) {
  if ((dh & 7) == 0 && (((u64)src) & 15) == 0) {
    // thread T copies columns x = 8 (T % 8) .. + 7 of rows T / 8 + 16 j: one shared-space conversion
    // and one 64-bit product per call, constant steps per copy
    constexpr int ROWS = AM_THREADS / (AM_DH / 8);
    const int row = threadIdx.x / (AM_DH / 8), x = (threadIdx.x % (AM_DH / 8)) * 8;
    const u32 to = smem_addr(dst) + (u32)(row * AM_LD + x) * 2;
    const bf16_t *from = src + (i64)(t0 + row) * stride + col + x;
#pragma unroll
    for (int j = 0; j < AM_T / ROWS; j++) {
      const bool ok = t0 + row + ROWS * j < end && x < dh;
      cp_async16(to + (u32)(ROWS * j * AM_LD * 2), ok ? from + ROWS * j * stride : src, ok ? 16u : 0u);
    }
  } else {
    am_load(dst, src, t0, end, stride, col, dh);
  }
}

// B fragments of m16n8k16 straight from row-major tiles: ldsm_x4 / ldsm_x4_t (common.cuh).
// The lane's byte offsets in a tile for am_scores and am_accumulate (taken once per kernel: each
// ldmatrix then addresses its tile's shared-space base plus this plus a constant; converting a
// generic pointer per ldmatrix cost a 64-bit address computation each, ncu on the H200)
__device__ __forceinline__ u32 am_scores_lane(int lane) { return (u32)((lane & 7) * AM_LD + (lane >> 3) * 8) * 2; }
__device__ __forceinline__ u32 am_acc_lane(int lane) { return (u32)((((lane >> 3) & 1) * 8 + (lane & 7)) * AM_LD + (lane >> 4) * 8) * 2; }

// s[nt] = A C^T over the 64 rows of tile C (n-tiles of 8 rows): the warp's 16 rows (fragments a)
// against every row of C, contracted over the head dimension. One ldmatrix gives the B fragments of
// two k-steps: lane L addresses row nt * 8 + L % 8, columns from kk * 16 + (L / 8) * 8 (`c`: the
// tile's shared address plus am_scores_lane).
__device__ __forceinline__ void am_scores(float s[8][4], const u32 a[AM_DH / 16][4], u32 c) {
#pragma unroll
  for (int nt = 0; nt < 8; nt++) {
    s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < AM_DH / 16; kk += 2) {
      u32 b[4];
      ldsm_x4(b, c + (u32)(nt * 8 * AM_LD + kk * 16) * 2);
      mma_bf16(s[nt], a[kk], b[0], b[1]);
      mma_bf16(s[nt], a[kk + 1], b[2], b[3]);
    }
  }
}

// acc[nt] += P R over the 64 rows of tile R: P (the warp's 16 x 64 accumulator-layout values, as
// bf16 A fragments) times R [64, AM_DH] (n-tiles of 8 head dimensions). One transposing ldmatrix
// gives the B fragments of two n-tiles: lane L addresses row kk * 16 + ((L / 8) % 2) * 8 + L % 8,
// columns from (nt + L / 16) * 8 (`rt`: the tile's shared address plus am_acc_lane).
__device__ __forceinline__ void am_accumulate(float acc[AM_DH / 8][4], const float p[8][4], u32 rt) {
#pragma unroll
  for (int kk = 0; kk < 4; kk++) {
    const u32 a[4] = {pack_bf2(p[2 * kk][0], p[2 * kk][1]), pack_bf2(p[2 * kk][2], p[2 * kk][3]), pack_bf2(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                      pack_bf2(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
    for (int nt = 0; nt < AM_DH / 8; nt += 2) {
      u32 b[4];
      ldsm_x4_t(b, rt + (u32)(kk * 16 * AM_LD + nt * 8) * 2);
      mma_bf16(acc[nt], a, b[0], b[1]);
      mma_bf16(acc[nt + 1], a, b[2], b[3]);
    }
  }
}

// Is every pair of a tile's rows [a0, a0 + 64) (all below S) and the other side's rows [b0, b0 + 64)
// (all below bend) allowed? Then the tile needs no mask: full attention, either side wholly global,
// or a dilation-1 window that covers the farthest pair. The pattern is symmetric in its two sides.
__device__ __forceinline__ bool am_unmasked(int a0, int b0, int S, int bend, int G, int w, int r) {
  if (a0 + AM_T > S || b0 + AM_T > bend) return false;
  if (w < 0 || a0 + AM_T <= G || b0 + AM_T <= G) return true;
  return a0 >= G && b0 >= G && r == 1 && max(b0 - a0, a0 - b0) + AM_T - 1 <= w;
}

// The columns row i (valid below S) may pair with, of those below `end`: lo <= c <= hi or c < ge.
// Dilation 1 (or full attention) only; the pattern is symmetric, so rows may be queries or keys.
struct AmBounds {
  int lo, hi, ge;
};
__device__ __forceinline__ AmBounds am_bounds(int i, int S, int end, int G, int w) {
  AmBounds b;
  if (i >= S) {
    b.lo = 1;
    b.hi = 0;
    b.ge = 0;
  } else if (w < 0 || i < G) {
    b.lo = 0;
    b.hi = end - 1;
    b.ge = 0;
  } else {
    b.lo = i - w;
    b.hi = min(end - 1, i + w);
    b.ge = min(G, end);
  }
  return b;
}

// Sets this thread's scores of forbidden pairs to -infinity (exp2 of them is then 0): s is the
// accumulator-layout 16 x 64 block of rows ra (elements 0, 1) and rb (2, 3) of one side, valid below
// S, against columns c0 + nt * 8 + (e & 1) of the other, valid below end. Without dilation a
// column test is three comparisons against the row's bounds; with it, at_allowed per pair.
__device__ __forceinline__ void am_mask(float s[8][4], int ra, int rb, int c0, int S, int end, int G, int w, int r) {
#ifdef WHATIF_NO_MASK
  return;  // a benchmark's what-if (MOE_DIFFUSEQ_DEFINES): the time without masks, wrong numbers
#endif
  if (w < 0 || r == 1) {
    const AmBounds A = am_bounds(ra, S, end, G, w), B = am_bounds(rb, S, end, G, w);
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int c = c0 + nt * 8 + (e & 1);
        const AmBounds &X = e < 2 ? A : B;
        const bool ok = ((c >= X.lo) & (c <= X.hi)) | (c < X.ge);
        s[nt][e] = ok ? s[nt][e] : NEG_INF_F;
      }
    }
  } else {
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int c = c0 + nt * 8 + (e & 1), i = e < 2 ? ra : rb;
        const bool ok = (i < S) & (c < end) && at_allowed(i, c, G, w, r);
        s[nt][e] = ok ? s[nt][e] : NEG_INF_F;
      }
    }
  }
}

// Stores the warp's 16 x AM_DH accumulator rows (row0 and row0 + 8 of this thread) times `mul`
// (per row) into a bf16 matrix at column `col` of rows of `stride` elements.
__device__ __forceinline__ void am_store(bf16_t *dst, const float acc[AM_DH / 8][4], i64 row0, i64 row1, bool ok0, bool ok1, float mul0, float mul1,
                                         i64 stride, int col, int dh, int t) {
#pragma unroll
  for (int nt = 0; nt < AM_DH / 8; nt++) {
    const int x = nt * 8 + 2 * t;
    if (ok0) {
      if (x < dh) dst[row0 * stride + col + x] = f2bf(acc[nt][0] * mul0);
      if (x + 1 < dh) dst[row0 * stride + col + x + 1] = f2bf(acc[nt][1] * mul0);
    }
    if (ok1) {
      if (x < dh) dst[row1 * stride + col + x] = f2bf(acc[nt][2] * mul1);
      if (x + 1 < dh) dst[row1 * stride + col + x + 1] = f2bf(acc[nt][3] * mul1);
    }
  }
}

// Where a thread is: its warp, its lane's place in the fragment layout (g = lane / 4, t = lane % 4),
// its block's tile of 64 rows (first r0, last r1) and (batch, head), and the qkv row stride.
struct AmPlace {
  int warp, lane, g, t, r0, r1, bh, b, h, d;
  i64 stride;
};
__device__ __forceinline__ AmPlace am_place(int S, int H, int dh, int blk) {
  AmPlace p;
  p.warp = threadIdx.x >> 5;
  p.lane = threadIdx.x & 31;
  p.g = p.lane >> 2;
  p.t = p.lane & 3;
  const int tiles = (S + AM_T - 1) / AM_T;
  const int tile = blk % tiles;
  p.bh = blk / tiles;
  p.b = p.bh / H;
  p.h = p.bh % H;
  p.d = H * dh;
  p.stride = 3 * (i64)p.d;
  p.r0 = tile * AM_T;
  p.r1 = min(S, p.r0 + AM_T) - 1;
  return p;
}

// One key tile's step of the online softmax: s (this thread's scores of rows i0, i1 against the
// tile's 64 columns, masked) becomes the tile's unnormalised probabilities exp2(s sl2 - m); m, l and
// the accumulators o are rescaled to the new running maxima. Shared by the mma and wgmma forwards.
__device__ __forceinline__ void am_online_softmax(float s[8][4], float o[AM_DH / 8][4], float &m0, float &m1, float &l0, float &l1, float sl2) {
#ifdef WHATIF_NO_SOFTMAX
  l0 = l1 = 1.0f;
  return;  // a benchmark's what-if (MOE_DIFFUSEQ_DEFINES): the time without the softmax, wrong numbers
#endif
  float t0 = NEG_INF_F, t1 = NEG_INF_F;
#pragma unroll
  for (int nt = 0; nt < 8; nt++) {
    t0 = fmaxf(t0, fmaxf(s[nt][0], s[nt][1]));
    t1 = fmaxf(t1, fmaxf(s[nt][2], s[nt][3]));
  }
  // the 4 threads of a quad share rows g and g + 8
  t0 = fmaxf(t0, __shfl_xor_sync(FULL_MASK, t0, 1));
  t0 = fmaxf(t0, __shfl_xor_sync(FULL_MASK, t0, 2));
  t1 = fmaxf(t1, __shfl_xor_sync(FULL_MASK, t1, 1));
  t1 = fmaxf(t1, __shfl_xor_sync(FULL_MASK, t1, 2));
  // running maxima in log2 units (the scale is positive: the max of the scaled scores); a row
  // that has seen nothing yet keeps m = -inf and subtracts 0 instead (its scores are all -inf,
  // so its probabilities and its correction factor are 0, no inf - inf)
  const float n0 = fmaxf(m0, t0 * sl2), n1 = fmaxf(m1, t1 * sl2);
  const float z0 = n0 == NEG_INF_F ? 0.0f : n0, z1 = n1 == NEG_INF_F ? 0.0f : n1;
  const float a0 = exp2f(m0 - z0), a1 = exp2f(m1 - z1);
  m0 = n0;
  m1 = n1;
  float ps0 = 0.0f, ps1 = 0.0f;
#pragma unroll
  for (int nt = 0; nt < 8; nt++) {
    s[nt][0] = exp2f(fmaf(s[nt][0], sl2, -z0));
    s[nt][1] = exp2f(fmaf(s[nt][1], sl2, -z0));
    s[nt][2] = exp2f(fmaf(s[nt][2], sl2, -z1));
    s[nt][3] = exp2f(fmaf(s[nt][3], sl2, -z1));
    ps0 += s[nt][0] + s[nt][1];
    ps1 += s[nt][2] + s[nt][3];
  }
  l0 = l0 * a0 + ps0;
  l1 = l1 * a1 + ps1;
#pragma unroll
  for (int nt = 0; nt < AM_DH / 8; nt++) {
    o[nt][0] *= a0;
    o[nt][1] *= a0;
    o[nt][2] *= a1;
    o[nt][3] *= a1;
  }
}

// ---- the products' engines: mma.sync (below) and wgmma (sm_90a, after it) ----------------------
// Every kernel here walks the tiles its block's rows see with the same loop: the block's own tile or
// pair of tiles (Q; Q and dout; K and V) is loaded once, the other side's pair of tiles (K and V; Q
// and dout) arrives a tile ahead in two buffers, and each step takes the scores of the own tiles
// against the buffer's (X, then Y) and accumulates probabilities or dS times one of them. An engine
// is how: its members own / fetch / ready / scores / scores2 / accX / accY / acc2 / finish.
//
// mma.sync: tiles in padded rows (AM_LD), the own tiles' A fragments held in registers (the own
// tiles' shared memory is then reused by the buffers), B fragments by ldmatrix.
struct AmMma {
  bf16_t *sm;   // two buffers of two tiles; the own tiles first sit in the first
  u32 s0, lsc, lac;  // shared address of sm, this lane's offsets for am_scores / am_accumulate
  int warp, g, t;
  u32 fa[AM_DH / 16][4], fb[AM_DH / 16][4];  // the own tiles' fragments (fb: a second own tile)
  __device__ __forceinline__ AmMma(bf16_t *sm_) : sm(sm_) {
    const int lane = threadIdx.x & 31;
    warp = threadIdx.x >> 5;
    g = lane >> 2;
    t = lane & 3;
    s0 = smem_addr(sm);
    lsc = am_scores_lane(lane);
    lac = am_acc_lane(lane);
  }
  // rows [r0, r0 + 64) of slice a (and with NB 2 of slice b; each: column, row stride) as the own tiles
  template <int NB>
  __device__ __forceinline__ void own(const bf16_t *a, i64 sa, int ca, const bf16_t *b, i64 sb, int cb, int r0, int S, int dh) {
    am_load(sm, a, r0, S, sa, ca, dh);
    if (NB > 1) am_load(sm + AM_TS, b, r0, S, sb, cb, dh);
    __syncthreads();
    am_afrags(fa, sm, warp, g, t);
    if (NB > 1) am_afrags(fb, sm + AM_TS, warp, g, t);
    __syncthreads();
  }
  // starts the copies of rows [t0, t0 + 64) of slices x and y (rows at or past end zero) into buffer k & 1
  __device__ __forceinline__ void fetch(int k, const bf16_t *x, i64 sx, int cx, const bf16_t *y, i64 sy, int cy, int t0, int end, int dh) {
    bf16_t *buf = sm + (k & 1) * 2 * AM_TS;
    am_load_async(buf, x, t0, end, sx, cx, dh);
    am_load_async(buf + AM_TS, y, t0, end, sy, cy, dh);
    cp_async_commit();
  }
  // step k's buffer in shared memory for every thread (`pending`: the next one's copies in flight)
  __device__ __forceinline__ void ready(bool pending) {
    am_wait(pending);
    __syncthreads();
  }
  __device__ __forceinline__ u32 bufX(int k) const { return s0 + (u32)((k & 1) * 2 * AM_TS * 2); }
  __device__ __forceinline__ void scores(float s[8][4], int k) const { am_scores(s, fa, bufX(k) + lsc); }
  __device__ __forceinline__ void scores2(float s[8][4], float s2[8][4], int k) const {
    am_scores(s, fa, bufX(k) + lsc);
    am_scores(s2, fb, bufX(k) + AM_TS * 2 + lsc);
  }
  __device__ __forceinline__ void accX(float o[AM_DH / 8][4], const float p[8][4], int k) const { am_accumulate(o, p, bufX(k) + lac); }
  __device__ __forceinline__ void accY(float o[AM_DH / 8][4], const float p[8][4], int k) const { am_accumulate(o, p, bufX(k) + AM_TS * 2 + lac); }
  // o += p Y and o2 += p2 X
  __device__ __forceinline__ void acc2(float o[AM_DH / 8][4], const float p[8][4], float o2[AM_DH / 8][4], const float p2[8][4], int k) const {
    accY(o, p, k);
    accX(o2, p2, k);
  }
  __device__ __forceinline__ void finish() const {}
};


// ---- the forward on Hopper's warpgroup instructions (wgmma, sm_90a: attn_fwd_wgmma) ---------------
// The block's 4 warps are one warpgroup. The 64-row query tile Q and each (K, V) tile sit in shared
// memory as 64 rows of 64 bf16 (128 bytes; head dimensions past dh zero-filled) in the 128-byte
// swizzle of gw_desc (common.cuh). S = Q K^T is 4 wgmma m64n64k16 with both operands K-major (K's
// rows are the product's N); O += P V takes P from registers (the scores' accumulator layout is the
// A-fragment layout, as with mma.sync) and V as the MN-major operand (its rows are the product's K,
// the transposed-B form). A thread's state is am_fwd_walk's: s and o in the accumulator layout of
// rows 16 warp + g and + 8, so the masking, the online softmax, the stores and the split runs are the
// mma kernel's. Q stays in shared memory: no fragments held in registers.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define AW_TILE 8192  // bytes of one 64 x 64 bf16 tile in 128-byte rows

// Rows [t0, t0 + 64) of a head's slice (column `col` of rows of `stride` elements) into the swizzled
// tile at shared address dst by cp.async; rows at or past `end` and chunks at or past dh are
// zero-filled. Requires dh a multiple of 8 and a 16-byte aligned slice (the host checks).
__device__ __forceinline__ void aw_load(u32 dst, const bf16_t *src, int t0, int end, i64 stride, int col, int dh) {
  const int row = threadIdx.x >> 3, chunk = threadIdx.x & 7;
  const u32 to = dst + (u32)(row * 128 + ((chunk ^ (row & 7)) << 4));
  const bf16_t *from = src + (i64)(t0 + row) * stride + col + chunk * 8;
  const bool inCols = chunk * 8 < dh;
#pragma unroll
  for (int j = 0; j < 4; j++) {
    const bool ok = inCols && t0 + row + 16 * j < end;
    cp_async16(to + (u32)(j * 16 * 128), ok ? (const void *)(from + 16 * j * stride) : (const void *)src, ok ? 16u : 0u);
  }
}

__device__ __forceinline__ void aw_pin(float d[8][4]) {
#pragma unroll
  for (int j = 0; j < 8; j++) {
#pragma unroll
    for (int e = 0; e < 4; e++) wg_pin(d[j][e]);
  }
}
// d += A B for one k16 step, A and B K-major in shared memory
__device__ __forceinline__ void aw_mma_ss(float d[8][4], u64 a, u64 b) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %34, 0;\n"
      " wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
      : "l"(a), "l"(b), "n"(1));
}
// d += A B for one k16 step, A from registers (four bf16 pairs), B MN-major in shared memory
__device__ __forceinline__ void aw_mma_rs(float d[8][4], const u32 a[4], u64 b) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %37, 0;\n"
      " wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(1));
}

// s = A1 B1^T and t = A2 B2^T (two score-shaped products, both operands K-major) in one wgmma
// group: the backward's scores and dP (or their transposes)
__device__ __forceinline__ void aw_scores2(float s[8][4], u32 sA1, u32 sB1, float t[8][4], u32 sA2, u32 sB2) {
#pragma unroll
  for (int j = 0; j < 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = t[j][0] = t[j][1] = t[j][2] = t[j][3] = 0.0f;
  aw_pin(s);
  aw_pin(t);
  wg_fence();
#pragma unroll
  for (int kk = 0; kk < 4; kk++) aw_mma_ss(s, gw_desc(sA1 + kk * 32), gw_desc(sB1 + kk * 32));
#pragma unroll
  for (int kk = 0; kk < 4; kk++) aw_mma_ss(t, gw_desc(sA2 + kk * 32), gw_desc(sB2 + kk * 32));
  wg_commit();
  wg_wait0();
  aw_pin(s);
  aw_pin(t);
}
// P's bf16 A fragments (the accumulator layout of 64 columns as 4 k16 steps)
__device__ __forceinline__ void aw_afrags(u32 a[4][4], const float p[8][4]) {
#pragma unroll
  for (int kk = 0; kk < 4; kk++) {
    a[kk][0] = pack_bf2(p[2 * kk][0], p[2 * kk][1]);
    a[kk][1] = pack_bf2(p[2 * kk][2], p[2 * kk][3]);
    a[kk][2] = pack_bf2(p[2 * kk + 1][0], p[2 * kk + 1][1]);
    a[kk][3] = pack_bf2(p[2 * kk + 1][2], p[2 * kk + 1][3]);
  }
}

// s = Q K^T over the head dimension (4 k16 steps; the zero-filled columns past dh add nothing)
__device__ __forceinline__ void aw_scores(float s[8][4], u32 sQ, u32 sK) {
#pragma unroll
  for (int j = 0; j < 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
  aw_pin(s);
  wg_fence();
#pragma unroll
  for (int kk = 0; kk < 4; kk++) aw_mma_ss(s, gw_desc(sQ + kk * 32), gw_desc(sK + kk * 32));
  wg_commit();
  wg_wait0();
  aw_pin(s);
}
// o += P V: P (the probabilities in the scores' layout) rounded to bf16 A fragments, 16 keys a step
__device__ __forceinline__ void aw_accumulate(float o[8][4], const float p[8][4], u32 sV) {
  u32 a[4][4];
  aw_afrags(a, p);
  aw_pin(o);
  wg_fence();
#pragma unroll
  for (int kk = 0; kk < 4; kk++) aw_mma_rs(o, a[kk], gw_desc(sV + kk * 16 * 128));
  wg_commit();
  wg_wait0();
  aw_pin(o);
}

// o += P V and o2 += P2 V2 in one wgmma group (the dK / dV accumulations)
__device__ __forceinline__ void aw_accumulate2(float o[8][4], const float p[8][4], u32 sV, float o2[8][4], const float p2[8][4], u32 sV2) {
  u32 a[4][4], a2[4][4];
  aw_afrags(a, p);
  aw_afrags(a2, p2);
  aw_pin(o);
  aw_pin(o2);
  wg_fence();
#pragma unroll
  for (int kk = 0; kk < 4; kk++) aw_mma_rs(o, a[kk], gw_desc(sV + kk * 16 * 128));
#pragma unroll
  for (int kk = 0; kk < 4; kk++) aw_mma_rs(o2, a2[kk], gw_desc(sV2 + kk * 16 * 128));
  wg_commit();
  wg_wait0();
  aw_pin(o);
  aw_pin(o2);
}

// The wgmma engine: tiles in 128-byte swizzled rows, the own tiles at sm (1024-byte aligned), the
// two buffers after them; every operand read from shared memory but P / dS (registers).
struct AwWg {
  u32 own0, bufs;
  __device__ __forceinline__ AwWg(bf16_t *sm, int nOwn) {
    own0 = smem_addr(sm);
    bufs = own0 + (u32)(nOwn * AW_TILE);
  }
  template <int NB>
  __device__ __forceinline__ void own(const bf16_t *a, i64 sa, int ca, const bf16_t *b, i64 sb, int cb, int r0, int S, int dh) {
    aw_load(own0, a, r0, S, sa, ca, dh);
    if (NB > 1) aw_load(own0 + AW_TILE, b, r0, S, sb, cb, dh);
    cp_async_commit();  // the walk's first ready covers it
  }
  __device__ __forceinline__ void fetch(int k, const bf16_t *x, i64 sx, int cx, const bf16_t *y, i64 sy, int cy, int t0, int end, int dh) {
    const u32 buf = bufX(k);
    aw_load(buf, x, t0, end, sx, cx, dh);
    aw_load(buf + AW_TILE, y, t0, end, sy, cy, dh);
    cp_async_commit();
  }
  __device__ __forceinline__ void ready(bool pending) {
    am_wait(pending);
    wg_proxy_fence();
    __syncthreads();  // the copies in shared memory for every thread and for the tensor cores
  }
  __device__ __forceinline__ u32 bufX(int k) const { return bufs + (u32)((k & 1) * 2 * AW_TILE); }
  __device__ __forceinline__ void scores(float s[8][4], int k) const { aw_scores(s, own0, bufX(k)); }
  __device__ __forceinline__ void scores2(float s[8][4], float s2[8][4], int k) const { aw_scores2(s, own0, bufX(k), s2, own0 + AW_TILE, bufX(k) + AW_TILE); }
  __device__ __forceinline__ void accX(float o[AM_DH / 8][4], const float p[8][4], int k) const { aw_accumulate(o, p, bufX(k)); }
  __device__ __forceinline__ void accY(float o[AM_DH / 8][4], const float p[8][4], int k) const { aw_accumulate(o, p, bufX(k) + AW_TILE); }
  __device__ __forceinline__ void acc2(float o[AM_DH / 8][4], const float p[8][4], float o2[AM_DH / 8][4], const float p2[8][4], int k) const {
    aw_accumulate2(o, p, bufX(k) + AW_TILE, o2, p2, bufX(k));
  }
  __device__ __forceinline__ void finish() const { cp_async_wait<0>(); }  // a walk of no tiles never waited for its own
};
__device__ __forceinline__ bf16_t *aw_aligned(unsigned char *dyn) { return (bf16_t *)(dyn + ((1024u - (smem_addr(dyn) & 1023u)) & 1023u)); }
#endif

// ---- the forward ---------------------------------------------------------------------------------
// The walk over key tiles kBegin .. kEnd - 1 of T for the block's query tile (the engine's own
// tile; this thread's rows i0, i1 = i0 + 8): o accumulates unnormalised, m (log2 units) and l (this
// thread's share of the row sum; the quad adds its four) as online softmax.
template <class E>
__device__ __forceinline__ void am_fwd_walk(E &eng, float o[AM_DH / 8][4], float &m0, float &m1, float &l0, float &l1, const AmTiles &T, int kBegin, int kEnd,
                                            const bf16_t *base, i64 stride, int d, int h, int dh, int q0, int i0, int i1, int S, int G, int w, int r, float sl2,
                                            int t) {
  const auto fetch = [&](int k) {
    int k0, end;
    am_tile(T, k, k0, end);
    eng.fetch(k, base, stride, d + h * dh, base, stride, 2 * d + h * dh, k0, end, dh);
  };
  if (kBegin < kEnd) fetch(kBegin);
  for (int k = kBegin; k < kEnd; k++) {
    if (k + 1 < kEnd) fetch(k + 1);
    eng.ready(k + 1 < kEnd);
    int k0, end;
    am_tile(T, k, k0, end);
#ifdef WHATIF_SKIP_GLOBALS
    // a benchmark's what-if (MOE_DIFFUSEQ_DEFINES): the time without the global keys' tile of rows
    // past the globals (the first of two ranges), wrong numbers
    if (k < T.n0 && T.total > T.n0) {
      __syncthreads();
      continue;
    }
#endif
    float s[8][4];
    eng.scores(s, k);
    if (!am_unmasked(q0, k0, S, end, G, w, r)) am_mask(s, i0, i1, k0 + 2 * t, S, end, G, w, r);
    am_online_softmax(s, o, m0, m1, l0, l1, sl2);
    eng.accY(o, s, k);
    __syncthreads();  // done with buffer k & 1 before tile k + 2 is fetched into it
  }
  l0 += __shfl_xor_sync(FULL_MASK, l0, 1);
  l0 += __shfl_xor_sync(FULL_MASK, l0, 2);
  l1 += __shfl_xor_sync(FULL_MASK, l1, 1);
  l1 += __shfl_xor_sync(FULL_MASK, l1, 2);
}

// The forward of query tile q0 (head h of sequence b) over run `part` of `parts` equal runs of the
// key tiles its rows see: loads the tile, zeroes the state and walks the run. This thread's rows
// are i0 and i1 = i0 + 8.
template <class E>
__device__ __forceinline__ void am_fwd_tile(E &eng, float o[AM_DH / 8][4], float &m0, float &m1, float &l0, float &l1, int &i0, int &i1, const bf16_t *qkv,
                                            int q0, int b, int h, int H, int dh, int S, int G, int w, int r, float scale, int part, int parts) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, d = H * dh;
  const i64 stride = 3 * (i64)d;
  const bf16_t *base = qkv + (i64)b * S * stride;
  eng.template own<1>(base, stride, h * dh, base, stride, h * dh, q0, S, dh);
  i0 = q0 + warp * 16 + g;
  i1 = i0 + 8;
#pragma unroll
  for (int nt = 0; nt < AM_DH / 8; nt++) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
  m0 = m1 = NEG_INF_F;
  l0 = l1 = 0.0f;
  const AmTiles T = am_tiles(q0, min(S, q0 + AM_T) - 1, S, G, w, r);
  int kBegin, kEnd;
  am_run(T.total, part, parts, kBegin, kEnd);
  am_fwd_walk(eng, o, m0, m1, l0, l1, T, kBegin, kEnd, base, stride, d, h, dh, q0, i0, i1, S, G, w, r, scale * AM_LOG2E, t);
  eng.finish();
}

// am_fwd_tile by the mma.sync engine (WG false: sm holds 4 padded tiles) or the wgmma one (true:
// sm 1024-byte aligned, 5 swizzled tiles).
template <bool WG>
__device__ __forceinline__ void am_fwd_query_tile(float o[AM_DH / 8][4], float &m0, float &m1, float &l0, float &l1, int &i0, int &i1, bf16_t *sm,
                                                  const bf16_t *qkv, int q0, int b, int h, int H, int dh, int S, int G, int w, int r, float scale, int part,
                                                  int parts) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  if constexpr (WG) {
    AwWg eng(sm, 1);
    am_fwd_tile(eng, o, m0, m1, l0, l1, i0, i1, qkv, q0, b, h, H, dh, S, G, w, r, scale, part, parts);
    return;
  }
#endif
  AmMma eng(sm);
  am_fwd_tile(eng, o, m0, m1, l0, l1, i0, i1, qkv, q0, b, h, H, dh, S, G, w, r, scale, part, parts);
}


// The forward of the R = ceil(G / 64) * 64 rows of the tiles that hold global rows, each tile's key
// tiles cut into `parts` consecutive runs: split block x = (tile * parts + part) + (b h) tiles parts
// walks one run and stores its unnormalised o (float32), m (log2 units) and l per row into part_o
// [BH][R][parts][AM_DH] and part_ml [BH][R][parts][2]; attn_fwd_combine merges the runs.
template <bool WG>
__device__ __forceinline__ void am_fwd_split(float *part_o, float *part_ml, bf16_t *sm, const bf16_t *qkv, int S, int H, int dh, int G, int w, int r, float scale,
                                             int parts, int x) {
  const int t = threadIdx.x & 3;
  const int R = (G + AM_T - 1) / AM_T * AM_T;
  const int per_bh = (R / AM_T) * parts;
  const int bh = x / per_bh, y = x % per_bh, part = y % parts;
  float o[AM_DH / 8][4], m0, m1, l0, l1;
  int i0, i1;
  am_fwd_query_tile<WG>(o, m0, m1, l0, l1, i0, i1, sm, qkv, (y / parts) * AM_T, bh / H, bh % H, H, dh, S, G, w, r, scale, part, parts);
  const i64 row0 = ((i64)bh * R + i0) * parts + part, row1 = ((i64)bh * R + i1) * parts + part;
#pragma unroll
  for (int nt = 0; nt < AM_DH / 8; nt++) {
    const int c = nt * 8 + 2 * t;
    part_o[row0 * AM_DH + c] = o[nt][0];
    part_o[row0 * AM_DH + c + 1] = o[nt][1];
    part_o[row1 * AM_DH + c] = o[nt][2];
    part_o[row1 * AM_DH + c + 1] = o[nt][3];
  }
  if (t == 0) {
    part_ml[row0 * 2] = m0;
    part_ml[row0 * 2 + 1] = l0;
    part_ml[row1 * 2] = m1;
    part_ml[row1 * 2 + 1] = l1;
  }
}
// The mma kernel's split blocks not inlined: inside attn_fwd_mma64 they made it spill 48 bytes
// instead of 8 (ptxas -v). The wgmma kernel inlines them: a call would serialise its wgmma (ptxas).
__device__ __noinline__ void am_fwd_split_mma(float *part_o, float *part_ml, bf16_t *sm, const bf16_t *qkv, int S, int H, int dh, int G, int w, int r,
                                              float scale, int parts, int x) {
  am_fwd_split<false>(part_o, part_ml, sm, qkv, S, H, dh, G, w, r, scale, parts, x);
}

// Forward: out = softmax(q k^T scale) v, lse = log-sum-exp of each row (natural log).
// Grid: `splitBlocks` blocks of runs of the global rows (am_fwd_split: their rows see every key, so
// one block per tile would walk all S / 64 key tiles while the others walk a few, the tail of a
// batch-1 forward; 0 when the kernel is not split), then one block of 128 threads per (query tile,
// b h), tile fastest, which skip the tiles that hold global rows when split. The split blocks come
// first (the longest, scheduled first) and in the same launch as the rest (as a kernel of their
// own they ran after the rest: 14 us of a 40 us forward at batch 1).
// Register bounds: three blocks per SM for the forward kernels (about 170 registers unbounded, two
// blocks), two for dQ; measured on an H200 (v9a), unbounded and bounded ran alike, four blocks per
// SM spilled and ran slower.
template <bool WG>
__device__ __forceinline__ void am_fwd_blocks(bf16_t *sm, bf16_t *out, float *lse, const bf16_t *qkv, int S, int H, int dh, int G, int w, int r, float scale,
                                              float *part_o, float *part_ml, int parts, int splitBlocks) {
  if ((int)blockIdx.x < splitBlocks) {
    if constexpr (WG) am_fwd_split<true>(part_o, part_ml, sm, qkv, S, H, dh, G, w, r, scale, parts, blockIdx.x);
    else am_fwd_split_mma(part_o, part_ml, sm, qkv, S, H, dh, G, w, r, scale, parts, blockIdx.x);
    return;
  }
  const AmPlace P = am_place(S, H, dh, blockIdx.x - splitBlocks);
  const int t = P.t, bh = P.bh, b = P.b, h = P.h, d = P.d, q0 = P.r0;
  if (splitBlocks && q0 < G) return;
  float o[AM_DH / 8][4], m0, m1, l0, l1;
  int i0, i1;
  am_fwd_query_tile<WG>(o, m0, m1, l0, l1, i0, i1, sm, qkv, q0, b, h, H, dh, S, G, w, r, scale, 0, 1);
  am_store(out, o, (i64)b * S + i0, (i64)b * S + i1, i0 < S, i1 < S, 1.0f / l0, 1.0f / l1, d, h * dh, dh, t);
  if (t == 0) {
    if (i0 < S) lse[(i64)bh * S + i0] = m0 * AM_LN2 + logf(l0);
    if (i1 < S) lse[(i64)bh * S + i1] = m1 * AM_LN2 + logf(l1);
  }
}
extern "C" __global__ void __launch_bounds__(128, 3) attn_fwd_mma64(bf16_t *out, float *lse, const bf16_t *qkv, int S, int H, int dh, int G, int w, int r,
                                                                 float scale, float *part_o, float *part_ml, int parts, int splitBlocks) {
  pdl_entry();
  __shared__ __align__(16) bf16_t sm[4 * AM_TS];
  am_fwd_blocks<false>(sm, out, lse, qkv, S, H, dh, G, w, r, scale, part_o, part_ml, parts, splitBlocks);
}

// Merges the split runs of attn_fwd_mma64 (am_fwd_split): per row, M = max m, L = sum l 2^(m - M), out = sum o 2^(m - M) / L
// (runs that saw no allowed key have m = -inf and weigh 0), lse = M ln 2 + ln L. Block (row, b h) of
// AM_DH threads, one per head dimension.
extern "C" __global__ void attn_fwd_combine(bf16_t *out, float *lse, const float *part_o, const float *part_ml, int S, int H, int dh, int G, int parts) {
  pdl_entry();
  const int R = (G + AM_T - 1) / AM_T * AM_T;
  const int i = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, x = threadIdx.x;
  if (i >= S) return;
  const i64 row = (i64)bh * R + i;
  float M = NEG_INF_F;
  for (int p = 0; p < parts; p++) M = fmaxf(M, part_ml[(row * parts + p) * 2]);
  float L = 0.0f, acc = 0.0f;
  for (int p = 0; p < parts; p++) {
    const float m = part_ml[(row * parts + p) * 2];
    const float wgt = m == NEG_INF_F ? 0.0f : exp2f(m - M);
    L += part_ml[(row * parts + p) * 2 + 1] * wgt;
    acc += part_o[(row * parts + p) * AM_DH + x] * wgt;
  }
  if (x < dh) out[((i64)b * S + i) * (H * dh) + h * dh + x] = f2bf(acc / L);
  if (x == 0) lse[(i64)bh * S + i] = M * AM_LN2 + logf(L);
}

// ---- the backward ---------------------------------------------------------------------------------
// A backward launch is `splitBlocks` split blocks, then one block per (tile, b h), tile fastest. As
// in the forward, the tiles that hold global rows (whose rows see every row of the other side: S / 64
// tiles against ~6 for the rest) are walked in `parts` runs by separate blocks, first in the launch;
// with more than one run, each run's float32 sums go to part [BH][R][parts][3][AM_DH] (slot 0 dQ,
// 1 dK, 2 dV; R = the rows of those tiles) and attn_bwd_combine adds them in order; one run stores
// its rows as the other blocks do. In the plain order those tiles were the launch's tail: their
// blocks sit at tile 0 of each (b h), so the last ones start in the last wave.
struct AmBwdBlock {
  AmPlace P;
  int part;  // the run this block walks, or -1: the whole walk of a tile without global rows
  bool skip;  // a tile the split blocks do
};
__device__ __forceinline__ AmBwdBlock am_bwd_block(int S, int H, int dh, int G, int parts, int splitBlocks) {
  AmBwdBlock B;
  const int tiles = (S + AM_T - 1) / AM_T;
  int blk = (int)blockIdx.x - splitBlocks;
  B.part = -1;
  if ((int)blockIdx.x < splitBlocks) {
    const int per_bh = (G + AM_T - 1) / AM_T * parts, y = blockIdx.x % per_bh;
    blk = blockIdx.x / per_bh * tiles + y / parts;
    B.part = y % parts;
  }
  B.P = am_place(S, H, dh, blk);
  B.skip = B.part < 0 && splitBlocks > 0 && B.P.r0 < G;
  return B;
}
// The block's walk of T: all of it, or its run of the split's.
__device__ __forceinline__ void am_bwd_walk(const AmTiles &T, int part, int parts, int &begin, int &end) {
  if (part < 0) {
    begin = 0;
    end = T.total;
  } else {
    am_run(T.total, part, parts, begin, end);
  }
}
// Stores the warp's 16 x AM_DH sums (this thread's rows r0 and r0 + 8, both below R) into one slot
// of a split block's run in `part` (am_bwd_block's layout).
__device__ __forceinline__ void am_store_part(float *part, const float acc[AM_DH / 8][4], int bh, int G, int parts, int run, int slot, int r0, int t) {
  const int R = (G + AM_T - 1) / AM_T * AM_T;
  float *p0 = part + ((((i64)bh * R + r0) * parts + run) * 3 + slot) * AM_DH, *p1 = p0 + (i64)8 * parts * 3 * AM_DH;
#pragma unroll
  for (int nt = 0; nt < AM_DH / 8; nt++) {
    const int c = nt * 8 + 2 * t;
    *(float2 *)(p0 + c) = make_float2(acc[nt][0], acc[nt][1]);
    *(float2 *)(p1 + c) = make_float2(acc[nt][2], acc[nt][3]);
  }
}

// dQ: dq_i = scale sum_j p_ij (dout_i . v_j - D_i) k_j over the keys row i sees (D from
// attn_bwd_dot_f32). Same grid as the forward; the engine's own tiles are Q and dout, its buffers
// K and V.
template <class E>
__device__ __forceinline__ void am_bwd_dq(E &eng, bf16_t *dqkv, const bf16_t *dout, const bf16_t *qkv, const float *lse, const float *D, int S, int H, int dh,
                                          int G, int w, int r, float scale, float *part, int parts, int splitBlocks) {
  const AmBwdBlock Bk = am_bwd_block(S, H, dh, G, parts, splitBlocks);
  if (Bk.skip) return;
  const AmPlace &P = Bk.P;
  const int warp = P.warp, g = P.g, t = P.t, bh = P.bh, b = P.b, h = P.h, d = P.d, q0 = P.r0, q1 = P.r1;
  const i64 stride = P.stride;
  const bf16_t *base = qkv + (i64)b * S * stride;
  eng.template own<2>(base, stride, h * dh, dout + (i64)b * S * d, d, h * dh, q0, S, dh);
  const int i0 = q0 + warp * 16 + g, i1 = i0 + 8;
  const float sl2 = scale * AM_LOG2E;
  const float L0 = i0 < S ? lse[(i64)bh * S + i0] * AM_LOG2E : 0.0f, L1 = i1 < S ? lse[(i64)bh * S + i1] * AM_LOG2E : 0.0f;
  const float D0 = i0 < S ? D[(i64)bh * S + i0] : 0.0f, D1 = i1 < S ? D[(i64)bh * S + i1] : 0.0f;
  float dq[AM_DH / 8][4];
#pragma unroll
  for (int nt = 0; nt < AM_DH / 8; nt++) dq[nt][0] = dq[nt][1] = dq[nt][2] = dq[nt][3] = 0.0f;
  const AmTiles T = am_tiles(q0, q1, S, G, w, r);
  int kBegin, kEnd;
  am_bwd_walk(T, Bk.part, parts, kBegin, kEnd);
  const auto fetch = [&](int k) {
    int k0, end;
    am_tile(T, k, k0, end);
    eng.fetch(k, base, stride, d + h * dh, base, stride, 2 * d + h * dh, k0, end, dh);
  };
  if (kBegin < kEnd) fetch(kBegin);
  for (int k = kBegin; k < kEnd; k++) {
    if (k + 1 < kEnd) fetch(k + 1);
    eng.ready(k + 1 < kEnd);
    int k0, end;
    am_tile(T, k, k0, end);
    float s[8][4], dp[8][4];
    eng.scores2(s, dp, k);
    if (!am_unmasked(q0, k0, S, end, G, w, r)) am_mask(s, i0, i1, k0 + 2 * t, S, end, G, w, r);
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const float p = exp2f(fmaf(s[nt][e], sl2, -(e < 2 ? L0 : L1)));  // 0 where masked
        s[nt][e] = p * (dp[nt][e] - (e < 2 ? D0 : D1)) * scale;            // dS
      }
    }
    eng.accX(dq, s, k);
    __syncthreads();
  }
  eng.finish();
  if (parts > 1 && Bk.part >= 0) am_store_part(part, dq, bh, G, parts, Bk.part, 0, i0, t);
  else am_store(dqkv, dq, (i64)b * S + i0, (i64)b * S + i1, i0 < S, i1 < S, 1.0f, 1.0f, stride, h * dh, dh, t);
}
extern "C" __global__ void __launch_bounds__(128, 2) attn_bwd_dq_mma64(bf16_t *dqkv, const bf16_t *dout, const bf16_t *qkv, const float *lse, const float *D,
                                                                    int S, int H, int dh, int G, int w, int r, float scale, float *part, int parts,
                                                                    int splitBlocks) {
  pdl_entry();
  __shared__ __align__(16) bf16_t sm[4 * AM_TS];
  AmMma eng(sm);
  am_bwd_dq(eng, dqkv, dout, qkv, lse, D, S, H, dh, G, w, r, scale, part, parts, splitBlocks);
}

// dK, dV: dv_j = sum_i p_ij dout_i, dk_j = scale sum_i p_ij (dout_i . v_j - D_i) q_i over the query
// rows that see key j. One block of 128 threads per (key tile, b h); the engine's own tiles are K
// and V, its buffers Q and dout (with their rows' lse and D).
template <class E>
__device__ __forceinline__ void am_bwd_dkdv(E &eng, bf16_t *dqkv, const bf16_t *dout, const bf16_t *qkv, const float *lse, const float *D, int S, int H,
                                            int dh, int G, int w, int r, float scale, float *part, int parts, int splitBlocks) {
  __shared__ float Ls[2][AM_T], Ds[2][AM_T];
  const AmBwdBlock Bk = am_bwd_block(S, H, dh, G, parts, splitBlocks);
  if (Bk.skip) return;
  const AmPlace &P = Bk.P;
  const int warp = P.warp, g = P.g, t = P.t, bh = P.bh, b = P.b, h = P.h, d = P.d, j0 = P.r0, j1 = P.r1;
  const i64 stride = P.stride;
  const bf16_t *base = qkv + (i64)b * S * stride;
  const bf16_t *obase = dout + (i64)b * S * d;
  eng.template own<2>(base, stride, d + h * dh, base, stride, 2 * d + h * dh, j0, S, dh);
  const int jr0 = j0 + warp * 16 + g, jr1 = jr0 + 8;  // this thread's key rows
  const float sl2 = scale * AM_LOG2E;
  float dk[AM_DH / 8][4], dv[AM_DH / 8][4];
#pragma unroll
  for (int nt = 0; nt < AM_DH / 8; nt++) dk[nt][0] = dk[nt][1] = dk[nt][2] = dk[nt][3] = dv[nt][0] = dv[nt][1] = dv[nt][2] = dv[nt][3] = 0.0f;
  const AmTiles T = am_tiles(j0, j1, S, G, w, r);
  int kBegin, kEnd;
  am_bwd_walk(T, Bk.part, parts, kBegin, kEnd);
  const auto fetch = [&](int k) {
    int q0, end;
    am_tile(T, k, q0, end);
    eng.fetch(k, base, stride, h * dh, obase, d, h * dh, q0, end, dh);
    if (threadIdx.x < AM_T) {
      const int i = q0 + threadIdx.x;
      Ls[k & 1][threadIdx.x] = i < end ? lse[(i64)bh * S + i] * AM_LOG2E : 0.0f;
      Ds[k & 1][threadIdx.x] = i < end ? D[(i64)bh * S + i] : 0.0f;
    }
  };
  if (kBegin < kEnd) fetch(kBegin);
  for (int k = kBegin; k < kEnd; k++) {
    if (k + 1 < kEnd) fetch(k + 1);
    eng.ready(k + 1 < kEnd);
    int q0, end;
    am_tile(T, k, q0, end);
    const float *Lk = Ls[k & 1], *Dk = Ds[k & 1];
    float s[8][4], dp[8][4];
    eng.scores2(s, dp, k);  // s^T, dP^T: keys x queries
    // rows are this thread's keys, columns the tile's queries (the pattern is symmetric)
    if (!am_unmasked(j0, q0, S, end, G, w, r)) am_mask(s, jr0, jr1, q0 + 2 * t, S, end, G, w, r);
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int qi = nt * 8 + 2 * t + (e & 1);
        const float p = exp2f(fmaf(s[nt][e], sl2, -Lk[qi]));  // 0 where masked
        s[nt][e] = p;
        dp[nt][e] = p * (dp[nt][e] - Dk[qi]) * scale;  // dS^T
      }
    }
    eng.acc2(dv, s, dk, dp, k);
    __syncthreads();
  }
  eng.finish();
  if (parts > 1 && Bk.part >= 0) {
    am_store_part(part, dk, bh, G, parts, Bk.part, 1, jr0, t);
    am_store_part(part, dv, bh, G, parts, Bk.part, 2, jr0, t);
  } else {
    am_store(dqkv, dk, (i64)b * S + jr0, (i64)b * S + jr1, jr0 < S, jr1 < S, 1.0f, 1.0f, stride, d + h * dh, dh, t);
    am_store(dqkv, dv, (i64)b * S + jr0, (i64)b * S + jr1, jr0 < S, jr1 < S, 1.0f, 1.0f, stride, 2 * d + h * dh, dh, t);
  }
}
extern "C" __global__ void __launch_bounds__(128) attn_bwd_dkdv_mma64(bf16_t *dqkv, const bf16_t *dout, const bf16_t *qkv, const float *lse,
                                                                      const float *D, int S, int H, int dh, int G, int w, int r, float scale, float *part,
                                                                      int parts, int splitBlocks) {
  pdl_entry();
  __shared__ __align__(16) bf16_t sm[4 * AM_TS];
  AmMma eng(sm);
  am_bwd_dkdv(eng, dqkv, dout, qkv, lse, D, S, H, dh, G, w, r, scale, part, parts, splitBlocks);
}

// Adds the split runs of the backward kernels (am_bwd_block) in order: dQ, dK and dV of the rows of
// the tiles that hold global rows. Block (row, b h) of 3 AM_DH threads, one per slot and dimension.
extern "C" __global__ void attn_bwd_combine(bf16_t *dqkv, const float *part, int S, int H, int dh, int G, int parts) {
  pdl_entry();
  const int R = (G + AM_T - 1) / AM_T * AM_T;
  const int i = blockIdx.x, bh = blockIdx.y, slot = threadIdx.x / AM_DH, x = threadIdx.x % AM_DH;
  if (i >= S || x >= dh) return;
  const float *p = part + (((i64)bh * R + i) * parts * 3 + slot) * AM_DH + x;
  float acc = 0.0f;
  for (int q = 0; q < parts; q++) acc += p[(i64)q * 3 * AM_DH];
  const int d = H * dh;
  dqkv[((i64)(bh / H) * S + i) * 3 * d + slot * d + (bh % H) * dh + x] = f2bf(acc);
}

// ---- the wgmma kernels (sm_90a): the same grids, arguments and results ---------------------------
// (up to the tensor cores' order of addition). Dynamic shared memory: AW_SHARED for the forward
// (host: ATTN_WGMMA_SHARED; Q and two (K, V) buffers), AWB_SHARED for the backward
// (ATTN_WGMMA_BWD_SHARED; two own tiles and two buffers of two), each with 1 KiB to align.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define AW_SHARED (5 * AW_TILE + 1024)
#define AWB_SHARED (6 * AW_TILE + 1024)
extern "C" __global__ void __launch_bounds__(128, 4) attn_fwd_wgmma(bf16_t *out, float *lse, const bf16_t *qkv, int S, int H, int dh, int G, int w, int r,
                                                                 float scale, float *part_o, float *part_ml, int parts, int splitBlocks) {
  pdl_entry();
  extern __shared__ __align__(16) unsigned char aw_dyn[];
  am_fwd_blocks<true>(aw_aligned(aw_dyn), out, lse, qkv, S, H, dh, G, w, r, scale, part_o, part_ml, parts, splitBlocks);
}
extern "C" __global__ void __launch_bounds__(128, 3) attn_bwd_dq_wgmma(bf16_t *dqkv, const bf16_t *dout, const bf16_t *qkv, const float *lse, const float *D,
                                                                    int S, int H, int dh, int G, int w, int r, float scale, float *part, int parts,
                                                                    int splitBlocks) {
  pdl_entry();
  extern __shared__ __align__(16) unsigned char aw_dyn[];
  AwWg eng(aw_aligned(aw_dyn), 2);
  am_bwd_dq(eng, dqkv, dout, qkv, lse, D, S, H, dh, G, w, r, scale, part, parts, splitBlocks);
}
// three blocks per SM (190 registers unbounded, two blocks; bounded it spills 36 bytes and the
// backward ran 0.775 ms against 0.846, H200)
extern "C" __global__ void __launch_bounds__(128, 3) attn_bwd_dkdv_wgmma(bf16_t *dqkv, const bf16_t *dout, const bf16_t *qkv, const float *lse,
                                                                      const float *D, int S, int H, int dh, int G, int w, int r, float scale, float *part,
                                                                      int parts, int splitBlocks) {
  pdl_entry();
  extern __shared__ __align__(16) unsigned char aw_dyn[];
  AwWg eng(aw_aligned(aw_dyn), 2);
  am_bwd_dkdv(eng, dqkv, dout, qkv, lse, D, S, H, dh, G, w, r, scale, part, parts, splitBlocks);
}
#endif
