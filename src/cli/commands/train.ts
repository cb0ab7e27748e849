/** `moe-diffuseq train`: the training job (see src/train/trainer.ts). */
import { UsageError } from '../../errors.js';
import { PRESET_NAMES } from '../../model/config.js';
import { PRECISIONS } from '../../model/model.js';
import { DEFAULT_TRAIN_OPTIONS, readTrainConfigFile, type TrainOptions } from '../../train/options.js';
import { train } from '../../train/trainer.js';
import { defineCommand } from '../command.js';

const D = DEFAULT_TRAIN_OPTIONS;

export const trainCommand = defineCommand({
  name: 'train',
  summary: 'train a model on JSONL pairs or plain documents (resumable, with checkpoints and metrics)',
  usage: 'train --data FILE|DIR --out DIR [--preset NAME] [--config FILE] [options]',
  details: [
    'Data: JSONL pairs {"src","trg"} (DiffuSeq format), JSONL documents {"text"}, a text file or a folder',
    'of them; .gz too. Every option can also be set in a JSON file given by --config (camelCase keys,',
    'e.g. {"maxSteps": 2000, "lr": 3e-4, "model": {"layers": 6}}); flags on the command line win.',
    'Ctrl-C saves a checkpoint and exits; --resume continues the run in --out exactly.',
  ].join('\n'),
  options: {
    data: { type: 'string', description: 'training data (file or folder)', placeholder: 'PATH' },
    valid: { type: 'string', description: `validation data (default: ${D.validFraction * 100}% of --data, split by --seed)`, placeholder: 'PATH' },
    out: { type: 'string', description: 'run folder (checkpoints, metrics.jsonl)', placeholder: 'DIR' },
    preset: { type: 'string', description: 'model preset', choices: PRESET_NAMES, default: D.preset },
    config: { type: 'string', description: 'JSON file of training options (and "model" config overrides)', placeholder: 'FILE' },
    tokenizer: { type: 'string', description: 'tokenizer folder or tokenizer.json', placeholder: 'PATH', default: 'bundled bert-base-uncased' },
    task: { type: 'string', description: 'seq2seq pairs, or lm: unconditional long documents (chunked)', choices: ['seq2seq', 'lm'], default: D.task },
    'src-field': { type: 'string', description: 'JSONL source field', default: D.srcField },
    'trg-field': { type: 'string', description: 'JSONL target field', default: D.trgField },
    'text-field': { type: 'string', description: 'JSONL document field', default: D.textField },
    'seq-len': { type: 'int', description: "sequence length (overrides the preset's seqLen; maxLen becomes the same unless --config sets a larger one)" },
    overlap: { type: 'int', description: 'tokens shared by consecutive chunks of a document (task lm)', default: D.overlap },
    bucket: { type: 'int', description: 'pad batches to a multiple of this instead of seqLen (0 = off)', default: D.bucket },
    'max-steps': { type: 'int', description: 'optimizer steps', default: D.maxSteps },
    'batch-size': { type: 'int', description: 'sequences per micro-batch', default: D.batchSize },
    accumulate: { type: 'int', description: 'micro-batches per optimizer step', default: D.accumulate },
    lr: { type: 'number', description: 'peak learning rate', default: D.lr },
    warmup: { type: 'int', description: 'linear warm-up steps', default: D.warmup },
    decay: { type: 'string', description: 'learning-rate decay to 0 at --max-steps', choices: ['linear', 'cosine', 'constant'], default: D.decay },
    'weight-decay': { type: 'number', description: 'AdamW weight decay (weights and embeddings only)', default: D.weightDecay },
    clip: { type: 'number', description: 'clip the global gradient norm (0 = off)', default: D.clip },
    ema: { type: 'number', description: 'EMA decay of the sampling weights (0 = off)', default: D.ema },
    dropout: { type: 'number', description: "dropout (overrides the preset's)" },
    'save-every': { type: 'int', description: 'checkpoint every N steps (and at the end)', default: D.saveEvery },
    keep: { type: 'int', description: 'checkpoints kept', default: D.keep },
    'eval-every': { type: 'int', description: 'evaluate every N steps (0 = only at the end)', default: D.evalEvery },
    'eval-examples': { type: 'int', description: 'validation sources scored by sampling', default: D.evalExamples },
    'eval-steps': { type: 'int', description: 'denoiser calls per evaluation sample', default: D.evalSteps },
    'log-every': { type: 'int', description: 'metrics line every N steps', default: D.logEvery },
    seed: { type: 'int', description: 'seed of initialisation, data order and noise', default: D.seed },
    device: { type: 'string', description: 'auto (the GPU when found, else the CPU), cpu, cuda or cuda:N', default: D.device },
    precision: { type: 'string', description: 'auto (bf16 on a GPU, else float32), float32, or bf16 (bfloat16 activations and matmuls; float32 weights, gradients, AdamW)', choices: PRECISIONS, default: D.precision },
    resume: { type: 'boolean', description: 'continue the run in --out from its newest checkpoint' },
    'stop-after': { type: 'int', description: 'stop (with a checkpoint) after this step, keeping the --max-steps schedule' },
    'skip-bad': { type: 'boolean', description: 'count and report bad data lines instead of failing' },
    recompute: { type: 'boolean', description: 'activation recomputation: less memory for very long sequences, about a third more compute' },
    quiet: { type: 'boolean', description: 'no progress bar' },
  },
  async run(f) {
    const fromFile = f.config ? readTrainConfigFile(f.config) : {};
    const flags: Partial<TrainOptions> = {};
    const set = <K extends keyof TrainOptions>(k: K, v: TrainOptions[K] | undefined) => {
      if (v !== undefined) flags[k] = v;
    };
    set('data', f.data);
    set('valid', f.valid);
    set('out', f.out);
    set('preset', f.preset);
    set('tokenizer', f.tokenizer);
    set('task', f.task as TrainOptions['task'] | undefined);
    set('srcField', f['src-field']);
    set('trgField', f['trg-field']);
    set('textField', f['text-field']);
    set('overlap', f.overlap);
    set('bucket', f.bucket);
    set('maxSteps', f['max-steps']);
    set('batchSize', f['batch-size']);
    set('accumulate', f.accumulate);
    set('lr', f.lr);
    set('warmup', f.warmup);
    set('decay', f.decay as TrainOptions['decay'] | undefined);
    set('weightDecay', f['weight-decay']);
    set('clip', f.clip);
    set('ema', f.ema);
    set('saveEvery', f['save-every']);
    set('keep', f.keep);
    set('evalEvery', f['eval-every']);
    set('evalExamples', f['eval-examples']);
    set('evalSteps', f['eval-steps']);
    set('logEvery', f['log-every']);
    set('seed', f.seed);
    set('device', f.device);
    set('precision', f.precision);
    set('stopAfter', f['stop-after']);
    if (f.resume) flags.resume = true;
    if (f['skip-bad']) flags.skipBad = true;
    if (f.recompute) flags.recompute = true;
    const opts: Partial<TrainOptions> = { ...fromFile, ...flags };
    if (f['seq-len'] !== undefined || f.dropout !== undefined) {
      const model = { ...(fromFile.model ?? {}) };
      if (f['seq-len'] !== undefined) {
        model.seqLen = f['seq-len'];
        model.maxLen = Math.max(f['seq-len'], model.maxLen ?? 0);
      }
      if (f.dropout !== undefined) model.dropout = f.dropout;
      opts.model = model;
    }
    if (!opts.data && !opts.resume) throw new UsageError('train: --data is required', 'moe-diffuseq train --help');
    if (!opts.out) throw new UsageError('train: --out is required', 'moe-diffuseq train --help');
    const ac = new AbortController();
    let hits = 0;
    const onInt = () => {
      hits++;
      if (hits === 1) {
        process.stderr.write('\nCtrl-C: saving a checkpoint after this step (again to quit at once)\n');
        ac.abort();
      } else process.exit(130);
    };
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onInt);
    try {
      const r = await train(opts, { signal: ac.signal, progress: !f.quiet });
      process.stdout.write(`${r.interrupted ? 'interrupted at' : 'finished'} step ${r.step}; checkpoint ${r.checkpoint}\n`);
      return r.interrupted ? 130 : 0;
    } finally {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onInt);
    }
  },
});
