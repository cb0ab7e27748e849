/**
 * Scalar special functions for the CPU reference paths. erf64 is accurate to double rounding (the
 * float64 gradient checks and the float64 check-loss command must agree with an independent
 * implementation to 1e-9); erf32 is the fast Chebyshev-fitted form (fractional error < 1.2e-7, below
 * float32 resolution) also used by the WebAssembly kernels.
 */

const TWO_OVER_SQRT_PI = 1.1283791670955126;
const INV_SQRT_PI = 0.5641895835477563;
const SQRT1_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 0.3989422804014327;

/** erf(x) to double precision. */
export function erf64(x: number): number {
  const a = Math.abs(x);
  let r: number;
  if (a < 3) {
    // erf(x) = 2/sqrt(pi) e^{-x^2} sum_n 2^n x^{2n+1} / (2n+1)!!: all terms positive, no cancellation
    const x2 = a * a;
    let term = a;
    let sum = a;
    for (let n = 1; n < 200; n++) {
      term *= (2 * x2) / (2 * n + 1);
      sum += term;
      if (term < 1e-17 * sum) break;
    }
    r = TWO_OVER_SQRT_PI * Math.exp(-x2) * sum;
  } else if (a < 6.5) {
    // erfc(x) = e^{-x^2}/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...))))), evaluated backwards
    let f = a;
    for (let k = 60; k >= 1; k--) f = a + k / 2 / f;
    r = 1 - (INV_SQRT_PI * Math.exp(-a * a)) / f;
  } else {
    r = 1;
  }
  return x < 0 ? -r : r;
}

/** erfc with fractional error < 1.2e-7 (Numerical Recipes' Chebyshev fit). */
export function erfc32(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? r : 2 - r;
}

/** GELU(x) = x Phi(x), erf form, double precision. */
export function gelu64(x: number): number {
  return 0.5 * x * (1 + erf64(x * SQRT1_2));
}
/** d GELU / dx = Phi(x) + x phi(x), double precision. */
export function geluGrad64(x: number): number {
  return 0.5 * (1 + erf64(x * SQRT1_2)) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);
}
/** GELU with the fast erfc (for float32 data). */
export function gelu32(x: number): number {
  return 0.5 * x * erfc32(-x * SQRT1_2);
}
/** d GELU / dx with the fast erfc (for float32 data). */
export function geluGrad32(x: number): number {
  return 0.5 * erfc32(-x * SQRT1_2) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);
}
/** SiLU(x) = x sigmoid(x). */
export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}
/** d SiLU / dx. */
export function siluGrad(x: number): number {
  const s = 1 / (1 + Math.exp(-x));
  return s * (1 + x * (1 - s));
}
