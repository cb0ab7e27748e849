// Forward noising (SPEC section 3) and its backward, and the AdamW step. Elementwise in float64
// arithmetic in the CPU reference's order, except dm (a sum over positions: float64 partial sums,
// so it agrees with the CPU's sequential float32 sum to rounding, not to the bit).

// Per position i of [B, N] (b = i / N), per channel c < e:
// x_t = z0 on sources (inputMask 0); m where replaceMask (and m given); else sa[b] (z0 - m) + sb[b] eps + m.
extern "C" __global__ void qsample_f32(float *xt, const float *z0, const float *eps, const float *m, int hasM, const float *sa, const float *sb,
                                       const int *inputMask, const int *replaceMask, i64 BN, i64 N, i64 e) {
  pdl_entry();
  GRID_STRIDE(idx, BN * e) {
    const i64 i = idx / e, c = idx % e;
    if (!inputMask[i]) xt[idx] = z0[idx];
    else if (replaceMask[i] && hasM) xt[idx] = m[c];
    else {
      const i64 b = i / N;
      const double ab = sa[b], nb = sb[b];
      const double mc = hasM ? (double)m[c] : 0.0;
      xt[idx] = (float)(ab * ((double)z0[idx] - mc) + nb * (double)eps[idx] + mc);
    }
  }
}

// dz0 += the part of dxt that flows to z0 (elementwise).
extern "C" __global__ void qsample_backward_dz_f32(float *dz0, const float *dxt, const float *sa, const int *inputMask, const int *replaceMask, int hasM,
                                                   i64 BN, i64 N, i64 e) {
  pdl_entry();
  GRID_STRIDE(idx, BN * e) {
    const i64 i = idx / e;
    if (!inputMask[i]) dz0[idx] = (float)((double)dz0[idx] + (double)dxt[idx]);
    else if (replaceMask[i] && hasM) continue;
    else dz0[idx] = (float)((double)dz0[idx] + (double)sa[i / N] * (double)dxt[idx]);
  }
}

// dm[c] += sum over target positions of dxt where replaced, (1 - sa) dxt elsewhere: the stage-1
// partial sums of reduce.cu's column sums (block (32, 8), 32 channels over one chunk of positions,
// float64, into partial[chunk][0][c]; partial[chunk][1][c] = 0), finished by col_sums_finish_f32.
// One thread per channel over every position took 6 ms of a 16 x 2048 training step.
extern "C" __global__ void qsample_backward_dm_partial(double *partial, const float *dxt, const float *sa, const int *inputMask, const int *replaceMask,
                                                       i64 BN, i64 N, i64 e, i64 rowsPerChunk) {
  pdl_entry();
  __shared__ double sh[8][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const i64 c = (i64)blockIdx.x * 32 + tx;
  const i64 chunk = blockIdx.y;
  const i64 r0 = chunk * rowsPerChunk, r1 = min(BN, r0 + rowsPerChunk);
  double g = 0.0;
  if (c < e) {
    for (i64 i = r0 + ty; i < r1; i += 8) {
      if (!inputMask[i]) continue;
      const double d = dxt[i * e + c];
      g += replaceMask[i] ? d : (1.0 - (double)sa[i / N]) * d;
    }
  }
  sh[ty][tx] = g;
  __syncthreads();
  if (ty == 0 && c < e) {
    for (int y = 1; y < 8; y++) g += sh[y][tx];
    partial[(chunk * 2) * e + c] = g;
    partial[(chunk * 2 + 1) * e + c] = 0.0;
  }
}

// One AdamW step (decoupled weight decay, bias-corrected), float64 as the CPU reference: the new
// moments are stored rounded but the update uses them unrounded.
// One element's AdamW step in float64 (the CPU's arithmetic, rounded once to float32).
__device__ __forceinline__ void adamw_one(float &p, float g, float &m, float &v, double beta1, double beta2, double lr, double eps, double bc1, double bc2,
                                          double decay) {
  const double gi = g;
  const double mi = beta1 * (double)m + (1.0 - beta1) * gi;
  const double vi = beta2 * (double)v + (1.0 - beta2) * gi * gi;
  m = (float)mi;
  v = (float)vi;
  p = (float)((double)p * decay - (lr * (mi / bc1)) / (sqrt(vi / bc2) + eps));
}
extern "C" __global__ void adamw_f32(float *p, const float *g, float *m, float *v, i64 n, double beta1, double beta2, double lr, double eps,
                                     double bc1, double bc2, double decay) {
  pdl_entry();
  GRID_STRIDE(i, n) adamw_one(p[i], g[i], m[i], v[i], beta1, beta2, lr, eps, bc1, bc2, decay);
}
// The same over n4 groups of four (16-byte aligned arrays): a step reads four and writes three
// streams of the parameters' size, so it is bound by memory; 4-byte accesses reached ~60% of the
// H200's bandwidth (2.5 ms for base's 286M parameters against 1.5 ms of traffic).
extern "C" __global__ void adamw_x4(float4 *p, const float4 *g, float4 *m, float4 *v, i64 n4, double beta1, double beta2, double lr, double eps,
                                    double bc1, double bc2, double decay) {
  pdl_entry();
  GRID_STRIDE(i, n4) {
    float4 pp = p[i], mm = m[i], vv = v[i];
    const float4 gg = g[i];
    adamw_one(pp.x, gg.x, mm.x, vv.x, beta1, beta2, lr, eps, bc1, bc2, decay);
    adamw_one(pp.y, gg.y, mm.y, vv.y, beta1, beta2, lr, eps, bc1, bc2, decay);
    adamw_one(pp.z, gg.z, mm.z, vv.z, beta1, beta2, lr, eps, bc1, bc2, decay);
    adamw_one(pp.w, gg.w, mm.w, vv.w, beta1, beta2, lr, eps, bc1, bc2, decay);
    p[i] = pp;
    m[i] = mm;
    v[i] = vv;
  }
}
