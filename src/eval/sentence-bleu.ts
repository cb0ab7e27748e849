/**
 * DiffuSeq's BLEU: NLTK's `sentence_bleu` with `SmoothingFunction().method4` on whitespace tokens,
 * averaged over sentences (Shark-NLP/DiffuSeq `scripts/eval_seq2seq.py`). Numbers are on the 0-1
 * scale, as in DiffuSeq's tables.
 *
 * Argument order. NLTK's signature is `sentence_bleu(references, hypothesis)`, but DiffuSeq calls
 *
 *     sentence_bleu([recover.split()], reference.split(), smoothing_function=method4)
 *
 * i.e. the model output is passed as the (only) *reference* and the gold text as the *hypothesis*.
 * The roles are swapped: precision is measured on the gold n-grams, the brevity penalty fires when
 * the gold text is shorter than the output, and method4's length term uses the gold length. The
 * number is therefore not NLTK's BLEU of the output. {@link sentenceBleu} reproduces DiffuSeq's
 * order by default (`order: 'diffuseq'`, so scores compare with DiffuSeq's tables) and offers the
 * documented NLTK order (`order: 'nltk'`: output = hypothesis, all references used).
 *
 * NLTK version. Semantics are those of current NLTK (3.9 / 3.10): precisions are unnormalised
 * fractions (method4 divides by the true n-gram count), and an order whose precision is still 0
 * after smoothing is left out of the geometric mean. That happens only when the hypothesis has one
 * token (method4 smooths only when `hyp_len > 1`); older NLTK raised `ValueError: math domain error`
 * there, so such sentences cannot occur in numbers computed with it.
 */
import { closestRefLength } from './bleu.js';
import { countNgrams, fsum, mean, pySplit } from './text.js';

/** Which NLTK smoothing to apply: `method4` (DiffuSeq's), or `method0` (NLTK's default, none). */
export type NltkSmoothing = 'method4' | 'method0';

/** Options of {@link nltkSentenceBleu}. */
export interface NltkBleuOptions {
  /** N-gram weights (default 0.25 x 4). */
  readonly weights?: readonly number[];
  /** Smoothing (default `method4`). */
  readonly smoothing?: NltkSmoothing;
  /** method4's k (NLTK's `SmoothingFunction(k=5)` default). */
  readonly k?: number;
}

/** Python's `sys.float_info.min`, which NLTK's method0 substitutes for a zero precision. */
const FLOAT_MIN = 2.2250738585072014e-308;

/**
 * NLTK `sentence_bleu(references, hypothesis, weights, smoothing_function)` on token lists.
 * Returns 0 when no unigram matches (NLTK returns the integer 0 there).
 */
export function nltkSentenceBleu(
  references: readonly (readonly string[])[],
  hypothesis: readonly string[],
  opts: NltkBleuOptions = {},
): number {
  const weights = opts.weights ?? [0.25, 0.25, 0.25, 0.25];
  const k = opts.k ?? 5;
  // modified precision per order, kept as (numerator, denominator) like NLTK's unnormalised Fraction
  const num: number[] = [];
  const den: number[] = [];
  for (let n = 1; n <= weights.length; n++) {
    const counts = countNgrams(hypothesis, n);
    const maxRef = new Map<string, number>();
    for (const ref of references) {
      const rc = countNgrams(ref, n);
      for (const g of counts.keys()) maxRef.set(g, Math.max(maxRef.get(g) ?? 0, rc.get(g) ?? 0));
    }
    let clipped = 0;
    let total = 0;
    for (const [g, c] of counts) {
      clipped += Math.min(c, maxRef.get(g) ?? 0);
      total += c;
    }
    num.push(clipped);
    // at least 1, so that an order longer than the hypothesis gives 0/1, not 0/0
    den.push(Math.max(1, total));
  }
  const hypLen = hypothesis.length;
  const refLen = closestRefLength(
    hypLen,
    references.map((r) => r.length),
  );
  const bp = hypLen > refLen ? 1 : hypLen === 0 ? 0 : Math.exp(1 - refLen / hypLen);
  if (num[0] === 0) return 0;
  const p: number[] = num.map((x, i) => x / den[i]!);
  if ((opts.smoothing ?? 'method4') === 'method4') {
    let incvnt = 1;
    for (let i = 0; i < p.length; i++) {
      if (num[i] === 0 && hypLen > 1) {
        // same operation order as NLTK: 1 / (2**incvnt * k / ln(hyp_len)) / denominator
        const numerator = 1 / ((2 ** incvnt * k) / Math.log(hypLen));
        p[i] = numerator / den[i]!;
        incvnt++;
      }
    }
  } else {
    for (let i = 0; i < p.length; i++) if (num[i] === 0) p[i] = FLOAT_MIN;
  }
  const terms: number[] = [];
  for (let i = 0; i < weights.length; i++) if (p[i]! > 0) terms.push(weights[i]! * Math.log(p[i]!));
  return bp * Math.exp(fsum(terms));
}

/**
 * DiffuSeq's `get_bleu(recover, reference)`: NLTK method4 sentence BLEU with `recover` (the model
 * output) as the reference and `reference` (the gold text) as the hypothesis, on whitespace tokens.
 */
export function diffuseqBleu(recover: string, reference: string): number {
  return nltkSentenceBleu([pySplit(recover)], pySplit(reference));
}

/** Argument order of {@link sentenceBleu}; see the module documentation. */
export type SentenceBleuOrder = 'diffuseq' | 'nltk';

/** The sentence-bleu argument orders. */
export const SENTENCE_BLEU_ORDERS: readonly SentenceBleuOrder[] = ['diffuseq', 'nltk'];

/**
 * Sentence BLEU of one output.
 *
 * - `diffuseq` (default): DiffuSeq's number, `get_bleu(hyp, refs[0])`; only the first reference is
 *   used, since DiffuSeq has exactly one.
 * - `nltk`: `sentence_bleu(refs split, hyp split, method4)`, the documented NLTK order, with every
 *   reference.
 */
export function sentenceBleu(hyp: string, refs: readonly string[], order: SentenceBleuOrder = 'diffuseq'): number {
  if (order === 'diffuseq') return diffuseqBleu(hyp, refs[0] ?? '');
  return nltkSentenceBleu(
    refs.map((r) => pySplit(r)),
    pySplit(hyp),
  );
}

/** Mean sentence BLEU over a corpus (DiffuSeq's "avg BLEU score"); `refs[i]` are sentence i's references. */
export function meanSentenceBleu(hyps: readonly string[], refs: readonly (readonly string[])[], order: SentenceBleuOrder = 'diffuseq'): number {
  return mean(hyps.map((h, i) => sentenceBleu(h, refs[i] ?? [], order)));
}
