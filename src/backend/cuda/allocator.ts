/**
 * A caching device-memory allocator: freed blocks go to a free list keyed by their rounded size and
 * are handed out again for the next request of that size class, so a training loop that allocates
 * the same activations every step stops calling cuMemAlloc / cuMemFree (which synchronise the
 * device) after its first step. On an out-of-memory error the cache is returned to the driver and
 * the allocation retried once.
 *
 * Reuse is safe without events because the backend runs all its work on one stream: a block freed
 * by the host after it queued kernels that use it is only touched again by work queued later.
 */
import { CudaError, type Driver } from './driver.js';

/** Byte granularity below 1 MiB and above it (larger blocks waste at most 1/8 or 512 KiB). */
const SMALL_ROUND = 512;
const LARGE_ROUND = 512 * 1024;
const LARGE = 1 << 20;

/** Rounds a request up to its size class. */
export function sizeClass(bytes: number): number {
  const q = bytes < LARGE ? SMALL_ROUND : LARGE_ROUND;
  return Math.ceil(bytes / q) * q;
}

/** Counters of the allocator (not tensor bytes: those are the backend's memory()). */
export interface AllocatorStats {
  /** Bytes obtained from the driver and not yet returned (in use + cached). */
  reservedBytes: number;
  /** Bytes held in the free lists. */
  cachedBytes: number;
  /** cuMemAlloc calls made (a steady state makes none). */
  driverAllocs: number;
}

/** The caching allocator of one context. */
export class CachingAllocator {
  private readonly free = new Map<number, number[]>();
  private reserved = 0;
  private cached = 0;
  private allocs = 0;

  constructor(private readonly driver: Driver) {}

  /** A block of at least `bytes` (> 0); returns its address and its class size. */
  alloc(bytes: number): { ptr: number; size: number } {
    const size = sizeClass(bytes);
    const list = this.free.get(size);
    const hit = list?.pop();
    if (hit !== undefined) {
      this.cached -= size;
      return { ptr: hit, size };
    }
    let ptr: number;
    try {
      ptr = this.driver.memAlloc(size);
    } catch (e) {
      if (!(e instanceof CudaError) || e.codeName !== 'CUDA_ERROR_OUT_OF_MEMORY' || this.cached === 0) throw e;
      // give the cached blocks back and try once more
      this.emptyCache();
      ptr = this.driver.memAlloc(size);
    }
    this.allocs++;
    this.reserved += size;
    return { ptr, size };
  }

  /** Returns a block (from alloc) to its free list. */
  release(ptr: number, size: number): void {
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(ptr);
    this.cached += size;
  }

  /** Frees every cached block back to the driver. */
  emptyCache(): void {
    if (this.cached === 0) return;
    // queued kernels may still use blocks the host already released: let them finish first
    this.driver.ctxSynchronize();
    for (const [size, list] of this.free) {
      for (const ptr of list) {
        this.driver.memFree(ptr);
        this.reserved -= size;
        this.cached -= size;
      }
    }
    this.free.clear();
  }

  stats(): AllocatorStats {
    return { reservedBytes: this.reserved, cachedBytes: this.cached, driverAllocs: this.allocs };
  }
}
