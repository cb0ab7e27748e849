/**
 * All metrics at once ({@link evaluate}), the MBR selection of SPEC section 5 ({@link mbrSelect}),
 * and the two small metrics that need no module of their own (exact match, mean length).
 *
 * Layout: `refs[i]` lists the references of hypothesis i (any number, at least one);
 * {@link transposeStreams} turns sacreBLEU-style reference streams (one list per reference file)
 * into that layout.
 */
import { bleuSignature, corpusBleu, type BleuScore, type BleuSmoothMethod, type BleuTokenizerName } from './bleu.js';
import { dist1, diversity } from './diversity.js';
import { MetricError } from './errors.js';
import { corpusRouge } from './rouge.js';
import { diffuseqBleu, meanSentenceBleu, type SentenceBleuOrder } from './sentence-bleu.js';
import { mean, pySplit } from './text.js';

/** Every metric {@link evaluate} computes, in the order reports list them. */
export const METRICS = ['bleu', 'sentenceBleu', 'rouge1', 'rouge2', 'rougeL', 'dist1', 'selfBleu', 'div4', 'exactMatch', 'meanLength'] as const;
/** Name of a metric. */
export type MetricName = (typeof METRICS)[number];

/** Other spellings accepted by {@link parseMetricList} (compared lowercase, without '-' and '_'). */
const ALIASES: Readonly<Record<string, MetricName>> = {
  sacrebleu: 'bleu',
  sentbleu: 'sentenceBleu',
  nltkbleu: 'sentenceBleu',
  rougel: 'rougeL',
  dist: 'dist1',
  selfbleu: 'selfBleu',
  exact: 'exactMatch',
  em: 'exactMatch',
  length: 'meanLength',
  len: 'meanLength',
  avglen: 'meanLength',
};

/**
 * Parses a comma-separated metric list (`bleu,sentence-bleu,rougeL`); case, '-' and '_' are
 * ignored, so `sentence-bleu`, `sentenceBleu` and `SENTENCE_BLEU` are the same. Duplicates are
 * dropped; the result keeps the order of {@link METRICS}. Throws {@link MetricError} on an unknown name.
 */
export function parseMetricList(list: string): MetricName[] {
  const canon = (s: string): string => s.toLowerCase().replace(/[-_\s]/g, '');
  const byCanon = new Map<string, MetricName>(METRICS.map((m) => [canon(m), m]));
  for (const [a, m] of Object.entries(ALIASES)) byCanon.set(a, m);
  const chosen = new Set<MetricName>();
  for (const part of list.split(',')) {
    if (part.trim() === '') continue;
    if (canon(part) === 'all') {
      for (const m of METRICS) chosen.add(m);
      continue;
    }
    const m = byCanon.get(canon(part));
    if (m === undefined) throw new MetricError('metrics', `unknown metric '${part.trim()}' (known: ${METRICS.join(', ')}, or all)`);
    chosen.add(m);
  }
  if (chosen.size === 0) throw new MetricError('metrics', 'the metric list is empty');
  return METRICS.filter((m) => chosen.has(m));
}

/** Options of {@link evaluate}. */
export interface EvalOptions {
  /** Metrics to compute (default: all). */
  readonly metrics?: readonly MetricName[];
  /** sacreBLEU tokenizer for `bleu` (default `13a`). */
  readonly tokenize?: BleuTokenizerName;
  /** Lowercase hypotheses, references and samples before every metric (default false; ROUGE always lowercases). */
  readonly lowercase?: boolean;
  /** sacreBLEU smoothing for `bleu` (default `exp`). */
  readonly smoothMethod?: BleuSmoothMethod;
  /** Value for `floor` / `add-k` smoothing (sacreBLEU's defaults 0.1 / 1). */
  readonly smoothValue?: number;
  /** Argument order of `sentenceBleu` (default `diffuseq`; see sentence-bleu.ts). */
  readonly sentenceBleuOrder?: SentenceBleuOrder;
  /** Porter-stem ROUGE tokens (default false). */
  readonly stem?: boolean;
  /**
   * Several outputs per source for `selfBleu` and `div4`: `samples[i]` = the K samples of source i
   * (typically including hyps[i]). Without it those two metrics are null.
   */
  readonly samples?: readonly (readonly string[])[];
}

/** What {@link evaluate} returns: the requested metrics (absent ones were not requested). */
export interface EvalResult {
  /** Number of sentences scored. */
  readonly sentences: number;
  /** sacreBLEU corpus BLEU, 0-100. */
  readonly bleu?: number;
  /** The statistics behind `bleu`. */
  readonly bleuDetail?: BleuScore;
  /** sacreBLEU-style signature of the `bleu` settings (without a version field). */
  readonly bleuSignature?: string;
  /** DiffuSeq's mean sentence BLEU (NLTK method4), 0-1. */
  readonly sentenceBleu?: number;
  /** Mean ROUGE-1 F-measure, 0-1. */
  readonly rouge1?: number;
  /** Mean ROUGE-2 F-measure, 0-1. */
  readonly rouge2?: number;
  /** Mean ROUGE-L F-measure, 0-1. */
  readonly rougeL?: number;
  /** DiffuSeq's dist-1, 0-1. */
  readonly dist1?: number;
  /** DiffuSeq's self-BLEU over samples (lower = more diverse), 0-1; null without `samples`. */
  readonly selfBleu?: number | null;
  /** DiffuSeq's div-4 over samples (higher = more diverse), 0-1; null without `samples`. */
  readonly div4?: number | null;
  /** Share of outputs equal to one of their references (whitespace-normalised), 0-1. */
  readonly exactMatch?: number;
  /** Mean output length in whitespace tokens. */
  readonly meanLength?: number;
}

/** Whitespace-normalised form used by exact match: tokens joined by single spaces. */
function normalizeSpaces(s: string): string {
  return pySplit(s).join(' ');
}

/**
 * Share of hypotheses that equal one of their references after whitespace normalisation (runs of
 * whitespace collapsed, ends trimmed); case-sensitive unless the inputs were lowercased.
 */
export function exactMatch(hyps: readonly string[], refs: readonly (readonly string[])[]): number {
  return mean(
    hyps.map((h, i) => {
      const nh = normalizeSpaces(h);
      return (refs[i] ?? []).some((r) => normalizeSpaces(r) === nh) ? 1 : 0;
    }),
  );
}

/**
 * Mean number of whitespace tokens per hypothesis. (DiffuSeq counts `len(recover.split(' '))`,
 * which also counts empty strings between repeated or trailing spaces and gives 1 for an empty
 * output; on single-spaced, trimmed, non-empty text both agree.)
 */
export function meanLength(hyps: readonly string[]): number {
  return mean(hyps.map((h) => pySplit(h).length));
}

/**
 * Converts reference streams (`streams[k][i]` = reference k of sentence i, as sacreBLEU takes them
 * and as `--ref` files hold them) to the per-sentence layout (`out[i][k]`).
 */
export function transposeStreams(streams: readonly (readonly string[])[]): string[][] {
  const n = streams[0]?.length ?? 0;
  streams.forEach((s, k) => {
    if (s.length !== n) throw new MetricError('transposeStreams', `reference stream ${k + 1} has ${s.length} sentences, stream 1 has ${n}`);
  });
  return Array.from({ length: n }, (_, i) => streams.map((s) => s[i]!));
}

/**
 * Minimum-Bayes-risk selection among K candidates for one source (SPEC section 5, DiffuSeq's
 * `selectBest`): the index of the candidate whose summed DiffuSeq sentence BLEU against the other
 * K - 1 is highest. As in DiffuSeq, candidate i's score is the sum over j != i of
 * `get_bleu(c_i, c_j)` (c_i in NLTK's reference slot, c_j in the hypothesis slot). Ties go to the
 * lower index.
 */
export function mbrSelect(candidates: readonly string[]): number {
  if (candidates.length === 0) throw new MetricError('mbrSelect', 'no candidates');
  let best = 0;
  let bestScore = -Infinity;
  for (let i = 0; i < candidates.length; i++) {
    let s = 0;
    for (let j = 0; j < candidates.length; j++) if (j !== i) s += diffuseqBleu(candidates[i]!, candidates[j]!);
    if (s > bestScore) {
      bestScore = s;
      best = i;
    }
  }
  return best;
}

/**
 * Computes the requested metrics (default all) of `hyps` against `refs` (`refs[i]` = the
 * references of sentence i, at least one; sentences may have different numbers; '' is an empty
 * reference, as in sacreBLEU >= 2.1). Throws {@link MetricError} on mismatched lengths, an empty
 * corpus, or a sentence without reference (with its index).
 */
export function evaluate(hyps: readonly string[], refs: readonly (readonly string[])[], opts: EvalOptions = {}): EvalResult {
  if (hyps.length !== refs.length) {
    throw new MetricError('evaluate', `${hyps.length} hypotheses but ${refs.length} reference lists (refs[i] lists the references of sentence i; transposeStreams converts reference files)`);
  }
  if (hyps.length === 0) throw new MetricError('evaluate', 'no sentences to score');
  if (opts.samples !== undefined && opts.samples.length !== hyps.length) {
    throw new MetricError('evaluate', `${hyps.length} hypotheses but samples for ${opts.samples.length} sources`);
  }
  const want = new Set<MetricName>(opts.metrics ?? METRICS);
  const lc = (s: string): string => (opts.lowercase ? s.toLowerCase() : s);
  const h = hyps.map(lc);
  const r = refs.map((rs, i) => {
    if (rs.length === 0) throw new MetricError('evaluate', `sentence ${i + 1} has no reference`, i);
    return rs.map(lc);
  });
  const out: { -readonly [K in keyof EvalResult]: EvalResult[K] } = { sentences: h.length };

  if (want.has('bleu')) {
    const bleuOpts = {
      tokenize: opts.tokenize ?? '13a',
      smoothMethod: opts.smoothMethod ?? 'exp',
      ...(opts.smoothValue !== undefined ? { smoothValue: opts.smoothValue } : {}),
    } as const;
    // lowercasing was done above for every metric; the signature still records it
    const detail = corpusBleu(h, r, bleuOpts);
    const counts = new Set(r.map((rs) => rs.length));
    out.bleu = detail.score;
    out.bleuDetail = detail;
    out.bleuSignature = bleuSignature(counts.size === 1 ? [...counts][0]! : 'var', { ...bleuOpts, lowercase: opts.lowercase === true });
  }
  if (want.has('sentenceBleu')) out.sentenceBleu = meanSentenceBleu(h, r, opts.sentenceBleuOrder ?? 'diffuseq');
  if (want.has('rouge1') || want.has('rouge2') || want.has('rougeL')) {
    const rouge = corpusRouge(h, r, { stem: opts.stem === true });
    if (want.has('rouge1')) out.rouge1 = rouge.rouge1;
    if (want.has('rouge2')) out.rouge2 = rouge.rouge2;
    if (want.has('rougeL')) out.rougeL = rouge.rougeL;
  }
  if (want.has('dist1')) out.dist1 = dist1(h);
  if (want.has('selfBleu') || want.has('div4')) {
    const d = opts.samples ? diversity(opts.samples.map((set) => set.map(lc))) : undefined;
    if (want.has('selfBleu')) out.selfBleu = d ? d.selfBleu : null;
    if (want.has('div4')) out.div4 = d ? d.div4 : null;
  }
  if (want.has('exactMatch')) out.exactMatch = exactMatch(h, r);
  if (want.has('meanLength')) out.meanLength = meanLength(h);
  return out;
}
