/** The kernel thread pool: a stale wake-up must never make a worker run a job twice. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CpuBackend } from '../../src/backend/cpu/backend.js';
import type { KernelPool } from '../../src/backend/cpu/kernels.js';

test('a late notify after a finished job does not run the job again (accumulation stays exact)', async () => {
  const be = new CpuBackend({ threads: 2 });
  const pool = (be as unknown as { pool: KernelPool }).pool;
  const n = 96;
  const a = be.empty([n, n]);
  const b = be.empty([n, n]);
  be.randomNormal(a, 1, 0);
  be.randomNormal(b, 2, 0);
  const once = be.zeros([n, n]);
  be.matmul(once, a, b, { beta: 1 }); // uses both threads (n^3 multiply-adds is over the threshold)
  const acc = be.zeros([n, n]);
  for (let r = 0; r < 20; r++) {
    be.matmul(acc, a, b, { beta: 1 });
    // what a descheduled caller can produce: notifies arriving after the worker finished the job
    Atomics.notify(pool.control, 0);
    Atomics.notify(pool.control, 0);
    await new Promise((res) => setTimeout(res, 5));
    assert.equal(Atomics.load(pool.control, 1), 0, `pending count after job ${r}`);
  }
  const x = be.toArray(acc);
  const y = be.toArray(once);
  for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i]! - 20 * y[i]!) <= 1e-3 * (1 + Math.abs(20 * y[i]!)), `element ${i}: ${x[i]} vs ${20 * y[i]!}`);
  be.close();
});
