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
  /** Between beginHold and endHold: the blocks released, in order (a block may appear twice). */
  private holding: { ptr: number; size: number }[] | null = null;

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
    this.holding?.push({ ptr, size });
  }

  /**
   * Starts noting the blocks released from now on (a graph recording: work recorded on a block the
   * host releases meanwhile runs again at every replay, so the block must not go to anyone else).
   */
  beginHold(): void {
    this.holding = [];
  }

  /**
   * Ends the note begun by beginHold: the blocks released since and still free are taken out of the
   * free lists and returned (give them back with release once nothing replays their work); with
   * `keep` false they stay free and nothing is returned.
   */
  endHold(keep = true): { ptr: number; size: number }[] {
    const noted = this.holding ?? [];
    this.holding = null;
    if (!keep) return [];
    const held: { ptr: number; size: number }[] = [];
    for (const b of noted) {
      const list = this.free.get(b.size);
      const i = list ? list.lastIndexOf(b.ptr) : -1;
      // not found: handed out again during the hold (its new owner keeps it), or noted twice
      if (i < 0) continue;
      list!.splice(i, 1);
      this.cached -= b.size;
      held.push(b);
    }
    return held;
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
