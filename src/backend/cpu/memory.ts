/**
 * The CPU backend's memory: one shared WebAssembly.Memory (so SIMD kernels and worker threads read
 * tensors in place, with no copies) and a first-fit allocator with coalescing over it.
 *
 * Why shared memory: growing a non-shared wasm memory detaches its ArrayBuffer and silently empties
 * every typed-array view; a shared memory's old SharedArrayBuffer stays valid, so existing tensors'
 * views keep working after growth. The cost is wasm32's 4 GiB ceiling for all live CPU tensors.
 */
import { MoeDiffuseqError } from '../../errors.js';

const PAGE = 65536;
const MAX_PAGES = 65536; // 4 GiB
const ALIGN = 64;

/** Thrown when the 4 GiB of the CPU backend's linear memory are exhausted. */
export class OutOfMemoryError extends MoeDiffuseqError {}

/** A free or used byte range [offset, offset + size). */
interface Block {
  offset: number;
  size: number;
}

/** Allocator over a shared WebAssembly.Memory; counts live and peak bytes. */
export class LinearMemory {
  readonly memory: WebAssembly.Memory;
  private free: Block[] = []; // sorted by offset, never adjacent (coalesced)
  private top: number; // first byte never handed out
  private readonly used = new Map<number, number>();
  /** Offsets of allocations that are the backend's own workspace: not counted as tensor memory. */
  private readonly internal = new Set<number>();
  liveBytes = 0;
  peakBytes = 0;

  constructor(reservedBytes: number) {
    this.memory = new WebAssembly.Memory({ initial: 16, maximum: MAX_PAGES, shared: true });
    this.top = Math.ceil(reservedBytes / ALIGN) * ALIGN;
  }

  /** The current buffer (a new object after growth; old views stay valid). */
  get buffer(): SharedArrayBuffer {
    return this.memory.buffer as unknown as SharedArrayBuffer;
  }

  /** Live allocations, workspace excluded. */
  get liveAllocations(): number {
    return this.used.size - this.internal.size;
  }

  /**
   * Allocates `bytes` (rounded up to 64) and returns the byte offset. `internal` marks the backend's
   * own workspace (kernel scratch), which the live/peak counters leave out.
   */
  alloc(bytes: number, internal = false): number {
    const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    let offset = -1;
    for (let i = 0; i < this.free.length; i++) {
      const b = this.free[i]!;
      if (b.size >= size) {
        offset = b.offset;
        if (b.size === size) this.free.splice(i, 1);
        else {
          b.offset += size;
          b.size -= size;
        }
        break;
      }
    }
    if (offset < 0) {
      offset = this.top;
      this.ensure(offset + size);
      this.top += size;
    }
    this.used.set(offset, size);
    if (internal) this.internal.add(offset);
    else {
      this.liveBytes += size;
      if (this.liveBytes > this.peakBytes) this.peakBytes = this.liveBytes;
    }
    return offset;
  }

  /** Frees an allocation made by alloc. */
  release(offset: number): void {
    const size = this.used.get(offset);
    if (size === undefined) throw new Error(`LinearMemory: double free or foreign offset ${offset}`);
    this.used.delete(offset);
    if (!this.internal.delete(offset)) this.liveBytes -= size;
    // insert in order, then coalesce with the neighbours; a block ending at top lowers top
    let lo = 0;
    let hi = this.free.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.free[mid]!.offset < offset) lo = mid + 1;
      else hi = mid;
    }
    const blk: Block = { offset, size };
    this.free.splice(lo, 0, blk);
    const next = this.free[lo + 1];
    if (next && blk.offset + blk.size === next.offset) {
      blk.size += next.size;
      this.free.splice(lo + 1, 1);
    }
    const prev = this.free[lo - 1];
    if (prev && prev.offset + prev.size === blk.offset) {
      prev.size += blk.size;
      this.free.splice(lo, 1);
    }
    const last = this.free[this.free.length - 1];
    if (last && last.offset + last.size === this.top) {
      this.top = last.offset;
      this.free.pop();
    }
  }

  private ensure(end: number): void {
    const have = this.memory.buffer.byteLength;
    if (end <= have) return;
    const pages = Math.ceil((end - have) / PAGE);
    // grow geometrically (x1.25) to keep the number of grow calls small
    const want = Math.max(pages, Math.ceil(have / PAGE / 4));
    const cur = have / PAGE;
    const grow = Math.min(want, MAX_PAGES - cur);
    if (grow < pages) {
      throw new OutOfMemoryError(
        `CPU backend out of memory: ${(end / 2 ** 30).toFixed(2)} GiB needed, the WebAssembly limit is 4 GiB`,
        'use a smaller batch or model on the CPU, or --device cuda',
      );
    }
    this.memory.grow(grow);
  }

  resetPeak(): void {
    this.peakBytes = this.liveBytes;
  }
}
