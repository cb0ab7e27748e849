/**
 * A small seeded PRNG for the data layer (shuffling, splits).
 *
 * Not Math.random: splits and batch orders must be the same on every platform and Node version, and a
 * training run must be able to save the generator's position and resume it. SplitMix32 (a Weyl
 * sequence passed through a 32-bit finaliser) has exactly one 32-bit word of state, which serialises
 * as a plain JSON number, and uses only integer operations that JavaScript defines exactly.
 */
import { ConfigError } from '../errors.js';

/** Folds any safe integer seed into 32 bits, so that seeds above 2^32 still differ from each other. */
export function seedToState(seed: number): number {
  if (!Number.isSafeInteger(seed)) throw new ConfigError(`seed must be an integer, got ${String(seed)}`);
  const lo = seed >>> 0; // seed mod 2^32 (also for negative seeds)
  const hi = Math.floor(seed / 0x100000000) >>> 0;
  return (lo ^ Math.imul(hi, 0x9e3779b9)) >>> 0;
}

/** SplitMix32: a deterministic 32-bit generator whose whole state is one uint32 ({@link SplitMix32.state}). */
export class SplitMix32 {
  /** The generator's state (uint32); save it and pass it to {@link SplitMix32.fromState} to resume. */
  state: number;

  /** @param seed any safe integer. */
  constructor(seed: number) {
    this.state = seedToState(seed);
  }

  /** A generator continuing from a saved {@link SplitMix32.state}. */
  static fromState(state: number): SplitMix32 {
    if (!Number.isInteger(state) || state < 0 || state > 0xffffffff) {
      throw new ConfigError(`rng state must be a uint32, got ${String(state)}`);
    }
    const r = new SplitMix32(0);
    r.state = state;
    return r;
  }

  /** The next uniform uint32. */
  nextUint32(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  }

  /**
   * A uniform integer in [0, n) for 1 <= n <= 2^32, without modulo bias: draws that fall in the last,
   * incomplete block of n values are rejected and redrawn.
   */
  nextInt(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > 0x100000000) throw new ConfigError(`nextInt: n must be in [1, 2^32], got ${n}`);
    const limit = 0x100000000 - (0x100000000 % n);
    for (;;) {
      const x = this.nextUint32();
      if (x < limit) return x % n;
    }
  }

  /** Shuffles `array` in place (Fisher-Yates, from the end) and returns it. */
  shuffle<T>(array: T[]): T[] {
    for (let i = array.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const t = array[i]!;
      array[i] = array[j]!;
      array[j] = t;
    }
    return array;
  }
}
