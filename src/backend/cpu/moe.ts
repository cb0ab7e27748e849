/**
 * Mixture-of-experts routing on the host (SPEC section 2, feed-forward `moe`): router softmax,
 * top-k with renormalised gates, capacity drops (rank-major priority, per sequence), the Switch
 * balance loss and the ST-MoE z-loss, and their gradient. Computed in float64 whatever the data type.
 */
import { ShapeError } from '../../errors.js';

/** Inputs of {@link routeTokens}. */
export interface RouteInput {
  logits: ArrayLike<number>;
  M: number;
  E: number;
  k: number;
  seqLen: number;
  capacityFactor: number | undefined;
  selectionBias: ArrayLike<number> | undefined;
}

/** Host-side routing result (the backend wraps the arrays in tensors). */
export interface RouteOutput {
  probs: Float64Array;
  lse: Float64Array;
  expertIndex: Int32Array;
  gates: Float64Array;
  gateNorm: Float64Array;
  order: Int32Array;
  slot: Int32Array;
  counts: number[];
  loadShare: number[];
  aux: number;
  z: number;
}

/** The checks of a routing's sizes (shared by every backend's moeRoute). */
export function checkRoute(M: number, E: number, k: number, seqLen: number, capacityFactor: number | undefined): void {
  if (!Number.isInteger(k) || k < 1 || k > E) throw new ShapeError('moeRoute', `topK must be in [1, ${E}], got ${k}`);
  if (capacityFactor !== undefined && (!Number.isInteger(seqLen) || seqLen < 1 || M % seqLen !== 0)) {
    throw new ShapeError('moeRoute', `token count ${M} is not a multiple of seqLen ${seqLen}`);
  }
}

/** The expert capacity per sequence: ceil(factor seqLen k / E) (SPEC section 2). */
export function expertCapacity(capacityFactor: number, seqLen: number, k: number, E: number): number {
  return Math.ceil((capacityFactor * seqLen * k) / E);
}

/** Routes M tokens over E experts. */
export function routeTokens(r: RouteInput): RouteOutput {
  const { logits, M, E, k, seqLen, capacityFactor, selectionBias } = r;
  checkRoute(M, E, k, seqLen, capacityFactor);
  const probs = new Float64Array(M * E);
  const lse = new Float64Array(M);
  const expertIndex = new Int32Array(M * k);
  const gates = new Float64Array(M * k);
  const gateNorm = new Float64Array(M);
  const chosen = new Uint8Array(E);
  const assigned = new Float64Array(E);
  const meanP = new Float64Array(E);
  let z = 0;
  for (let m = 0; m < M; m++) {
    let mx = -Infinity;
    for (let e = 0; e < E; e++) mx = Math.max(mx, logits[m * E + e]!);
    let sum = 0;
    for (let e = 0; e < E; e++) {
      const v = Math.exp(logits[m * E + e]! - mx);
      probs[m * E + e] = v;
      sum += v;
    }
    for (let e = 0; e < E; e++) {
      probs[m * E + e]! /= sum;
      meanP[e]! += probs[m * E + e]! / M;
    }
    lse[m] = mx + Math.log(sum);
    z += (lse[m]! * lse[m]!) / M;
    // top-k by score (p, plus the selection bias if any); strict > keeps ties at the lower index
    chosen.fill(0);
    let norm = 0;
    for (let rank = 0; rank < k; rank++) {
      let best = -1;
      let bestScore = -Infinity;
      for (let e = 0; e < E; e++) {
        if (chosen[e]) continue;
        const s = probs[m * E + e]! + (selectionBias ? selectionBias[e]! : 0);
        if (best < 0 || s > bestScore) {
          best = e;
          bestScore = s;
        }
      }
      chosen[best] = 1;
      expertIndex[m * k + rank] = best;
      norm += probs[m * E + best]!;
      assigned[best]! += 1;
    }
    gateNorm[m] = norm;
    for (let rank = 0; rank < k; rank++) gates[m * k + rank] = probs[m * E + expertIndex[m * k + rank]!]! / norm;
  }
  const loadShare = Array.from(assigned, (c) => c / (M * k));
  let aux = 0;
  for (let e = 0; e < E; e++) aux += loadShare[e]! * meanP[e]!;
  aux *= E;

  // capacity: per sequence, every first choice in token order, then every second choice, ...
  const kept = new Uint8Array(M * k).fill(1);
  if (capacityFactor !== undefined) {
    const C = expertCapacity(capacityFactor, seqLen, k, E);
    const used = new Int32Array(E);
    for (let s0 = 0; s0 < M; s0 += seqLen) {
      used.fill(0);
      for (let rank = 0; rank < k; rank++) {
        for (let m = s0; m < s0 + seqLen; m++) {
          const e = expertIndex[m * k + rank]!;
          if (used[e]! < C) used[e]!++;
          else {
            kept[m * k + rank] = 0;
            gates[m * k + rank] = 0;
          }
        }
      }
    }
  }
  // expert order: kept assignments grouped by expert, token order within an expert (counting sort)
  const counts = new Array<number>(E).fill(0);
  for (let a = 0; a < M * k; a++) if (kept[a]) counts[expertIndex[a]!]!++;
  const start = new Int32Array(E);
  for (let e = 1; e < E; e++) start[e] = start[e - 1]! + counts[e - 1]!;
  const total = counts.reduce((x, y) => x + y, 0);
  const order = new Int32Array(total);
  const slot = new Int32Array(M * k).fill(-1);
  for (let a = 0; a < M * k; a++) {
    if (!kept[a]) continue;
    const e = expertIndex[a]!;
    const pos = start[e]!++;
    order[pos] = a;
    slot[a] = pos;
  }
  return { probs, lse, expertIndex, gates, gateNorm, order, slot, counts, loadShare, aux, z };
}

/**
 * Gradient of the router logits: through the renormalised gates (dgates), the balance loss (dAux,
 * with the load shares f treated as constants: they are counts) and the z-loss (dZ).
 */
export function routeBackward(
  M: number, E: number, k: number,
  probs: ArrayLike<number>, lse: ArrayLike<number>, expertIndex: ArrayLike<number>, gates: ArrayLike<number>,
  gateNorm: ArrayLike<number>, loadShare: readonly number[], dgates: ArrayLike<number>, dAux: number, dZ: number,
  dlogits: { [i: number]: number },
): void {
  const dp = new Float64Array(E);
  for (let m = 0; m < M; m++) {
    dp.fill(0);
    // g_r = p_r / Z with Z the sum of the chosen p: dL/dp_r = (dg_r - sum_s dg_s g_s) / Z
    // (dropped assignments have dg = 0 and gate 0, so they fall out of the sum)
    let s = 0;
    for (let r = 0; r < k; r++) s += dgates[m * k + r]! * gates[m * k + r]!;
    const Z = gateNorm[m]!;
    for (let r = 0; r < k; r++) dp[expertIndex[m * k + r]!]! += (dgates[m * k + r]! - s) / Z;
    if (dAux !== 0) for (let e = 0; e < E; e++) dp[e]! += (dAux * E * loadShare[e]!) / M;
    let dot = 0;
    for (let e = 0; e < E; e++) dot += dp[e]! * probs[m * E + e]!;
    const zc = (dZ * 2 * lse[m]!) / M;
    for (let e = 0; e < E; e++) {
      const p = probs[m * E + e]!;
      dlogits[m * E + e] = p * (dp[e]! - dot) + zc * p;
    }
  }
}
