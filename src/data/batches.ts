/**
 * Batching of encoded examples: padding (SPEC's literal "pad to seqLen" by default, or to the smallest
 * multiple of the attention block size with length bucketing), a deterministic seeded shuffling
 * iterator whose position can be saved and restored exactly, and an in-order pass for evaluation.
 */
import { ConfigError } from '../errors.js';
import { checkPositiveInt } from './lines.js';
import { SplitMix32, seedToState } from './random.js';
import { checkSeqLen, writeInputs, type EncodedExample } from './sequences.js';

/** A batch of B sequences of width N, row-major. */
export interface Batch {
  /** Token ids, B * N, row b at [b * N, (b + 1) * N). */
  readonly inputIds: Int32Array;
  /** 0 on `[CLS] src [SEP]`, 1 after it (B * N). */
  readonly inputMask: Int32Array;
  /** B, the number of sequences. */
  readonly batch: number;
  /** N, the width every sequence is padded to (seqLen, or less with bucketing). */
  readonly seqLen: number;
  /** Source texts, when every example of the batch kept its text. */
  readonly srcText?: string[];
  /** Target texts (references), when every example of the batch kept its text. */
  readonly trgText?: string[];
  /** Positions of the rows in the encoded dataset. */
  readonly indices?: number[];
}

/** How a batch is padded. */
export interface CollateOptions {
  /** The model's sequence length: the width of every batch, or the cap with `blockSize`. */
  seqLen: number;
  /** The `[PAD]` id. */
  pad: number;
  /**
   * When set, pad each batch only to the smallest multiple of blockSize that holds its longest
   * sequence (never beyond seqLen) instead of to seqLen.
   */
  blockSize?: number;
}

/** The width a batch whose longest sequence has `maxLen` tokens is padded to. */
export function batchWidth(maxLen: number, seqLen: number, blockSize?: number): number {
  if (blockSize === undefined) return seqLen;
  checkPositiveInt('blockSize', blockSize);
  return Math.min(seqLen, Math.max(1, Math.ceil(maxLen / blockSize)) * blockSize);
}

/** Pads examples into one {@link Batch} (rows in the order given). */
export function collate(examples: readonly EncodedExample[], options: CollateOptions, indices?: readonly number[]): Batch {
  checkSeqLen(options.seqLen);
  if (examples.length === 0) throw new ConfigError('collate: no examples');
  let maxLen = 0;
  for (const ex of examples) maxLen = Math.max(maxLen, ex.ids.length);
  if (maxLen > options.seqLen) {
    throw new ConfigError(`an encoded example has ${maxLen} tokens, more than seqLen ${options.seqLen}; encode with the same seqLen`);
  }
  const width = batchWidth(maxLen, options.seqLen, options.blockSize);
  const B = examples.length;
  const inputIds = new Int32Array(B * width);
  const inputMask = new Int32Array(B * width);
  for (let b = 0; b < B; b++) writeInputs(examples[b]!, width, options.pad, inputIds, inputMask, b * width);
  const batch: { -readonly [K in keyof Batch]: Batch[K] } = { inputIds, inputMask, batch: B, seqLen: width };
  if (examples.every((e) => e.srcText !== undefined)) batch.srcText = examples.map((e) => e.srcText!);
  if (examples.every((e) => e.trgText !== undefined)) batch.trgText = examples.map((e) => e.trgText!);
  if (indices) batch.indices = [...indices];
  return batch;
}

/**
 * One pass over a dataset in its order, e.g. for evaluation: batches of `batchSize` (the last may be
 * smaller), padded per `options`.
 */
export function* iterateBatches(dataset: readonly EncodedExample[], options: CollateOptions & { batchSize: number }): Generator<Batch, void, undefined> {
  checkPositiveInt('batchSize', options.batchSize);
  for (let i = 0; i < dataset.length; i += options.batchSize) {
    const idx: number[] = [];
    for (let j = i; j < Math.min(i + options.batchSize, dataset.length); j++) idx.push(j);
    yield collate(idx.map((j) => dataset[j]!), options, idx);
  }
}

/** Length bucketing of {@link BatchIterator}. */
export interface BucketOptions {
  /** The attention block size: batches are padded to its smallest multiple that fits (<= seqLen). */
  blockSize: number;
  /**
   * Examples are sorted by length within pools of `poolBatches * batchSize` consecutive examples of the
   * shuffled order (default 50): big enough to find similar lengths, small enough that batches still
   * mix the dataset; the batches are then shuffled so that an epoch does not go from short to long.
   */
  poolBatches?: number;
}

/** Options of {@link BatchIterator}. */
export interface BatchIteratorOptions {
  /** Sequences per batch. */
  batchSize: number;
  /** The model's sequence length. */
  seqLen: number;
  /** The `[PAD]` id. */
  pad: number;
  /** Seed of the shuffling (default 0). */
  seed?: number;
  /** Shuffle every epoch (default true); false keeps the dataset order. */
  shuffle?: boolean;
  /** Drop the last, smaller batch of an epoch (default false: every example is seen every epoch). */
  dropLast?: boolean;
  /** Length bucketing (default off: every batch is padded to seqLen, as SPEC says). */
  bucket?: BucketOptions;
}

/** A {@link BatchIterator}'s position: plain JSON, for `trainer_state.json`. */
export interface BatchIteratorState {
  /** Format version of this object. */
  readonly version: 1;
  /** Epochs completed before the current one (0-based epoch number). */
  readonly epoch: number;
  /** Batches of the current epoch already returned. */
  readonly index: number;
  /** The generator state the current epoch's order was drawn from (uint32). */
  readonly rng: number;
  /** The seed the run started from (kept for the record; `rng` is what resumes). */
  readonly seed: number;
  /** Checks that a state is restored into the same dataset and settings. */
  readonly fingerprint: string;
}

/** FNV-1a over the examples' lengths: cheap, and catches resuming on a different dataset. */
function datasetHash(dataset: readonly EncodedExample[]): string {
  let h = 0x811c9dc5;
  const mix = (v: number): void => {
    for (let k = 0; k < 4; k++) {
      h ^= (v >>> (8 * k)) & 0xff;
      h = Math.imul(h, 0x01000193);
    }
  };
  for (const ex of dataset) {
    mix(ex.ids.length);
    mix(ex.srcEnd);
  }
  return (h >>> 0).toString(16).padStart(8, '0');
}

/**
 * An endless, deterministic sequence of batches over an in-memory dataset, epoch after epoch, each
 * epoch in a new order drawn from a seeded {@link SplitMix32}. `state()` after any batch, saved and
 * given to `restore()` on a new iterator over the same data with the same options, makes the new
 * iterator return exactly the batches the old one would have returned next.
 *
 * The position is (epoch, index, rng): `rng` is the generator state at the start of the epoch, from
 * which the epoch's whole order is redrawn on restore, so the state stays three numbers however big
 * the dataset is.
 */
export class BatchIterator {
  private readonly dataset: readonly EncodedExample[];
  private readonly opts: Required<Omit<BatchIteratorOptions, 'bucket'>> & { bucket: Required<BucketOptions> | undefined };
  private readonly fingerprint: string;
  private seed: number;
  private epochNo = 0;
  private indexNo = 0;
  private epochStart: number;
  private nextEpochStart = 0;
  private plan: number[][] | undefined;

  /** @throws ConfigError for an empty dataset, bad sizes, or dropLast with fewer examples than a batch. */
  constructor(dataset: readonly EncodedExample[], options: BatchIteratorOptions) {
    checkPositiveInt('batchSize', options.batchSize);
    checkSeqLen(options.seqLen);
    if (dataset.length === 0) throw new ConfigError('cannot batch an empty dataset');
    const bucket = options.bucket ? { blockSize: options.bucket.blockSize, poolBatches: options.bucket.poolBatches ?? 50 } : undefined;
    if (bucket) {
      checkPositiveInt('bucket.blockSize', bucket.blockSize);
      checkPositiveInt('bucket.poolBatches', bucket.poolBatches);
    }
    this.opts = {
      batchSize: options.batchSize,
      seqLen: options.seqLen,
      pad: options.pad,
      seed: options.seed ?? 0,
      shuffle: options.shuffle ?? true,
      dropLast: options.dropLast ?? false,
      bucket,
    };
    if (this.opts.dropLast && dataset.length < this.opts.batchSize) {
      throw new ConfigError(`dropLast with ${dataset.length} examples and batchSize ${this.opts.batchSize} gives no batch`);
    }
    this.dataset = dataset;
    this.seed = this.opts.seed;
    this.epochStart = seedToState(this.seed);
    const o = this.opts;
    this.fingerprint = [
      `n=${dataset.length}`,
      `b=${o.batchSize}`,
      `shuffle=${o.shuffle ? 1 : 0}`,
      `dropLast=${o.dropLast ? 1 : 0}`,
      `bucket=${bucket ? `${bucket.blockSize}/${bucket.poolBatches}` : 'off'}`,
      `data=${datasetHash(dataset)}`,
    ].join(',');
  }

  /** Batches per epoch. */
  get batchesPerEpoch(): number {
    const n = this.dataset.length;
    const b = this.opts.batchSize;
    return this.opts.dropLast ? Math.floor(n / b) : Math.ceil(n / b);
  }

  /** The current epoch (0-based). */
  get epoch(): number {
    return this.epochNo;
  }

  /** Batches of the current epoch returned so far. */
  get index(): number {
    return this.indexNo;
  }

  /** The order of one epoch, as lists of dataset indices; advances `rng` past this epoch's draws. */
  private makePlan(rng: SplitMix32): number[][] {
    const { batchSize, shuffle, dropLast, bucket } = this.opts;
    const order: number[] = [];
    for (let i = 0; i < this.dataset.length; i++) order.push(i);
    if (shuffle) rng.shuffle(order);
    let batches: number[][] = [];
    if (bucket) {
      const pool = bucket.poolBatches * batchSize;
      for (let p = 0; p < order.length; p += pool) {
        // Array.prototype.sort is stable (ES2019), so equal lengths keep their shuffled order.
        const part = order.slice(p, p + pool).sort((a, b) => this.dataset[a]!.ids.length - this.dataset[b]!.ids.length);
        for (let i = 0; i < part.length; i += batchSize) batches.push(part.slice(i, i + batchSize));
      }
      if (shuffle) rng.shuffle(batches);
    } else {
      for (let i = 0; i < order.length; i += batchSize) batches.push(order.slice(i, i + batchSize));
    }
    if (dropLast) batches = batches.filter((b) => b.length === batchSize);
    return batches;
  }

  private ensurePlan(): number[][] {
    if (this.plan === undefined) {
      const rng = SplitMix32.fromState(this.epochStart);
      this.plan = this.makePlan(rng);
      this.nextEpochStart = rng.state;
    }
    return this.plan;
  }

  /** The indices (into the dataset) of the next batch, advancing the position. */
  nextIndices(): number[] {
    let plan = this.ensurePlan();
    if (this.indexNo >= plan.length) {
      this.epochNo++;
      this.indexNo = 0;
      this.epochStart = this.nextEpochStart;
      this.plan = undefined;
      plan = this.ensurePlan();
    }
    return plan[this.indexNo++]!;
  }

  /** The next batch (the iterator never ends: it moves on to the next epoch). */
  next(): Batch {
    const idx = this.nextIndices();
    const { seqLen, pad, bucket } = this.opts;
    return collate(
      idx.map((i) => this.dataset[i]!),
      bucket ? { seqLen, pad, blockSize: bucket.blockSize } : { seqLen, pad },
      idx,
    );
  }

  /** The current position, as plain JSON-serialisable data. */
  state(): BatchIteratorState {
    return { version: 1, epoch: this.epochNo, index: this.indexNo, rng: this.epochStart, seed: this.seed, fingerprint: this.fingerprint };
  }

  /**
   * Continues from a saved position.
   * @throws ConfigError when the state is malformed or was saved for another dataset or other options.
   */
  restore(state: BatchIteratorState): void {
    const s = state as Partial<Record<keyof BatchIteratorState, unknown>>;
    if (s.version !== 1) throw new ConfigError(`batch iterator state: unknown version ${String(s.version)}`);
    const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
    if (!isCount(s.epoch) || !isCount(s.index) || !isCount(s.rng) || s.rng > 0xffffffff || typeof s.seed !== 'number' || !Number.isSafeInteger(s.seed)) {
      throw new ConfigError('batch iterator state: epoch, index, rng and seed must be non-negative integers (rng a uint32)');
    }
    if (s.fingerprint !== this.fingerprint) {
      throw new ConfigError(
        `batch iterator state was saved for another dataset or other batch options (${String(s.fingerprint)}, here ${this.fingerprint})`,
      );
    }
    if (s.index > this.batchesPerEpoch) {
      throw new ConfigError(`batch iterator state: index ${s.index} beyond the ${this.batchesPerEpoch} batches of an epoch`);
    }
    this.epochNo = s.epoch;
    this.indexNo = s.index;
    this.epochStart = s.rng;
    this.seed = s.seed;
    this.plan = undefined;
  }
}
