/**
 * sacreBLEU's corpus BLEU (Post, 2018), reproduced from its semantics (sacrebleu 2.x,
 * `sacrebleu/metrics/bleu.py` and `sacrebleu/tokenizers/`):
 *
 * - each segment is optionally lowercased, right-stripped and tokenized (`13a` by default, the
 *   mteval-v13a tokenizer WMT uses), then split on whitespace;
 * - n-gram matches are clipped by the maximum count over the segment's references, and the
 *   reference length is the one closest to the hypothesis length (ties: the shorter);
 * - the statistics are summed over the corpus and turned into a score with the chosen smoothing
 *   (`exp` by default; `none`, `floor`, `add-k`), the brevity penalty, and optionally the effective
 *   order. The score is on sacreBLEU's 0-100 scale.
 *
 * References are given per sentence (`refs[i]` lists the references of hypothesis i), not as
 * sacreBLEU's reference streams; {@link transposeStreams} converts. Sentences may have different
 * numbers of references (sacreBLEU's "variable references", a `None` in a stream). An empty string
 * is a real, empty reference, as in sacreBLEU since 2.1 (mjpost/sacrebleu#161; its README still
 * says '' marks a missing reference, which was true of 2.0). A sentence with no reference at all is
 * an error.
 */
import { MetricError } from './errors.js';
import { countNgrams, pyRstrip, pySplit } from './text.js';

/** sacreBLEU tokenizers implemented here. */
export const BLEU_TOKENIZERS = ['13a', 'none', 'intl', 'char'] as const;
/** Name of a sacreBLEU tokenizer. */
export type BleuTokenizerName = (typeof BLEU_TOKENIZERS)[number];

/** sacreBLEU smoothing methods (Chen & Cherry 2014 numbering: none, 1 = floor, 2 = add-k, 3 = exp). */
export const BLEU_SMOOTH_METHODS = ['exp', 'none', 'floor', 'add-k'] as const;
/** Name of a smoothing method. */
export type BleuSmoothMethod = (typeof BLEU_SMOOTH_METHODS)[number];

/** Default smoothing value of each method, as sacreBLEU's `BLEU.SMOOTH_DEFAULTS`. */
export const BLEU_SMOOTH_DEFAULTS: Readonly<Record<BleuSmoothMethod, number | undefined>> = {
  none: undefined,
  floor: 0.1,
  'add-k': 1,
  exp: undefined,
};

/** Options of {@link corpusBleu}; the defaults are sacreBLEU's `BLEU()` defaults. */
export interface BleuOptions {
  /** Tokenizer (default `13a`). */
  readonly tokenize?: BleuTokenizerName;
  /** Lowercase hypotheses and references before tokenizing (sacreBLEU `-lc`; default false). */
  readonly lowercase?: boolean;
  /** Smoothing method (default `exp`). */
  readonly smoothMethod?: BleuSmoothMethod;
  /** Value for `floor` (default 0.1) and `add-k` (default 1); ignored by the others. */
  readonly smoothValue?: number;
  /** Average only over the n-gram orders the corpus has (default false; sacreBLEU turns it on for sentence BLEU). */
  readonly effectiveOrder?: boolean;
  /** Highest n-gram order (default 4). */
  readonly maxNgramOrder?: number;
}

/** A BLEU score and the statistics behind it (sacreBLEU's `BLEUScore`). */
export interface BleuScore {
  /** BLEU on the 0-100 scale. */
  readonly score: number;
  /** Matched (clipped) n-grams per order, before any add-k smoothing (sacreBLEU reports them after). */
  readonly counts: readonly number[];
  /** Hypothesis n-grams per order, before any add-k smoothing (sacreBLEU reports them after). */
  readonly totals: readonly number[];
  /** Per-order precisions in percent, after smoothing (0 where an order was not reached). */
  readonly precisions: readonly number[];
  /** Brevity penalty. */
  readonly bp: number;
  /** Total hypothesis length in tokens. */
  readonly sysLen: number;
  /** Total closest-reference length in tokens. */
  readonly refLen: number;
  /** sysLen / refLen (0 when refLen is 0). */
  readonly ratio: number;
}

/** sacreBLEU's `my_log`: log with log(0) floored to -9999999999 (so that exp of the mean is 0, not NaN). */
function myLog(x: number): number {
  return x === 0 ? -9999999999 : Math.log(x);
}

// mteval-v13a's punctuation class: { | } ~ [ \ ] ^ _ ` space ! " # $ % & ( ) * + : ; < = > ? @ /
// (written as code points; the apostrophe, hyphen, period and comma are handled by the rules below)
const RE_13A_PUNCT = /([\x7b-\x7e\x5b-\x60\x20-\x26\x28-\x2b\x3a-\x40\x2f])/gu;
// period and comma: split unless preceded / followed by an ASCII digit (keeps 3.14 and 1,000)
const RE_13A_PERIOD_AFTER_NONDIGIT = /([^0-9])([.,])/gu;
const RE_13A_PERIOD_BEFORE_NONDIGIT = /([.,])([^0-9])/gu;
// a dash after a digit is split off (ranges like 1990-2000)
const RE_13A_DASH_AFTER_DIGIT = /([0-9])(-)/gu;

/**
 * sacreBLEU's `13a` tokenizer (mteval-v13a.pl): drops `<skipped>`, joins hyphenated line breaks,
 * unescapes four HTML entities, pads the line with spaces and splits off punctuation. Returns the
 * tokens joined by single spaces.
 */
export function tokenize13a(line: string): string {
  let s = line.replaceAll('<skipped>', '').replaceAll('-\n', '').replaceAll('\n', ' ');
  if (s.includes('&')) {
    // the order matters ("&amp;quot;" becomes "&quot;", not '"'), as in mteval
    s = s.replaceAll('&quot;', '"').replaceAll('&amp;', '&').replaceAll('&lt;', '<').replaceAll('&gt;', '>');
  }
  s = ` ${s} `;
  s = s.replace(RE_13A_PUNCT, ' $1 ');
  s = s.replace(RE_13A_PERIOD_AFTER_NONDIGIT, '$1 $2 ');
  s = s.replace(RE_13A_PERIOD_BEFORE_NONDIGIT, ' $1 $2');
  s = s.replace(RE_13A_DASH_AFTER_DIGIT, '$1 $2 ');
  return pySplit(s).join(' ');
}

const RE_INTL_NONDIGIT_PUNCT = /(\P{N})(\p{P})/gu;
const RE_INTL_PUNCT_NONDIGIT = /(\p{P})(\P{N})/gu;
const RE_INTL_SYMBOL = /(\p{S})/gu;

/**
 * sacreBLEU's `intl` tokenizer (mteval-v14 international): splits Unicode punctuation off unless it
 * sits between numbers, and every Unicode symbol. The Unicode tables are Node's (ICU), which may be
 * a different Unicode version from Python's `regex` module on rarely used characters.
 */
export function tokenizeIntl(line: string): string {
  let s = line.replace(RE_INTL_NONDIGIT_PUNCT, '$1 $2 ');
  s = s.replace(RE_INTL_PUNCT_NONDIGIT, ' $1 $2');
  s = s.replace(RE_INTL_SYMBOL, ' $1 ');
  return pySplit(s).join(' ');
}

/** sacreBLEU's `char` tokenizer: every character (code point) is a token; whitespace is dropped. */
export function tokenizeChar(line: string): string {
  return pySplit(Array.from(line).join(' ')).join(' ');
}

/** The tokenizer function for a name. */
export function bleuTokenizer(name: BleuTokenizerName): (line: string) => string {
  switch (name) {
    case '13a':
      return tokenize13a;
    case 'intl':
      return tokenizeIntl;
    case 'char':
      return tokenizeChar;
    case 'none':
      return (line) => line;
  }
}

/**
 * Turns summed n-gram statistics into a BLEU score, as sacreBLEU's static `BLEU.compute_bleu`
 * (whose default smoothing, unlike the `BLEU` class's, is `none`).
 *
 * @param correct - matched n-grams per order.
 * @param total - hypothesis n-grams per order.
 * @param sysLen - total hypothesis length.
 * @param refLen - total closest-reference length.
 */
export function computeBleu(
  correct: readonly number[],
  total: readonly number[],
  sysLen: number,
  refLen: number,
  opts: Omit<BleuOptions, 'tokenize' | 'lowercase'> = {},
): BleuScore {
  const method = opts.smoothMethod ?? 'none';
  const value = opts.smoothValue ?? BLEU_SMOOTH_DEFAULTS[method] ?? 0;
  const maxOrder = opts.maxNgramOrder ?? 4;
  const c = correct.slice();
  const t = total.slice();
  const bp = sysLen < refLen ? (sysLen > 0 ? Math.exp(1 - refLen / sysLen) : 0) : 1;
  const precisions: number[] = new Array<number>(maxOrder).fill(0);
  const result = (score: number): BleuScore => ({
    score,
    counts: correct.slice(),
    totals: total.slice(),
    precisions,
    bp,
    sysLen,
    refLen,
    ratio: refLen ? sysLen / refLen : 0,
  });
  // no match of any order: 0, whatever the smoothing (sacreBLEU #141)
  if (!c.some((x) => x !== 0)) return result(0);
  let smoothMteval = 1;
  let effOrder = maxOrder;
  for (let n = 1; n <= maxOrder; n++) {
    if (method === 'add-k' && n > 1) {
      c[n - 1] = (c[n - 1] ?? 0) + value;
      t[n - 1] = (t[n - 1] ?? 0) + value;
    }
    const cn = c[n - 1] ?? 0;
    const tn = t[n - 1] ?? 0;
    // the hypotheses are shorter than n: this order and the higher ones keep precision 0
    if (tn === 0) break;
    if (opts.effectiveOrder) effOrder = n;
    if (cn === 0) {
      if (method === 'exp') {
        smoothMteval *= 2;
        precisions[n - 1] = 100 / (smoothMteval * tn);
      } else if (method === 'floor') {
        precisions[n - 1] = (100 * value) / tn;
      }
    } else {
      precisions[n - 1] = (100 * cn) / tn;
    }
  }
  let logSum = 0;
  for (let i = 0; i < effOrder; i++) logSum += myLog(precisions[i]!);
  return result(bp * Math.exp(logSum / effOrder));
}

/** Closest reference length to `hypLen`; ties go to the shorter reference (sacreBLEU and NLTK agree). */
export function closestRefLength(hypLen: number, refLens: readonly number[]): number {
  let best = -1;
  let bestDiff = -1;
  for (const r of refLens) {
    const d = Math.abs(hypLen - r);
    if (bestDiff === -1 || d < bestDiff || (d === bestDiff && r < best)) {
      bestDiff = d;
      best = r;
    }
  }
  return best;
}

/** Per-segment sufficient statistics: [hypLen, refLen, correct_1..N, total_1..N]. */
function segmentStats(hypTokens: readonly string[], refTokens: readonly (readonly string[])[], maxOrder: number): number[] {
  const stats = new Array<number>(2 + 2 * maxOrder).fill(0);
  stats[0] = hypTokens.length;
  stats[1] = closestRefLength(
    hypTokens.length,
    refTokens.map((r) => r.length),
  );
  for (let n = 1; n <= maxOrder; n++) {
    const hyp = countNgrams(hypTokens, n);
    if (hyp.size === 0) continue;
    // clip by the largest count of the n-gram in any single reference
    const refMax = new Map<string, number>();
    for (const ref of refTokens) {
      for (const [g, k] of countNgrams(ref, n)) if (k > (refMax.get(g) ?? 0)) refMax.set(g, k);
    }
    let correct = 0;
    let total = 0;
    for (const [g, k] of hyp) {
      total += k;
      correct += Math.min(k, refMax.get(g) ?? 0);
    }
    stats[1 + n] = correct;
    stats[1 + maxOrder + n] = total;
  }
  return stats;
}

/**
 * sacreBLEU corpus BLEU (`sacrebleu.corpus_bleu(hyps, streams, ...)`).
 *
 * @param hyps - one hypothesis per sentence.
 * @param refs - `refs[i]` = the references of sentence i (at least one; '' is an empty reference).
 */
export function corpusBleu(hyps: readonly string[], refs: readonly (readonly string[])[], opts: BleuOptions = {}): BleuScore {
  if (hyps.length !== refs.length) {
    throw new MetricError('bleu', `${hyps.length} hypotheses but ${refs.length} reference lists (refs[i] lists the references of sentence i)`);
  }
  const maxOrder = opts.maxNgramOrder ?? 4;
  const tok = bleuTokenizer(opts.tokenize ?? '13a');
  const pre = (s: string): string[] => pySplit(tok(pyRstrip(opts.lowercase ? s.toLowerCase() : s)));
  const sums = new Array<number>(2 + 2 * maxOrder).fill(0);
  for (let i = 0; i < hyps.length; i++) {
    const ri = refs[i]!;
    if (ri.length === 0) throw new MetricError('bleu', `sentence ${i + 1} has no reference`, i);
    const st = segmentStats(pre(hyps[i]!), ri.map(pre), maxOrder);
    for (let j = 0; j < st.length; j++) sums[j]! += st[j]!;
  }
  return computeBleu(sums.slice(2, 2 + maxOrder), sums.slice(2 + maxOrder), sums[0]!, sums[1]!, {
    smoothMethod: opts.smoothMethod ?? 'exp',
    ...(opts.smoothValue !== undefined ? { smoothValue: opts.smoothValue } : {}),
    ...(opts.effectiveOrder !== undefined ? { effectiveOrder: opts.effectiveOrder } : {}),
    maxNgramOrder: maxOrder,
  });
}

/** Formats a score the way sacreBLEU prints it: `BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ...)`. */
export function formatBleu(s: BleuScore): string {
  return (
    `BLEU = ${s.score.toFixed(2)} ${s.precisions.map((p) => p.toFixed(1)).join('/')} ` +
    `(BP = ${s.bp.toFixed(3)} ratio = ${s.ratio.toFixed(3)} hyp_len = ${s.sysLen} ref_len = ${s.refLen})`
  );
}

/**
 * sacreBLEU's reproducibility signature without the version field (this is not sacreBLEU):
 * `nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp`. `nrefs` is `var` when sentences have different
 * numbers of references.
 */
export function bleuSignature(nrefs: number | 'var', opts: BleuOptions = {}): string {
  const method = opts.smoothMethod ?? 'exp';
  const def = BLEU_SMOOTH_DEFAULTS[method];
  const smooth = def === undefined ? method : `${method}[${(opts.smoothValue ?? def).toFixed(2)}]`;
  return `nrefs:${nrefs}|case:${opts.lowercase ? 'lc' : 'mixed'}|eff:${opts.effectiveOrder ? 'yes' : 'no'}|tok:${opts.tokenize ?? '13a'}|smooth:${smooth}`;
}
