/**
 * Mixed precision on the GPU: bfloat16 activations. Every op the denoiser calls on activations,
 * with bfloat16 tensors on the GPU (mixed with float32 parameters where the model mixes them),
 * against the CPU in float32 on the same bf16-rounded inputs; outputs poisoned with NaN first. Then
 * the whole model in bf16 against the CPU: loss, gradient direction, and 300 steps of training.
 *
 * Tolerance: max |gpu - cpu| / max |cpu| <= 1e-2 (METHOD.md's bf16 bound; bfloat16 keeps 8 significant bits: one rounding
 * of an output is 2^-9 = 2e-3 relative; products and sums of rounded operands add a few of those).
 * Skipped, with the reason, without a CUDA GPU.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { AttentionSpec, Backend, DType, Tensor } from '../../src/backend/backend.js';
import { fromBf16Bits, toBf16Bits } from '../../src/backend/bf16.js';
import { CpuBackend } from '../../src/backend/cpu/backend.js';
import { createBackend } from '../../src/backend/create.js';
import { CudaBackend } from '../../src/backend/cuda/backend.js';
import { probeCuda } from '../../src/backend/cuda/probe.js';
import { PhiloxStream } from '../../src/backend/philox.js';
import { diffusionLoss } from '../../src/diffusion/loss.js';
import { DTypeError } from '../../src/errors.js';
import { presetConfig } from '../../src/model/config.js';
import { Model } from '../../src/model/model.js';
import { generate } from '../../src/sample/generate.js';
import { SamplingGraphs, sampleIds } from '../../src/sample/sampler.js';
import { train } from '../../src/train/trainer.js';
import { FakeTokenizer } from '../data/fake-tokenizer.js';
import { microBatch, microNoise } from '../model/fixtures.js';
import { cosine, maxRelErr, withEnv } from '../helpers.js';
import { DATA, TOKENIZER, quiet, tempDir } from '../train/fixtures.js';

const probe = probeCuda();
const skip: string | false = probe.available ? false : `no CUDA GPU on this machine: ${probe.reason}`;
const SEED = Number(process.env['MOE_DIFFUSEQ_TEST_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
const cpu: Backend | null = skip ? null : new CpuBackend();
const gpu: Backend | null = skip ? null : await createBackend('cuda');
const C = (): Backend => cpu!;
const G = (): Backend => gpu!;
const report = new Map<string, number>();

after(() => {
  if (!skip) console.log(`bf16 (seed ${SEED}), max |gpu - cpu| / max |cpu|:\n${[...report.entries()].map(([k, v]) => `  ${k.padEnd(52)} ${v.toExponential(2)}`).join('\n')}`);
  gpu?.close();
  cpu?.close();
});

const rng = new PhiloxStream(SEED);
/** Normal numbers rounded to bfloat16 (so both sides start from the same values). */
function randn(n: number, scale = 1): Float32Array {
  return fromBf16Bits(toBf16Bits(rng.normal(n, scale)));
}
const sz = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

interface Pair {
  c: Tensor;
  g: Tensor;
}
const made: Pair[] = [];
/** The same values on both sides: float32 on the CPU, `gdtype` on the GPU. */
function pair(data: ArrayLike<number>, shape: readonly number[], gdtype: DType): Pair {
  const p = { c: C().fromArray(data, shape, 'float32'), g: G().fromArray(data, shape, gdtype) };
  made.push(p);
  return p;
}
/** A bfloat16 activation (float32 on the CPU). */
const act = (shape: readonly number[], scale = 1) => pair(randn(sz(shape), scale), shape, 'bfloat16');
/** A float32 parameter on both sides. */
const param = (shape: readonly number[], scale = 1) => pair(randn(sz(shape), scale), shape, 'float32');
/** An output poisoned with NaN on both sides. */
const out = (shape: readonly number[], gdtype: DType = 'bfloat16') => pair(new Float32Array(sz(shape)).fill(NaN), shape, gdtype);
function freeAll(): void {
  for (const p of made.splice(0)) {
    p.c.dispose();
    p.g.dispose();
  }
}
function both(f: (be: Backend, s: 'c' | 'g') => void): void {
  f(C(), 'c');
  f(G(), 'g');
}
/** max |g - c| / max |c| (maxRelErr; Infinity for a non-finite g), recorded in the report under `label`. */
function relErrOf(g: ArrayLike<number>, c: ArrayLike<number>, label: string): number {
  const { err, at } = maxRelErr(g, c);
  report.set(label, Math.max(report.get(label) ?? 0, err));
  if (err > 1e-2) console.log(`${label}: worst at [${at}]: ${g[at]} vs ${c[at]} (seed ${SEED})`);
  return err;
}
function close(label: string, p: Pair, tol = 1e-2): void {
  const err = relErrOf(G().toArray(p.g), C().toArray(p.c), label);
  assert.ok(err <= tol, `${label}: rel err ${err} > ${tol} (seed ${SEED})`);
}

/**
 * Attention shapes for bf16: the tensor-core kernels' edges (head sizes below 64 and not a multiple
 * of 8, globals filling more than one tile, dilation, rows past the last full tile, full attention)
 * and the float32-tile bucket (head size 100).
 */
const ATTENTION_CASES: [number, number, number, number, AttentionSpec][] = [
  [2, 150, 2, 64, { kind: 'sliding', heads: 2, window: 20, dilation: 1, globalTokens: 5 }],
  [1, 97, 3, 32, { kind: 'full', heads: 3, window: 0, dilation: 1, globalTokens: 2 }],
  [1, 230, 2, 20, { kind: 'sliding', heads: 2, window: 9, dilation: 3, globalTokens: 70 }],
  [2, 200, 1, 64, { kind: 'sliding', heads: 1, window: 128, dilation: 1, globalTokens: 16 }],
  [1, 70, 2, 100, { kind: 'sliding', heads: 2, window: 5, dilation: 1, globalTokens: 3 }],
];

test('bfloat16 tensors: round trips, fill, zeros, views, conversions by copy; CPU refuses them; float32-only ops refuse them', { skip }, () => {
  const g = G();
  const v = randn(1001);
  const t = g.fromArray(v, [7, 11, 13], 'bfloat16');
  assert.deepEqual([...g.toArray(t)], [...v], 'bf16 values round-trip exactly');
  const view = g.view(t, 13, [2, 13]);
  assert.deepEqual([...g.toArray(view)], [...v.subarray(13, 39)]);
  const f = g.empty([1001], 'float32');
  g.copy(f, t);
  assert.deepEqual([...g.toArray(f)], [...v], 'bf16 -> f32 is exact');
  const raw = Float32Array.from({ length: 1001 }, (_x, i) => 1 + i / 3000);
  g.write(f, raw);
  const b = g.empty([1001], 'bfloat16');
  g.copy(b, f);
  assert.deepEqual([...g.toArray(b)], [...fromBf16Bits(toBf16Bits(raw))], 'f32 -> bf16 rounds to nearest even, as the host does');
  g.fill(b, 2.5);
  assert.ok([...g.toArray(b)].every((x) => x === 2.5));
  const z = g.zeros([5], 'bfloat16');
  assert.deepEqual([...g.toArray(z)], [0, 0, 0, 0, 0]);
  assert.equal(g.memory().liveBytes >= 1001 * 2, true);
  assert.throws(() => C().empty([2], 'bfloat16'), DTypeError);
  assert.throws(() => g.mul(b, b, b), DTypeError);
  assert.throws(() => g.sum(b), DTypeError);
  for (const x of [t, f, b, z]) x.dispose();
});

test('crossEntropy: bfloat16 dlogits are the float32 gradient rounded once; the one-pass max and sum follow the CPU', { skip }, () => {
  const g = G();
  for (const [M, V] of [[3, 7], [37, 1001], [5, 30522]] as const) {
    const logits = randn(M * V, 3);
    // row 0 rises along the row: every thread's running max grows at each of its logits (the rescaling)
    for (let c = 0; c < V; c++) logits[c] = -20 + (40 * c) / V;
    const targets = Int32Array.from({ length: M }, () => rng.int(V));
    const weights = Float32Array.from(rng.uniform(M));
    const run = (be: Backend, dtype: DType) => {
      const lg = be.fromArray(logits, [M, V]);
      const t = be.fromArray(targets, [M], 'int32');
      const w = be.fromArray(weights, [M]);
      const loss = be.empty([M]);
      const dl = be.empty([M, V], dtype);
      be.crossEntropy(loss, dl, lg, t, w);
      const r = { loss: be.toArray(loss), dl: be.toArray(dl) };
      for (const x of [lg, t, w, loss, dl]) x.dispose();
      return r;
    };
    const f32 = run(g, 'float32');
    const b16 = run(g, 'bfloat16');
    const ref = run(C(), 'float32');
    assert.deepEqual([...b16.loss], [...f32.loss], `loss ${M}x${V}: the same with either dlogits dtype`);
    assert.deepEqual([...b16.dl], [...fromBf16Bits(toBf16Bits(f32.dl))], `dlogits ${M}x${V}: bf16 = float32 rounded once`);
    for (const k of ['loss', 'dl'] as const) {
      const { err, at } = maxRelErr(f32[k], ref[k]);
      assert.ok(err <= 1e-5, `${k} ${M}x${V}: rel err ${err} against the CPU at ${at} (seed ${SEED})`);
    }
  }
});

test('tiedCrossEntropy: the fused wgmma kernels (logits never written) give the composition\'s loss and bf16 dlogits', { skip }, () => {
  // the composition: grouped 'mma' turns the wgmma kernels off (matmul, then crossEntropy)
  const composed = new CudaBackend({ grouped: 'mma' });
  // launch times say that the fused kernels ran (on sm_90; elsewhere both sides compose)
  const times = new Map<string, [number, number]>();
  const g = new CudaBackend({ launchTimes: times });
  try {
    // tile edges: 128 rows and columns a tile; targets at both ends and across a tile boundary
    for (const [R, V, K, withW, withD] of [[300, 1000, 128, true, true], [5, 130, 64, false, false], [257, 30522, 128, true, true], [129, 257, 136, false, true]] as const) {
      const tag = `R${R} V${V} K${K}${withW ? ' weighted' : ''}${withD ? ' with dlogits' : ''}`;
      const xs = randn(R * K, 0.5);
      const ts = randn(V * K, 0.5);
      const tg = Array.from({ length: R }, (_, r) => [0, V - 1, 127, 128 % V, (r * 7919) % V][r % 5]!);
      const ws = Array.from({ length: R }, (_, r) => (r % 3) * 0.5);
      const run = (be: Backend) => {
        const x = be.fromArray(xs, [R, K], 'bfloat16');
        const table = be.fromArray(ts, [V, K], 'bfloat16');
        const targets = be.fromArray(tg, [R], 'int32');
        const weights = withW ? be.fromArray(ws, [R]) : null;
        const loss = be.fromArray(new Float32Array(R).fill(NaN), [R]);
        const dl = withD ? be.fromArray(new Float32Array(R * V).fill(NaN), [R, V], 'bfloat16') : null;
        be.tiedCrossEntropy(loss, dl, x, table, targets, weights);
        const r = { loss: be.toArray(loss), dl: dl ? be.toArray(dl) : null };
        for (const t of [x, table, targets, weights, loss, dl]) t?.dispose();
        return r;
      };
      times.clear();
      const a = run(g);
      if (g.arch === 90) assert.ok(times.has('xe_tied_stats') && (!withD || times.has('xe_tied_grad')), `the fused kernels did not run: ${tag}`);
      const b = run(composed);
      const le = relErrOf(a.loss, b.loss, `tiedCrossEntropy loss ${tag}`);
      assert.ok(le <= 1e-5, `loss ${tag}: rel err ${le}`);
      if (a.dl && b.dl) {
        // the logits' float32 sums differ in order, so a bf16 rounding may flip: within one bf16 ulp of the largest
        const de = relErrOf(a.dl, b.dl, `tiedCrossEntropy dlogits ${tag}`);
        assert.ok(de <= 8e-3, `dlogits ${tag}: rel err ${de}`);
      }
    }
  } finally {
    composed.close();
    g.close();
  }
});

test('crossEntropy: rows held in registers (more rows than the persistent grid, the widest row) and the two-pass kernel past 32,768, against float64', { skip }, () => {
  // a backend of its own with the kernel profile on: it names the kernel each shape took
  const times = new Map<string, [number, number]>();
  const g = new CudaBackend({ launchTimes: times });
  try {
    // [rows, V, kernel]: more rows than an H200's grid (132, 264 and 528 blocks of 1,024, 512 and
    // 256 threads), so blocks take several rows, each loaded during the previous row's gradient;
    // 32,768 fills every register of the block; 2,047 and 32,769 and 40,000 go to the two-pass kernel
    const cases = [
      [300, 30522, 'cross_entropy_rows1024_f32'],
      [3, 32768, 'cross_entropy_rows1024_f32'],
      [600, 12000, 'cross_entropy_rows512_f32'],
      [1200, 3001, 'cross_entropy_rows256_f32'],
      [4, 2048, 'cross_entropy_rows256_f32'],
      [4, 2047, 'cross_entropy_f32'],
      [3, 32769, 'cross_entropy_f32'],
      [2, 40000, 'cross_entropy_f32'],
    ] as const;
    for (const [M, V, kernel] of cases) {
      const logits = randn(M * V, 3);
      // row 0 rises along the row (its max is the last logit); row 1 is large and all equal
      for (let c = 0; c < V; c++) {
        logits[c] = -20 + (40 * c) / V;
        logits[V + c] = 100;
      }
      const targets = Int32Array.from({ length: M }, () => rng.int(V));
      targets[0] = V - 1;
      const weights = Float32Array.from(rng.uniform(M));
      const run = (be: Backend, dtype: DType | null) => {
        const lg = be.fromArray(logits, [M, V]);
        const t = be.fromArray(targets, [M], 'int32');
        const w = be.fromArray(weights, [M]);
        const loss = be.empty([M]);
        be.fill(loss, NaN);
        const dl = dtype ? be.empty([M, V], dtype) : null;
        if (dl) be.fill(dl, NaN); // an element left unwritten fails below
        be.crossEntropy(loss, dl, lg, t, dl ? w : null);
        const r = { loss: be.toArray(loss), dl: dl ? be.toArray(dl) : new Float32Array(0) };
        for (const x of [lg, t, w, loss, dl]) x?.dispose();
        return r;
      };
      times.clear();
      const f32 = run(g, 'float32');
      const b16 = run(g, 'bfloat16');
      const only = run(g, null); // no dlogits, no weights (they touch only dlogits)
      assert.deepEqual([...times.keys()].filter((k) => k.startsWith('cross_entropy')), [kernel], `${M}x${V} runs ${kernel}`);
      // float64 from the same float32 logits: the GPU sums the row's terms in float64; the CPU's
      // float32 lane sums (about V / 4 terms each) drift by up to ~1e-5 of the largest gradient
      // at V = 30,522, which failed a 1e-5 bound against the CPU (seed 2140045296, session 17)
      const ref = { loss: new Float64Array(M), dl: new Float64Array(M * V) };
      for (let r = 0; r < M; r++) {
        let mx = -Infinity;
        for (let c = 0; c < V; c++) mx = Math.max(mx, logits[r * V + c]!);
        let s = 0;
        for (let c = 0; c < V; c++) s += Math.exp(logits[r * V + c]! - mx);
        const lse = mx + Math.log(s);
        ref.loss[r] = lse - logits[r * V + targets[r]!]!;
        for (let c = 0; c < V; c++) ref.dl[r * V + c] = weights[r]! * Math.exp(logits[r * V + c]! - lse) - (c === targets[r] ? weights[r]! : 0);
      }
      assert.deepEqual([...b16.loss], [...f32.loss], `loss ${M}x${V}: the same with either dlogits dtype`);
      assert.deepEqual([...only.loss], [...f32.loss], `loss ${M}x${V}: the same without dlogits`);
      assert.deepEqual([...b16.dl], [...fromBf16Bits(toBf16Bits(f32.dl))], `dlogits ${M}x${V}: bf16 = float32 rounded once`);
      for (const k of ['loss', 'dl'] as const) {
        const { err, at } = maxRelErr(f32[k], ref[k]);
        report.set(`crossEntropy ${k} ${M}x${V}`, err);
        assert.ok(err <= 1e-6, `${k} ${M}x${V}: rel err ${err} against float64 at ${at} (seed ${SEED})`);
      }
    }
  } finally {
    g.close();
  }
});

test('bfloat16 activations: elementwise, broadcasts, copies, activations, dropout, layerNorm, biasBackward', { skip }, () => {
  const x = act([6, 50]);
  const y = act([6, 50]);
  const o = out([6, 50]);
  both((be, s) => be.axpby(o[s], 0.7, x[s], -1.3, y[s]));
  close('axpby', o);
  // a float32 parameter broadcast onto bf16 activations, and its gradient back into float32
  const pos = param([1, 5, 10]);
  const ab = out([6, 5, 10]);
  both((be, s) => be.addBroadcast(ab[s], x[s], pos[s], [6, 5, 10], [1, 5, 10]));
  close('addBroadcast (f32 y)', ab);
  const dpos = param([1, 5, 10]);
  both((be, s) => be.reduceBroadcast(dpos[s], y[s], [6, 5, 10], [1, 5, 10], true));
  close('reduceBroadcast (bf16 dout -> f32 dy)', dpos);
  // globals: a float32 row into bf16 blocks, and their bf16 gradient summed into float32
  const glob = param([2, 10]);
  const h = out([3, 5, 10]);
  both((be, s) => be.stridedCopy(h[s], glob[s], { count: 3, length: 20, srcOffset: 0, srcStride: 0, dstOffset: 0, dstStride: 50 }));
  both((be, s) => be.stridedCopy(h[s], x[s], { count: 3, length: 30, srcOffset: 0, srcStride: 30, dstOffset: 20, dstStride: 50 }));
  close('stridedCopy f32 -> bf16 and bf16 -> bf16', h);
  const gglob = param([2, 10]);
  both((be, s) => be.stridedCopy(gglob[s], h[s], { count: 3, length: 20, srcOffset: 0, srcStride: 50, dstOffset: 0, dstStride: 0, accumulate: true }));
  close('stridedCopy bf16 -> f32 reduce', gglob);
  for (const kind of ['gelu', 'tanh', 'silu'] as const) {
    const a = out([6, 50]);
    both((be, s) => be.activation(a[s], x[s], kind));
    close(`activation ${kind}`, a);
    const da = out([6, 50]);
    both((be, s) => be.activationBackward(da[s], y[s], x[s], kind, false));
    close(`activationBackward ${kind}`, da);
  }
  const dr = out([6, 50]);
  both((be, s) => be.dropout(dr[s], x[s], 0.3, 5, 16));
  close('dropout', dr);
  const w = param([50]);
  const bb = param([50], 0.1);
  const ln = out([6, 50]);
  const mean = out([6], 'float32');
  const rstd = out([6], 'float32');
  both((be, s) => be.layerNorm(ln[s], mean[s], rstd[s], x[s], w[s], bb[s], 1e-12));
  close('layerNorm', ln);
  close('layerNorm mean', mean, 1e-5);
  close('layerNorm rstd', rstd, 1e-5);
  const dln = out([6, 50]);
  const dw = param([50]);
  const db = param([50]);
  both((be, s) => be.layerNormBackward(dln[s], dw[s], db[s], y[s], x[s], w[s], mean[s], rstd[s], false));
  close('layerNormBackward dx', dln);
  close('layerNormBackward dweight', dw);
  close('layerNormBackward dbias', db);
  const gb = param([50]);
  both((be, s) => be.biasBackward(gb[s], y[s], true));
  close('biasBackward (bf16 dy)', gb);
  // rows of whole 16-byte vectors (the eight-column sums, two blocks of 256 columns)
  const [x8, y8] = [act([300, 264]), act([300, 264])];
  const [w8, b8] = [param([264]), param([264], 0.1)];
  const [ln8, mean8, rstd8] = [out([300, 264]), out([300], 'float32'), out([300], 'float32')];
  both((be, s) => be.layerNorm(ln8[s], mean8[s], rstd8[s], x8[s], w8[s], b8[s], 1e-12));
  const [dln8, dw8, db8, gb8] = [out([300, 264]), param([264]), param([264]), param([264])];
  both((be, s) => be.layerNormBackward(dln8[s], dw8[s], db8[s], y8[s], x8[s], w8[s], mean8[s], rstd8[s], false));
  close('layerNormBackward dweight, 264 columns', dw8);
  close('layerNormBackward dbias, 264 columns', db8);
  both((be, s) => be.biasBackward(gb8[s], y8[s], true));
  close('biasBackward (bf16 dy), 264 columns', gb8);
  freeAll();
});

test('16-byte-vector elementwise kernels (GELU, its backward, bias + GELU epilogue) give the pairwise kernels\' bits', { skip }, () => {
  const g = G();
  // 4,096 elements take the vector kernels; the same values with two more (not a multiple of 8)
  // take the pairwise ones, whose first 4,096 outputs must be the same bits
  const n = 4096;
  const xs = randn(n + 2, 2);
  const ys = randn(n + 2);
  const bits = (t: Tensor, k: number) => toBf16Bits(Float32Array.from(g.toArray(t) as Float32Array).subarray(0, k));
  const mk = (d: Float32Array, k: number) => g.fromArray(d.subarray(0, k), [k], 'bfloat16');
  const [x8, x2, y8, y2] = [mk(xs, n), mk(xs, n + 2), mk(ys, n), mk(ys, n + 2)];
  const [o8, o2] = [g.empty([n], 'bfloat16'), g.empty([n + 2], 'bfloat16')];
  g.activation(o8, x8, 'gelu');
  g.activation(o2, x2, 'gelu');
  assert.deepEqual(bits(o8, n), bits(o2, n), 'gelu');
  for (const acc of [false, true]) {
    g.activationBackward(o8, y8, x8, 'gelu', acc);
    g.activationBackward(o2, y2, x2, 'gelu', acc);
    assert.deepEqual(bits(o8, n), bits(o2, n), `gelu backward (accumulate ${acc})`);
  }
  // the matmul epilogue (rows of 64: vectors): pre = the bare product + bias rounded once, out =
  // gelu(pre) as the activation kernels (checked above) give it
  const a = g.fromArray(randn(8 * 32), [8, 32], 'bfloat16');
  const w = g.fromArray(randn(64 * 32), [64, 32], 'float32');
  const bv = randn(64, 0.5);
  const b = g.fromArray(bv, [64], 'float32');
  const [c0, c, pre, ref] = [g.empty([8, 64], 'bfloat16'), g.empty([8, 64], 'bfloat16'), g.empty([8, 64], 'bfloat16'), g.empty([8, 64], 'bfloat16')];
  g.matmul(c0, a, w, { transB: true });
  g.matmul(c, a, w, { transB: true, bias: b, gelu: { pre } });
  const prod = g.toArray(c0);
  const want = toBf16Bits(Float32Array.from(prod, (v, i) => v + bv[i % 64]!));
  assert.deepEqual(bits(pre, 8 * 64), want, 'bias + gelu: the pre-activation');
  g.activation(ref, pre, 'gelu');
  assert.deepEqual(bits(c, 8 * 64), bits(ref, 8 * 64), 'bias + gelu: the activation');
  for (const t of [x8, x2, y8, y2, o8, o2, a, w, b, c0, c, pre, ref]) t.dispose();
});

test('16-byte-vector forms of addBroadcast, stridedCopy, activation and its backward (tanh, SiLU) give the generic kernels\' bits', { skip }, () => {
  const times = new Map<string, [number, number]>();
  const g = new CudaBackend({ launchTimes: times });
  const bits = (t: Tensor) => toBf16Bits(Float32Array.from(g.toArray(t) as Float32Array));
  const bf = (d: Float32Array, shape: number[]) => g.fromArray(d, shape, 'bfloat16');
  const made: Tensor[] = [];
  const keep = <T extends Tensor>(t: T): T => (made.push(t), t);
  try {
    // addBroadcast: x [P, Q, R] bf16 plus y broadcast over P or Q, y bf16 or float32; the exact
    // reference is bf16(fround(x + y)), the generic kernel's double sum rounded twice
    const [P, Q, R] = [3, 5, 24];
    const xv = toBf16Bits(randn(P * Q * R, 3));
    const x = keep(bf(fromBf16Bits(xv), [P, Q, R]));
    for (const yShape of [[1, Q, R], [P, 1, R], [1, 1, R]] as [number, number, number][]) {
      for (const ydt of ['bfloat16', 'float32'] as const) {
        const yv = randn(yShape[0] * yShape[1] * yShape[2], 0.01);
        const y = keep(g.fromArray(yv, yShape, ydt));
        const yh = g.toArray(y);
        const o = keep(g.empty([P, Q, R], 'bfloat16'));
        g.addBroadcast(o, x, y, [P, Q, R], yShape);
        const xf = fromBf16Bits(xv);
        const want = toBf16Bits(Float32Array.from(xf, (v, i) => {
          const p = Math.floor(i / (Q * R)), q = Math.floor(i / R) % Q, r = i % R;
          const yo = (yShape[0] === 1 ? 0 : p) * yShape[1] * R + (yShape[1] === 1 ? 0 : q * R) + r;
          return v + yh[yo]!;
        }));
        assert.deepEqual(bits(o), want, `addBroadcast y ${yShape.join('x')} ${ydt}`);
      }
    }
    // stridedCopy: rows of a [4, 40] bf16 block into a [4, 56] one at column 16 (vectors), and the
    // same at column 15 (the generic kernel): the copied elements' bits
    const src = keep(bf(randn(4 * 40), [4, 40]));
    const sb = bits(src);
    for (const col of [16, 15]) {
      const dst = keep(bf(new Float32Array(4 * 56).fill(7), [4, 56]));
      g.stridedCopy(dst, src, { count: 4, length: 40, srcOffset: 0, srcStride: 40, dstOffset: col, dstStride: 56 });
      const db = bits(dst);
      for (let r = 0; r < 4; r++) {
        assert.deepEqual(db.subarray(r * 56 + col, r * 56 + col + 40), sb.subarray(r * 40, r * 40 + 40), `stridedCopy at column ${col}, row ${r}`);
        assert.ok(db.subarray(r * 56, r * 56 + col).every((b) => b === toBf16Bits([7])[0]), `stridedCopy at column ${col}: nothing written before row ${r}'s block`);
      }
    }
    // activations: 4,096 elements take the vector kernel, the same plus two the generic one
    const n = 4096;
    const av = randn(n + 2, 3);
    for (const kind of ['tanh', 'silu'] as const) {
      const [x8, x2] = [keep(bf(av.subarray(0, n), [n])), keep(bf(av, [n + 2]))];
      const [o8, o2] = [keep(g.empty([n], 'bfloat16')), keep(g.empty([n + 2], 'bfloat16'))];
      g.activation(o8, x8, kind);
      g.activation(o2, x2, kind);
      assert.deepEqual(bits(o8), bits(o2).subarray(0, n), kind);
      // the backward, written fresh and accumulated into what the forward left
      const gv = randn(n + 2);
      const [g8, g2] = [keep(bf(gv.subarray(0, n), [n])), keep(bf(gv, [n + 2]))];
      for (const acc of [false, true]) {
        g.activationBackward(o8, g8, x8, kind, acc);
        g.activationBackward(o2, g2, x2, kind, acc);
        assert.deepEqual(bits(o8), bits(o2).subarray(0, n), `${kind} backward (accumulate ${acc})`);
      }
    }
    for (const k of ['add_broadcast_bf16x8', 'strided_copy_bf16x8', 'strided_copy_f32', 'activation_bf16x8', 'activation_f32', 'activation_backward_bf16x8', 'activation_backward_f32']) {
      assert.ok(times.has(k), `${k} ran`);
    }
  } finally {
    for (const t of made) t.dispose();
    g.close();
  }
});

test('LayerNorm on rows held in registers (widths of whole 16-byte vectors up to 2,048) and the fused residual add, against the CPU and the unfused GPU path', { skip }, () => {
  // the kernel holding 1, 2, 3 or 4 vectors a lane, or up to 8: 64 and 136 (1: lanes with and
  // without one), 512 (2), 768 (3: the model's width), 776 (97 vectors: 4, lanes with and without
  // a fourth), 1032 (5: the general kernel), 2048 (the widest); 2056: one vector too wide (the warp
  // kernels); 40 rows: blocks of 4 rows and a grid stride
  for (const C_ of [64, 136, 512, 768, 776, 1032, 2048, 2056]) {
    const R = 40;
    const tag = `${R}x${C_}`;
    const x = act([R, C_]);
    const y = act([R, C_]);
    const w = param([C_]);
    const bb = param([C_], 0.1);
    const sum = out([R, C_]);
    const ln = out([R, C_]);
    const mean = out([R], 'float32');
    const rstd = out([R], 'float32');
    both((be, s) => be.addLayerNorm(sum[s], ln[s], mean[s], rstd[s], x[s], y[s], w[s], bb[s], 1e-12));
    close(`addLayerNorm sum ${tag}`, sum);
    // the GPU normalises the bf16-rounded sum: the CPU reference from here on takes those values
    C().write(sum.c, G().toArray(sum.g) as Float32Array);
    C().layerNorm(ln.c, mean.c, rstd.c, sum.c, w.c, bb.c, 1e-12);
    close(`addLayerNorm ${tag}`, ln);
    close(`addLayerNorm mean ${tag}`, mean, 1e-5);
    close(`addLayerNorm rstd ${tag}`, rstd, 1e-5);
    // the fused pass gives the unfused ops' bits: the sum as axpby rounds it, then layerNorm of it
    const g = G();
    const sum2 = g.empty([R, C_], 'bfloat16');
    const ln2 = g.empty([R, C_], 'bfloat16');
    const m2 = g.empty([R], 'float32');
    const r2 = g.empty([R], 'float32');
    g.axpby(sum2, 1, x.g, 1, y.g);
    g.layerNorm(ln2, m2, r2, sum2, w.g, bb.g, 1e-12);
    assert.deepEqual(g.toArray(sum.g), g.toArray(sum2), `addLayerNorm ${tag}: the sum differs from axpby's`);
    assert.deepEqual(g.toArray(ln.g), g.toArray(ln2), `addLayerNorm ${tag}: the output differs from layerNorm of axpby's sum`);
    assert.deepEqual(g.toArray(mean.g), g.toArray(m2));
    // in place, as the model calls it (sum aliases b)
    const yy = g.empty([R, C_], 'bfloat16');
    g.copy(yy, y.g);
    g.addLayerNorm(yy, ln2, m2, r2, x.g, yy, w.g, bb.g, 1e-12);
    assert.deepEqual(g.toArray(yy), g.toArray(sum.g), `addLayerNorm ${tag}: in place`);
    assert.deepEqual(g.toArray(ln2), g.toArray(ln.g), `addLayerNorm ${tag}: in place output`);
    // b's bias folded in (the model's output projection at inference): the bits of the product's
    // bias epilogue then the add, in place as the model calls it
    const ob = param([C_], 0.3);
    const yb = g.empty([R, C_], 'bfloat16');
    g.addBroadcast(yb, y.g, ob.g, [1, R, C_], [1, 1, C_]);
    g.axpby(sum2, 1, x.g, 1, yb);
    g.layerNorm(ln2, m2, r2, sum2, w.g, bb.g, 1e-12);
    const yy2 = g.empty([R, C_], 'bfloat16');
    const ln3 = g.empty([R, C_], 'bfloat16');
    g.copy(yy2, y.g);
    g.addLayerNorm(yy2, ln3, m2, r2, x.g, yy2, w.g, bb.g, 1e-12, ob.g);
    assert.deepEqual(g.toArray(yy2), g.toArray(sum2), `addLayerNorm ${tag} with b's bias: the sum`);
    assert.deepEqual(g.toArray(ln3), g.toArray(ln2), `addLayerNorm ${tag} with b's bias: the output`);
    for (const t of [yb, yy2, ln3]) t.dispose();
    // the backward, overwriting then accumulating, and in place (dx aliasing dy)
    const dln = out([R, C_]);
    const dw = param([C_]);
    const db = param([C_]);
    both((be, s) => be.layerNormBackward(dln[s], dw[s], db[s], y[s], sum[s], w[s], mean[s], rstd[s], false));
    close(`layerNormBackward dx ${tag}`, dln);
    close(`layerNormBackward dweight ${tag}`, dw);
    both((be, s) => be.layerNormBackward(dln[s], dw[s], db[s], x[s], sum[s], w[s], mean[s], rstd[s], true));
    close(`layerNormBackward dx accumulate ${tag}`, dln);
    const dyy = g.empty([R, C_], 'bfloat16');
    const dxx = g.empty([R, C_], 'bfloat16');
    g.copy(dyy, y.g);
    g.layerNormBackward(dxx, dw.g, db.g, dyy, sum.g, w.g, mean.g, rstd.g, false);
    g.layerNormBackward(dyy, dw.g, db.g, dyy, sum.g, w.g, mean.g, rstd.g, false);
    assert.deepEqual(g.toArray(dyy), g.toArray(dxx), `layerNormBackward ${tag}: in place`);
    for (const t of [sum2, ln2, m2, r2, yy, dyy, dxx]) t.dispose();
    freeAll();
  }
});

test('bfloat16 activations: matmul (f32 weights, bias + GELU, f32 and bf16 outputs) and attention', { skip }, () => {
  const x = act([37, 48]);
  const w = param([40, 48], 0.2);
  const b = param([40], 0.1);
  const pre = out([37, 40]);
  const y = out([37, 40]);
  both((be, s) => be.matmul(y[s], x[s], w[s], { transB: true, bias: b[s], gelu: { pre: pre[s] } }));
  close('matmul bf16 x f32^T + bias, GELU', y);
  close('matmul pre', pre);
  const y32 = out([37, 40], 'float32');
  both((be, s) => be.matmul(y32[s], x[s], w[s], { transB: true }));
  close('matmul into float32', y32);
  const gw = param([40, 48]);
  both((be, s) => be.matmul(gw[s], y[s], x[s], { transA: true, beta: 1 }));
  close('matmul weight gradient (bf16^T bf16 += into f32)', gw);
  for (const [B, S, H, dh, spec] of ATTENTION_CASES) {
    const d = H * dh;
    const tag = `${spec.kind} S${S} dh${dh}`;
    const qkv = act([B, S, 3 * d]);
    const o = out([B, S, d]);
    const lse = out([B, H, S], 'float32');
    both((be, s) => be.attention(o[s], lse[s], qkv[s], spec));
    close(`attention ${tag}`, o);
    close(`attention lse ${tag}`, lse, 1e-3);
    const dout = act([B, S, d]);
    const dq = out([B, S, 3 * d]);
    // the backward from the same saved output on both sides (the GPU's bf16 one)
    const oSame = pair(G().toArray(o.g), [B, S, d], 'bfloat16');
    both((be, s) => be.attentionBackward(dq[s], dout[s], qkv[s], oSame[s], lse[s], spec));
    close(`attentionBackward ${tag}`, dq);
  }
  freeAll();
});

test('tensor-core attention kernels (mma, and wgmma on sm_90) equal their slow twins (float32 tiles) on bf16 inputs', { skip }, () => {
  const tiled = new CudaBackend({ attention: 'tiled' });
  const mma = new CudaBackend({ attention: 'mma' });
  // wgmma on an sm_90 card; elsewhere the backend runs the mma kernels under that name
  const wgmma = new CudaBackend({ attention: 'wgmma' });
  // the backward's tiles of global rows in runs of 8 tiles (summed by attn_bwd_combine), and in
  // the plain order (one block each, where they fall)
  const runs8 = withEnv('MOE_DIFFUSEQ_ATTN_BWD_SPLIT', '8', () => new CudaBackend({ attention: 'wgmma' }));
  const plain = withEnv('MOE_DIFFUSEQ_ATTN_BWD_SPLIT', '0', () => new CudaBackend({ attention: 'wgmma' }));
  try {
    assert.ok(mma.describe().includes(', mma attention'), mma.describe());
    if (wgmma.arch === 90) assert.ok(wgmma.describe().includes(', wgmma attention'), wgmma.describe());
    // the cases, and one whose global rows' tile is split into runs (S / 64 tiles over SPLIT_TILES)
    // (the backward's too), and one whose global rows span two tiles
    const cases: typeof ATTENTION_CASES = [
      ...ATTENTION_CASES,
      [1, 1100, 2, 64, { kind: 'sliding', heads: 2, window: 64, dilation: 1, globalTokens: 16 }],
      [2, 1300, 2, 64, { kind: 'sliding', heads: 2, window: 64, dilation: 1, globalTokens: 70 }],
    ];
    for (const [B, S, H, dh, spec] of cases) {
      if (dh > 64) continue; // the mma kernels serve head sizes up to 64
      const d = H * dh;
      const tag = `${spec.kind} S${S} dh${dh} r${spec.dilation} G${spec.globalTokens}`;
      const qkv = randn(B * S * 3 * d);
      const dout = randn(B * S * d);
      const run = (be: Backend) => {
        const q = be.fromArray(qkv, [B, S, 3 * d], 'bfloat16');
        const g = be.fromArray(dout, [B, S, d], 'bfloat16');
        const o = be.fromArray(new Float32Array(B * S * d).fill(NaN), [B, S, d], 'bfloat16');
        const l = be.fromArray(new Float32Array(B * H * S).fill(NaN), [B, H, S]);
        const dq = be.fromArray(new Float32Array(B * S * 3 * d).fill(NaN), [B, S, 3 * d], 'bfloat16');
        be.attention(o, l, q, spec);
        be.attentionBackward(dq, g, q, o, l, spec);
        const r = { o: be.toArray(o), l: be.toArray(l), dq: be.toArray(dq) };
        for (const t of [q, g, o, l, dq]) t.dispose();
        return r;
      };
      const ref = run(tiled);
      const a = run(mma);
      const w = run(wgmma);
      for (const k of ['o', 'l', 'dq'] as const) {
        for (const [name, x] of [['mma', a], ['wgmma', w]] as const) {
          const err = relErrOf(x[k], ref[k], `${name} vs tiled ${k} ${tag}`);
          assert.ok(err <= 1e-2, `${name} vs tiled ${k} ${tag}: rel err ${err} (seed ${SEED})`);
        }
        // the two tensor-core families round the same probabilities (and dS) to bf16; only the order
        // of the products' additions differs
        const err = relErrOf(w[k], a[k], `wgmma vs mma ${k} ${tag}`);
        assert.ok(err <= 8e-3, `wgmma vs mma ${k} ${tag}: rel err ${err} (seed ${SEED})`);
      }
      // the same products and roundings; only the float32 sums of the runs are added in another order
      for (const [name, be] of [['runs of 8', runs8], ['plain order', plain]] as const) {
        const x = run(be);
        assert.deepEqual(x.o, w.o, `${name}: the forward is the same kernel`);
        const err = relErrOf(x.dq, w.dq, `${name} vs wgmma dq ${tag}`);
        assert.ok(err <= 8e-3, `${name} vs wgmma dq ${tag}: rel err ${err} (seed ${SEED})`);
      }
    }
  } finally {
    for (const be of [tiled, mma, wgmma, runs8, plain]) be.close();
  }
});

test('grouped GEMM kernels (mma and wgmma, one launch for all experts) equal the per-expert cuBLAS path', { skip }, () => {
  const mma = new CudaBackend({ grouped: 'mma' });
  // `wgmma`: every grouped product by grouped_wgmma.cu on sm_90 cards (elsewhere the same kernels as
  // mma): the forward with its 128-row tiles at every size, and with its 64-row tiles (one warpgroup)
  // launch times say which kernels ran: on sm_90 the backward's too (grouped_wgmma_nn / _tn)
  const times = new Map<string, [number, number]>();
  // (the 256-row tiles off: their own backend below)
  const wgmmaWith = (rows64: string) =>
    withEnv('MOE_DIFFUSEQ_WGMMA256_ROWS', '1000000000', () => withEnv('MOE_DIFFUSEQ_WGMMA64_ROWS', rows64, () => new CudaBackend({ grouped: 'wgmma', launchTimes: times })));
  const wgmma = wgmmaWith('0');
  const wgmma64 = wgmmaWith('1000000000');
  // and with its 256-row tiles (four warpgroups) at every size, their stages by cp.async or by TMA
  const with256 = (tma: string) =>
    withEnv('MOE_DIFFUSEQ_GROUPED_TMA', tma, () => withEnv('MOE_DIFFUSEQ_WGMMA256_ROWS', '0', () => new CudaBackend({ grouped: 'wgmma', launchTimes: times })));
  const [wgmma256, tma256, tma256p] = [with256('0'), with256('1'), with256('2')];
  const cublas = new CudaBackend({ grouped: 'cublas' });
  try {
    // sizes multiples of 8 but not of the 128 x 128 x 32 tiles; empty, tiny and multi-tile experts;
    // the last with thousands of rows per expert (many steps of the TN kernel's pipeline)
    for (const [K, N, counts] of [
      [72, 136, [0, 5, 300, 129]],
      [256, 64, [128, 1, 0, 0, 255]],
      [72, 200, [0, 9001, 7383, 130]],
    ] as [number, number, number[]][]) {
      const E = counts.length;
      const A = counts.reduce((a, b) => a + b, 0);
      const tag = `K${K} N${N} counts ${counts.join(',')}`;
      const xs = randn(A * K);
      const w = randn(E * N * K, 0.2);
      const bias = randn(E * N, 0.1);
      const dout = randn(A * N);
      const run = (be: Backend) => {
        const x = be.fromArray(xs, [A, K], 'bfloat16');
        const wt = be.fromArray(w, [E, N, K]);
        const bt = be.fromArray(bias, [E, N]);
        const g = be.fromArray(dout, [A, N], 'bfloat16');
        const h = be.fromArray(new Float32Array(A * N).fill(NaN), [A, N], 'bfloat16');
        const pre = be.fromArray(new Float32Array(A * N).fill(NaN), [A, N], 'bfloat16');
        const y32 = be.fromArray(new Float32Array(A * N).fill(NaN), [A, N]);
        const dx = be.fromArray(new Float32Array(A * K).fill(NaN), [A, K], 'bfloat16');
        const dw = be.zeros([E, N, K]);
        const db = be.zeros([E, N]);
        be.groupedMatmul(h, x, wt, bt, counts, { gelu: { pre } });
        be.groupedMatmul(y32, x, wt, null, counts);
        be.groupedMatmulBackward(dx, dw, db, g, x, wt, counts);
        const r = { h: be.toArray(h), pre: be.toArray(pre), y32: be.toArray(y32), dx: be.toArray(dx), dw: be.toArray(dw), db: be.toArray(db) };
        for (const t of [x, wt, bt, g, h, pre, y32, dx, dw, db]) t.dispose();
        return r;
      };
      // cuBLAS per expert, with rows rounded up into the next experts' (expertChunks) for some
      const b = run(cublas);
      let cp256: ReturnType<typeof run> | null = null;
      for (const [kind, be] of [['mma', mma], ['wgmma', wgmma], ['wgmma64', wgmma64], ['wgmma256', wgmma256], ['tma256', tma256], ['tma256p', tma256p]] as const) {
        times.clear();
        const a = run(be);
        // the same wgmma in the same order whichever way the stages fill: the same bits
        if (kind === 'wgmma256') cp256 = a;
        if ((kind === 'tma256' || kind === 'tma256p') && cp256) for (const k of ['h', 'pre', 'y32'] as const) assert.deepEqual([...a[k]], [...cp256[k]], `${kind} vs wgmma256 ${k} ${tag}`);
        if (kind === 'wgmma' && be.arch === 90) {
          for (const k of ['grouped_wgmma_nt_bf16', 'grouped_wgmma_nn_bf16', 'grouped_wgmma_tn_bf16']) assert.ok(times.has(k), `${k} did not run: ${tag}`);
        }
        if ((kind === 'wgmma256' || kind === 'tma256' || kind === 'tma256p') && be.arch === 90) {
          const k = `grouped_${kind}_nt_bf16`;
          assert.ok(times.has(k) && !times.has('grouped_wgmma_nt_bf16'), `${k} ran alone: ${tag}`);
        }
        for (const k of ['h', 'pre', 'y32', 'dx', 'dw', 'db'] as const) {
          const err = relErrOf(a[k], b[k], `grouped ${kind} vs cublas ${k} ${tag}`);
          assert.ok(err <= 1e-2, `grouped ${kind} vs cublas ${k} ${tag}: rel err ${err} (seed ${SEED})`);
        }
      }
    }
    // the persistent TMA kernel's blocks walk several tiles each (more tiles than multiprocessors),
    // with one step of K a tile (its epilogue staged in stages of the tile before) and with four
    // (a partial last step): bit for bit the cp.async 256-row kernel's forward
    for (const [K, N, counts] of [
      [64, 520, [0, 20000, 13000, 7]],
      [200, 264, [9000, 0, 12345, 3]],
      // partial last tiles of 1, 2, 3 and 4 quarters of 64 rows (the persistent kernel takes them
      // after every whole tile, most quarters first), and more than 32 experts (grouped_tile's order)
      [192, 1536, [600, 130, 70, 4000, 190, 513, 0, 320, 255]],
      [64, 136, Array.from({ length: 40 }, (_, i) => (i * 97) % 300)],
    ] as [number, number, number[]][]) {
      const [E, A] = [counts.length, counts.reduce((a, b) => a + b, 0)];
      const [xs, w, bias] = [randn(A * K), randn(E * N * K, 0.2), randn(E * N, 0.1)];
      const fwd = (be: Backend) => {
        const x = be.fromArray(xs, [A, K], 'bfloat16');
        const wt = be.fromArray(w, [E, N, K]);
        const bt = be.fromArray(bias, [E, N]);
        const [h, pre] = [be.empty([A, N], 'bfloat16'), be.empty([A, N], 'bfloat16')];
        const y32 = be.empty([A, N]);
        be.groupedMatmul(h, x, wt, bt, counts, { gelu: { pre } });
        be.groupedMatmul(y32, x, wt, null, counts);
        const r = { h: be.toArray(h), pre: be.toArray(pre), y32: be.toArray(y32) };
        for (const t of [x, wt, bt, h, pre, y32]) t.dispose();
        return r;
      };
      const want = fwd(wgmma256);
      times.clear();
      const got = fwd(tma256p);
      if (tma256p.arch === 90) assert.ok(times.has('grouped_tma256p_nt_bf16'), `the persistent kernel ran: K${K} N${N}`);
      for (const k of ['h', 'pre', 'y32'] as const) assert.deepEqual([...got[k]], [...want[k]], `tma256p vs wgmma256 ${k} K${K} N${N} counts ${counts.join(',')}`);
    }
    // with the routing itself (no capacity factor): the experts' offsets stay on the device and
    // the grid covers the most tiles the rows can make; the same numbers as with the host counts
    const [M, E, k, K, N] = [333, 5, 2, 64, 96];
    const logits = mma.fromArray(randn(M * E, 2), [M, E]);
    const routing = mma.moeRoute(logits, { topK: k, seqLen: M });
    const A = routing.order.size;
    const x = mma.fromArray(randn(M * K), [M, K], 'bfloat16');
    const xs = mma.empty([A, K], 'bfloat16');
    mma.moePermute(xs, x, routing);
    const w = mma.fromArray(randn(E * N * K, 0.2), [E, N, K]);
    const bias = mma.fromArray(randn(E * N, 0.1), [E, N]);
    const outs = [0, 1].map(() => ({ y: mma.empty([A, N], 'bfloat16'), pre: mma.empty([A, N], 'bfloat16'), dx: mma.empty([A, K], 'bfloat16'), dw: mma.zeros([E, N, K]), db: mma.zeros([E, N]) }));
    mma.groupedMatmul(outs[0]!.y, xs, w, bias, routing, { gelu: { pre: outs[0]!.pre } });
    mma.groupedMatmulBackward(outs[0]!.dx, outs[0]!.dw, outs[0]!.db, outs[0]!.y, xs, w, routing);
    const counts = [...routing.counts];
    assert.equal(counts.reduce((a, b) => a + b, 0), M * k, 'dropless: every assignment kept');
    mma.groupedMatmul(outs[1]!.y, xs, w, bias, counts, { gelu: { pre: outs[1]!.pre } });
    mma.groupedMatmulBackward(outs[1]!.dx, outs[1]!.dw, outs[1]!.db, outs[1]!.y, xs, w, counts);
    for (const key of ['y', 'pre', 'dx', 'dw', 'db'] as const) {
      const a = mma.toArray(outs[0]![key]);
      const b = mma.toArray(outs[1]![key]);
      assert.deepEqual([...a], [...b], `grouped mma with the routing vs its counts: ${key} identical`);
    }
    for (const o of outs) Object.values(o).forEach((t) => t.dispose());
    [logits, x, xs, w, bias].forEach((t) => t.dispose());
    routing.dispose();
    // the tokens' rows in the routing's order (gather: a permuted temporary) and a GELU whose
    // pre-activation is not kept: bit for bit the permuted product's, on every path
    const [lgv, xv, wv, bv] = [randn(M * E, 2), randn(M * K), randn(E * N * K, 0.2), randn(E * N, 0.1)];
    // dropless (the offsets on the device) and with a capacity (host counts, some assignments dropped)
    for (const cf of [undefined, 0.5] as const) for (const [kind, be] of [['wgmma', wgmma], ['wgmma256', wgmma256], ['tma256', tma256], ['tma256p', tma256p], ['mma', mma], ['cublas', cublas]] as const) {
      const lt = be.fromArray(lgv, [M, E]);
      const r = be.moeRoute(lt, { topK: k, seqLen: M, ...(cf !== undefined ? { capacityFactor: cf } : {}) });
      if (cf !== undefined) assert.ok(r.order.size < M * k, `capacity ${cf}: some assignments dropped (${r.order.size} of ${M * k})`);
      const Ar = r.order.size;
      const xt = be.fromArray(xv, [M, K], 'bfloat16');
      const xp = be.empty([Ar, K], 'bfloat16');
      be.moePermute(xp, xt, r);
      const wt = be.fromArray(wv, [E, N, K]);
      const bt = be.fromArray(bv, [E, N]);
      const [y0, y1, y2, p0, p1] = [0, 1, 2, 3, 4].map(() => be.fromArray(new Float32Array(Ar * N).fill(NaN), [Ar, N], 'bfloat16')) as [Tensor, Tensor, Tensor, Tensor, Tensor];
      times.clear();
      be.groupedMatmul(y0, xp, wt, bt, r, { gelu: { pre: p0 } });
      be.groupedMatmul(y1, xt, wt, bt, r, { gelu: { pre: p1 }, gather: true });
      be.groupedMatmul(y2, xt, wt, bt, r, { gelu: { pre: null }, gather: true });
      const y0v = [...be.toArray(y0)];
      assert.ok(y0v.every((v) => Number.isFinite(v)), `${kind}: the permuted product wrote every row`);
      assert.deepEqual([...be.toArray(y1)], y0v, `${kind}: gathered rows, output`);
      assert.deepEqual([...be.toArray(p1)], [...be.toArray(p0)], `${kind}: gathered rows, pre-activation`);
      assert.deepEqual([...be.toArray(y2)], y0v, `${kind}: gathered rows, GELU without its pre-activation`);
      // gather needs a routing: counts cannot say where the rows come from
      assert.throws(() => be.groupedMatmul(y1, xt, wt, bt, [...r.counts], { gather: true }), /routing/);
      for (const t of [lt, xt, xp, wt, bt, y0, y1, y2, p0, p1]) t.dispose();
      r.dispose();
    }
  } finally {
    for (const be of [mma, wgmma, wgmma64, wgmma256, tma256, tma256p, cublas]) be.close();
  }
});

test('the grouped forward\'s GELU epilogue by table (wgmma, gelu_table_bf16) gives the computed GELU\'s bits (mma) for every normal bf16 pre-activation', { skip }, () => {
  const times = new Map<string, [number, number]>();
  // (the 256-row tiles off: their own backend below)
  const wgmmaWith = (rows64: string) =>
    withEnv('MOE_DIFFUSEQ_WGMMA256_ROWS', '1000000000', () => withEnv('MOE_DIFFUSEQ_WGMMA64_ROWS', rows64, () => new CudaBackend({ grouped: 'wgmma', launchTimes: times })));
  const [wgmma, wgmma64, mma] = [wgmmaWith('0'), wgmmaWith('1000000000'), new CudaBackend({ grouped: 'mma' })];
  const with256 = (tma: string) =>
    withEnv('MOE_DIFFUSEQ_GROUPED_TMA', tma, () => withEnv('MOE_DIFFUSEQ_WGMMA256_ROWS', '0', () => new CudaBackend({ grouped: 'wgmma', launchTimes: times })));
  const [wgmma256, tma256, tma256p] = [with256('0'), with256('1'), with256('2')];
  try {
    // one expert, K = 8: row m of x is the m-th unit vector, so out[m][n] = gelu(w[n][m]) with the
    // product exact; w holds every bf16 of exponent 1 .. 254 (65,024 values: no zeros, subnormals,
    // infinities or NaNs, which a product with zeros could turn into others), 8,128 columns of 8
    const vals = new Uint16Array(65024);
    let i = 0;
    for (let sign = 0; sign < 2; sign++) for (let ex = 1; ex <= 254; ex++) for (let m = 0; m < 128; m++) vals[i++] = (sign << 15) | (ex << 7) | m;
    const [K, N] = [8, vals.length / 8];
    const wv = fromBf16Bits(vals); // w[n][k] = vals[n K + k]
    const xv = new Float32Array(K * K).map((_, j) => (j % (K + 1) === 0 ? 1 : 0));
    const run = (be: CudaBackend, keepPre: boolean) => {
      const x = be.fromArray(xv, [K, K], 'bfloat16');
      const w = be.fromArray(wv, [1, N, K]);
      const y = be.empty([K, N], 'bfloat16');
      const pre = keepPre ? be.empty([K, N], 'bfloat16') : null;
      be.groupedMatmul(y, x, w, null, [K], { gelu: { pre } });
      const bits = toBf16Bits(Float32Array.from(be.toArray(y)));
      const preBits = pre ? toBf16Bits(Float32Array.from(be.toArray(pre))) : null;
      for (const t of [x, w, y, pre]) t?.dispose();
      return { bits, preBits };
    };
    for (const keepPre of [true, false]) {
      const want = run(mma, keepPre);
      if (want.preBits) {
        // the pre-activations are the table's inputs: out[m][n] over w[n][m]
        const ok = want.preBits.every((b, j) => b === vals[(j % N) * K + Math.floor(j / N)]);
        assert.ok(ok, 'the one-hot product gives w exactly');
      }
      for (const [kind, be] of [['wgmma', wgmma], ['wgmma64', wgmma64], ['wgmma256', wgmma256], ['tma256', tma256], ['tma256p', tma256p]] as const) {
        times.clear();
        const got = run(be, keepPre);
        if (be.arch === 90) {
          assert.ok(times.has(kind === 'wgmma' ? 'grouped_wgmma_nt_bf16' : `grouped_${kind}_nt_bf16`), `${kind} ran`);
          // each backend makes its table at its first GELU epilogue (the first round), and only then
          assert.equal(times.has('gelu_table_bf16'), keepPre, `${kind}: the table made ${keepPre ? 'now' : 'before, once'}`);
        }
        let diff = 0;
        for (let j = 0; j < got.bits.length; j++) if (got.bits[j] !== want.bits[j]) diff++;
        assert.equal(diff, 0, `${kind} (pre kept ${keepPre}): ${diff} of ${got.bits.length} GELU outputs differ from the computed ones`);
      }
    }
  } finally {
    for (const be of [wgmma, wgmma64, wgmma256, tma256, tma256p, mma]) be.close();
  }
});

test('bfloat16 activations: MoE permute, grouped matmul, combine and their backward', { skip }, () => {
  const [M, E, k, d, f] = [300, 4, 2, 24, 40];
  const logits = param([M, E], 2);
  const rc = C().moeRoute(logits.c, { topK: k, seqLen: M });
  const rg = G().moeRoute(logits.g, { topK: k, seqLen: M });
  const r = { c: rc, g: rg };
  const A = rc.order.size;
  const x = act([M, d]);
  const xs = out([A, d]);
  both((be, s) => be.moePermute(xs[s], x[s], r[s]));
  close('moePermute', xs, 0);
  const w1 = param([E, f, d], 0.3);
  const b1 = param([E, f], 0.1);
  const w2 = param([E, d, f], 0.3);
  const pre = out([A, f]);
  const h = out([A, f]);
  both((be, s) => be.groupedMatmul(h[s], xs[s], w1[s], b1[s], r[s].counts, { gelu: { pre: pre[s] } }));
  close('groupedMatmul bias + GELU', h);
  // the backward recomputes the GELU from pre: to the bit what the product's epilogue stored
  const h2 = out([A, f]);
  G().activation(h2.g, pre.g, 'gelu');
  assert.deepEqual([...(G().toArray(h2.g) as Float32Array)], [...(G().toArray(h.g) as Float32Array)], 'activation(gelu) of bf16 equals the bias + GELU epilogue');
  const ys = out([A, d]);
  both((be, s) => be.groupedMatmul(ys[s], h[s], w2[s], null, r[s].counts));
  close('groupedMatmul', ys);
  const yv = out([M, d]);
  both((be, s) => be.moeCombine(yv[s], ys[s], r[s], false));
  close('moeCombine', yv);
  const dy = act([M, d]);
  const dys = out([A, d]);
  const dg = out([M, k], 'float32');
  // the backward from the GPU's bf16 expert outputs on both sides
  const ysSame = pair(G().toArray(ys.g), [A, d], 'bfloat16');
  both((be, s) => be.moeCombineBackward(dys[s], dg[s], dy[s], ysSame[s], r[s]));
  close('moeCombineBackward dys', dys);
  close('moeCombineBackward dgates', dg);
  const dh = out([A, f]);
  const gw2 = param([E, d, f]);
  const gb2 = param([E, d]);
  both((be, s) => be.groupedMatmulBackward(dh[s], gw2[s], gb2[s], dys[s], h[s], w2[s], r[s].counts));
  close('groupedMatmulBackward dxs', dh);
  close('groupedMatmulBackward dweight', gw2);
  close('groupedMatmulBackward dbias', gb2);
  const dx = act([M, d]);
  both((be, s) => be.moePermuteBackward(dx[s], dys[s], r[s], true));
  close('moePermuteBackward accumulate', dx);
  rc.dispose();
  rg.dispose();
  freeAll();
});

test('bfloat16 column sums: the LayerNorm backward\'s weight gradients in its dx pass (its bits for dx) and the experts\' bias gradients, against float64', { skip }, () => {
  // the LayerNorm backward with the fusion off (MOE_DIFFUSEQ_FUSED_SUMS=0): a column-sum pass of its own
  const plain = withEnv('MOE_DIFFUSEQ_FUSED_SUMS', '0', () => new CudaBackend());
  const bes: [string, Backend][] = [['fused', G()], ['plain', plain]];
  const bits = (be: Backend, t: Tensor): number[] => [...(be.toArray(t) as Float32Array)];
  try {
    // LayerNorm backward: dx, and dweight / dbias accumulated onto values already there. Rows of 1,
    // 2, 3 and 4 vectors a lane (C 256, 264, 768, 1000), one to 256 blocks, a block's last tile short
    for (const [R, Cn] of [[4, 256], [300, 264], [1000, 768], [20000, 768], [77, 1000]] as const) {
      const x = randn(R * Cn, 2);
      const dy = randn(R * Cn);
      const dx0 = randn(R * Cn);
      const w = randn(Cn);
      const [dw0, db0] = [randn(Cn), randn(Cn)];
      // mean and rstd from the GPU's LayerNorm, the same float32 values on both backends
      const xg = G().fromArray(x, [R, Cn], 'bfloat16');
      const [wg, bg] = [G().fromArray(w, [Cn]), G().zeros([Cn])];
      const [lo, mg, rg] = [G().empty([R, Cn], 'bfloat16'), G().empty([R]), G().empty([R])];
      G().layerNorm(lo, mg, rg, xg, wg, bg, 1e-5);
      const mean = G().toArray(mg) as Float32Array;
      const rstd = G().toArray(rg) as Float32Array;
      [xg, wg, bg, lo, mg, rg].forEach((t) => t.dispose());
      const got = bes.map(([name, be]) => {
        const t = {
          x: be.fromArray(x, [R, Cn], 'bfloat16'), dy: be.fromArray(dy, [R, Cn], 'bfloat16'), dx: be.fromArray(dx0, [R, Cn], 'bfloat16'), w: be.fromArray(w, [Cn]),
          mean: be.fromArray(mean, [R]), rstd: be.fromArray(rstd, [R]), dw: be.fromArray(dw0, [Cn]), db: be.fromArray(db0, [Cn]),
        };
        be.layerNormBackward(t.dx, t.dw, t.db, t.dy, t.x, t.w, t.mean, t.rstd, true);
        const r = { name, dx: bits(be, t.dx), dw: bits(be, t.dw), db: bits(be, t.db) };
        Object.values(t).forEach((v) => v.dispose());
        return r;
      });
      assert.deepEqual(got[0]!.dx, got[1]!.dx, `layerNormBackward dx ${R}x${Cn}: the fused kernel's bits are the plain kernel's`);
      // float64 sums of the same float64 terms (the inputs are bf16 values, exact in float32)
      const [rw, rb] = [Float64Array.from(dw0), Float64Array.from(db0)];
      for (let r = 0; r < R; r++)
        for (let c = 0; c < Cn; c++) {
          const g = dy[r * Cn + c]!;
          rb[c]! += g;
          rw[c]! += g * ((x[r * Cn + c]! - mean[r]!) * rstd[r]!);
        }
      for (const o of got) {
        assert.ok(maxRelErr(o.dw, Float32Array.from(rw)).err <= 1e-7, `layerNormBackward dweight ${R}x${Cn} (${o.name}) against float64: ${maxRelErr(o.dw, Float32Array.from(rw)).err}`);
        assert.ok(maxRelErr(o.db, Float32Array.from(rb)).err <= 1e-7, `layerNormBackward dbias ${R}x${Cn} (${o.name}) against float64: ${maxRelErr(o.db, Float32Array.from(rb)).err}`);
      }
    }
    // the experts' bias gradients from bf16 rows of whole 16-byte vectors (col_sums_segments_bf16x8,
    // cuBLAS's per-expert products beside it): an empty expert, experts shorter than a chunk and
    // longer, the sums added onto values already there
    const cublas = new CudaBackend({ grouped: 'cublas' });
    try {
      for (const [counts, N] of [[[0, 130, 7, 2500, 1], 1536], [[64, 0, 333], 264], [[5000, 3], 768]] as [number[], number][]) {
        const rows = counts.reduce((a, b) => a + b, 0);
        const [E, K] = [counts.length, 16];
        const [dout, xs, w, db0] = [randn(rows * N), randn(rows * K), randn(E * N * K), randn(E * N)];
        const t = { dout: cublas.fromArray(dout, [rows, N], 'bfloat16'), xs: cublas.fromArray(xs, [rows, K], 'bfloat16'), w: cublas.fromArray(w, [E, N, K]), dw: cublas.zeros([E, N, K]), db: cublas.fromArray(db0, [E, N]) };
        cublas.groupedMatmulBackward(null, t.dw, t.db, t.dout, t.xs, t.w, counts);
        const got = cublas.toArray(t.db);
        Object.values(t).forEach((v) => v.dispose());
        const ref = Float64Array.from(db0);
        let row = 0;
        counts.forEach((n, e) => {
          for (let i = row; i < row + n; i++) for (let c = 0; c < N; c++) ref[e * N + c]! += dout[i * N + c]!;
          row += n;
        });
        const err = maxRelErr(got, Float32Array.from(ref)).err;
        assert.ok(err <= 1e-7, `groupedMatmulBackward dbias, counts ${counts.join(',')} N ${N}, against float64: ${err}`);
      }
    } finally {
      cublas.close();
    }
  } finally {
    plain.close();
  }
});

test('bf16 model: the base config loss and gradients follow the float32 CPU reference', { skip }, () => {
  const cfg = presetConfig('base', { dropout: 0, seqLen: 48, maxLen: 48 });
  const batch = microBatch(cfg, 2, 48, 5);
  const noise = microNoise(cfg, batch, 6);
  const run = (be: Backend, bf: boolean) => {
    const m = Model.init(cfg, be, 1);
    if (bf) m.precision = 'bf16';
    m.params.zeroGrads();
    const r = diffusionLoss(m, batch, noise, { train: false, backward: true });
    const g = be.toArray(m.params.grads);
    m.dispose();
    return { loss: r.terms.total, g };
  };
  const a = run(G(), true);
  const b = run(C(), false);
  const { cos, normRatio } = cosine(a.g, b.g);
  const rel = Math.abs(a.loss - b.loss) / Math.abs(b.loss);
  process.stderr.write(`base bf16: loss ${a.loss} vs ${b.loss} (rel ${rel.toExponential(2)}); gradient cosine ${cos.toFixed(5)}, norm ratio ${normRatio.toFixed(4)}\n`);
  assert.ok(rel < 1e-2, `loss ${a.loss} vs ${b.loss}`);
  assert.ok(cos > 0.99, `gradient cosine ${cos}`);
  assert.ok(Math.abs(normRatio - 1) < 0.05, `gradient norm ratio ${normRatio}`);
});

test('bf16 model: the tied head (nll over the vocabulary, bf16 products) follows the float32 CPU reference where the nll matters', { skip }, () => {
  // small embeddings: logits of order one, so the nll is near log V and sends real gradient into E
  // (at the N(0, 1) initialisation it is ~0: the correct logit is ~e = 128 above the others)
  const cfg = presetConfig('tiny', { dropout: 0, seqLen: 32, maxLen: 32, vocabSize: 700 });
  const batch = microBatch(cfg, 3, 32, 5);
  const noise = microNoise(cfg, batch, 6);
  const run = (be: Backend, bf: boolean) => {
    const m = Model.init(cfg, be, 1);
    const E = m.params.get('word_embeddings.weight');
    be.write(E, Float32Array.from(be.toArray(E), (v) => v * 0.05));
    if (bf) m.precision = 'bf16';
    m.params.zeroGrads();
    const r = diffusionLoss(m, batch, noise, { train: false, backward: true });
    const dE = be.toArray(m.params.grad('word_embeddings.weight'));
    m.dispose();
    return { nll: r.terms.nll, dE };
  };
  const a = run(G(), true);
  const b = run(C(), false);
  const { cos } = cosine(a.dE, b.dE);
  const rel = Math.abs(a.nll - b.nll) / Math.abs(b.nll);
  process.stderr.write(`tied head bf16: nll ${a.nll} vs ${b.nll} (rel ${rel.toExponential(2)}); dE cosine ${cos.toFixed(5)}\n`);
  assert.ok(b.nll > 1, `the nll matters here (${b.nll})`);
  assert.ok(rel < 1e-2, `nll ${a.nll} vs ${b.nll}`);
  assert.ok(cos > 0.99, `dE cosine ${cos}`);
});

test('bf16 training: 300 steps of the tiny preset on the GPU follow the float32 CPU curve', { skip }, async () => {
  const t = tempDir();
  try {
    const opts = (device: string, precision: string, out: string) => ({
      data: DATA, out, device, precision, tokenizer: TOKENIZER, preset: 'tiny', model: { seqLen: 64, maxLen: 64 },
      maxSteps: 300, batchSize: 16, lr: 1e-3, warmup: 20, logEvery: 10, saveEvery: 300, evalExamples: 0, seed: 4,
    });
    await train(opts('cuda', 'bf16', join(t.dir, 'gpu')), quiet);
    await train(opts('cpu', 'float32', join(t.dir, 'cpu')), quiet);
    const curve = (dir: string) => readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { split: string; loss: number }).filter((r) => r.split === 'train').map((r) => r.loss);
    const g = curve(join(t.dir, 'gpu'));
    const c = curve(join(t.dir, 'cpu'));
    assert.equal(g.length, 30);
    const diffs = g.map((x, i) => Math.abs(x - c[i]!) / c[i]!);
    process.stderr.write(`tiny 300 steps bf16: loss ${c[0]!.toFixed(4)} -> ${c[29]!.toFixed(4)} (cpu float32), ${g[0]!.toFixed(4)} -> ${g[29]!.toFixed(4)} (gpu bf16); largest relative gap ${Math.max(...diffs).toExponential(2)}\n`);
    assert.ok(g[29]! < 0.6 * g[0]!, 'the bf16 loss falls');
    assert.ok(Math.abs(g[29]! - c[29]!) / c[29]! < 0.05, `final loss ${g[29]} vs ${c[29]}`);
  } finally {
    t.done();
  }
});

/** A tiny bf16 model for the sampling tests, and the count of `be`'s recordings that succeed. */
function samplingModel(be: CudaBackend, seed: number): { cfg: ReturnType<typeof presetConfig>; model: Model; recorded: () => number } {
  const cfg = presetConfig('tiny', { vocabSize: 300, seqLen: 64, maxLen: 64, dropout: 0 });
  const model = Model.init(cfg, be, seed);
  model.precision = 'bf16';
  let n = 0;
  const capture = be.capture.bind(be);
  be.capture = (work) => {
    const r = capture(work);
    if (r) n++;
    return r;
  };
  return { cfg, model, recorded: () => n };
}

test('sampling with CUDA graphs (grouped kernels, no read-back): the recorded denoiser call gives the plain calls\' tokens', { skip }, () => {
  const be = new CudaBackend({ grouped: 'mma' });
  try {
    const { cfg, model, recorded } = samplingModel(be, 3);
    const [B, N] = [2, 64];
    const ids = Int32Array.from({ length: B * N }, (_, i) => 5 + ((i * 7) % 290));
    const mask = Int32Array.from({ length: B * N }, (_, i) => (i % N >= 20 ? 1 : 0));
    const plain = sampleIds(model, ids, mask, B, N, { sampler: 'ddim', steps: 6, seed: 4, graphs: false });
    const graphed = sampleIds(model, ids, mask, B, N, { sampler: 'ddim', steps: 6, seed: 4, graphs: true });
    assert.equal(recorded(), 1, 'one recording, replayed for the steps after the first');
    assert.deepEqual([...graphed], [...plain]);
    // kept recordings: the first call records, the later ones replay from their first step, on
    // blocks no other allocation gets meanwhile (another batch shape's buffers, the sampler's own)
    const kept = new SamplingGraphs();
    const mem0 = be.memory().liveBytes;
    try {
      const first = sampleIds(model, ids, mask, B, N, { sampler: 'ddim', steps: 6, seed: 4, graphs: kept });
      assert.equal(recorded(), 2, 'a kept recording is made in the first call');
      const one = sampleIds(model, ids.subarray(0, N), mask.subarray(0, N), 1, N, { sampler: 'ddim', steps: 6, seed: 4, graphs: kept });
      assert.equal(recorded(), 3, 'another batch shape records its own');
      const again = sampleIds(model, ids, mask, B, N, { sampler: 'ddim', steps: 6, seed: 4, graphs: kept });
      const other = sampleIds(model, ids, mask, B, N, { sampler: 'ddim', steps: 6, seed: 9, graphs: kept });
      const otherPlain = sampleIds(model, ids, mask, B, N, { sampler: 'ddim', steps: 6, seed: 9, graphs: false });
      assert.equal(recorded(), 3, 'later calls of a recorded shape replay it');
      assert.deepEqual([...first], [...plain]);
      assert.deepEqual([...again], [...plain]);
      assert.deepEqual([...other], [...otherPlain], 'another seed through the kept recording');
      assert.deepEqual([...one], [...plain.subarray(0, N)], 'batch rows are independent');
      // the weights are converted again in every call: a changed parameter changes the next call
      const w = model.params.get('layers.0.attn.o.weight');
      const wv = be.toArray(w) as Float32Array;
      be.write(w, wv.map((v) => -3 * v));
      const changedPlain = sampleIds(model, ids, mask, B, N, { sampler: 'ddim', steps: 6, seed: 4, graphs: false });
      const changed = sampleIds(model, ids, mask, B, N, { sampler: 'ddim', steps: 6, seed: 4, graphs: kept });
      assert.notDeepEqual([...changedPlain], [...plain], 'the change shows in the tokens');
      assert.deepEqual([...changed], [...changedPlain], 'the kept recording reads the current weights');
      be.write(w, wv);
      // at most MAX_SHAPES shapes a model, sharing one weight copy: 3 x N and 4 x N fill the four
      // places (2 x N and 1 x N kept), 5 x N frees the least recently used (1 x N), which then records
      // again (and frees 2 x N) with the plain calls' tokens
      assert.equal(SamplingGraphs.MAX_SHAPES, 4);
      const rows = (b: number) => [Int32Array.from({ length: b * N }, (_, i) => ids[i % (B * N)]!), Int32Array.from({ length: b * N }, (_, i) => mask[i % (B * N)]!)] as const;
      for (const b of [3, 4, 5]) sampleIds(model, ...rows(b), b, N, { sampler: 'ddim', steps: 6, seed: 4, graphs: kept });
      assert.equal(recorded(), 6, 'one recording per new shape');
      const oneAgain = sampleIds(model, ...rows(1), 1, N, { sampler: 'ddim', steps: 6, seed: 4, graphs: kept });
      assert.equal(recorded(), 7, 'the freed shape records again');
      assert.deepEqual([...oneAgain], [...plain.subarray(0, N)]);
      sampleIds(model, ids, mask, B, N, { sampler: 'ddim', steps: 6, seed: 4, graphs: kept });
      assert.equal(recorded(), 8, '2 x N was the least recently used when 1 x N came back');
      // another precision: the model's kept weights and recordings are dropped, not misused
      model.precision = 'float32';
      const f32Plain = sampleIds(model, ids, mask, B, N, { sampler: 'ddim', steps: 6, seed: 4, graphs: false });
      const f32Kept = sampleIds(model, ids, mask, B, N, { sampler: 'ddim', steps: 6, seed: 4, graphs: kept });
      assert.deepEqual([...f32Kept], [...f32Plain], 'float32 through the kept graphs');
      model.precision = 'bf16';
      const back = sampleIds(model, ids, mask, B, N, { sampler: 'ddim', steps: 6, seed: 4, graphs: kept });
      assert.deepEqual([...back], [...plain], 'back to bf16');
    } finally {
      kept.dispose();
    }
    assert.equal(be.memory().liveBytes, mem0, 'dispose frees the kept buffers');
    // fixedWeights: the bf16 weights and the table's score operands of the first call serve the
    // later ones, so a later change is not seen (where the default converts again, above)
    const fixed = new SamplingGraphs({ fixedWeights: true });
    try {
      const first = sampleIds(model, ids, mask, B, N, { sampler: 'ddim', steps: 6, seed: 4, graphs: fixed });
      const again = sampleIds(model, ids, mask, B, N, { sampler: 'ddim', steps: 6, seed: 4, graphs: fixed });
      assert.deepEqual([...first], [...plain]);
      assert.deepEqual([...again], [...plain], 'the kept weights and score operands give the plain tokens');
      const w = model.params.get('layers.0.attn.o.weight');
      const wv = be.toArray(w) as Float32Array;
      be.write(w, wv.map((v) => -3 * v));
      const stale = sampleIds(model, ids, mask, B, N, { sampler: 'ddim', steps: 6, seed: 4, graphs: fixed });
      const changedPlain = sampleIds(model, ids, mask, B, N, { sampler: 'ddim', steps: 6, seed: 4, graphs: false });
      be.write(w, wv);
      assert.notDeepEqual([...changedPlain], [...plain]);
      assert.deepEqual([...stale], [...plain], 'fixed weights: the first call\'s copy, not the changed parameter');
    } finally {
      fixed.dispose();
    }
    assert.equal(be.memory().liveBytes, mem0, 'dispose frees the fixed weights and score operands too');
    // the sampler's weights rounded once (castWeights) give a forward the numbers of the per-product rounding
    const xt = be.fromArray(Float32Array.from({ length: B * N * cfg.embDim }, (_, i) => Math.sin(i * 0.37)), [B, N, cfg.embDim]);
    const cast = model.denoiser.castWeights()!;
    const a = model.denoiser.forward(xt, [5, 40], { train: false });
    const b = model.denoiser.forward(xt, [5, 40], { train: false, weights: cast });
    assert.deepEqual([...(be.toArray(b.x0) as Float32Array)], [...(be.toArray(a.x0) as Float32Array)], 'forward with cast weights');
    for (const t of [a, b, cast, xt]) t.dispose();
    model.dispose();
  } finally {
    be.close();
  }
});

test('generate on a GPU: its own kept recordings, or the caller\'s across calls, give the plain calls\' texts', { skip }, () => {
  const be = new CudaBackend();
  try {
    const { cfg, model, recorded } = samplingModel(be, 5);
    const tok = new FakeTokenizer(Array.from({ length: cfg.vocabSize - 4 }, (_, i) => `w${i}`));
    // five sources in batches of 2, 2 and 1: two batch shapes
    const sources = Array.from({ length: 5 }, (_, i) => Array.from({ length: 6 + i }, (_, j) => `w${(i * 31 + j * 7) % 290}`).join(' '));
    const opts = { sampler: 'ddim' as const, steps: 5, seed: 3, batchSize: 2 };
    const plain = generate(model, tok, sources, { ...opts, graphs: false }).map((g) => g.text);
    assert.equal(recorded(), 0);
    const own = generate(model, tok, sources, opts).map((g) => g.text);
    assert.equal(recorded(), 2, 'one recording per batch shape, replayed for the other batch of 2');
    assert.deepEqual(own, plain);
    const kept = new SamplingGraphs();
    try {
      const a = generate(model, tok, sources, { ...opts, graphs: kept }).map((g) => g.text);
      const b = generate(model, tok, sources, { ...opts, graphs: kept }).map((g) => g.text);
      assert.equal(recorded(), 4, 'the second call replays the first call\'s recordings');
      assert.deepEqual(a, plain);
      assert.deepEqual(b, plain);
    } finally {
      kept.dispose();
    }
    assert.ok(plain.some((t) => t.length > 0), 'some text was generated');
    model.dispose();
  } finally {
    be.close();
  }
});

test('a bf16 Linear\'s bfloat16 bias in cuBLASLt\'s epilogue equals the product then the bias pass (within one bf16 rounding), at aligned and unaligned biases', { skip }, () => {
  const times = new Map<string, [number, number]>();
  const lt = new CudaBackend({ launchTimes: times });
  const plain = withEnv('MOE_DIFFUSEQ_CUBLASLT', '0', () => new CudaBackend());
  try {
    // rows not a multiple of any tile; a float32 weight (rounded into scratch) and a bf16 one; the
    // bias at bf16 offsets 0 and 8 of its buffer (16-byte aligned: the epilogue) and 1 and 3 (the
    // bias pass, since cuBLASLt's kernels may load it 16 bytes at a time)
    for (const [M, N, K, off, wType] of [[37, 40, 48, 0, 'float32'], [1000, 2304, 768, 8, 'bfloat16'], [1000, 2304, 768, 1, 'bfloat16'], [5, 136, 64, 3, 'float32']] as const) {
      const tag = `M${M} N${N} K${K} bias offset ${off} ${wType} weight`;
      const xs = randn(M * K);
      const ws = randn(N * K, 0.2);
      const bs = randn(N + off, 0.5);
      const run = (be: CudaBackend) => {
        const x = be.fromArray(xs, [M, K], 'bfloat16');
        const w = be.fromArray(ws, [N, K], wType);
        const bAll = be.fromArray(bs, [N + off], 'bfloat16');
        const b = be.view(bAll, off, [N]);
        const y = be.fromArray(new Float32Array(M * N).fill(NaN), [M, N], 'bfloat16');
        be.matmul(y, x, w, { transB: true, bias: b });
        const r = be.toArray(y);
        for (const t of [x, w, bAll, y]) t.dispose();
        return r;
      };
      times.clear();
      const a = run(lt);
      const ran = (prefix: string) => [...times.keys()].some((k) => k.startsWith(prefix));
      if (lt.arch === 90 && off % 8 === 0) {
        assert.ok(ran('gemm+bias'), `cuBLASLt's epilogue did not run: ${tag} (${[...times.keys()].join(', ')})`);
        assert.ok(!ran('bias_act'), `the bias pass still ran: ${tag}`);
      }
      if (off % 8 !== 0) assert.ok(ran('bias_act') && !ran('gemm+bias'), `an unaligned bias must take the bias pass: ${tag}`);
      const b = run(plain);
      // the float64 reference from the rounded operands and bias
      const r16 = (v: ArrayLike<number>) => fromBf16Bits(toBf16Bits(v));
      const [x16, w16, b16] = [r16(xs), r16(ws), r16(bs)];
      const ref = new Float32Array(M * N);
      for (let m = 0; m < M; m++) {
        for (let n = 0; n < N; n++) {
          let acc = 0;
          for (let k = 0; k < K; k++) acc += x16[m * K + k]! * w16[n * K + k]!;
          ref[m * N + n] = acc + b16[off + n]!;
        }
      }
      const errLt = relErrOf(a, ref, `Linear bf16 bias ${tag}, epilogue vs float64`);
      const errPlain = relErrOf(b, ref, `Linear bf16 bias ${tag}, bias pass vs float64`);
      assert.ok(errLt <= 8e-3 && errPlain <= 8e-3, `${tag}: rel err ${errLt} / ${errPlain} (seed ${SEED})`);
    }
  } finally {
    lt.close();
    plain.close();
  }
});
