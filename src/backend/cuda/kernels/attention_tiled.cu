// Tiled sliding-window + global-token attention (SPEC section 2), forward and backward, in the
// FlashAttention-2 manner on float32 CUDA cores: a block owns a tile of 64 query rows (forward, dQ)
// or 64 key rows (dK, dV) of one (batch, head), walks only the key (query) tiles its rows can see,
// keeps the tiles in shared memory, and runs the softmax online. Nothing of size S x S or
// S x (2w + 1) ever reaches global memory: the forward saves the log-sum-exp, the backward
// recomputes the probabilities from it. No atomics: dQ and dK/dV are two kernels, each the only
// writer of its rows, so the result is deterministic.
//
// The straightforward one-warp-per-row kernels (attention.cu) are the slow twins these are tested
// against. Layout as there: qkv [B, S, 3d] (q | k | v), out [B, S, d], lse and D [B, H, S].
//
// Thread layout: 256 threads as 16 x 16 (ty = tid / 16, tx = tid % 16). A thread owns 4 rows of its
// block's tile (ty * 4 + r) and, across the other side, the columns tx + 16 c (keys or head
// dimensions): with rows padded to DH + 1 floats in shared memory, those reads are free of bank
// conflicts, and the 16 threads of one row are 16 lanes of one warp (row reductions are shuffles).
// The products use explicit fmaf: the module is compiled with --fmad=false for the reference
// kernels' sake, and these kernels want the fused multiply-add.

#define AT_T 64  // rows of a tile (queries or keys)

// Loads rows [t0, t0 + AT_T) of one slice (column offset `col` in rows of `stride` elements, float32
// or bfloat16 as `bf` says) into a padded float32 shared tile; rows outside [t0, end) and columns
// >= dh read as zero.
template <int DH>
__device__ __forceinline__ void at_load(float *dst, const void *src, int t0, int end, i64 stride, int col, int dh, int bf) {
  constexpr int DP = DH + 1;
  for (int idx = threadIdx.x; idx < AT_T * DH; idx += blockDim.x) {
    const int row = idx / DH, x = idx - row * DH;
    const int g = t0 + row;
    dst[row * DP + x] = (g < end && x < dh) ? ldx(src, (i64)g * stride + col + x, bf) : 0.0f;
  }
}

// Forward: out = softmax(q k^T scale) v over the allowed keys, lse = log-sum-exp of each row.
// Grid: one block per (query tile, b h), tile fastest. Dynamic shared memory: 3 tiles of
// AT_T x (DH + 1) floats and the probabilities AT_T x (AT_T + 1).
template <int DH>
__device__ void at_forward(void *out, float *lse, const void *qkv, int S, int H, int dh, int G, int w, int r, float scale, int bf) {
  constexpr int DP = DH + 1, PP = AT_T + 1, OC = DH / 16;
  extern __shared__ float sm[];
  float *Qs = sm, *Ks = Qs + AT_T * DP, *Vs = Ks + AT_T * DP, *Ps = Vs + AT_T * DP;
  const int tid = threadIdx.x, ty = tid >> 4, tx = tid & 15;
  const int tiles = (S + AT_T - 1) / AT_T;
  const int tile = blockIdx.x % tiles, bh = blockIdx.x / tiles, b = bh / H, h = bh % H;
  const int d = H * dh;
  const i64 stride = 3 * (i64)d;
  const void *base = offx(qkv, (i64)b * S * stride, bf);
  const int q0 = tile * AT_T, q1 = min(S, q0 + AT_T) - 1;
  at_load<DH>(Qs, base, q0, S, stride, h * dh, dh, bf);
  float m[4], l[4], o[4][OC];
  for (int rr = 0; rr < 4; rr++) {
    m[rr] = NEG_INF_F;
    l[rr] = 0.0f;
    for (int c = 0; c < OC; c++) o[rr][c] = 0.0f;
  }
  int lo[2], hi[2];
  const int nr = at_ranges(q0, q1, S, G, w, r, lo, hi);
  for (int g = 0; g < nr; g++) {
    for (int k0 = lo[g]; k0 < hi[g]; k0 += AT_T) {
      __syncthreads();  // the previous tile's readers are done
      at_load<DH>(Ks, base, k0, hi[g], stride, d + h * dh, dh, bf);
      at_load<DH>(Vs, base, k0, hi[g], stride, 2 * d + h * dh, dh, bf);
      __syncthreads();
      float s[4][4];
      for (int rr = 0; rr < 4; rr++)
        for (int c = 0; c < 4; c++) s[rr][c] = 0.0f;
      for (int x = 0; x < DH; x++) {
        float qv[4], kv[4];
        for (int rr = 0; rr < 4; rr++) qv[rr] = Qs[(ty * 4 + rr) * DP + x];
        for (int c = 0; c < 4; c++) kv[c] = Ks[(tx + 16 * c) * DP + x];
        for (int rr = 0; rr < 4; rr++)
          for (int c = 0; c < 4; c++) s[rr][c] = fmaf(qv[rr], kv[c], s[rr][c]);
      }
      for (int rr = 0; rr < 4; rr++) {
        const int i = q0 + ty * 4 + rr;
        float tm = NEG_INF_F;
        for (int c = 0; c < 4; c++) {
          const int j = k0 + tx + 16 * c;
          s[rr][c] = (i < S && j < hi[g] && at_allowed(i, j, G, w, r)) ? s[rr][c] * scale : NEG_INF_F;
          tm = fmaxf(tm, s[rr][c]);
        }
        for (int off = 8; off > 0; off >>= 1) tm = fmaxf(tm, __shfl_xor_sync(FULL_MASK, tm, off));
        const float mn = fmaxf(m[rr], tm);
        // a row that has seen nothing yet keeps m = -inf and contributes zeros (no inf - inf)
        const float alpha = mn == NEG_INF_F ? 1.0f : expf(m[rr] - mn);
        float ps = 0.0f;
        for (int c = 0; c < 4; c++) {
          const float p = mn == NEG_INF_F ? 0.0f : expf(s[rr][c] - mn);
          Ps[(ty * 4 + rr) * PP + tx + 16 * c] = p;
          ps += p;
        }
        for (int off = 8; off > 0; off >>= 1) ps += __shfl_xor_sync(FULL_MASK, ps, off);
        l[rr] = l[rr] * alpha + ps;
        m[rr] = mn;
        for (int c = 0; c < OC; c++) o[rr][c] *= alpha;
      }
      __syncthreads();
      for (int k = 0; k < AT_T; k++) {
        float pv[4], vv[OC];
        for (int rr = 0; rr < 4; rr++) pv[rr] = Ps[(ty * 4 + rr) * PP + k];
        for (int c = 0; c < OC; c++) vv[c] = Vs[k * DP + tx + 16 * c];
        for (int rr = 0; rr < 4; rr++)
          for (int c = 0; c < OC; c++) o[rr][c] = fmaf(pv[rr], vv[c], o[rr][c]);
      }
    }
  }
  for (int rr = 0; rr < 4; rr++) {
    const int i = q0 + ty * 4 + rr;
    if (i >= S) continue;
    const float inv = 1.0f / l[rr];
    const i64 orow = ((i64)b * S + i) * d + h * dh;
    for (int c = 0; c < OC; c++) {
      const int x = tx + 16 * c;
      if (x < dh) stx(out, orow + x, o[rr][c] * inv, bf);
    }
    if (tx == 0) lse[(i64)bh * S + i] = m[rr] + logf(l[rr]);
  }
}

// The two score products of the backward over one pair of tiles: s = R1 C1^T and dp = R2 C2^T for
// this thread's rows ty * 4 + rr of R1 / R2 and columns tx + 16 c of C1 / C2 (dQ: rows are Q and
// dO, columns K and V; dK/dV: rows K and V, columns Q and dO).
template <int DH>
__device__ __forceinline__ void at_products2(float s[4][4], float dp[4][4], const float *R1, const float *C1, const float *R2, const float *C2, int ty, int tx) {
  constexpr int DP = DH + 1;
  for (int rr = 0; rr < 4; rr++)
    for (int c = 0; c < 4; c++) s[rr][c] = dp[rr][c] = 0.0f;
  for (int x = 0; x < DH; x++) {
    float r1[4], r2[4], c1[4], c2[4];
    for (int rr = 0; rr < 4; rr++) {
      r1[rr] = R1[(ty * 4 + rr) * DP + x];
      r2[rr] = R2[(ty * 4 + rr) * DP + x];
    }
    for (int c = 0; c < 4; c++) {
      c1[c] = C1[(tx + 16 * c) * DP + x];
      c2[c] = C2[(tx + 16 * c) * DP + x];
    }
    for (int rr = 0; rr < 4; rr++)
      for (int c = 0; c < 4; c++) {
        s[rr][c] = fmaf(r1[rr], c1[c], s[rr][c]);
        dp[rr][c] = fmaf(r2[rr], c2[c], dp[rr][c]);
      }
  }
}

// D[b, h, i] = dout_i . out_i (the row term of the softmax backward). One warp per row.
extern "C" __global__ void attn_bwd_dot_f32(float *D, const void *dout, const void *out, int B, int S, int H, int dh, int bf) {
  pdl_entry();
  const int lane = threadIdx.x & 31;
  const i64 rows = (i64)B * H * S;
  const int d = H * dh;
  for (i64 row = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; row < rows; row += ((i64)gridDim.x * blockDim.x) >> 5) {
    const int i = (int)(row % S);
    const int bh = (int)(row / S), b = bh / H, h = bh % H;
    const i64 o = ((i64)b * S + i) * d + h * dh;
    float acc = 0.0f;
    for (int x = lane; x < dh; x += 32) acc = fmaf(ldx(dout, o + x, bf), ldx(out, o + x, bf), acc);
    acc = warp_sum_f(acc);
    if (lane == 0) D[row] = acc;
  }
}

// attn_bwd_dot_f32 for bfloat16 dout and out on 16-byte vectors: L = dh / 8 lanes (1, 2, 4 or 8)
// per (position, head), threads in memory order, so a warp reads whole consecutive heads. The
// one-warp-per-row kernel read 2 bytes a lane and ran at a quarter of the H200's bandwidth (90 us a
// layer of base at 16 x 2048 against ~21 us of traffic).
extern "C" __global__ void attn_bwd_dot_bf16x8(float *D, const uint4 *dout, const uint4 *out, int B, int S, int H, int dh) {
  pdl_entry();
  const int L = dh >> 3;  // lanes per (position, head): a power of two up to 8, dividing 32
  const i64 n = (i64)B * S * H * L;
  for (i64 x = (i64)blockIdx.x * blockDim.x + threadIdx.x; x - (threadIdx.x & 31) < n; x += (i64)gridDim.x * blockDim.x) {
    float acc = 0.0f;
    if (x < n) {
      float a[8], c[8];
      unpack8(a, dout[x]);
      unpack8(c, out[x]);
#pragma unroll
      for (int q = 0; q < 8; q++) acc = fmaf(a[q], c[q], acc);
    }
    // the L lanes of a (position, head) are consecutive and aligned to L
    for (int o = L >> 1; o > 0; o >>= 1) acc += __shfl_xor_sync(FULL_MASK, acc, o);
    if (x < n && (x & (L - 1)) == 0) {
      const i64 ph = x / L;  // (b, i, h) in memory order
      const int h = (int)(ph % H);
      const i64 bi = ph / H;
      const int i = (int)(bi % S), b = (int)(bi / S);
      D[((i64)b * H + h) * S + i] = acc;
    }
  }
}

// dQ: dq_i = scale sum_j p_ij (dout_i . v_j - D_i) k_j over the keys row i sees. Same grid as the
// forward. Shared: Q, dO, K, V tiles and dS (AT_T x (AT_T + 1)).
template <int DH>
__device__ void at_backward_dq(void *dqkv, const void *dout, const void *qkv, const float *lse, const float *D, int S, int H, int dh, int G, int w, int r,
                               float scale, int bf) {
  constexpr int DP = DH + 1, PP = AT_T + 1, OC = DH / 16;
  extern __shared__ float sm[];
  float *Qs = sm, *Os = Qs + AT_T * DP, *Ks = Os + AT_T * DP, *Vs = Ks + AT_T * DP, *Ps = Vs + AT_T * DP;
  const int tid = threadIdx.x, ty = tid >> 4, tx = tid & 15;
  const int tiles = (S + AT_T - 1) / AT_T;
  const int tile = blockIdx.x % tiles, bh = blockIdx.x / tiles, b = bh / H, h = bh % H;
  const int d = H * dh;
  const i64 stride = 3 * (i64)d;
  const void *base = offx(qkv, (i64)b * S * stride, bf);
  const int q0 = tile * AT_T, q1 = min(S, q0 + AT_T) - 1;
  at_load<DH>(Qs, base, q0, S, stride, h * dh, dh, bf);
  at_load<DH>(Os, offx(dout, (i64)b * S * d, bf), q0, S, d, h * dh, dh, bf);
  float li[4], Di[4], dq[4][OC];
  for (int rr = 0; rr < 4; rr++) {
    const int i = q0 + ty * 4 + rr;
    li[rr] = i < S ? lse[(i64)bh * S + i] : 0.0f;
    Di[rr] = i < S ? D[(i64)bh * S + i] : 0.0f;
    for (int c = 0; c < OC; c++) dq[rr][c] = 0.0f;
  }
  int lo[2], hi[2];
  const int nr = at_ranges(q0, q1, S, G, w, r, lo, hi);
  for (int g = 0; g < nr; g++) {
    for (int k0 = lo[g]; k0 < hi[g]; k0 += AT_T) {
      __syncthreads();
      at_load<DH>(Ks, base, k0, hi[g], stride, d + h * dh, dh, bf);
      at_load<DH>(Vs, base, k0, hi[g], stride, 2 * d + h * dh, dh, bf);
      __syncthreads();
      float s[4][4], dp[4][4];
      at_products2<DH>(s, dp, Qs, Ks, Os, Vs, ty, tx);
      for (int rr = 0; rr < 4; rr++) {
        const int i = q0 + ty * 4 + rr;
        for (int c = 0; c < 4; c++) {
          const int j = k0 + tx + 16 * c;
          const bool ok = i < S && j < hi[g] && at_allowed(i, j, G, w, r);
          const float p = ok ? expf(s[rr][c] * scale - li[rr]) : 0.0f;
          Ps[(ty * 4 + rr) * PP + tx + 16 * c] = p * (dp[rr][c] - Di[rr]) * scale;
        }
      }
      __syncthreads();
      for (int k = 0; k < AT_T; k++) {
        float sv[4], kv[OC];
        for (int rr = 0; rr < 4; rr++) sv[rr] = Ps[(ty * 4 + rr) * PP + k];
        for (int c = 0; c < OC; c++) kv[c] = Ks[k * DP + tx + 16 * c];
        for (int rr = 0; rr < 4; rr++)
          for (int c = 0; c < OC; c++) dq[rr][c] = fmaf(sv[rr], kv[c], dq[rr][c]);
      }
    }
  }
  for (int rr = 0; rr < 4; rr++) {
    const int i = q0 + ty * 4 + rr;
    if (i >= S) continue;
    const i64 row = ((i64)b * S + i) * stride + h * dh;
    for (int c = 0; c < OC; c++) {
      const int x = tx + 16 * c;
      if (x < dh) stx(dqkv, row + x, dq[rr][c], bf);
    }
  }
}

// dK, dV: for key j, dv_j = sum_i p_ij dout_i and dk_j = scale sum_i p_ij (dout_i . v_j - D_i) q_i
// over the query rows that see j. One block per (key tile, b h). Shared: K, V, Q, dO tiles, P^T and
// dS^T (AT_T x (AT_T + 1) each), and the tile's lse and D.
template <int DH>
__device__ void at_backward_dkdv(void *dqkv, const void *dout, const void *qkv, const float *lse, const float *D, int S, int H, int dh, int G, int w, int r,
                                 float scale, int bf) {
  constexpr int DP = DH + 1, PP = AT_T + 1, OC = DH / 16;
  extern __shared__ float sm[];
  float *Ks = sm, *Vs = Ks + AT_T * DP, *Qs = Vs + AT_T * DP, *Os = Qs + AT_T * DP, *PT = Os + AT_T * DP, *ST = PT + AT_T * PP, *Ls = ST + AT_T * PP,
        *Ds = Ls + AT_T;
  const int tid = threadIdx.x, ty = tid >> 4, tx = tid & 15;
  const int tiles = (S + AT_T - 1) / AT_T;
  const int tile = blockIdx.x % tiles, bh = blockIdx.x / tiles, b = bh / H, h = bh % H;
  const int d = H * dh;
  const i64 stride = 3 * (i64)d;
  const void *base = offx(qkv, (i64)b * S * stride, bf);
  const void *obase = offx(dout, (i64)b * S * d, bf);
  const int j0 = tile * AT_T, j1 = min(S, j0 + AT_T) - 1;
  at_load<DH>(Ks, base, j0, S, stride, d + h * dh, dh, bf);
  at_load<DH>(Vs, base, j0, S, stride, 2 * d + h * dh, dh, bf);
  float dk[4][OC], dv[4][OC];
  for (int rr = 0; rr < 4; rr++)
    for (int c = 0; c < OC; c++) dk[rr][c] = dv[rr][c] = 0.0f;
  int lo[2], hi[2];
  const int nr = at_ranges(j0, j1, S, G, w, r, lo, hi);
  for (int g = 0; g < nr; g++) {
    for (int i0 = lo[g]; i0 < hi[g]; i0 += AT_T) {
      __syncthreads();
      at_load<DH>(Qs, base, i0, hi[g], stride, h * dh, dh, bf);
      at_load<DH>(Os, obase, i0, hi[g], d, h * dh, dh, bf);
      if (tid < AT_T) {
        const int i = i0 + tid;
        Ls[tid] = i < hi[g] ? lse[(i64)bh * S + i] : 0.0f;
        Ds[tid] = i < hi[g] ? D[(i64)bh * S + i] : 0.0f;
      }
      __syncthreads();
      float s[4][4], dp[4][4];
      at_products2<DH>(s, dp, Ks, Qs, Vs, Os, ty, tx);
      for (int rr = 0; rr < 4; rr++) {
        const int j = j0 + ty * 4 + rr;
        for (int c = 0; c < 4; c++) {
          const int qi = tx + 16 * c, i = i0 + qi;
          const bool ok = j < S && i < hi[g] && at_allowed(i, j, G, w, r);
          const float p = ok ? expf(s[rr][c] * scale - Ls[qi]) : 0.0f;
          PT[(ty * 4 + rr) * PP + qi] = p;
          ST[(ty * 4 + rr) * PP + qi] = p * (dp[rr][c] - Ds[qi]) * scale;
        }
      }
      __syncthreads();
      for (int q = 0; q < AT_T; q++) {
        float pv[4], sv[4], ov[OC], qv[OC];
        for (int rr = 0; rr < 4; rr++) {
          pv[rr] = PT[(ty * 4 + rr) * PP + q];
          sv[rr] = ST[(ty * 4 + rr) * PP + q];
        }
        for (int c = 0; c < OC; c++) {
          ov[c] = Os[q * DP + tx + 16 * c];
          qv[c] = Qs[q * DP + tx + 16 * c];
        }
        for (int rr = 0; rr < 4; rr++)
          for (int c = 0; c < OC; c++) {
            dv[rr][c] = fmaf(pv[rr], ov[c], dv[rr][c]);
            dk[rr][c] = fmaf(sv[rr], qv[c], dk[rr][c]);
          }
      }
    }
  }
  for (int rr = 0; rr < 4; rr++) {
    const int j = j0 + ty * 4 + rr;
    if (j >= S) continue;
    const i64 row = ((i64)b * S + j) * stride + d + h * dh;
    for (int c = 0; c < OC; c++) {
      const int x = tx + 16 * c;
      if (x < dh) {
        stx(dqkv, row + x, dk[rr][c], bf);
        stx(dqkv, row + d + x, dv[rr][c], bf);
      }
    }
  }
}

// Entry points for head sizes up to 64 and up to 128 (the host picks the smaller that fits).
#define AT_ENTRY(DH)                                                                                                                                     \
  extern "C" __global__ void __launch_bounds__(256) attn_fwd_tiled##DH##_f32(void *out, float *lse, const void *qkv, int S, int H, int dh, int G, int w,   \
                                                                            int r, float scale, int bf) {                                                    \
    pdl_entry();                                                                                                                                             \
    at_forward<DH>(out, lse, qkv, S, H, dh, G, w, r, scale, bf);                                                                                             \
  }                                                                                                                                                      \
  extern "C" __global__ void __launch_bounds__(256) attn_bwd_dq_tiled##DH##_f32(void *dqkv, const void *dout, const void *qkv, const float *lse,        \
                                                                               const float *D, int S, int H, int dh, int G, int w, int r, float scale,   \
                                                                               int bf) {                                                                     \
    pdl_entry();                                                                                                                                             \
    at_backward_dq<DH>(dqkv, dout, qkv, lse, D, S, H, dh, G, w, r, scale, bf);                                                                               \
  }                                                                                                                                                      \
  extern "C" __global__ void __launch_bounds__(256) attn_bwd_dkdv_tiled##DH##_f32(void *dqkv, const void *dout, const void *qkv, const float *lse,      \
                                                                                 const float *D, int S, int H, int dh, int G, int w, int r,               \
                                                                                 float scale, int bf) {                                                      \
    pdl_entry();                                                                                                                                             \
    at_backward_dkdv<DH>(dqkv, dout, qkv, lse, D, S, H, dh, G, w, r, scale, bf);                                                                             \
  }
AT_ENTRY(64)
AT_ENTRY(128)
