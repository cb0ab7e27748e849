// Elementwise ops, broadcasts, block copies and the GEMM epilogue. One thread per output element
// (grid-stride), float64 arithmetic rounded to float32 on store (as the CPU reference computes).

// out = alpha x + beta y (y optional). out may alias x or y. bf: out 0, x 1, y 2.
extern "C" __global__ void axpby_f32(void *out, const void *x, const void *y, int hasY, double alpha, double beta, i64 n, int bf) {
  pdl_entry();
  GRID_STRIDE(i, n) {
    const double v = hasY ? alpha * (double)ldx(x, i, BF(1)) + beta * (double)ldx(y, i, BF(2)) : alpha * (double)ldx(x, i, BF(1));
    stx(out, i, (float)v, BF(0));
  }
}

// axpby_f32 over n4 groups of four elements (aligned as convert_float_x4), the same arithmetic.
extern "C" __global__ void axpby_x4(void *out, const void *x, const void *y, int hasY, double alpha, double beta, i64 n4, int bf) {
  pdl_entry();
  GRID_STRIDE(i, n4) {
    float a[4], b[4] = {0.0f, 0.0f, 0.0f, 0.0f}, o[4];
    ld4x(a, x, i, BF(1));
    if (hasY) ld4x(b, y, i, BF(2));
#pragma unroll
    for (int j = 0; j < 4; j++) o[j] = (float)(hasY ? alpha * (double)a[j] + beta * (double)b[j] : alpha * (double)a[j]);
    st4x(out, i, o, BF(0));
  }
}

extern "C" __global__ void mul_f32(float *out, const float *x, const float *y, i64 n) {
  pdl_entry();
  GRID_STRIDE(i, n) out[i] = (float)((double)x[i] * (double)y[i]);
}

// out[p, q, r] = x[p, q, r] + y[p | 0, q | 0, r] (yP1 / yQ1: y has 1 in that dimension).
// bf: out 0, x 1, y 2.
extern "C" __global__ void add_broadcast_f32(void *out, const void *x, const void *y, i64 P, i64 Q, i64 R, int yP1, int yQ1, int bf) {
  pdl_entry();
  GRID_STRIDE(i, P * Q * R) {
    const i64 p = i / (Q * R), q = (i / R) % Q, r = i % R;
    const i64 yo = (yP1 ? 0 : p) * (yQ1 ? 1 : Q) * R + (yQ1 ? 0 : q * R) + r;
    stx(out, i, (float)((double)ldx(x, i, BF(1)) + (double)ldx(y, yo, BF(2))), BF(0));
  }
}

// dy[py, qy, r] (+)= sum over the broadcast dimensions of dout: one thread per dy element, summing
// in the CPU's order (p outer, q inner) with a float32 rounding per step, as its += on a
// Float32Array does, so the result is the CPU's bit for bit. The loads go RB_AHEAD at a time
// before their adds (the same adds in the same order): with a load an add, each add waited for its
// load, and the time embedding's gradient (16 x 768 threads, 2,048 positions each) took 0.22 ms a
// launch; 0.10 with the loads ahead (ncu, H200).
// bf: dy 0, dout 1 (a bfloat16 dy rounds once, at the end).
#define RB_AHEAD 16
extern "C" __global__ void reduce_broadcast_f32(void *dy, const void *dout, i64 P, i64 Q, i64 R, int yP1, int yQ1, int accumulate, int bf) {
  pdl_entry();
  const i64 yP = yP1 ? 1 : P, yQ = yQ1 ? 1 : Q;
  GRID_STRIDE(i, yP * yQ * R) {
    const i64 py = i / (yQ * R), qy = (i / R) % yQ, r = i % R;
    float g = accumulate ? ldx(dy, i, BF(0)) : 0.0f;
    const i64 p0 = yP1 ? 0 : py, p1 = yP1 ? P : py + 1;
    const i64 q0 = yQ1 ? 0 : qy, q1 = yQ1 ? Q : qy + 1;
    for (i64 p = p0; p < p1; p++) {
      i64 q = q0;
      for (; q + RB_AHEAD <= q1; q += RB_AHEAD) {
        float v[RB_AHEAD];
#pragma unroll
        for (int u = 0; u < RB_AHEAD; u++) v[u] = ldx(dout, (p * Q + q + u) * R + r, BF(1));
#pragma unroll
        for (int u = 0; u < RB_AHEAD; u++) g = (float)((double)g + (double)v[u]);
      }
      for (; q < q1; q++) g = (float)((double)g + (double)ldx(dout, (p * Q + q) * R + r, BF(1)));
    }
    stx(dy, i, g, BF(0));
  }
}

// a + b as the CPU's `+=` on a typed array computes it: float32 through a double, int32 wrapping
__device__ __forceinline__ float acc_add(float a, float b) { return (float)((double)a + (double)b); }
__device__ __forceinline__ int acc_add(int a, int b) { return (int)((u32)a + (u32)b); }

// Block copy: for c < count, i < length: dst[dstOff + c dstStride + i] (+)= src[srcOff + c srcStride + i].
// The host only launches this for blocks that do not overlap in dst (or one block at a time).
template <typename T>
__device__ void strided_copy(T *dst, const T *src, i64 count, i64 length, i64 srcOff, i64 srcStride, i64 dstOff, i64 dstStride, int accumulate) {
  GRID_STRIDE(idx, count * length) {
    const i64 c = idx / length, i = idx % length;
    const T v = src[srcOff + c * srcStride + i];
    T *d = dst + dstOff + c * dstStride + i;
    if (accumulate) *d = acc_add(*d, v);
    else *d = v;
  }
}
// The float version, either side float32 or bfloat16 (bf: dst 0, src 1).
extern "C" __global__ void strided_copy_f32(void *dst, const void *src, i64 count, i64 length, i64 srcOff, i64 srcStride, i64 dstOff, i64 dstStride, int accumulate,
                                            int bf) {
  pdl_entry();
  GRID_STRIDE(idx, count * length) {
    const i64 c = idx / length, i = idx % length;
    const float v = ldx(src, srcOff + c * srcStride + i, BF(1));
    const i64 d = dstOff + c * dstStride + i;
    stx(dst, d, accumulate ? acc_add(ldx(dst, d, BF(0)), v) : v, BF(0));
  }
}
extern "C" __global__ void strided_copy_i32(int *dst, const int *src, i64 count, i64 length, i64 srcOff, i64 srcStride, i64 dstOff, i64 dstStride, int accumulate) {
  pdl_entry();
  strided_copy<int>(dst, src, count, length, srcOff, srcStride, dstOff, dstStride, accumulate);
}

// dstStride 0 with accumulate: every block adds into the same row. One thread per element of the
// row, blocks summed in order c = 0, 1, ... (the CPU's order and rounding).
template <typename T>
__device__ void strided_reduce(T *dst, const T *src, i64 count, i64 length, i64 srcOff, i64 srcStride, i64 dstOff) {
  GRID_STRIDE(i, length) {
    T g = dst[dstOff + i];
    for (i64 c = 0; c < count; c++) g = acc_add(g, src[srcOff + c * srcStride + i]);
    dst[dstOff + i] = g;
  }
}
// bf: dst 0, src 1.
extern "C" __global__ void strided_reduce_f32(void *dst, const void *src, i64 count, i64 length, i64 srcOff, i64 srcStride, i64 dstOff, int bf) {
  pdl_entry();
  GRID_STRIDE(i, length) {
    float g = ldx(dst, dstOff + i, BF(0));
    for (i64 c = 0; c < count; c++) g = acc_add(g, ldx(src, srcOff + c * srcStride + i, BF(1)));
    stx(dst, dstOff + i, g, BF(0));
  }
}
extern "C" __global__ void strided_reduce_i32(int *dst, const int *src, i64 count, i64 length, i64 srcOff, i64 srcStride, i64 dstOff) {
  pdl_entry();
  strided_reduce<int>(dst, src, count, length, srcOff, srcStride, dstOff);
}

// out[r, c] (+)= scale[r] x[r, c]. out may alias x.
extern "C" __global__ void scale_rows_f32(float *out, const float *x, const float *scale, i64 R, i64 C, int accumulate) {
  pdl_entry();
  GRID_STRIDE(i, R * C) {
    const double v = (double)scale[i / C] * (double)x[i];
    out[i] = accumulate ? (float)((double)out[i] + v) : (float)v;
  }
}

// dx += coef x / sqrt(sumSq[0]) (nothing where sumSq[0] is 0): the gradient of coef ||x||_2.
extern "C" __global__ void add_norm_grad_f32(float *dx, const float *x, const float *sumSq, i64 n, double coef) {
  pdl_entry();
  const double ss = (double)sumSq[0];
  if (!(ss > 0.0)) return;
  const double r = coef / sqrt(ss);
  GRID_STRIDE(i, n) dx[i] = (float)((double)dx[i] + r * (double)x[i]);
}

// Activations: kind 0 = GELU (erf), 1 = tanh, 2 = SiLU.
__device__ __forceinline__ double act_d(double x, int kind) {
  if (kind == 0) return gelu_d(x);
  if (kind == 1) return tanh(x);
  return x / (1.0 + exp(-x));
}
__device__ __forceinline__ double act_grad_d(double x, int kind) {
  if (kind == 0) return gelu_grad_d(x);
  if (kind == 1) {
    const double t = tanh(x);
    return 1.0 - t * t;
  }
  const double s = 1.0 / (1.0 + exp(-x));
  return s * (1.0 + x * (1.0 - s));
}

// bf: out 0, x 1.
extern "C" __global__ void activation_f32(void *out, const void *x, i64 n, int kind, int bf) {
  pdl_entry();
  GRID_STRIDE(i, n) stx(out, i, (float)act_d((double)ldx(x, i, BF(1)), kind), BF(0));
}

// dx (+)= act'(x) dy. dx may alias dy. bf: dx 0, dy 1, x 2.
extern "C" __global__ void activation_backward_f32(void *dx, const void *dy, const void *x, i64 n, int kind, int accumulate, int bf) {
  pdl_entry();
  GRID_STRIDE(i, n) {
    const double g = act_grad_d((double)ldx(x, i, BF(2)), kind) * (double)ldx(dy, i, BF(1));
    stx(dx, i, accumulate ? (float)((double)ldx(dx, i, BF(0)) + g) : (float)g, BF(0));
  }
}

// GEMM epilogue on a rows x N block: c += bias (per column, float32 add); with pre: pre = c, c = gelu(c).
// bf: c 0, pre 1 (the bias is a float32 parameter).
extern "C" __global__ void bias_act_f32(void *c, i64 rows, i64 N, const void *bias, int hasBias, void *pre, int hasPre, int bf) {
  pdl_entry();
  GRID_STRIDE(i, rows * N) {
    float v = ldx(c, i, BF(0));
    if (hasBias) v = v + ldx(bias, i % N, hasBias == 2);
    if (hasPre) {
      // GELU of the stored pre-activation (rounded when bf16): the backward's recomputation from
      // pre gives the same values
      stx(pre, i, v, BF(1));
      v = (float)gelu_d((double)ldx(pre, i, BF(1)));
    }
    stx(c, i, v, BF(0));
  }
}

// dst = src between float dtypes (bf: dst 0, src 1): float32 <-> bfloat16 conversions (copy, and the
// operands of the bf16 matrix products).
extern "C" __global__ void convert_float(void *dst, const void *src, i64 n, int bf) {
  pdl_entry();
  GRID_STRIDE(i, n) stx(dst, i, ldx(src, i, BF(1)), BF(0));
}
// convert_float over n4 groups of four elements (16-byte aligned float32 sides, 8-byte bf16): the
// same values with a quarter of the memory instructions (it ran at a tenth of the bandwidth).
extern "C" __global__ void convert_float_x4(void *dst, const void *src, i64 n4, int bf) {
  pdl_entry();
  GRID_STRIDE(i, n4) {
    float v[4];
    ld4x(v, src, i, BF(1));
    st4x(dst, i, v, BF(0));
  }
}

// c = beta c (beta 0 writes zeros, never reading c): a product with an empty inner dimension.
// bf: c bfloat16.
extern "C" __global__ void scale_f32(void *c, i64 n, double beta, int bf) {
  pdl_entry();
  GRID_STRIDE(i, n) stx(c, i, beta == 0.0 ? 0.0f : (float)(beta * (double)ldx(c, i, bf)), bf);
}

// ---- bfloat16 fast paths -------------------------------------------------------------------------
// Activations stored in bfloat16 need only float32 arithmetic (gelu_f, gelu_grad_f), two elements
// per 32-bit word, 32-bit indices: the epilogues of the MoE's grouped matrix products, which the
// double-precision kernels above (kept for the float32 path's agreement with the CPU) made
// memory-and-FP64 bound.

// bias_act_f32 for bfloat16 c and pre with N even and rows * N < 2^31: a pair of columns per step.
extern "C" __global__ void bias_act_bf16x2(u32 *c, int rows, int N, const void *bias, int hasBias, u32 *pre, int hasPre) {
  pdl_entry();
  const int half = N >> 1, n = rows * half;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const u32 v = c[i];
    float lo = bf_lo(v), hi = bf_hi(v);
    if (hasBias) {
      const int col = (i % half) * 2;
      lo = lo + ldx(bias, col, hasBias == 2);
      hi = hi + ldx(bias, col + 1, hasBias == 2);
    }
    if (hasPre) {
      const u32 p = pack_bf2(lo, hi);
      pre[i] = p;
      lo = gelu_f(bf_lo(p));
      hi = gelu_f(bf_hi(p));
    }
    c[i] = pack_bf2(lo, hi);
  }
}

// gelu_pair's table: entry v is GELU of the bf16 with bits v, rounded to bf16 as gelu_pair computes
// it (so a lookup gives the computed pair's bits). 32,768 threads, a pair each.
extern "C" __global__ void gelu_table_bf16(u32 *tab) {
  pdl_entry();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < 32768) tab[i] = gelu_pair((u32)(2 * i) | ((u32)(2 * i + 1) << 16), nullptr);
}

// gelu_grad_f of every bf16 (entry v: the bf16 with bits v), for the GELU backward's lookups: the
// same float the kernels compute, so the same products. 65,536 threads.
extern "C" __global__ void gelu_grad_table_f32(float *tab) {
  pdl_entry();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < 65536) tab[i] = gelu_grad_f(bf2f((bf16_t)i));
}

// GELU of bfloat16 x into out (may alias) for an even size below 2^31, pairwise, in the float32
// arithmetic of bias_act_bf16x2 (the recomputed expert activations of the backward then equal the
// forward's to the bit).
extern "C" __global__ void gelu_bf16x2(u32 *out, const u32 *x, int pairs) {
  pdl_entry();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < pairs; i += gridDim.x * blockDim.x) {
    const u32 v = x[i];
    out[i] = pack_bf2(gelu_f(bf_lo(v)), gelu_f(bf_hi(v)));
  }
}

// GELU backward for bfloat16 dx, dy, x of an even size below 2^31: dx (+)= gelu'(x) dy, pairwise.
extern "C" __global__ void gelu_backward_bf16x2(u32 *dx, const u32 *dy, const u32 *x, int pairs, int accumulate) {
  pdl_entry();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < pairs; i += gridDim.x * blockDim.x) {
    const u32 xv = x[i], gv = dy[i];
    float lo = gelu_grad_f(bf_lo(xv)) * bf_lo(gv);
    float hi = gelu_grad_f(bf_hi(xv)) * bf_hi(gv);
    if (accumulate) {
      const u32 d = dx[i];
      lo = lo + bf_lo(d);
      hi = hi + bf_hi(d);
    }
    dx[i] = pack_bf2(lo, hi);
  }
}

// The three kernels above on 16-byte vectors (8 bfloat16; sizes and row widths multiples of 8,
// 16-byte aligned), same arithmetic per element. The pairwise forms moved 4 bytes per load and
// reached about half of the card's bandwidth (GELU backward: 220 us for 100M elements of three
// streams, against 125 us of traffic).
// The three take gelu_table_bf16's and gelu_grad_table_f32's tables (null: computed; the same
// results for every bf16 but NaNs: a lookup per element instead of erff, and expf for the backward,
// where the backward's 7 GB of a 16 x 2048 step's traffic was not all it waited on).
__device__ __forceinline__ bf16_t bf16_bits(float v) { return (bf16_t)(__float_as_uint(v) >> 16); }
extern "C" __global__ void bias_act_bf16x8(uint4 *c, int rows, int N, const void *bias, int hasBias, uint4 *pre, int hasPre, const bf16_t *tab) {
  pdl_entry();
  const int per = N >> 3, n = rows * per;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    float v[8];
    unpack8(v, c[i]);
    if (hasBias) {
      const int col = (i % per) * 8;
#pragma unroll
      for (int q = 0; q < 8; q++) v[q] = v[q] + ldx(bias, col + q, hasBias == 2);
    }
    if (hasPre) {
      const uint4 p = pack8(v);
      pre[i] = p;
      unpack8(v, p);
      if (tab) {
#pragma unroll
        for (int q = 0; q < 8; q++) v[q] = bf2f(__ldg(tab + bf16_bits(v[q])));
      } else {
#pragma unroll
        for (int q = 0; q < 8; q++) v[q] = gelu_f(v[q]);
      }
    }
    c[i] = pack8(v);
  }
}
extern "C" __global__ void gelu_bf16x8(uint4 *out, const uint4 *x, int n8, const bf16_t *tab) {
  pdl_entry();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += gridDim.x * blockDim.x) {
    float v[8];
    unpack8(v, x[i]);
    if (tab) {
#pragma unroll
      for (int q = 0; q < 8; q++) v[q] = bf2f(__ldg(tab + bf16_bits(v[q])));
    } else {
#pragma unroll
      for (int q = 0; q < 8; q++) v[q] = gelu_f(v[q]);
    }
    out[i] = pack8(v);
  }
}
extern "C" __global__ void gelu_backward_bf16x8(uint4 *dx, const uint4 *dy, const uint4 *x, int n8, int accumulate, const float *gradTab) {
  pdl_entry();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += gridDim.x * blockDim.x) {
    float xv[8], g[8];
    unpack8(xv, x[i]);
    unpack8(g, dy[i]);
    if (gradTab) {
#pragma unroll
      for (int q = 0; q < 8; q++) g[q] = __ldg(gradTab + bf16_bits(xv[q])) * g[q];
    } else {
#pragma unroll
      for (int q = 0; q < 8; q++) g[q] = gelu_grad_f(xv[q]) * g[q];
    }
    if (accumulate) {
      unpack8(xv, dx[i]);
#pragma unroll
      for (int q = 0; q < 8; q++) g[q] = g[q] + xv[q];
    }
    dx[i] = pack8(g);
  }
}

// ---- 16-byte-vector forms of the generic kernels above for bfloat16 activations ------------------
// The same arithmetic per element (so the same bits), 8 elements a thread and 32-bit indices: the
// generic kernels' per-element 64-bit index arithmetic made a 2,048 x 768 bf16 add or copy take
// 11-15 us where its 6-9 MB of traffic take ~3 (batch-1 sampling's input and output layers, H200).

// add_broadcast_f32 for bf16 out and x and a bf16 (yBf) or float32 y, R a multiple of 8 and 16-byte
// aligned operands: sizes in units of 8 elements. x + y in float32 is (float)((double)x + (double)y):
// both are float32 values, and rounding their exact sum through double first changes nothing.
extern "C" __global__ void add_broadcast_bf16x8(uint4 *out, const uint4 *x, const void *y, int P, int Q, int R8, int yP1, int yQ1, int yBf) {
  pdl_entry();
  const int n8 = P * Q * R8;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += gridDim.x * blockDim.x) {
    const int p = i / (Q * R8), q = (i / R8) % Q, r = i % R8;
    const int yo = (yP1 ? 0 : p) * (yQ1 ? 1 : Q) * R8 + (yQ1 ? 0 : q * R8) + r;
    float a[8], b[8];
    unpack8(a, x[i]);
    if (yBf) {
      unpack8(b, ((const uint4 *)y)[yo]);
    } else {
      const float4 lo = ((const float4 *)y)[2 * yo], hi = ((const float4 *)y)[2 * yo + 1];
      b[0] = lo.x, b[1] = lo.y, b[2] = lo.z, b[3] = lo.w, b[4] = hi.x, b[5] = hi.y, b[6] = hi.z, b[7] = hi.w;
    }
#pragma unroll
    for (int k = 0; k < 8; k++) a[k] = a[k] + b[k];
    out[i] = pack8(a);
  }
}

// strided_copy_f32 (no accumulation) for bf16 on both sides, everything in whole 16-byte vectors:
// length, offsets and strides in units of 8 elements.
extern "C" __global__ void strided_copy_bf16x8(uint4 *dst, const uint4 *src, int count, int len8, int srcOff8, int srcStride8, int dstOff8, int dstStride8) {
  pdl_entry();
  const int n8 = count * len8;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += gridDim.x * blockDim.x) {
    const int c = i / len8, j = i % len8;
    dst[dstOff8 + c * dstStride8 + j] = src[srcOff8 + c * srcStride8 + j];
  }
}

// activation_f32 for bf16 out and x (in double, as it): tanh, SiLU and the rest.
extern "C" __global__ void activation_bf16x8(uint4 *out, const uint4 *x, int n8, int kind) {
  pdl_entry();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += gridDim.x * blockDim.x) {
    float v[8];
    unpack8(v, x[i]);
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] = (float)act_d((double)v[k], kind);
    out[i] = pack8(v);
  }
}

// activation_backward_f32 for bf16 dx, dy and x (in double, as it): dx (+)= act'(x) dy. dx may
// alias dy (each thread reads its vector of both before writing it).
extern "C" __global__ void activation_backward_bf16x8(uint4 *dx, const uint4 *dy, const uint4 *x, int n8, int kind, int accumulate) {
  pdl_entry();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += gridDim.x * blockDim.x) {
    float xv[8], g[8], o[8];
    unpack8(xv, x[i]);
    unpack8(g, dy[i]);
    if (accumulate) unpack8(o, dx[i]);
#pragma unroll
    for (int k = 0; k < 8; k++) {
      const double v = act_grad_d((double)xv[k], kind) * (double)g[k];
      g[k] = accumulate ? (float)((double)o[k] + v) : (float)v;
    }
    dx[i] = pack8(g);
  }
}
