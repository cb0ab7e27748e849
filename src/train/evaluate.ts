/**
 * Evaluation during and after training: the validation loss (fixed noise, dropout off) and, on a
 * fixed subset of validation sources, few-step sampling scored by BLEU and ROUGE against all of each
 * source's references.
 */
import { PhiloxStream } from '../backend/philox.js';
import { iterateBatches } from '../data/batches.js';
import { diffusionLoss, drawNoise } from '../diffusion/loss.js';
import { UniformSampler } from '../diffusion/timestep.js';
import { evaluate } from '../eval/index.js';
import type { Model } from '../model/model.js';
import { generate } from '../sample/generate.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { TrainingData } from './data.js';

/** Options of {@link evaluateModel}. */
export interface EvalOptions {
  /** Validation sources scored by sampling (0: loss only). */
  examples: number;
  /** Denoiser calls per sample. */
  steps: number;
  batchSize: number;
  seed: number;
}

/** An evaluation: metrics and a few samples. */
export interface EvalResult {
  metrics: Record<string, number>;
  samples: { src: string; hyp: string; ref: string }[];
}

/** Loss on up to 512 validation sequences, then sampling metrics on `examples` sources. */
export function evaluateModel(model: Model, tok: Tokenizer, data: TrainingData, o: EvalOptions): EvalResult {
  const metrics: Record<string, number> = {};
  const cfg = model.config;
  if (data.valid.length) {
    // uniform timesteps and a fixed stream: the same noise at every evaluation, so curves compare
    const rng = new PhiloxStream(o.seed + 7919);
    const sampler = new UniformSampler(cfg.diffusionSteps);
    let sum = 0;
    let count = 0;
    for (const batch of iterateBatches(data.valid.slice(0, 512), { batchSize: o.batchSize, seqLen: cfg.seqLen, pad: tok.specials.pad })) {
      const noise = drawNoise(cfg, model.alphaBar, batch, sampler, rng);
      const r = diffusionLoss(model, batch, noise, { train: false, backward: false });
      sum += r.terms.total * batch.batch;
      count += batch.batch;
    }
    metrics['loss'] = sum / count;
  }
  const items = data.evalItems.slice(0, o.examples);
  let samples: EvalResult['samples'] = [];
  if (items.length) {
    const out = generate(model, tok, items.map((i) => i.src), { sampler: 'ddim', steps: o.steps, seed: o.seed, batchSize: o.batchSize, truncate: true });
    const hyps = out.map((g) => g.text);
    const m = evaluate(hyps, items.map((i) => i.refs), { metrics: ['bleu', 'sentenceBleu', 'rouge1', 'rouge2', 'rougeL', 'meanLength'] });
    for (const [k, v] of Object.entries(m)) if (typeof v === 'number' && k !== 'sentences') metrics[k] = v;
    samples = items.map((it, i) => ({ src: it.src, hyp: hyps[i]!, ref: it.refs[0]! }));
  }
  return { metrics, samples };
}
