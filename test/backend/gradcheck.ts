/**
 * Central finite differences in float64: the check every backward in this package passes.
 * L = sum_k <w_k, out_k> with fixed random weights w; the analytic gradient of each input (from the
 * op's backward, fed dout_k = w_k) must match (L(x + h) - L(x - h)) / 2h elementwise.
 */
import assert from 'node:assert/strict';
import type { Backend, Tensor } from '../../src/backend/backend.js';

export interface GradCheckCase {
  /** Float64 inputs to perturb, by name. */
  inputs: Record<string, Tensor>;
  /** Runs the forward; returns the outputs (fresh tensors the harness disposes, or views it must not). */
  forward: () => Tensor[];
  /** Runs the backward given output gradients; returns the gradient of each input by name (for inputs it checks). */
  backward: (douts: Tensor[]) => Record<string, Tensor>;
  /** Step (default 1e-6) and tolerance on |num - ana| / max(1, |num|, |ana|)... see below. */
  h?: number;
  rtol?: number;
  atol?: number;
  /** Check at most this many elements per input (default: all). */
  maxElements?: number;
  /** Disposes outputs after use (default true). */
  disposeOutputs?: boolean;
}

/** Runs the check; fails the test with the first mismatching element's index and values. */
export function gradCheck(be: Backend, c: GradCheckCase, seed = 1234): void {
  const h = c.h ?? 1e-6;
  const rtol = c.rtol ?? 1e-6;
  const atol = c.atol ?? 1e-8;
  const dispose = c.disposeOutputs ?? true;
  // weights for the scalar loss
  const outs0 = c.forward();
  const weights = outs0.map((o, k) => {
    const w = be.empty(o.shape, 'float64');
    be.randomNormal(w, seed + k, 0);
    return w;
  });
  const loss = (outs: Tensor[]): number => {
    let s = 0;
    outs.forEach((o, k) => {
      const a = be.toArray(o);
      const w = be.toArray(weights[k]!);
      for (let i = 0; i < a.length; i++) s += a[i]! * w[i]!;
    });
    return s;
  };
  if (dispose) outs0.forEach((o) => o.dispose());
  const grads = c.backward(weights);
  for (const [name, x] of Object.entries(c.inputs)) {
    const g = grads[name];
    if (!g) continue;
    const ana = be.toArray(g);
    const base = be.toArray(x);
    const n = base.length;
    const idx: number[] = [];
    const max = c.maxElements ?? n;
    if (max >= n) for (let i = 0; i < n; i++) idx.push(i);
    else for (let j = 0; j < max; j++) idx.push(Math.floor(((j + 0.5) / max) * n));
    for (const i of idx) {
      const pert = Float64Array.from(base);
      pert[i] = base[i]! + h;
      be.write(x, pert);
      let o = c.forward();
      const lp = loss(o);
      if (dispose) o.forEach((t) => t.dispose());
      pert[i] = base[i]! - h;
      be.write(x, pert);
      o = c.forward();
      const lm = loss(o);
      if (dispose) o.forEach((t) => t.dispose());
      be.write(x, base);
      const num = (lp - lm) / (2 * h);
      const diff = Math.abs(num - ana[i]!);
      if (!(diff <= atol + rtol * Math.max(Math.abs(num), Math.abs(ana[i]!)))) {
        assert.fail(`gradient of ${name}[${i}]: analytic ${ana[i]} vs numeric ${num} (diff ${diff})`);
      }
    }
  }
  for (const g of Object.values(grads)) g.dispose();
  weights.forEach((w) => w.dispose());
}

/** A float64 tensor of N(0, std) values drawn from a seed. */
export function randn(be: Backend, shape: number[], seed: number, std = 1): Tensor {
  const t = be.empty(shape, 'float64');
  be.randomNormal(t, seed, 0, std);
  return t;
}
