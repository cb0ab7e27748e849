/** The whole loss (denoiser + diffusion terms) against central finite differences in float64. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CpuBackend } from '../../src/backend/cpu/backend.js';
import { PhiloxStream } from '../../src/backend/philox.js';
import { diffusionLoss, drawNoise, isNormalDraw } from '../../src/diffusion/loss.js';
import { UniformSampler } from '../../src/diffusion/timestep.js';
import type { ConfigOverrides } from '../../src/model/config.js';
import { Model } from '../../src/model/model.js';
import { microBatch, microConfig, microNoise } from './fixtures.js';

const be = new CpuBackend({ threads: 1 });

function check(over: ConfigOverrides, label: string, perParam = 3): void {
  const cfg = microConfig(over);
  const model = Model.init(cfg, be, 17, 'float64');
  const batch = microBatch(cfg, 3, cfg.seqLen);
  const noise = microNoise(cfg, batch);
  const rng = { seed: 77, offset: 0 };
  const loss = () => diffusionLoss(model, batch, noise, { train: true, rng, backward: false }).terms.total;
  model.params.zeroGrads();
  diffusionLoss(model, batch, noise, { train: true, rng, backward: true });
  const h = 1e-6;
  let checked = 0;
  for (const spec of model.params.specs) {
    if (!spec.trainable) continue;
    const v = model.params.get(spec.name);
    const g = be.toArray(model.params.grad(spec.name));
    const base = be.toArray(v);
    for (let j = 0; j < Math.min(perParam, base.length); j++) {
      const i = Math.floor(((j + 0.37) / Math.min(perParam, base.length)) * base.length) % base.length;
      const p = Float64Array.from(base);
      p[i] = base[i]! + h;
      be.write(v, p);
      const lp = loss();
      p[i] = base[i]! - h;
      be.write(v, p);
      const lm = loss();
      be.write(v, base);
      const num = (lp - lm) / (2 * h);
      const diff = Math.abs(num - g[i]!);
      assert.ok(diff <= 1e-7 + 1e-5 * Math.max(Math.abs(num), Math.abs(g[i]!)), `${label}: ${spec.name}[${i}] analytic ${g[i]} numeric ${num}`);
      checked++;
    }
  }
  assert.ok(checked > 40, `${label}: checked ${checked} elements`);
  model.dispose();
}

test('loss gradient: sliding attention, MoE with a shared expert, absorbing state, dropout', () => {
  check({ dropout: 0.2 }, 'moe');
});
test('loss gradient: full attention, dense FFN, absorbing off (DiffuSeq)', () => {
  check({ absorbing: false, attention: { kind: 'full' }, ffn: { kind: 'dense' } }, 'dense');
});
test('loss gradient: capacity factor, dilation, lossMask all, no global tokens', () => {
  check({ globalTokens: 0, lossMask: 'all', attention: { dilation: 2 }, ffn: { capacityFactor: 1.0, sharedExperts: 0 } }, 'capacity');
});
test('loss gradient: bias balancing, cosine schedule, top-1 of one expert', () => {
  check({ schedule: 'cosine', ffn: { balance: 'bias', experts: 1, topK: 1 } }, 'bias');
});

test('noise by reference: drawNoise leaves the normals as stream ranges, and the loss draws them to the same values', () => {
  for (const dtype of ['float32', 'float64'] as const) {
    const cfg = microConfig({});
    const model = Model.init(cfg, be, 3, dtype);
    const batch = microBatch(cfg, 3, cfg.seqLen);
    const byRef = drawNoise(cfg, model.alphaBar, batch, new UniformSampler(cfg.diffusionSteps), new PhiloxStream(11, 8));
    assert.ok(isNormalDraw(byRef.eps0) && isNormalDraw(byRef.eps), 'drawNoise returns ranges');
    // the same draw as values: what rng.normal() gives for the same counters
    const rng = new PhiloxStream(11, 8);
    new UniformSampler(cfg.diffusionSteps).sample(3, rng);
    const n = 3 * cfg.seqLen * cfg.embDim;
    const byValue = { ...byRef, eps0: rng.normal(n), eps: rng.normal(n) };
    const run = (noise: typeof byRef) => {
      model.params.zeroGrads();
      const r = diffusionLoss(model, batch, noise, { train: true, backward: true });
      return { loss: r.terms.total, grads: be.toArray(model.params.grads) };
    };
    const a = run(byRef);
    const b = run(byValue);
    assert.equal(a.loss, b.loss, `${dtype}: the loss is the same to the bit`);
    assert.deepEqual(a.grads, b.grads, `${dtype}: the gradients are the same to the bit`);
    model.dispose();
  }
  const cfg = microConfig({});
  const model = Model.init(cfg, be, 3);
  const batch = microBatch(cfg, 1, cfg.seqLen);
  const bad = { ...microNoise(cfg, batch), eps: { seed: -1, offset: 0 } };
  assert.throws(() => diffusionLoss(model, batch, bad, { train: false, backward: false }), /eps: seed and offset must be non-negative/);
  model.dispose();
});
