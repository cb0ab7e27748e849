/**
 * Evaluation metrics: sacreBLEU corpus BLEU, DiffuSeq's sentence BLEU (NLTK method4), ROUGE as
 * Google's rouge-score computes it, DiffuSeq's diversity measures, exact match and length, and MBR
 * selection. See SPEC section 6 and each module's documentation for the exact semantics.
 */
export {
  BLEU_SMOOTH_DEFAULTS,
  BLEU_SMOOTH_METHODS,
  BLEU_TOKENIZERS,
  bleuSignature,
  bleuTokenizer,
  closestRefLength,
  computeBleu,
  corpusBleu,
  formatBleu,
  tokenize13a,
  tokenizeChar,
  tokenizeIntl,
  type BleuOptions,
  type BleuScore,
  type BleuSmoothMethod,
  type BleuTokenizerName,
} from './bleu.js';
export { dist1, distinctN, distinctNPooled, diversity, selfBleuOfSet, type DiversityScores } from './diversity.js';
export { MetricError } from './errors.js';
export {
  evaluate,
  exactMatch,
  mbrSelect,
  meanLength,
  METRICS,
  parseMetricList,
  transposeStreams,
  type EvalOptions,
  type EvalResult,
  type MetricName,
} from './metrics.js';
export { porterStem } from './porter.js';
export {
  corpusRouge,
  fmeasure,
  lcsLength,
  ROUGE_TYPES,
  rougeLTokens,
  rougeNTokens,
  rougeScore,
  rougeScoreMulti,
  rougeTokenize,
  type RougeOptions,
  type RougeScore,
  type RougeType,
} from './rouge.js';
export {
  diffuseqBleu,
  meanSentenceBleu,
  nltkSentenceBleu,
  SENTENCE_BLEU_ORDERS,
  sentenceBleu,
  type NltkBleuOptions,
  type NltkSmoothing,
  type SentenceBleuOrder,
} from './sentence-bleu.js';
export { fsum, pySplit, pyStrip } from './text.js';
