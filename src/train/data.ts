/**
 * The training run's data: read (streaming, with progress), split off a validation set by seed when
 * none is given (grouping identical sources so that a source's references never straddle the split),
 * and encode with SPEC section 1's rules (documents chunked for task lm).
 */
import { encodeExamples, type EncodedExample } from '../data/sequences.js';
import { loadExamples, type Example } from '../data/readers.js';
import { groupBySource, pick, splitGroupsBySeed } from '../data/split.js';
import { InputError } from '../errors.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { TrainOptions } from './options.js';

/** A validation source with all of its references. */
export interface EvalItem {
  src: string;
  refs: string[];
}

/** Encoded training and validation data. */
export interface TrainingData {
  train: EncodedExample[];
  valid: EncodedExample[];
  /** Validation sources with their references (for sampling-based evaluation). */
  evalItems: EvalItem[];
  /** Lines skipped by --skip-bad, as a report (empty string if none). */
  skipped: string;
}

async function read(path: string, o: TrainOptions, onProgress?: (done: number, total: number) => void): Promise<{ examples: Example[]; skipped: string }> {
  const { examples, report } = await loadExamples(path, {
    format: 'auto',
    srcField: o.srcField,
    trgField: o.trgField,
    textField: o.textField,
    skipBad: o.skipBad,
    ...(onProgress ? { onProgress } : {}),
  });
  if (o.task === 'seq2seq' && examples.every((e) => e.src === '')) {
    throw new InputError(path, undefined, 'has documents but no source/target pairs', 'use --task lm to train on plain documents');
  }
  return { examples, skipped: report.count ? report.summary() : '' };
}

/** Reads, splits and encodes the run's data. */
export async function prepareData(o: TrainOptions, tok: Tokenizer, seqLen: number, onProgress?: (done: number, total: number) => void): Promise<TrainingData> {
  const main = await read(o.data, o, onProgress);
  let trainEx: Example[];
  let validEx: Example[];
  let skipped = main.skipped;
  if (o.valid) {
    trainEx = main.examples;
    const v = await read(o.valid, o);
    validEx = v.examples;
    skipped += v.skipped;
  } else {
    const groups = groupBySource(main.examples);
    const split = splitGroupsBySeed(groups, { valid: o.validFraction, seed: o.seed });
    trainEx = pick(main.examples, split.train);
    validEx = pick(main.examples, split.valid);
  }
  if (trainEx.length === 0) throw new InputError(o.data, undefined, 'no training examples left after the validation split');
  const enc = { seqLen, documents: o.task === 'lm' ? ('chunk' as const) : ('trim' as const), overlap: o.overlap, keepText: false };
  const train = encodeExamples(tok, trainEx, enc);
  const valid = encodeExamples(tok, validEx, enc);
  const evalItems = o.task === 'lm' ? [] : groupBySource(validEx).map((g) => ({ src: g.src, refs: g.refs }));
  return { train, valid, evalItems, skipped };
}
