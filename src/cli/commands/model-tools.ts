/** `init` (write a freshly initialised model folder) and `check-loss` (evaluate SPEC's loss on a case). */
import { readFileSync } from 'node:fs';
import { createBackend } from '../../backend/create.js';
import { parseLossCase } from '../../diffusion/case.js';
import { diffusionLoss } from '../../diffusion/loss.js';
import { InputError } from '../../errors.js';
import { loadModel, saveModel } from '../../io/checkpoint.js';
import { PRESET_NAMES, presetConfig } from '../../model/config.js';
import { Model } from '../../model/model.js';
import { defaultTokenizer, loadTokenizer } from '../../tokenizer/index.js';
import { defineCommand, required } from '../command.js';

export const initCommand = defineCommand({
  name: 'init',
  summary: 'write a freshly initialised model folder (config.json, model.safetensors, tokenizer)',
  usage: 'init --preset NAME --out DIR [--seed N] [--tokenizer DIR]',
  options: {
    preset: { type: 'string', description: `model preset: ${PRESET_NAMES.join(', ')}`, choices: PRESET_NAMES, placeholder: 'NAME' },
    out: { type: 'string', description: 'folder to write', placeholder: 'DIR' },
    seed: { type: 'int', description: 'initialisation seed', default: 0 },
    tokenizer: { type: 'string', description: 'tokenizer folder or tokenizer.json (sets vocabSize)', placeholder: 'PATH', default: 'bundled bert-base-uncased' },
  },
  async run(o) {
    const preset = required('init', 'preset', o.preset);
    const out = required('init', 'out', o.out);
    const tok = o.tokenizer ? loadTokenizer(o.tokenizer) : defaultTokenizer();
    const cfg = presetConfig(preset, { vocabSize: tok.vocabSize });
    const be = await createBackend('cpu');
    try {
      const model = Model.init(cfg, be, o.seed ?? 0);
      saveModel(out, model, { tokenizer: tok });
      const n = model.parameterCount();
      process.stdout.write(`wrote ${out}: preset ${preset}, ${(n.total / 1e6).toFixed(2)}M parameters (${(n.nonEmbedding / 1e6).toFixed(2)}M outside the embeddings)\n`);
      model.dispose();
    } finally {
      be.close();
    }
    return 0;
  },
});

export const checkLossCommand = defineCommand({
  name: 'check-loss',
  summary: "evaluate SPEC.md's loss on a JSON case with all randomness given (dropout off) and print its terms",
  usage: 'check-loss --model DIR --case FILE [--dtype float32|float64]',
  details: [
    'The case: {"inputIds": int[B][N], "inputMask": int[B][N], "t": int[B], "eps0": float[B][N][e],',
    '"eps": float[B][N][e], "replaceMask": int[B][N], "weights": float[B] (optional, default 1)}.',
    'Prints JSON {"total", "mse", "tT", "nll", "aux", "z", "mNorm", "x0Hat"}: mse, tT and nll are',
    'mean_b(w_b term_b); mNorm is ||m||_2; x0Hat is the denoiser output [B][N][e].',
  ].join('\n'),
  options: {
    model: { type: 'string', description: 'model folder', placeholder: 'DIR' },
    case: { type: 'string', description: 'JSON case file', placeholder: 'FILE' },
    dtype: { type: 'string', description: 'compute dtype (float64 on the CPU only)', choices: ['float32', 'float64'], default: 'float32' },
  },
  async run(o) {
    const dir = required('check-loss', 'model', o.model);
    const file = required('check-loss', 'case', o.case);
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new InputError(file, undefined, err.code ? `cannot read (${err.code})` : `invalid JSON (${err.message})`);
    }
    const be = await createBackend('cpu');
    try {
      const { model } = loadModel(dir, be, { dtype: (o.dtype as 'float32' | 'float64' | undefined) ?? 'float32', noTokenizer: true });
      const { batch, noise } = parseLossCase(raw, file, model.config);
      const r = diffusionLoss(model, batch, noise, { train: false, backward: false, returnX0: true });
      const { B, N, e } = { B: batch.batch, N: batch.seqLen, e: model.config.embDim };
      const x0 = r.x0!;
      const x0Hat = Array.from({ length: B }, (_, b) => Array.from({ length: N }, (_, n) => Array.from(x0.subarray((b * N + n) * e, (b * N + n + 1) * e))));
      const { total, mse, tT, nll, aux, z, mNorm } = r.terms;
      process.stdout.write(JSON.stringify({ total, mse, tT, nll, aux, z, mNorm, x0Hat }) + '\n');
      model.dispose();
    } finally {
      be.close();
    }
    return 0;
  },
});
