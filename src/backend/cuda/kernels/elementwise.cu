// Elementwise ops, broadcasts, block copies and the GEMM epilogue. One thread per output element
// (grid-stride), float64 arithmetic rounded to float32 on store (as the CPU reference computes).

// out = alpha x + beta y (y optional). out may alias x or y.
extern "C" __global__ void axpby_f32(float *out, const float *x, const float *y, int hasY, double alpha, double beta, i64 n) {
  GRID_STRIDE(i, n) {
    const double v = hasY ? alpha * (double)x[i] + beta * (double)y[i] : alpha * (double)x[i];
    out[i] = (float)v;
  }
}

extern "C" __global__ void mul_f32(float *out, const float *x, const float *y, i64 n) {
  GRID_STRIDE(i, n) out[i] = (float)((double)x[i] * (double)y[i]);
}

// out[p, q, r] = x[p, q, r] + y[p | 0, q | 0, r] (yP1 / yQ1: y has 1 in that dimension).
extern "C" __global__ void add_broadcast_f32(float *out, const float *x, const float *y, i64 P, i64 Q, i64 R, int yP1, int yQ1) {
  GRID_STRIDE(i, P * Q * R) {
    const i64 p = i / (Q * R), q = (i / R) % Q, r = i % R;
    const i64 yo = (yP1 ? 0 : p) * (yQ1 ? 1 : Q) * R + (yQ1 ? 0 : q * R) + r;
    out[i] = (float)((double)x[i] + (double)y[yo]);
  }
}

// dy[py, qy, r] (+)= sum over the broadcast dimensions of dout: one thread per dy element, summing
// in the CPU's order (p outer, q inner) with a float32 rounding per step, as its += on a
// Float32Array does, so the result is the CPU's bit for bit.
extern "C" __global__ void reduce_broadcast_f32(float *dy, const float *dout, i64 P, i64 Q, i64 R, int yP1, int yQ1, int accumulate) {
  const i64 yP = yP1 ? 1 : P, yQ = yQ1 ? 1 : Q;
  GRID_STRIDE(i, yP * yQ * R) {
    const i64 py = i / (yQ * R), qy = (i / R) % yQ, r = i % R;
    float g = accumulate ? dy[i] : 0.0f;
    const i64 p0 = yP1 ? 0 : py, p1 = yP1 ? P : py + 1;
    const i64 q0 = yQ1 ? 0 : qy, q1 = yQ1 ? Q : qy + 1;
    for (i64 p = p0; p < p1; p++)
      for (i64 q = q0; q < q1; q++) g = (float)((double)g + (double)dout[(p * Q + q) * R + r]);
    dy[i] = g;
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
extern "C" __global__ void strided_copy_f32(float *dst, const float *src, i64 count, i64 length, i64 srcOff, i64 srcStride, i64 dstOff, i64 dstStride, int accumulate) {
  strided_copy<float>(dst, src, count, length, srcOff, srcStride, dstOff, dstStride, accumulate);
}
extern "C" __global__ void strided_copy_i32(int *dst, const int *src, i64 count, i64 length, i64 srcOff, i64 srcStride, i64 dstOff, i64 dstStride, int accumulate) {
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
extern "C" __global__ void strided_reduce_f32(float *dst, const float *src, i64 count, i64 length, i64 srcOff, i64 srcStride, i64 dstOff) {
  strided_reduce<float>(dst, src, count, length, srcOff, srcStride, dstOff);
}
extern "C" __global__ void strided_reduce_i32(int *dst, const int *src, i64 count, i64 length, i64 srcOff, i64 srcStride, i64 dstOff) {
  strided_reduce<int>(dst, src, count, length, srcOff, srcStride, dstOff);
}

// out[r, c] (+)= scale[r] x[r, c]. out may alias x.
extern "C" __global__ void scale_rows_f32(float *out, const float *x, const float *scale, i64 R, i64 C, int accumulate) {
  GRID_STRIDE(i, R * C) {
    const double v = (double)scale[i / C] * (double)x[i];
    out[i] = accumulate ? (float)((double)out[i] + v) : (float)v;
  }
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

extern "C" __global__ void activation_f32(float *out, const float *x, i64 n, int kind) {
  GRID_STRIDE(i, n) out[i] = (float)act_d((double)x[i], kind);
}

// dx (+)= act'(x) dy. dx may alias dy.
extern "C" __global__ void activation_backward_f32(float *dx, const float *dy, const float *x, i64 n, int kind, int accumulate) {
  GRID_STRIDE(i, n) {
    const double g = act_grad_d((double)x[i], kind) * (double)dy[i];
    dx[i] = accumulate ? (float)((double)dx[i] + g) : (float)g;
  }
}

// GEMM epilogue on a rows x N block: c += bias (per column, float32 add); with pre: pre = c, c = gelu(c).
extern "C" __global__ void bias_act_f32(float *c, i64 rows, i64 N, const float *bias, int hasBias, float *pre, int hasPre) {
  GRID_STRIDE(i, rows * N) {
    float v = c[i];
    if (hasBias) v = v + bias[i % N];
    if (hasPre) {
      pre[i] = v;
      v = (float)gelu_d((double)v);
    }
    c[i] = v;
  }
}

// c = beta c (beta 0 writes zeros, never reading c): a product with an empty inner dimension.
extern "C" __global__ void scale_f32(float *c, i64 n, double beta) {
  GRID_STRIDE(i, n) c[i] = beta == 0.0 ? 0.0f : (float)(beta * (double)c[i]);
}

// float32 -> bfloat16 bits, round to nearest even (NaN stays a quiet NaN): the operands of the
// optional bf16 matrix products.
extern "C" __global__ void f32_to_bf16(unsigned short *out, const float *x, i64 n) {
  GRID_STRIDE(i, n) {
    const u32 b = __float_as_uint(x[i]);
    if ((b & 0x7fffffffu) > 0x7f800000u) out[i] = (unsigned short)((b >> 16) | 0x40u);
    else out[i] = (unsigned short)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
  }
}
