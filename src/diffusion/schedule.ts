/**
 * Noise schedules (SPEC section 3), built the way DiffuSeq builds them, in float64:
 * beta_i = min(1 - a((i+1)/T) / a(i/T), 0.999), alphaBar_t = prod_{i<=t} (1 - beta_i).
 */
import type { ModelConfig } from '../model/config.js';

/** alphaBar_t for t = 0..T-1. */
export function alphaBars(schedule: ModelConfig['schedule'], T: number): Float64Array {
  const ab = new Float64Array(T);
  let prod = 1;
  if (schedule === 'linear') {
    // DDPM's linear betas from 1e-4 to 0.02, scaled by 1000 / T (numpy linspace's endpoints)
    const scale = 1000 / T;
    const lo = scale * 1e-4;
    const hi = scale * 0.02;
    for (let i = 0; i < T; i++) {
      const beta = T === 1 ? lo : lo + ((hi - lo) * i) / (T - 1);
      prod *= 1 - beta;
      ab[i] = prod;
    }
    return ab;
  }
  const a = schedule === 'sqrt' ? (s: number) => 1 - Math.sqrt(s + 1e-4) : (s: number) => Math.cos(((s + 0.008) / 1.008) * Math.PI / 2) ** 2;
  for (let i = 0; i < T; i++) {
    const beta = Math.min(1 - a((i + 1) / T) / a(i / T), 0.999);
    prod *= 1 - beta;
    ab[i] = prod;
  }
  return ab;
}

/**
 * The sinusoidal time embedding of SPEC 2.2 for one timestep: t' = t * 1000 / T, half = e/2,
 * freq_i = exp(-ln(10000) i / half), [cos(t' freq) | sin(t' freq)], a zero appended if e is odd.
 */
export function timestepEmbedding(t: number, e: number, T: number, out: Float64Array, offset = 0): void {
  const half = Math.floor(e / 2);
  const ts = (t * 1000) / T;
  for (let i = 0; i < half; i++) {
    const arg = ts * Math.exp((-Math.log(10000) * i) / half);
    out[offset + i] = Math.cos(arg);
    out[offset + half + i] = Math.sin(arg);
  }
  if (e % 2) out[offset + e - 1] = 0;
}
