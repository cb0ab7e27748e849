/** MoE routing, permutation, grouped matmul and combine: values, gradients and the dense equivalence. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { MoeRouting, Tensor } from '../../src/backend/backend.js';
import { CpuBackend } from '../../src/backend/cpu/backend.js';
import { gradCheck, randn } from './gradcheck.js';

const be = new CpuBackend({ threads: 1 });
const F = 'float64';

test('routing: top-k with ties to the lower index, renormalised gates, aux and z by hand', () => {
  // 3 tokens, 4 experts, k = 2; token 1 has a tie between experts 1 and 2
  const logits = be.fromArray([2, 1, 0, -1, 0, 1, 1, 0, -3, 0, 0.5, 3], [3, 4], F);
  const r = be.moeRoute(logits, { topK: 2, seqLen: 3 });
  assert.deepEqual([...be.toArray(r.expertIndex)], [0, 1, 1, 2, 3, 2]);
  const p = (row: number[]) => {
    const s = row.reduce((a, b) => a + Math.exp(b), 0);
    return row.map((v) => Math.exp(v) / s);
  };
  const P = [p([2, 1, 0, -1]), p([0, 1, 1, 0]), p([-3, 0, 0.5, 3])];
  const g = be.toArray(r.gates);
  assert.ok(Math.abs(g[0]! - P[0]![0]! / (P[0]![0]! + P[0]![1]!)) < 1e-12);
  assert.ok(Math.abs(g[2]! - 0.5) < 1e-12);
  // f_i over the 6 assignments: e0 1, e1 2, e2 2, e3 1; P_i the mean prob
  const f = [1 / 6, 2 / 6, 2 / 6, 1 / 6];
  const meanP = [0, 1, 2, 3].map((i) => (P[0]![i]! + P[1]![i]! + P[2]![i]!) / 3);
  assert.ok(Math.abs(r.aux - 4 * f.reduce((s, fi, i) => s + fi * meanP[i]!, 0)) < 1e-12);
  const lse = [[2, 1, 0, -1], [0, 1, 1, 0], [-3, 0, 0.5, 3]].map((row) => Math.log(row.reduce((a, b) => a + Math.exp(b), 0)));
  assert.ok(Math.abs(r.z - lse.reduce((s, l) => s + l * l, 0) / 3) < 1e-12);
  // expert order: e0 [a0], e1 [a1, a2], e2 [a3, a5], e3 [a4]
  assert.deepEqual(r.counts, [1, 2, 2, 1]);
  assert.deepEqual([...be.toArray(r.order)], [0, 1, 2, 3, 5, 4]);
  r.dispose();
  logits.dispose();
});

test('capacity: rank-major priority per sequence, dropped assignments get gate 0', () => {
  // one sequence of 4 tokens, E = 2, k = 1, cf = 1 -> C = ceil(1 * 4 * 1 / 2) = 2; all prefer expert 0
  const logits = be.fromArray([3, 0, 2, 0, 1, 0, 4, 0], [4, 2], F);
  const r = be.moeRoute(logits, { topK: 1, seqLen: 4, capacityFactor: 1 });
  assert.deepEqual([...be.toArray(r.slot)], [0, 1, -1, -1]); // first two tokens in order keep expert 0
  assert.deepEqual([...be.toArray(r.gates)].map((x) => x > 0), [true, true, false, false]);
  assert.deepEqual(r.counts, [2, 0]);
  assert.deepEqual(r.loadShare, [1, 0], 'f counts assignments before the drop');
  r.dispose();
  // k = 2: every first choice (token order) before any second choice
  const l2 = be.fromArray([3, 2, 0, 2, 3, 0, 3, 2, 0], [3, 3], F); // firsts: e0, e1, e0; seconds: e1, e0, e1
  const r2 = be.moeRoute(l2, { topK: 2, seqLen: 3, capacityFactor: 1 }); // C = ceil(3*2/3) = 2
  // firsts all fit (e0: 2, e1: 1); seconds in token order: t0->e1 (2nd slot, ok), t1->e0 (full, drop), t2->e1 (full, drop)
  const slot = [...be.toArray(r2.slot)];
  assert.deepEqual(slot.map((s) => s >= 0), [true, true, true, false, true, false]);
  r2.dispose();
  [logits, l2].forEach((t) => t.dispose());
});

/** The whole MoE FFN on [M, d] through the backend ops (router, permute, grouped GEMM, combine). */
function moeForward(x: Tensor, wr: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, k: number, cf?: number) {
  const [M, d] = x.shape as [number, number];
  const [E, f] = w1.shape as [number, number];
  const logits = be.empty([M, E], F);
  be.matmul(logits, x, wr, { transB: true });
  const r = be.moeRoute(logits, { topK: k, seqLen: M, ...(cf ? { capacityFactor: cf } : {}) });
  const A = r.order.size;
  const xs = be.empty([A, d], F);
  be.moePermute(xs, x, r);
  const pre = be.empty([A, f], F);
  const h = be.empty([A, f], F);
  be.groupedMatmul(h, xs, w1, b1, r.counts, { gelu: { pre } });
  const ys = be.empty([A, d], F);
  be.groupedMatmul(ys, h, w2, b2, r.counts);
  const y = be.empty([M, d], F);
  be.moeCombine(y, ys, r, false);
  return { logits, r, xs, pre, h, ys, y };
}

function moeBackward(s: ReturnType<typeof moeForward>, dy: Tensor, dAux: number, dZ: number, x: Tensor, wr: Tensor, w1: Tensor, w2: Tensor) {
  const { r, xs, pre, h, ys } = s;
  const [M, d] = x.shape as [number, number];
  const A = r.order.size;
  const f = w1.shape[1]!;
  const dys = be.empty([A, d], F);
  const dg = be.empty([M, r.topK], F);
  be.moeCombineBackward(dys, dg, dy, ys, r);
  const dh = be.empty([A, f], F);
  const dw2 = be.zeros(w2.shape, F);
  const db2 = be.zeros([w2.shape[0]!, d], F);
  be.groupedMatmulBackward(dh, dw2, db2, dys, h, w2, r.counts);
  const dpre = be.empty([A, f], F);
  be.activationBackward(dpre, dh, pre, 'gelu', false);
  const dxs = be.empty([A, d], F);
  const dw1 = be.zeros(w1.shape, F);
  const db1 = be.zeros([w1.shape[0]!, f], F);
  be.groupedMatmulBackward(dxs, dw1, db1, dpre, xs, w1, r.counts);
  const dx = be.zeros(x.shape, F);
  be.moePermuteBackward(dx, dxs, r, true);
  const dlog = be.empty([M, r.experts], F);
  be.moeRouteBackward(dlog, r, dg, dAux, dZ);
  be.matmul(dx, dlog, wr, { beta: 1 });
  const dwr = be.zeros(wr.shape, F);
  be.matmul(dwr, dlog, x, { transA: true });
  [dys, dg, dh, dpre, dxs, dlog].forEach((t) => t.dispose());
  return { x: dx, wr: dwr, w1: dw1, b1: db1, w2: dw2, b2: db2 };
}

function disposeState(s: ReturnType<typeof moeForward>) {
  [s.logits, s.xs, s.pre, s.h, s.ys, s.y].forEach((t) => t.dispose());
  s.r.dispose();
}

for (const c of [
  { name: 'E 4, k 2', M: 7, d: 5, E: 4, f: 6, k: 2 },
  { name: 'one expert', M: 5, d: 3, E: 1, f: 4, k: 1 },
  { name: 'k = E', M: 6, d: 4, E: 3, f: 5, k: 3 },
  { name: 'with capacity drops', M: 9, d: 4, E: 3, f: 3, k: 2, cf: 0.5 },
]) {
  test(`MoE FFN backward (router, experts, aux and z-loss): ${c.name}`, () => {
    const x = randn(be, [c.M, c.d], 40);
    const wr = randn(be, [c.E, c.d], 41);
    const w1 = randn(be, [c.E, c.f, c.d], 42, 0.5);
    const b1 = randn(be, [c.E, c.f], 43, 0.5);
    const w2 = randn(be, [c.E, c.d, c.f], 44, 0.5);
    const b2 = randn(be, [c.E, c.d], 45, 0.5);
    const dAux = 0.7;
    const dZ = 0.3;
    gradCheck(be, {
      inputs: { x, wr, w1, b1, w2, b2 },
      forward: () => {
        const s = moeForward(x, wr, w1, b1, w2, b2, c.k, c.cf);
        // fold the scalar losses into one extra output element: dAux aux + dZ z
        const out = be.fromArray([...be.toArray(s.y), s.r.aux * dAux + s.r.z * dZ], [c.M * c.d + 1], F);
        disposeState(s);
        return [out];
      },
      backward: ([dout]) => {
        const s = moeForward(x, wr, w1, b1, w2, b2, c.k, c.cf);
        const da = be.toArray(dout!);
        const dy = be.fromArray(da.subarray(0, c.M * c.d), [c.M, c.d], F);
        const w = da[c.M * c.d]!;
        const g = moeBackward(s, dy, dAux * w, dZ * w, x, wr, w1, w2);
        dy.dispose();
        disposeState(s);
        return g;
      },
      rtol: 1e-5,
      atol: 1e-7,
    });
    [x, wr, w1, b1, w2, b2].forEach((t) => t.dispose());
  });
}

test('MoE whose experts are identical equals the dense FFN with the same weights', () => {
  const M = 6, d = 4, E = 3, f = 5;
  const x = randn(be, [M, d], 50);
  const wr = randn(be, [E, d], 51);
  const W1 = randn(be, [f, d], 52);
  const B1 = randn(be, [f], 53);
  const W2 = randn(be, [d, f], 54);
  const B2 = randn(be, [d], 55);
  const rep = (t: Tensor) => {
    const a = be.toArray(t);
    const out = new Float64Array(a.length * E);
    for (let e = 0; e < E; e++) out.set(a, e * a.length);
    return be.fromArray(out, [E, ...t.shape], F);
  };
  const [w1, b1, w2, b2] = [rep(W1), rep(B1), rep(W2), rep(B2)];
  const s = moeForward(x, wr, w1, b1, w2, b2, 2);
  const pre = be.empty([M, f], F);
  const h = be.empty([M, f], F);
  be.matmul(h, x, W1, { transB: true, bias: B1, gelu: { pre } });
  const y = be.empty([M, d], F);
  be.matmul(y, h, W2, { transB: true, bias: B2 });
  const a = be.toArray(s.y);
  const b = be.toArray(y);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) < 1e-12, `${a[i]} vs ${b[i]}`);
  disposeState(s);
  [x, wr, W1, B1, W2, B2, w1, b1, w2, b2, pre, h, y].forEach((t) => t.dispose());
});

test('groupedMatmul: gathered rows (the routing\'s order) and a GELU without its pre-activation equal the permuted product', () => {
  const [M, d, E, f, k] = [7, 4, 3, 5, 2];
  const logits = randn(be, [M, E], 60);
  const r = be.moeRoute(logits, { topK: k, seqLen: M });
  const A = r.order.size;
  const x = randn(be, [M, d], 61);
  const w = randn(be, [E, f, d], 62);
  const b = randn(be, [E, f], 63);
  const xs = be.empty([A, d], F);
  be.moePermute(xs, x, r);
  const [y0, y1, y2, p0, p1] = [0, 1, 2, 3, 4].map(() => be.empty([A, f], F)) as [Tensor, Tensor, Tensor, Tensor, Tensor];
  be.groupedMatmul(y0, xs, w, b, r, { gelu: { pre: p0 } });
  be.groupedMatmul(y1, x, w, b, r, { gelu: { pre: p1 }, gather: true });
  be.groupedMatmul(y2, x, w, b, r, { gelu: { pre: null }, gather: true });
  const want = [...be.toArray(y0)];
  assert.ok(want.some((v) => v !== 0));
  assert.deepEqual([...be.toArray(y1)], want);
  assert.deepEqual([...be.toArray(p1)], [...be.toArray(p0)]);
  assert.deepEqual([...be.toArray(y2)], want);
  // the GELU applied: the pre-activation differs from the output
  assert.notDeepEqual([...be.toArray(p0)], want);
  assert.throws(() => be.groupedMatmul(y1, x, w, b, [...r.counts], { gather: true }), /routing/);
  const live = be.memory().liveBytes;
  be.groupedMatmul(y2, x, w, b, r, { gelu: { pre: null }, gather: true });
  assert.equal(be.memory().liveBytes, live, 'the temporaries are freed');
  [logits, x, w, b, xs, y0, y1, y2, p0, p1].forEach((t) => t.dispose());
  r.dispose();
});

test('selection bias changes the choice but not the gates', () => {
  const logits = be.fromArray([1, 0.9, 0], [1, 3], F);
  const bias = be.fromArray([0, 0.5, 0], [3], F);
  const r: MoeRouting = be.moeRoute(logits, { topK: 1, seqLen: 1, selectionBias: bias });
  assert.deepEqual([...be.toArray(r.expertIndex)], [1]);
  assert.ok(Math.abs(be.toArray(r.gates)[0]! - 1) < 1e-15);
  r.dispose();
  [logits, bias].forEach((t) => t.dispose());
});
