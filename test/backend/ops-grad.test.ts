/** Every backward of the CPU backend against central finite differences in float64, on odd shapes. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Tensor } from '../../src/backend/backend.js';
import { CpuBackend } from '../../src/backend/cpu/backend.js';
import { gradCheck, randn } from './gradcheck.js';

const be = new CpuBackend({ threads: 1 });
const F = 'float64';
const zerosLike = (t: Tensor) => be.zeros(t.shape, F);

test('the gradient check catches a wrong backward', () => {
  const x = randn(be, [3, 4], 9);
  assert.throws(
    () =>
      gradCheck(be, {
        inputs: { x },
        forward: () => {
          const y = be.empty(x.shape, F);
          be.activation(y, x, 'tanh');
          return [y];
        },
        // wrong on purpose: the derivative of tanh is 1 - tanh^2, not 1
        backward: ([dy]) => {
          const dx = be.empty(x.shape, F);
          be.copy(dx, dy!);
          return { x: dx };
        },
      }),
    /gradient of x/,
  );
  x.dispose();
});

test('matmul (all transposes, bias, GELU epilogue, alpha/beta) backward', () => {
  for (const [transA, transB] of [[false, false], [true, false], [false, true], [true, true]] as const) {
    const M = 5, K = 7, N = 3;
    const a = randn(be, transA ? [K, M] : [M, K], 1);
    const b = randn(be, transB ? [N, K] : [K, N], 2);
    const bias = randn(be, [N], 3);
    gradCheck(be, {
      inputs: { a, b, bias },
      forward: () => {
        const pre = be.empty([M, N], F);
        const out = be.empty([M, N], F);
        be.matmul(out, a, b, { transA, transB, bias, gelu: { pre } });
        pre.dispose();
        return [out];
      },
      backward: ([dy]) => {
        const pre = be.empty([M, N], F);
        const out = be.empty([M, N], F);
        be.matmul(out, a, b, { transA, transB, bias, gelu: { pre } });
        const dpre = be.empty([M, N], F);
        be.activationBackward(dpre, dy!, pre, 'gelu', false);
        // d(op(A)) = dpre op(B)^T; dA is its transpose when transA
        const da = zerosLike(a);
        const db = zerosLike(b);
        if (!transA) be.matmul(da, dpre, b, { transB: !transB });
        else be.matmul(da, b, dpre, { transA: transB, transB: true });
        if (!transB) be.matmul(db, a, dpre, { transA: !transA });
        else be.matmul(db, dpre, a, { transA: true, transB: transA });
        const dbias = be.zeros([N], F);
        be.biasBackward(dbias, dpre, true);
        [pre, out, dpre].forEach((t) => t.dispose());
        return { a: da, b: db, bias: dbias };
      },
    });
    [a, b, bias].forEach((t) => t.dispose());
  }
});

test('batched matmul with alpha and beta', () => {
  const a = randn(be, [3, 4, 5], 5);
  const b = randn(be, [3, 5, 2], 6);
  const c0 = randn(be, [3, 4, 2], 7);
  const out = be.empty([3, 4, 2], F);
  be.copy(out, c0);
  be.matmul(out, a, b, { alpha: 0.5, beta: -2 });
  const A = be.toArray(a), B = be.toArray(b), C = be.toArray(c0), O = be.toArray(out);
  for (let bt = 0; bt < 3; bt++)
    for (let i = 0; i < 4; i++)
      for (let j = 0; j < 2; j++) {
        let s = 0;
        for (let k = 0; k < 5; k++) s += A[bt * 20 + i * 5 + k]! * B[bt * 10 + k * 2 + j]!;
        assert.ok(Math.abs(O[bt * 8 + i * 2 + j]! - (0.5 * s - 2 * C[bt * 8 + i * 2 + j]!)) < 1e-12);
      }
  [a, b, c0, out].forEach((t) => t.dispose());
});

for (const kind of ['gelu', 'tanh', 'silu'] as const) {
  test(`activation ${kind} backward`, () => {
    const x = randn(be, [3, 7], 11, 2);
    gradCheck(be, {
      inputs: { x },
      forward: () => {
        const y = be.empty(x.shape, F);
        be.activation(y, x, kind);
        return [y];
      },
      backward: ([dy]) => {
        const dx = be.zeros(x.shape, F);
        be.activationBackward(dx, dy!, x, kind, true);
        return { x: dx };
      },
    });
    x.dispose();
  });
}

test('softmax backward', () => {
  const x = randn(be, [4, 9], 12);
  gradCheck(be, {
    inputs: { x },
    forward: () => {
      const y = be.empty(x.shape, F);
      be.softmax(y, x);
      return [y];
    },
    backward: ([dy]) => {
      const y = be.empty(x.shape, F);
      be.softmax(y, x);
      const dx = be.empty(x.shape, F);
      be.softmaxBackward(dx, dy!, y);
      y.dispose();
      return { x: dx };
    },
  });
  x.dispose();
});

test('layerNorm backward (input, weight, bias)', () => {
  const x = randn(be, [5, 11], 13, 3);
  const w = randn(be, [11], 14);
  const b = randn(be, [11], 15);
  const fwd = () => {
    const y = be.empty(x.shape, F);
    const mu = be.empty([5], F);
    const rs = be.empty([5], F);
    be.layerNorm(y, mu, rs, x, w, b, 1e-12);
    return { y, mu, rs };
  };
  gradCheck(be, {
    inputs: { x, w, b },
    forward: () => {
      const { y, mu, rs } = fwd();
      mu.dispose();
      rs.dispose();
      return [y];
    },
    backward: ([dy]) => {
      const { y, mu, rs } = fwd();
      const dx = be.empty(x.shape, F);
      const dw = be.zeros([11], F);
      const db = be.zeros([11], F);
      be.layerNormBackward(dx, dw, db, dy!, x, w, mu, rs, false);
      [y, mu, rs].forEach((t) => t.dispose());
      return { x: dx, w: dw, b: db };
    },
  });
  [x, w, b].forEach((t) => t.dispose());
});

test('addLayerNorm: the residual sum and the LayerNorm of it, as axpby then layerNorm (also in place); shape errors name the op', () => {
  const a = randn(be, [5, 11], 31, 2);
  const b = randn(be, [5, 11], 32, 2);
  const w = randn(be, [11], 33);
  const bias = randn(be, [11], 34);
  const [sum, y, mu, rs] = [be.empty([5, 11], F), be.empty([5, 11], F), be.empty([5], F), be.empty([5], F)];
  be.addLayerNorm(sum, y, mu, rs, a, b, w, bias, 1e-12);
  const [sum2, y2, mu2, rs2] = [be.empty([5, 11], F), be.empty([5, 11], F), be.empty([5], F), be.empty([5], F)];
  be.axpby(sum2, 1, a, 1, b);
  be.layerNorm(y2, mu2, rs2, sum2, w, bias, 1e-12);
  const av = be.toArray(a);
  const bv = be.toArray(b);
  const sv = be.toArray(sum);
  for (let i = 0; i < sv.length; i++) assert.equal(sv[i], av[i]! + bv[i]!);
  assert.deepEqual(be.toArray(y), be.toArray(y2));
  assert.deepEqual(be.toArray(mu), be.toArray(mu2));
  assert.deepEqual(be.toArray(rs), be.toArray(rs2));
  // in place, as the model calls it: sum aliases b
  be.addLayerNorm(b, y2, mu2, rs2, a, b, w, bias, 1e-12);
  assert.deepEqual(be.toArray(b), sv);
  assert.deepEqual(be.toArray(y2), be.toArray(y));
  // with b's bias folded in: sum = a + (b + bBias), sum aliasing b; sum aliasing a is refused
  const bb = randn(be, [11], 35);
  const [s3, y3, m3, r3, t3] = [be.empty([5, 11], F), be.empty([5, 11], F), be.empty([5], F), be.empty([5], F), be.empty([5, 11], F)];
  be.addBroadcast(t3, b, bb, [1, 5, 11], [1, 1, 11]);
  be.axpby(s3, 1, a, 1, t3);
  be.layerNorm(y3, m3, r3, s3, w, bias, 1e-12);
  const [b4, y4, m4, r4] = [be.empty([5, 11], F), be.empty([5, 11], F), be.empty([5], F), be.empty([5], F)];
  be.copy(b4, b);
  be.addLayerNorm(b4, y4, m4, r4, a, b4, w, bias, 1e-12, bb);
  assert.deepEqual(be.toArray(b4), be.toArray(s3));
  assert.deepEqual(be.toArray(y4), be.toArray(y3));
  assert.deepEqual(be.toArray(r4), be.toArray(r3));
  assert.throws(() => be.addLayerNorm(a, y4, m4, r4, a, b, w, bias, 1e-12, bb), /alias b but not a/);
  [bb, s3, y3, m3, r3, t3, b4, y4, m4, r4].forEach((t) => t.dispose());
  // bad shapes throw before anything is written
  const before = be.toArray(b);
  const short = be.empty([5, 10], F);
  assert.throws(() => be.addLayerNorm(b, y, mu, rs, a, short, w, bias, 1e-12), /addLayerNorm/);
  const wShort = be.empty([10], F);
  assert.throws(() => be.addLayerNorm(b, y, mu, rs, a, b, wShort, bias, 1e-12), /addLayerNorm: weight/);
  assert.deepEqual(be.toArray(b), before);
  [a, b, w, bias, sum, y, mu, rs, sum2, y2, mu2, rs2, short, wShort].forEach((t) => t.dispose());
});

test('embedding gather and scatter-add backward (repeated ids)', () => {
  const table = randn(be, [6, 5], 16);
  const ids = be.fromArray([3, 0, 3, 5, 1, 3, 0], [7], 'int32');
  gradCheck(be, {
    inputs: { table },
    forward: () => {
      const y = be.empty([7, 5], F);
      be.embedding(y, table, ids);
      return [y];
    },
    backward: ([dy]) => {
      const dt = be.zeros([6, 5], F);
      be.embeddingBackward(dt, ids, dy!);
      return { table: dt };
    },
  });
  [table, ids].forEach((t) => t.dispose());
});

test('tiedCrossEntropy: the cross-entropy of x table^T, loss and weighted gradient against a float64 reference; shapes checked', () => {
  const [R, V, K] = [5, 11, 7];
  const x = randn(be, [R, K], 31);
  const table = randn(be, [V, K], 32);
  const tg = [0, 10, 3, 3, 7];
  const targets = be.fromArray(tg, [R], 'int32');
  const wv = [1, 0.5, 2, 0, 3];
  const weights = be.fromArray(wv, [R], F);
  const loss = be.empty([R], F);
  const dl = be.empty([R, V], F);
  be.tiedCrossEntropy(loss, dl, x, table, targets, weights);
  const [xh, th, lh, gh] = [be.toArray(x), be.toArray(table), be.toArray(loss), be.toArray(dl)];
  for (let r = 0; r < R; r++) {
    const z = Array.from({ length: V }, (_, v) => {
      let s = 0;
      for (let k = 0; k < K; k++) s += xh[r * K + k]! * th[v * K + k]!;
      return s;
    });
    const mx = Math.max(...z);
    const lse = mx + Math.log(z.reduce((a, b) => a + Math.exp(b - mx), 0));
    assert.ok(Math.abs(lh[r]! - (lse - z[tg[r]!]!)) < 1e-12, `loss row ${r}`);
    for (let v = 0; v < V; v++) {
      const want = wv[r]! * (Math.exp(z[v]! - lse) - (v === tg[r] ? 1 : 0));
      assert.ok(Math.abs(gh[r * V + v]! - want) < 1e-12, `dlogits [${r}, ${v}]`);
    }
  }
  assert.throws(() => be.tiedCrossEntropy(loss, null, x, be.view(table, 0, [V, K - 1]), targets, null), /tiedCrossEntropy/);
  [x, table, targets, weights, loss, dl].forEach((t) => t.dispose());
});

test('fused softmax cross-entropy backward, with row weights', () => {
  const logits = randn(be, [6, 13], 17, 2);
  const targets = be.fromArray([0, 12, 5, 5, 7, 1], [6], 'int32');
  const weights = be.fromArray([1, 0.5, 2, 0, 1, 3], [6], F);
  gradCheck(be, {
    inputs: { logits },
    forward: () => {
      const l = be.empty([6], F);
      be.crossEntropy(l, null, logits, targets, null);
      // weight the rows so the check covers the weighted gradient
      be.mul(l, l, weights);
      return [l];
    },
    backward: ([dl]) => {
      // d/dlogits sum_r dl_r w_r loss_r: pass weights w_r dl_r
      const w = be.empty([6], F);
      be.mul(w, dl!, weights);
      const l = be.empty([6], F);
      const g = be.empty([6, 13], F);
      be.crossEntropy(l, g, logits, targets, w);
      [w, l].forEach((t) => t.dispose());
      return { logits: g };
    },
  });
  // the loss values themselves: lse - logit[target]
  const l = be.empty([6], F);
  be.crossEntropy(l, null, logits, targets, null);
  const x = be.toArray(logits);
  const t = be.toArray(targets);
  for (let r = 0; r < 6; r++) {
    let s = 0;
    for (let c = 0; c < 13; c++) s += Math.exp(x[r * 13 + c]!);
    assert.ok(Math.abs(be.toArray(l)[r]! - (Math.log(s) - x[r * 13 + t[r]!]!)) < 1e-12);
  }
  [logits, targets, weights, l].forEach((t) => t.dispose());
});

const attnCases = [
  { name: 'full', spec: { kind: 'full', heads: 2, window: 0, dilation: 1, globalTokens: 0 }, B: 2, S: 7, d: 6 },
  { name: 'sliding + globals', spec: { kind: 'sliding', heads: 3, window: 2, dilation: 1, globalTokens: 2 }, B: 2, S: 11, d: 9 },
  { name: 'sliding dilated', spec: { kind: 'sliding', heads: 1, window: 2, dilation: 3, globalTokens: 1 }, B: 1, S: 13, d: 5 },
  { name: 'sliding window >= N, no globals', spec: { kind: 'sliding', heads: 2, window: 20, dilation: 1, globalTokens: 0 }, B: 1, S: 9, d: 4 },
] as const;
for (const c of attnCases) {
  test(`attention backward: ${c.name}`, () => {
    const qkv = randn(be, [c.B, c.S, 3 * c.d], 20);
    const H = c.spec.heads;
    const fwd = () => {
      const out = be.empty([c.B, c.S, c.d], F);
      const lse = be.empty([c.B, H, c.S], F);
      be.attention(out, lse, qkv, c.spec);
      return { out, lse };
    };
    gradCheck(be, {
      inputs: { qkv },
      forward: () => {
        const { out, lse } = fwd();
        lse.dispose();
        return [out];
      },
      backward: ([dout]) => {
        const { out, lse } = fwd();
        const dqkv = be.empty(qkv.shape, F);
        be.attentionBackward(dqkv, dout!, qkv, out, lse, c.spec);
        out.dispose();
        lse.dispose();
        return { qkv: dqkv };
      },
    });
    qkv.dispose();
  });
}

test('dropout backward regenerates the mask from (seed, offset)', () => {
  const x = randn(be, [4, 25], 21);
  const y = be.empty(x.shape, F);
  be.dropout(y, x, 0.3, 99, 1000);
  const ya = be.toArray(y);
  const xa = be.toArray(x);
  let dropped = 0;
  for (let i = 0; i < ya.length; i++) {
    if (ya[i] === 0) dropped++;
    else assert.ok(Math.abs(ya[i]! - xa[i]! / 0.7) < 1e-12);
  }
  assert.ok(dropped > 10 && dropped < 50, `dropped ${dropped} of 100`);
  gradCheck(be, {
    inputs: { x },
    forward: () => {
      const o = be.empty(x.shape, F);
      be.dropout(o, x, 0.3, 99, 1000);
      return [o];
    },
    backward: ([dy]) => {
      const dx = be.empty(x.shape, F);
      be.dropoutBackward(dx, dy!, 0.3, 99, 1000);
      return { x: dx };
    },
  });
  [x, y].forEach((t) => t.dispose());
});

test('addBroadcast / reduceBroadcast, stridedCopy (concat and its reduction)', () => {
  const x = randn(be, [2, 3, 4], 22);
  const pos = randn(be, [1, 3, 4], 23);
  const tim = randn(be, [2, 1, 4], 24);
  gradCheck(be, {
    inputs: { x, pos, tim },
    forward: () => {
      const y = be.empty(x.shape, F);
      be.addBroadcast(y, x, pos, [2, 3, 4], [1, 3, 4]);
      be.addBroadcast(y, y, tim, [2, 3, 4], [2, 1, 4]);
      return [y];
    },
    backward: ([dy]) => {
      const dx = be.empty(x.shape, F);
      be.copy(dx, dy!);
      const dp = be.zeros(pos.shape, F);
      const dt = be.zeros(tim.shape, F);
      be.reduceBroadcast(dp, dy!, [2, 3, 4], [1, 3, 4], true);
      be.reduceBroadcast(dt, dy!, [2, 3, 4], [2, 1, 4], false);
      return { x: dx, pos: dp, tim: dt };
    },
  });
  // globals [G, d] in front of h [B, N, d]: broadcast copy, then the reduction back
  const G = 2, N = 3, d = 4, B = 2;
  const glob = randn(be, [G, d], 25);
  gradCheck(be, {
    inputs: { x, glob },
    forward: () => {
      const y = be.empty([B, G + N, d], F);
      be.stridedCopy(y, glob, { count: B, length: G * d, srcOffset: 0, srcStride: 0, dstOffset: 0, dstStride: (G + N) * d });
      be.stridedCopy(y, x, { count: B, length: N * d, srcOffset: 0, srcStride: N * d, dstOffset: G * d, dstStride: (G + N) * d });
      return [y];
    },
    backward: ([dy]) => {
      const dg = be.zeros(glob.shape, F);
      be.stridedCopy(dg, dy!, { count: B, length: G * d, srcOffset: 0, srcStride: (G + N) * d, dstOffset: 0, dstStride: 0, accumulate: true });
      const dx = be.empty(x.shape, F);
      be.stridedCopy(dx, dy!, { count: B, length: N * d, srcOffset: G * d, srcStride: (G + N) * d, dstOffset: 0, dstStride: N * d });
      return { x: dx, glob: dg };
    },
  });
  [x, pos, tim, glob].forEach((t) => t.dispose());
});

test('rowSquaredDistance and scaleRows', () => {
  const a = randn(be, [4, 6], 26);
  const b = randn(be, [4, 6], 27);
  const s = randn(be, [4], 28);
  gradCheck(be, {
    inputs: { a, b, s },
    forward: () => {
      const o = be.empty([4], F);
      be.rowSquaredDistance(o, a, b);
      const y = be.empty([4, 6], F);
      be.scaleRows(y, a, s, false);
      return [o, y];
    },
    backward: ([dout, dy]) => {
      // d/da of sum_r w_r ||a_r - b_r||^2 = 2 w_r (a_r - b_r); of <dy, s a> = s dy
      const diff = be.empty([4, 6], F);
      be.axpby(diff, 2, a, -2, b);
      const da = be.empty([4, 6], F);
      be.scaleRows(da, diff, dout!, false);
      be.scaleRows(da, dy!, s, true);
      const db = be.empty([4, 6], F);
      be.axpby(db, -1, da);
      be.scaleRows(db, dy!, s, true); // undo the s dy term for b
      const ds = be.empty([4], F);
      const prod = be.empty([4, 6], F);
      be.mul(prod, dy!, a);
      const pa = be.toArray(prod);
      be.write(ds, [0, 1, 2, 3].map((r) => Array.from(pa.subarray(r * 6, r * 6 + 6)).reduce((x, y) => x + y, 0)));
      [diff, prod].forEach((t) => t.dispose());
      return { a: da, b: db, s: ds };
    },
  });
  [a, b, s].forEach((t) => t.dispose());
});

test('addNormGradient: the gradient of ||x||_2 from the sum of squares on the device; nothing for x = 0', () => {
  const x = randn(be, [7], 29);
  const ss = be.empty([1], F);
  const quarter = be.fromArray(new Float64Array(7).fill(0.25), [7], F);
  gradCheck(be, {
    inputs: { x },
    forward: () => {
      be.rowSquaredDistance(ss, x);
      const o = be.empty([1], F);
      be.write(o, [Math.sqrt(be.toArray(ss)[0]!)]);
      return [o];
    },
    backward: ([dout]) => {
      be.rowSquaredDistance(ss, x);
      const dx = be.empty([7], F);
      be.copy(dx, quarter);
      be.addNormGradient(dx, x, ss, be.toArray(dout!)[0]!);
      be.axpby(dx, 1, dx, -1, quarter); // it adds to what dx held
      return { x: dx };
    },
  });
  const zero = be.zeros([7], F);
  const dz = be.fromArray(new Float64Array(7).fill(0.5), [7], F);
  be.rowSquaredDistance(ss, zero);
  be.addNormGradient(dz, zero, ss, 3);
  assert.deepEqual(Array.from(be.toArray(dz)), new Array(7).fill(0.5));
  [x, ss, quarter, zero, dz].forEach((t) => t.dispose());
});

test('qSample backward (soft absorbing state, replacement, source positions)', () => {
  const B = 2, N = 5, e = 3;
  const z0 = randn(be, [B, N, e], 30);
  const eps = randn(be, [B, N, e], 31);
  const m = randn(be, [e], 32);
  const sa = be.fromArray([0.9, 0.3], [B], F);
  const sb = be.fromArray([Math.sqrt(1 - 0.81), Math.sqrt(1 - 0.09)], [B], F);
  const im = be.fromArray([0, 0, 1, 1, 1, 0, 1, 1, 1, 1], [B, N], 'int32');
  const rm = be.fromArray([1, 0, 0, 1, 0, 0, 1, 0, 0, 1], [B, N], 'int32'); // position 0 is a source: never replaced
  gradCheck(be, {
    inputs: { z0, m, eps },
    forward: () => {
      const xt = be.empty([B, N, e], F);
      be.qSample(xt, z0, eps, m, sa, sb, im, rm);
      return [xt];
    },
    backward: ([dxt]) => {
      const dz = be.zeros(z0.shape, F);
      const dm = be.zeros([e], F);
      be.qSampleBackward(dz, dm, dxt!, sa, im, rm);
      return { z0: dz, m: dm };
    },
  });
  // values: source rows are z0, replaced target rows are m
  const xt = be.empty([B, N, e], F);
  be.qSample(xt, z0, eps, m, sa, sb, im, rm);
  const X = be.toArray(xt), Z = be.toArray(z0), Mv = be.toArray(m);
  assert.deepEqual([...X.slice(0, e)], [...Z.slice(0, e)]);
  assert.deepEqual([...X.slice(3 * e, 4 * e)], [...Mv]);
  [z0, eps, m, sa, sb, im, rm, xt].forEach((t) => t.dispose());
});

test('adamw matches the closed form of two steps', () => {
  const p = be.fromArray([1, -2], [2], F);
  const g = be.fromArray([0.5, -1], [2], F);
  const mm = be.zeros([2], F);
  const vv = be.zeros([2], F);
  const o = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
  be.adamw(p, g, mm, vv, { ...o, step: 1 });
  // step 1: m_hat = g, v_hat = g^2 -> update lr * sign(g) (up to eps), after decay
  const p1 = be.toArray(p);
  assert.ok(Math.abs(p1[0]! - (1 * (1 - 0.001) - 0.1 * 0.5 / (0.5 + 1e-8))) < 1e-12);
  assert.ok(Math.abs(p1[1]! - (-2 * (1 - 0.001) + 0.1 * 1 / (1 + 1e-8))) < 1e-12);
  be.adamw(p, g, mm, vv, { ...o, step: 2 });
  const m2 = 0.9 * 0.05 + 0.1 * 0.5;
  const v2 = 0.999 * 0.001 * 0.25 + 0.001 * 0.25;
  const exp = p1[0]! * (1 - 0.001) - (0.1 * (m2 / (1 - 0.81))) / (Math.sqrt(v2 / (1 - 0.999 ** 2)) + 1e-8);
  assert.ok(Math.abs(be.toArray(p)[0]! - exp) < 1e-12);
  [p, g, mm, vv].forEach((t) => t.dispose());
});
