import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IntRanges, rangeOf } from '../../src/backend/cuda/int-ranges.js';

test('IntRanges: set by whole writes, widened by partial ones only when known, dropped by unknown writes', () => {
  const r = new IntRanges();
  const a = {};
  assert.equal(r.get(a), null);
  assert.equal(r.within(a, 100), false, 'unknown: must be read back');
  r.wrote(a, false, [0, 3]);
  assert.equal(r.get(a), null, 'a partial write cannot make an unknown buffer known');
  r.wrote(a, true, [2, 5]);
  assert.deepEqual(r.get(a), [2, 5]);
  assert.equal(r.within(a, 6), true);
  assert.equal(r.within(a, 5), false, '5 is not below 5');
  r.wrote(a, false, [-1, 4]);
  assert.deepEqual(r.get(a), [-1, 5], 'widened to cover both');
  assert.equal(r.within(a, 1000), false, 'negative ids are never within');
  r.wrote(a, true, [1, 1]);
  assert.deepEqual(r.get(a), [1, 1], 'a whole write replaces');
  r.wrote(a, false, null);
  assert.equal(r.get(a), null, 'any write the host cannot bound forgets');
  const b = {};
  r.wrote(b, true, rangeOf([]));
  assert.equal(r.within(b, 0), true, 'no values: nothing to check');
});

test('rangeOf: min and max of values', () => {
  assert.deepEqual(rangeOf([3, -2, 7, 0]), [-2, 7]);
  assert.deepEqual(rangeOf(new Int32Array([5])), [5, 5]);
  assert.deepEqual(rangeOf([]), [Infinity, -Infinity]);
});
