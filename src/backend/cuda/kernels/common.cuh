// Device helpers shared by every kernel file; nvrtc.ts puts this text in front of each .cu source
// (NVRTC has no include path). No standard headers: NVRTC provides the math functions, atomics and
// warp shuffles as built-ins.
//
// Conventions (see src/backend/cuda/backend.ts for the host side):
// - every kernel is extern "C" (unmangled names for cuModuleGetFunction);
// - element counts and offsets are 64-bit (i64); loops are grid-stride, so any grid size is valid;
// - float64 arithmetic where the CPU reference computes in JavaScript numbers (doubles), rounded to
//   float32 on store, so that results agree with it to float32 rounding (often bit for bit: the
//   module is compiled with --fmad=false, so a*b+c rounds twice, as in JavaScript);
// - row kernels use one block per row and blockDim.x a multiple of 32, at most 1024.

typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

// Programmatic dependent launch (sm_90, the host's MOE_DIFFUSEQ_PDL): a kernel may be launched
// while the one before it in the stream still runs; every kernel therefore starts with pdl_entry:
// wait until the previous grid has finished and its writes are visible (griddepcontrol.wait, a
// no-op for a kernel launched without the attribute), then let the next kernel's launch begin (its
// blocks wait in turn): the launch latency and block scheduling of a kernel overlap the tail of the
// one before instead of following it (~2,400 kernel boundaries in a batch-1 sampling run).
__device__ __forceinline__ void pdl_entry() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
#define GRID_STRIDE(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)(n); i += (i64)gridDim.x * blockDim.x)

#define FULL_MASK 0xffffffffu

// -infinity as bit patterns: NVRTC does not fold -1.0f / 0.0f under these options, and a division
// per use (a slow-path call for a zero divisor) cost the attention kernels most of their time
#define NEG_INF_F __int_as_float(0xff800000)
#define NEG_INF_D __longlong_as_double(0xfff0000000000000ll)

// ---- bfloat16 storage (the mixed-precision activations) -----------------------------------------
// A float tensor is float32 or bfloat16 (the high 16 bits of a float32). Kernels that accept either
// take `void *` and a mask `bf` whose bit j says that pointer j (as the kernel's comment numbers
// them) holds bfloat16; arithmetic stays float32 / float64, only loads and stores convert.
typedef unsigned short bf16_t;
__device__ __forceinline__ float bf2f(bf16_t h) { return __uint_as_float(((u32)h) << 16); }
// round to nearest even; a NaN stays a quiet NaN
__device__ __forceinline__ bf16_t f2bf(float x) {
  const u32 b = __float_as_uint(x);
  if ((b & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((b >> 16) | 0x40u);
  return (bf16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}
// two floats rounded to a bf16 pair (lo in the low half), round to nearest even: one instruction (sm_80+)
__device__ __forceinline__ u32 pack_bf2(float lo, float hi) {
  u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
// the low and high bfloat16 of a pair (pack_bf2's layout) as floats
__device__ __forceinline__ float bf_lo(u32 v) { return bf2f((bf16_t)(v & 0xffffu)); }
__device__ __forceinline__ float bf_hi(u32 v) { return bf2f((bf16_t)(v >> 16)); }
__device__ __forceinline__ float ldx(const void *p, i64 i, int bf) { return bf ? bf2f(((const bf16_t *)p)[i]) : ((const float *)p)[i]; }
__device__ __forceinline__ void stx(void *p, i64 i, float v, int bf) {
  if (bf) ((bf16_t *)p)[i] = f2bf(v);
  else ((float *)p)[i] = v;
}
#define BF(j) ((bf >> (j)) & 1)
// Four consecutive elements 4i .. 4i + 3 of a float32 (16-byte loads) or bfloat16 (8-byte) array,
// converted as ldx / stx convert one: the vector forms of the elementwise kernels.
__device__ __forceinline__ void ld4x(float v[4], const void *p, i64 i, int bf) {
  if (bf) {
    const uint2 w = ((const uint2 *)p)[i];
    v[0] = bf_lo(w.x);
    v[1] = bf_hi(w.x);
    v[2] = bf_lo(w.y);
    v[3] = bf_hi(w.y);
  } else {
    const float4 f = ((const float4 *)p)[i];
    v[0] = f.x;
    v[1] = f.y;
    v[2] = f.z;
    v[3] = f.w;
  }
}
__device__ __forceinline__ void st4x(void *p, i64 i, const float v[4], int bf) {
  if (bf) ((uint2 *)p)[i] = make_uint2((u32)f2bf(v[0]) | ((u32)f2bf(v[1]) << 16), (u32)f2bf(v[2]) | ((u32)f2bf(v[3]) << 16));
  else ((float4 *)p)[i] = make_float4(v[0], v[1], v[2], v[3]);
}
// Elements 2i and 2i + 1 of a float32 (8-byte loads) or bfloat16 (4-byte) array.
__device__ __forceinline__ void ld2x(float &v0, float &v1, const void *p, i64 i, int bf) {
  if (bf) {
    const u32 w = ((const u32 *)p)[i];
    v0 = bf_lo(w);
    v1 = bf_hi(w);
  } else {
    const float2 f = ((const float2 *)p)[i];
    v0 = f.x;
    v1 = f.y;
  }
}
// The eight bfloat16 of a 16-byte vector as floats, and back (f2bf each: stx's rounding).
__device__ __forceinline__ void unpack8(float v[8], uint4 w) {
  const u32 u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int j = 0; j < 4; j++) {
    v[2 * j] = bf_lo(u[j]);
    v[2 * j + 1] = bf_hi(u[j]);
  }
}
__device__ __forceinline__ uint4 pack8(const float v[8]) {
  u32 u[4];
#pragma unroll
  for (int j = 0; j < 4; j++) u[j] = (u32)f2bf(v[2 * j]) | ((u32)f2bf(v[2 * j + 1]) << 16);
  return make_uint4(u[0], u[1], u[2], u[3]);
}
// p advanced by `off` elements of its type
__device__ __forceinline__ const void *offx(const void *p, i64 off, int bf) { return bf ? (const void *)((const bf16_t *)p + off) : (const void *)((const float *)p + off); }
__device__ __forceinline__ void *offx(void *p, i64 off, int bf) { return bf ? (void *)((bf16_t *)p + off) : (void *)((float *)p + off); }

__device__ __forceinline__ double warp_sum_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}
__device__ __forceinline__ float warp_sum_f(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}
__device__ __forceinline__ double warp_max_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(FULL_MASK, v, o));
  return v;
}

// Sum over the block, returned to every thread. `sh` is __shared__ double[32]; the first
// __syncthreads keeps a previous call's readers of sh[0] safe from this call's writers. Inlined:
// as a call it made the cross-entropy kernels that hold their row in registers spill it around it.
__device__ __forceinline__ double block_sum_d(double v, double *sh) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_sum_d(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  if (w == 0) {
    double t = lane < nw ? sh[lane] : 0.0;
    t = warp_sum_d(t);
    if (lane == 0) sh[0] = t;
  }
  __syncthreads();
  return sh[0];
}

// Max over the block (as block_sum_d). -inf for an empty contribution.
__device__ __forceinline__ double block_max_d(double v, double *sh) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_max_d(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  if (w == 0) {
    double t = lane < nw ? sh[lane] : NEG_INF_D;
    t = warp_max_d(t);
    if (lane == 0) sh[0] = t;
  }
  __syncthreads();
  return sh[0];
}

// ---- the attention pattern (attention_tiled.cu, attention_mma.cu) --------------------------------
// May query row i see key row j? Globals see and are seen by all; local rows p, q see each other
// when |p - q| <= r w and r divides p - q. w < 0: full attention.
__device__ __forceinline__ bool at_allowed(int i, int j, int G, int w, int r) {
  if (w < 0 || i < G || j < G) return true;
  int dp = j - i;
  if (dp < 0) dp = -dp;
  return dp <= r * w && (r == 1 || dp % r == 0);
}

// The rows of the other side that rows [a0, a1] (inclusive) can reach: one range [0, S) when the
// tile holds a global row or the attention is full, else the globals [0, G) and the window range.
// The pattern is symmetric, so the same ranges serve queries -> keys and keys -> queries.
__device__ __forceinline__ int at_ranges(int a0, int a1, int S, int G, int w, int r, int *lo, int *hi) {
  if (w < 0 || a0 < G) {
    lo[0] = 0;
    hi[0] = S;
    return 1;
  }
  lo[0] = 0;
  hi[0] = G;
  lo[1] = max(G, a0 - r * w);
  hi[1] = min(S, a1 + r * w + 1);
  return 2;
}

// ---- Philox-4x32-10 (src/backend/philox.ts holds the stream layout every backend follows) ------
// Element n of stream `seed`: block c = n / 4 encrypted as ctr = [c lo, c hi, 0, 0] under
// key = [seed lo, seed hi]; word n % 4 of the result.
__device__ __forceinline__ void philox_block(u64 c, u32 k0, u32 k1, u32 out[4]) {
  u32 c0 = (u32)c, c1 = (u32)(c >> 32), c2 = 0u, c3 = 0u;
#pragma unroll
  for (int r = 0; r < 10; r++) {
    const u32 hi0 = __umulhi(0xd2511f53u, c0), lo0 = 0xd2511f53u * c0;
    const u32 hi1 = __umulhi(0xcd9e8d57u, c2), lo1 = 0xcd9e8d57u * c2;
    const u32 n0 = hi1 ^ c1 ^ k0;
    const u32 n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += 0x9e3779b9u;
    k1 += 0xbb67ae85u;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

// uniform in (0, 1), exact in float32: ((w >> 8) + 0.5) 2^-24
__device__ __forceinline__ double philox_uniform(u32 w) { return ((double)(w >> 8) + 0.5) * 5.9604644775390625e-8; }

// ---- GELU (erf form), in double, and in float32 for bfloat16 data -------------------------------
// (one bf16 rounding, 2^-9, dwarfs the error of erff)
__device__ __forceinline__ float gelu_f(float x) {
#ifdef WHATIF_NO_GELU
  return x;  // a benchmark's what-if (MOE_DIFFUSEQ_DEFINES): the time without GELU, wrong numbers
#endif
  return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
}
// GELU of a bf16 pair (pack_bf2's layout) rounded to a bf16 pair: from `tab` (gelu_table_bf16's
// 65,536 entries, one per bf16 input, the same bits) when given, else computed. A bf16 input has
// only 65,536 values, and erff was ~0.9 ms of a 21.5 ms batch-1 sampling run in fc1's epilogue
// (H200, v19): a lookup of two bytes per element, from a table that stays in L1 / L2, costs less.
__device__ __forceinline__ u32 gelu_pair(u32 v, const bf16_t *tab) {
  if (tab) return (u32)__ldg(tab + (v & 0xffffu)) | ((u32)__ldg(tab + (v >> 16)) << 16);
  return pack_bf2(gelu_f(bf_lo(v)), gelu_f(bf_hi(v)));
}
__device__ __forceinline__ float gelu_grad_f(float x) {
  return 0.5f * (1.0f + erff(x * 0.7071067811865476f)) + x * 0.3989422804014327f * expf(-0.5f * x * x);
}
__device__ __forceinline__ double gelu_d(double x) { return 0.5 * x * (1.0 + erf(x * 0.7071067811865476)); }
__device__ __forceinline__ double gelu_grad_d(double x) {
  return 0.5 * (1.0 + erf(x * 0.7071067811865476)) + x * 0.3989422804014327 * exp(-0.5 * x * x);
}

// ---- tensor cores and asynchronous copies (sm_80+: the mma attention and grouped GEMM kernels) ---
// The shared-space address of a pointer into shared memory: take it once per kernel and address
// shared memory as it plus constants (a conversion per ldmatrix / cp.async cost a 64-bit address
// computation each: half the grouped GEMM's instructions, ncu on the H200).
__device__ __forceinline__ u32 smem_addr(const void *p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}
// 16 bytes global -> shared, the bytes past `bytes` (0 or 16) zero-filled
__device__ __forceinline__ void cp_async16(u32 dst, const void *src, u32 bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// until at most N of this thread's newest copy groups are in flight
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
// The grouped products' multi-stage cp.async pipeline: one commit group per step, empty ones
// included, so that after step s's cp_async_wait<STAGES - 2> the groups still in flight are exactly
// those of the STAGES - 2 steps after it. `load(stage)` issues the next step's copies into a stage.
template <int STAGES, class Load>
__device__ __forceinline__ void cp_pipeline_start(int steps, Load &load) {
#pragma unroll
  for (int p = 0; p < STAGES - 1; p++) {
    if (p < steps) load(p);
    cp_async_commit();
  }
}
// At step s, after the barrier that frees step s - 1's stage: step s + STAGES - 1's copies into it.
template <int STAGES, class Load>
__device__ __forceinline__ void cp_pipeline_refill(int s, int steps, Load &load) {
  if (s + STAGES - 1 < steps) load((s + STAGES - 1) % STAGES);
  cp_async_commit();
}
// Four 8 x 8 bf16 matrices from shared memory (a shared-space address), lanes 8m..8m+7 addressing
// the rows of matrix m; lane L receives (row L / 4, columns 2 (L % 4), + 1) of each, or with the
// transposing form (rows 2 (L % 4), + 1, column L / 4).
__device__ __forceinline__ void ldsm_x4(u32 r[4], u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(u32 r[4], u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
// c += a b on the tensor cores (mma.sync m16n8k16, bf16 x bf16 -> f32)
__device__ __forceinline__ void mma_bf16(float *c, const u32 *a, u32 b0, u32 b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// The grouped products' grid (grouped_gemm.cu, grouped_wgmma.cu): expert after expert, each
// expert's rows in tiles of BM, each row tile in tilesN column tiles of BN. Block `blk`'s expert e,
// its rows r0 .. rEnd - 1 (rEnd: the expert's end) and first column n0; false past the last tile
// (a grid sized before the counts are known has spare blocks).
struct GroupedTile {
  int e, n0;
  i64 r0, rEnd;
};
__device__ __forceinline__ bool grouped_tile(GroupedTile &T, const int *off, int E, int BM, int BN, int tilesN, int blk) {
  int t = blk, e = 0;
  for (; e < E; e++) {
    const int tiles = (off[e + 1] - off[e] + BM - 1) / BM * tilesN;
    if (t < tiles) break;
    t -= tiles;
  }
  if (e == E) return false;
  T.e = e;
  T.r0 = (i64)off[e] + (i64)(t / tilesN) * BM;
  T.rEnd = off[e + 1];
  T.n0 = (t % tilesN) * BN;
  return true;
}

// ---- Hopper's warpgroup instructions (wgmma, sm_90a only: grouped_wgmma.cu, attention_mma.cu) ----
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// A wgmma shared-memory descriptor of a tile in 128-byte swizzled rows (16-byte chunk c of row r at
// chunk c ^ (r % 8)): start address, leading byte offset 16 (unused by these layouts), stride byte
// offset 1024 (eight 128-byte rows), 128-byte swizzle. The same descriptor serves a K-major operand
// (rows along M or N, 64 bf16 of K each; a k16 step moves the start 32 bytes) and an MN-major one
// (rows along K, 64 bf16 of N each, at most 64 wide; a k16 step moves it 16 rows, 2,048 bytes).
__device__ __forceinline__ u64 gw_desc(u32 addr) {
  return (u64)((addr & 0x3FFFF) >> 4) | ((u64)1 << 16) | ((u64)(1024 >> 4) << 32) | ((u64)1 << 62);
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
__device__ __forceinline__ void wg_wait1() { asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory"); }
// the copies (generic proxy) that wgmma (async proxy) is to read
__device__ __forceinline__ void wg_proxy_fence() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Pins a register in place for the compiler: wgmma writes its accumulators asynchronously, so reads
// after wg_wait0 and writes before wg_fence must not be moved across them.
__device__ __forceinline__ void wg_pin(float &x) { asm volatile("" : "+f"(x)::"memory"); }
#endif

// The grouped products' store of two adjacent outputs v0, v1 (bias added) at element `at` (even) of
// C, bf16 (`cbf`) or float32: with `gelu`, the pre-activation goes to `pre` in C's dtype and C gets
// GELU of the stored value (so a recomputation from pre gives the same bits).
__device__ __forceinline__ void store_pair_act(void *C, void *pre, i64 at, float v0, float v1, bool cbf, bool gelu) {
  if (gelu) {
    if (cbf) {
      const u32 pv = pack_bf2(v0, v1);
      ((u32 *)pre)[at >> 1] = pv;
      v0 = bf_lo(pv);
      v1 = bf_hi(pv);
    } else {
      ((float *)pre)[at] = v0;
      ((float *)pre)[at + 1] = v1;
    }
    v0 = gelu_f(v0);
    v1 = gelu_f(v1);
  }
  if (cbf) ((u32 *)C)[at >> 1] = pack_bf2(v0, v1);
  else {
    ((float *)C)[at] = v0;
    ((float *)C)[at + 1] = v1;
  }
}
