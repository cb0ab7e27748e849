// Philox-4x32-10 draws and dropout (the stream layout of src/backend/philox.ts, bit for bit).
// One thread per counter block of 4 elements: elements [offset, offset + n) of the stream.

extern "C" __global__ void random_uniform_f32(float *out, i64 n, u32 seedLo, u32 seedHi, u64 offset) {
  pdl_entry();
  if (n <= 0) return;
  const u64 first = offset >> 2, last = (offset + (u64)n - 1) >> 2;
  GRID_STRIDE(bi, (i64)(last - first + 1)) {
    const u64 c = first + (u64)bi;
    u32 w[4];
    philox_block(c, seedLo, seedHi, w);
    for (int l = 0; l < 4; l++) {
      const u64 ctr = c * 4 + (u64)l;
      if (ctr < offset || ctr >= offset + (u64)n) continue;
      out[ctr - offset] = (float)philox_uniform(w[l]);
    }
  }
}

// Box-Muller in float64 on the word pairs (0, 1) and (2, 3): even lanes r cos(theta), odd r sin(theta),
// evaluated in the same order as the JavaScript reference, times std, rounded once to float32.
extern "C" __global__ void random_normal_f32(float *out, i64 n, u32 seedLo, u32 seedHi, u64 offset, double stddev) {
  pdl_entry();
  if (n <= 0) return;
  const u64 first = offset >> 2, last = (offset + (u64)n - 1) >> 2;
  GRID_STRIDE(bi, (i64)(last - first + 1)) {
    const u64 c = first + (u64)bi;
    u32 w[4];
    philox_block(c, seedLo, seedHi, w);
    double z[4];
    for (int p = 0; p < 2; p++) {
      const double u1 = ((double)w[2 * p] + 0.5) / 4294967296.0;
      const double u2 = ((double)w[2 * p + 1] + 0.5) / 4294967296.0;
      const double r = sqrt(-2.0 * log(u1));
      const double th = 2.0 * 3.141592653589793 * u2;
      z[2 * p] = r * cos(th);
      z[2 * p + 1] = r * sin(th);
    }
    for (int l = 0; l < 4; l++) {
      const u64 ctr = c * 4 + (u64)l;
      if (ctr < offset || ctr >= offset + (u64)n) continue;
      out[ctr - offset] = (float)(stddev * z[l]);
    }
  }
}

// out[i] = x[i] * (uniform(offset + i) >= p ? 1 / (1 - p) : 0), the scale rounded to float32 first
// (as the CPU kernel dropout_f32). out may alias x. The backward is the same call on dy.
// bf: out 0, x 1.
extern "C" __global__ void dropout_f32(void *out, const void *x, i64 n, double p, u32 seedLo, u32 seedHi, u64 offset, int bf) {
  pdl_entry();
  if (n <= 0) return;
  const float scale = (float)(1.0 / (1.0 - p));
  const u64 first = offset >> 2, last = (offset + (u64)n - 1) >> 2;
  GRID_STRIDE(bi, (i64)(last - first + 1)) {
    const u64 c = first + (u64)bi;
    u32 w[4];
    philox_block(c, seedLo, seedHi, w);
    for (int l = 0; l < 4; l++) {
      const u64 ctr = c * 4 + (u64)l;
      if (ctr < offset || ctr >= offset + (u64)n) continue;
      const i64 i = (i64)(ctr - offset);
      stx(out, i, philox_uniform(w[l]) >= p ? ldx(x, i, BF(1)) * scale : 0.0f, BF(0));
    }
  }
}
