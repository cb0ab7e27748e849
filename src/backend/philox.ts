/**
 * Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): a
 * counter-based generator. Element n of a stream is a pure function of (seed, n), so the CPU and the
 * GPU draw the same numbers for the same seed, any element can be drawn independently (dropout masks
 * are regenerated in the backward instead of stored), and a stream's state is just an offset.
 *
 * Layout (the contract every backend follows): counter block c = floor(n / 4) is encrypted as
 * ctr = [c mod 2^32, floor(c / 2^32), 0, 0] under key = [seed mod 2^32, floor(seed / 2^32)];
 * word n mod 4 of the result is element n.
 * - uniform(n) = ((word >>> 8) + 0.5) * 2^-24, in (0, 1) and exact in float32;
 * - normal(n): Box-Muller on the word pairs (0, 1) and (2, 3) of the block, u = (word + 0.5) 2^-32,
 *   r = sqrt(-2 ln u_first), theta = 2 pi u_second; even lanes take r cos(theta), odd lanes r sin(theta).
 */

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;

/** High 32 bits of the 64-bit product of two uint32 (exact, via 16-bit halves). */
function mulhi(a: number, b: number): number {
  const al = a & 0xffff;
  const ah = a >>> 16;
  const bl = b & 0xffff;
  const bh = b >>> 16;
  const ll = al * bl;
  const lh = al * bh;
  const hl = ah * bl;
  const mid = (ll >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  return (ah * bh + (lh >>> 16) + (hl >>> 16) + Math.floor(mid / 65536)) >>> 0;
}

/** Encrypts one counter block; writes 4 uint32 words into `out`. */
export function philox4x32(c0: number, c1: number, c2: number, c3: number, k0: number, k1: number, out: Uint32Array): void {
  for (let r = 0; r < 10; r++) {
    const hi0 = mulhi(M0, c0);
    const lo0 = Math.imul(M0, c0) >>> 0;
    const hi1 = mulhi(M1, c2);
    const lo1 = Math.imul(M1, c2) >>> 0;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
    k0 = (k0 + W0) >>> 0;
    k1 = (k1 + W1) >>> 0;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

const TWO32 = 4294967296;

function checkSeed(seed: number, offset: number): void {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`philox: seed must be a non-negative safe integer (got ${seed})`);
  if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`philox: offset must be a non-negative safe integer (got ${offset})`);
}

/** Iterates the blocks covering elements [offset, offset + count), calling fn(block words, first n). */
function forBlocks(seed: number, offset: number, count: number, fn: (w: Uint32Array, n0: number) => void): void {
  checkSeed(seed, offset);
  const k0 = seed % TWO32 >>> 0;
  const k1 = Math.floor(seed / TWO32) >>> 0;
  const w = new Uint32Array(4);
  const first = Math.floor(offset / 4);
  const last = Math.floor((offset + count - 1) / 4);
  for (let c = first; c <= last && count > 0; c++) {
    philox4x32(c % TWO32 >>> 0, Math.floor(c / TWO32) >>> 0, 0, 0, k0, k1, w);
    fn(w, c * 4);
  }
}

/** Fills out[i] with uniform(seed, offset + i) in (0, 1). */
export function philoxUniform(out: { length: number; [i: number]: number }, seed: number, offset: number): void {
  const n = out.length;
  forBlocks(seed, offset, n, (w, n0) => {
    for (let l = 0; l < 4; l++) {
      const i = n0 + l - offset;
      if (i >= 0 && i < n) out[i] = ((w[l]! >>> 8) + 0.5) * 5.9604644775390625e-8;
    }
  });
}

/** Fills out[i] with std * normal(seed, offset + i). */
export function philoxNormal(out: { length: number; [i: number]: number }, seed: number, offset: number, std = 1): void {
  const n = out.length;
  const z = new Float64Array(4);
  forBlocks(seed, offset, n, (w, n0) => {
    for (let p = 0; p < 2; p++) {
      const u1 = (w[2 * p]! + 0.5) / TWO32;
      const u2 = (w[2 * p + 1]! + 0.5) / TWO32;
      const r = Math.sqrt(-2 * Math.log(u1));
      const th = 2 * Math.PI * u2;
      z[2 * p] = r * Math.cos(th);
      z[2 * p + 1] = r * Math.sin(th);
    }
    for (let l = 0; l < 4; l++) {
      const i = n0 + l - offset;
      if (i >= 0 && i < n) out[i] = std * z[l]!;
    }
  });
}

/**
 * A host-side stream over one seed: successive draws take successive counter ranges, so the
 * generator's whole state is (seed, offset) and can be saved in a checkpoint.
 */
export class PhiloxStream {
  constructor(
    readonly seed: number,
    public offset = 0,
  ) {
    checkSeed(seed, offset);
  }
  /** Reserves `count` counters and returns the offset of the first. */
  take(count: number): number {
    const o = this.offset;
    // keep every draw 4-aligned so that a draw never shares a block with the next one
    this.offset += Math.ceil(count / 4) * 4;
    return o;
  }
  uniform(count: number): Float64Array {
    const out = new Float64Array(count);
    philoxUniform(out, this.seed, this.take(count));
    return out;
  }
  normal(count: number, std = 1): Float64Array {
    const out = new Float64Array(count);
    philoxNormal(out, this.seed, this.take(count), std);
    return out;
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.min(n - 1, Math.floor(this.uniform(1)[0]! * n));
  }
}
