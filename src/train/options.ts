/**
 * Training options: defaults, validation, and the JSON config file that can set every flag
 * (`moe-diffuseq train --config run.json`; flags given on the command line win).
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.js';
import type { ConfigOverrides } from '../model/config.js';
import { PRESET_NAMES } from '../model/config.js';
import { PRECISIONS } from '../model/model.js';

/** Everything a training run needs. */
export interface TrainOptions {
  /** Training data: a JSONL file of pairs or documents, a text file, or a folder of text files (.gz too). */
  data: string;
  /** Validation data (same formats); default: `validFraction` of `data`, split off by `seed`. */
  valid?: string;
  /** Run folder: checkpoints, metrics.jsonl. */
  out: string;
  /** Model preset (tiny, base, diffuseq-base, long). */
  preset: string;
  /** Model config overrides (any SPEC field, attention/ffn nested). */
  model?: ConfigOverrides;
  /** Tokenizer folder or file; default the bundled bert-base-uncased. */
  tokenizer?: string;
  /** `seq2seq` (src -> trg pairs) or `lm` (unconditional documents, chunked with `overlap`). */
  task: 'seq2seq' | 'lm';
  /** JSONL field names. */
  srcField: string;
  trgField: string;
  textField: string;
  /** Fraction of `data` held out for validation when `valid` is not given. */
  validFraction: number;
  /** Tokens shared by consecutive chunks of a long document (task lm). */
  overlap: number;
  /** Pad each batch only to the smallest multiple of this that holds its longest example (0 = pad to seqLen). */
  bucket: number;
  maxSteps: number;
  /** Sequences per micro-batch. */
  batchSize: number;
  /** Micro-batches per optimizer step (gradient accumulation). */
  accumulate: number;
  lr: number;
  /** Linear warm-up steps. */
  warmup: number;
  /** Learning-rate decay after warm-up, to 0 at maxSteps (`constant`: none). */
  decay: 'linear' | 'cosine' | 'constant';
  beta1: number;
  beta2: number;
  adamEps: number;
  weightDecay: number;
  /** Clip the global gradient norm to this (0 = off). */
  clip: number;
  /** EMA decay of the weights that sampling uses (0 = no EMA); warmed up as min(ema, (1+s)/(10+s)). */
  ema: number;
  /** Save a checkpoint every N steps (and at the end). */
  saveEvery: number;
  /** Checkpoints kept (the newest). */
  keep: number;
  /** Evaluate every N steps (0 = only at the end). */
  evalEvery: number;
  /** Validation examples scored by loss and by sampling (BLEU / ROUGE). */
  evalExamples: number;
  /** Denoiser calls per sample during evaluation. */
  evalSteps: number;
  /** Log a metrics line every N steps. */
  logEvery: number;
  seed: number;
  /** auto (the GPU when one is usable, else the CPU), cpu, cuda, cuda:N. */
  device: string;
  /** auto (bf16 on a GPU, float32 on the CPU), float32, bf16 (bfloat16 activations and matmuls, float32 weights, gradients and AdamW state). */
  precision: string;
  /** Continue the run in `out` from its newest checkpoint. */
  resume: boolean;
  /** Stop (with a checkpoint) after this step even if maxSteps is larger (0 = run to maxSteps). */
  stopAfter: number;
  /** Count and report bad data lines instead of failing on the first. */
  skipBad: boolean;
  /**
   * Activation recomputation: the backward runs each block's forward again instead of keeping its
   * activations (same numbers; less memory for very long sequences, about a third more compute).
   */
  recompute: boolean;
}

/** Defaults: DiffuSeq's optimiser settings (AdamW lr 1e-4, no weight decay, EMA 0.9999, linear decay). */
export const DEFAULT_TRAIN_OPTIONS: Omit<TrainOptions, 'data' | 'out'> = {
  preset: 'tiny',
  task: 'seq2seq',
  srcField: 'src',
  trgField: 'trg',
  textField: 'text',
  validFraction: 0.05,
  overlap: 0,
  bucket: 0,
  maxSteps: 1000,
  batchSize: 16,
  accumulate: 1,
  lr: 1e-4,
  warmup: 0,
  decay: 'linear',
  beta1: 0.9,
  beta2: 0.999,
  adamEps: 1e-8,
  weightDecay: 0,
  clip: 1,
  ema: 0.9999,
  saveEvery: 500,
  keep: 3,
  evalEvery: 0,
  evalExamples: 32,
  evalSteps: 10,
  logEvery: 10,
  seed: 0,
  device: 'auto',
  precision: 'auto',
  resume: false,
  stopAfter: 0,
  skipBad: false,
  recompute: false,
};

const KEYS = new Set<string>([...Object.keys(DEFAULT_TRAIN_OPTIONS), 'data', 'out', 'valid', 'model', 'tokenizer']);

/** Reads a JSON config file of training options (unknown keys are errors). */
export function readTrainConfigFile(path: string): Partial<TrainOptions> {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new ConfigError(`${path}: ${err.code ? `cannot read (${err.code})` : `invalid JSON (${err.message})`}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(`${path}: expected a JSON object of training options`);
  for (const k of Object.keys(raw)) if (!KEYS.has(k)) throw new ConfigError(`${path}: unknown option '${k}'`, `options: ${[...KEYS].sort().join(', ')}`);
  return raw as Partial<TrainOptions>;
}

/** Fills defaults and validates; `where` names the source in messages. */
export function resolveTrainOptions(o: Partial<TrainOptions>, where = 'train'): TrainOptions {
  const r = { ...DEFAULT_TRAIN_OPTIONS, ...o } as TrainOptions;
  const fail = (msg: string): never => {
    throw new ConfigError(`${where}: ${msg}`);
  };
  if (typeof r.data !== 'string' || !r.data) fail('data (--data FILE|DIR) is required');
  if (typeof r.out !== 'string' || !r.out) fail('out (--out DIR) is required');
  if (!PRESET_NAMES.includes(r.preset)) fail(`unknown preset '${r.preset}' (presets: ${PRESET_NAMES.join(', ')})`);
  if (r.task !== 'seq2seq' && r.task !== 'lm') fail(`task must be seq2seq or lm, got ${JSON.stringify(r.task)}`);
  if (!(PRECISIONS as readonly string[]).includes(r.precision)) fail(`precision must be ${PRECISIONS.join(', ')}, got ${JSON.stringify(r.precision)}`);
  if (!['linear', 'cosine', 'constant'].includes(r.decay)) fail(`decay must be linear, cosine or constant, got ${JSON.stringify(r.decay)}`);
  const ints: [keyof TrainOptions, number][] = [
    ['maxSteps', 1], ['batchSize', 1], ['accumulate', 1], ['warmup', 0], ['saveEvery', 0], ['keep', 1], ['evalEvery', 0],
    ['evalExamples', 0], ['evalSteps', 1], ['logEvery', 1], ['seed', 0], ['overlap', 0], ['bucket', 0], ['stopAfter', 0],
  ];
  for (const [k, min] of ints) {
    const v = r[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) fail(`${k} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  }
  const nums: [keyof TrainOptions, number, number][] = [
    ['lr', 0, Number.MAX_VALUE], ['beta1', 0, 1], ['beta2', 0, 1], ['adamEps', 0, 1], ['weightDecay', 0, 10], ['clip', 0, 1e9], ['ema', 0, 1], ['validFraction', 0, 0.5],
  ];
  for (const [k, lo, hi] of nums) {
    const v = r[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi) fail(`${k} must be a number in [${lo}, ${hi}], got ${JSON.stringify(v)}`);
  }
  for (const k of ['resume', 'skipBad', 'recompute'] as const) if (typeof r[k] !== 'boolean') fail(`${k} must be true or false, got ${JSON.stringify(r[k])}`);
  if (!(r.beta1 < 1 && r.beta2 < 1 && r.ema < 1)) fail('beta1, beta2 and ema must be below 1');
  if (r.lr <= 0) fail('lr must be positive');
  return r;
}

/** The learning rate of a 1-based step: linear warm-up, then the decay to 0 at maxSteps. */
export function learningRate(o: Pick<TrainOptions, 'lr' | 'warmup' | 'decay' | 'maxSteps'>, step: number): number {
  if (o.warmup > 0 && step <= o.warmup) return (o.lr * step) / o.warmup;
  if (o.decay === 'constant') return o.lr;
  const span = Math.max(1, o.maxSteps - o.warmup);
  const frac = Math.min(1, Math.max(0, (step - o.warmup - 1) / span));
  return o.decay === 'linear' ? o.lr * (1 - frac) : o.lr * 0.5 * (1 + Math.cos(Math.PI * frac));
}
