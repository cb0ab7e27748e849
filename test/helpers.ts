/** Shared test utilities: closeness checks that print the first mismatches and the max difference. */
import assert from 'node:assert/strict';

/** Asserts |a - b| <= atol + rtol |b| elementwise; on failure names the first mismatches. */
export function assertAllClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  { rtol = 1e-5, atol = 1e-8, label = '' }: { rtol?: number; atol?: number; label?: string } = {},
): void {
  assert.equal(actual.length, expected.length, `${label} length ${actual.length} != ${expected.length}`);
  const bad: string[] = [];
  let maxDiff = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!;
    const b = expected[i]!;
    const d = Math.abs(a - b);
    if (!(d <= atol + rtol * Math.abs(b))) {
      if (bad.length < 5) bad.push(`[${i}] ${a} vs ${b}`);
      maxDiff = Math.max(maxDiff, Number.isNaN(d) ? Infinity : d);
    }
  }
  if (bad.length) assert.fail(`${label} not close (rtol ${rtol}, atol ${atol}); max diff ${maxDiff}; first: ${bad.join(', ')}`);
}

/** Relative error ||a - b|| / ||b|| (the measure METHOD.md uses). */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-300);
}

/**
 * max |a - b| / max |b| and where the largest difference is; a non-finite `a` where `b` is finite
 * gives Infinity (the GPU-against-reference measure of the CUDA tests).
 */
export function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): { err: number; at: number } {
  assert.equal(a.length, b.length, 'lengths differ');
  let maxRef = 0;
  let maxDiff = 0;
  let at = -1;
  for (let i = 0; i < b.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (!Number.isFinite(x) && Number.isFinite(y)) return { err: Infinity, at: i };
    maxRef = Math.max(maxRef, Math.abs(y));
    const d = Math.abs(x - y);
    if (d > maxDiff) {
      maxDiff = d;
      at = i;
    }
  }
  return { err: maxRef > 0 ? maxDiff / maxRef : maxDiff, at };
}

/** The cosine of the angle between two vectors, and the ratio of their norms |a| / |b| (gradients against a reference). */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): { cos: number; normRatio: number } {
  assert.equal(a.length, b.length, 'lengths differ');
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < b.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! ** 2;
    nb += b[i]! ** 2;
  }
  return { cos: dot / Math.sqrt(na * nb), normRatio: Math.sqrt(na / nb) };
}

/** f() with process.env[name] set to `value` (unset for undefined), the earlier value put back after. */
export function withEnv<T>(name: string, value: string | undefined, f: () => T): T {
  const saved = process.env[name];
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
  try {
    return f();
  } finally {
    if (saved === undefined) delete process.env[name];
    else process.env[name] = saved;
  }
}
