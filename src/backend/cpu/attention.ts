/**
 * Attention on the CPU (SPEC section 2): the reference loops (float64 and the oracle for the
 * float32 SIMD kernel attn_fwd_f32 / attn_bwd_f32, which follow the same algorithm).
 *
 * Layout: qkv [B, S, 3d] with q | k | v in each row (d = H dh), out [B, S, d], lse [B, H, S].
 * Rows 0..G-1 are global tokens: they attend to all S rows and every row attends to them. A local
 * row i (position p = i - G) attends the globals and the positions p + r k for |k| <= w inside
 * [0, N). Memory is O(S (2w + G)) at most per query row, never S^2: probabilities are recomputed
 * in the backward from the saved log-sum-exp, as FlashAttention does.
 */
import type { FArray } from './tensor.js';

/** The attention geometry in the kernels' terms; window < 0 means full attention. */
export interface AttnGeometry {
  B: number;
  S: number;
  H: number;
  dh: number;
  G: number;
  window: number;
  dilation: number;
  scale: number;
}

/** Writes the key rows of query row i into keys; returns their count (same order as the kernel). */
export function keysOf(i: number, g: AttnGeometry, keys: Int32Array): number {
  const { S, G, window, dilation } = g;
  let n = 0;
  if (window < 0 || i < G) {
    for (let j = 0; j < S; j++) keys[n++] = j;
    return n;
  }
  for (let j = 0; j < G; j++) keys[n++] = j;
  const N = S - G;
  const p = i - G;
  for (let k = -window; k <= window; k++) {
    const q = p + dilation * k;
    if (q >= 0 && q < N) keys[n++] = G + q;
  }
  return n;
}

/** Reference forward. */
export function attentionForwardRef(g: AttnGeometry, qkv: FArray, out: FArray, lse: FArray): void {
  const { B, S, H, dh, scale } = g;
  const d = H * dh;
  const keys = new Int32Array(S);
  const sc = new Float64Array(S);
  const acc = new Float64Array(dh);
  for (let b = 0; b < B; b++) {
    const base = b * S * 3 * d;
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < S; i++) {
        const q = base + i * 3 * d + h * dh;
        const nk = keysOf(i, g, keys);
        let mx = -Infinity;
        for (let t = 0; t < nk; t++) {
          const k = base + keys[t]! * 3 * d + d + h * dh;
          let s = 0;
          for (let x = 0; x < dh; x++) s += qkv[q + x]! * qkv[k + x]!;
          sc[t] = s * scale;
          if (sc[t]! > mx) mx = sc[t]!;
        }
        let sum = 0;
        for (let t = 0; t < nk; t++) {
          sc[t] = Math.exp(sc[t]! - mx);
          sum += sc[t]!;
        }
        acc.fill(0);
        for (let t = 0; t < nk; t++) {
          const v = base + keys[t]! * 3 * d + 2 * d + h * dh;
          const w = sc[t]! / sum;
          for (let x = 0; x < dh; x++) acc[x]! += w * qkv[v + x]!;
        }
        const o = (b * S + i) * d + h * dh;
        for (let x = 0; x < dh; x++) out[o + x] = acc[x]!;
        lse[(b * H + h) * S + i] = mx + Math.log(sum);
      }
    }
  }
}

/** Reference backward: overwrites dqkv. */
export function attentionBackwardRef(g: AttnGeometry, qkv: FArray, out: FArray, lse: FArray, dout: FArray, dqkv: FArray): void {
  const { B, S, H, dh, scale } = g;
  const d = H * dh;
  const keys = new Int32Array(S);
  dqkv.fill(0);
  for (let b = 0; b < B; b++) {
    const base = b * S * 3 * d;
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < S; i++) {
        const q = base + i * 3 * d + h * dh;
        const o = (b * S + i) * d + h * dh;
        let Di = 0;
        for (let x = 0; x < dh; x++) Di += dout[o + x]! * out[o + x]!;
        const l = lse[(b * H + h) * S + i]!;
        const nk = keysOf(i, g, keys);
        for (let t = 0; t < nk; t++) {
          const kr = base + keys[t]! * 3 * d + d + h * dh;
          const vr = kr + d;
          let s = 0;
          let dp = 0;
          for (let x = 0; x < dh; x++) {
            s += qkv[q + x]! * qkv[kr + x]!;
            dp += dout[o + x]! * qkv[vr + x]!;
          }
          const p = Math.exp(s * scale - l);
          const ds = p * (dp - Di) * scale;
          for (let x = 0; x < dh; x++) {
            dqkv[vr + x]! += p * dout[o + x]!;
            dqkv[q + x]! += ds * qkv[kr + x]!;
            dqkv[kr + x]! += ds * qkv[q + x]!;
          }
        }
      }
    }
  }
}
