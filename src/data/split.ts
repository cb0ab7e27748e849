/**
 * Deterministic train/valid/test splits for datasets that ship as one file, and grouping of pairs that
 * share a source (multi-reference data such as WikiAuto-GEM2021, 8 references per complex sentence).
 *
 * Splits come from {@link SplitMix32}, never Math.random, so a seed gives the same split on every
 * platform and Node version, and a held-out set stays held out across runs.
 */
import { ConfigError } from '../errors.js';
import { SplitMix32 } from './random.js';

/** Options of {@link splitBySeed}. */
export interface SplitOptions {
  /** Fraction of items for validation (default 0). */
  valid?: number;
  /** Fraction of items for test (default 0). */
  test?: number;
  /** Seed of the split. */
  seed: number;
}

/** A split as ascending index arrays; together they hold every index exactly once. */
export interface SplitIndices {
  /** Indices for training (everything not held out). */
  readonly train: number[];
  /** Indices held out for validation. */
  readonly valid: number[];
  /** Indices held out for test. */
  readonly test: number[];
}

function checkFraction(name: string, v: number): void {
  if (!(typeof v === 'number' && v >= 0 && v <= 1)) throw new ConfigError(`${name} must be a fraction in [0, 1], got ${String(v)}`);
}

/**
 * Splits indices 0..n-1 by seed: a seeded shuffle, then the first round(valid n) indices go to valid,
 * the next round(test n) to test, the rest to train; each part is sorted ascending (file order).
 * Counts are exact (not per-item coin flips), so a 5% split of 2000 is exactly 100.
 *
 * @throws ConfigError for fractions outside [0, 1] or summing to more than 1.
 */
export function splitBySeed(n: number, options: SplitOptions): SplitIndices {
  if (!Number.isSafeInteger(n) || n < 0) throw new ConfigError(`splitBySeed: n must be a non-negative integer, got ${String(n)}`);
  const valid = options.valid ?? 0;
  const test = options.test ?? 0;
  checkFraction('valid', valid);
  checkFraction('test', test);
  if (valid + test > 1) throw new ConfigError(`valid + test must be at most 1, got ${valid + test}`);
  const order: number[] = [];
  for (let i = 0; i < n; i++) order.push(i);
  new SplitMix32(options.seed).shuffle(order);
  const nValid = Math.round(valid * n);
  const nTest = Math.min(Math.round(test * n), n - nValid); // rounding both up must not overdraw
  const asc = (a: number, b: number): number => a - b;
  return {
    valid: order.slice(0, nValid).sort(asc),
    test: order.slice(nValid, nValid + nTest).sort(asc),
    train: order.slice(nValid + nTest).sort(asc),
  };
}

/** Pairs sharing one source: the source, all its targets (references) and the pairs' indices. */
export interface SourceGroup {
  /** The shared source text. */
  readonly src: string;
  /** The targets of the group's pairs, in input order. */
  readonly refs: string[];
  /** Indices of the group's pairs in the input, ascending. */
  readonly indices: number[];
}

/**
 * Groups pairs by identical source (exact string equality), in order of first appearance. Pairs with
 * the same source are grouped wherever they are, not only when consecutive, so that a split over
 * groups can never leak a source from train into test.
 */
export function groupBySource(pairs: Iterable<{ readonly src: string; readonly trg: string }>): SourceGroup[] {
  const groups: SourceGroup[] = [];
  const bySrc = new Map<string, SourceGroup>();
  let i = 0;
  for (const p of pairs) {
    let g = bySrc.get(p.src);
    if (g === undefined) {
      g = { src: p.src, refs: [], indices: [] };
      bySrc.set(p.src, g);
      groups.push(g);
    }
    g.refs.push(p.trg);
    g.indices.push(i++);
  }
  return groups;
}

/**
 * Splits groups (e.g. from {@link groupBySource}) by seed as {@link splitBySeed} does, then returns the
 * item indices of each part, ascending. The fractions count groups (sources), not items.
 */
export function splitGroupsBySeed(groups: readonly { readonly indices: readonly number[] }[], options: SplitOptions): SplitIndices {
  const g = splitBySeed(groups.length, options);
  const expand = (ids: number[]): number[] => ids.flatMap((k) => [...groups[k]!.indices]).sort((a, b) => a - b);
  return { train: expand(g.train), valid: expand(g.valid), test: expand(g.test) };
}

/** Picks the items at `indices` (e.g. one part of a split). */
export function pick<T>(items: readonly T[], indices: readonly number[]): T[] {
  return indices.map((i) => {
    if (!Number.isInteger(i) || i < 0 || i >= items.length) throw new ConfigError(`pick: index ${i} out of range [0, ${items.length})`);
    return items[i]!;
  });
}
