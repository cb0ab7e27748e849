/**
 * A MoE-DiffuSeq model on a backend: its config, parameters, denoiser and noise schedule.
 * Checkpoint loading and saving live in src/io/checkpoint.ts.
 */
import type { Backend, FloatDType } from '../backend/backend.js';
import { alphaBars } from '../diffusion/schedule.js';
import type { ModelConfig } from './config.js';
import { Denoiser } from './denoiser.js';
import { countParams, ParamStore, paramSpecs } from './params.js';

/** The model: owns its parameters (dispose() frees them). */
export class Model {
  readonly params: ParamStore;
  readonly denoiser: Denoiser;
  /** alphaBar_t, t = 0..T-1 (float64). */
  readonly alphaBar: Float64Array;

  constructor(
    readonly config: ModelConfig,
    readonly backend: Backend,
    dtype: FloatDType = 'float32',
  ) {
    this.params = new ParamStore(backend, paramSpecs(config), dtype);
    this.denoiser = new Denoiser(config, this.params);
    this.alphaBar = alphaBars(config.schedule, config.diffusionSteps);
  }

  /** A freshly initialised model (BERT-style init, SPEC's exceptions; deterministic in seed). */
  static init(config: ModelConfig, backend: Backend, seed: number, dtype: FloatDType = 'float32'): Model {
    const m = new Model(config, backend, dtype);
    m.params.initialize(seed);
    return m;
  }

  get dtype(): FloatDType {
    return this.params.dtype;
  }

  /** Parameter counts: all, and those outside the embedding tables. */
  parameterCount(): { total: number; nonEmbedding: number } {
    const total = countParams(this.params.specs);
    const emb = this.params.specs.filter((s) => s.name === 'word_embeddings.weight' || s.name === 'position_embeddings.weight' || s.name === 'global_tokens');
    return { total, nonEmbedding: total - countParams(emb) };
  }

  dispose(): void {
    this.params.dispose();
  }
}
