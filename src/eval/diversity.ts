/**
 * DiffuSeq's diversity measures (Shark-NLP/DiffuSeq `scripts/eval_seq2seq.py`), on whitespace tokens:
 *
 * - `dist1`: per output, distinct unigrams / unigrams (0 for an empty output), averaged over outputs
 *   (`distinct_n_gram([recover], 1)`).
 * - `selfBleu` and `div4` need several samples per source (DiffuSeq decodes with several seeds, one
 *   output file per seed). For the K samples of one source, self-BLEU is the mean over the pairs
 *   i < j of `get_bleu(s_i, s_j)` (DiffuSeq's swapped-order method4 BLEU, see sentence-bleu.ts; 0
 *   when K < 2), and div-4 is distinct 4-grams / 4-grams pooled over the K samples (n-grams never
 *   cross samples; 0 when there is none). Both are averaged over sources. Lower self-BLEU and higher
 *   div-4 mean more diverse samples.
 *
 * All on the 0-1 scale.
 */
import { diffuseqBleu } from './sentence-bleu.js';
import { countNgrams, mean, pySplit } from './text.js';

/** Distinct n-grams / n-grams of one text (0 when it has no n-gram). */
export function distinctN(text: string, n: number): number {
  const tokens = pySplit(text);
  const total = Math.max(0, tokens.length - n + 1);
  return total === 0 ? 0 : countNgrams(tokens, n).size / total;
}

/** DiffuSeq's dist-1: mean over outputs of each output's distinct-unigram ratio. */
export function dist1(hyps: readonly string[]): number {
  return mean(hyps.map((h) => distinctN(h, 1)));
}

/** DiffuSeq's `distinct_n_gram_inter_sent`: distinct / total n-grams pooled over several texts. */
export function distinctNPooled(texts: readonly string[], n: number): number {
  const seen = new Set<string>();
  let total = 0;
  for (const t of texts) {
    const counts = countNgrams(pySplit(t), n);
    for (const [g, c] of counts) {
      seen.add(g);
      total += c;
    }
  }
  return total === 0 ? 0 : seen.size / total;
}

/** Self-BLEU of the samples of one source: mean of `get_bleu(s_i, s_j)` over i < j (0 for fewer than 2). */
export function selfBleuOfSet(samples: readonly string[]): number {
  const scores: number[] = [];
  for (let i = 0; i < samples.length; i++) {
    for (let j = i + 1; j < samples.length; j++) scores.push(diffuseqBleu(samples[i]!, samples[j]!));
  }
  return scores.length === 0 ? 0 : mean(scores);
}

/** Self-BLEU and div-4 of a set of samples, and their means over sources. */
export interface DiversityScores {
  /** Mean over sources of the pairwise self-BLEU of their samples. */
  readonly selfBleu: number;
  /** Mean over sources of the pooled distinct-4-gram ratio of their samples. */
  readonly div4: number;
}

/**
 * DiffuSeq's `diversityOfSet`, averaged over sources.
 *
 * @param samples - `samples[i]` = the K outputs generated for source i (K >= 2 for a meaningful
 *   self-BLEU). Sources with no sample are skipped, as DiffuSeq does.
 */
export function diversity(samples: readonly (readonly string[])[]): DiversityScores {
  const sb: number[] = [];
  const d4: number[] = [];
  for (const set of samples) {
    if (set.length === 0) continue;
    sb.push(selfBleuOfSet(set));
    d4.push(distinctNPooled(set, 4));
  }
  return { selfBleu: mean(sb), div4: mean(d4) };
}
