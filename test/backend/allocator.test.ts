import assert from 'node:assert/strict';
import test from 'node:test';
import { CachingAllocator } from '../../src/backend/cuda/allocator.js';
import type { Driver } from '../../src/backend/cuda/driver.js';

/** A driver that hands out increasing addresses (the allocator calls nothing else here). */
function fakeDriver(): Driver {
  let next = 4096;
  return {
    memAlloc: (bytes: number) => {
      const p = next;
      next += bytes;
      return p;
    },
    memFree: () => undefined,
    ctxSynchronize: () => undefined,
  } as unknown as Driver;
}

test('CachingAllocator hold: blocks released during a hold stay out of the free lists until given back', () => {
  const a = new CachingAllocator(fakeDriver());
  const before = a.alloc(1000); // allocated before, released during the hold (a freed input)
  a.beginHold();
  const t1 = a.alloc(1000);
  a.release(t1.ptr, t1.size);
  const t2 = a.alloc(1000); // reuses t1's block within the hold: its new owner keeps it
  assert.equal(t2.ptr, t1.ptr);
  const t3 = a.alloc(5000);
  a.release(t3.ptr, t3.size);
  a.release(before.ptr, before.size);
  const held = a.endHold();
  assert.deepEqual(held.map((b) => b.ptr).sort(), [t3.ptr, before.ptr].sort());
  assert.equal(a.stats().cachedBytes, 0, 'nothing held is in the free lists');
  // a later request of those sizes gets new blocks, not the held ones
  const n1 = a.alloc(1000);
  const n2 = a.alloc(5000);
  assert.ok(![t3.ptr, before.ptr, t2.ptr].includes(n1.ptr) && ![t3.ptr, before.ptr, t2.ptr].includes(n2.ptr));
  // given back, they are handed out again
  for (const b of held) a.release(b.ptr, b.size);
  assert.equal(a.alloc(5000).ptr, t3.ptr);
  // endHold(false): the released blocks simply stay free
  a.beginHold();
  a.release(n1.ptr, n1.size);
  assert.deepEqual(a.endHold(false), []);
  assert.equal(a.alloc(1000).ptr, n1.ptr);
});
