// Sliding-window + global-token attention (SPEC section 2), forward and backward, straight from
// the CPU reference's algorithm (src/backend/cpu/attention.ts): one warp per query row (b, h, i),
// lanes across the head dimension. Never S^2 memory: the backward recomputes the probabilities
// from the saved log-sum-exp. Correctness first: no tiling, dK/dV by atomicAdd.
//
// Layout: qkv [B, S, 3d] (q | k | v in each row, d = H dh), out [B, S, d], lse [B, H, S].
// Rows 0..G-1 are global (attend to all S rows). A local row i (p = i - G) attends the globals,
// then the positions p + r k for k = -w..w inside [0, N), N = S - G. window < 0: full attention.

// Number of keys of row i; for a local row also the first valid k (kmin).
__device__ __forceinline__ int attn_keys(int i, int S, int G, int w, int r, int *kmin) {
  *kmin = 0;
  if (w < 0 || i < G) return S;
  const int N = S - G, p = i - G;
  // p + r k >= 0  <=>  k >= -floor(p / r);  p + r k <= N - 1  <=>  k <= floor((N - 1 - p) / r)
  const int lo = max(-w, -(p / r)), hi = min(w, (N - 1 - p) / r);
  *kmin = lo;
  return G + max(0, hi - lo + 1);
}
// Row index of key t of row i (same order as keysOf: globals first, then k increasing).
__device__ __forceinline__ int attn_key(int t, int i, int G, int w, int r, int kmin) {
  if (w < 0 || i < G || t < G) return t;
  return G + (i - G) + r * (kmin + t - G);
}

// Dynamic shared memory: per warp, q (dh floats) and the output accumulator (dh floats).
extern "C" __global__ void attn_fwd_f32(float *out, float *lse, const float *qkv, int B, int S, int H, int dh, int G, int window, int dilation, float scale) {
  pdl_entry();
  extern __shared__ float smem[];
  const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5, wpb = blockDim.x >> 5;
  float *sq = smem + (i64)wib * 2 * dh;
  float *acc = sq + dh;
  const int d = H * dh;
  const i64 rows = (i64)B * H * S;
  for (i64 row = (i64)blockIdx.x * wpb + wib; row < rows; row += (i64)gridDim.x * wpb) {
    const int i = (int)(row % S);
    const int bh = (int)(row / S);
    const int b = bh / H, h = bh % H;
    const float *base = qkv + (i64)b * S * 3 * d;
    const float *q = base + (i64)i * 3 * d + h * dh;
    for (int x = lane; x < dh; x += 32) {
      sq[x] = q[x];
      acc[x] = 0.0f;
    }
    __syncwarp();
    int kmin;
    const int nk = attn_keys(i, S, G, window, dilation, &kmin);
    // pass 1: the max score
    float mx = NEG_INF_F;
    for (int t = 0; t < nk; t++) {
      const float *kr = base + (i64)attn_key(t, i, G, window, dilation, kmin) * 3 * d + d + h * dh;
      float s = 0.0f;
      for (int x = lane; x < dh; x += 32) s += sq[x] * kr[x];
      s = warp_sum_f(s) * scale;
      mx = fmaxf(mx, s);
    }
    // pass 2: exp, sum and the weighted values (normalised at the end)
    float sum = 0.0f;
    for (int t = 0; t < nk; t++) {
      const int j = attn_key(t, i, G, window, dilation, kmin);
      const float *kr = base + (i64)j * 3 * d + d + h * dh;
      float s = 0.0f;
      for (int x = lane; x < dh; x += 32) s += sq[x] * kr[x];
      s = warp_sum_f(s) * scale;
      const float e = (float)exp((double)(s - mx));
      sum += e;
      const float *vr = kr + d;
      for (int x = lane; x < dh; x += 32) acc[x] += e * vr[x];
    }
    const float inv = 1.0f / sum;
    float *o = out + ((i64)b * S + i) * d + h * dh;
    for (int x = lane; x < dh; x += 32) o[x] = acc[x] * inv;
    if (lane == 0) lse[row] = mx + (float)log((double)sum);
    __syncwarp();
  }
}

// Backward; dqkv must be zeroed by the caller. D_i = dout_i . out_i; p_ij = exp(s_ij - lse_i);
// dv_j += p_ij dout_i; ds_ij = p_ij (dout_i . v_j - D_i) scale; dq_i += ds_ij k_j; dk_j += ds_ij q_i.
// dq_i belongs to this warp alone; dk_j and dv_j are shared between query rows (atomicAdd).
// Dynamic shared memory: per warp q, dout and the dq accumulator (3 dh floats).
extern "C" __global__ void attn_bwd_f32(float *dqkv, const float *dout, const float *qkv, const float *out, const float *lse, int B, int S, int H, int dh,
                                        int G, int window, int dilation, float scale) {
  pdl_entry();
  extern __shared__ float smem[];
  const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5, wpb = blockDim.x >> 5;
  float *sq = smem + (i64)wib * 3 * dh;
  float *sdo = sq + dh;
  float *dq = sdo + dh;
  const int d = H * dh;
  const i64 rows = (i64)B * H * S;
  for (i64 row = (i64)blockIdx.x * wpb + wib; row < rows; row += (i64)gridDim.x * wpb) {
    const int i = (int)(row % S);
    const int bh = (int)(row / S);
    const int b = bh / H, h = bh % H;
    const float *base = qkv + (i64)b * S * 3 * d;
    float *dbase = dqkv + (i64)b * S * 3 * d;
    const float *q = base + (i64)i * 3 * d + h * dh;
    const float *o = out + ((i64)b * S + i) * d + h * dh;
    const float *g = dout + ((i64)b * S + i) * d + h * dh;
    float Di = 0.0f;
    for (int x = lane; x < dh; x += 32) {
      sq[x] = q[x];
      sdo[x] = g[x];
      dq[x] = 0.0f;
      Di += g[x] * o[x];
    }
    Di = warp_sum_f(Di);
    __syncwarp();
    const float l = lse[row];
    int kmin;
    const int nk = attn_keys(i, S, G, window, dilation, &kmin);
    for (int t = 0; t < nk; t++) {
      const int j = attn_key(t, i, G, window, dilation, kmin);
      const float *kr = base + (i64)j * 3 * d + d + h * dh;
      const float *vr = kr + d;
      float s = 0.0f, dp = 0.0f;
      for (int x = lane; x < dh; x += 32) {
        s += sq[x] * kr[x];
        dp += sdo[x] * vr[x];
      }
      s = warp_sum_f(s);
      dp = warp_sum_f(dp);
      const float p = (float)exp((double)(s * scale - l));
      const float ds = p * (dp - Di) * scale;
      float *dk = dbase + (i64)j * 3 * d + d + h * dh;
      float *dv = dk + d;
      for (int x = lane; x < dh; x += 32) {
        atomicAdd(dv + x, p * sdo[x]);
        dq[x] += ds * kr[x];
        atomicAdd(dk + x, ds * sq[x]);
      }
    }
    float *dqo = dbase + (i64)i * 3 * d + h * dh;
    for (int x = lane; x < dh; x += 32) dqo[x] = dq[x];
    __syncwarp();
  }
}
