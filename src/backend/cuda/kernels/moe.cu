// Mixture-of-experts data movement and the router's backward. The routing itself (softmax, top-k,
// capacity, the expert order) runs on the host in float64 (src/backend/cpu/moe.ts) on logits copied
// back: M x E is small. These kernels use its outputs: order [A], slot [M k], gates [M, k].

// xs[a] = x[order[a] / k] (tokens permuted into expert order).
extern "C" __global__ void moe_permute_f32(float *xs, const float *x, const int *order, i64 A, i64 d, i64 k) {
  GRID_STRIDE(i, A * d) {
    const i64 a = i / d, c = i % d;
    xs[i] = x[((i64)order[a] / k) * d + c];
  }
}

// dx[m] (+)= sum of dxs over m's kept assignments, added in increasing expert-order row (the CPU's
// order, float32 rounding per step). One thread per element of dx; no atomics.
extern "C" __global__ void moe_permute_backward_f32(float *dx, const float *dxs, const int *slot, i64 M, i64 d, i64 k, int accumulate) {
  GRID_STRIDE(i, M * d) {
    const i64 m = i / d, c = i % d;
    float g = accumulate ? dx[i] : 0.0f;
    int prev = -1;
    for (i64 n = 0; n < k; n++) {
      // the next larger slot of this token (k is small: a selection pass per step)
      int nxt = -1;
      for (i64 r = 0; r < k; r++) {
        const int a = slot[m * k + r];
        if (a > prev && (nxt < 0 || a < nxt)) nxt = a;
      }
      if (nxt < 0) break;
      g = (float)((double)g + (double)dxs[(i64)nxt * d + c]);
      prev = nxt;
    }
    dx[i] = g;
  }
}

// y[m] (+)= sum_r gates[m, r] ys[slot[m k + r]] (rank order, float32 rounding per step).
extern "C" __global__ void moe_combine_f32(float *y, const float *ys, const float *gates, const int *slot, i64 M, i64 d, i64 k, int accumulate) {
  GRID_STRIDE(i, M * d) {
    const i64 m = i / d, c = i % d;
    float o = accumulate ? y[i] : 0.0f;
    for (i64 r = 0; r < k; r++) {
      const int a = slot[m * k + r];
      if (a < 0) continue;
      o = (float)((double)o + (double)gates[m * k + r] * (double)ys[(i64)a * d + c]);
    }
    y[i] = o;
  }
}

// dys[slot] = gate dy[m]; dgates[m, r] = dy[m] . ys[slot] (0 where dropped). One warp per (m, r).
extern "C" __global__ void moe_combine_backward_f32(float *dys, float *dgates, const float *dy, const float *ys, const float *gates, const int *slot,
                                                    i64 M, i64 d, i64 k) {
  const i64 warps = (i64)gridDim.x * (blockDim.x >> 5);
  const int lane = threadIdx.x & 31;
  for (i64 wi = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); wi < M * k; wi += warps) {
    const i64 m = wi / k;
    const int a = slot[wi];
    if (a < 0) {
      if (lane == 0) dgates[wi] = 0.0f;
      continue;
    }
    const double g = gates[wi];
    double dot = 0.0;
    for (i64 c = lane; c < d; c += 32) {
      const double dd = dy[m * d + c];
      dys[(i64)a * d + c] = (float)(g * dd);
      dot += dd * (double)ys[(i64)a * d + c];
    }
    dot = warp_sum_d(dot);
    if (lane == 0) dgates[wi] = (float)dot;
  }
}

// Router backward per token (float64, as src/backend/cpu/moe.ts routeBackward):
// dp[e] = sum_{r: idx[m, r] = e} (dg_r - sum_s dg_s g_s) / Z_m + dAux E f_e / M;
// dlogits[m, e] = p_e (dp_e - sum_e' dp_e' p_e') + (2 dZ lse_m / M) p_e.
__device__ __forceinline__ double route_dp(i64 m, i64 e, i64 E, i64 k, i64 M, const int *idx, const float *dgates, double s, double Z, const double *loadShare, double dAux) {
  double dp = 0.0;
  for (i64 r = 0; r < k; r++)
    if (idx[m * k + r] == e) dp += ((double)dgates[m * k + r] - s) / Z;
  if (dAux != 0.0) dp += (dAux * (double)E * loadShare[e]) / (double)M;
  return dp;
}
extern "C" __global__ void moe_route_backward_f32(float *dlogits, const float *probs, const float *lse, const int *expertIndex, const float *gates,
                                                  const float *gateNorm, const double *loadShare, const float *dgates, double dAux, double dZ,
                                                  i64 M, i64 E, i64 k) {
  GRID_STRIDE(m, M) {
    double s = 0.0;
    for (i64 r = 0; r < k; r++) s += (double)dgates[m * k + r] * (double)gates[m * k + r];
    const double Z = gateNorm[m];
    double dot = 0.0;
    for (i64 e = 0; e < E; e++) dot += route_dp(m, e, E, k, M, expertIndex, dgates, s, Z, loadShare, dAux) * (double)probs[m * E + e];
    const double zc = (dZ * 2.0 * (double)lse[m]) / (double)M;
    for (i64 e = 0; e < E; e++) {
      const double p = probs[m * E + e];
      const double dp = route_dp(m, e, E, k, M, expertIndex, dgates, s, Z, loadShare, dAux);
      dlogits[m * E + e] = (float)(p * (dp - dot) + zc * p);
    }
  }
}
