/**
 * A MoE-DiffuSeq model on a backend: its config, parameters, denoiser and noise schedule.
 * Checkpoint loading and saving live in src/io/checkpoint.ts.
 */
import type { Backend, FloatDType } from '../backend/backend.js';
import { ConfigError } from '../errors.js';
import { alphaBars } from '../diffusion/schedule.js';
import type { ModelConfig } from './config.js';
import { Denoiser } from './denoiser.js';
import { countParams, ParamStore, paramSpecs } from './params.js';

/** Compute precision: `float32` end to end, or `bf16` (bfloat16 activations and matrix products, float32 parameters). */
export type Precision = 'float32' | 'bf16';
/** Names of the precisions a user may ask for (`auto`: bf16 where the backend holds bfloat16, else float32). */
export const PRECISIONS = ['auto', 'float32', 'bf16'] as const;

/** `auto` made concrete for a backend; an unknown name or bf16 on a backend without it is a ConfigError. */
export function resolvePrecision(p: string, backend: Backend): Precision {
  if (p === 'auto') return backend.supports('bfloat16') ? 'bf16' : 'float32';
  if (p === 'float32') return p;
  if (p === 'bf16') {
    if (!backend.supports('bfloat16')) throw new ConfigError(`precision bf16 needs a GPU (the ${backend.name} backend computes in float32)`);
    return p;
  }
  throw new ConfigError(`unknown precision '${p}' (expected ${PRECISIONS.join(', ')})`);
}

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

  /** The compute precision (default float32); bf16 needs float32 parameters on a backend with bfloat16. */
  get precision(): Precision {
    return this.denoiser.activations === 'bfloat16' ? 'bf16' : 'float32';
  }
  set precision(p: Precision) {
    this.denoiser.activations = p === 'bf16' ? 'bfloat16' : this.dtype;
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
