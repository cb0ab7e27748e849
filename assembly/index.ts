// CPU compute kernels in AssemblyScript, compiled to WebAssembly with SIMD (f32x4) and threads
// (shared memory). Why AssemblyScript: it compiles in the package's build step from npm alone
// (no Rust/C toolchain on a user's machine), its SIMD intrinsics map 1:1 to wasm instructions, and
// Binaryen optimises the result. Every kernel takes raw byte offsets into the one shared linear memory
// the TypeScript allocator manages (src/backend/cpu/memory.ts), plus (tid, nth): the caller runs the
// same call on nth threads and each computes its own slice, so no kernel needs a lock.
//
// Kernels (each checked against the TypeScript reference loops in test/backend/):
//   gemm_f32        C = alpha op(A) op(B) + beta C, strided (transposes are strides), batched
//   bias_act_f32    C += bias (per column), optionally GELU(erf) with the pre-activation saved
//   attn_fwd_f32    sliding-window + global-token (or full) attention forward, saves log-sum-exp
//   attn_bwd_f32    its backward (recomputes probabilities from the log-sum-exp, FlashAttention style)

export const HEAP_BASE: usize = __heap_base;

// ------------------------------------------------------------------------------------------------
// GEMM. Goto-style blocking: B packed into KC x 8 column panels (L1), A into MC x KC row panels of 4
// (L2), a 4x8 register tile (8 f32x4 accumulators). 4x8 was measured fastest under V8: larger
// tiles (6x8, 4x12, 8x8) spill xmm registers and ran 35-45% slower; unrolling K also ran slower.
// ------------------------------------------------------------------------------------------------
const MR: i32 = 4;
const NR: i32 = 8;
const KC: i32 = 256;
const MC: i32 = 64;
const NC: i32 = 480;
/** Bytes of workspace one thread needs (packed A block + packed B block + a 4x8 edge tile). */
export const GEMM_WS_BYTES: i32 = (MC * KC + KC * (NC + NR) + MR * NR) * 4;

// Packs rows [i0, i0+mc) x cols [k0, k0+kc) of A (element (i,k) at a + 4(i sam + k sak)) into
// panels of MR rows: dst[(p kc + k) MR + r]; rows past mc are zero.
function packA(a: usize, sam: i32, sak: i32, mc: i32, kc: i32, dst: usize): void {
  for (let i = 0; i < mc; i += MR) {
    const h = min(MR, mc - i);
    let d = dst + ((<usize>i * kc) << 2);
    if (h == MR && sam == 1) {
      // transposed A: the 4 rows of a k are contiguous
      for (let k = 0; k < kc; k++) {
        v128.store(d, v128.load(a + ((<usize>i + <usize>k * sak) << 2)));
        d += 16;
      }
    } else if (h == MR && sak == 1) {
      // rows contiguous in k: load 4 k of each of the 4 rows, transpose 4x4 in registers
      const r0 = a + ((<usize>i * sam) << 2);
      const r1 = r0 + ((<usize>sam) << 2);
      const r2 = r1 + ((<usize>sam) << 2);
      const r3 = r2 + ((<usize>sam) << 2);
      let k = 0;
      for (; k + 4 <= kc; k += 4) {
        const o = <usize>k << 2;
        const x0 = v128.load(r0 + o), x1 = v128.load(r1 + o), x2 = v128.load(r2 + o), x3 = v128.load(r3 + o);
        const t0 = v128.shuffle<f32>(x0, x1, 0, 4, 1, 5); // a0 b0 a1 b1
        const t1 = v128.shuffle<f32>(x2, x3, 0, 4, 1, 5); // c0 d0 c1 d1
        const t2 = v128.shuffle<f32>(x0, x1, 2, 6, 3, 7); // a2 b2 a3 b3
        const t3 = v128.shuffle<f32>(x2, x3, 2, 6, 3, 7); // c2 d2 c3 d3
        v128.store(d, v128.shuffle<f32>(t0, t1, 0, 1, 4, 5));
        v128.store(d, v128.shuffle<f32>(t0, t1, 2, 3, 6, 7), 16);
        v128.store(d, v128.shuffle<f32>(t2, t3, 0, 1, 4, 5), 32);
        v128.store(d, v128.shuffle<f32>(t2, t3, 2, 3, 6, 7), 48);
        d += 64;
      }
      for (; k < kc; k++) {
        const o = <usize>k << 2;
        store<f32>(d, load<f32>(r0 + o));
        store<f32>(d, load<f32>(r1 + o), 4);
        store<f32>(d, load<f32>(r2 + o), 8);
        store<f32>(d, load<f32>(r3 + o), 12);
        d += 16;
      }
    } else if (h == MR) {
      const r0 = a + ((<usize>i * sam) << 2);
      const r1 = r0 + ((<usize>sam) << 2);
      const r2 = r1 + ((<usize>sam) << 2);
      const r3 = r2 + ((<usize>sam) << 2);
      for (let k = 0; k < kc; k++) {
        const o = (<usize>k * sak) << 2;
        store<f32>(d, load<f32>(r0 + o));
        store<f32>(d, load<f32>(r1 + o), 4);
        store<f32>(d, load<f32>(r2 + o), 8);
        store<f32>(d, load<f32>(r3 + o), 12);
        d += 16;
      }
    } else {
      for (let k = 0; k < kc; k++) {
        for (let r = 0; r < MR; r++) {
          store<f32>(d + (<usize>r << 2), r < h ? load<f32>(a + ((<usize>(i + r) * sam + <usize>k * sak) << 2)) : 0);
        }
        d += 16;
      }
    }
  }
}

// Packs rows [k0, k0+kc) x cols [j0, j0+nc) of B (element (k,j) at b + 4(k sbk + j sbn)) into
// panels of NR columns: dst[(p kc + k) NR + c]; columns past nc are zero.
function packB(b: usize, sbk: i32, sbn: i32, kc: i32, nc: i32, dst: usize): void {
  for (let j = 0; j < nc; j += NR) {
    const w = min(NR, nc - j);
    let d = dst + ((<usize>j * kc) << 2);
    if (w == NR && sbn == 1) {
      for (let k = 0; k < kc; k++) {
        const s = b + ((<usize>k * sbk + j) << 2);
        v128.store(d, v128.load(s));
        v128.store(d, v128.load(s, 16), 16);
        d += 32;
      }
    } else {
      for (let k = 0; k < kc; k++) {
        for (let c = 0; c < NR; c++) {
          store<f32>(d + (<usize>c << 2), c < w ? load<f32>(b + ((<usize>k * sbk + <usize>(j + c) * sbn) << 2)) : 0);
        }
        d += 32;
      }
    }
  }
}

// c + a b on 4 lanes: one fused multiply-add where the module is built with relaxed SIMD (a second
// build; the loader picks it when the runtime validates it), else a multiply and an add.
@inline function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(c, f32x4.mul(a, b));
}

// C[4x8] (row stride ldc floats) += alpha * (packed A panel) x (packed B panel); with `overwrite`,
// C = alpha * (...) (the first K block of a beta = 0 product: C is never read, so no zeroing pass).
@inline function micro(ap: usize, bp: usize, kc: i32, c: usize, ldc: i32, alpha: f32, overwrite: bool): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0);
  let c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  for (let k = 0; k < kc; k++) {
    const b0 = v128.load(bp);
    const b1 = v128.load(bp, 16);
    let a = v128.load32_splat(ap);
    c00 = madd(a, b0, c00); c01 = madd(a, b1, c01);
    a = v128.load32_splat(ap, 4);
    c10 = madd(a, b0, c10); c11 = madd(a, b1, c11);
    a = v128.load32_splat(ap, 8);
    c20 = madd(a, b0, c20); c21 = madd(a, b1, c21);
    a = v128.load32_splat(ap, 12);
    c30 = madd(a, b0, c30); c31 = madd(a, b1, c31);
    ap += 16; bp += 32;
  }
  const al = f32x4.splat(alpha);
  const ld = <usize>ldc << 2;
  if (overwrite) {
    v128.store(c, f32x4.mul(al, c00)); v128.store(c, f32x4.mul(al, c01), 16); c += ld;
    v128.store(c, f32x4.mul(al, c10)); v128.store(c, f32x4.mul(al, c11), 16); c += ld;
    v128.store(c, f32x4.mul(al, c20)); v128.store(c, f32x4.mul(al, c21), 16); c += ld;
    v128.store(c, f32x4.mul(al, c30)); v128.store(c, f32x4.mul(al, c31), 16);
    return;
  }
  v128.store(c, f32x4.add(v128.load(c), f32x4.mul(al, c00))); v128.store(c, f32x4.add(v128.load(c, 16), f32x4.mul(al, c01)), 16); c += ld;
  v128.store(c, f32x4.add(v128.load(c), f32x4.mul(al, c10))); v128.store(c, f32x4.add(v128.load(c, 16), f32x4.mul(al, c11)), 16); c += ld;
  v128.store(c, f32x4.add(v128.load(c), f32x4.mul(al, c20))); v128.store(c, f32x4.add(v128.load(c, 16), f32x4.mul(al, c21)), 16); c += ld;
  v128.store(c, f32x4.add(v128.load(c), f32x4.mul(al, c30))); v128.store(c, f32x4.add(v128.load(c, 16), f32x4.mul(al, c31)), 16);
}

function gemmRange(
  M: i32, N: i32, K: i32,
  a: usize, sam: i32, sak: i32, b: usize, sbk: i32, sbn: i32, c: usize, ldc: i32,
  alpha: f32, beta: f32, m0: i32, m1: i32, n0: i32, n1: i32, ws: usize,
): void {
  if (m1 <= m0 || n1 <= n0) return;
  // C = beta C over the range first (beta 0 overwrites, so garbage or NaN in C never leaks in);
  // for beta = 0 the first K block's tiles store instead of accumulating, which needs no pass
  const direct = beta == 0 && K > 0;
  if (beta != 1 && !direct) {
    for (let i = m0; i < m1; i++) {
      const row = c + ((<usize>i * ldc) << 2);
      for (let j = n0; j < n1; j++) {
        const p = row + (<usize>j << 2);
        store<f32>(p, beta == 0 ? 0 : beta * load<f32>(p));
      }
    }
  }
  const wsA = ws;
  const wsB = ws + ((<usize>MC * KC) << 2);
  const tile = wsB + ((<usize>KC * (NC + NR)) << 2);
  for (let k0 = 0; k0 < K; k0 += KC) {
    const kc = min(KC, K - k0);
    for (let j0 = n0; j0 < n1; j0 += NC) {
      const nc = min(NC, n1 - j0);
      packB(b + ((<usize>k0 * sbk + <usize>j0 * sbn) << 2), sbk, sbn, kc, nc, wsB);
      for (let i0 = m0; i0 < m1; i0 += MC) {
        const mc = min(MC, m1 - i0);
        packA(a + ((<usize>i0 * sam + <usize>k0 * sak) << 2), sam, sak, mc, kc, wsA);
        for (let j = 0; j < nc; j += NR) {
          const w = min(NR, nc - j);
          const bp = wsB + ((<usize>j * kc) << 2);
          for (let i = 0; i < mc; i += MR) {
            const h = min(MR, mc - i);
            const ap = wsA + ((<usize>i * kc) << 2);
            const cp = c + ((<usize>(i0 + i) * ldc + j0 + j) << 2);
            const first = direct && k0 == 0;
            if (h == MR && w == NR) {
              micro(ap, bp, kc, cp, ldc, alpha, first);
            } else {
              // edge tile: compute into a 4x8 scratch, then store or add the valid part
              micro(ap, bp, kc, tile, NR, alpha, true);
              for (let r = 0; r < h; r++) {
                for (let s = 0; s < w; s++) {
                  const p = cp + ((<usize>r * ldc + s) << 2);
                  const v = load<f32>(tile + ((<usize>(r * NR + s)) << 2));
                  store<f32>(p, first ? v : load<f32>(p) + v);
                }
              }
            }
          }
        }
      }
    }
  }
}

/**
 * C[bt] = alpha A[bt] B[bt] + beta C[bt] for bt < batch. A is M x K with element (i,k) at
 * a + 4 (bt sab + i sam + k sak); B is K x N likewise; C is M x N with row stride ldc. Work is split
 * over threads by batch when batch >= nth, else along the longer of M and N.
 */
export function gemm_f32(
  M: i32, N: i32, K: i32,
  a: usize, sam: i32, sak: i32, sab: i32,
  b: usize, sbk: i32, sbn: i32, sbb: i32,
  c: usize, ldc: i32, scb: i32,
  alpha: f32, beta: f32, batch: i32,
  wsBase: usize, wsBytes: i32, tid: i32, nth: i32,
): void {
  const ws = wsBase + <usize>tid * <usize>wsBytes;
  if (batch >= nth) {
    for (let bt = tid; bt < batch; bt += nth) {
      gemmRange(M, N, K, a + ((<usize>bt * sab) << 2), sam, sak, b + ((<usize>bt * sbb) << 2), sbk, sbn,
        c + ((<usize>bt * scb) << 2), ldc, alpha, beta, 0, M, 0, N, ws);
    }
    return;
  }
  let m0 = 0, m1 = M, n0 = 0, n1 = N;
  if (M >= N) {
    const per = ((M + nth * MR - 1) / (nth * MR)) * MR;
    m0 = min(M, tid * per); m1 = min(M, m0 + per);
  } else {
    const per = ((N + nth * NR - 1) / (nth * NR)) * NR;
    n0 = min(N, tid * per); n1 = min(N, n0 + per);
  }
  for (let bt = 0; bt < batch; bt++) {
    gemmRange(M, N, K, a + ((<usize>bt * sab) << 2), sam, sak, b + ((<usize>bt * sbb) << 2), sbk, sbn,
      c + ((<usize>bt * scb) << 2), ldc, alpha, beta, m0, m1, n0, n1, ws);
  }
}

// ------------------------------------------------------------------------------------------------
// Epilogue: C[i, j] += bias[j]; with gelu, pre[i, j] = C[i, j] and C[i, j] = gelu(C[i, j]).
// GELU is the erf form; erf from the classic Chebyshev-fitted erfc (fractional error < 1.2e-7,
// below float32 resolution), evaluated in f64.
// ------------------------------------------------------------------------------------------------
@inline function erfc64(x: f64): f64 {
  const z = abs<f64>(x);
  const t = 1.0 / (1.0 + 0.5 * z);
  const r = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return x >= 0 ? r : 2.0 - r;
}
@inline function gelu64(x: f64): f64 {
  return 0.5 * x * erfc64(-x * 0.7071067811865476);
}

export function bias_act_f32(c: usize, M: i32, N: i32, bias: usize, gelu: i32, pre: usize, tid: i32, nth: i32): void {
  const per = (M + nth - 1) / nth;
  const i0 = min(M, tid * per), i1 = min(M, i0 + per);
  for (let i = i0; i < i1; i++) {
    const row = c + ((<usize>i * N) << 2);
    const prow = pre + ((<usize>i * N) << 2);
    if (bias != 0) {
      let j = 0;
      for (; j + 4 <= N; j += 4) {
        const p = row + (<usize>j << 2);
        v128.store(p, f32x4.add(v128.load(p), v128.load(bias + (<usize>j << 2))));
      }
      for (; j < N; j++) {
        const p = row + (<usize>j << 2);
        store<f32>(p, load<f32>(p) + load<f32>(bias + (<usize>j << 2)));
      }
    }
    if (gelu) {
      let j = 0;
      for (; j + 4 <= N; j += 4) {
        const x = v128.load(row + (<usize>j << 2));
        v128.store(prow + (<usize>j << 2), x);
        v128.store(row + (<usize>j << 2), gelu4(x));
      }
      for (; j < N; j++) {
        const x = load<f32>(row + (<usize>j << 2));
        store<f32>(prow + (<usize>j << 2), x);
        store<f32>(row + (<usize>j << 2), <f32>gelu64(<f64>x));
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Attention (SPEC section 2). Layout: qkv [B, S, 3d] (q | k | v per row, d = H dh), out [B, S, d],
// lse [B, H, S]. S = G + N: rows 0..G-1 are global tokens (attend to all S, attended by all);
// a local row at position p = i - G attends the globals and positions p + r k, |k| <= w, inside
// [0, N). window < 0 means full attention. Threads split the (b, h) pairs: each pair owns its
// head's columns of out / dqkv, so no two threads write the same element.
// ------------------------------------------------------------------------------------------------
@inline function dot(x: usize, y: usize, n: i32): f32 {
  let acc = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) acc = f32x4.add(acc, f32x4.mul(v128.load(x + (<usize>i << 2)), v128.load(y + (<usize>i << 2))));
  let s = f32x4.extract_lane(acc, 0) + f32x4.extract_lane(acc, 1) + f32x4.extract_lane(acc, 2) + f32x4.extract_lane(acc, 3);
  for (; i < n; i++) s += load<f32>(x + (<usize>i << 2)) * load<f32>(y + (<usize>i << 2));
  return s;
}
// y[0..n) += a x[0..n)
@inline function axpy(a: f32, x: usize, y: usize, n: i32): void {
  const av = f32x4.splat(a);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const p = y + (<usize>i << 2);
    v128.store(p, f32x4.add(v128.load(p), f32x4.mul(av, v128.load(x + (<usize>i << 2)))));
  }
  for (; i < n; i++) {
    const p = y + (<usize>i << 2);
    store<f32>(p, load<f32>(p) + a * load<f32>(x + (<usize>i << 2)));
  }
}

// The keys of query row i, written as row indices into keys[]; returns their count.
function keysOf(i: i32, S: i32, G: i32, window: i32, dilation: i32, keys: usize): i32 {
  let n = 0;
  if (window < 0 || i < G) {
    for (let j = 0; j < S; j++) { store<i32>(keys + (<usize>n << 2), j); n++; }
    return n;
  }
  for (let j = 0; j < G; j++) { store<i32>(keys + (<usize>n << 2), j); n++; }
  const N = S - G;
  const p = i - G;
  for (let k = -window; k <= window; k++) {
    const q = p + dilation * k;
    if (q >= 0 && q < N) { store<i32>(keys + (<usize>n << 2), G + q); n++; }
  }
  return n;
}

/** Scratch bytes one thread needs for attention over S rows. */
export function attn_ws_bytes(S: i32): i32 {
  return S * 8 + 64;
}

export function attn_fwd_f32(
  qkv: usize, out: usize, lse: usize, B: i32, S: i32, H: i32, dh: i32, G: i32,
  window: i32, dilation: i32, scale: f32, wsBase: usize, wsBytes: i32, tid: i32, nth: i32,
): void {
  const ws = wsBase + <usize>tid * <usize>wsBytes;
  const d = H * dh;
  const keys = ws;
  const sc = ws + ((<usize>S) << 2);
  for (let bh = tid; bh < B * H; bh += nth) {
    const b = bh / H, h = bh % H;
    const base = qkv + ((<usize>b * S * 3 * d) << 2);
    for (let i = 0; i < S; i++) {
      const q = base + ((<usize>i * 3 * d + h * dh) << 2);
      const nk = keysOf(i, S, G, window, dilation, keys);
      let mx: f32 = -Infinity;
      for (let t = 0; t < nk; t++) {
        const j = load<i32>(keys + (<usize>t << 2));
        const s = dot(q, base + ((<usize>j * 3 * d + d + h * dh) << 2), dh) * scale;
        store<f32>(sc + (<usize>t << 2), s);
        mx = max(mx, s);
      }
      let sum: f32 = 0;
      for (let t = 0; t < nk; t++) {
        const e = <f32>Math.exp(<f64>(load<f32>(sc + (<usize>t << 2)) - mx));
        store<f32>(sc + (<usize>t << 2), e);
        sum += e;
      }
      const o = out + ((<usize>(b * S + i) * d + h * dh) << 2);
      for (let x = 0; x < dh; x++) store<f32>(o + (<usize>x << 2), 0);
      const inv: f32 = 1 / sum;
      for (let t = 0; t < nk; t++) {
        const j = load<i32>(keys + (<usize>t << 2));
        axpy(load<f32>(sc + (<usize>t << 2)) * inv, base + ((<usize>j * 3 * d + 2 * d + h * dh) << 2), o, dh);
      }
      store<f32>(lse + ((<usize>(bh * S + i)) << 2), mx + <f32>Math.log(<f64>sum));
    }
  }
}

/**
 * Backward: dqkv (zeroed by this kernel for its heads) from dout, using out and lse of the forward.
 * D_i = dout_i . out_i; p_ij = exp(s_ij - lse_i); dv_j += p_ij dout_i; ds_ij = p_ij (dout_i . v_j - D_i);
 * dq_i += scale ds_ij k_j; dk_j += scale ds_ij q_i.
 */
export function attn_bwd_f32(
  qkv: usize, out: usize, lse: usize, dout: usize, dqkv: usize, B: i32, S: i32, H: i32, dh: i32, G: i32,
  window: i32, dilation: i32, scale: f32, wsBase: usize, wsBytes: i32, tid: i32, nth: i32,
): void {
  const ws = wsBase + <usize>tid * <usize>wsBytes;
  const d = H * dh;
  const keys = ws;
  for (let bh = tid; bh < B * H; bh += nth) {
    const b = bh / H, h = bh % H;
    const base = qkv + ((<usize>b * S * 3 * d) << 2);
    const dbase = dqkv + ((<usize>b * S * 3 * d) << 2);
    for (let i = 0; i < S; i++) {
      for (let part = 0; part < 3; part++) {
        const p = dbase + ((<usize>i * 3 * d + part * d + h * dh) << 2);
        for (let x = 0; x < dh; x++) store<f32>(p + (<usize>x << 2), 0);
      }
    }
    for (let i = 0; i < S; i++) {
      const q = base + ((<usize>i * 3 * d + h * dh) << 2);
      const dq = dbase + ((<usize>i * 3 * d + h * dh) << 2);
      const o = out + ((<usize>(b * S + i) * d + h * dh) << 2);
      const dout_i = dout + ((<usize>(b * S + i) * d + h * dh) << 2);
      const Di = dot(dout_i, o, dh);
      const l = load<f32>(lse + ((<usize>(bh * S + i)) << 2));
      const nk = keysOf(i, S, G, window, dilation, keys);
      for (let t = 0; t < nk; t++) {
        const j = load<i32>(keys + (<usize>t << 2));
        const kj = base + ((<usize>j * 3 * d + d + h * dh) << 2);
        const vj = base + ((<usize>j * 3 * d + 2 * d + h * dh) << 2);
        const pij = <f32>Math.exp(<f64>(dot(q, kj, dh) * scale - l));
        axpy(pij, dout_i, dbase + ((<usize>j * 3 * d + 2 * d + h * dh) << 2), dh);
        const ds = pij * (dot(dout_i, vj, dh) - Di) * scale;
        axpy(ds, kj, dq, dh);
        axpy(ds, q, dbase + ((<usize>j * 3 * d + d + h * dh) << 2), dh);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Fused softmax cross-entropy over rows of V logits (the tied LM head of the nll term):
// loss[r] = lse(x_r) - x_r[t_r]; with dlogits: dx_r = w_r (softmax(x_r) - onehot(t_r)).
// exp is evaluated 4 lanes at a time: x = n ln2 + f, |f| <= ln2/2, e^f by a degree-6 polynomial
// (relative error ~2e-7, float32 resolution), 2^n through the exponent bits.
// ------------------------------------------------------------------------------------------------
@inline function exp4(x: v128): v128 {
  // clamp so that 2^n stays a normal float (e^-87 ~ 1.6e-38, below anything a softmax keeps)
  x = f32x4.max(x, f32x4.splat(-87.0));
  x = f32x4.min(x, f32x4.splat(88.0));
  const n = f32x4.nearest(f32x4.mul(x, f32x4.splat(1.4426950408889634)));
  // f = x - n ln2 with ln2 split in two parts for accuracy
  let f = f32x4.sub(x, f32x4.mul(n, f32x4.splat(0.693145751953125)));
  f = f32x4.sub(f, f32x4.mul(n, f32x4.splat(1.428606765330187e-6)));
  let p = f32x4.splat(1.0 / 720.0);
  p = f32x4.add(f32x4.mul(p, f), f32x4.splat(1.0 / 120.0));
  p = f32x4.add(f32x4.mul(p, f), f32x4.splat(1.0 / 24.0));
  p = f32x4.add(f32x4.mul(p, f), f32x4.splat(1.0 / 6.0));
  p = f32x4.add(f32x4.mul(p, f), f32x4.splat(0.5));
  p = f32x4.add(f32x4.mul(p, f), f32x4.splat(1.0));
  p = f32x4.add(f32x4.mul(p, f), f32x4.splat(1.0));
  const scale = i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(n), i32x4.splat(127)), 23);
  return f32x4.mul(p, scale);
}

export function xent_f32(logits: usize, targets: usize, weights: usize, loss: usize, dlogits: usize, rows: i32, V: i32, tid: i32, nth: i32): void {
  const per = (rows + nth - 1) / nth;
  const r0 = min(rows, tid * per), r1 = min(rows, r0 + per);
  for (let r = r0; r < r1; r++) {
    const x = logits + ((<usize>r * V) << 2);
    let mv = f32x4.splat(-Infinity);
    let j = 0;
    for (; j + 4 <= V; j += 4) mv = f32x4.max(mv, v128.load(x + (<usize>j << 2)));
    let mx = max(max(f32x4.extract_lane(mv, 0), f32x4.extract_lane(mv, 1)), max(f32x4.extract_lane(mv, 2), f32x4.extract_lane(mv, 3)));
    for (; j < V; j++) mx = max(mx, load<f32>(x + (<usize>j << 2)));
    const mxv = f32x4.splat(mx);
    let sv = f32x4.splat(0);
    j = 0;
    for (; j + 4 <= V; j += 4) sv = f32x4.add(sv, exp4(f32x4.sub(v128.load(x + (<usize>j << 2)), mxv)));
    // the 4 lanes and the tail summed in f64
    let sum: f64 = <f64>f32x4.extract_lane(sv, 0) + <f64>f32x4.extract_lane(sv, 1) + <f64>f32x4.extract_lane(sv, 2) + <f64>f32x4.extract_lane(sv, 3);
    for (; j < V; j++) sum += Math.exp(<f64>(load<f32>(x + (<usize>j << 2)) - mx));
    const lse: f32 = mx + <f32>Math.log(sum);
    const t = load<i32>(targets + (<usize>r << 2));
    store<f32>(loss + (<usize>r << 2), lse - load<f32>(x + (<usize>t << 2)));
    if (dlogits != 0) {
      const w: f32 = weights != 0 ? load<f32>(weights + (<usize>r << 2)) : 1;
      const g = dlogits + ((<usize>r * V) << 2);
      const lv = f32x4.splat(lse);
      const wv = f32x4.splat(w);
      j = 0;
      for (; j + 4 <= V; j += 4) v128.store(g + (<usize>j << 2), f32x4.mul(wv, exp4(f32x4.sub(v128.load(x + (<usize>j << 2)), lv))));
      for (; j < V; j++) store<f32>(g + (<usize>j << 2), w * <f32>Math.exp(<f64>(load<f32>(x + (<usize>j << 2)) - lse)));
      store<f32>(g + (<usize>t << 2), load<f32>(g + (<usize>t << 2)) - w);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// GELU (erf form) on 4 lanes: erfc from the Chebyshev-fitted form (see erfc64), in f32 with exp4.
// ------------------------------------------------------------------------------------------------
@inline function erfc4(x: v128): v128 {
  const z = f32x4.abs(x);
  const t = f32x4.div(f32x4.splat(1), f32x4.add(f32x4.splat(1), f32x4.mul(f32x4.splat(0.5), z)));
  let p = f32x4.splat(0.17087277);
  p = f32x4.add(f32x4.mul(p, t), f32x4.splat(-0.82215223));
  p = f32x4.add(f32x4.mul(p, t), f32x4.splat(1.48851587));
  p = f32x4.add(f32x4.mul(p, t), f32x4.splat(-1.13520398));
  p = f32x4.add(f32x4.mul(p, t), f32x4.splat(0.27886807));
  p = f32x4.add(f32x4.mul(p, t), f32x4.splat(-0.18628806));
  p = f32x4.add(f32x4.mul(p, t), f32x4.splat(0.09678418));
  p = f32x4.add(f32x4.mul(p, t), f32x4.splat(0.37409196));
  p = f32x4.add(f32x4.mul(p, t), f32x4.splat(1.00002368));
  p = f32x4.add(f32x4.mul(p, t), f32x4.splat(-1.26551223));
  const r = f32x4.mul(t, exp4(f32x4.sub(p, f32x4.mul(z, z))));
  // x < 0: erfc(x) = 2 - erfc(|x|)
  return v128.bitselect(f32x4.sub(f32x4.splat(2), r), r, f32x4.lt(x, f32x4.splat(0)));
}
@inline function gelu4(x: v128): v128 {
  return f32x4.mul(f32x4.mul(f32x4.splat(0.5), x), erfc4(f32x4.mul(x, f32x4.splat(-0.7071067811865476))));
}
@inline function geluGrad4(x: v128): v128 {
  const cdf = f32x4.mul(f32x4.splat(0.5), erfc4(f32x4.mul(x, f32x4.splat(-0.7071067811865476))));
  const pdf = f32x4.mul(f32x4.splat(0.3989422804014327), exp4(f32x4.mul(f32x4.splat(-0.5), f32x4.mul(x, x))));
  return f32x4.add(cdf, f32x4.mul(x, pdf));
}

/** out[i] = gelu(x[i]) (out may equal x). */
export function gelu_f32(x: usize, out: usize, n: i32, tid: i32, nth: i32): void {
  const per = (((n + nth - 1) / nth + 3) >> 2) << 2;
  const i0 = min(n, tid * per), i1 = min(n, i0 + per);
  let i = i0;
  for (; i + 4 <= i1; i += 4) v128.store(out + (<usize>i << 2), gelu4(v128.load(x + (<usize>i << 2))));
  for (; i < i1; i++) store<f32>(out + (<usize>i << 2), <f32>gelu64(<f64>load<f32>(x + (<usize>i << 2))));
}

/** dx[i] (+)= gelu'(x[i]) dy[i] (dx may equal dy). */
export function gelu_bwd_f32(dx: usize, dy: usize, x: usize, n: i32, accumulate: i32, tid: i32, nth: i32): void {
  const per = (((n + nth - 1) / nth + 3) >> 2) << 2;
  const i0 = min(n, tid * per), i1 = min(n, i0 + per);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i << 2;
    let g = f32x4.mul(geluGrad4(v128.load(x + o)), v128.load(dy + o));
    if (accumulate) g = f32x4.add(g, v128.load(dx + o));
    v128.store(dx + o, g);
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    const xv = <f64>load<f32>(x + o);
    const gr = 0.5 * erfc64(-xv * 0.7071067811865476) + xv * 0.3989422804014327 * Math.exp(-0.5 * xv * xv);
    const g = <f32>gr * load<f32>(dy + o);
    store<f32>(dx + o, accumulate ? load<f32>(dx + o) + g : g);
  }
}

// ------------------------------------------------------------------------------------------------
// Philox-4x32-10 (see src/backend/philox.ts for the stream layout) and dropout with it:
// out[i] = x[i] * (uniform(seed, offset + i) >= p ? 1 / (1 - p) : 0).
// ------------------------------------------------------------------------------------------------
let ph0: u32 = 0, ph1: u32 = 0, ph2: u32 = 0, ph3: u32 = 0;
function philoxBlock(c: u64, k0: u32, k1: u32): void {
  let c0 = <u32>c, c1 = <u32>(c >> 32), c2: u32 = 0, c3: u32 = 0;
  for (let r = 0; r < 10; r++) {
    const p0 = <u64>0xd2511f53 * <u64>c0;
    const p1 = <u64>0xcd9e8d57 * <u64>c2;
    const n0 = <u32>(p1 >> 32) ^ c1 ^ k0;
    const n2 = <u32>(p0 >> 32) ^ c3 ^ k1;
    c1 = <u32>p1;
    c3 = <u32>p0;
    c0 = n0;
    c2 = n2;
    k0 += 0x9e3779b9;
    k1 += 0xbb67ae85;
  }
  ph0 = c0; ph1 = c1; ph2 = c2; ph3 = c3;
}

export function dropout_f32(x: usize, out: usize, n: i32, p: f64, seedLo: u32, seedHi: u32, offset: f64, tid: i32, nth: i32): void {
  const scale: f32 = <f32>(1.0 / (1.0 - p));
  const off = <u64>offset;
  // split on counter blocks so a thread never recomputes another's block
  const first = off >> 2;
  const last = (off + <u64>n - 1) >> 2;
  const blocks = <i64>(last - first + 1);
  const per = (blocks + nth - 1) / nth;
  const b0 = <i64>tid * per;
  const b1 = min<i64>(blocks, b0 + per);
  for (let b = b0; b < b1; b++) {
    const c = first + <u64>b;
    philoxBlock(c, seedLo, seedHi);
    for (let l = 0; l < 4; l++) {
      const ctr = c * 4 + <u64>l;
      if (ctr < off || ctr >= off + <u64>n) continue;
      const i = <usize>(ctr - off);
      const w: u32 = l == 0 ? ph0 : l == 1 ? ph1 : l == 2 ? ph2 : ph3;
      const u = (<f64>(w >> 8) + 0.5) * 5.9604644775390625e-8;
      store<f32>(out + (i << 2), u >= p ? load<f32>(x + (i << 2)) * scale : 0);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Blocked attention (dilation 1, and full attention): a block of BQ consecutive query rows shares
// almost all of its keys (the globals plus the union of the windows: 2w + BQ positions), so the
// scores, P V, and every product of the backward become small GEMMs through gemmRange (the SIMD
// micro-kernel) instead of one dot product per (query, key). Keys of the union outside a row's window
// are masked exactly (probability 0). The row-at-a-time kernels above are the slow twin (and serve
// dilation > 1). Workspace per thread: GEMM_WS_BYTES, then two BQ x S float buffers.
// ------------------------------------------------------------------------------------------------
const BQ: i32 = 32;

/** Workspace bytes one thread needs for the blocked attention over S rows. */
export function attn_blk_ws_bytes(S: i32): i32 {
  return GEMM_WS_BYTES + 2 * BQ * S * 4 + 64;
}

// Local key positions [lo, hi) of the block of rows [i0, i1) (globals are always columns [0, G)).
// Global query rows and full attention see every position.
@inline function blockLo(i0: i32, G: i32, window: i32): i32 {
  return i0 < G || window < 0 ? 0 : max(0, i0 - G - window);
}
@inline function blockHi(i1: i32, G: i32, N: i32, window: i32): i32 {
  return i1 <= G || window < 0 ? N : min(N, i1 - G + window);
}

// c[r, :] (row stride U) = a_r . key for the block's keys: globals (key rows 0..G-1) into columns
// [0, G), locals (key rows G+lo ..) into [G, G + nl). Rows of a at stride sa floats, keys at stride sk.
function keysProduct(rows: i32, dh: i32, a: usize, sa: i32, keys: usize, sk: i32, G: i32, lo: i32, nl: i32, c: usize, U: i32, ws: usize): void {
  if (G > 0) gemmRange(rows, G, dh, a, sa, 1, keys, 1, sk, c, U, 1, 0, 0, rows, 0, G, ws);
  if (nl > 0) gemmRange(rows, nl, dh, a, sa, 1, keys + ((<usize>(G + lo) * sk) << 2), 1, sk, c + (<usize>G << 2), U, 1, 0, 0, rows, 0, nl, ws);
}

// out[r, :] (+)= p[r, :] v_keys: the same two key groups as keysProduct (beta 0 overwrites out).
function probsTimesKeys(rows: i32, dh: i32, p: usize, U: i32, keys: usize, sk: i32, G: i32, lo: i32, nl: i32, out: usize, so: i32, beta: f32, ws: usize): void {
  let b = beta;
  if (G > 0) {
    gemmRange(rows, dh, G, p, U, 1, keys, sk, 1, out, so, 1, b, 0, rows, 0, dh, ws);
    b = 1;
  }
  if (nl > 0) gemmRange(rows, dh, nl, p + (<usize>G << 2), U, 1, keys + ((<usize>(G + lo) * sk) << 2), sk, 1, out, so, 1, b, 0, rows, 0, dh, ws);
}

// keys_grad (+)= p^T x for the block: dK or dV rows of the union += (rows x U)^T (rows x dh).
function keysGradAccumulate(rows: i32, dh: i32, p: usize, U: i32, x: usize, sx: i32, G: i32, lo: i32, nl: i32, grad: usize, sg: i32, ws: usize): void {
  if (G > 0) gemmRange(G, dh, rows, p, 1, U, x, sx, 1, grad, sg, 1, 1, 0, G, 0, dh, ws);
  if (nl > 0) gemmRange(nl, dh, rows, p + (<usize>G << 2), 1, U, x, sx, 1, grad + ((<usize>(G + lo) * sg) << 2), sg, 1, 1, 0, nl, 0, dh, ws);
}

// Scores of the block to probabilities in place: p = exp(scale s - lse) on the row's valid keys, 0 on
// the union's others. With lse < 0 (forward) the row's log-sum-exp is computed and stored there.
function blockSoftmax(sc: usize, rows: i32, U: i32, i0: i32, G: i32, lo: i32, window: i32, scale: f32, lseOut: usize, lseIn: usize): void {
  for (let r = 0; r < rows; r++) {
    const i = i0 + r;
    const row = sc + ((<usize>r * U) << 2);
    // valid local columns [c0, c1) of this row (all of them for global rows and full attention)
    let c0 = G, c1 = U;
    if (i >= G && window >= 0) {
      const p = i - G;
      c0 = G + max(0, p - window - lo);
      c1 = G + min(U - G, p + window + 1 - lo);
    }
    const sv = f32x4.splat(scale);
    let l: f32;
    if (lseIn != 0) l = load<f32>(lseIn + (<usize>i << 2));
    else {
      let mx: f32 = -Infinity;
      for (let c = 0; c < G; c++) mx = max(mx, load<f32>(row + (<usize>c << 2)) * scale);
      for (let c = c0; c < c1; c++) mx = max(mx, load<f32>(row + (<usize>c << 2)) * scale);
      const mv = f32x4.splat(mx);
      let sum: f64 = 0;
      let c = 0;
      for (; c < G; c++) sum += Math.exp(<f64>(load<f32>(row + (<usize>c << 2)) * scale - mx));
      c = c0;
      let acc = f32x4.splat(0);
      for (; c + 4 <= c1; c += 4) acc = f32x4.add(acc, exp4(f32x4.sub(f32x4.mul(v128.load(row + (<usize>c << 2)), sv), mv)));
      sum += <f64>f32x4.extract_lane(acc, 0) + <f64>f32x4.extract_lane(acc, 1) + <f64>f32x4.extract_lane(acc, 2) + <f64>f32x4.extract_lane(acc, 3);
      for (; c < c1; c++) sum += Math.exp(<f64>(load<f32>(row + (<usize>c << 2)) * scale - mx));
      l = mx + <f32>Math.log(sum);
      store<f32>(lseOut + (<usize>i << 2), l);
    }
    const lv = f32x4.splat(l);
    for (let c = 0; c < G; c++) store<f32>(row + (<usize>c << 2), <f32>Math.exp(<f64>(load<f32>(row + (<usize>c << 2)) * scale - l)));
    for (let c = G; c < c0; c++) store<f32>(row + (<usize>c << 2), 0);
    let c = c0;
    for (; c + 4 <= c1; c += 4) v128.store(row + (<usize>c << 2), exp4(f32x4.sub(f32x4.mul(v128.load(row + (<usize>c << 2)), sv), lv)));
    for (; c < c1; c++) store<f32>(row + (<usize>c << 2), <f32>Math.exp(<f64>(load<f32>(row + (<usize>c << 2)) * scale - l)));
    for (c = c1; c < U; c++) store<f32>(row + (<usize>c << 2), 0);
  }
}

export function attn_fwd_blk_f32(
  qkv: usize, out: usize, lse: usize, B: i32, S: i32, H: i32, dh: i32, G: i32,
  window: i32, scale: f32, wsBase: usize, wsBytes: i32, tid: i32, nth: i32,
): void {
  const ws = wsBase + <usize>tid * <usize>wsBytes;
  const sc = ws + <usize>GEMM_WS_BYTES;
  const d = H * dh;
  const N = S - G;
  for (let bh = tid; bh < B * H; bh += nth) {
    const b = bh / H, h = bh % H;
    const base = qkv + ((<usize>b * S * 3 * d) << 2);
    const hq = base + (<usize>(h * dh) << 2);
    const hk = base + (<usize>(d + h * dh) << 2);
    const hv = base + (<usize>(2 * d + h * dh) << 2);
    const lrow = lse + ((<usize>bh * S) << 2);
    // global rows first (blocks of at most BQ, every key), then local rows in blocks of BQ
    let i0 = 0;
    while (i0 < S) {
      const i1 = i0 < G ? min(G, i0 + BQ) : min(S, i0 + BQ); // at most BQ rows: the workspace holds BQ x S
      const rows = i1 - i0;
      const lo = blockLo(i0, G, window);
      const nl = blockHi(i1, G, N, window) - lo;
      const U = G + nl;
      keysProduct(rows, dh, hq + ((<usize>i0 * 3 * d) << 2), 3 * d, hk, 3 * d, G, lo, nl, sc, U, ws);
      blockSoftmax(sc, rows, U, i0, G, lo, window, scale, lrow, 0);
      probsTimesKeys(rows, dh, sc, U, hv, 3 * d, G, lo, nl, out + ((<usize>(b * S + i0) * d + h * dh) << 2), d, 0, ws);
      i0 = i1;
    }
  }
}

export function attn_bwd_blk_f32(
  qkv: usize, out: usize, lse: usize, dout: usize, dqkv: usize, B: i32, S: i32, H: i32, dh: i32, G: i32,
  window: i32, scale: f32, wsBase: usize, wsBytes: i32, tid: i32, nth: i32,
): void {
  const ws = wsBase + <usize>tid * <usize>wsBytes;
  const pb = ws + <usize>GEMM_WS_BYTES;
  const dp = pb + ((<usize>BQ * S) << 2);
  const d = H * dh;
  const N = S - G;
  for (let bh = tid; bh < B * H; bh += nth) {
    const b = bh / H, h = bh % H;
    const base = qkv + ((<usize>b * S * 3 * d) << 2);
    const dbase = dqkv + ((<usize>b * S * 3 * d) << 2);
    for (let i = 0; i < S; i++) {
      for (let part = 0; part < 3; part++) {
        const p = dbase + ((<usize>i * 3 * d + part * d + h * dh) << 2);
        for (let x = 0; x < dh; x++) store<f32>(p + (<usize>x << 2), 0);
      }
    }
    const hq = base + (<usize>(h * dh) << 2);
    const hk = base + (<usize>(d + h * dh) << 2);
    const hv = base + (<usize>(2 * d + h * dh) << 2);
    const gq = dbase + (<usize>(h * dh) << 2);
    const gk = dbase + (<usize>(d + h * dh) << 2);
    const gv = dbase + (<usize>(2 * d + h * dh) << 2);
    const ob = out + ((<usize>(b * S) * d + h * dh) << 2);
    const gob = dout + ((<usize>(b * S) * d + h * dh) << 2);
    const lrow = lse + ((<usize>bh * S) << 2);
    let i0 = 0;
    while (i0 < S) {
      const i1 = i0 < G ? min(G, i0 + BQ) : min(S, i0 + BQ); // at most BQ rows: the workspace holds BQ x S
      const rows = i1 - i0;
      const lo = blockLo(i0, G, window);
      const nl = blockHi(i1, G, N, window) - lo;
      const U = G + nl;
      const qb = hq + ((<usize>i0 * 3 * d) << 2);
      const go = gob + ((<usize>i0 * d) << 2);
      // P from the saved log-sum-exp; dP = dO V^T
      keysProduct(rows, dh, qb, 3 * d, hk, 3 * d, G, lo, nl, pb, U, ws);
      blockSoftmax(pb, rows, U, i0, G, lo, window, scale, 0, lrow);
      keysProduct(rows, dh, go, d, hv, 3 * d, G, lo, nl, dp, U, ws);
      // dS = P (dP - D_i) scale, D_i = dO_i . O_i
      for (let r = 0; r < rows; r++) {
        const Di = dot(go + ((<usize>r * d) << 2), ob + ((<usize>(i0 + r) * d) << 2), dh);
        const prow = pb + ((<usize>r * U) << 2);
        const drow = dp + ((<usize>r * U) << 2);
        const Dv = f32x4.splat(Di);
        const sv = f32x4.splat(scale);
        let c = 0;
        for (; c + 4 <= U; c += 4) {
          const o = <usize>c << 2;
          v128.store(drow + o, f32x4.mul(f32x4.mul(v128.load(prow + o), f32x4.sub(v128.load(drow + o), Dv)), sv));
        }
        for (; c < U; c++) {
          const o = <usize>c << 2;
          store<f32>(drow + o, load<f32>(prow + o) * (load<f32>(drow + o) - Di) * scale);
        }
      }
      // dQ = dS K; dK += dS^T Q; dV += P^T dO
      probsTimesKeys(rows, dh, dp, U, hk, 3 * d, G, lo, nl, gq + ((<usize>i0 * 3 * d) << 2), 3 * d, 1, ws);
      keysGradAccumulate(rows, dh, dp, U, qb, 3 * d, G, lo, nl, gk, 3 * d, ws);
      keysGradAccumulate(rows, dh, pb, U, go, d, G, lo, nl, gv, 3 * d, ws);
      i0 = i1;
    }
  }
}
