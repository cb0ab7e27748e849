/**
 * LayerwiseCopy: the parameters converted for the products a layer at a time (what a bf16 training
 * step uses on the GPU). On the CPU the copy is in the parameters' own dtype, so a forward and
 * backward through it must give the same numbers to the bit, and every layer must be released
 * after its forward and after its backward (a view kept across a release would be a disposed
 * tensor and throw).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CpuBackend } from '../../src/backend/cpu/backend.js';
import type { Tensor } from '../../src/backend/backend.js';
import { Model } from '../../src/model/model.js';
import { diffusionLoss } from '../../src/diffusion/loss.js';
import { LayerwiseCopy } from '../../src/model/params.js';
import { microBatch, microConfig, microNoise, microDenoiserInputs } from './fixtures.js';

/** The converted segments (a call, not the getter: assert.deepEqual would narrow the getter's type). */
const liveOf = (c: LayerwiseCopy): string[] => c.live;

test('LayerwiseCopy: values and views as the store, a layer converted on first use and freed on release', () => {
  const be = new CpuBackend({ threads: 1 });
  try {
    const m = Model.init(microConfig(), be, 3, 'float64');
    const P = m.params;
    const before = be.memory().liveBytes;
    const lw = new LayerwiseCopy(P, 'float32');
    assert.deepEqual(liveOf(lw), [], 'nothing converted before use');
    for (const spec of P.specs) {
      const got = lw.get(spec.name);
      assert.deepEqual(got.shape, spec.shape, spec.name);
      assert.deepEqual([...(be.toArray(got) as Float32Array)], [...Float32Array.from(be.toArray(P.get(spec.name)))], spec.name);
    }
    // one segment a layer, one per other parameter
    const layers = microConfig().layers;
    assert.equal(liveOf(lw).filter((k) => k.startsWith('layers.')).length, layers);
    assert.equal(liveOf(lw).length, P.specs.filter((s) => !s.name.startsWith('layers.')).length + layers);
    const q = P.specs.find((s) => s.name === 'layers.1.attn.q.weight')!;
    const d = q.shape[0]!;
    const span = lw.span(q.name, [3 * d, d]);
    assert.deepEqual([...(be.toArray(span) as Float32Array)], [...Float32Array.from(be.toArray(P.span(q.name, [3 * d, d])))]);
    assert.throws(() => lw.span('layers.1.ffn_norm.bias', [2 * d]), /leaves its segment/);
    assert.throws(() => lw.get('no.such'), /no parameter named no.such/);
    // release frees the layer: its views are dead, the next use converts it again (from the store now)
    const view: Tensor = lw.get(q.name);
    const held = be.memory().liveBytes;
    lw.release(1);
    assert.ok(!liveOf(lw).includes('layers.1'));
    assert.ok(be.memory().liveBytes < held, 'the layer\'s copy was freed');
    assert.throws(() => be.toArray(view));
    be.fill(P.get(q.name), 0.25);
    assert.equal((be.toArray(lw.get(q.name)) as Float32Array)[0], 0.25);
    lw.release(7); // no such layer: nothing to do
    lw.dispose();
    assert.equal(be.memory().liveBytes, before, 'dispose frees every segment');
    m.dispose();
  } finally {
    be.close();
  }
});

test('LayerwiseCopy as ForwardOptions.weights: forward and backward give the same numbers, each layer released after its forward and its backward', () => {
  const be = new CpuBackend({ threads: 1 });
  try {
    for (const recompute of [false, true]) {
      const cfg = microConfig();
      const m = Model.init(cfg, be, 4, 'float64');
      const { xt, dx0 } = microDenoiserInputs(be, cfg, 9);
      const run = (weights: LayerwiseCopy | null) => {
        m.params.zeroGrads();
        const cache = m.denoiser.forward(xt, [3, 17], { train: true, recompute, ...(weights ? { weights } : {}) });
        if (weights) assert.deepEqual(liveOf(weights).filter((k) => k.startsWith('layers.')), [], 'every layer released after its forward');
        const x0 = Float64Array.from(be.toArray(cache.x0));
        const dxt = m.denoiser.backward(cache, dx0, 0.01, 0.001);
        if (weights) assert.deepEqual(liveOf(weights).filter((k) => k.startsWith('layers.')), [], 'every layer released after its backward');
        const out = { x0, dxt: Float64Array.from(be.toArray(dxt)), grads: Float64Array.from(be.toArray(m.params.grads)) };
        dxt.dispose();
        cache.dispose();
        return out;
      };
      const plain = run(null);
      const lw = new LayerwiseCopy(m.params, 'float64');
      const viaCopy = run(lw);
      lw.dispose();
      for (const k of ['x0', 'dxt', 'grads'] as const) assert.deepEqual([...viaCopy[k]], [...plain[k]], `${k}${recompute ? ' (recompute)' : ''}`);
      assert.ok(plain.grads.some((g) => g !== 0), 'the gradients are not all zero');
      for (const t of [xt, dx0, m]) t.dispose();
    }
  } finally {
    be.close();
  }
});

test('diffusionLoss under a layerwise copy: the same loss and gradients, and every converted segment freed after the step', () => {
  const be = new CpuBackend({ threads: 1 });
  try {
    for (const recompute of [false, true]) {
      const cfg = microConfig();
      const m = Model.init(cfg, be, 5, 'float64');
      const batch = microBatch(cfg, 3, 7);
      const noise = microNoise(cfg, batch);
      const run = () => {
        m.params.zeroGrads();
        const before = be.memory().liveBytes;
        const r = diffusionLoss(m, batch, noise, { train: true, backward: true, recompute });
        assert.equal(be.memory().liveBytes, before, `the step frees all it allocated${recompute ? ' (recompute)' : ''}`);
        return { loss: r.terms.total, grads: Float64Array.from(be.toArray(m.params.grads)) };
      };
      const plain = run();
      // the CPU has no bf16: stand the parameters' own dtype in for it (same numbers)
      const copies: LayerwiseCopy[] = [];
      m.denoiser.layerwiseWeights = () => {
        const c = new LayerwiseCopy(m.params, 'float64');
        copies.push(c);
        return c;
      };
      const viaCopy = run();
      assert.equal(copies.length, 1);
      assert.throws(() => copies[0]!.get('time_embed.0.weight'), /used after dispose/, 'the loss disposed its copy');
      assert.equal(viaCopy.loss, plain.loss);
      assert.deepEqual([...viaCopy.grads], [...plain.grads]);
      m.dispose();
    }
  } finally {
    be.close();
  }
});
