// Reductions: row kernels (one block per row, float64 sums), column sums (one thread per column,
// rows in order), whole-tensor sums, and the row argmax of the nearest-embedding searches.

// out[r] = sum_c (a[r, c] - b[r, c])^2 (b optional).
extern "C" __global__ void row_sq_dist_f32(float *out, const float *a, const float *b, int hasB, i64 R, i64 C) {
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
  __shared__ double sh[32];
  double s = 0.0;
  GRID_STRIDE(i, n) {
    const double v = isInt ? (double)((const int *)x)[i] : (double)((const float *)x)[i];
    s += squares ? v * v : v;
  }
  s = block_sum_d(s, sh);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// db[j] = (accumulate ? db[j] : 0) + sum_i dy[i, j], the sum in float64 over rows in order.
extern "C" __global__ void bias_backward_f32(float *db, const float *dy, i64 rows, i64 N, int accumulate) {
  GRID_STRIDE(j, N) {
    double acc = 0.0;
    for (i64 i = 0; i < rows; i++) acc += (double)dy[i * N + j];
    db[j] = (float)((accumulate ? (double)db[j] : 0.0) + acc);
  }
}

// db[j] += dy[i, j] row by row with a float32 rounding per step (the grouped matmul's bias
// gradient, which the CPU accumulates that way).
extern "C" __global__ void col_accumulate_f32(float *db, const float *dy, i64 rows, i64 N) {
  GRID_STRIDE(j, N) {
    float g = db[j];
    for (i64 i = 0; i < rows; i++) g = (float)((double)g + (double)dy[i * N + j]);
    db[j] = g;
  }
}

// Row softmax over C columns.
extern "C" __global__ void softmax_f32(float *out, const float *x, i64 R, i64 C) {
  __shared__ double sh[32];
  for (i64 r = blockIdx.x; r < R; r += gridDim.x) {
    const float *xr = x + r * C;
    double mx = -1.0 / 0.0;
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
  __shared__ double sh[32];
  for (i64 r = blockIdx.x; r < R; r += gridDim.x) {
    double dot = 0.0;
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) dot += (double)dy[r * C + c] * (double)y[r * C + c];
    dot = block_sum_d(dot, sh);
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) dx[r * C + c] = (float)((double)y[r * C + c] * ((double)dy[r * C + c] - dot));
  }
}

// LayerNorm over C: mean and rstd saved (float32), the output from the float64 statistics.
extern "C" __global__ void layernorm_f32(float *out, float *mean, float *rstd, const float *x, const float *w, const float *b, i64 R, i64 C, double eps) {
  __shared__ double sh[32];
  for (i64 r = blockIdx.x; r < R; r += gridDim.x) {
    const float *xr = x + r * C;
    double s = 0.0;
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) s += (double)xr[c];
    const double m = block_sum_d(s, sh) / (double)C;
    double v = 0.0;
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) {
      const double t = (double)xr[c] - m;
      v += t * t;
    }
    v = block_sum_d(v, sh);
    const double rs = 1.0 / sqrt(v / (double)C + eps);
    if (threadIdx.x == 0) {
      mean[r] = (float)m;
      rstd[r] = (float)rs;
    }
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) out[r * C + c] = (float)(((double)xr[c] - m) * rs * (double)w[c] + (double)b[c]);
  }
}

// dx (+)= rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), dxhat = dy w, from the saved statistics.
extern "C" __global__ void layernorm_backward_dx_f32(float *dx, const float *dy, const float *x, const float *w, const float *mean, const float *rstd,
                                                     i64 R, i64 C, int accumulate) {
  __shared__ double sh[32];
  for (i64 r = blockIdx.x; r < R; r += gridDim.x) {
    const double m = mean[r], s = rstd[r];
    double m1 = 0.0, m2 = 0.0;
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) {
      const double xh = ((double)x[r * C + c] - m) * s;
      const double dxh = (double)dy[r * C + c] * (double)w[c];
      m1 += dxh;
      m2 += dxh * xh;
    }
    m1 = block_sum_d(m1, sh) / (double)C;
    m2 = block_sum_d(m2, sh) / (double)C;
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) {
      const double xh = ((double)x[r * C + c] - m) * s;
      const double v = s * ((double)dy[r * C + c] * (double)w[c] - m1 - xh * m2);
      dx[r * C + c] = accumulate ? (float)((double)dx[r * C + c] + v) : (float)v;
    }
  }
}

// dweight[c] += dy xhat, dbias[c] += dy: one thread per column, rows in order, float32 rounding per
// step (the CPU's order and rounding).
extern "C" __global__ void layernorm_backward_dwb_f32(float *dw, float *db, const float *dy, const float *x, const float *mean, const float *rstd, i64 R, i64 C) {
  GRID_STRIDE(c, C) {
    float gw = dw[c], gb = db[c];
    for (i64 r = 0; r < R; r++) {
      const double d = dy[r * C + c];
      const double xh = ((double)x[r * C + c] - (double)mean[r]) * (double)rstd[r];
      gw = (float)((double)gw + d * xh);
      gb = (float)((double)gb + d);
    }
    dw[c] = gw;
    db[c] = gb;
  }
}

// Fused softmax cross-entropy per row of V logits: loss = lse - x[t]; with dlogits,
// dx = w (softmax(x) - onehot(t)).
extern "C" __global__ void cross_entropy_f32(float *loss, float *dlogits, int hasD, const float *logits, const int *targets, const float *weights, int hasW,
                                             i64 R, i64 V) {
  __shared__ double sh[32];
  for (i64 r = blockIdx.x; r < R; r += gridDim.x) {
    const float *xr = logits + r * V;
    double mx = -1.0 / 0.0;
    for (i64 c = threadIdx.x; c < V; c += blockDim.x) mx = fmax(mx, (double)xr[c]);
    mx = block_max_d(mx, sh);
    double s = 0.0;
    for (i64 c = threadIdx.x; c < V; c += blockDim.x) s += exp((double)xr[c] - mx);
    s = block_sum_d(s, sh);
    const double lse = mx + log(s);
    const int t = targets[r];
    if (threadIdx.x == 0) loss[r] = (float)(lse - (double)xr[t]);
    if (hasD) {
      const double w = hasW ? (double)weights[r] : 1.0;
      for (i64 c = threadIdx.x; c < V; c += blockDim.x) {
        float g = (float)(w * exp((double)xr[c] - lse));
        if (c == t) g = (float)((double)g - w);
        dlogits[r * V + c] = g;
      }
    }
  }
}

// half[v] = ||table[v]||^2 / 2 in float64 (the nearest-row search's offset).
extern "C" __global__ void half_sq_norms_f32(double *half, const float *table, i64 V, i64 e) {
  GRID_STRIDE(v, V) {
    double s = 0.0;
    for (i64 c = 0; c < e; c++) {
      const double t = table[v * e + c];
      s += t * t;
    }
    half[v] = s / 2.0;
  }
}

// out[row0 + i] = argmax_v (scores[i, v] - half[v]) over a chunk of n rows (ties: the lower v).
extern "C" __global__ void row_argmax_f32(int *out, const float *scores, const double *half, int useHalf, i64 n, i64 V, i64 row0) {
  __shared__ double sv[32];
  __shared__ long long si[32];
  for (i64 r = blockIdx.x; r < n; r += gridDim.x) {
    double best = -1.0 / 0.0;
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
