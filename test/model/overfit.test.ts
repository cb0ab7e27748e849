/** The model can learn: 300 AdamW steps on 4 fixed pairs, and the memory scaling of attention. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CpuBackend } from '../../src/backend/cpu/backend.js';
import { PhiloxStream } from '../../src/backend/philox.js';
import { diffusionLoss, drawNoise, type LossBatch } from '../../src/diffusion/loss.js';
import { UniformSampler } from '../../src/diffusion/timestep.js';
import { presetConfig, type ConfigOverrides } from '../../src/model/config.js';
import { Model } from '../../src/model/model.js';

test('300 AdamW steps on 4 fixed pairs: loss below a tenth of its start, x0_hat rounds to the targets', () => {
  const be = new CpuBackend({ threads: 1 });
  const cfg = presetConfig('tiny', {
    vocabSize: 40, embDim: 16, hidden: 64, layers: 2, heads: 4, maxLen: 16, seqLen: 16, globalTokens: 2,
    dropout: 0, diffusionSteps: 200, timestepSampler: 'uniform', attention: { window: 4 }, ffn: { experts: 2, topK: 1 },
  });
  const model = Model.init(cfg, be, 1);
  // [CLS]=1 src [SEP]=2 trg [SEP] [PAD]=0: 4 pairs whose targets are distinct token strings
  const N = 16;
  const ids = new Int32Array(4 * N);
  const mask = new Int32Array(4 * N);
  const pairs = [
    [[5, 6, 7], [10, 11, 12, 13]],
    [[8, 9], [14, 15, 16]],
    [[20, 21, 22, 23], [24, 25]],
    [[30], [31, 32, 33, 34, 35]],
  ];
  pairs.forEach(([src, trg], b) => {
    const row = [1, ...src!, 2, ...trg!, 2];
    for (let n = 0; n < N; n++) {
      ids[b * N + n] = row[n] ?? 0;
      mask[b * N + n] = n >= src!.length + 2 ? 1 : 0;
    }
  });
  const batch: LossBatch = { inputIds: ids, inputMask: mask, batch: 4, seqLen: N };
  const P = model.params;
  const m = be.zeros([P.total]);
  const v = be.zeros([P.total]);
  const sampler = new UniformSampler(cfg.diffusionSteps);
  const rng = new PhiloxStream(9);
  // the loss measured on 16 fixed noise draws (the training loss of one draw swings with its t)
  const evalLoss = () => {
    const r = new PhiloxStream(1234);
    let s = 0;
    for (let i = 0; i < 16; i++) s += diffusionLoss(model, batch, drawNoise(cfg, model.alphaBar, batch, sampler, r), { train: false, backward: false }).terms.total / 16;
    return s;
  };
  const start = evalLoss();
  for (let step = 1; step <= 300; step++) {
    P.zeroGrads();
    const noise = drawNoise(cfg, model.alphaBar, batch, sampler, rng);
    diffusionLoss(model, batch, noise, { train: true, backward: true });
    be.adamw(P.flat, P.grads, m, v, { lr: 3e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step });
  }
  const end = evalLoss();
  assert.ok(end < start / 10, `loss ${start.toFixed(3)} -> ${end.toFixed(3)}`);
  // at a small timestep, rounding x0_hat to the nearest embedding (argmax of x0 E^T) recovers the targets
  const noise = drawNoise(cfg, model.alphaBar, batch, sampler, new PhiloxStream(10));
  noise.t = [5, 5, 5, 5];
  noise.replaceMask.fill(0);
  const r = diffusionLoss(model, batch, noise, { train: false, backward: false, returnX0: true });
  const x0 = be.fromArray(r.x0!, [4 * N, cfg.embDim]);
  const out = be.empty([4 * N], 'int32');
  be.argmaxDot(out, x0, P.get('word_embeddings.weight'));
  const pred = be.toArray(out);
  let wrong = 0;
  for (let i = 0; i < 4 * N; i++) if (mask[i] && pred[i] !== ids[i]) wrong++;
  assert.equal(wrong, 0, `target tokens not reproduced: ${wrong}`);
  [x0, out, m, v].forEach((t) => t.dispose());
  model.dispose();
  be.close();
});

/** A small model over one sequence of N tokens (zeroed gradients), its batch and its noise, for the memory tests. */
function memoryCase(be: CpuBackend, N: number, over: ConfigOverrides) {
  const cfg = presetConfig('tiny', { vocabSize: 64, embDim: 8, heads: 2, seqLen: N, globalTokens: 2, dropout: 0, diffusionSteps: 100, ...over });
  const model = Model.init(cfg, be, 1);
  model.params.zeroGrads();
  const ids = new Int32Array(N).map((_, i) => 3 + (i % 60));
  const mask = new Int32Array(N).map((_, i) => (i >= 4 ? 1 : 0));
  const batch = { inputIds: ids, inputMask: mask, batch: 1, seqLen: N };
  const noise = drawNoise(cfg, model.alphaBar, batch, new UniformSampler(100), new PhiloxStream(1));
  return { cfg, model, batch, noise };
}

test('activation memory: sliding attention doubles with seqLen; full attention stays linear too (fused)', () => {
  const be = new CpuBackend({ threads: 1 });
  const peak = (kind: 'sliding' | 'full', N: number) => {
    const { model, batch, noise } = memoryCase(be, N, { hidden: 16, layers: 2, maxLen: 2048, attention: { kind, window: 8 }, ffn: { experts: 2, topK: 1 } });
    be.resetPeak();
    const before = be.memory().liveBytes;
    diffusionLoss(model, batch, noise, { train: false, backward: true });
    const act = be.memory().peakBytes - before;
    assert.equal(be.memory().liveBytes, before, 'the step frees everything it allocated');
    model.dispose();
    return act;
  };
  for (const kind of ['sliding', 'full'] as const) {
    const a = peak(kind, 512);
    const b = peak(kind, 1024);
    assert.ok(Math.abs(b / a - 2) < 0.2, `${kind}: peak activation ${a} -> ${b} bytes (x${(b / a).toFixed(2)})`);
  }
  be.close();
});

test('training memory: the backward frees each layer as it goes, so a step peaks near the forward cache, not twice it', () => {
  const be = new CpuBackend({ threads: 1 });
  const N = 256;
  for (const ffn of [{ kind: 'moe' as const, experts: 2, topK: 2 }, { kind: 'dense' as const }]) {
    const { cfg, model, batch, noise } = memoryCase(be, N, { hidden: 32, layers: 6, maxLen: N, attention: { kind: 'sliding', window: 8 }, ffn });
    const before = be.memory().liveBytes;
    // what the forward keeps for the backward (with the experts' activations, as diffusionLoss asks)
    const xt = be.empty([1, N, cfg.embDim]);
    be.randomNormal(xt, 5, 0);
    const cache = model.denoiser.forward(xt, noise.t, { train: true, keepExpertActivations: true });
    const kept = be.memory().liveBytes - before - xt.size * 4;
    cache.dispose();
    xt.dispose();
    be.resetPeak();
    diffusionLoss(model, batch, noise, { train: true, backward: true });
    const step = be.memory().peakBytes - before;
    assert.equal(be.memory().liveBytes, before, 'the step frees everything it allocated');
    // the loss adds its own inputs and head; the backward adds one layer's temporaries at a time
    assert.ok(step < 1.4 * kept, `${ffn.kind}: step peak ${step} bytes against a forward cache of ${kept} (x${(step / kept).toFixed(2)})`);
    model.dispose();
  }
  be.close();
});

test('activation recomputation: the same loss and gradients to the bit, with dropout, for a fraction of the memory', () => {
  const be = new CpuBackend({ threads: 1 });
  const N = 256;
  for (const ffn of [{ kind: 'moe' as const, experts: 3, topK: 2 }, { kind: 'dense' as const }]) {
    const { model, batch, noise } = memoryCase(be, N, { hidden: 32, layers: 6, maxLen: N, dropout: 0.1, attention: { kind: 'sliding', window: 8 }, ffn });
    const run = (recompute: boolean) => {
      model.params.zeroGrads();
      const before = be.memory().liveBytes;
      be.resetPeak();
      const r = diffusionLoss(model, batch, noise, { train: true, rng: { seed: 9, offset: 0 }, backward: true, recompute });
      return { loss: r.terms.total, grads: be.toArray(model.params.grads), peak: be.memory().peakBytes - before };
    };
    const full = run(false);
    const again = run(true);
    assert.equal(again.loss, full.loss, `${ffn.kind}: the loss`);
    assert.deepEqual(again.grads, full.grads, `${ffn.kind}: every gradient`);
    assert.ok(again.peak < 0.6 * full.peak, `${ffn.kind}: peak ${again.peak} bytes recomputed against ${full.peak} (x${(again.peak / full.peak).toFixed(2)})`);
    model.dispose();
  }
  be.close();
});
