/**
 * The cuBLASLt glue (src/backend/cuda/cublaslt.ts) against a stand-in library compiled here from C:
 * every call's arguments as the C side receives them (the koffi signatures, the row-major to
 * column-major layouts, the attribute values and sizes, the heuristic's result handed back as the
 * algorithm, a plan made once per shape and alignment, declined products). Needs a C compiler; skipped
 * without one. The numbers themselves are tested on a GPU (test/cuda/bf16.test.ts).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

/** The stand-in: each entry point prints its arguments, one line a call. */
const SOURCE = String.raw`
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
static FILE *out;
static int layouts;
static FILE *log_file(void) { if (!out) out = fopen(getenv("FAKE_LT_LOG"), "w"); return out; }
#define LOG(...) (fprintf(log_file(), __VA_ARGS__), fflush(log_file()))
int cublasLtCreate(void **h) { *h = (void *)0x1234; LOG("create\n"); return 0; }
int cublasLtDestroy(void *h) { LOG("destroy %p\n", h); return 0; }
int cublasLtMatmulDescCreate(void **d, int compute, int scale) { *d = (void *)0x5000; LOG("desc %d %d\n", compute, scale); return 0; }
int cublasLtMatmulDescDestroy(void *d) { LOG("descdestroy\n"); return 0; }
int cublasLtMatmulDescSetAttribute(void *d, int attr, const void *buf, size_t n) {
  if (n == 4) LOG("descattr %d %u 4\n", attr, *(const uint32_t *)buf);
  else LOG("descattr %d %llu %zu\n", attr, (unsigned long long)*(const uint64_t *)buf, n);
  return 0;
}
int cublasLtMatrixLayoutCreate(void **l, int type, uint64_t rows, uint64_t cols, int64_t ld) {
  *l = (void *)(uintptr_t)(0x7000 + ++layouts);
  LOG("layout %d %d %llu %llu %lld\n", layouts, type, (unsigned long long)rows, (unsigned long long)cols, (long long)ld);
  return 0;
}
int cublasLtMatrixLayoutDestroy(void *l) { LOG("layoutdestroy\n"); return 0; }
int cublasLtMatmulPreferenceCreate(void **p) { *p = (void *)0x9000; return 0; }
int cublasLtMatmulPreferenceDestroy(void *p) { LOG("prefdestroy\n"); return 0; }
int cublasLtMatmulPreferenceSetAttribute(void *p, int attr, const void *buf, size_t n) {
  if (n == 4) LOG("prefattr %d %u 4\n", attr, *(const uint32_t *)buf);
  else LOG("prefattr %d %llu %zu\n", attr, (unsigned long long)*(const uint64_t *)buf, n);
  return 0;
}
/* only the first plan gets an algorithm (the second is declined, as cuBLASLt declines what it cannot run) */
int cublasLtMatmulAlgoGetHeuristic(void *h, void *d, void *a, void *b, void *c, void *dd, void *p, int req, void *res, int *ret) {
  LOG("heuristic %d\n", req);
  uint64_t *r = (uint64_t *)res;
  for (int i = 0; i < 8; i++) r[i] = 0xA100 + i;
  r[8] = 4096;
  *ret = layouts <= 3 ? 1 : 0;
  return 0;
}
int cublasLtMatmul(void *h, void *d, const void *alpha, uint64_t A, void *Ad, uint64_t B, void *Bd, const void *beta, uint64_t C, void *Cd, uint64_t D, void *Dd,
                   const void *algo, uint64_t ws, size_t wsb, void *stream) {
  LOG("matmul %g %llu %llu %llu %llu %g %llx %llu %zu %lld %lld %lld %lld\n", *(const float *)alpha, (unsigned long long)A, (unsigned long long)B, (unsigned long long)C,
      (unsigned long long)D, *(const float *)beta, (unsigned long long)*(const uint64_t *)algo, (unsigned long long)ws, wsb,
      (long long)((uintptr_t)Ad - 0x7000), (long long)((uintptr_t)Bd - 0x7000), (long long)((uintptr_t)Cd - 0x7000), (long long)((uintptr_t)Dd - 0x7000));
  return 0;
}
`;

const cc = spawnSync('cc', ['--version'], { encoding: 'utf8' });
const skip = cc.status === 0 ? false : 'no C compiler (cc) to build the stand-in library';

test('cuBLASLt glue: layouts, attributes, the algorithm and the plans, against a stand-in library', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fake-lt-'));
  try {
    writeFileSync(join(dir, 'fake.c'), SOURCE);
    const so = join(dir, 'libfakelt.so');
    const built = spawnSync('cc', ['-shared', '-fPIC', '-o', so, join(dir, 'fake.c')], { encoding: 'utf8' });
    assert.equal(built.status, 0, built.stderr);
    const log = join(dir, 'log.txt');
    process.env['FAKE_LT_LOG'] = log;
    process.env['MOE_DIFFUSEQ_LIBCUBLASLT'] = so;
    const { CublasLt } = await import('../../src/backend/cuda/cublaslt.js');
    const lt = CublasLt.create(null, { ptr: 0x10000000, bytes: 1 << 25 });
    assert.ok(lt, 'the stand-in binds');
    // row-major y [1000, 2304] = x [1000, 768] W [2304, 768]^T + b: a Linear's forward
    const p = { transA: false, transB: true, M: 1000, N: 2304, K: 768, a: 0x20000000, lda: 768, strideA: 0, b: 0x30000040, ldb: 768, strideB: 0, c: 0x40000000, ldc: 2304, strideC: 0, alpha: 1, beta: 0, batch: 1 };
    assert.equal(lt.gemmBias(p, 0x50000010), true);
    assert.equal(lt.gemmBias(p, 0x50000410), true, 'the same plan, another bias of the same alignment');
    assert.equal(lt.gemmBias(p, 0x50000014), false, 'a bias not 16-byte aligned is declined');
    assert.equal(lt.gemmBias({ ...p, beta: 1 }, 0x50000010), false, 'beta 1 is not this path');
    assert.equal(lt.gemmBias({ ...p, batch: 2 }, 0x50000010), false, 'batches are not this path');
    // a transposed A and a fresh shape: a new plan, whose heuristic (in the stand-in) finds nothing
    assert.equal(lt.gemmBias({ ...p, transA: true, lda: 1000, M: 1000, K: 768 }, 0x50000000), false, 'no algorithm: declined');
    assert.equal(lt.gemmBias({ ...p, transA: true, lda: 1000, M: 1000, K: 768 }, 0x50000000), false, 'declined again without asking');
    lt.destroy();
    const lines = readFileSync(log, 'utf8').trim().split('\n');
    const expect = [
      'create',
      'desc 68 0', // CUBLAS_COMPUTE_32F, CUDA_R_32F
      'descattr 3 1 4', // TRANSA: cuBLASLt's A is our B, transposed
      'descattr 4 0 4', // TRANSB: our A
      'descattr 7 4 4', // EPILOGUE_BIAS
      `descattr 8 ${0x50000010} 8`, // BIAS_POINTER
      'descattr 26 14 4', // BIAS_DATA_TYPE bfloat16
      'layout 1 14 768 2304 768', // our W [2304, 768] row-major: column-major 768 x 2304
      'layout 2 14 768 1000 768', // our x [1000, 768]
      'layout 3 14 2304 1000 2304', // our y [1000, 2304]
      `prefattr 1 ${1 << 25} 8`, // MAX_WORKSPACE_BYTES
      'prefattr 5 64 4', // the weight's address is 64-byte aligned
      'prefattr 6 256 4',
      'prefattr 7 256 4',
      'prefattr 8 256 4',
      'heuristic 1',
      'prefdestroy',
      `descattr 8 ${0x50000010} 8`,
      `matmul 1 ${0x30000040} ${0x20000000} ${0x40000000} ${0x40000000} 0 a100 ${0x10000000} ${1 << 25} 1 2 3 3`,
      `descattr 8 ${0x50000410} 8`,
      `matmul 1 ${0x30000040} ${0x20000000} ${0x40000000} ${0x40000000} 0 a100 ${0x10000000} ${1 << 25} 1 2 3 3`,
      // the declined plan: its descriptor and layouts are made, asked about once, and freed
      'desc 68 0',
      'descattr 3 1 4',
      'descattr 4 1 4',
      'descattr 7 4 4',
      `descattr 8 ${0x50000000} 8`,
      'descattr 26 14 4',
      'layout 4 14 768 2304 768',
      'layout 5 14 1000 768 1000', // our A^T: x stored [768, 1000]
      'layout 6 14 2304 1000 2304',
    ];
    assert.deepEqual(lines.slice(0, expect.length), expect);
    const rest = lines.slice(expect.length);
    assert.equal(rest.filter((l) => l === 'heuristic 1').length, 1, 'the declined shape asked once');
    assert.ok(!rest.some((l) => l.startsWith('matmul')), 'nothing run for it');
    assert.equal(rest.filter((l) => l === 'layoutdestroy').length, 6, 'both plans\' layouts freed');
    assert.equal(rest.filter((l) => l === 'descdestroy').length, 2);
    assert.equal(rest[rest.length - 1], 'destroy 0x1234');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
