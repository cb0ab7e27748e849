import assert from 'node:assert/strict';
import { test } from 'node:test';
import { philox4x32, philoxNormal, philoxUniform, PhiloxStream } from '../../src/backend/philox.js';

test('philox4x32-10 matches the Random123 known-answer vectors', () => {
  const out = new Uint32Array(4);
  // kat_vectors of Random123 (philox4x32_10): counter, key -> result
  philox4x32(0, 0, 0, 0, 0, 0, out);
  assert.deepEqual([...out], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
  philox4x32(0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, out);
  assert.deepEqual([...out], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
  philox4x32(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, out);
  assert.deepEqual([...out], [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]);
});

test('uniform draws are in (0, 1), depend only on (seed, counter), and look uniform', () => {
  const a = new Float64Array(10000);
  philoxUniform(a, 7, 0);
  let mean = 0;
  for (const v of a) {
    assert.ok(v > 0 && v < 1);
    mean += v / a.length;
  }
  assert.ok(Math.abs(mean - 0.5) < 0.01, `mean ${mean}`);
  // element i of a draw at offset o equals element o + i of a draw at 0 (counter-based)
  const b = new Float64Array(37);
  philoxUniform(b, 7, 1001);
  for (let i = 0; i < b.length; i++) assert.equal(b[i], a[1001 + i]);
  const c = new Float64Array(37);
  philoxUniform(c, 8, 1001);
  assert.notDeepEqual([...c], [...b]);
});

test('normal draws have mean 0 and variance 1 and are counter-addressable', () => {
  const a = new Float64Array(40000);
  philoxNormal(a, 3, 0);
  let m = 0;
  let v = 0;
  for (const x of a) m += x / a.length;
  for (const x of a) v += (x - m) ** 2 / a.length;
  assert.ok(Math.abs(m) < 0.02, `mean ${m}`);
  assert.ok(Math.abs(v - 1) < 0.03, `variance ${v}`);
  const b = new Float64Array(5);
  philoxNormal(b, 3, 13, 2);
  for (let i = 0; i < 5; i++) assert.ok(Math.abs(b[i]! - 2 * a[13 + i]!) < 1e-15);
});

test('a stream is fully described by (seed, offset)', () => {
  const s = new PhiloxStream(42);
  s.normal(10);
  const saved = s.offset;
  const x = s.uniform(5);
  const t = new PhiloxStream(42, saved);
  assert.deepEqual([...t.uniform(5)], [...x]);
  assert.throws(() => new PhiloxStream(-1), /seed/);
});
