/** Small configs and deterministic inputs for the model tests. */
import { PhiloxStream } from '../../src/backend/philox.js';
import { presetConfig, type ConfigOverrides, type ModelConfig } from '../../src/model/config.js';
import type { LossBatch, LossNoise } from '../../src/diffusion/loss.js';
import type { Backend, Tensor } from '../../src/backend/backend.js';

/** A model small enough for float64 finite differences, every feature on. */
export function microConfig(over: ConfigOverrides = {}): ModelConfig {
  return presetConfig('tiny', {
    vocabSize: 11,
    embDim: 4,
    hidden: 8,
    layers: 2,
    heads: 2,
    maxLen: 9,
    seqLen: 7,
    globalTokens: 2,
    diffusionSteps: 50,
    dropout: 0,
    ...over,
    attention: { window: 2, ...(over.attention ?? {}) },
    ffn: { experts: 3, topK: 2, expertHidden: 6, sharedExperts: 1, ...(over.ffn ?? {}) },
  });
}

/** A batch of B sequences of length N: [CLS]=1 src [SEP]=2 trg [SEP] [PAD]=0 ..., source length varies. */
export function microBatch(cfg: ModelConfig, B: number, N: number, seed = 5): LossBatch {
  const rng = new PhiloxStream(seed);
  const ids = new Int32Array(B * N);
  const mask = new Int32Array(B * N);
  for (let b = 0; b < B; b++) {
    const srcLen = 1 + (b % 2);
    const trgLen = 2 + (b % 3);
    const row = [1, ...Array.from({ length: srcLen }, () => 3 + rng.int(cfg.vocabSize - 3)), 2];
    const srcEnd = row.length;
    row.push(...Array.from({ length: trgLen }, () => 3 + rng.int(cfg.vocabSize - 3)), 2);
    while (row.length < N) row.push(0);
    for (let n = 0; n < N; n++) {
      ids[b * N + n] = row[n]!;
      mask[b * N + n] = n >= srcEnd ? 1 : 0;
    }
  }
  return { inputIds: ids, inputMask: mask, batch: B, seqLen: N };
}

/** Fixed noise, with t = 0 for the first example (the E[w] target) and replacements where allowed; the normals as values. */
export function microNoise(cfg: ModelConfig, batch: LossBatch, seed = 6): LossNoise & { eps0: Float64Array; eps: Float64Array } {
  const { batch: B, seqLen: N } = batch;
  const rng = new PhiloxStream(seed);
  const t = Array.from({ length: B }, (_, b) => (b === 0 ? 0 : 1 + rng.int(cfg.diffusionSteps - 1)));
  const replaceMask = new Int32Array(B * N);
  const u = rng.uniform(B * N);
  for (let i = 0; i < B * N; i++) replaceMask[i] = cfg.absorbing && batch.inputMask[i] && u[i]! < 0.3 ? 1 : 0;
  return { t, eps0: rng.normal(B * N * cfg.embDim), eps: rng.normal(B * N * cfg.embDim), replaceMask, weights: Array.from({ length: B }, (_, b) => 0.5 + b * 0.25) };
}

/**
 * A denoiser's input x_t and an upstream gradient dx0 for `cfg`, both [2, 6, embDim] float64
 * standard normals of the backend's stream (seeds `seed` and `seed + 1`).
 */
export function microDenoiserInputs(be: Backend, cfg: ModelConfig, seed: number): { xt: Tensor; dx0: Tensor } {
  const xt = be.empty([2, 6, cfg.embDim], 'float64');
  be.randomNormal(xt, seed, 0);
  const dx0 = be.empty([2, 6, cfg.embDim], 'float64');
  be.randomNormal(dx0, seed + 1, 0);
  return { xt, dx0 };
}
