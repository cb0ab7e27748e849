/**
 * bfloat16 on the host: the high 16 bits of a float32, rounded to nearest even (NaN stays a quiet
 * NaN), as the CUDA kernels' f2bf / bf2f do. Used to upload and read back bfloat16 tensors.
 */

/** float values -> bfloat16 bit patterns. */
export function toBf16Bits(src: ArrayLike<number>): Uint16Array {
  const f = src instanceof Float32Array ? src : Float32Array.from(src);
  const u = new Uint32Array(f.buffer, f.byteOffset, f.length);
  const out = new Uint16Array(f.length);
  for (let i = 0; i < f.length; i++) {
    const b = u[i]!;
    out[i] = (b & 0x7fffffff) > 0x7f800000 ? (b >>> 16) | 0x40 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** bfloat16 bit patterns -> float32 values (exact). */
export function fromBf16Bits(bits: Uint16Array): Float32Array {
  const u = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) u[i] = bits[i]! << 16;
  return new Float32Array(u.buffer);
}

/** The value `x` rounded to bfloat16 (as a float). */
export function roundBf16(x: number): number {
  return fromBf16Bits(toBf16Bits([x]))[0]!;
}
