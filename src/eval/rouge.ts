/**
 * ROUGE-N and ROUGE-L F-measures with the semantics of Google's `rouge-score` package
 * (google-research `rouge/rouge_scorer.py`, `tokenize.py`, `scoring.py`), which replicates
 * ROUGE-1.5.5 with `-e data -n 2` (and `-m` when stemming):
 *
 * - tokens: lowercase, every run of characters other than [a-z0-9] becomes a space, split; with
 *   stemming, tokens longer than 3 characters go through NLTK's Porter stemmer. Non-ASCII letters
 *   are therefore dropped ("café" -> "caf").
 * - ROUGE-N: clipped n-gram overlap; precision over the prediction's n-grams, recall over the
 *   target's (each denominator at least 1); F = 2PR / (P + R), 0 when P + R = 0.
 * - ROUGE-L: longest common subsequence of the token lists (sentence level, newlines ignored);
 *   all zero when either side has no token.
 * - several references: `score_multi`, i.e. the reference with the highest F-measure (the first one
 *   on ties), per ROUGE type.
 * - a corpus score is the mean of the sentence F-measures (`BootstrapAggregator`'s mid value).
 *
 * Scores are on the 0-1 scale.
 */
import { porterStem } from './porter.js';
import { countNgrams, mean } from './text.js';

/** Precision, recall and F-measure of one comparison (rouge-score's `Score`). */
export interface RougeScore {
  readonly precision: number;
  readonly recall: number;
  readonly fmeasure: number;
}

/** Options of the ROUGE functions. */
export interface RougeOptions {
  /** Apply the Porter stemmer to tokens longer than 3 characters (rouge-score `use_stemmer`; default false). */
  readonly stem?: boolean;
}

/** The ROUGE types computed here. */
export const ROUGE_TYPES = ['rouge1', 'rouge2', 'rougeL'] as const;
/** A ROUGE type. */
export type RougeType = (typeof ROUGE_TYPES)[number];

/** rouge-score's default tokenizer. */
export function rougeTokenize(text: string, opts: RougeOptions = {}): string[] {
  const cleaned = text.toLowerCase().replace(/[^a-z0-9]+/g, ' ');
  const out: string[] = [];
  for (const raw of cleaned.split(/\s+/)) {
    const tok = opts.stem && raw.length > 3 ? porterStem(raw) : raw;
    // the final validity check of rouge-score (drops the empty strings at either end)
    if (/^[a-z0-9]+$/.test(tok)) out.push(tok);
  }
  return out;
}

/** F-measure as rouge-score's `scoring.fmeasure`. */
export function fmeasure(precision: number, recall: number): number {
  return precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
}

/** ROUGE-N of tokenized texts. */
export function rougeNTokens(target: readonly string[], prediction: readonly string[], n: number): RougeScore {
  const t = countNgrams(target, n);
  const p = countNgrams(prediction, n);
  let overlap = 0;
  for (const [g, c] of t) overlap += Math.min(c, p.get(g) ?? 0);
  const tTotal = Math.max(0, target.length - n + 1);
  const pTotal = Math.max(0, prediction.length - n + 1);
  const precision = overlap / Math.max(pTotal, 1);
  const recall = overlap / Math.max(tTotal, 1);
  return { precision, recall, fmeasure: fmeasure(precision, recall) };
}

/**
 * Length of the longest common subsequence (two-row dynamic programme). Tokens are first mapped to
 * integers so the inner loop compares numbers: long documents make this O(n m) loop the cost of ROUGE-L.
 */
export function lcsLength(a: readonly string[], b: readonly string[]): number {
  const ids = new Map<string, number>();
  const encode = (xs: readonly string[]): Int32Array => {
    const out = new Int32Array(xs.length);
    xs.forEach((x, i) => {
      let id = ids.get(x);
      if (id === undefined) ids.set(x, (id = ids.size));
      out[i] = id;
    });
    return out;
  };
  const ea = encode(a);
  const eb = encode(b);
  let prev = new Int32Array(eb.length + 1);
  let cur = new Int32Array(eb.length + 1);
  for (let i = 1; i <= ea.length; i++) {
    const ai = ea[i - 1]!;
    for (let j = 1; j <= eb.length; j++) {
      cur[j] = ai === eb[j - 1]! ? prev[j - 1]! + 1 : Math.max(prev[j]!, cur[j - 1]!);
    }
    [prev, cur] = [cur, prev];
  }
  return prev[eb.length]!;
}

/** ROUGE-L of tokenized texts. */
export function rougeLTokens(target: readonly string[], prediction: readonly string[]): RougeScore {
  if (target.length === 0 || prediction.length === 0) return { precision: 0, recall: 0, fmeasure: 0 };
  const l = lcsLength(target, prediction);
  const precision = l / prediction.length;
  const recall = l / target.length;
  return { precision, recall, fmeasure: fmeasure(precision, recall) };
}

/** rouge-score's `RougeScorer(types).score(target, prediction)` for rouge1, rouge2 and rougeL. */
export function rougeScore(target: string, prediction: string, opts: RougeOptions = {}): Record<RougeType, RougeScore> {
  const t = rougeTokenize(target, opts);
  const p = rougeTokenize(prediction, opts);
  return { rouge1: rougeNTokens(t, p, 1), rouge2: rougeNTokens(t, p, 2), rougeL: rougeLTokens(t, p) };
}

/**
 * rouge-score's `score_multi(targets, prediction)`: for each type, the score against the target
 * with the highest F-measure (the first such target on ties, as numpy's argmax).
 */
export function rougeScoreMulti(targets: readonly string[], prediction: string, opts: RougeOptions = {}): Record<RougeType, RougeScore> {
  const all = targets.map((t) => rougeScore(t, prediction, opts));
  const pick = (type: RougeType): RougeScore => {
    let best = all[0]?.[type] ?? { precision: 0, recall: 0, fmeasure: 0 };
    for (const s of all.slice(1)) if (s[type].fmeasure > best.fmeasure) best = s[type];
    return best;
  };
  return { rouge1: pick('rouge1'), rouge2: pick('rouge2'), rougeL: pick('rougeL') };
}

/** Mean sentence-level F-measures of a corpus; `refs[i]` are the references of sentence i. */
export function corpusRouge(hyps: readonly string[], refs: readonly (readonly string[])[], opts: RougeOptions = {}): Record<RougeType, number> {
  const scores = hyps.map((h, i) => rougeScoreMulti(refs[i] ?? [], h, opts));
  return {
    rouge1: mean(scores.map((s) => s.rouge1.fmeasure)),
    rouge2: mean(scores.map((s) => s.rouge2.fmeasure)),
    rougeL: mean(scores.map((s) => s.rougeL.fmeasure)),
  };
}
