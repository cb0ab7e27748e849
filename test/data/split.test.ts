import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { collect, groupBySource, pick, readPairs, splitBySeed, splitGroupsBySeed, SplitMix32 } from '../../src/data/index.js';
import { fixture } from './tmp.js';

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

describe('SplitMix32', () => {
  it('matches an independent implementation (Python, integer arithmetic)', () => {
    const r = new SplitMix32(0);
    assert.deepEqual([r.nextUint32(), r.nextUint32(), r.nextUint32(), r.nextUint32()], [2462723854, 1020716019, 454327756, 1275600319]);
  });

  it('resumes from a saved state', () => {
    const a = new SplitMix32(9);
    a.nextUint32();
    const b = SplitMix32.fromState(a.state);
    assert.deepEqual([a.nextUint32(), a.nextInt(10), a.nextInt(3)], [b.nextUint32(), b.nextInt(10), b.nextInt(3)]);
  });

  it('nextInt stays in range and hits every value; seeds must be integers', () => {
    const r = new SplitMix32(5);
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) {
      const x = r.nextInt(7);
      assert.ok(x >= 0 && x < 7);
      seen.add(x);
    }
    assert.equal(seen.size, 7);
    assert.throws(() => new SplitMix32(1.5), /seed must be an integer, got 1.5/);
    assert.notEqual(new SplitMix32(2 ** 32 + 1).nextUint32(), new SplitMix32(1).nextUint32(), 'high bits of a seed count');
  });
});

describe('splitBySeed', () => {
  it('golden split (cross-checked in Python): the same seed always gives this split', () => {
    const s = splitBySeed(20, { valid: 0.1, test: 0.1, seed: 7 });
    assert.deepEqual(s, {
      valid: [0, 12],
      test: [8, 15],
      train: [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 13, 14, 16, 17, 18, 19],
    });
    assert.deepEqual(splitBySeed(20, { valid: 0.1, test: 0.1, seed: 7 }), s);
  });

  it('exact sizes, disjoint parts covering every index, sorted; another seed another split', () => {
    const s = splitBySeed(2000, { valid: 0.05, test: 0.05, seed: 123 });
    assert.deepEqual([s.train.length, s.valid.length, s.test.length], [1800, 100, 100]);
    assert.deepEqual(
      [...s.train, ...s.valid, ...s.test].sort((a, b) => a - b),
      range(2000),
    );
    for (const part of [s.train, s.valid, s.test]) assert.deepEqual(part, [...part].sort((a, b) => a - b));
    assert.notDeepEqual(splitBySeed(2000, { valid: 0.05, test: 0.05, seed: 124 }).valid, s.valid);
  });

  it('rounds counts and never overdraws', () => {
    const s = splitBySeed(10, { valid: 0.05, test: 0.05, seed: 1 }); // round(0.5) = 1 each
    assert.deepEqual([s.train.length, s.valid.length, s.test.length], [8, 1, 1]);
    const t = splitBySeed(3, { valid: 0.5, test: 0.5, seed: 1 }); // round(1.5) = 2, then only 1 left
    assert.deepEqual([t.train.length, t.valid.length, t.test.length], [0, 2, 1]);
    assert.deepEqual(splitBySeed(0, { valid: 0.1, seed: 1 }), { train: [], valid: [], test: [] });
  });

  it('rejects bad fractions', () => {
    assert.throws(() => splitBySeed(10, { valid: 1.5, seed: 1 }), /valid must be a fraction in \[0, 1\], got 1.5/);
    assert.throws(() => splitBySeed(10, { valid: 0.6, test: 0.6, seed: 1 }), ConfigError);
    assert.throws(() => splitBySeed(10, { valid: Number.NaN, seed: 1 }), ConfigError);
  });
});

describe('grouping by source (multi-reference data)', () => {
  it('WikiAuto fixture: 48 pairs are 6 complex sentences with 8 references each', async () => {
    const pairs = await collect(readPairs(fixture('wikiauto-valid-48.jsonl')));
    const groups = groupBySource(pairs);
    assert.equal(groups.length, 6);
    assert.deepEqual(
      groups.map((g) => g.refs.length),
      [8, 8, 8, 8, 8, 8],
    );
    assert.deepEqual(groups[1]!.indices, [8, 9, 10, 11, 12, 13, 14, 15]);
    assert.deepEqual(
      groups[1]!.refs,
      pairs.slice(8, 16).map((p) => p.trg),
    );
    assert.ok(groups[0]!.src.startsWith('Adjacent counties are Marin'));
  });

  it('groups identical sources wherever they are, in order of first appearance', () => {
    const groups = groupBySource([
      { src: 'x', trg: '1' },
      { src: 'y', trg: '2' },
      { src: 'x', trg: '3' },
    ]);
    assert.deepEqual(groups, [
      { src: 'x', refs: ['1', '3'], indices: [0, 2] },
      { src: 'y', refs: ['2'], indices: [1] },
    ]);
  });

  it('a grouped split never puts one source in two parts', async () => {
    const pairs = await collect(readPairs(fixture('wikiauto-valid-48.jsonl')));
    const groups = groupBySource(pairs);
    const s = splitGroupsBySeed(groups, { valid: 1 / 6, test: 1 / 6, seed: 3 });
    assert.deepEqual([s.train.length, s.valid.length, s.test.length], [32, 8, 8]);
    const srcs = (ids: number[]): Set<string> => new Set(pick(pairs, ids).map((p) => p.src));
    const [tr, va, te] = [srcs(s.train), srcs(s.valid), srcs(s.test)];
    assert.deepEqual([tr.size, va.size, te.size], [4, 1, 1]);
    for (const x of va) assert.ok(!tr.has(x) && !te.has(x));
    for (const x of te) assert.ok(!tr.has(x));
    assert.deepEqual(
      [...s.train, ...s.valid, ...s.test].sort((a, b) => a - b),
      range(48),
    );
  });

  it('pick rejects an index out of range', () => {
    assert.deepEqual(pick(['a', 'b', 'c'], [2, 0]), ['c', 'a']);
    assert.throws(() => pick(['a'], [1]), /pick: index 1 out of range \[0, 1\)/);
  });
});
