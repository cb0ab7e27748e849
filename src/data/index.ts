/**
 * The data layer: streaming readers for JSONL pairs, JSONL documents and text files (plain or gzip),
 * SPEC section 1 sequence encoding (trimming, chunking), batching (padding, length bucketing, a seeded
 * resumable iterator) and deterministic splits.
 */
export { BadInputReport } from './report.js';
export {
  DEFAULT_MAX_LINE_BYTES,
  fileSize,
  firstInvalidUtf8Offset,
  readLines,
  type Compression,
  type Line,
  type ProgressCallback,
  type ReadLinesOptions,
} from './lines.js';
export {
  collect,
  listTextFiles,
  loadExamples,
  readDocuments,
  readExamples,
  readPairs,
  readTextFiles,
  type DataFormat,
  type DataStream,
  type DocumentReaderOptions,
  type Example,
  type ExampleReaderOptions,
  type PairReaderOptions,
  type ReaderOptions,
  type TextDocument,
  type TextFileReaderOptions,
  type TextSplit,
} from './readers.js';
export {
  SPECIALS_PER_SEQUENCE,
  buildSequence,
  checkSeqLen,
  chunkSpans,
  encodeExample,
  encodeExamples,
  encodeStream,
  toInputs,
  trimLengths,
  type EncodeOptions,
  type EncodedExample,
  type LongDocuments,
  type TextPair,
} from './sequences.js';
export {
  BatchIterator,
  batchWidth,
  collate,
  iterateBatches,
  type Batch,
  type BatchIteratorOptions,
  type BatchIteratorState,
  type BucketOptions,
  type CollateOptions,
} from './batches.js';
export { groupBySource, pick, splitBySeed, splitGroupsBySeed, type SourceGroup, type SplitIndices, type SplitOptions } from './split.js';
export { SplitMix32 } from './random.js';
