/**
 * Timestep samplers (SPEC section 3): `uniform`, and `lossaware` (DiffuSeq's second-moment
 * resampler): p_t proportional to sqrt(E[L_t^2]) over the last 10 losses at t, mixed with 0.1%
 * uniform, and uniform until every t has 10 losses. Each example's loss is weighted by 1 / (T p_t).
 * The sampler's history is state: a checkpoint saves it (state()/restore()).
 */
import type { PhiloxStream } from '../backend/philox.js';

/** Losses remembered per timestep. */
export const HISTORY = 10;
const UNIFORM_PROB = 0.001;

/** Serialisable sampler state. */
export interface SamplerState {
  kind: 'uniform' | 'lossaware';
  /** T x HISTORY losses, row-major (lossaware only). */
  history?: number[];
  /** Losses recorded per timestep, at most HISTORY (lossaware only). */
  counts?: number[];
}

/** Draws B timesteps with importance weights. */
export interface TimestepSampler {
  readonly kind: 'uniform' | 'lossaware';
  sample(B: number, rng: PhiloxStream): { t: number[]; weights: number[] };
  /** Records each example's (unweighted) loss at its timestep. */
  update(t: readonly number[], losses: readonly number[]): void;
  /** The current distribution over 0..T-1. */
  probabilities(): Float64Array;
  state(): SamplerState;
  restore(s: SamplerState): void;
}

function sampleFrom(p: Float64Array, B: number, rng: PhiloxStream): { t: number[]; weights: number[] } {
  const T = p.length;
  const cdf = new Float64Array(T);
  let acc = 0;
  for (let i = 0; i < T; i++) cdf[i] = acc += p[i]!;
  const u = rng.uniform(B);
  const t: number[] = [];
  const weights: number[] = [];
  for (let b = 0; b < B; b++) {
    const x = u[b]! * acc;
    let lo = 0;
    let hi = T - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! > x) hi = mid;
      else lo = mid + 1;
    }
    t.push(lo);
    weights.push(1 / (T * (p[lo]! / acc)));
  }
  return { t, weights };
}

/** Uniform timesteps, weight 1. */
export class UniformSampler implements TimestepSampler {
  readonly kind = 'uniform';
  constructor(readonly T: number) {}
  sample(B: number, rng: PhiloxStream): { t: number[]; weights: number[] } {
    return sampleFrom(this.probabilities(), B, rng);
  }
  update(): void {}
  probabilities(): Float64Array {
    return new Float64Array(this.T).fill(1 / this.T);
  }
  state(): SamplerState {
    return { kind: 'uniform' };
  }
  restore(): void {}
}

/** DiffuSeq's LossSecondMomentResampler. */
export class LossAwareSampler implements TimestepSampler {
  readonly kind = 'lossaware';
  private history: Float64Array;
  private counts: Int32Array;
  constructor(readonly T: number) {
    this.history = new Float64Array(T * HISTORY);
    this.counts = new Int32Array(T);
  }
  /** True once every timestep has HISTORY losses. */
  warmedUp(): boolean {
    return this.counts.every((c) => c === HISTORY);
  }
  probabilities(): Float64Array {
    const T = this.T;
    const p = new Float64Array(T);
    if (!this.warmedUp()) return p.fill(1 / T);
    let sum = 0;
    for (let t = 0; t < T; t++) {
      let m = 0;
      for (let j = 0; j < HISTORY; j++) m += this.history[t * HISTORY + j]! ** 2;
      p[t] = Math.sqrt(m / HISTORY);
      sum += p[t]!;
    }
    for (let t = 0; t < T; t++) p[t] = (p[t]! / sum) * (1 - UNIFORM_PROB) + UNIFORM_PROB / T;
    return p;
  }
  sample(B: number, rng: PhiloxStream): { t: number[]; weights: number[] } {
    return sampleFrom(this.probabilities(), B, rng);
  }
  update(t: readonly number[], losses: readonly number[]): void {
    for (let i = 0; i < t.length; i++) {
      const ti = t[i]!;
      const row = ti * HISTORY;
      if (this.counts[ti] === HISTORY) {
        this.history.copyWithin(row, row + 1, row + HISTORY);
        this.history[row + HISTORY - 1] = losses[i]!;
      } else {
        this.history[row + this.counts[ti]!] = losses[i]!;
        this.counts[ti]!++;
      }
    }
  }
  state(): SamplerState {
    return { kind: 'lossaware', history: Array.from(this.history), counts: Array.from(this.counts) };
  }
  restore(s: SamplerState): void {
    if (s.kind !== 'lossaware' || !s.history || !s.counts || s.history.length !== this.T * HISTORY || s.counts.length !== this.T) {
      throw new Error('timestep sampler state does not match this sampler (kind or diffusionSteps differ)');
    }
    this.history = Float64Array.from(s.history);
    this.counts = Int32Array.from(s.counts);
  }
}

/** The sampler a config names. */
export function createSampler(kind: 'uniform' | 'lossaware', T: number): TimestepSampler {
  return kind === 'uniform' ? new UniformSampler(T) : new LossAwareSampler(T);
}
