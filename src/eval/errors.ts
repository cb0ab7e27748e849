/**
 * The error the metrics throw for input they cannot score (mismatched list lengths, an empty corpus,
 * a sentence without any reference where sacreBLEU needs one). It extends the package's base error,
 * so the CLI prints it as one line with exit code 2; the `eval` command catches the per-sentence
 * ones first to name the file and line instead of an index.
 */
import { MoeDiffuseqError } from '../errors.js';

/** Input that a metric cannot score. */
export class MetricError extends MoeDiffuseqError {
  /**
   * @param metric - which function refused (e.g. `bleu`, `evaluate`).
   * @param detail - what is wrong, in words.
   * @param index - the 0-based sentence index at fault, when one sentence is.
   */
  constructor(
    readonly metric: string,
    readonly detail: string,
    readonly index?: number,
  ) {
    super(`${metric}: ${detail}`);
  }
}
