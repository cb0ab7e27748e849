/**
 * The library's one-call entry for using a trained model: `await load(dir)` returns the model with its
 * tokenizer and backend, and `sample(inputs)` turns texts into outputs (SPEC section 5).
 */
import type { Backend } from '../backend/backend.js';
import { createBackend } from '../backend/create.js';
import { CheckpointError } from '../errors.js';
import { loadModel } from '../io/checkpoint.js';
import { resolvePrecision, type Model } from '../model/model.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { resolveModelDir } from '../train/checkpoints.js';
import { generate, type GenerateOptions, type Generated } from './generate.js';
import { SamplingGraphs } from './sampler.js';

/** Options of {@link load}. */
export interface LoadOptions {
  /** `auto` (default: the GPU when usable, else the CPU), `cpu`, `cuda` or `cuda:N`. */
  device?: string;
  /** `auto` (default: bf16 on a GPU, float32 on the CPU), `float32` or `bf16`. */
  precision?: string;
}

/** A loaded model ready to sample. Call dispose() to free its memory and threads. */
export interface LoadedDiffusionModel {
  readonly model: Model;
  readonly tokenizer: Tokenizer;
  readonly backend: Backend;
  /** The folder it was loaded from (a run folder resolves to its newest checkpoint). */
  readonly dir: string;
  /**
   * Generates one output per input text (defaults: DDIM, 10 steps, seed 0). On a GPU the denoiser
   * calls recorded in one call are kept and replayed by the next calls of the same batch shape,
   * and the weights' bfloat16 copy made by the first call serves them all: a change to `model`'s
   * parameters after the first call is not seen (load the model again).
   */
  sample(inputs: readonly string[], opts?: Partial<GenerateOptions>): Generated[];
  dispose(): void;
}

/** Loads a model folder (or a run folder's newest checkpoint) onto the device `opts.device` names. */
export async function load(dir: string, opts: LoadOptions = {}): Promise<LoadedDiffusionModel> {
  const resolved = resolveModelDir(dir);
  const backend = await createBackend(opts.device ?? 'auto');
  try {
    const { model, tokenizer } = loadModel(resolved, backend);
    model.precision = resolvePrecision(opts.precision ?? 'auto', backend);
    if (!tokenizer) throw new CheckpointError(`${resolved}: the model folder has no tokenizer (tokenizer.json or vocab.txt)`);
    // a server's repeated sample() calls replay the denoiser calls recorded by the first, with the
    // weights converted to bf16 by the first (GPU only; MOE_DIFFUSEQ_GRAPHS=0: plain calls); freed
    // with the model
    const graphs = backend.capture ? SamplingGraphs.unlessDisabled({ fixedWeights: true }) : null;
    return {
      model,
      tokenizer,
      backend,
      dir: resolved,
      sample: (inputs, o = {}) => generate(model, tokenizer, inputs, { sampler: 'ddim', steps: 10, seed: 0, ...(graphs ? { graphs } : {}), ...o }),
      dispose: () => {
        graphs?.dispose();
        model.dispose();
        backend.close();
      },
    };
  } catch (e) {
    backend.close();
    throw e;
  }
}
