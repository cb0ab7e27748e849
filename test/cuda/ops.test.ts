/**
 * The CUDA backend against the CPU reference: every op, forward and backward, on fresh random inputs
 * at several shapes (odd sizes too), outputs poisoned with NaN before each run so that an element
 * the GPU leaves unwritten fails; then the whole model (loss, every parameter gradient, sampling).
 *
 * float32 ops must agree to ~1e-5 of the reference's scale (max |gpu - cpu| / max |cpu|); ops that
 * move data or draw Philox numbers must agree bit for bit; the whole model to ~1e-4.
 *
 * Skipped, with the reason, where no CUDA driver and GPU are found (CI): `npm run test:gpu` runs it
 * on a GPU machine. Set MOE_DIFFUSEQ_TEST_SEED to replay a run's inputs (each failure prints it).
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { AttentionSpec, Backend, DType, MoeRouting, Tensor } from '../../src/backend/backend.js';
import { CpuBackend } from '../../src/backend/cpu/backend.js';
import { createBackend } from '../../src/backend/create.js';
import { CudaBackend } from '../../src/backend/cuda/backend.js';
import { CudaError, Driver } from '../../src/backend/cuda/driver.js';
import { Nvrtc } from '../../src/backend/cuda/nvrtc.js';
import { probeCuda } from '../../src/backend/cuda/probe.js';
import { diffusionLoss } from '../../src/diffusion/loss.js';
import { DTypeError, IndexError, ShapeError } from '../../src/errors.js';
import { Model } from '../../src/model/model.js';
import { sampleIds } from '../../src/sample/sampler.js';
import { maxRelErr, withEnv } from '../helpers.js';
import { microBatch, microConfig, microNoise } from '../model/fixtures.js';

const probe = probeCuda();
const skip: string | false = probe.available ? false : `no CUDA GPU on this machine: ${probe.reason}`;
const SEED = Number(process.env['MOE_DIFFUSEQ_TEST_SEED'] ?? Math.floor(Math.random() * 2 ** 31));

// backends exist only where the tests run (a GPU machine)
const cpu: Backend | null = skip ? null : new CpuBackend();
const gpuBackend: Backend | null = skip ? null : await createBackend('cuda');
const C = (): Backend => cpu!;
const G = (): Backend => gpuBackend!;

after(() => {
  if (!skip) {
    const rows = [...report.entries()].map(([k, v]) => `  ${k.padEnd(58)} ${v.toExponential(2)}`);
    console.log(`cuda vs cpu (seed ${SEED}), max |gpu - cpu| / max |cpu| per check:\n${rows.join('\n')}`);
    console.log(G().describe());
  }
  gpuBackend?.close();
  cpu?.close();
});

// ---- inputs --------------------------------------------------------------------------------------
let state = SEED >>> 0;
/** mulberry32: a small seeded generator for the test inputs. */
function rnd(): number {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
function randn(n: number, scale = 1): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = scale * Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
  return out;
}
function randInt(n: number, lo: number, hi: number): Int32Array {
  return Int32Array.from({ length: n }, () => lo + Math.floor(rnd() * (hi - lo)));
}
const sz = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** The same tensor on both backends. */
interface Pair {
  c: Tensor;
  g: Tensor;
}
const made: Pair[] = [];
function pair(data: ArrayLike<number>, shape: readonly number[], dtype: DType = 'float32'): Pair {
  const p = { c: C().fromArray(data, shape, dtype), g: G().fromArray(data, shape, dtype) };
  made.push(p);
  return p;
}
const rpair = (shape: readonly number[], scale = 1) => pair(randn(sz(shape), scale), shape);
/** An output: NaN (float) or a sentinel (int32) on both sides, so unwritten elements show. */
function out(shape: readonly number[], dtype: DType = 'float32'): Pair {
  const p = { c: C().empty(shape, dtype), g: G().empty(shape, dtype) };
  const v = dtype === 'int32' ? -123456789 : NaN;
  C().fill(p.c, v);
  G().fill(p.g, v);
  made.push(p);
  return p;
}
function freeAll(): void {
  for (const p of made.splice(0)) {
    p.c.dispose();
    p.g.dispose();
  }
}

// ---- comparison ----------------------------------------------------------------------------------
const report = new Map<string, number>();
function record(label: string, err: number): void {
  report.set(label, Math.max(report.get(label) ?? 0, err));
}
function close(label: string, p: Pair, tol = 1e-5): void {
  const g = G().toArray(p.g);
  const c = C().toArray(p.c);
  const { err, at } = maxRelErr(g, c);
  record(label, err);
  assert.ok(err <= tol, `${label}: rel err ${err} > ${tol} at [${at}] gpu ${g[at]} cpu ${c[at]} (seed ${SEED})`);
}
function exact(label: string, p: Pair): void {
  const g = G().toArray(p.g);
  const c = C().toArray(p.c);
  record(label, maxRelErr(g, c).err);
  for (let i = 0; i < c.length; i++) if (g[i] !== c[i] && !(Number.isNaN(g[i]) && Number.isNaN(c[i]))) assert.fail(`${label}: element ${i} differs: gpu ${g[i]} cpu ${c[i]} (seed ${SEED})`);
}
/** Runs `f` on both backends with the pairs' halves. */
function both(f: (be: Backend, side: 'c' | 'g') => void): void {
  f(C(), 'c');
  f(G(), 'g');
}

// ---- memory, dtypes, errors ----------------------------------------------------------------------
test('memory: float64 refused, round trips, fill, views, copies, zero-size tensors, no leaks, cached reuse', { skip }, () => {
  const g = G();
  assert.ok(g instanceof CudaBackend);
  assert.throws(() => g.empty([2], 'float64'), DTypeError);
  const base = g.memory().liveBytes;
  const f = randn(1001);
  const t = g.fromArray(f, [7, 11, 13]);
  assert.deepEqual(g.toArray(t), Float32Array.from(f));
  const ints = randInt(37, -1e9, 1e9);
  const ti = g.fromArray(ints, [37], 'int32');
  assert.deepEqual(g.toArray(ti), ints);
  assert.throws(() => g.write(ti, [1.5, ...new Array(36).fill(0)]), ShapeError);
  g.fill(t, -2.5);
  assert.ok((g.toArray(t) as Float32Array).every((v) => v === -2.5));
  g.fill(ti, 7);
  assert.ok((g.toArray(ti) as Int32Array).every((v) => v === 7));
  const z = g.zeros([5, 3]);
  assert.ok((g.toArray(z) as Float32Array).every((v) => v === 0));
  // a view writes through to its parent; copies between views
  const v = g.view(t, 100, [3, 4]);
  g.write(v, [...Array(12).keys()]);
  const back = g.toArray(t);
  for (let i = 0; i < 12; i++) assert.equal(back[100 + i], i);
  const w = g.view(t, 500, [12]);
  g.copy(w, v);
  assert.deepEqual([...g.toArray(w)], [...Array(12).keys()]);
  assert.throws(() => g.copy(ti, t), /cannot copy|same number/);
  const e0 = g.empty([0, 4]);
  assert.equal(g.toArray(e0).length, 0);
  assert.equal(g.sum(e0), 0);
  assert.equal(g.sum(ti), 7 * 37);
  [t, ti, z, v, w, e0].forEach((x) => x.dispose());
  t.dispose();
  assert.throws(() => g.toArray(t), /disposed/);
  assert.equal(g.memory().liveBytes, base, 'every tensor freed');
  // the caching allocator: a steady loop makes no new driver allocations
  const cb = g as CudaBackend;
  const loop = () => {
    const xs = [g.empty([1000]), g.empty([33, 65]), g.empty([1 << 18])];
    xs.forEach((x) => x.dispose());
  };
  loop();
  const allocs = cb.allocatorStats().driverAllocs;
  for (let i = 0; i < 10; i++) loop();
  assert.equal(cb.allocatorStats().driverAllocs, allocs);
  assert.equal(g.memory().liveBytes, base);
});

test('readLater: the contents as the work queued before it leaves them (float32, int32, bfloat16), read once', { skip }, () => {
  const g = G();
  // a product long enough that a read not ordered after it would see the old contents
  const n = 2048;
  const a = g.fromArray(randn(n * n), [n, n]);
  const y = g.zeros([n, n]);
  g.matmul(y, a, a);
  const ti = g.fromArray([5, -6, 7], [3], 'int32');
  const tb = g.fromArray([1.5, -2.25], [2], 'bfloat16');
  const later = g.readLater([y, ti, tb]);
  const [ry, ri, rb] = later();
  const want = g.toArray(y);
  assert.ok(want.some((v) => v !== 0));
  assert.deepEqual(ry, want, 'the product, not the zeros before it');
  assert.deepEqual([...ri!], [5, -6, 7]);
  assert.deepEqual([...rb!], [1.5, -2.25]);
  assert.throws(() => later(), /read twice/);
  [a, y, ti, tb].forEach((t) => t.dispose());
});

test('errors: driver failures are CudaErrors naming the call; NVRTC errors carry the log; shapes and ids as on the CPU', { skip }, () => {
  const drv = Driver.get();
  assert.throws(
    () => drv.memAlloc(2 ** 50),
    (e: unknown) => e instanceof CudaError && e.library === 'driver' && e.call === 'cuMemAlloc_v2' && e.code !== 0 && /^cuMemAlloc_v2 failed: CUDA_ERROR_\w+ \(\d+\)/.test(e.message),
  );
  assert.throws(
    () => Nvrtc.get().compile('broken.cu', 'extern "C" __global__ void k(float *x) { x[0] = not_declared; }', (G() as CudaBackend).arch),
    (e: unknown) => e instanceof CudaError && e.library === 'nvrtc' && /not_declared/.test(e.message),
  );
  const table = G().fromArray(randn(12), [4, 3]);
  const ids = G().fromArray([0, 3, 4], [3], 'int32');
  const o = G().empty([3, 3]);
  assert.throws(() => G().embedding(o, table, ids), IndexError);
  assert.throws(() => G().matmul(o, table, table), ShapeError);
  const qkv = G().empty([1, 5, 9]);
  const ao = G().empty([1, 5, 3]);
  const al = G().empty([2, 5]);
  assert.throws(() => G().attention(ao, al, qkv, { kind: 'sliding', heads: 2, window: 1, dilation: 1, globalTokens: 0 }), ShapeError);
  [table, ids, o, qkv, ao, al].forEach((t) => t.dispose());
});

test('ids the host knows skip the read-back, and every write it cannot bound brings it back: bad ids still throw', { skip }, () => {
  const g = G();
  const made: Tensor[] = [];
  const up = (v: number[], shape: number[], dtype: DType = 'float32') => {
    const t = g.fromArray(v, shape, dtype);
    made.push(t);
    return t;
  };
  const add = (dst: Tensor, src: Tensor) => g.stridedCopy(dst, src, { count: 1, length: dst.size, srcOffset: 0, srcStride: 0, dstOffset: 0, dstStride: 0, accumulate: true });
  const table = up([...randn(10 * 3)], [10, 3]);
  const o = g.empty([4, 3]);
  made.push(o);
  const bad = (ids: Tensor, what: string) => assert.throws(() => g.embedding(o, table, ids), IndexError, what);
  const ids = up([0, 3, 9, 2], [4], 'int32');
  g.embedding(o, table, ids); // an upload: known, in range
  g.write(g.view(ids, 1, [1]), [10]);
  bad(ids, 'a host write into a view widens the bound past the table');
  g.fill(ids, 4);
  g.embedding(o, table, ids);
  add(ids, up([7, 7, 7, 7], [4], 'int32'));
  bad(ids, 'accumulated ids (4 + 7) are unknown to the host: read back and refused');
  // a row argmax over a 10-row table lies in [0, 10): fine for that table, read back for a 5-row one
  const big = up(Array.from({ length: 30 }, (_v, i) => (Math.floor(i / 3) === 7 ? 1 : 0)), [10, 3]);
  const near = g.empty([4], 'int32');
  made.push(near);
  g.argmaxDot(near, up(Array.from({ length: 12 }, () => 1), [4, 3]), big);
  assert.deepEqual([...g.toArray(near)], [7, 7, 7, 7]);
  g.embedding(o, table, near);
  assert.throws(() => g.embedding(o, up([...randn(5 * 3)], [5, 3]), near), IndexError, 'row 7 of a 5-row table');
  // a copy of a buffer the host cannot bound makes the destination unknown again
  const sum = up([5, 5, 5, 5], [4], 'int32');
  add(sum, near); // 12s
  g.copy(ids, sum);
  bad(ids, 'copied from a buffer the host cannot bound');
  made.forEach((t) => t.dispose());
});

// ---- randomness ------------------------------------------------------------------------------------
test('Philox: uniform bit for bit, normal within one float32 ulp, dropout masks identical (forward and backward)', { skip }, () => {
  for (const [n, seed, offset] of [[1, 0, 0], [3, 12345, 5], [1000, 2 ** 40 + 7, 2 ** 33 + 3], [4097, 99, 1]] as const) {
    const u = out([n]);
    both((be, s) => be.randomUniform(u[s], seed, offset));
    exact(`randomUniform n=${n}`, u);
    const z = out([n]);
    both((be, s) => be.randomNormal(z[s], seed, offset, 0.7));
    const g = G().toArray(z.g);
    const c = C().toArray(z.c);
    let differ = 0;
    for (let i = 0; i < n; i++) {
      if (g[i] === c[i]) continue;
      differ++;
      assert.ok(Math.abs(g[i]! - c[i]!) <= Math.abs(c[i]!) * 2 ** -23, `randomNormal[${i}]: ${g[i]} vs ${c[i]}`);
    }
    record(`randomNormal n=${n} (elements 1 ulp apart: ${differ})`, maxRelErr(g, c).err);
    for (const p of [0.1, 0.5]) {
      const x = rpair([n]);
      const y = out([n]);
      both((be, s) => be.dropout(y[s], x[s], p, seed, offset));
      exact(`dropout p=${p} n=${n}`, y);
      both((be, s) => be.dropoutBackward(x[s], x[s], p, seed, offset + 1)); // in place
      exact(`dropoutBackward in place p=${p} n=${n}`, x);
    }
    freeAll();
  }
});

// ---- elementwise -------------------------------------------------------------------------------------
test('axpby, mul, scaleRows, rowSquaredDistance, sum, sumSquares', { skip }, () => {
  for (const shape of [[1], [7, 5], [33, 129], [3, 1000]]) {
    const n = sz(shape);
    const R = shape.length > 1 ? shape[0]! : 1;
    const x = rpair(shape);
    const y = rpair(shape);
    const o = out(shape);
    both((be, s) => be.axpby(o[s], 0.7, x[s], -1.3, y[s]));
    close(`axpby ${shape}`, o);
    both((be, s) => be.axpby(o[s], 2.5, x[s]));
    close(`axpby (no y) ${shape}`, o);
    both((be, s) => be.axpby(y[s], 0.3, y[s], 1.1, x[s])); // in place
    close(`axpby in place ${shape}`, y);
    both((be, s) => be.mul(o[s], x[s], y[s]));
    close(`mul ${shape}`, o);
    const sc = rpair([R]);
    const acc = rpair(shape);
    both((be, s) => be.scaleRows(acc[s], x[s], sc[s], true));
    close(`scaleRows accumulate ${shape}`, acc);
    both((be, s) => be.scaleRows(o[s], x[s], sc[s], false));
    close(`scaleRows ${shape}`, o);
    const d = out([R]);
    both((be, s) => be.rowSquaredDistance(d[s], x[s], y[s]));
    close(`rowSquaredDistance ${shape}`, d);
    both((be, s) => be.rowSquaredDistance(d[s], x[s]));
    close(`rowSquaredDistance (no b) ${shape}`, d);
    // the gradient of 0.7 ||x||: from the sum of squares of the whole of x (one row of it)
    const ss = out([1]);
    both((be, s) => be.rowSquaredDistance(ss[s], be.view(x[s], 0, [1, n])));
    both((be, s) => be.addNormGradient(acc[s], x[s], ss[s], 0.7));
    close(`addNormGradient ${shape}`, acc);
    for (const [name, f] of [['sum', (be: Backend, t: Tensor) => be.sum(t)], ['sumSquares', (be: Backend, t: Tensor) => be.sumSquares(t)]] as const) {
      const a = f(G(), x.g);
      const b = f(C(), x.c);
      const err = Math.abs(a - b) / Math.max(Math.abs(b), 1e-300);
      record(`${name} n=${n}`, err);
      assert.ok(err < 1e-12 || Math.abs(a - b) < 1e-12, `${name}: ${a} vs ${b}`);
    }
    freeAll();
  }
});

test('addBroadcast and reduceBroadcast over every broadcast pattern (reduceBroadcast: the CPU\'s bits)', { skip }, () => {
  // 33 and 70 broadcast positions: groups of 16 loads and a rest (reduce_broadcast_f32's loads ahead)
  for (const dims of [[1, 1, 1], [3, 5, 7], [4, 33, 17], [2, 70, 9]] as const) {
    const [P, Q, R] = dims;
    for (const ys of [[1, Q, R], [P, 1, R], [1, 1, R], [P, Q, R]] as [number, number, number][]) {
      const x = rpair([P, Q, R]);
      const y = rpair(ys);
      const o = out([P, Q, R]);
      both((be, s) => be.addBroadcast(o[s], x[s], y[s], dims, ys));
      close(`addBroadcast ${dims} y ${ys}`, o);
      both((be, s) => be.addBroadcast(x[s], x[s], y[s], dims, ys)); // in place, as the denoiser does
      close(`addBroadcast in place ${dims} y ${ys}`, x);
      const dy = out(ys);
      both((be, s) => be.reduceBroadcast(dy[s], o[s], dims, ys, false));
      assert.deepEqual([...G().toArray(dy.g)], [...C().toArray(dy.c)], `reduceBroadcast ${dims} y ${ys}: the CPU's bits`);
      both((be, s) => be.reduceBroadcast(y[s], o[s], dims, ys, true));
      assert.deepEqual([...G().toArray(y.g)], [...C().toArray(y.c)], `reduceBroadcast accumulate ${dims} y ${ys}: the CPU's bits`);
      freeAll();
    }
  }
});

test('activations (gelu, tanh, silu) and their backward', { skip }, () => {
  for (const n of [1, 37, 4099]) {
    for (const kind of ['gelu', 'tanh', 'silu'] as const) {
      const x = rpair([n], 3);
      const dy = rpair([n]);
      const o = out([n]);
      both((be, s) => be.activation(o[s], x[s], kind));
      close(`activation ${kind} n=${n}`, o);
      const dx = out([n]);
      both((be, s) => be.activationBackward(dx[s], dy[s], x[s], kind, false));
      close(`activationBackward ${kind} n=${n}`, dx);
      both((be, s) => be.activationBackward(dy[s], dy[s], x[s], kind, true)); // aliased, accumulating
      close(`activationBackward accumulate in place ${kind} n=${n}`, dy);
      freeAll();
    }
  }
});

test('stridedCopy: disjoint, broadcast, reduce, overlapping (copy and accumulate), int32', { skip }, () => {
  type Cfg = { count: number; length: number; srcOffset: number; srcStride: number; dstOffset: number; dstStride: number; accumulate?: boolean };
  const cases: [string, number, number, Cfg][] = [
    ['disjoint', 200, 300, { count: 5, length: 17, srcOffset: 3, srcStride: 20, dstOffset: 7, dstStride: 40 }],
    ['disjoint accumulate', 200, 300, { count: 5, length: 17, srcOffset: 3, srcStride: 20, dstOffset: 7, dstStride: 40, accumulate: true }],
    ['broadcast (src stride 0)', 30, 300, { count: 7, length: 30, srcOffset: 0, srcStride: 0, dstOffset: 2, dstStride: 41 }],
    ['reduce (dst stride 0, accumulate)', 300, 40, { count: 9, length: 31, srcOffset: 1, srcStride: 32, dstOffset: 5, dstStride: 0, accumulate: true }],
    ['overlapping copy', 300, 300, { count: 6, length: 20, srcOffset: 0, srcStride: 25, dstOffset: 3, dstStride: 7 }],
    ['overlapping accumulate', 300, 300, { count: 6, length: 20, srcOffset: 0, srcStride: 25, dstOffset: 3, dstStride: 7, accumulate: true }],
  ];
  for (const [name, ns, nd, cfg] of cases) {
    const src = rpair([ns]);
    const dst = rpair([nd]);
    both((be, s) => be.stridedCopy(dst[s], src[s], cfg));
    close(`stridedCopy ${name}`, dst, name.includes('accumulate') ? 1e-6 : 0);
    const si = pair(randInt(ns, -1000, 1000), [ns], 'int32');
    const di = pair(randInt(nd, -1000, 1000), [nd], 'int32');
    both((be, s) => be.stridedCopy(di[s], si[s], cfg));
    exact(`stridedCopy int32 ${name}`, di);
    freeAll();
  }
});

// ---- matmul -----------------------------------------------------------------------------------------
test('matmul: every transpose, folded and batched operands, bias, GELU epilogue, alpha/beta, empty K', { skip }, () => {
  for (const [M, K, N] of [[1, 1, 1], [5, 7, 3], [33, 65, 17], [128, 96, 64]] as const) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        const tag = `${M}x${K}x${N}${transA ? ' tA' : ''}${transB ? ' tB' : ''}`;
        // unbatched weight, with the bias + GELU epilogue
        const a = rpair(transA ? [K, M] : [M, K]);
        const b = rpair(transB ? [N, K] : [K, N]);
        const bias = rpair([N]);
        const o = out([M, N]);
        const pre = out([M, N]);
        both((be, s) => be.matmul(o[s], a[s], b[s], { transA, transB, bias: bias[s], gelu: { pre: pre[s] } }));
        close(`matmul ${tag} bias+gelu`, o);
        close(`matmul ${tag} gelu pre`, pre);
        // alpha / beta on an initialised output
        const acc = rpair([M, N]);
        both((be, s) => be.matmul(acc[s], a[s], b[s], { transA, transB, alpha: 0.5, beta: 0.7 }));
        close(`matmul ${tag} alpha beta`, acc);
        // batched (3-d both sides)
        const ab = rpair(transA ? [3, K, M] : [3, M, K]);
        const bb = rpair(transB ? [3, N, K] : [3, K, N]);
        const ob = out([3, M, N]);
        both((be, s) => be.matmul(ob[s], ab[s], bb[s], { transA, transB }));
        close(`matmul batched ${tag}`, ob);
        freeAll();
      }
    }
    // A's leading dims folded into rows (a Linear over [B, S, K])
    const a3 = rpair([2, M, K]);
    const w = rpair([N, K]);
    const o3 = out([2, M, N]);
    both((be, s) => be.matmul(o3[s], a3[s], w[s], { transB: true }));
    close(`matmul folded [2,${M},${K}] x W^T`, o3);
    freeAll();
  }
  // an empty inner dimension (batched operands: with a 2-d B, A's rows would fold to none)
  const a = pair([], [1, 4, 0]);
  const b = pair([], [1, 0, 3]);
  const o = rpair([1, 4, 3]);
  both((be, s) => be.matmul(o[s], a[s], b[s], { beta: 0.5 }));
  close('matmul K=0 (C = beta C)', o);
  freeAll();
});

test('biasBackward (overwrite and accumulate)', { skip }, () => {
  for (const [R, N] of [[1, 1], [7, 3], [513, 65]] as const) {
    const dy = rpair([R, N]);
    const db = out([N]);
    both((be, s) => be.biasBackward(db[s], dy[s], false));
    close(`biasBackward ${R}x${N}`, db);
    both((be, s) => be.biasBackward(db[s], dy[s], true));
    close(`biasBackward accumulate ${R}x${N}`, db);
    freeAll();
  }
});

// ---- rows -------------------------------------------------------------------------------------------
test('softmax, layerNorm, and their backward', { skip }, () => {
  for (const [R, Cn] of [[1, 1], [3, 7], [64, 129], [5, 1000]] as const) {
    const tag = `${R}x${Cn}`;
    const x = rpair([R, Cn], 2);
    const dy = rpair([R, Cn]);
    const y = out([R, Cn]);
    both((be, s) => be.softmax(y[s], x[s]));
    close(`softmax ${tag}`, y);
    const dx = out([R, Cn]);
    both((be, s) => be.softmaxBackward(dx[s], dy[s], y[s]));
    close(`softmaxBackward ${tag}`, dx);
    const w = rpair([Cn]);
    const b = rpair([Cn]);
    const ln = out([R, Cn]);
    const mean = out([R]);
    const rstd = out([R]);
    both((be, s) => be.layerNorm(ln[s], mean[s], rstd[s], x[s], w[s], b[s], 1e-5));
    close(`layerNorm ${tag}`, ln);
    close(`layerNorm mean ${tag}`, mean);
    close(`layerNorm rstd ${tag}`, rstd);
    const gw = rpair([Cn]);
    const gb = rpair([Cn]);
    const gx = out([R, Cn]);
    both((be, s) => be.layerNormBackward(gx[s], gw[s], gb[s], dy[s], x[s], w[s], mean[s], rstd[s], false));
    close(`layerNormBackward dx ${tag}`, gx);
    close(`layerNormBackward dweight ${tag}`, gw);
    close(`layerNormBackward dbias ${tag}`, gb);
    both((be, s) => be.layerNormBackward(gx[s], gw[s], gb[s], dy[s], x[s], w[s], mean[s], rstd[s], true));
    close(`layerNormBackward dx accumulate ${tag}`, gx);
    freeAll();
  }
});

test('embedding and embeddingBackward (repeated ids), crossEntropy (with and without gradient and weights)', { skip }, () => {
  for (const [M, V, e] of [[1, 1, 1], [37, 11, 5], [300, 1000, 33]] as const) {
    const table = rpair([V, e]);
    const ids = pair(randInt(M, 0, V), [M], 'int32');
    const o = out([M, e]);
    both((be, s) => be.embedding(o[s], table[s], ids[s]));
    exact(`embedding ${M}x${V}x${e}`, o);
    const dout = rpair([M, e]);
    const dt = rpair([V, e]);
    both((be, s) => be.embeddingBackward(dt[s], ids[s], dout[s]));
    close(`embeddingBackward ${M}x${V}x${e}`, dt);
    const logits = rpair([M, V], 3);
    const targets = pair(randInt(M, 0, V), [M], 'int32');
    const wts = pair(Array.from({ length: M }, () => rnd()), [M]);
    const loss = out([M]);
    both((be, s) => be.crossEntropy(loss[s], null, logits[s], targets[s], null));
    close(`crossEntropy ${M}x${V}`, loss);
    const dl = out([M, V]);
    both((be, s) => be.crossEntropy(loss[s], dl[s], logits[s], targets[s], wts[s]));
    close(`crossEntropy loss (weighted) ${M}x${V}`, loss);
    close(`crossEntropy dlogits (weighted) ${M}x${V}`, dl);
    both((be, s) => be.crossEntropy(loss[s], dl[s], logits[s], targets[s], null));
    close(`crossEntropy dlogits ${M}x${V}`, dl);
    freeAll();
  }
  const logits = pair(randn(6), [2, 3]);
  const bad = pair([0, 3], [2], 'int32');
  const loss = out([2]);
  assert.throws(() => G().crossEntropy(loss.g, null, logits.g, bad.g, null), IndexError);
  freeAll();
});

// ---- attention ----------------------------------------------------------------------------------------
test('attention forward and backward: full, sliding, dilated, global tokens, odd sizes', { skip }, () => {
  const cases: [number, number, number, number, AttentionSpec][] = [
    [2, 7, 2, 4, { kind: 'full', heads: 2, window: 0, dilation: 1, globalTokens: 0 }],
    [2, 9, 2, 2, { kind: 'sliding', heads: 2, window: 2, dilation: 1, globalTokens: 2 }],
    [1, 33, 3, 5, { kind: 'sliding', heads: 3, window: 3, dilation: 2, globalTokens: 1 }],
    [2, 40, 2, 64, { kind: 'sliding', heads: 2, window: 4, dilation: 1, globalTokens: 3 }],
    [1, 5, 1, 3, { kind: 'sliding', heads: 1, window: 0, dilation: 1, globalTokens: 0 }],
    [1, 70, 2, 40, { kind: 'full', heads: 2, window: 0, dilation: 1, globalTokens: 2 }],
    [1, 3, 1, 8, { kind: 'sliding', heads: 1, window: 1, dilation: 3, globalTokens: 3 }],
    [3, 129, 4, 33, { kind: 'sliding', heads: 4, window: 7, dilation: 3, globalTokens: 4 }],
    // several tiles of the tiled kernels: globals inside the first tile, windows across tile edges,
    // head sizes in the 128 bucket, a window as long as the sequence
    [2, 300, 2, 64, { kind: 'sliding', heads: 2, window: 50, dilation: 2, globalTokens: 16 }],
    [1, 200, 3, 64, { kind: 'full', heads: 3, window: 0, dilation: 1, globalTokens: 16 }],
    [1, 150, 2, 100, { kind: 'sliding', heads: 2, window: 20, dilation: 1, globalTokens: 5 }],
    [2, 97, 1, 128, { kind: 'sliding', heads: 1, window: 200, dilation: 1, globalTokens: 70 }],
  ];
  for (const [B, S, H, dh, spec] of cases) {
    const d = H * dh;
    const tag = `B${B} S${S} H${H} dh${dh} ${spec.kind} w${spec.window} r${spec.dilation} G${spec.globalTokens}`;
    const qkv = rpair([B, S, 3 * d]);
    const o = out([B, S, d]);
    const lse = out([B, H, S]);
    both((be, s) => be.attention(o[s], lse[s], qkv[s], spec));
    close(`attention out ${tag}`, o);
    close(`attention lse ${tag}`, lse);
    const dout = rpair([B, S, d]);
    const dqkv = out([B, S, 3 * d]);
    both((be, s) => be.attentionBackward(dqkv[s], dout[s], qkv[s], o[s], lse[s], spec));
    close(`attentionBackward ${tag}`, dqkv);
    freeAll();
  }
});

test('tiled attention kernels equal their slow twins (one warp per row) on the GPU', { skip }, () => {
  const rows = new CudaBackend({ attention: 'rows' });
  const tiled = new CudaBackend({ attention: 'tiled' });
  assert.equal((G() as CudaBackend).attentionKernel, 'auto', 'the tensor-core kernels (wgmma forward where the card has it) are the default');
  try {
    for (const [B, S, H, dh, spec] of [
      [2, 257, 3, 64, { kind: 'sliding', heads: 3, window: 31, dilation: 1, globalTokens: 8 }],
      [1, 190, 2, 72, { kind: 'sliding', heads: 2, window: 9, dilation: 4, globalTokens: 0 }],
      [2, 130, 2, 32, { kind: 'full', heads: 2, window: 0, dilation: 1, globalTokens: 3 }],
    ] as [number, number, number, number, AttentionSpec][]) {
      const d = H * dh;
      const tag = `B${B} S${S} H${H} dh${dh} ${spec.kind} w${spec.window} r${spec.dilation} G${spec.globalTokens}`;
      const qkv = randn(B * S * 3 * d);
      const dout = randn(B * S * d);
      const run = (be: CudaBackend) => {
        const q = be.fromArray(qkv, [B, S, 3 * d]);
        const g = be.fromArray(dout, [B, S, d]);
        const o = be.fromArray(new Float32Array(B * S * d).fill(NaN), [B, S, d]);
        const l = be.fromArray(new Float32Array(B * H * S).fill(NaN), [B, H, S]);
        const dq = be.fromArray(new Float32Array(B * S * 3 * d).fill(NaN), [B, S, 3 * d]);
        be.attention(o, l, q, spec);
        be.attentionBackward(dq, g, q, o, l, spec);
        const r = { o: be.toArray(o), l: be.toArray(l), dq: be.toArray(dq) };
        for (const t of [q, g, o, l, dq]) t.dispose();
        return r;
      };
      const a = run(tiled);
      const b = run(rows);
      for (const k of ['o', 'l', 'dq'] as const) {
        const { err, at } = maxRelErr(a[k], b[k]);
        record(`tiled vs rows attention ${k} ${tag}`, err);
        assert.ok(err <= 1e-5, `tiled vs rows ${k} ${tag}: rel err ${err} at [${at}] (seed ${SEED})`);
      }
    }
  } finally {
    rows.close();
    tiled.close();
  }
});

// ---- mixture of experts ---------------------------------------------------------------------------------
/** The GPU's routing against the CPU's: the decisions exactly, the numbers to float rounding. */
function sameRouting(label: string, a: MoeRouting, b: MoeRouting): void {
  assert.deepEqual(a.counts, b.counts, `${label}: counts`);
  assert.deepEqual(a.loadShare, b.loadShare, `${label}: loadShare`);
  for (const k of ['aux', 'z'] as const) {
    const err = Math.abs(a[k] - b[k]) / Math.max(Math.abs(b[k]), 1e-300);
    record(`${label}: ${k}`, err);
    assert.ok(err <= 1e-12, `${label}: ${k} ${a[k]} vs ${b[k]}`);
  }
  for (const k of ['expertIndex', 'order', 'slot'] as const) assert.deepEqual(G().toArray(a[k]), C().toArray(b[k]), `${label}: ${k}`);
  for (const k of ['probs', 'lse', 'gates', 'gateNorm'] as const) {
    const { err, at } = maxRelErr(G().toArray(a[k]), C().toArray(b[k]));
    record(`${label}: ${k}`, err);
    assert.ok(err <= 1e-6, `${label}: ${k} rel err ${err} at [${at}]`);
  }
}

test('MoE: route and its backward, permute, combine, grouped matmul, all with their backward', { skip }, () => {
  for (const [M, E, k, d, f, seqLen, cf, biased] of [
    [7, 3, 2, 5, 6, 7, undefined, false],
    [60, 4, 2, 16, 24, 12, 1.0, true],
    [99, 8, 3, 33, 17, 33, 1.25, false],
    [10, 2, 1, 8, 4, 5, 0.5, false],
    // several chunks of 256 assignments per sequence: the capacity and the order across chunks
    [2000, 8, 2, 8, 8, 500, 1.0, true],
    [3000, 5, 2, 4, 4, 3000, undefined, false],
    // dropless past the one-block order (moe_order_small: 16,384 assignments): the chunked kernels
    [9000, 8, 2, 4, 4, 9000, undefined, false],
  ] as const) {
    const tag = `M${M} E${E} k${k} d${d} f${f}${cf ? ` cf${cf}` : ''}${biased ? ' biased' : ''}`;
    const logits = rpair([M, E], 2);
    const bias = biased ? rpair([E], 0.1) : null;
    const opts = (s: 'c' | 'g') => ({ topK: k, seqLen, ...(cf !== undefined ? { capacityFactor: cf } : {}), ...(bias ? { selectionBias: bias[s] } : {}) });
    const rc = C().moeRoute(logits.c, opts('c'));
    const rg = G().moeRoute(logits.g, opts('g'));
    const r = { c: rc, g: rg };
    sameRouting(`moeRoute ${tag}`, rg, rc);
    const A = rc.order.size;
    const x = rpair([M, d]);
    const xs = out([A, d]);
    both((be, s) => be.moePermute(xs[s], x[s], r[s]));
    exact(`moePermute ${tag}`, xs);
    // expert MLP through the grouped matmul (bias + GELU), then back
    const w1 = rpair([E, f, d], 0.5);
    const b1 = rpair([E, f]);
    const w2 = rpair([E, d, f], 0.5);
    const b2 = rpair([E, d]);
    const pre = out([A, f]);
    const act = out([A, f]);
    // the routing itself as the groups (a GPU routing without a capacity keeps its offsets on the device)
    both((be, s) => be.groupedMatmul(act[s], xs[s], w1[s], b1[s], r[s], { gelu: { pre: pre[s] } }));
    close(`groupedMatmul bias+gelu ${tag}`, act);
    close(`groupedMatmul pre ${tag}`, pre);
    const ys = out([A, d]);
    both((be, s) => be.groupedMatmul(ys[s], act[s], w2[s], b2[s], r[s].counts));
    close(`groupedMatmul bias ${tag}`, ys);
    const y = out([M, d]);
    both((be, s) => be.moeCombine(y[s], ys[s], r[s], false));
    close(`moeCombine ${tag}`, y);
    const yacc = rpair([M, d]);
    both((be, s) => be.moeCombine(yacc[s], ys[s], r[s], true));
    close(`moeCombine accumulate ${tag}`, yacc);
    const dy = rpair([M, d]);
    const dys = out([A, d]);
    const dgates = out([M, k]);
    both((be, s) => be.moeCombineBackward(dys[s], dgates[s], dy[s], ys[s], r[s]));
    close(`moeCombineBackward dys ${tag}`, dys);
    close(`moeCombineBackward dgates ${tag}`, dgates);
    const dact = out([A, f]);
    const gw2 = rpair([E, d, f]);
    const gb2 = rpair([E, d]);
    both((be, s) => be.groupedMatmulBackward(dact[s], gw2[s], gb2[s], dys[s], act[s], w2[s], r[s]));
    close(`groupedMatmulBackward dxs ${tag}`, dact);
    close(`groupedMatmulBackward dweight ${tag}`, gw2);
    close(`groupedMatmulBackward dbias ${tag}`, gb2);
    const gw1 = rpair([E, f, d]);
    both((be, s) => be.groupedMatmulBackward(null, gw1[s], null, dact[s], xs[s], w1[s], r[s].counts));
    close(`groupedMatmulBackward (no dxs, no dbias) ${tag}`, gw1);
    const dx = out([M, d]);
    both((be, s) => be.moePermuteBackward(dx[s], dys[s], r[s], false));
    close(`moePermuteBackward ${tag}`, dx);
    const dxacc = rpair([M, d]);
    both((be, s) => be.moePermuteBackward(dxacc[s], dys[s], r[s], true));
    close(`moePermuteBackward accumulate ${tag}`, dxacc);
    const dl = out([M, E]);
    both((be, s) => be.moeRouteBackward(dl[s], r[s], dgates[s], 0.3, 0.02));
    close(`moeRouteBackward ${tag}`, dl);
    rc.dispose();
    rg.dispose();
    freeAll();
  }
  // a grouped matmul where some experts get no rows
  const counts = [3, 0, 5, 0, 2];
  const x = rpair([10, 7]);
  const w = rpair([5, 4, 7]);
  const o = out([10, 4]);
  both((be, s) => be.groupedMatmul(o[s], x[s], w[s], null, counts));
  close('groupedMatmul with empty experts', o);
  const gw = rpair([5, 4, 7]);
  const gx = out([10, 7]);
  const gb = rpair([5, 4]);
  both((be, s) => be.groupedMatmulBackward(gx[s], gw[s], gb[s], o[s], x[s], w[s], counts));
  close('groupedMatmulBackward with empty experts dweight', gw);
  close('groupedMatmulBackward with empty experts dxs', gx);
  close('groupedMatmulBackward with empty experts dbias', gb);
  freeAll();
});

// ---- diffusion, search, optimiser ----------------------------------------------------------------------------
test('qSample and qSampleBackward (with and without m)', { skip }, () => {
  for (const [B, N, e] of [[1, 1, 1], [3, 7, 5], [4, 65, 33]] as const) {
    for (const withM of [true, false]) {
      const tag = `${B}x${N}x${e}${withM ? ' m' : ''}`;
      const z0 = rpair([B, N, e]);
      const eps = rpair([B, N, e]);
      const m = withM ? rpair([e]) : null;
      const sa = pair(Array.from({ length: B }, () => rnd()), [B]);
      const sb = pair(Array.from({ length: B }, () => rnd()), [B]);
      const im = pair(randInt(B * N, 0, 2), [B, N], 'int32');
      const rm = pair(randInt(B * N, 0, 2), [B, N], 'int32');
      const xt = out([B, N, e]);
      both((be, s) => be.qSample(xt[s], z0[s], eps[s], m ? m[s] : null, sa[s], sb[s], im[s], rm[s]));
      close(`qSample ${tag}`, xt);
      const dxt = rpair([B, N, e]);
      const dz0 = rpair([B, N, e]);
      const dm = withM ? rpair([e]) : null;
      both((be, s) => be.qSampleBackward(dz0[s], dm ? dm[s] : null, dxt[s], sa[s], im[s], rm[s]));
      close(`qSampleBackward dz0 ${tag}`, dz0);
      if (dm) close(`qSampleBackward dm ${tag}`, dm);
      freeAll();
    }
  }
});

/**
 * Argmax indices must match; where they differ, both picks must score the same to float32 rounding
 * (a near-tie that the two GEMMs' roundings break differently), which is counted and reported.
 */
/**
 * The GPU's choices equal the CPU's but for near-ties: rows where they differ must score within
 * float32 rounding (or, with `split`, the bf16x3 products' bound of 2^-15 of sum |x_i t_i|).
 */
function sameChoice(label: string, o: Pair, x: Float64Array, table: Float64Array, e: number, nearest: boolean, split = false): void {
  const g = G().toArray(o.g);
  const c = C().toArray(o.c);
  const score = (m: number, v: number) => {
    let s = 0;
    let h = 0;
    let l1 = 0;
    for (let i = 0; i < e; i++) {
      s += x[m * e + i]! * table[v * e + i]!;
      h += table[v * e + i]! ** 2;
      l1 += Math.abs(x[m * e + i]! * table[v * e + i]!);
    }
    return { s: nearest ? s - h / 2 : s, l1 };
  };
  let ties = 0;
  for (let m = 0; m < c.length; m++) {
    if (g[m] === c[m]) continue;
    const { s: a, l1: la } = score(m, g[m]!);
    const { s: b, l1: lb } = score(m, c[m]!);
    const tol = 1e-5 * Math.max(1, Math.abs(b)) + (split ? 2 ** -15 * (la + lb) : 0);
    assert.ok(Math.abs(a - b) <= tol, `${label}: row ${m}: gpu picks ${g[m]} (score ${a}), cpu ${c[m]} (score ${b}) (seed ${SEED})`);
    ties++;
  }
  record(`${label} (near-ties resolved differently: ${ties})`, ties);
}

test('MOE_DIFFUSEQ_REPEAT_KERNELS launches the named kernels twice (a benchmark\'s marginal-cost probe), the others once; unknown names refused, names never launched reported', { skip }, () => {
  assert.throws(() => withEnv('MOE_DIFFUSEQ_REPEAT_KERNELS', 'axpby_x4, nonexistent_kernel', () => new CudaBackend()), /no kernel is named 'nonexistent_kernel'/);
  const g = withEnv('MOE_DIFFUSEQ_REPEAT_KERNELS', 'axpby_x4, adamw_x4', () => new CudaBackend());
  const plain = new CudaBackend();
  const said: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  try {
    for (const [be, times] of [[g, 2], [plain, 1]] as const) {
      // in place, y += x: axpby_x4 (8 aligned floats) run twice adds x twice
      const y = be.fromArray([1, 2, 3, 4, 5, 6, 7, 8], [8]);
      const x = be.fromArray([1, 1, 1, 1, 1, 1, 1, 1], [8]);
      be.axpby(y, 1, y, 1, x);
      assert.deepEqual([...be.toArray(y)], [1, 2, 3, 4, 5, 6, 7, 8].map((v) => v + times), `axpby_x4 ${times === 2 ? 'repeated' : 'once'}`);
      // a kernel not named runs once: 7 floats take axpby_f32
      const y7 = be.fromArray([1, 2, 3, 4, 5, 6, 7], [7]);
      const x7 = be.fromArray([1, 1, 1, 1, 1, 1, 1], [7]);
      be.axpby(y7, 1, y7, 1, x7);
      assert.deepEqual([...be.toArray(y7)], [2, 3, 4, 5, 6, 7, 8], 'axpby_f32 once');
      for (const t of [y, x, y7, x7]) t.dispose();
    }
    // adamw_x4 never ran: close() says so, and only of it
    process.stderr.write = ((chunk: string | Uint8Array) => (said.push(String(chunk)), true)) as typeof process.stderr.write;
    g.close();
    process.stderr.write = write;
    assert.deepEqual(said, ['MOE_DIFFUSEQ_REPEAT_KERNELS: kernel adamw_x4 was never launched\n']);
  } finally {
    process.stderr.write = write;
    g.close();
    plain.close();
  }
});

test('nearestRows and argmaxDot (chunked GEMM + row argmax) pick the same rows, in float32 and with bf16x3 products (fused wgmma kernel and cuBLAS)', { skip }, () => {
  // bf16x3 through cuBLAS and the row argmax (the fused wgmma kernel's twin, and the path of cards
  // without wgmma)
  const viaCublas = new CudaBackend({ grouped: 'mma' });
  // the fused kernel with its stages filled by TMA (score_argmax_tma) and by cp.async: the same
  // products in the same order, so the same rows to the index (on sm_90, where the launch times say
  // it ran: operands of at least a box, 128 rows x 64 of K)
  const tTma = new Map<string, [number, number]>();
  const sTma = withEnv('MOE_DIFFUSEQ_SCORE_TMA', '1', () => new CudaBackend({ launchTimes: tTma }));
  const sCp = withEnv('MOE_DIFFUSEQ_SCORE_TMA', '0', () => new CudaBackend());
  // the last cases: the base model's vocabulary and width (300 rows: row tiles past the last full
  // one; 30522: a last column tile of 58), and widths whose 3e is a multiple of 8 or not
  for (const [M, V, e] of [[1, 1, 1], [37, 11, 4], [200, 1000, 33], [5, 5000, 16], [130, 300, 8], [300, 30522, 128]] as const) {
    const xh = randn(M * e);
    const th = randn(V * e);
    const x = pair(xh, [M, e]);
    const table = pair(th, [V, e]);
    const o = out([M], 'int32');
    const [x64, t64] = [Float64Array.from(Float32Array.from(xh)), Float64Array.from(Float32Array.from(th))];
    // the CPU once per op (it computes float32 products whatever the precision asked)
    const oa = out([M], 'int32');
    C().nearestRows(o.c, x.c, table.c);
    C().argmaxDot(oa.c, x.c, table.c);
    for (const precision of ['float32', 'bf16x3'] as const) {
      const tag = `${M}x${V}x${e}${precision === 'bf16x3' ? ' bf16x3' : ''}`;
      G().nearestRows(o.g, x.g, table.g, { precision });
      sameChoice(`nearestRows ${tag}`, o, x64, t64, e, true, precision === 'bf16x3');
      G().argmaxDot(oa.g, x.g, table.g, { precision });
      sameChoice(`argmaxDot ${tag}`, oa, x64, t64, e, false, precision === 'bf16x3');
      // the table's split and half norms made once (prepareScores): the same rows, to the index;
      // a table prepared at the other precision, or another table's, is ignored
      const [near, dot] = [[...G().toArray(o.g)], [...G().toArray(oa.g)]];
      const prepared = G().prepareScores!(table.g, { precision });
      const other = G().prepareScores!(table.g, { precision: precision === 'bf16x3' ? 'float32' : 'bf16x3' });
      const elsewhere = G().fromArray(th.map((v) => -v), [V, e], 'float32');
      const foreign = G().prepareScores!(elsewhere, { precision });
      try {
        for (const p of [prepared, other, foreign]) {
          G().nearestRows(o.g, x.g, table.g, { precision, prepared: p });
          assert.deepEqual([...G().toArray(o.g)], near, `nearestRows ${tag} with a prepared table (${p === prepared ? 'its own' : 'ignored'})`);
          G().argmaxDot(oa.g, x.g, table.g, { precision, prepared: p });
          assert.deepEqual([...G().toArray(oa.g)], dot, `argmaxDot ${tag} with a prepared table (${p === prepared ? 'its own' : 'ignored'})`);
        }
        // and it is what they use: with the table changed under it, a stale preparation shows
        if (V > 100) {
          G().write(table.g, th.map((v, i) => (i % 3 === 0 ? 2 * v : v)));
          G().nearestRows(o.g, x.g, table.g, { precision });
          const fresh = [...G().toArray(o.g)];
          G().nearestRows(o.g, x.g, table.g, { precision, prepared });
          assert.notDeepEqual([...G().toArray(o.g)], fresh, `nearestRows ${tag}: the prepared table was not used`);
          // argmaxDot reads no half norms: only bf16x3's split table can show
          if (precision === 'bf16x3') {
            G().argmaxDot(oa.g, x.g, table.g, { precision });
            const freshDot = [...G().toArray(oa.g)];
            G().argmaxDot(oa.g, x.g, table.g, { precision, prepared });
            assert.notDeepEqual([...G().toArray(oa.g)], freshDot, `argmaxDot ${tag}: the prepared split table was not used`);
          }
          G().write(table.g, th);
        }
      } finally {
        for (const p of [prepared, other, foreign]) p?.dispose();
        elsewhere.dispose();
      }
    }
    // the same through cuBLAS: the CPU's choices but for near-ties within the bf16x3 bound
    const [xc, tc] = [viaCublas.fromArray(xh, [M, e], 'float32'), viaCublas.fromArray(th, [V, e], 'float32')];
    const oc = viaCublas.empty([M], 'int32');
    // sameChoice reads the GPU side from G(): the other backend's choices copied over
    const viaPair = (c: Tensor): Pair => {
      const g = G().fromArray(viaCublas.toArray(oc), [M], 'int32');
      made.push({ g, c: C().fromArray([], [0], 'float32') });
      return { g, c };
    };
    viaCublas.nearestRows(oc, xc, tc, { precision: 'bf16x3' });
    sameChoice(`nearestRows ${M}x${V}x${e} bf16x3 cuBLAS`, viaPair(o.c), x64, t64, e, true, true);
    viaCublas.argmaxDot(oc, xc, tc, { precision: 'bf16x3' });
    sameChoice(`argmaxDot ${M}x${V}x${e} bf16x3 cuBLAS`, viaPair(oa.c), x64, t64, e, false, true);
    for (const t of [xc, tc, oc]) t.dispose();
    const loads = [sTma, sCp].map((be) => {
      const [xb, tb, ob] = [be.fromArray(xh, [M, e], 'float32'), be.fromArray(th, [V, e], 'float32'), be.empty([M], 'int32')];
      be.nearestRows(ob, xb, tb, { precision: 'bf16x3' });
      const near = [...be.toArray(ob)];
      be.argmaxDot(ob, xb, tb, { precision: 'bf16x3' });
      const dot = [...be.toArray(ob)];
      for (const t of [xb, tb, ob]) t.dispose();
      return { near, dot };
    });
    assert.deepEqual(loads[0], loads[1], `${M}x${V}x${e} bf16x3: stages by TMA against cp.async`);
    freeAll();
  }
  if (sTma.arch === 90) assert.ok(tTma.has('score_argmax_tma'), 'score_argmax_tma ran');
  for (const be of [viaCublas, sTma, sCp]) be.close();
});

test('adamw', { skip }, () => {
  // 1, 1,001 and 4,099: element by element, then groups of four with a tail (adamw_x4 + adamw_f32)
  for (const [n, step] of [[1, 1], [1001, 7], [4099, 3]] as const) {
    const p = rpair([n]);
    const g = rpair([n]);
    const m = rpair([n], 0.1);
    const v = pair(Array.from({ length: n }, () => rnd() * 0.01), [n]);
    both((be, s) => be.adamw(p[s], g[s], m[s], v[s], { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step }));
    close(`adamw param n=${n}`, p);
    close(`adamw m n=${n}`, m);
    close(`adamw v n=${n}`, v);
    freeAll();
  }
});

// ---- the whole model ------------------------------------------------------------------------------------------
function wholeModel(label: string, cfg: ReturnType<typeof microConfig>, B: number, N: number, train: boolean): void {
  const mc = Model.init(cfg, C(), 7, 'float32');
  const mg = Model.init(cfg, G(), 7, 'float32');
  try {
    const batch = microBatch(cfg, B, N, 5);
    const noise = microNoise(cfg, batch, 6);
    const opts = { train, backward: true, ...(train ? { rng: { seed: 42, offset: 8 } } : {}) };
    const lc = diffusionLoss(mc, batch, noise, opts);
    const lg = diffusionLoss(mg, batch, noise, opts);
    for (const k of ['total', 'mse', 'tT', 'nll', 'aux', 'z', 'mNorm'] as const) {
      const a = lg.terms[k];
      const b = lc.terms[k];
      const err = Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);
      record(`${label}: loss.${k}`, b === 0 ? Math.abs(a) : err);
      assert.ok(b === 0 ? Math.abs(a) < 1e-7 : err < 1e-4, `${label}: loss term ${k}: gpu ${a} cpu ${b} (seed ${SEED})`);
    }
    assert.deepEqual(lg.loadShares, lc.loadShares, `${label}: expert loads (routing decisions)`);
    // Each gradient is compared at its own scale, floored at 1e-3 of the largest gradient in the model:
    // some are zero in exact arithmetic (the key bias: softmax ignores a shift shared by all scores),
    // so both backends hold rounding noise there, and noise against noise has no relative error.
    const grads = mc.params.specs.map((s) => ({ name: s.name, c: C().toArray(mc.params.grad(s.name)), g: G().toArray(mg.params.grad(s.name)) }));
    let globalMax = 0;
    for (const { c } of grads) for (let i = 0; i < c.length; i++) globalMax = Math.max(globalMax, Math.abs(c[i]!));
    let worst = 0;
    let worstName = '';
    for (const { name, c, g } of grads) {
      let maxRef = 0;
      let maxDiff = 0;
      for (let i = 0; i < c.length; i++) {
        if (!Number.isFinite(g[i]!)) maxDiff = Infinity;
        maxRef = Math.max(maxRef, Math.abs(c[i]!));
        maxDiff = Math.max(maxDiff, Math.abs(g[i]! - c[i]!));
      }
      const err = maxDiff / Math.max(maxRef, 1e-3 * globalMax, 1e-30);
      if (err > worst) [worst, worstName] = [err, name];
      assert.ok(err < 1e-4, `${label}: gradient of ${name}: max diff ${maxDiff}, own scale ${maxRef}, model scale ${globalMax} (seed ${SEED})`);
    }
    record(`${label}: worst parameter gradient (${worstName})`, worst);
  } finally {
    mc.dispose();
    mg.dispose();
  }
}

test('whole model: diffusionLoss of a small MoE sliding-window config, loss and every gradient (float32)', { skip }, () => {
  wholeModel('micro', microConfig(), 3, 7, false);
  wholeModel('micro + dropout', microConfig({ dropout: 0.1 }), 3, 7, true);
  wholeModel(
    'small (dilated, capacity, shared expert, bias balance)',
    microConfig({ vocabSize: 50, embDim: 16, hidden: 32, heads: 4, maxLen: 40, seqLen: 40, globalTokens: 3, attention: { window: 3, dilation: 2 }, ffn: { experts: 4, topK: 2, expertHidden: 24, sharedExperts: 1, capacityFactor: 1.5, balance: 'bias' } }),
    4,
    37,
    false,
  );
});

test('whole model: sampleIds gives the same tokens on CUDA and CPU for the same seed (DDIM clamped, DPM-Solver++)', { skip }, () => {
  const cfg = microConfig({ diffusionSteps: 20 });
  const mc = Model.init(cfg, C(), 3, 'float32');
  const mg = Model.init(cfg, G(), 3, 'float32');
  try {
    const batch = microBatch(cfg, 3, 7, 9);
    for (const o of [{ sampler: 'ddim' as const, steps: 5, seed: 11 }, { sampler: 'dpm++' as const, steps: 4, seed: 12 }, { sampler: 'ddim' as const, steps: 4, seed: 13, eta: 1 }]) {
      const states: { c: (Float32Array | Float64Array)[]; g: (Float32Array | Float64Array)[] } = { c: [], g: [] };
      const tc = sampleIds(mc, batch.inputIds, batch.inputMask, 3, 7, { ...o, onState: (_k, x) => states.c.push(x) });
      const tg = sampleIds(mg, batch.inputIds, batch.inputMask, 3, 7, { ...o, onState: (_k, x) => states.g.push(x) });
      let worst = 0;
      for (let k = 0; k < states.c.length; k++) worst = Math.max(worst, maxRelErr(states.g[k]!, states.c[k]!).err);
      record(`sampleIds ${o.sampler} steps ${o.steps}: trajectory`, worst);
      assert.deepEqual([...tg], [...tc], `${o.sampler}: tokens differ (seed ${SEED})`);
    }
  } finally {
    mc.dispose();
    mg.dispose();
  }
});

/** ||a - b|| / ||b|| (Frobenius). */
function normErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-300);
}

test('bf16 matmul option: bf16 operands, float32 accumulation, within bf16 accuracy of the float32 reference', { skip }, () => {
  const g16 = new CudaBackend({ matmul: 'bfloat16' });
  try {
    assert.match(g16.describe(), /bf16/);
    for (const [M, K, N] of [[5, 7, 3], [64, 256, 96]] as const) {
      for (const [transA, transB] of [[false, false], [true, true], [false, true]] as const) {
        const ad = randn(2 * M * K);
        const bd = randn(2 * K * N);
        const sa = transA ? [2, K, M] : [2, M, K];
        const sb = transB ? [2, N, K] : [2, K, N];
        const ref = C().empty([2, M, N]);
        const ac = C().fromArray(ad, sa);
        const bc = C().fromArray(bd, sb);
        C().matmul(ref, ac, bc, { transA, transB });
        const a = g16.fromArray(ad, sa);
        const b = g16.fromArray(bd, sb);
        const o = g16.empty([2, M, N]);
        g16.fill(o, NaN);
        g16.matmul(o, a, b, { transA, transB });
        const err = normErr(g16.toArray(o), C().toArray(ref));
        record(`bf16 matmul ${M}x${K}x${N}${transA ? ' tA' : ''}${transB ? ' tB' : ''} (norm-wise)`, err);
        assert.ok(err < 1e-2 && err > 1e-6, `bf16 matmul: norm-wise error ${err} (expected bf16 rounding, 1e-6 < err < 1e-2)`);
        [a, b, o, ref, ac, bc].forEach((t) => t.dispose());
      }
    }
    // the whole loss on bf16 products stays close to the float32 one
    const cfg = microConfig();
    const mc = Model.init(cfg, C(), 7, 'float32');
    const mg = Model.init(cfg, g16, 7, 'float32');
    const batch = microBatch(cfg, 3, 7, 5);
    const noise = microNoise(cfg, batch, 6);
    const lc = diffusionLoss(mc, batch, noise, { train: false, backward: true }).terms.total;
    const lg = diffusionLoss(mg, batch, noise, { train: false, backward: true }).terms.total;
    record('bf16 whole model: loss.total', Math.abs(lg - lc) / Math.abs(lc));
    assert.ok(Math.abs(lg - lc) < 2e-2 * Math.abs(lc), `bf16 loss ${lg} vs float32 ${lc}`);
    mc.dispose();
    mg.dispose();
  } finally {
    g16.close();
  }
});
