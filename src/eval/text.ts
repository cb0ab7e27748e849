/**
 * Text helpers shared by the metrics. The reference implementations are Python programs, and the
 * small differences between Python's string functions and JavaScript's change scores on real data,
 * so these reproduce Python's behaviour: `str.split()` with no argument, `str.strip()`, and exact
 * floating-point summation (`math.fsum`).
 */

/**
 * The characters Python's `str.isspace()` accepts. JavaScript's `\s` differs: it lacks the
 * information separators U+001C..U+001F and NEL U+0085 (which Python splits on) and has the BOM
 * U+FEFF (which Python keeps inside a token).
 */
const PY_WS_CLASS = '\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const PY_WS_RUN = new RegExp(`[${PY_WS_CLASS}]+`, 'g');
const PY_WS_TRAILING = new RegExp(`[${PY_WS_CLASS}]+$`);
const PY_WS_LEADING = new RegExp(`^[${PY_WS_CLASS}]+`);

/** Python's `s.split()`: splits on runs of whitespace, no empty tokens. */
export function pySplit(s: string): string[] {
  const out = s.split(PY_WS_RUN);
  // a leading or trailing whitespace run leaves one empty string at that end
  if (out.length > 0 && out[0] === '') out.shift();
  if (out.length > 0 && out[out.length - 1] === '') out.pop();
  return out;
}

/** Python's `s.rstrip()`. */
export function pyRstrip(s: string): string {
  return s.replace(PY_WS_TRAILING, '');
}

/** Python's `s.strip()`. */
export function pyStrip(s: string): string {
  return s.replace(PY_WS_TRAILING, '').replace(PY_WS_LEADING, '');
}

/**
 * Counts the n-grams of one order. Keys join the tokens with a space, which is unambiguous because
 * every tokenizer used here splits on whitespace, so no token contains a space.
 */
export function countNgrams(tokens: readonly string[], n: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i + n <= tokens.length; i++) {
    const key = n === 1 ? tokens[i]! : tokens.slice(i, i + n).join(' ');
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

/** Number of n-grams of order n in a sequence of `length` tokens. */
export function ngramTotal(length: number, n: number): number {
  return Math.max(0, length - n + 1);
}

/**
 * Exactly rounded sum of floats, as Python's `math.fsum` (Shewchuk's algorithm, the one CPython
 * uses): NLTK sums the weighted log precisions with it, and a naive sum can differ in the last bit.
 */
export function fsum(values: Iterable<number>): number {
  const partials: number[] = [];
  let special = 0;
  for (let x of values) {
    if (!Number.isFinite(x)) {
      special += x;
      continue;
    }
    let i = 0;
    for (let j = 0; j < partials.length; j++) {
      let y = partials[j]!;
      if (Math.abs(x) < Math.abs(y)) [x, y] = [y, x];
      const hi = x + y;
      const lo = y - (hi - x);
      if (lo !== 0) partials[i++] = lo;
      x = hi;
    }
    partials.length = i;
    partials.push(x);
  }
  if (special !== 0 || Number.isNaN(special)) return special;
  // add the partials from the top, then correct the rounding of the last step (half-even ties)
  let n = partials.length;
  if (n === 0) return 0;
  let hi = partials[--n]!;
  let lo = 0;
  while (n > 0) {
    const x = hi;
    const y = partials[--n]!;
    hi = x + y;
    const yr = hi - x;
    lo = y - yr;
    if (lo !== 0) break;
  }
  if (n > 0 && ((lo < 0 && partials[n - 1]! < 0) || (lo > 0 && partials[n - 1]! > 0))) {
    const y = lo * 2;
    const x = hi + y;
    const yr = x - hi;
    if (y === yr) hi = x;
  }
  return hi;
}

/** Arithmetic mean; NaN for an empty list (callers reject empty corpora before this). */
export function mean(values: readonly number[]): number {
  let s = 0;
  for (const v of values) s += v;
  return s / values.length;
}
