/** `moe-diffuseq sample`: generate outputs for inputs with a trained model (SPEC section 5). */
import { readFileSync } from 'node:fs';
import { createBackend } from '../../backend/create.js';
import { InputError, UsageError } from '../../errors.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { loadModel } from '../../io/checkpoint.js';
import { PRECISIONS, resolvePrecision } from '../../model/model.js';
import { Progress } from '../../io/progress.js';
import { generate } from '../../sample/generate.js';
import { resolveModelDir } from '../../train/checkpoints.js';
import { defineCommand, required } from '../command.js';

/** Reads inputs: plain lines, or JSONL with a source field (and an optional reference field). */
export function readInputs(file: string, field: string): { src: string[]; ref: (string | undefined)[] } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new InputError(file, undefined, `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const lines = text.split(/\r?\n/);
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  const jsonl = file.endsWith('.jsonl') || file.endsWith('.json');
  const src: string[] = [];
  const ref: (string | undefined)[] = [];
  lines.forEach((l, i) => {
    if (!jsonl) {
      src.push(l);
      ref.push(undefined);
      return;
    }
    if (!l.trim()) return;
    let o: unknown;
    try {
      o = JSON.parse(l);
    } catch (e) {
      throw new InputError(file, i + 1, `not JSON (${(e as Error).message})`);
    }
    const v = (o as Record<string, unknown>)?.[field];
    if (typeof v !== 'string') throw new InputError(file, i + 1, `field '${field}' missing or not a string`, '--field names the input field');
    src.push(v);
    const r = (o as Record<string, unknown>)['trg'];
    ref.push(typeof r === 'string' ? r : undefined);
  });
  if (!src.length) throw new InputError(file, undefined, 'no inputs');
  return { src, ref };
}

export const sampleCommand = defineCommand({
  name: 'sample',
  summary: 'generate outputs with a trained model (DDIM with clamping, or DPM-Solver++; MBR over K candidates)',
  usage: 'sample --model DIR (--input FILE | --text "...") [--sampler ddim|dpm++] [--steps S] [--candidates K] [--out FILE]',
  details: [
    '--model takes a model folder or a run folder (its newest checkpoint). --input is plain text (one',
    'input per line) or JSONL (--field, default "src"; a "trg" field is copied to the output as the',
    'reference). The output is one line per input, or JSONL {"src","hyp","ref"} when --out ends in .jsonl.',
  ].join('\n'),
  options: {
    model: { type: 'string', description: 'model folder or run folder', placeholder: 'DIR' },
    input: { type: 'string', description: 'file of inputs', placeholder: 'FILE' },
    text: { type: 'string', description: 'one input given inline', multiple: true },
    field: { type: 'string', description: 'JSONL field of the input', default: 'src' },
    sampler: { type: 'string', description: 'sampler', choices: ['ddim', 'dpm++'], default: 'ddim' },
    steps: { type: 'int', description: 'denoiser calls', default: 10 },
    clamp: { type: 'string', description: 'clamp x0 to the nearest embedding (default on for ddim, off for dpm++)', choices: ['on', 'off'] },
    eta: { type: 'number', description: 'DDIM eta (0 deterministic)', default: 0 },
    candidates: { type: 'int', description: 'candidates per input, chosen by MBR (sentence-BLEU)', default: 1 },
    seed: { type: 'int', description: 'seed of the starting noise', default: 0 },
    'batch-size': { type: 'int', description: 'inputs per denoiser batch', default: 16 },
    'seq-len': { type: 'int', description: "positions per sequence (default: the model's seqLen)" },
    'max-source': { type: 'int', description: 'most source tokens (default: half of seqLen - 3, as training trims)' },
    truncate: { type: 'boolean', description: 'cut over-long inputs instead of failing' },
    out: { type: 'string', description: 'output file (default: stdout)', placeholder: 'FILE' },
    'show-steps': { type: 'boolean', description: 'print the decoded text of every step (watch the denoising)' },
    device: { type: 'string', description: 'auto (the GPU when found, else the CPU), cpu, cuda or cuda:N', default: 'auto' },
    precision: { type: 'string', description: 'auto (bf16 on a GPU, else float32), float32, or bf16', choices: PRECISIONS, default: 'auto' },
  },
  async run(f) {
    const modelArg = required('sample', 'model', f.model);
    if (!f.input && !f.text) throw new UsageError('sample: give --input FILE or --text "..."', 'moe-diffuseq sample --help');
    if (f.input && f.text) throw new UsageError('sample: give either --input or --text, not both');
    for (const [k, v] of [['steps', f.steps], ['candidates', f.candidates], ['batch-size', f['batch-size']]] as const) if (v !== undefined && v < 1) throw new UsageError(`sample: --${k} must be at least 1`);
    const dir = resolveModelDir(modelArg);
    const inputs = f.input ? readInputs(f.input, f.field ?? 'src') : { src: f.text!, ref: f.text!.map(() => undefined) };
    const be = await createBackend(f.device ?? 'auto');
    try {
      const { model, tokenizer } = loadModel(dir, be);
      model.precision = resolvePrecision(f.precision ?? 'auto', be);
      if (!tokenizer) throw new InputError(dir, undefined, 'the model folder has no tokenizer (tokenizer.json or vocab.txt)');
      if ((f.steps ?? 10) > model.config.diffusionSteps) throw new UsageError(`sample: --steps must be at most diffusionSteps (${model.config.diffusionSteps})`);
      const bar = f['show-steps'] || !f.out ? null : new Progress({ label: 'sample', total: inputs.src.length * (f.candidates ?? 1) });
      const res = generate(model, tokenizer, inputs.src, {
        sampler: (f.sampler ?? 'ddim') as 'ddim' | 'dpm++',
        steps: f.steps ?? 10,
        ...(f.clamp ? { clamp: f.clamp === 'on' } : {}),
        eta: f.eta ?? 0,
        seed: f.seed ?? 0,
        candidates: f.candidates ?? 1,
        batchSize: f['batch-size'] ?? 16,
        truncate: !!f.truncate,
        ...(f['seq-len'] ? { seqLen: f['seq-len'] } : {}),
        ...(f['max-source'] !== undefined ? { maxSource: f['max-source'] } : {}),
        where: f.input ?? '--text',
        ...(bar ? { onProgress: (d: number) => bar.update(d) } : {}),
        ...(f['show-steps']
          ? { onStep: (s: number, t: number, texts: string[], b0: number) => texts.forEach((x, i) => process.stderr.write(`[input ${b0 + i + 1}, step ${s}/${t}] ${x}\n`)) }
          : {}),
      });
      bar?.finish(inputs.src.length * (f.candidates ?? 1));
      const lines = f.out?.endsWith('.jsonl')
        ? res.map((r, i) => JSON.stringify({ src: inputs.src[i], hyp: r.text, ...(inputs.ref[i] !== undefined ? { ref: inputs.ref[i] } : {}), ...(r.candidates ? { candidates: r.candidates } : {}) }))
        : res.map((r) => r.text.replace(/\n/g, ' '));
      const text = lines.join('\n') + '\n';
      if (f.out) writeFileAtomic(f.out, [text]);
      else process.stdout.write(text);
      model.dispose();
    } finally {
      be.close();
    }
    return 0;
  },
});
