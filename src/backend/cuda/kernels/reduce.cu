// Reductions: row kernels (one block per row, float64 sums), column sums (float64 partial sums over
// chunks of rows, then the chunks in a fixed order), whole-tensor sums, and the row argmax of the
// nearest-embedding searches.

// out[r] = sum_c (a[r, c] - b[r, c])^2 (b optional).
extern "C" __global__ void row_sq_dist_f32(float *out, const float *a, const float *b, int hasB, i64 R, i64 C) {
  pdl_entry();
  __shared__ double sh[32];
  for (i64 r = blockIdx.x; r < R; r += gridDim.x) {
    double s = 0.0;
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) {
      const double v = hasB ? (double)a[r * C + c] - (double)b[r * C + c] : (double)a[r * C + c];
      s += v * v;
    }
    s = block_sum_d(s, sh);
    if (threadIdx.x == 0) out[r] = (float)s;
  }
}

// Per-block partial sums (of squares) in float64 of a float32 or int32 tensor; the host adds the partials.
extern "C" __global__ void sum_partials(double *partials, const void *x, i64 n, int isInt, int squares) {
  pdl_entry();
  __shared__ double sh[32];
  double s = 0.0;
  GRID_STRIDE(i, n) {
    const double v = isInt ? (double)((const int *)x)[i] : (double)((const float *)x)[i];
    s += squares ? v * v : v;
  }
  s = block_sum_d(s, sh);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// Column sums of dy [R, C] in two parallel stages (bias gradients, LayerNorm weight gradients: one
// thread per column would leave most of the GPU idle when C is a model width and R a batch of tokens).
// Stage 1: block (32, 8) sums 32 W columns over one chunk of rows, W adjacent columns per thread, in
// float64, into partial[chunk][k][c] (k = 0: dy, k = 1 with ln: dy * xhat, xhat = (x - mean[r])
// rstd[r], the LayerNorm weight gradient). Stage 2 adds the chunks in a fixed order (deterministic)
// and rounds once to float32. bf: dy 0, x 1.
// W = 2 (C even, dy and x aligned to a pair): each warp reads whole 128-byte bf16 rows of its
// columns; the same float64 terms in the same order per column as W = 1.
// W = 8 (bf16 only, C a multiple of 8, 16-byte aligned rows): 16-byte loads, a warp reading 512
// bytes of a row (the pairs' 4-byte loads reached about 40% of the H200's bandwidth: 2.3 ms of a
// base 16 x 2048 step).
template <int W>
__device__ __forceinline__ void ldw(float v[W], const void *p, i64 at, int bf) {
  if constexpr (W == 1) v[0] = ldx(p, at, bf);
  else if constexpr (W == 2) ld2x(v[0], v[1], p, at >> 1, bf);
  else unpack8(v, ((const uint4 *)p)[at >> 3]);
}
template <int W>
__device__ void col_sums_partial(double *partial, const void *dy, const void *x, const float *mean, const float *rstd, i64 R, i64 C, i64 rowsPerChunk,
                                 int ln, int bf) {
  __shared__ double sb[8][32 * W + 1], sa[8][32 * W + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const i64 c = (i64)blockIdx.x * 32 * W + W * tx;
  const i64 chunk = blockIdx.y;
  const i64 r0 = chunk * rowsPerChunk, r1 = min(R, r0 + rowsPerChunk);
  double b[W], a[W];
#pragma unroll
  for (int j = 0; j < W; j++) b[j] = a[j] = 0.0;
  if (c < C) {
#pragma unroll 4
    for (i64 r = r0 + ty; r < r1; r += 8) {
      float d[W];
      ldw<W>(d, dy, r * C + c, BF(0));
#pragma unroll
      for (int j = 0; j < W; j++) b[j] += (double)d[j];
      if (ln) {
        float xv[W];
        ldw<W>(xv, x, r * C + c, BF(1));
        const double mu = mean[r], rs = rstd[r];
#pragma unroll
        for (int j = 0; j < W; j++) a[j] += (double)d[j] * (((double)xv[j] - mu) * rs);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < W; j++) {
    sb[ty][W * tx + j] = b[j];
    sa[ty][W * tx + j] = a[j];
  }
  __syncthreads();
  if (ty == 0 && c < C) {
#pragma unroll
    for (int j = 0; j < W; j++) {
      for (int y = 1; y < 8; y++) {
        b[j] += sb[y][W * tx + j];
        a[j] += sa[y][W * tx + j];
      }
      partial[(chunk * 2) * C + c + j] = b[j];
      partial[(chunk * 2 + 1) * C + c + j] = a[j];
    }
  }
}
extern "C" __global__ void col_sums_partial_f32(double *partial, const void *dy, const void *x, const float *mean, const float *rstd, i64 R, i64 C,
                                                i64 rowsPerChunk, int ln, int bf) {
  pdl_entry();
  col_sums_partial<1>(partial, dy, x, mean, rstd, R, C, rowsPerChunk, ln, bf);
}
extern "C" __global__ void col_sums_partial_x2(double *partial, const void *dy, const void *x, const float *mean, const float *rstd, i64 R, i64 C,
                                               i64 rowsPerChunk, int ln, int bf) {
  pdl_entry();
  col_sums_partial<2>(partial, dy, x, mean, rstd, R, C, rowsPerChunk, ln, bf);
}
extern "C" __global__ void col_sums_partial_bf16x8(double *partial, const void *dy, const void *x, const float *mean, const float *rstd, i64 R, i64 C,
                                                   i64 rowsPerChunk, int ln, int bf) {
  pdl_entry();
  col_sums_partial<8>(partial, dy, x, mean, rstd, R, C, rowsPerChunk, ln, bf);
}
// out_b[c] (+)= sum_chunk partial[chunk][0][c]; with ln also out_a[c] (+)= the dy * xhat sums.
// Blocks of (32, 32) threads: 32 columns, the chunks strided over threadIdx.y and added in shared
// memory (one thread per column walked every chunk serially: 60 us a call on an H200).
extern "C" __global__ void col_sums_finish_f32(float *outB, float *outA, const double *partial, i64 chunks, i64 C, int ln, int accumulate) {
  pdl_entry();
  __shared__ double sb[32][33], sa[32][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const i64 c = (i64)blockIdx.x * 32 + tx;
  double b = 0.0, a = 0.0;
  if (c < C)
    for (i64 k = ty; k < chunks; k += 32) {
      b += partial[(k * 2) * C + c];
      if (ln) a += partial[(k * 2 + 1) * C + c];
    }
  sb[ty][tx] = b;
  sa[ty][tx] = a;
  __syncthreads();
  if (ty == 0 && c < C) {
    for (int y = 1; y < 32; y++) {
      b += sb[y][tx];
      a += sa[y][tx];
    }
    outB[c] = (float)((accumulate ? (double)outB[c] : 0.0) + b);
    if (ln) outA[c] = (float)((accumulate ? (double)outA[c] : 0.0) + a);
  }
}

// Column sums of row segments: dy [R, C] holds consecutive groups of rows (the experts' rows of a
// grouped product) and out[e][c] (+)= the sum of group e's rows (expert bias gradients, one pair of
// launches for every expert instead of a pair per expert). Stage 1 as col_sums_partial_f32 over
// chunks that never straddle two groups: chunks[2 k], chunks[2 k + 1] = chunk k's first row and
// its end, into partial[k][c]; stage 2 adds group e's chunks first[e] .. first[e + 1] - 1 in order.
// W = 8 (col_sums_segments_bf16x8: bf16 rows of whole 16-byte vectors, C % 8 == 0): eight columns a
// thread, the same float64 terms in the same order per column as W = 1 (whose one-column loads move
// 64 bytes a warp a row).
template <int W>
__device__ __forceinline__ void col_sums_segments(double *partial, const void *dy, const int *chunks, i64 C, int bf) {
  __shared__ double sh[8][32 * W + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const i64 c = (i64)blockIdx.x * 32 * W + W * tx;
  const i64 k = blockIdx.y;
  const i64 r0 = chunks[2 * k], r1 = chunks[2 * k + 1];
  double b[W];
#pragma unroll
  for (int j = 0; j < W; j++) b[j] = 0.0;
  if (c < C) {
#pragma unroll 4
    for (i64 r = r0 + ty; r < r1; r += 8) {
      float d[W];
      ldw<W>(d, dy, r * C + c, BF(0));
#pragma unroll
      for (int j = 0; j < W; j++) b[j] += (double)d[j];
    }
  }
#pragma unroll
  for (int j = 0; j < W; j++) sh[ty][W * tx + j] = b[j];
  __syncthreads();
  if (ty == 0 && c < C) {
#pragma unroll
    for (int j = 0; j < W; j++) {
      for (int y = 1; y < 8; y++) b[j] += sh[y][W * tx + j];
      partial[k * C + c + j] = b[j];
    }
  }
}
extern "C" __global__ void col_sums_segments_partial(double *partial, const void *dy, const int *chunks, i64 C, int bf) {
  pdl_entry();
  col_sums_segments<1>(partial, dy, chunks, C, bf);
}
extern "C" __global__ void col_sums_segments_bf16x8(double *partial, const void *dy, const int *chunks, i64 C) {
  pdl_entry();
  col_sums_segments<8>(partial, dy, chunks, C, 1);
}
extern "C" __global__ void col_sums_segments_finish(float *out, const double *partial, const int *first, i64 E, i64 C, int accumulate) {
  pdl_entry();
  GRID_STRIDE(idx, E * C) {
    const i64 e = idx / C, c = idx % C;
    double b = 0.0;
    for (i64 k = first[e]; k < first[e + 1]; k++) b += partial[k * C + c];
    out[idx] = (float)((accumulate ? (double)out[idx] : 0.0) + b);
  }
}

// Row softmax over C columns.
extern "C" __global__ void softmax_f32(float *out, const float *x, i64 R, i64 C) {
  pdl_entry();
  __shared__ double sh[32];
  for (i64 r = blockIdx.x; r < R; r += gridDim.x) {
    const float *xr = x + r * C;
    double mx = NEG_INF_D;
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) mx = fmax(mx, (double)xr[c]);
    mx = block_max_d(mx, sh);
    double s = 0.0;
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) s += exp((double)xr[c] - mx);
    s = block_sum_d(s, sh);
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) out[r * C + c] = (float)(exp((double)xr[c] - mx) / s);
  }
}

// dx = y (dy - sum(dy y)) per row. dx may alias dy.
extern "C" __global__ void softmax_backward_f32(float *dx, const float *dy, const float *y, i64 R, i64 C) {
  pdl_entry();
  __shared__ double sh[32];
  for (i64 r = blockIdx.x; r < R; r += gridDim.x) {
    double dot = 0.0;
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) dot += (double)dy[r * C + c] * (double)y[r * C + c];
    dot = block_sum_d(dot, sh);
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) dx[r * C + c] = (float)((double)y[r * C + c] * ((double)dy[r * C + c] - dot));
  }
}

// LayerNorm over C: mean and rstd saved (float32), the output from the float64 statistics.
// bf: out 0, x 1 (weight, bias and the statistics are float32).
extern "C" __global__ void layernorm_f32(void *out, float *mean, float *rstd, const void *x, const float *w, const float *b, i64 R, i64 C, double eps, int bf) {
  pdl_entry();
  __shared__ double sh[32];
  for (i64 r = blockIdx.x; r < R; r += gridDim.x) {
    const i64 xr = r * C;
    double s = 0.0;
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) s += (double)ldx(x, xr + c, BF(1));
    const double m = block_sum_d(s, sh) / (double)C;
    double v = 0.0;
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) {
      const double t = (double)ldx(x, xr + c, BF(1)) - m;
      v += t * t;
    }
    v = block_sum_d(v, sh);
    const double rs = 1.0 / sqrt(v / (double)C + eps);
    if (threadIdx.x == 0) {
      mean[r] = (float)m;
      rstd[r] = (float)rs;
    }
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) stx(out, xr + c, (float)(((double)ldx(x, xr + c, BF(1)) - m) * rs * (double)w[c] + (double)b[c]), BF(0));
  }
}

// dx (+)= rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), dxhat = dy w, from the saved statistics.
// bf: dx 0, dy 1, x 2.
extern "C" __global__ void layernorm_backward_dx_f32(void *dx, const void *dy, const void *x, const float *w, const float *mean, const float *rstd,
                                                     i64 R, i64 C, int accumulate, int bf) {
  pdl_entry();
  __shared__ double sh[32];
  for (i64 r = blockIdx.x; r < R; r += gridDim.x) {
    const double m = mean[r], s = rstd[r];
    double m1 = 0.0, m2 = 0.0;
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) {
      const double xh = ((double)ldx(x, r * C + c, BF(2)) - m) * s;
      const double dxh = (double)ldx(dy, r * C + c, BF(1)) * (double)w[c];
      m1 += dxh;
      m2 += dxh * xh;
    }
    m1 = block_sum_d(m1, sh) / (double)C;
    m2 = block_sum_d(m2, sh) / (double)C;
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) {
      const double xh = ((double)ldx(x, r * C + c, BF(2)) - m) * s;
      const double v = s * ((double)ldx(dy, r * C + c, BF(1)) * (double)w[c] - m1 - xh * m2);
      stx(dx, r * C + c, accumulate ? (float)((double)ldx(dx, r * C + c, BF(0)) + v) : (float)v, BF(0));
    }
  }
}

// Fused softmax cross-entropy per row of V logits: loss = lse - x[t]; with dlogits (float32, or
// bfloat16 with dbf: the gradient rounded once, for bf16 products), dx = w (softmax(x) - onehot(t)).
// Two passes over the row: an online max and sum (each thread rescales its float64 sum by a float64
// exp when its max grows, a few times per row), then the gradient. Exponentials per logit in
// float32 (exp2f of the float64 difference times log2 e: within about 2e-6 relative of the float64
// exp). The kernel moves its logits about three times: it is memory-bound.
extern "C" __global__ void cross_entropy_f32(float *loss, void *dlogits, int hasD, const float *logits, const int *targets, const float *weights, int hasW,
                                             i64 R, i64 V, int dbf) {
  pdl_entry();
  __shared__ double sh[32];
  const double LOG2E = 1.4426950408889634;
  for (i64 r = blockIdx.x; r < R; r += gridDim.x) {
    const float *xr = logits + r * V;
    float m = NEG_INF_F;
    double sum = 0.0;
#pragma unroll 4
    for (i64 c = threadIdx.x; c < V; c += blockDim.x) {
      const float x = xr[c];
      if (x > m) {
        sum = m == NEG_INF_F ? 0.0 : sum * exp((double)m - (double)x);
        m = x;
      }
      sum += (double)exp2f((float)(((double)x - (double)m) * LOG2E));
    }
    const double M = block_max_d((double)m, sh);
    const double lse = M + log(block_sum_d(m == NEG_INF_F ? 0.0 : sum * exp((double)m - M), sh));
    const int t = targets[r];
    if (threadIdx.x == 0) loss[r] = (float)(lse - (double)xr[t]);
    if (hasD) {
      const double w = hasW ? (double)weights[r] : 1.0;
#pragma unroll 4
      for (i64 c = threadIdx.x; c < V; c += blockDim.x) {
        float g = (float)(w * (double)exp2f((float)(((double)xr[c] - lse) * LOG2E)));
        if (c == t) g = (float)((double)g - w);
        stx(dlogits, r * V + c, g, dbf);
      }
    }
  }
}

// cross_entropy_f32 with each row read from memory once, for V <= XE_NPT NT (NT = blockDim.x): the
// block keeps its row in registers, XE_NPT logits a thread (logit c = tid + j NT: every warp load is
// 32 consecutive floats, coalesced whatever the row's alignment, so no vector loads: rows are V
// floats apart and V is often odd), and takes the max, the sum and the gradient from them.
// - The max first, then the float64 sum of the float32 exp2f((float)((x - M) log2 e)) (the CPU sums
//   exp(x - max) in float64 likewise): no online rescaling. Each thread adds its logits in order,
//   then block_sum_d's tree: deterministic, but the terms and their order are not
//   cross_entropy_f32's, so lse and the loss can differ from it in their last bits, and through lse
//   a gradient in its last bits.
// - The gradient is cross_entropy_f32's pass 2 per logit: e = exp2f((float)((x - lse) log2 e)),
//   w e rounded once to float32, then - w at the target in float64. w e is a float32 product here:
//   w and e are floats, so their float64 product is exact and its rounding to float32 is the
//   correctly rounded float32 product: the same bits, two 64-bit conversions a logit fewer.
// Persistent: the host launches no more blocks than fit at once (one of 1,024 threads per SM) and
// each block walks the rows r, r + gridDim.x, ...: each register takes the next row's logit right
// after its gradient is stored, so the next row's reads overlap this row's arithmetic and stores.
// H200, 1,092 x 30,522 random logits, bf16 dlogits: 115 us a call (cross_entropy_f32: 246), the
// loss alone 85 (133). It is bound by issue and latency, not memory: ncu gave 55% of the issue
// slots, the XU pipe (exp2f's MUFU.EX2 and the five float <-> double conversions a logit, 16 lanes a
// clock per SM) at 55% of its peak, FP64 at 16%, DRAM at 34%, with 8 warps a scheduler (the 32
// logits leave no registers for more). Measured no faster: staging the next row in shared memory
// with cp.async from the block max on (memory busy through the max and the sum too), and the
// float -> double conversions done with integer and FP64 instructions instead of the XU pipe.
// __launch_bounds__(NT, 1024 / NT) allows 64 registers a thread: the 32 logits and the rest (ptxas
// -v: 64 registers, no spills). The thread 0 reads x[t] for the loss before the block's barriers,
// and each thread writes only logits it read: logits may alias dlogits.
#define XE_NPT 32
// float to double as an opaque step: with a plain cast the compiler kept (double)x from the sum for
// the gradient, 32 doubles live across the block sum (64 registers: spills)
__device__ __forceinline__ double xe_f2d(float f) {
  double d;
  asm volatile("cvt.f64.f32 %0, %1;" : "=d"(d) : "f"(f));
  return d;
}
// D: 0 no dlogits, 1 float32, 2 bfloat16 (compile-time, so that each loop has one store form)
template <int NT, int D>
__device__ __forceinline__ void xe_rows(double *sh, float *loss, void *dlogits, const float *logits, const int *targets, const float *weights, int hasW, int R,
                                        int V) {
  const double LOG2E = 1.4426950408889634;
  const int tid = threadIdx.x;
  int r = blockIdx.x;
  if (r >= R) return;
  float x[XE_NPT];
  for (bool first = true; r < R; r += gridDim.x, first = false) {
    const int rn = r + gridDim.x;
    // logits past the row are -inf: the max needs no guard (the sum and the gradient keep theirs).
    // With dlogits, rows after the first were loaded during the previous row's gradient.
    if (first || !D) {
      const float *xr = logits + (i64)r * V;
#pragma unroll
      for (int j = 0; j < XE_NPT; j++) x[j] = tid + j * NT < V ? xr[tid + j * NT] : NEG_INF_F;
    }
    const int t = targets[r];
    const float xt = tid == 0 ? logits[(i64)r * V + t] : 0.0f;
    float m = NEG_INF_F;
#pragma unroll
    for (int j = 0; j < XE_NPT; j++) m = fmaxf(m, x[j]);
    const double M = block_max_d((double)m, sh);
    double s = 0.0;
#pragma unroll
    for (int j = 0; j < XE_NPT; j++) {
      if (tid + j * NT < V) s += (double)exp2f((float)((xe_f2d(x[j]) - M) * LOG2E));
    }
    const double lse = M + log(block_sum_d(s, sh));
    if (tid == 0) loss[r] = (float)(lse - (double)xt);
    const float *xn = logits + (i64)rn * V; // read only when rn < R
    if (D) {
      const float w = hasW ? weights[r] : 1.0f;
      float *gf = (float *)dlogits + (i64)r * V;
      bf16_t *gb = (bf16_t *)dlogits + (i64)r * V;
#pragma unroll
      for (int j = 0; j < XE_NPT; j++) {
        const int c = tid + j * NT;
        if (c < V) {
          float g = w * exp2f((float)((xe_f2d(x[j]) - lse) * LOG2E));
          if (c == t) g = (float)((double)g - (double)w);
          if (D == 2) gb[c] = f2bf(g);
          else gf[c] = g;
          if (rn < R) x[j] = xn[c];
        }
      }
    }
  }
}
// NT threads (blockDim.x must be NT): rows of V <= 32 NT; MINB = 1024 / NT blocks per SM allow 64 registers a thread
#define XE_KERNEL(NT, MINB)                                                                                                                                \
  extern "C" __global__ void __launch_bounds__(NT, MINB) cross_entropy_rows##NT##_f32(float *loss, void *dlogits, int hasD, const float *logits,             \
                                                                                      const int *targets, const float *weights, int hasW, int R, int V,    \
                                                                                      int dbf) {                                                           \
    __shared__ double sh[32];                                                                                                                              \
    pdl_entry();                                                                                                                                           \
    if (!hasD) xe_rows<NT, 0>(sh, loss, dlogits, logits, targets, weights, hasW, R, V);                                                                   \
    else if (dbf) xe_rows<NT, 2>(sh, loss, dlogits, logits, targets, weights, hasW, R, V);                                                                \
    else xe_rows<NT, 1>(sh, loss, dlogits, logits, targets, weights, hasW, R, V);                                                                         \
  }
XE_KERNEL(256, 4)
XE_KERNEL(512, 2)
XE_KERNEL(1024, 1)

// half[v] = ||table[v]||^2 / 2 in float64 (the nearest-row search's offset).
extern "C" __global__ void half_sq_norms_f32(double *half, const float *table, i64 V, i64 e) {
  pdl_entry();
  GRID_STRIDE(v, V) {
    double s = 0.0;
    for (i64 c = 0; c < e; c++) {
      const double t = table[v * e + c];
      s += t * t;
    }
    half[v] = s / 2.0;
  }
}

// The bf16x3 operands of nearestRows / argmaxDot: row r of x [rows, e] (float32) becomes 3e bfloat16,
// hi = bf16(x), lo = bf16(x - hi): [hi | hi | lo] (order 0, the rows scored) or [hi | lo | hi]
// (order 1, the table), so that one product over 3e columns sums hi.hi + hi.lo + lo.hi.
extern "C" __global__ void split_bf16x3_f32(bf16_t *out, const float *x, i64 rows, i64 e, int order) {
  pdl_entry();
  GRID_STRIDE(i, rows * e) {
    const i64 r = i / e, c = i % e;
    const float v = x[i];
    const bf16_t hi = f2bf(v), lo = f2bf(v - bf2f(hi));
    bf16_t *o = out + r * 3 * e + c;
    o[0] = hi;
    o[e] = order ? lo : hi;
    o[2 * e] = order ? hi : lo;
  }
}

// out[row0 + i] = argmax_v (scores[i, v] - half[v]) over a chunk of n rows (ties: the lower v).
extern "C" __global__ void row_argmax_f32(int *out, const float *scores, const double *half, int useHalf, i64 n, i64 V, i64 row0) {
  pdl_entry();
  __shared__ double sv[32];
  __shared__ long long si[32];
  for (i64 r = blockIdx.x; r < n; r += gridDim.x) {
    double best = NEG_INF_D;
    long long bi = -1;
    for (i64 v = threadIdx.x; v < V; v += blockDim.x) {
      const double s = (double)scores[r * V + v] - (useHalf ? half[v] : 0.0);
      // v increases in this thread's loop: strict > keeps the lower index on ties
      if (bi < 0 || s > best) {
        best = s;
        bi = v;
      }
    }
    // warp then block reduction on (score, index): larger score, or equal score and lower index
    for (int o = 16; o > 0; o >>= 1) {
      const double ob = __shfl_xor_sync(FULL_MASK, best, o);
      const long long oi = __shfl_xor_sync(FULL_MASK, bi, o);
      if (oi >= 0 && (bi < 0 || ob > best || (ob == best && oi < bi))) {
        best = ob;
        bi = oi;
      }
    }
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) {
      sv[w] = best;
      si[w] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      double b = sv[0];
      long long i0 = si[0];
      for (int k = 1; k < nw; k++)
        if (si[k] >= 0 && (i0 < 0 || sv[k] > b || (sv[k] == b && si[k] < i0))) {
          b = sv[k];
          i0 = si[k];
        }
      out[row0 + r] = (int)(i0 < 0 ? 0 : i0);
    }
  }
}

// ---- bfloat16 LayerNorm ----------------------------------------------------------------------------
// On bfloat16 rows in float32 arithmetic, one warp per row and two columns per lane step (C even,
// rows 4-byte aligned): the double-precision block-per-row kernels above keep the float32 path's
// agreement with the CPU; for bf16 activations one rounding of the output (2^-9) dwarfs float's
// error, and a warp per row needs no block barriers.

// LayerNorm of bfloat16 rows held in registers: a warp per row as 16-byte vectors (C % 8 == 0,
// C <= 256 LN_VEC, 16-byte aligned rows), so each row is read from memory once (the warp kernels
// below read it three times, a 4-byte word per lane per load: ~12 us a call for 2,064 x 768, where
// the traffic takes ~2). With `b` non-null the row is first the residual sum a + b, rounded to bf16
// as axpby rounds it (the sum of two bf16 is exact in float32, so one rounding either way) and
// written to `sum` (which may alias a or b: each lane writes only the vectors it read): the add
// before each of the model's LayerNorms without a pass of its own. With `bBias`, b is first
// bf16(b + bBias), the rounding of a product's bias epilogue: the bias of the product that made b
// without a pass of its own either.
#define LN_VEC 8
// the eight float32 weights of columns 8c .. 8c + 7
__device__ __forceinline__ void ln_ld8(float v[8], const float4 *p, int c) {
  const float4 a = p[2 * c], b = p[2 * c + 1];
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ uint4 add_bf8(uint4 x, uint4 y) {
  return make_uint4(pack_bf2(bf_lo(x.x) + bf_lo(y.x), bf_hi(x.x) + bf_hi(y.x)), pack_bf2(bf_lo(x.y) + bf_lo(y.y), bf_hi(x.y) + bf_hi(y.y)),
                    pack_bf2(bf_lo(x.z) + bf_lo(y.z), bf_hi(x.z) + bf_hi(y.z)), pack_bf2(bf_lo(x.w) + bf_lo(y.w), bf_hi(x.w) + bf_hi(y.w)));
}
// The row's loads (a, b, b's bias, the weight and bias) are all issued before the first store: a
// store to `sum` or `out` may alias a later vector's load as far as the compiler knows, so loads
// written between stores waited for each other (SASS: six memory round trips a row at C = 768, where
// at batch 1, one row a warp and ~16 warps an SM, nothing else hides them). NV, the vectors a lane
// holds, is a template argument so that the registers for it are all (C <= 256 NV). From NV = 8 the
// per-column floats would not fit in registers beside the row (ptxas spilled): there they are loaded
// where used, as before, and only the row's loads go first.
template <int NV>
__device__ __forceinline__ void ln_fwd_rows(uint4 *out, float *mean, float *rstd, uint4 *sum, const uint4 *a, const uint4 *b, const float4 *bBias, const float4 *w,
                                            const float4 *bias, int R, int C, float eps) {
  pdl_entry();
  const int lane = threadIdx.x & 31, nv = C >> 3, warps = blockDim.x >> 5;
  for (int r = blockIdx.x * warps + (threadIdx.x >> 5); r < R; r += gridDim.x * warps) {
    const i64 row = (i64)r * nv;
    // the row stays packed (4 registers per 8 values) and is unpacked per pass
    constexpr bool early = NV <= 4;
    constexpr int NW = early ? NV : 1;
    uint4 v[NV], y[NV];
    float wv[NW][8], bv[NW][8], bb[NW][8];
#pragma unroll
    for (int j = 0; j < NV; j++) {
      const int c = lane + 32 * j;
      if (c < nv) {
        v[j] = a[row + c];
        if (b) y[j] = b[row + c];
        if (early) {
          if (bBias) ln_ld8(bb[j % NW], bBias, c);
          ln_ld8(wv[j % NW], w, c);
          ln_ld8(bv[j % NW], bias, c);
        }
      }
    }
    float s = 0.0f, x[8];
#pragma unroll
    for (int j = 0; j < NV; j++) {
      const int c = lane + 32 * j;
      if (c < nv) {
        if (b) {
          uint4 yj = y[j];
          if (bBias) {
            // b's own bias first, rounded as a product's bias epilogue (bias_act_bf16x8) rounds it
            float yv[8];
            unpack8(yv, yj);
            if (!early) ln_ld8(bb[0], bBias, c);
#pragma unroll
            for (int q = 0; q < 8; q++) yv[q] = yv[q] + bb[j % NW][q];
            yj = pack8(yv);
          }
          v[j] = add_bf8(v[j], yj);
          sum[row + c] = v[j];
        }
        unpack8(x, v[j]);
#pragma unroll
        for (int q = 0; q < 8; q++) s += x[q];
      }
    }
    const float m = warp_sum_f(s) / (float)C;
    float qs = 0.0f;
#pragma unroll
    for (int j = 0; j < NV; j++) {
      if (lane + 32 * j < nv) {
        unpack8(x, v[j]);
#pragma unroll
        for (int q = 0; q < 8; q++) {
          const float t = x[q] - m;
          qs = fmaf(t, t, qs);
        }
      }
    }
    const float rs = 1.0f / sqrtf(warp_sum_f(qs) / (float)C + eps);
    if (lane == 0) {
      mean[r] = m;
      rstd[r] = rs;
    }
#pragma unroll
    for (int j = 0; j < NV; j++) {
      const int c = lane + 32 * j;
      if (c < nv) {
        if (!early) {
          ln_ld8(wv[0], w, c);
          ln_ld8(bv[0], bias, c);
        }
        unpack8(x, v[j]);
#pragma unroll
        for (int q = 0; q < 8; q++) x[q] = (x[q] - m) * rs * wv[j % NW][q] + bv[j % NW][q];
        out[row + c] = pack8(x);
      }
    }
  }
}
#define LN_FWD_KERNEL(NAME, NV)                                                                                                                        \
  extern "C" __global__ void NAME(uint4 *out, float *mean, float *rstd, uint4 *sum, const uint4 *a, const uint4 *b, const float4 *bBias, const float4 *w, \
                                  const float4 *bias, int R, int C, float eps) {                                                                       \
    ln_fwd_rows<NV>(out, mean, rstd, sum, a, b, bBias, w, bias, R, C, eps);                                                                            \
  }
// C <= 256, 512, 768, 1024 and 2048 (LN_VEC)
LN_FWD_KERNEL(layernorm_bf16_vec1, 1)
LN_FWD_KERNEL(layernorm_bf16_vec2, 2)
LN_FWD_KERNEL(layernorm_bf16_vec3, 3)
LN_FWD_KERNEL(layernorm_bf16_vec4, 4)
LN_FWD_KERNEL(layernorm_bf16_vec, LN_VEC)

// One vector of the backward's row: dy, x (as floats) and the weights of its 8 columns.
__device__ __forceinline__ void ln_bwd_unpack(float g[8], float x[8], float w8[8], uint4 gv, uint4 xv, const float4 *w, int c) {
  unpack8(g, gv);
  unpack8(x, xv);
  ln_ld8(w8, w, c);
}

// dx of one row held in a warp's registers (NV vectors a lane, gv = dy and xv = x; m, s its mean
// and rstd): the two row sums, then dx (+)= rstd (dy w - m1 - xhat rstd m2) written at row.
template <int NV>
__device__ __forceinline__ void ln_bwd_row_dx(uint4 *dx, const uint4 gv[NV], const uint4 xv[NV], const float4 *w, float m, float s, i64 row, int lane, int nv, int C,
                                              int accumulate) {
  float m1 = 0.0f, m2 = 0.0f;
  // d = dy w and xhat = (x - m) s per element, recomputed in the second pass (registers are
  // the limit, arithmetic is not)
  float g[8], xh[8];
#pragma unroll
  for (int j = 0; j < NV; j++) {
    const int c = lane + 32 * j;
    if (c < nv) {
      float wv[8];
      ln_bwd_unpack(g, xh, wv, gv[j], xv[j], w, c);
#pragma unroll
      for (int q = 0; q < 8; q += 2) {
        const float d0 = g[q] * wv[q], d1 = g[q + 1] * wv[q + 1];
        m1 += d0 + d1;
        m2 = fmaf(d0, (xh[q] - m) * s, fmaf(d1, (xh[q + 1] - m) * s, m2));
      }
    }
  }
  m1 = warp_sum_f(m1) / (float)C;
  m2 = warp_sum_f(m2) / (float)C;
#pragma unroll
  for (int j = 0; j < NV; j++) {
    const int c = lane + 32 * j;
    if (c < nv) {
      float wv[8];
      ln_bwd_unpack(g, xh, wv, gv[j], xv[j], w, c);
      float o[8];
      if (accumulate) unpack8(o, dx[row + c]);
#pragma unroll
      for (int q = 0; q < 8; q++) {
        float t = s * (g[q] * wv[q] - m1 - (xh[q] - m) * s * m2);
        if (accumulate) t += o[q];
        g[q] = t;
      }
      dx[row + c] = pack8(g);
    }
  }
}

// layernorm_backward_dx_bf16_warp on rows in registers (the layout and conditions of
// layernorm_bf16_vec): dy and x read once. dx may alias dy (a lane writes only what it read).
extern "C" __global__ void layernorm_backward_dx_bf16_vec(uint4 *dx, const uint4 *dy, const uint4 *x, const float4 *w, const float *mean, const float *rstd, int R,
                                                          int C, int accumulate) {
  pdl_entry();
  const int lane = threadIdx.x & 31, nv = C >> 3, warps = blockDim.x >> 5;
  for (int r = blockIdx.x * warps + (threadIdx.x >> 5); r < R; r += gridDim.x * warps) {
    const i64 row = (i64)r * nv;
    const float m = mean[r], s = rstd[r];
    uint4 gv[LN_VEC], xv[LN_VEC];
#pragma unroll
    for (int j = 0; j < LN_VEC; j++) {
      const int c = lane + 32 * j;
      if (c < nv) {
        gv[j] = dy[row + c];
        xv[j] = x[row + c];
      }
    }
    ln_bwd_row_dx<LN_VEC>(dx, gv, xv, w, m, s, row, lane, nv, C, accumulate);
  }
}

// layernorm_backward_dx_bf16_vec with the weight gradients' column sums in the same pass (dy and x
// read once for both; the separate col_sums_partial_bf16x8 read them again: ~37 us of a 32k x 768
// call). Block k (8 warps) takes rows [k rpc, (k + 1) rpc) eight at a time: warp w makes row
// t0 + w's dx as the other kernel does (to the bit) and leaves the row's dy and x in shared memory;
// after a barrier, thread i adds columns i, i + 256, ... of the eight rows, in row order, to its
// float64 sums of dy and of dy xhat (col_sums_partial's terms): partial[k][0 | 1][C] at the end, for
// col_sums_finish_f32. Each warp's next row is loaded before this row's stores (a store to dx may
// alias it as far as the compiler knows). (A first form kept every column's sums in the row's lanes:
// 225 registers, one block an SM, 1.6 TB/s.) NV <= 4: C <= 1024.
template <int NV>
__device__ __forceinline__ void ln_bwd_sums(uint4 *dx, const uint4 *dy, const uint4 *x, const float4 *w, const float *mean, const float *rstd, int R, int C, int rpc,
                                            int accumulate, double *partial) {
  __shared__ __align__(16) bf16_t sdy[8][256 * NV], sx[8][256 * NV];
  __shared__ float smu[8], srs[8];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nv = C >> 3;
  const int r0 = blockIdx.x * rpc, r1 = min(R, r0 + rpc);
  double sb[NV], sa[NV];
#pragma unroll
  for (int q = 0; q < NV; q++) sb[q] = sa[q] = 0.0;
  uint4 gv[NV], xv[NV];
  float m = 0.0f, s = 0.0f;
  if (r0 + warp < r1) {
    const int r = r0 + warp;
    m = mean[r], s = rstd[r];
#pragma unroll
    for (int j = 0; j < NV; j++)
      if (lane + 32 * j < nv) {
        gv[j] = dy[(i64)r * nv + lane + 32 * j];
        xv[j] = x[(i64)r * nv + lane + 32 * j];
      }
  }
  for (int t0 = r0; t0 < r1; t0 += 8) {
    const int r = t0 + warp, rn = r + 8;
    // the next row in flight
    uint4 gn[NV], xn[NV];
    float mn = 0.0f, sn = 0.0f;
    if (rn < r1) {
      mn = mean[rn], sn = rstd[rn];
#pragma unroll
      for (int j = 0; j < NV; j++)
        if (lane + 32 * j < nv) {
          gn[j] = dy[(i64)rn * nv + lane + 32 * j];
          xn[j] = x[(i64)rn * nv + lane + 32 * j];
        }
    }
    if (r < r1) {
#pragma unroll
      for (int j = 0; j < NV; j++) {
        const int c = lane + 32 * j;
        if (c < nv) {
          ((uint4 *)sdy[warp])[c] = gv[j];
          ((uint4 *)sx[warp])[c] = xv[j];
        }
      }
      if (lane == 0) smu[warp] = m, srs[warp] = s;
      ln_bwd_row_dx<NV>(dx, gv, xv, w, m, s, (i64)r * nv, lane, nv, C, accumulate);
    }
    __syncthreads();
    // the eight rows' columns, a thread's in row order
    const int rows = min(8, r1 - t0);
#pragma unroll
    for (int q = 0; q < NV; q++) {
      const int col = threadIdx.x + 256 * q;
      if (col < C)
        for (int i = 0; i < rows; i++) {
          const double g = (double)bf2f(sdy[i][col]);
          sb[q] += g;
          sa[q] += g * (((double)bf2f(sx[i][col]) - (double)smu[i]) * (double)srs[i]);
        }
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < NV; j++) {
      gv[j] = gn[j];
      xv[j] = xn[j];
    }
    m = mn, s = sn;
  }
  double *p = partial + (i64)blockIdx.x * 2 * C;
#pragma unroll
  for (int q = 0; q < NV; q++) {
    const int col = threadIdx.x + 256 * q;
    if (col < C) {
      p[col] = sb[q];
      p[C + col] = sa[q];
    }
  }
}
#define LN_BWD_SUMS_KERNEL(NAME, NV)                                                                                                                    \
  extern "C" __global__ void __launch_bounds__(256, 2) NAME(uint4 *dx, const uint4 *dy, const uint4 *x, const float4 *w, const float *mean, const float *rstd, \
                                                           int R, int C, int rpc, int accumulate, double *partial) {                                      \
    pdl_entry();                                                                                                                                          \
    ln_bwd_sums<NV>(dx, dy, x, w, mean, rstd, R, C, rpc, accumulate, partial);                                                                            \
  }
// C <= 256, 512, 768, 1024
LN_BWD_SUMS_KERNEL(layernorm_backward_sums_bf16_vec1, 1)
LN_BWD_SUMS_KERNEL(layernorm_backward_sums_bf16_vec2, 2)
LN_BWD_SUMS_KERNEL(layernorm_backward_sums_bf16_vec3, 3)
LN_BWD_SUMS_KERNEL(layernorm_backward_sums_bf16_vec4, 4)

// layernorm_f32 for bfloat16 out and x (mean and rstd float32).
extern "C" __global__ void layernorm_bf16_warp(u32 *out, float *mean, float *rstd, const u32 *x, const float *w, const float *b, int R, int C, float eps) {
  pdl_entry();
  const int lane = threadIdx.x & 31, half = C >> 1;
  for (int r = (blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < R; r += (gridDim.x * blockDim.x) >> 5) {
    const u32 *xr = x + (i64)r * half;
    float s = 0.0f;
    for (int c = lane; c < half; c += 32) {
      const u32 v = xr[c];
      s += bf_lo(v) + bf_hi(v);
    }
    const float m = warp_sum_f(s) / (float)C;
    float q = 0.0f;
    for (int c = lane; c < half; c += 32) {
      const u32 v = xr[c];
      const float t0 = bf_lo(v) - m, t1 = bf_hi(v) - m;
      q = fmaf(t0, t0, fmaf(t1, t1, q));
    }
    const float rs = 1.0f / sqrtf(warp_sum_f(q) / (float)C + eps);
    if (lane == 0) {
      mean[r] = m;
      rstd[r] = rs;
    }
    u32 *orow = out + (i64)r * half;
    for (int c = lane; c < half; c += 32) {
      const u32 v = xr[c];
      const float y0 = (bf_lo(v) - m) * rs * w[2 * c] + b[2 * c];
      const float y1 = (bf_hi(v) - m) * rs * w[2 * c + 1] + b[2 * c + 1];
      orow[c] = pack_bf2(y0, y1);
    }
  }
}

// layernorm_backward_dx_f32 for bfloat16 dx, dy, x. dx may alias dy: a lane writes only the pairs it
// read, after the row's sums (the shuffles order the two passes).
extern "C" __global__ void layernorm_backward_dx_bf16_warp(u32 *dx, const u32 *dy, const u32 *x, const float *w, const float *mean, const float *rstd, int R,
                                                           int C, int accumulate) {
  pdl_entry();
  const int lane = threadIdx.x & 31, half = C >> 1;
  for (int r = (blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < R; r += (gridDim.x * blockDim.x) >> 5) {
    const float m = mean[r], s = rstd[r];
    const u32 *xr = x + (i64)r * half, *gr = dy + (i64)r * half;
    float m1 = 0.0f, m2 = 0.0f;
    for (int c = lane; c < half; c += 32) {
      const u32 xv = xr[c], gv = gr[c];
      const float d0 = bf_lo(gv) * w[2 * c], d1 = bf_hi(gv) * w[2 * c + 1];
      m1 += d0 + d1;
      m2 = fmaf(d0, (bf_lo(xv) - m) * s, fmaf(d1, (bf_hi(xv) - m) * s, m2));
    }
    m1 = warp_sum_f(m1) / (float)C;
    m2 = warp_sum_f(m2) / (float)C;
    u32 *orow = dx + (i64)r * half;
    for (int c = lane; c < half; c += 32) {
      const u32 xv = xr[c], gv = gr[c];
      float v0 = s * (bf_lo(gv) * w[2 * c] - m1 - (bf_lo(xv) - m) * s * m2);
      float v1 = s * (bf_hi(gv) * w[2 * c + 1] - m1 - (bf_hi(xv) - m) * s * m2);
      if (accumulate) {
        const u32 o = orow[c];
        v0 += bf_lo(o);
        v1 += bf_hi(o);
      }
      orow[c] = pack_bf2(v0, v1);
    }
  }
}
