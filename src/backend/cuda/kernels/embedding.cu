// Embedding gather and its scatter-add backward (ids are range-checked on the host first).

// out[m, c] = table[ids[m], c].
extern "C" __global__ void embedding_f32(float *out, const float *table, const int *ids, i64 M, i64 e) {
  pdl_entry();
  GRID_STRIDE(i, M * e) out[i] = table[(i64)ids[i / e] * e + i % e];
}

// dtable[ids[m], c] += dout[m, c]. atomicAdd: ids repeat, so rows collide; the order of the float
// additions (and so the last bits) is not fixed. A deterministic sorted-segment version can replace it.
extern "C" __global__ void embedding_backward_f32(float *dtable, const int *ids, const float *dout, i64 M, i64 e) {
  pdl_entry();
  GRID_STRIDE(i, M * e) atomicAdd(dtable + (i64)ids[i / e] * e + i % e, dout[i]);
}
