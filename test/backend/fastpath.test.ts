/**
 * The float32 fast paths (WebAssembly SIMD kernels on 2 threads) against the float64 reference loops
 * on the same inputs, at odd sizes. Outputs are poisoned with NaN first, so an unwritten element fails.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { AttentionSpec, Tensor } from '../../src/backend/backend.js';
import { CpuBackend } from '../../src/backend/cpu/backend.js';
import { DTypeError, IndexError, ShapeError } from '../../src/errors.js';
import { relErr } from '../helpers.js';

const be = new CpuBackend({ threads: 2 });

function pair(shape: number[], seed: number, std = 1): [Tensor, Tensor] {
  const a = be.empty(shape, 'float32');
  be.randomNormal(a, seed, 0, std);
  return [a, be.fromArray(be.toArray(a), shape, 'float64')];
}
function poisoned(shape: readonly number[], dtype: 'float32' | 'float64'): Tensor {
  const t = be.empty(shape, dtype);
  be.fill(t, NaN);
  return t;
}
function close(a: Tensor, b: Tensor, tol: number, what: string): void {
  const x = be.toArray(a);
  const y = be.toArray(b);
  for (let i = 0; i < x.length; i++) assert.ok(Number.isFinite(x[i]!), `${what}: element ${i} not written (${x[i]})`);
  const e = relErr(x, y);
  assert.ok(e < tol, `${what}: relative error ${e}`);
}

test('gemm f32 (SIMD, threads) equals the float64 reference: odd sizes, transposes, batch, alpha/beta', () => {
  let seed = 1;
  for (const [M, N, K] of [[1, 1, 1], [3, 17, 5], [65, 9, 130], [130, 67, 33], [4, 8, 256], [257, 300, 70]] as const) {
    for (const [transA, transB] of [[false, false], [true, false], [false, true], [true, true]] as const) {
      const [a32, a64] = pair(transA ? [K, M] : [M, K], seed++);
      const [b32, b64] = pair(transB ? [N, K] : [K, N], seed++);
      const [c32, c64] = pair([M, N], seed++);
      be.matmul(c32, a32, b32, { transA, transB, alpha: 0.7, beta: 0.5 });
      be.matmul(c64, a64, b64, { transA, transB, alpha: 0.7, beta: 0.5 });
      close(c32, c64, 1e-5, `gemm ${M}x${N}x${K} tA=${transA} tB=${transB}`);
      const o32 = poisoned([M, N], 'float32');
      be.matmul(o32, a32, b32, { transA, transB });
      const o64 = poisoned([M, N], 'float64');
      be.matmul(o64, a64, b64, { transA, transB });
      close(o32, o64, 1e-5, `gemm beta=0 over NaN ${M}x${N}x${K}`);
      [a32, a64, b32, b64, c32, c64, o32, o64].forEach((t) => t.dispose());
    }
  }
  // batched (batch >= threads splits by batch)
  const [a32, a64] = pair([3, 19, 11], 100);
  const [b32, b64] = pair([3, 11, 13], 101);
  const o32 = poisoned([3, 19, 13], 'float32');
  const o64 = poisoned([3, 19, 13], 'float64');
  be.matmul(o32, a32, b32);
  be.matmul(o64, a64, b64);
  close(o32, o64, 1e-5, 'batched gemm');
  [a32, a64, b32, b64, o32, o64].forEach((t) => t.dispose());
});

test('bias + GELU epilogue f32 equals float64', () => {
  const [x32, x64] = pair([37, 21], 7);
  const [w32, w64] = pair([45, 21], 8);
  const [b32, b64] = pair([45], 9);
  const o32 = poisoned([37, 45], 'float32');
  const p32 = poisoned([37, 45], 'float32');
  const o64 = poisoned([37, 45], 'float64');
  const p64 = poisoned([37, 45], 'float64');
  be.matmul(o32, x32, w32, { transB: true, bias: b32, gelu: { pre: p32 } });
  be.matmul(o64, x64, w64, { transB: true, bias: b64, gelu: { pre: p64 } });
  close(p32, p64, 1e-5, 'pre-activation');
  close(o32, o64, 1e-5, 'gelu output');
  [x32, x64, w32, w64, b32, b64, o32, p32, o64, p64].forEach((t) => t.dispose());
});

const specs: [string, AttentionSpec, number, number, number][] = [
  ['full', { kind: 'full', heads: 3, window: 0, dilation: 1, globalTokens: 0 }, 2, 37, 30],
  ['sliding', { kind: 'sliding', heads: 4, window: 5, dilation: 1, globalTokens: 3 }, 3, 41, 32],
  ['sliding, odd head size, dilation 2', { kind: 'sliding', heads: 2, window: 3, dilation: 2, globalTokens: 1 }, 1, 29, 14],
];
for (const [name, spec, B, S, d] of specs) {
  test(`attention f32 forward and backward equal float64: ${name}`, () => {
    const [q32, q64] = pair([B, S, 3 * d], 11);
    const [g32, g64] = pair([B, S, d], 12);
    const H = spec.heads;
    const o32 = poisoned([B, S, d], 'float32');
    const l32 = poisoned([B, H, S], 'float32');
    const o64 = poisoned([B, S, d], 'float64');
    const l64 = poisoned([B, H, S], 'float64');
    be.attention(o32, l32, q32, spec);
    be.attention(o64, l64, q64, spec);
    close(o32, o64, 1e-5, 'attention out');
    close(l32, l64, 1e-5, 'attention lse');
    const d32 = poisoned([B, S, 3 * d], 'float32');
    const d64 = poisoned([B, S, 3 * d], 'float64');
    be.attentionBackward(d32, g32, q32, o32, l32, spec);
    be.attentionBackward(d64, g64, q64, o64, l64, spec);
    close(d32, d64, 1e-4, 'attention dqkv');
    [q32, q64, g32, g64, o32, l32, o64, l64, d32, d64].forEach((t) => t.dispose());
  });
}

test('sliding attention with window >= N equals full attention (globals included)', () => {
  for (const dtype of ['float32', 'float64'] as const) {
    const B = 2, G = 3, N = 10, d = 8, S = G + N;
    const qkv = be.empty([B, S, 3 * d], dtype);
    be.randomNormal(qkv, 5, 0);
    const run = (spec: AttentionSpec) => {
      const o = be.empty([B, S, d], dtype);
      const l = be.empty([B, 2, S], dtype);
      be.attention(o, l, qkv, spec);
      return { o, l };
    };
    const s = run({ kind: 'sliding', heads: 2, window: N, dilation: 1, globalTokens: G });
    const f = run({ kind: 'full', heads: 2, window: 0, dilation: 1, globalTokens: G });
    close(s.o, f.o, dtype === 'float32' ? 1e-6 : 1e-14, `${dtype} out`);
    [qkv, s.o, s.l, f.o, f.l].forEach((t) => t.dispose());
  }
});

test('sliding attention excludes scores outside the window exactly', () => {
  // with window 1 and no globals, changing a value row 3 positions away must not change row 0's output
  const B = 1, S = 8, d = 4;
  const spec: AttentionSpec = { kind: 'sliding', heads: 1, window: 1, dilation: 1, globalTokens: 0 };
  const qkv = be.empty([B, S, 3 * d], 'float64');
  be.randomNormal(qkv, 6, 0);
  const o1 = be.empty([B, S, d], 'float64');
  const l1 = be.empty([B, 1, S], 'float64');
  be.attention(o1, l1, qkv, spec);
  const a = be.toArray(qkv);
  for (let x = 0; x < 3 * d; x++) a[3 * 3 * d + x] = 1e6; // row 3's q, k and v
  be.write(qkv, a);
  const o2 = be.empty([B, S, d], 'float64');
  be.attention(o2, l1, qkv, spec);
  assert.deepEqual([...be.toArray(o2)].slice(0, d), [...be.toArray(o1)].slice(0, d));
  [qkv, o1, l1, o2].forEach((t) => t.dispose());
});

test('grouped matmul f32 equals float64 and per-expert dense products', () => {
  const counts = [3, 0, 7, 1];
  const A = 11, K = 9, N = 6;
  const [x32, x64] = pair([A, K], 21);
  const [w32, w64] = pair([4, N, K], 22);
  const [b32, b64] = pair([4, N], 23);
  const o32 = poisoned([A, N], 'float32');
  const o64 = poisoned([A, N], 'float64');
  be.groupedMatmul(o32, x32, w32, b32, counts);
  be.groupedMatmul(o64, x64, w64, b64, counts);
  close(o32, o64, 1e-5, 'grouped');
  const X = be.toArray(x64), W = be.toArray(w64), Bv = be.toArray(b64), O = be.toArray(o64);
  // row 4 belongs to expert 2 (rows 3..9)
  for (let j = 0; j < N; j++) {
    let s = Bv[2 * N + j]!;
    for (let k = 0; k < K; k++) s += X[4 * K + k]! * W[2 * N * K + j * K + k]!;
    assert.ok(Math.abs(O[4 * N + j]! - s) < 1e-12);
  }
  [x32, x64, w32, w64, b32, b64, o32, o64].forEach((t) => t.dispose());
});

test('nearestRows and argmaxDot agree with brute force (ties to the lower index)', () => {
  const V = 50, e = 7, M = 23;
  const [t32] = pair([V, e], 31);
  const [x32] = pair([M, e], 32);
  const tab = be.toArray(t32);
  // make row 40 a duplicate of row 10: ties must resolve to 10
  for (let c = 0; c < e; c++) tab[40 * e + c] = tab[10 * e + c]!;
  be.write(t32, tab);
  const xs = be.toArray(x32);
  for (let c = 0; c < e; c++) xs[c] = tab[10 * e + c]! + 1e-3;
  be.write(x32, xs);
  const n = be.empty([M], 'int32');
  const a = be.empty([M], 'int32');
  be.nearestRows(n, x32, t32);
  be.argmaxDot(a, x32, t32);
  const N = be.toArray(n), Am = be.toArray(a);
  for (let m = 0; m < M; m++) {
    let bd = Infinity, bi = -1, bs = -Infinity, ai = -1;
    for (let v = 0; v < V; v++) {
      let dist = 0, dot = 0;
      for (let c = 0; c < e; c++) {
        dist += (xs[m * e + c]! - tab[v * e + c]!) ** 2;
        dot += xs[m * e + c]! * tab[v * e + c]!;
      }
      if (dist < bd - 1e-9) [bd, bi] = [dist, v];
      if (dot > bs + 1e-9) [bs, ai] = [dot, v];
    }
    assert.equal(N[m], bi, `nearest of row ${m}`);
    assert.equal(Am[m], ai, `argmax of row ${m}`);
  }
  assert.equal(N[0], 10);
  [t32, x32, n, a].forEach((t) => t.dispose());
});

test('bad input is a typed error naming the op and the shapes', () => {
  const a = be.zeros([2, 3]);
  const b = be.zeros([4, 5]);
  const o = be.zeros([2, 5]);
  assert.throws(() => be.matmul(o, a, b), (e: unknown) => e instanceof ShapeError && /matmul: inner dimensions differ \(3 vs 4\)/.test(e.message) && /\[2, 3\]/.test(e.message));
  const a64 = be.zeros([2, 3], 'float64');
  assert.throws(() => be.axpby(a, 1, a64), (e: unknown) => e instanceof DTypeError && /axpby/.test(e.message));
  const table = be.zeros([4, 2]);
  const ids = be.fromArray([1, 4], [2], 'int32');
  const out = be.zeros([2, 2]);
  assert.throws(() => be.embedding(out, table, ids), (e: unknown) => e instanceof IndexError && /id 4 at position 1 is outside the vocabulary \[0, 4\)/.test(e.message));
  assert.throws(() => be.view(a, 4, [3]), ShapeError);
  assert.throws(() => be.attention(o, o, a, { kind: 'full', heads: 1, window: 0, dilation: 1, globalTokens: 0 }), ShapeError);
  a.dispose();
  assert.throws(() => be.sum(a), /disposed/);
  [b, o, a64, table, ids, out].forEach((t) => t.dispose());
});

test('cross-entropy f32 (SIMD exp, threads) equals float64, with and without the gradient', () => {
  const R = 37, V = 1003;
  const [x32, x64] = pair([R, V], 41, 3);
  const t = be.fromArray(Array.from({ length: R }, (_, i) => (i * 97) % V), [R], 'int32');
  const [w32, w64] = pair([R], 42);
  const l32 = poisoned([R], 'float32');
  const l64 = poisoned([R], 'float64');
  const g32 = poisoned([R, V], 'float32');
  const g64 = poisoned([R, V], 'float64');
  be.crossEntropy(l32, g32, x32, t, w32);
  be.crossEntropy(l64, g64, x64, t, w64);
  close(l32, l64, 1e-5, 'loss');
  close(g32, g64, 1e-5, 'dlogits');
  const l2 = poisoned([R], 'float32');
  be.crossEntropy(l2, null, x32, t, null);
  close(l2, l64, 1e-5, 'loss without gradient');
  [x32, x64, t, w32, w64, l32, l64, g32, g64, l2].forEach((v) => v.dispose());
});

test('dropout f32 (Philox in WebAssembly) draws the same mask as the float64 reference', () => {
  for (const [n, off, seed] of [[1001, 0, 7], [77, 13, 2 ** 40 + 5], [4096, 1_000_003, 123]] as const) {
    const [x32, x64] = pair([n], 51);
    const y32 = poisoned([n], 'float32');
    const y64 = poisoned([n], 'float64');
    be.dropout(y32, x32, 0.35, seed, off);
    be.dropout(y64, x64, 0.35, seed, off);
    const a = be.toArray(y32);
    const b = be.toArray(y64);
    for (let i = 0; i < n; i++) {
      assert.equal(a[i] === 0, b[i] === 0, `mask differs at ${i} (n ${n}, offset ${off})`);
      assert.ok(Math.abs(a[i]! - b[i]!) <= 1e-6 * Math.abs(b[i]!) + 1e-7);
    }
    [x32, x64, y32, y64].forEach((t) => t.dispose());
  }
});

test('GELU f32 (SIMD) forward and backward equal float64', () => {
  const n = 1027;
  const [x32, x64] = pair([n], 61, 3);
  const [d32, d64] = pair([n], 62);
  const y32 = poisoned([n], 'float32');
  const y64 = poisoned([n], 'float64');
  be.activation(y32, x32, 'gelu');
  be.activation(y64, x64, 'gelu');
  close(y32, y64, 1e-6, 'gelu');
  const g32 = poisoned([n], 'float32');
  const g64 = poisoned([n], 'float64');
  be.activationBackward(g32, d32, x32, 'gelu', false);
  be.activationBackward(g64, d64, x64, 'gelu', false);
  close(g32, g64, 1e-6, 'gelu backward');
  be.activationBackward(g32, d32, x32, 'gelu', true);
  be.activationBackward(g64, d64, x64, 'gelu', true);
  close(g32, g64, 1e-6, 'gelu backward accumulated');
  [x32, x64, d32, d64, y32, y64, g32, g64].forEach((t) => t.dispose());
});

test('blocked attention kernels equal their slow twin (row kernels) and float64, across block boundaries', () => {
  const rows = new CpuBackend({ threads: 2, attentionKernel: 'rows' });
  const cases: [AttentionSpec, number, number, number][] = [
    [{ kind: 'sliding', heads: 2, window: 20, dilation: 1, globalTokens: 4 }, 2, 150, 32],
    [{ kind: 'sliding', heads: 3, window: 0, dilation: 1, globalTokens: 0 }, 1, 67, 39],
    [{ kind: 'sliding', heads: 1, window: 5, dilation: 1, globalTokens: 1 }, 2, 97, 13],
    [{ kind: 'full', heads: 2, window: 0, dilation: 1, globalTokens: 3 }, 1, 70, 16],
    // more global rows than one block holds (BQ = 32): the globals take several blocks
    [{ kind: 'sliding', heads: 1, window: 3, dilation: 1, globalTokens: 40 }, 1, 50, 8],
    [{ kind: 'sliding', heads: 2, window: 200, dilation: 1, globalTokens: 70 }, 2, 97, 24],
  ];
  for (const [spec, B, S, d] of cases) {
    const label = `${spec.kind} w${spec.window} G${spec.globalTokens} B${B} S${S} d${d}`;
    const [q32, q64] = pair([B, S, 3 * d], 71);
    const [g32, g64] = pair([B, S, d], 72);
    const qr = rows.fromArray(be.toArray(q32), [B, S, 3 * d]);
    const gr = rows.fromArray(be.toArray(g32), [B, S, d]);
    const run = (bk: CpuBackend, q: Tensor, g: Tensor, dtype: 'float32' | 'float64') => {
      const o = bk.empty([B, S, d], dtype);
      const l = bk.empty([B, spec.heads, S], dtype);
      bk.fill(o, NaN);
      bk.fill(l, NaN);
      bk.attention(o, l, q, spec);
      const dq = bk.empty([B, S, 3 * d], dtype);
      bk.fill(dq, NaN);
      bk.attentionBackward(dq, g, q, o, l, spec);
      return { o: bk.toArray(o), l: bk.toArray(l), dq: bk.toArray(dq), free: () => [o, l, dq].forEach((t) => t.dispose()) };
    };
    const fast = run(be, q32, g32, 'float32');
    const slow = run(rows, qr, gr, 'float32');
    const ref = run(be, q64, g64, 'float64');
    for (const k of ['o', 'l', 'dq'] as const) {
      assert.ok(fast[k].every((v) => Number.isFinite(v)), `${label} ${k}: every element written`);
      assert.ok(relErr(fast[k], slow[k]) < 1e-5, `${label} ${k} vs rows: ${relErr(fast[k], slow[k])}`);
      assert.ok(relErr(fast[k], ref[k]) < 1e-5, `${label} ${k} vs float64: ${relErr(fast[k], ref[k])}`);
    }
    [fast, slow, ref].forEach((r) => r.free());
    [q32, q64, g32, g64, qr, gr].forEach((t) => t.dispose());
  }
  rows.close();
});
