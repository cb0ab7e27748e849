/**
 * The whole model on the GPU against the CPU in float32 (issue: the CUDA backend): the `base` config's
 * loss and gradients, and 300 steps of training on the `tiny` preset following the CPU's loss curve.
 * Skips (with the reason) where no CUDA GPU is found.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { CpuBackend } from '../../src/backend/cpu/backend.js';
import { createBackend } from '../../src/backend/create.js';
import { CudaBackend } from '../../src/backend/cuda/backend.js';
import { probeCuda } from '../../src/backend/cuda/probe.js';
import { diffusionLoss } from '../../src/diffusion/loss.js';
import { presetConfig } from '../../src/model/config.js';
import { Model } from '../../src/model/model.js';
import { train } from '../../src/train/trainer.js';
import { withEnv } from '../helpers.js';
import { microBatch, microNoise } from '../model/fixtures.js';
import { DATA, TOKENIZER, quiet, tempDir } from '../train/fixtures.js';

const probe = probeCuda();
const skip: string | false = probe.available ? false : `no CUDA GPU on this machine: ${probe.reason}`;

/**
 * The parameters whose gradients differ between two runs, bit for bit, except those named in
 * `atomic` (written by atomicAdd, whose order and so last bits change from run to run), which are
 * held to 1e-6 of their largest gradient: there a race would show as a large difference.
 */
function differingGradients(a: { g: ArrayLike<number>; spans: { name: string; off: number; n: number }[] }, b: { g: ArrayLike<number> }, atomic: ReadonlySet<string>): string[] {
  const bad: string[] = [];
  for (const s of a.spans) {
    let maxAbs = 0;
    let maxDiff = 0;
    let differ = 0;
    for (let i = s.off; i < s.off + s.n; i++) {
      const d = Math.abs(a.g[i]! - b.g[i]!);
      maxAbs = Math.max(maxAbs, Math.abs(b.g[i]!));
      if (d !== 0 || Number.isNaN(d)) differ++;
      if (!(d <= maxDiff)) maxDiff = d;
    }
    const ok = atomic.has(s.name) ? maxDiff <= 1e-6 * maxAbs : differ === 0;
    if (!ok) bad.push(`${s.name}: ${differ} of ${s.n} differ, largest ${maxDiff} (largest gradient ${maxAbs})`);
  }
  return bad;
}
const spansOf = (m: Model) => m.params.specs.map((s) => ({ name: s.name, off: m.params.offsets.get(s.name)!, n: s.shape.reduce((x, y) => x * y, 1) }));

test('base config: loss and gradients on the GPU equal the CPU (float32)', { skip }, async () => {
  const cfg = presetConfig('base', { dropout: 0, seqLen: 48, maxLen: 48 });
  const gpu = await createBackend('cuda');
  const cpu = new CpuBackend();
  const batch = microBatch(cfg, 2, 48, 5);
  const noise = microNoise(cfg, batch, 6);
  const run = (be: CpuBackend | typeof gpu) => {
    const m = Model.init(cfg, be, 1);
    m.params.zeroGrads();
    const r = diffusionLoss(m, batch, noise, { train: false, backward: true });
    const g = be.toArray(m.params.grads);
    m.dispose();
    return { loss: r.terms.total, g };
  };
  const a = run(gpu);
  const b = run(cpu);
  assert.ok(Math.abs(a.loss - b.loss) <= 1e-5 * Math.abs(b.loss), `loss ${a.loss} vs ${b.loss}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.g.length; i++) {
    num += (a.g[i]! - b.g[i]!) ** 2;
    den += b.g[i]! ** 2;
  }
  const rel = Math.sqrt(num / den);
  process.stderr.write(`base: loss ${a.loss} vs ${b.loss}; gradient relative error ${rel.toExponential(2)} over ${b.g.length} parameters\n`);
  assert.ok(rel < 1e-4, `gradient relative error ${rel}`);
  gpu.close();
  cpu.close();
});

test('programmatic dependent launch changes no number: base loss and gradients with MOE_DIFFUSEQ_PDL=0 and with it on (bf16)', { skip }, () => {
  const cfg = presetConfig('base', { dropout: 0, seqLen: 96, maxLen: 96 });
  const batch = microBatch(cfg, 3, 96, 7);
  const noise = microNoise(cfg, batch, 8);
  const run = (pdl: boolean) => {
    const be = withEnv('MOE_DIFFUSEQ_PDL', pdl ? undefined : '0', () => new CudaBackend());
    try {
      const m = Model.init(cfg, be, 2);
      m.precision = 'bf16';
      m.params.zeroGrads();
      const r = diffusionLoss(m, batch, noise, { train: false, backward: true });
      const g = be.toArray(m.params.grads);
      m.dispose();
      const spans = spansOf(m);
      return { loss: r.terms.total, g, spans, described: be.describe() };
    } finally {
      be.close();
    }
  };
  const on = run(true);
  const off = run(false);
  assert.ok(!off.described.includes('programmatic'), off.described);
  process.stderr.write(`pdl: ${on.described}\n`);
  assert.equal(on.loss, off.loss);
  assert.deepEqual(differingGradients(on, off, new Set(['word_embeddings.weight', 'position_embeddings.weight'])), []);
});

test('the bf16 weights cast once, or layer by layer, for a forward and its backward change no number (ForwardOptions.weights against the per-product rounding)', { skip }, () => {
  const cfg = presetConfig('base', { dropout: 0, seqLen: 96, maxLen: 96 });
  const be = new CudaBackend();
  try {
    const m = Model.init(cfg, be, 3);
    m.precision = 'bf16';
    const [B, N, e] = [2, 96, cfg.embDim];
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
    const xt = be.fromArray(Float32Array.from({ length: B * N * e }, rnd), [B, N, e]);
    const dx0 = be.fromArray(Float32Array.from({ length: B * N * e }, () => 1e-3 * rnd()), [B, N, e]);
    const run = (cast: 'whole' | 'layerwise' | null) => {
      m.params.zeroGrads();
      const w = cast === 'whole' ? m.denoiser.castWeights() : cast === 'layerwise' ? m.denoiser.layerwiseWeights() : null;
      if (cast) assert.ok(w, 'bf16 activations give a cast');
      const cache = m.denoiser.forward(xt, [5, 700], { train: false, ...(w ? { weights: w } : {}) });
      const x0 = be.toArray(cache.x0);
      const dxt = m.denoiser.backward(cache, dx0, 0.01, 0.001);
      const r = { x0, dxt: be.toArray(dxt), g: be.toArray(m.params.grads), spans: spansOf(m) };
      dxt.dispose();
      cache.dispose();
      w?.dispose();
      return r;
    };
    const b = run(null);
    for (const kind of ['whole', 'layerwise'] as const) {
      const a = run(kind);
      assert.deepEqual(a.x0, b.x0, kind);
      assert.deepEqual(a.dxt, b.dxt, kind);
      assert.deepEqual(differingGradients(a, b, new Set()), [], kind);
    }
    m.dispose();
    xt.dispose();
    dx0.dispose();
  } finally {
    be.close();
  }
});

test('tiny preset: 300 training steps on the GPU follow the CPU loss curve', { skip }, async () => {
  const t = tempDir();
  try {
    const opts = (device: string, out: string) => ({
      data: DATA, out, device, precision: 'float32', tokenizer: TOKENIZER, preset: 'tiny', model: { seqLen: 64, maxLen: 64 },
      maxSteps: 300, batchSize: 16, lr: 1e-3, warmup: 20, logEvery: 10, saveEvery: 300, evalExamples: 0, seed: 4,
    });
    await train(opts('cuda', join(t.dir, 'gpu')), quiet);
    await train(opts('cpu', join(t.dir, 'cpu')), quiet);
    const curve = (dir: string) => readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { split: string; loss: number }).filter((r) => r.split === 'train').map((r) => r.loss);
    const g = curve(join(t.dir, 'gpu'));
    const c = curve(join(t.dir, 'cpu'));
    assert.equal(g.length, 30);
    const diffs = g.map((x, i) => Math.abs(x - c[i]!) / c[i]!);
    process.stderr.write(`tiny 300 steps: loss ${c[0]!.toFixed(4)} -> ${c[29]!.toFixed(4)} (cpu), ${g[0]!.toFixed(4)} -> ${g[29]!.toFixed(4)} (gpu); largest relative gap ${Math.max(...diffs).toExponential(2)}\n`);
    assert.ok(c[29]! < 0.6 * c[0]!, 'the loss falls');
    assert.ok(Math.max(...diffs) < 0.02, `curves differ by up to ${Math.max(...diffs)}`);
  } finally {
    t.done();
  }
});
