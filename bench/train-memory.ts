/**
 * What one training step of `base` and `diffuseq-base` keeps in memory and costs on the host, on
 * the CPU (`node dist/bench/train-memory.js`; any machine, a few minutes on two cores):
 *   - the peak tensor bytes of one training step (loss forward + backward) above the model's own
 *     weights and gradients, at one sequence of --n tokens (default 512), with and without
 *     activation recomputation, and the step's wall time (the backend's counter, float32);
 *   - the host time of drawNoise for a 16 x 2048 batch (what the trainer pays every step before
 *     the device sees the batch).
 * The loss and the squared gradient norm are printed with each memory row: recomputation must not
 * change them. Writes bench/results/train-memory.json (--out).
 * It uses only the library's public entry points, so the same file measures an older checkout.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { createBackend } from '../src/backend/create.js';
import { PhiloxStream } from '../src/backend/philox.js';
import { diffusionLoss, drawNoise } from '../src/diffusion/loss.js';
import { UniformSampler } from '../src/diffusion/timestep.js';
import { presetConfig } from '../src/model/config.js';
import { Model } from '../src/model/model.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : def;
}

async function main(): Promise<void> {
  const N = Number(arg('n', '512'));
  const out = arg('out', 'bench/results/train-memory.json');
  const be = await createBackend(arg('device', 'cpu'));
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const rows: Record<string, unknown>[] = [];
  for (const name of ['base', 'diffuseq-base']) {
    for (const recompute of [false, true]) {
      const cfg = presetConfig(name, { seqLen: N, maxLen: N, dropout: 0, timestepSampler: 'uniform' });
      const model = Model.init(cfg, be, 0);
      const rng = new PhiloxStream(7);
      const ids = new Int32Array(N);
      const mask = new Int32Array(N);
      for (let n = 0; n < N; n++) {
        ids[n] = 1000 + rng.int(20000);
        mask[n] = n >= N / 2 ? 1 : 0;
      }
      const batch = { inputIds: ids, inputMask: mask, batch: 1, seqLen: N };
      const noise = drawNoise(cfg, model.alphaBar, batch, new UniformSampler(cfg.diffusionSteps), new PhiloxStream(3));
      model.params.zeroGrads();
      const before = be.memory().liveBytes;
      be.resetPeak();
      const t0 = performance.now();
      // a variable, not a literal: an older checkout's LossOptions has no `recompute` (ignored there)
      const opts = { train: true, backward: true, recompute };
      const r = diffusionLoss(model, batch, noise, opts);
      be.synchronize();
      const stepMs = performance.now() - t0;
      const peakMiB = (be.memory().peakBytes - before) / 2 ** 20;
      const gradSq = be.sumSquares(model.params.grads);
      rows.push({ item: 'memory', config: name, N, recompute, peakAboveWeightsMiB: peakMiB, stepMs, loss: r.terms.total, gradSq });
      log(`${name} N=${N}${recompute ? ' recomputed' : ''}: peak above the weights ${peakMiB.toFixed(1)} MiB, step ${stepMs.toFixed(0)} ms, loss ${r.terms.total.toFixed(6)}, |grad|^2 ${gradSq.toExponential(8)}`);
      model.dispose();
    }
  }
  // drawNoise on the host for the GPU benchmark's batch
  const cfg = presetConfig('base', { seqLen: 2048, maxLen: 2048 });
  const ab = new Float64Array(cfg.diffusionSteps).map((_, i) => 1 - i / cfg.diffusionSteps);
  const big = { inputIds: new Int32Array(16 * 2048).fill(1000), inputMask: new Int32Array(16 * 2048).fill(1), batch: 16, seqLen: 2048 };
  const ms: number[] = [];
  for (let k = 0; k < 3; k++) {
    const t0 = performance.now();
    drawNoise(cfg, ab, big, new UniformSampler(cfg.diffusionSteps), new PhiloxStream(k));
    ms.push(performance.now() - t0);
  }
  const med = [...ms].sort((a, b) => a - b)[1]!;
  rows.push({ item: 'drawNoise', B: 16, N: 2048, msMedian: med });
  log(`drawNoise 16x2048 on the host: ${med.toFixed(1)} ms (median of 3)`);
  const device = be.describe();
  be.close();
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ device, date: new Date().toISOString(), rows }, null, 2) + '\n');
}

await main();
