// Mixture-of-experts routing (the decision of src/backend/cpu/moe.ts, on the GPU), data movement and
// the router's backward. Routing outputs: probs [M, E], lse [M], expertIndex and gates [M, k],
// gateNorm [M], order [A] (kept assignments m k + r in expert order), slot [M k] (row in expert
// order, or -1 where the capacity dropped it).

// Router softmax in float64 and top-k by p (+ the selection bias), ties to the lower expert index,
// gates renormalised over the chosen. One thread per token. kept[m k + r] = 1 (capacity may clear it).
// The host runs it (and moe_route_stats) for E > 32 only; moe_route_lanes_f32 below does E <= 32.
extern "C" __global__ void moe_route_topk_f32(float *probs, float *lse, int *expertIndex, float *gates, float *gateNorm, int *kept, double *probs64,
                                              const float *logits, const float *bias, int hasBias, i64 M, i64 E, i64 k) {
  pdl_entry();
  GRID_STRIDE(m, M) {
    const float *x = logits + m * E;
    double *p = probs64 + m * E;
    double mx = NEG_INF_D;
    for (i64 e = 0; e < E; e++) mx = fmax(mx, (double)x[e]);
    double sum = 0.0;
    for (i64 e = 0; e < E; e++) {
      p[e] = exp((double)x[e] - mx);
      sum += p[e];
    }
    for (i64 e = 0; e < E; e++) {
      p[e] /= sum;
      probs[m * E + e] = (float)p[e];
    }
    lse[m] = (float)(mx + log(sum));
    double norm = 0.0;
    for (i64 r = 0; r < k; r++) {
      i64 best = -1;
      double bestScore = 0.0;
      for (i64 e = 0; e < E; e++) {
        bool taken = false;
        for (i64 q = 0; q < r; q++) taken |= expertIndex[m * k + q] == (int)e;
        if (taken) continue;
        const double sc = p[e] + (hasBias ? (double)bias[e] : 0.0);
        if (best < 0 || sc > bestScore) {
          best = e;
          bestScore = sc;
        }
      }
      expertIndex[m * k + r] = (int)best;
      norm += p[best];
      kept[m * k + r] = 1;
    }
    gateNorm[m] = (float)norm;
    for (i64 r = 0; r < k; r++) gates[m * k + r] = (float)(p[expertIndex[m * k + r]] / norm);
  }
}

// Per-block partial sums for the balance and z losses: partial[b][e] = sum of p[m, e],
// partial[b][E + e] = assignments to e (before capacity), partial[b][2E] = sum of lse_m^2, over the
// tokens m = b, b + gridDim.x, ... (block sums: deterministic; the host adds the blocks in order).
extern "C" __global__ void moe_route_stats(double *partial, const double *probs64, const float *logits, const int *expertIndex, i64 M, i64 E, i64 k) {
  pdl_entry();
  __shared__ double sh[32];
  double *out = partial + (i64)blockIdx.x * (2 * E + 1);
  for (i64 e = 0; e < E; e++) {
    double ps = 0.0, cnt = 0.0;
    for (i64 m = (i64)blockIdx.x * blockDim.x + threadIdx.x; m < M; m += (i64)gridDim.x * blockDim.x) {
      ps += probs64[m * E + e];
      for (i64 r = 0; r < k; r++) cnt += expertIndex[m * k + r] == (int)e ? 1.0 : 0.0;
    }
    ps = block_sum_d(ps, sh);
    cnt = block_sum_d(cnt, sh);
    if (threadIdx.x == 0) {
      out[e] = ps;
      out[E + e] = cnt;
    }
  }
  // lse recomputed in float64 from the logits (the stored lse is float32)
  double z = 0.0;
  for (i64 m = (i64)blockIdx.x * blockDim.x + threadIdx.x; m < M; m += (i64)gridDim.x * blockDim.x) {
    double mx = NEG_INF_D;
    for (i64 e = 0; e < E; e++) mx = fmax(mx, (double)logits[m * E + e]);
    double s = 0.0;
    for (i64 e = 0; e < E; e++) s += exp((double)logits[m * E + e] - mx);
    const double l = mx + log(s);
    z += l * l;
  }
  z = block_sum_d(z, sh);
  if (threadIdx.x == 0) out[2 * E] = z;
}

// moe_route_topk_f32 and moe_route_stats in one launch for E <= 32, G lanes per token (G the power
// of two >= E; lane e of a group holds expert e, lanes e >= E pad). One thread per token left 8 SMs
// busy at 2048 tokens with a serial chain of E exps and divides each (H200: about 10 us a call,
// the stats another 11 us). Bit for bit the outputs of moe_route_topk_f32: the max is exact in any
// order (the NEG_INF_D seed gives its result when every logit is NaN); the sum is added in expert
// order by every lane from the group's shuffled values (a tree would round differently); the top-k
// is its sequential scan: with the first open expert e0's score NaN nothing replaces e0, else the
// result is the lowest open expert whose score equals the max of the open non-NaN scores. The
// statistics are moe_route_stats' partial[b][2E + 1] over the tokens that block b routes, the z
// term from this float64 lse (the value moe_route_stats recomputes), added per lane in token order,
// then across the warp and the block's warps in a fixed order (no atomics: deterministic). blockDim.x a multiple of G and 32,
// at most 512 (the shared arrays).
template <int G>
__device__ __forceinline__ void moe_route_lanes(float *probs, float *lse, int *expertIndex, float *gates, float *gateNorm, int *kept, double *partial,
                                                const float *logits, const float *bias, int hasBias, i64 M, int E, int k, double *shp, double *shc,
                                                double *shz) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int e = lane & (G - 1);
  const int base = lane - e; // the group's first lane
  const u32 gmask = G == 32 ? FULL_MASK : ((1u << G) - 1u);
  const bool live = e < E;
  const double sb = hasBias && live ? (double)bias[e] : 0.0;
  const int T = blockDim.x / G; // tokens per block and pass
  double ps = 0.0, cnt = 0.0, zs = 0.0;
  // every thread of a block makes the same passes, so the full-warp shuffles see every lane
  for (i64 m0 = (i64)blockIdx.x * T; m0 < M; m0 += (i64)gridDim.x * T) {
    const i64 m = m0 + threadIdx.x / G;
    const bool valid = m < M, mine = valid && live;
    const double x = mine ? (double)logits[m * E + e] : NEG_INF_D;
    double mx = x;
#pragma unroll
    for (int o = G / 2; o > 0; o >>= 1) mx = fmax(mx, __shfl_xor_sync(FULL_MASK, mx, o));
    mx = fmax(NEG_INF_D, mx);
    double p = mine ? exp(x - mx) : 0.0;
    double s = 0.0;
#pragma unroll
    for (int j = 0; j < G; j++) {
      const double v = __shfl_sync(FULL_MASK, p, base + j);
      if (j < E) s += v;
    }
    p /= s;
    const double l = mx + log(s);
    if (mine) probs[m * E + e] = (float)p;
    // top-k: a pad lane is never open; a token past M picks from its garbage, stores nothing
    const double sc = p + sb;
    bool taken = !live;
    int rank = -1;
    double norm = 0.0;
    for (int r = 0; r < k; r++) {
      const int e0 = __ffs((__ballot_sync(FULL_MASK, !taken) >> base) & gmask) - 1;
      const double s0 = __shfl_sync(FULL_MASK, sc, base + e0);
      const bool cand = !taken && !isnan(sc);
      double top = cand ? sc : NEG_INF_D;
#pragma unroll
      for (int o = G / 2; o > 0; o >>= 1) top = fmax(top, __shfl_xor_sync(FULL_MASK, top, o));
      const u32 hit = (__ballot_sync(FULL_MASK, cand && sc == top) >> base) & gmask;
      const int best = isnan(s0) ? e0 : __ffs(hit) - 1;
      if (e == best) {
        taken = true;
        rank = r;
      }
      norm += __shfl_sync(FULL_MASK, p, base + best);
    }
    if (valid) {
      if (rank >= 0) {
        expertIndex[m * k + rank] = e;
        gates[m * k + rank] = (float)(p / norm);
        kept[m * k + rank] = 1;
      }
      if (e == 0) {
        lse[m] = (float)l;
        gateNorm[m] = (float)norm;
        zs += l * l;
      }
    }
    if (mine) {
      ps += p;
      if (rank >= 0) cnt += 1.0;
    }
  }
  // lane e of the warp gets the warp's sums for expert e (lane 0 the z sum), then thread e adds the warps'
#pragma unroll
  for (int o = G; o < 32; o <<= 1) {
    ps += __shfl_xor_sync(FULL_MASK, ps, o);
    cnt += __shfl_xor_sync(FULL_MASK, cnt, o);
    zs += __shfl_xor_sync(FULL_MASK, zs, o);
  }
  if (lane < G) {
    shp[w * 32 + lane] = ps;
    shc[w * 32 + lane] = cnt;
  }
  if (lane == 0) shz[w] = zs;
  __syncthreads();
  const int nw = blockDim.x >> 5;
  double *out = partial + (i64)blockIdx.x * (2 * E + 1);
  if ((int)threadIdx.x < E) {
    double a = 0.0, c = 0.0;
    for (int v = 0; v < nw; v++) {
      a += shp[v * 32 + threadIdx.x];
      c += shc[v * 32 + threadIdx.x];
    }
    out[threadIdx.x] = a;
    out[E + threadIdx.x] = c;
  }
  if (threadIdx.x == 0) {
    double z = 0.0;
    for (int v = 0; v < nw; v++) z += shz[v];
    out[2 * E] = z;
  }
}
// G = lanes per token (1, 2, 4, 8, 16 or 32, >= E). kept and the outputs as moe_route_topk_f32;
// partial[gridDim.x][2E + 1] as moe_route_stats (probs64 is not needed).
extern "C" __global__ void moe_route_lanes_f32(float *probs, float *lse, int *expertIndex, float *gates, float *gateNorm, int *kept, double *partial,
                                               const float *logits, const float *bias, int hasBias, i64 M, int E, int k, int G) {
  pdl_entry();
  __shared__ double shp[16 * 32], shc[16 * 32], shz[16];
#define MOE_ROUTE_LANES(g) moe_route_lanes<g>(probs, lse, expertIndex, gates, gateNorm, kept, partial, logits, bias, hasBias, M, E, k, shp, shc, shz)
  switch (G) {
  case 1: MOE_ROUTE_LANES(1); break;
  case 2: MOE_ROUTE_LANES(2); break;
  case 4: MOE_ROUTE_LANES(4); break;
  case 8: MOE_ROUTE_LANES(8); break;
  case 16: MOE_ROUTE_LANES(16); break;
  default: MOE_ROUTE_LANES(32); break;
  }
#undef MOE_ROUTE_LANES
}

// Capacity drops, per sequence (one block each, blockDim.x = 256): every first choice in token
// order, then every second choice, ...; an assignment past its expert's capacity C is dropped (kept
// 0, gate 0). Shared memory: used[E] and the chunk's experts.
extern "C" __global__ void moe_route_capacity(int *kept, float *gates, const int *expertIndex, i64 seqLen, i64 E, i64 k, i64 C) {
  pdl_entry();
  extern __shared__ int shm[];
  int *used = shm;
  int *ex = shm + E;
  const i64 s0 = (i64)blockIdx.x * seqLen;
  const int t = threadIdx.x;
  for (i64 e = t; e < E; e += blockDim.x) used[e] = 0;
  __syncthreads();
  for (i64 r = 0; r < k; r++) {
    for (i64 c0 = 0; c0 < seqLen; c0 += blockDim.x) {
      const i64 m = s0 + c0 + t;
      const bool valid = c0 + t < seqLen;
      const int e = valid ? expertIndex[m * k + r] : -1;
      ex[t] = e;
      __syncthreads();
      if (valid) {
        int before = 0;
        for (int q = 0; q < t; q++) before += ex[q] == e;
        if (used[e] + before >= C) {
          kept[m * k + r] = 0;
          gates[m * k + r] = 0.0f;
        }
      }
      __syncthreads();
      // used[e] += this chunk's assignments to e
      for (i64 x = t; x < E; x += blockDim.x) {
        int n = 0;
        for (int q = 0; q < (int)blockDim.x; q++) n += ex[q] == (int)x;
        used[x] += n;
      }
      __syncthreads();
    }
  }
}

// The expert order, a stable counting sort of the kept assignments a = m k + r by expert, in chunks
// of blockDim.x (256) assignments: (1) kept assignments per chunk and expert; (2) one thread per
// expert: the chunk offsets (expert start + earlier chunks) and the totals; (3) each assignment's
// row = its chunk offset + the kept assignments to its expert before it in the chunk.
extern "C" __global__ void moe_order_count(int *chunkCounts, const int *expertIndex, const int *kept, i64 A, i64 E) {
  pdl_entry();
  extern __shared__ int cnt[];
  for (i64 e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0;
  __syncthreads();
  const i64 a = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (a < A && kept[a]) atomicAdd(&cnt[expertIndex[a]], 1);
  __syncthreads();
  for (i64 e = threadIdx.x; e < E; e += blockDim.x) chunkCounts[(i64)blockIdx.x * E + e] = cnt[e];
}
extern "C" __global__ void moe_order_scan(int *chunkOffsets, int *totals, const int *chunkCounts, i64 chunks, i64 E) {
  pdl_entry();
  for (i64 e = threadIdx.x; e < E; e += blockDim.x) {
    int s = 0;
    for (i64 c = 0; c < chunks; c++) s += chunkCounts[c * E + e];
    totals[e] = s;
  }
  __syncthreads();
  for (i64 e = threadIdx.x; e < E; e += blockDim.x) {
    int s = 0;
    for (i64 x = 0; x < e; x++) s += totals[x];
    for (i64 c = 0; c < chunks; c++) {
      chunkOffsets[c * E + e] = s;
      s += chunkCounts[c * E + e];
    }
  }
}
extern "C" __global__ void moe_order_place(int *order, int *slot, const int *expertIndex, const int *kept, const int *chunkOffsets, i64 A, i64 E) {
  pdl_entry();
  __shared__ int ex[256];
  const int t = threadIdx.x;
  const i64 a = (i64)blockIdx.x * blockDim.x + t;
  const int e = (a < A && kept[a]) ? expertIndex[a] : -1;
  ex[t] = e;
  __syncthreads();
  if (a >= A) return;
  if (e < 0) {
    slot[a] = -1;
    return;
  }
  int before = 0;
  for (int q = 0; q < t; q++) before += ex[q] == e;
  const int pos = chunkOffsets[(i64)blockIdx.x * E + e] + before;
  order[pos] = (int)a;
  slot[a] = pos;
}

// moe_order_count, moe_order_scan and moe_order_place in one block of 1,024 threads, for dropless
// routings of at most MOE_ORDER_SMALL assignments and E <= 32 (batch-1 sampling: 4,128): the three
// launches, a device-to-device copy and a memset took ~11 us a layer for a few thousand numbers.
// Also writes the experts' row offsets [E + 1] (their starts, then the kept total). The same stable
// counting sort: an assignment's row = its expert's start + that expert's kept assignments before
// it (in earlier chunks of 1,024, earlier warps of its chunk, earlier lanes of its warp: ballots).
// Every chunk's per-warp counts are kept (16-bit, 32 KiB), so the prefix over (chunk, warp) is one
// pass and the block meets three barriers, not three a chunk (the chunk-by-chunk form: ~9 us a
// call at 4,096 assignments, H200 ncu, v19 trace).
#define MOE_ORDER_SMALL 16384
extern "C" __global__ void __launch_bounds__(1024) moe_order_small(int *order, int *slot, int *totals, int *offsets, const int *expertIndex, const int *kept, int A,
                                                                  int E) {
  pdl_entry();
  constexpr int CHUNKS = MOE_ORDER_SMALL / 1024;
  // [chunk][warp][expert]: the warp's kept assignments of the expert in the chunk, then in place
  // their exclusive prefix in (chunk, warp) order within the expert (at most MOE_ORDER_SMALL)
  __shared__ unsigned short cw[CHUNKS][32][32];
  __shared__ int start[32];  // [expert]: its total, then its first row
  const int t = threadIdx.x, lane = t & 31, w = t >> 5;
  const int chunks = (A + 1023) >> 10;
  // this thread's assignment of every chunk (-1: dropped or none), loaded at once: one memory
  // latency instead of one per chunk and pass
  int ex[CHUNKS];
#pragma unroll
  for (int j = 0; j < CHUNKS; j++) {
    const int a = (j << 10) + t;
    const bool in = j < chunks && a < A;
    const int k = in ? kept[a] : 0, x = in ? expertIndex[a] : -1;
    ex[j] = k ? x : -1;
  }
  // pass 1: each chunk's kept assignments per warp and expert (lane x of the warp writes expert
  // x's), and each thread's mask of the lanes of its warp with its expert
  u32 same[CHUNKS];
#pragma unroll
  for (int j = 0; j < CHUNKS; j++) {
    same[j] = 0;
    if (j >= chunks) continue;  // the same for the whole block
    for (int x = 0; x < E; x++) {
      const u32 b = __ballot_sync(FULL_MASK, ex[j] == x);
      if (ex[j] == x) same[j] = b;
      if (lane == x) cw[j][w][x] = (unsigned short)__popc(b);
    }
  }
  __syncthreads();
  // warp x: the exclusive prefix of expert x's counts over (chunk, warp), lane = warp, and its total
  if (w < E) {
    int running = 0;
    for (int j = 0; j < chunks; j++) {
      const int c = cw[j][lane][w];
      int incl = c;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_up_sync(FULL_MASK, incl, o);
        if (lane >= o) incl += y;
      }
      cw[j][lane][w] = (unsigned short)(running + incl - c);
      running += __shfl_sync(FULL_MASK, incl, 31);
    }
    if (lane == 0) {
      totals[w] = running;
      start[w] = running;
    }
  }
  __syncthreads();
  // warp 0: the experts' starts (exclusive prefix of the totals) and the kept total
  if (w == 0) {
    const int c = lane < E ? start[lane] : 0;
    int incl = c;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(FULL_MASK, incl, o);
      if (lane >= o) incl += y;
    }
    if (lane < E) {
      start[lane] = incl - c;
      offsets[lane] = incl - c;
    }
    if (lane == E - 1) offsets[E] = incl;
  }
  __syncthreads();
  // pass 2: place
#pragma unroll
  for (int j = 0; j < CHUNKS; j++) {
    if (j >= chunks) break;
    const int a = (j << 10) + t, e = ex[j];
    if (a >= A) continue;
    if (e >= 0) {
      const int pos = start[e] + cw[j][w][e] + __popc(same[j] & ((1u << lane) - 1u));
      order[pos] = a;
      slot[a] = pos;
    } else {
      slot[a] = -1;
    }
  }
}

// xs[a] = x[order[a] / k] (tokens permuted into expert order).
// bf: xs 0, x 1.
extern "C" __global__ void moe_permute_f32(void *xs, const void *x, const int *order, i64 A, i64 d, i64 k, int bf) {
  pdl_entry();
  GRID_STRIDE(i, A * d) {
    const i64 a = i / d, c = i % d;
    stx(xs, i, ldx(x, ((i64)order[a] / k) * d + c, BF(1)), BF(0));
  }
}

// The smallest of token m's k slots above `prev` (-1: none left): its kept assignments in increasing
// expert-order row, one selection pass per step (k is small).
__device__ __forceinline__ int moe_next_slot(const int *slot, i64 m, int k, int prev) {
  int nxt = -1;
  for (int r = 0; r < k; r++) {
    const int a = slot[m * k + r];
    if (a > prev && (nxt < 0 || a < nxt)) nxt = a;
  }
  return nxt;
}

// dx[m] (+)= sum of dxs over m's kept assignments, added in increasing expert-order row (the CPU's
// order, float32 rounding per step). One thread per element of dx; no atomics.
// bf: dx 0, dxs 1.
extern "C" __global__ void moe_permute_backward_f32(void *dx, const void *dxs, const int *slot, i64 M, i64 d, i64 k, int accumulate, int bf) {
  pdl_entry();
  GRID_STRIDE(i, M * d) {
    const i64 m = i / d, c = i % d;
    float g = accumulate ? ldx(dx, i, BF(0)) : 0.0f;
    for (int a = moe_next_slot(slot, m, (int)k, -1); a >= 0; a = moe_next_slot(slot, m, (int)k, a))
      g = (float)((double)g + (double)ldx(dxs, (i64)a * d + c, BF(1)));
    stx(dx, i, g, BF(0));
  }
}

// y[m] (+)= sum_r gates[m, r] ys[slot[m k + r]] (rank order, float32 rounding per step).
// bf: y 0, ys 1 (gates float32).
extern "C" __global__ void moe_combine_f32(void *y, const void *ys, const float *gates, const int *slot, i64 M, i64 d, i64 k, int accumulate, int bf) {
  pdl_entry();
  GRID_STRIDE(i, M * d) {
    const i64 m = i / d, c = i % d;
    float o = accumulate ? ldx(y, i, BF(0)) : 0.0f;
    for (i64 r = 0; r < k; r++) {
      const int a = slot[m * k + r];
      if (a < 0) continue;
      o = (float)((double)o + (double)gates[m * k + r] * (double)ldx(ys, (i64)a * d + c, BF(1)));
    }
    stx(y, i, o, BF(0));
  }
}

// dys[slot] = gate dy[m]; dgates[m, r] = dy[m] . ys[slot] (0 where dropped). One warp per (m, r).
// bf: dys 0, dy 1, ys 2 (dgates and gates float32).
extern "C" __global__ void moe_combine_backward_f32(void *dys, float *dgates, const void *dy, const void *ys, const float *gates, const int *slot,
                                                    i64 M, i64 d, i64 k, int bf) {
  pdl_entry();
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
      const double dd = ldx(dy, m * d + c, BF(1));
      stx(dys, (i64)a * d + c, (float)(g * dd), BF(0));
      dot += dd * (double)ldx(ys, (i64)a * d + c, BF(2));
    }
    dot = warp_sum_d(dot);
    if (lane == 0) dgates[wi] = (float)dot;
  }
}

// ---- bfloat16 rows as 16-byte vectors ------------------------------------------------------------
// The four kernels above for bfloat16 tensors whose rows are dv = d / 8 vectors of eight (16-byte
// aligned bases, fewer than 2^31 vectors): one thread per vector with 32-bit indices, the same
// arithmetic per element, so the same results. The element kernels' 64-bit division per element
// made them several times slower than their memory traffic (H200 ncu: 0.27 ms a permute of a base
// layer at 16 x 2048, about 0.05 ms of traffic).
// The eight floats an output vector starts from: its current values with `accumulate`, else zeros.
__device__ __forceinline__ void moe_start8(float v[8], const uint4 *p, int i, int accumulate) {
  if (accumulate) unpack8(v, p[i]);
  else
#pragma unroll
    for (int j = 0; j < 8; j++) v[j] = 0.0f;
}
extern "C" __global__ void moe_permute_bf16v(uint4 *xs, const uint4 *x, const int *order, int A, int dv, int k) {
  pdl_entry();
  const int n = A * dv;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int a = i / dv, c = i - a * dv;
    xs[i] = x[(i64)(order[a] / k) * dv + c];
  }
}
extern "C" __global__ void moe_permute_backward_bf16v(uint4 *dx, const uint4 *dxs, const int *slot, int M, int dv, int k, int accumulate) {
  pdl_entry();
  const int n = M * dv;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int m = i / dv, c = i - m * dv;
    float g[8];
    moe_start8(g, dx, i, accumulate);
    for (int a = moe_next_slot(slot, m, k, -1); a >= 0; a = moe_next_slot(slot, m, k, a)) {
      float v[8];
      unpack8(v, dxs[(i64)a * dv + c]);
#pragma unroll
      for (int j = 0; j < 8; j++) g[j] = (float)((double)g[j] + (double)v[j]);
    }
    dx[i] = pack8(g);
  }
}
extern "C" __global__ void moe_combine_bf16v(uint4 *y, const uint4 *ys, const float *gates, const int *slot, int M, int dv, int k, int accumulate) {
  pdl_entry();
  const int n = M * dv;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int m = i / dv, c = i - m * dv;
    float o[8];
    moe_start8(o, y, i, accumulate);
    for (int r = 0; r < k; r++) {
      const int a = slot[(i64)m * k + r];
      if (a < 0) continue;
      const double g = gates[(i64)m * k + r];
      float v[8];
      unpack8(v, ys[(i64)a * dv + c]);
#pragma unroll
      for (int j = 0; j < 8; j++) o[j] = (float)((double)o[j] + g * (double)v[j]);
    }
    y[i] = pack8(o);
  }
}
// One warp per (m, r) as moe_combine_backward_f32; the dot product's float64 terms are added in a
// different order (lane by vector), so dgates agrees with it to float64 rounding, not bit for bit.
extern "C" __global__ void moe_combine_backward_bf16v(uint4 *dys, float *dgates, const uint4 *dy, const uint4 *ys, const float *gates, const int *slot,
                                                      int M, int dv, int k) {
  pdl_entry();
  const int warps = gridDim.x * (blockDim.x >> 5);
  const int lane = threadIdx.x & 31;
  for (int wi = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); wi < M * k; wi += warps) {
    const int m = wi / k;
    const int a = slot[wi];
    if (a < 0) {
      if (lane == 0) dgates[wi] = 0.0f;
      continue;
    }
    const double g = gates[wi];
    double dot = 0.0;
    for (int c = lane; c < dv; c += 32) {
      float dd[8], yv[8], o[8];
      unpack8(dd, dy[(i64)m * dv + c]);
      unpack8(yv, ys[(i64)a * dv + c]);
#pragma unroll
      for (int j = 0; j < 8; j++) {
        o[j] = (float)(g * (double)dd[j]);
        dot += (double)dd[j] * (double)yv[j];
      }
      dys[(i64)a * dv + c] = pack8(o);
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
  pdl_entry();
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
