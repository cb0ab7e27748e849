/**
 * Tokenizers: WordPiece (bert-base-uncased, DiffuSeq's default, shipped with the package) and
 * byte-level BPE (GPT-2 style), loaded from Hugging Face `tokenizer.json` or a WordPiece `vocab.txt`
 * with no network, and a byte-level BPE trainer whose files HF loads too.
 */
export type { SpecialTokens, Tokenizer } from './tokenizer.js';
export { PipelineTokenizer, cleanUpTokenization, type DecodeOptions, type PipelineParts } from './pipeline.js';
export { loadTokenizer, defaultTokenizer, bundledTokenizerDir, DEFAULT_TOKENIZER } from './load.js';
export { tokenizerFromJSON, wordPieceFromVocabTxt, parseJsonFile, type VocabTxtOptions } from './hf-json.js';
export { trainBpe, trainBpeSync, DEFAULT_SPECIAL_TOKENS, type TrainBpeOptions, type TrainProgress } from './bpe-train.js';
export { readCorpus, type CorpusFormat, type ReadCorpusOptions } from './corpus.js';
export { WordPieceModel, type WordPieceOptions } from './wordpiece.js';
export { BpeModel, type BpeOptions } from './bpe.js';
export { BertNormalizer, BertPreTokenizer, type BertNormalizerOptions } from './bert-normalize.js';
export { ByteLevelPreTokenizer, BYTE_TO_CHAR, GPT2_PATTERN, toByteLevel, fromByteLevel, type ByteLevelOptions } from './byte-level.js';
export type { AddedToken } from './added-tokens.js';
export type { Json, JsonObject, Normalizer, PreTokenizer, TokenModel } from './components.js';
