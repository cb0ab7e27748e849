/** SPEC equivalences and hand-computed loss terms (issue: the model and its diffusion objective). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CpuBackend } from '../../src/backend/cpu/backend.js';
import { diffusionLoss } from '../../src/diffusion/loss.js';
import { alphaBars } from '../../src/diffusion/schedule.js';
import { Model } from '../../src/model/model.js';
import { microBatch, microConfig, microNoise } from './fixtures.js';

const be = new CpuBackend({ threads: 1 });
const eval0 = { train: false, backward: false } as const;

test('alphaBar_0 is 0.98536 for the sqrt schedule with T = 2000 (SPEC 3)', () => {
  assert.ok(Math.abs(alphaBars('sqrt', 2000)[0]! - 0.98536) < 5e-6);
  const lin = alphaBars('linear', 1000);
  assert.ok(Math.abs(lin[0]! - (1 - 1e-4)) < 1e-15);
  const cos = alphaBars('cosine', 2000);
  assert.ok(cos.every((v, i) => i === 0 || v < cos[i - 1]!), 'decreasing');
});

test('sliding attention with window >= seqLen gives the same loss as full attention', () => {
  const cfgS = microConfig({ attention: { window: 20 } });
  const cfgF = microConfig({ attention: { kind: 'full' } });
  const a = Model.init(cfgS, be, 3, 'float64');
  const b = Model.init(cfgF, be, 3, 'float64');
  const batch = microBatch(cfgS, 3, 7);
  const noise = microNoise(cfgS, batch);
  const la = diffusionLoss(a, batch, noise, eval0).terms.total;
  const lb = diffusionLoss(b, batch, noise, eval0).terms.total;
  assert.ok(Math.abs(la - lb) < 1e-12 * Math.abs(lb), `${la} vs ${lb}`);
  a.dispose();
  b.dispose();
});

test('MoE whose experts are identical gives the dense FFN loss (same weights)', () => {
  const d = 8;
  const moe = Model.init(microConfig({ ffn: { kind: 'moe', experts: 3, topK: 2, expertHidden: 4 * d, sharedExperts: 0, auxWeight: 0, zWeight: 0 } }), be, 4, 'float64');
  const dense = Model.init(microConfig({ ffn: { kind: 'dense' } }), be, 4, 'float64');
  // copy every shared parameter, and the dense FFN into each expert
  for (const s of dense.params.specs) {
    const v = be.toArray(dense.params.get(s.name));
    if (moe.params.has(s.name)) be.write(moe.params.get(s.name), v);
    const m = /^layers\.(\d+)\.ffn\.(fc[12])\.(weight|bias)$/.exec(s.name);
    if (m) {
      const rep = new Float64Array(v.length * 3);
      for (let e = 0; e < 3; e++) rep.set(v, e * v.length);
      be.write(moe.params.get(`layers.${m[1]}.ffn.experts.${m[2]}.${m[3]}`), rep);
    }
  }
  const batch = microBatch(moe.config, 2, 7);
  const noise = microNoise(moe.config, batch);
  const a = diffusionLoss(moe, batch, noise, { ...eval0, returnX0: true });
  const b = diffusionLoss(dense, batch, noise, { ...eval0, returnX0: true });
  for (let i = 0; i < b.x0!.length; i++) assert.ok(Math.abs(a.x0![i]! - b.x0![i]!) < 1e-12);
  assert.ok(Math.abs(a.terms.total - b.terms.total) < 1e-12);
  moe.dispose();
  dense.dispose();
});

test('absorbing off equals absorbing on with m = 0 and nothing replaced (plain DiffuSeq noising)', () => {
  const off = Model.init(microConfig({ absorbing: false }), be, 5, 'float64');
  const on = Model.init(microConfig({ absorbing: true }), be, 5, 'float64');
  for (const s of off.params.specs) be.write(on.params.get(s.name), be.toArray(off.params.get(s.name)));
  be.fill(on.params.get('mean_embed'), 0);
  const batch = microBatch(off.config, 3, 7);
  const noise = { ...microNoise(off.config, batch), replaceMask: new Int32Array(21) };
  const a = diffusionLoss(off, batch, noise, eval0).terms;
  const b = diffusionLoss(on, batch, noise, eval0).terms;
  assert.equal(b.mNorm, 0);
  assert.ok(Math.abs(a.total - b.total) < 1e-12, `${a.total} vs ${b.total}`);
  // and replacement changes the loss when m is not 0
  const third = Model.init(microConfig({ absorbing: true }), be, 5, 'float64');
  const withRep = diffusionLoss(third, batch, microNoise(off.config, batch), eval0).terms;
  assert.notEqual(withRep.total, b.total);
  third.dispose();
  off.dispose();
  on.dispose();
});

for (const lossMask of ['target', 'all'] as const) {
  test(`loss terms by hand from x0_hat, lossMask ${lossMask}`, () => {
    const cfg = microConfig({ lossMask });
    const model = Model.init(cfg, be, 6, 'float64');
    const batch = microBatch(cfg, 3, 7);
    const noise = microNoise(cfg, batch);
    const r = diffusionLoss(model, batch, noise, { ...eval0, returnX0: true });
    const { batch: B, seqLen: N } = batch;
    const { embDim: e, vocabSize: V, diffusionSteps: T } = cfg;
    const E = be.toArray(model.params.get('word_embeddings.weight'));
    const ab = alphaBars(cfg.schedule, T);
    let mse = 0, tT = 0, nll = 0;
    for (let b = 0; b < B; b++) {
      let cnt = 0, sm = 0, st = 0, sn = 0;
      for (let n = 0; n < N; n++) {
        const i = b * N + n;
        const w = lossMask === 'all' ? 1 : batch.inputMask[i]!;
        if (!w) continue;
        cnt++;
        const id = batch.inputIds[i]!;
        const z0 = Array.from({ length: e }, (_, c) => E[id * e + c]! + Math.sqrt(1 - ab[0]!) * noise.eps0[i * e + c]!);
        const target = noise.t[b] === 0 ? Array.from({ length: e }, (_, c) => E[id * e + c]!) : z0;
        sm += target.reduce((s, v, c) => s + (v - r.x0![i * e + c]!) ** 2, 0) / e;
        st += z0.reduce((s, v) => s + ab[T - 1]! * v * v, 0) / e;
        const logits = Array.from({ length: V }, (_, v) => z0.reduce((s, x, c) => s + x * E[v * e + c]!, 0));
        const mx = Math.max(...logits);
        sn += mx + Math.log(logits.reduce((s, l) => s + Math.exp(l - mx), 0)) - logits[id]!;
      }
      mse += (noise.weights[b]! * sm) / cnt / B;
      tT += (noise.weights[b]! * st) / cnt / B;
      nll += (noise.weights[b]! * sn) / cnt / B;
    }
    const m = be.toArray(model.params.get('mean_embed'));
    const mNorm = Math.sqrt(Array.from(m).reduce((s, v) => s + v * v, 0));
    for (const [k, v] of Object.entries({ mse, tT, nll, mNorm })) assert.ok(Math.abs((r.terms as unknown as Record<string, number>)[k]! - v) < 1e-12 * Math.max(1, Math.abs(v)), `${k}: ${(r.terms as unknown as Record<string, number>)[k]} vs ${v}`);
    const total = mse + tT + nll + cfg.ffn.auxWeight * r.terms.aux + cfg.ffn.zWeight * r.terms.z + 0.01 * mNorm;
    assert.ok(Math.abs(r.terms.total - total) < 1e-12 * total);
    assert.ok(r.terms.aux > 0.5 && r.terms.z > 0, 'MoE terms present');
    model.dispose();
  });
}

test('float32 and float64 models give the same loss to float32 precision', () => {
  const cfg = microConfig();
  const a = Model.init(cfg, be, 8, 'float64');
  const b = Model.init(cfg, be, 8, 'float32');
  const batch = microBatch(cfg, 3, 7);
  const noise = microNoise(cfg, batch);
  const la = diffusionLoss(a, batch, noise, eval0).terms.total;
  const lb = diffusionLoss(b, batch, noise, eval0).terms.total;
  assert.ok(Math.abs(la - lb) < 2e-5 * Math.abs(la), `${la} vs ${lb}`);
  a.dispose();
  b.dispose();
});
