/**
 * What the host knows of the values in int32 device buffers, so that the ops that take ids
 * (embedding, embeddingBackward, crossEntropy's targets) can check them without reading them back:
 * a read-back drains the stream, and a bf16 training step made about 35 of them (one per
 * cross-entropy chunk), each leaving the GPU idle until the host launched again.
 *
 * A range is kept per root allocation (its views share it) and only ever bounds the buffer's values
 * from outside: set when the whole buffer is written with values the host knows (an upload, a fill,
 * zeros, a copy of a known buffer, a row argmax over V rows), widened when part of it is, dropped by
 * a write the host cannot bound. Unknown, the default (`empty`, kernels' int32 outputs), means: read
 * back and check, as before.
 */
export class IntRanges {
  private readonly ranges = new WeakMap<object, readonly [number, number]>();

  /** The range of `root`, or null when unknown. */
  get(root: object): readonly [number, number] | null {
    return this.ranges.get(root) ?? null;
  }

  /**
   * A write of values within `range` (null: not known to the host) into `root`, covering all of it
   * (`whole`) or a part.
   */
  wrote(root: object, whole: boolean, range: readonly [number, number] | null): void {
    if (!range) {
      this.ranges.delete(root);
      return;
    }
    if (whole) {
      this.ranges.set(root, [range[0], range[1]]);
      return;
    }
    // a part: the rest keeps its values, so a known range grows and an unknown one stays unknown
    const r = this.ranges.get(root);
    if (r) this.ranges.set(root, [Math.min(r[0], range[0]), Math.max(r[1], range[1])]);
  }

  /** Whether every value of `root` is known to lie in [0, n). */
  within(root: object, n: number): boolean {
    const r = this.ranges.get(root);
    return r !== undefined && (r[0] > r[1] || (r[0] >= 0 && r[1] < n));
  }
}

/** [min, max] of values ([Infinity, -Infinity] for none: an empty range). */
export function rangeOf(data: ArrayLike<number>): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}
