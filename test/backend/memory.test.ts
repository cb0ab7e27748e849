import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LinearMemory } from '../../src/backend/cpu/memory.js';
import { CpuBackend } from '../../src/backend/cpu/backend.js';

test('the allocator reuses and coalesces freed blocks', () => {
  const m = new LinearMemory(65536);
  const a = m.alloc(100);
  const b = m.alloc(1000);
  const c = m.alloc(64);
  assert.equal(m.liveBytes, 128 + 1024 + 64);
  m.release(b);
  const d = m.alloc(500); // fits in b's hole
  assert.equal(d, b);
  m.release(d);
  m.release(a);
  // a and b's hole coalesce: a 1152-byte block at a's offset
  const e = m.alloc(1100);
  assert.equal(e, a);
  m.release(e);
  m.release(c);
  assert.equal(m.liveBytes, 0);
  assert.equal(m.alloc(64), 65536, 'everything freed: the top returns to the start');
  assert.throws(() => m.release(12345), /double free/);
});

test('live bytes return to the baseline after 10,000 op calls', () => {
  const be = new CpuBackend({ threads: 1 });
  const base = be.memory();
  const x = be.zeros([7, 13]);
  const w = be.zeros([5, 13]);
  for (let i = 0; i < 10000; i++) {
    const y = be.empty([7, 5]);
    be.matmul(y, x, w, { transB: true });
    const z = be.empty([7, 5]);
    be.activation(z, y, i % 2 ? 'tanh' : 'gelu');
    const v = be.view(z, 5, [2, 5]);
    be.axpby(v, 2, v);
    y.dispose();
    z.dispose();
    v.dispose();
  }
  x.dispose();
  w.dispose();
  assert.equal(be.memory().liveBytes, base.liveBytes);
  assert.equal(be.memory().liveTensors, base.liveTensors);
  be.close();
});

test('growth beyond the first pages keeps earlier tensors valid', () => {
  const be = new CpuBackend({ threads: 1 });
  const a = be.fromArray([1, 2, 3], [3]);
  const big = be.zeros([8 << 20]); // 32 MiB: forces the memory to grow
  assert.deepEqual([...be.toArray(a)], [1, 2, 3]);
  be.axpby(a, 2, a);
  assert.deepEqual([...be.toArray(a)], [2, 4, 6]);
  big.dispose();
  a.dispose();
  be.close();
});
