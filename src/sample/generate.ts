/**
 * Text in, text out: encodes sources as `[CLS] src [SEP]` followed by the positions to generate,
 * samples (SPEC section 5), decodes what lies between that [SEP] and the next [SEP]/[PAD], and with
 * K candidates picks the minimum-Bayes-risk one (highest summed sentence-BLEU against the others).
 */
import { InputError } from '../errors.js';
import { mbrSelect } from '../eval/index.js';
import type { Model } from '../model/model.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { extractTarget, SamplingGraphs, sampleIds, type SampleOptions } from './sampler.js';

/** Options of {@link generate}. */
export interface GenerateOptions extends Omit<SampleOptions, 'onStep'> {
  /** Candidates per input for MBR (1 = no MBR). */
  candidates?: number;
  /** Sequences per denoiser batch. */
  batchSize?: number;
  /** Cut sources that leave too little room for the output instead of failing. */
  truncate?: boolean;
  /** Sequence length (default: the model's seqLen); the output fills the positions after the source. */
  seqLen?: number;
  /** Most source tokens (default {@link maxSourceTokens}; at most seqLen - 4). */
  maxSource?: number;
  /** Called with (inputs done, total). */
  onProgress?: (done: number, total: number) => void;
  /** Called after every denoising step of every batch with the decoded texts (--show-steps). */
  onStep?: (step: number, total: number, texts: string[], batchStart: number) => void;
  /** Name of the input source for error messages (a file). */
  where?: string;
}

/** One generated output. */
export interface Generated {
  text: string;
  /** All K candidates (when candidates > 1), the chosen one at `chosen`. */
  candidates?: string[];
  chosen?: number;
}

/**
 * The most source tokens an input may have by default: half of seqLen - 3. Training trims a pair
 * whose sides are both long to exactly that (SPEC section 1: the longer side first), so longer
 * sources would be positions the model never saw a source in. Tasks with short targets (summaries)
 * raise it with `maxSource`.
 */
export function maxSourceTokens(seqLen: number): number {
  return Math.max(1, Math.floor((seqLen - 3) / 2));
}

/** Encodes one source as `[CLS] src [SEP]`; throws (or truncates) when empty or over `max` tokens. */
export function encodeSource(tok: Tokenizer, text: string, seqLen: number, max: number, truncate: boolean, where: string, index: number): number[] {
  if (!text.trim()) throw new InputError(where, index + 1, 'empty input (nothing to condition on)');
  const ids = tok.encode(text);
  if (ids.length === 0) throw new InputError(where, index + 1, 'the input has no tokens after tokenization');
  if (ids.length > max) {
    if (!truncate) throw new InputError(where, index + 1, `input of ${ids.length} tokens is over the limit of ${max} source tokens for seqLen ${seqLen}`, 'shorten it, raise --max-source (at most seqLen - 4), or pass --truncate');
    ids.length = max;
  }
  return [tok.specials.cls, ...ids, tok.specials.sep];
}

/** Generates an output text for each source. */
export function generate(model: Model, tok: Tokenizer, sources: readonly string[], opts: GenerateOptions): Generated[] {
  const N = opts.seqLen ?? model.config.seqLen;
  if (N > model.config.maxLen) throw new InputError(opts.where ?? 'input', undefined, `seqLen ${N} is over the model's maxLen ${model.config.maxLen}`);
  const where = opts.where ?? 'input';
  const max = opts.maxSource ?? maxSourceTokens(N);
  if (!Number.isInteger(max) || max < 1 || max > N - 4) throw new InputError(where, undefined, `the source limit must be an integer in [1, ${N - 4}] for seqLen ${N}, got ${max}`);
  const encoded = sources.map((s, i) => encodeSource(tok, s, N, max, !!opts.truncate, where, i));
  const K = Math.max(1, opts.candidates ?? 1);
  const bs = Math.max(1, opts.batchSize ?? 16);
  const { pad, sep } = tok.specials;
  // every (input, candidate) pair is one row; candidate k uses seed + k
  const texts: string[][] = sources.map(() => []);
  // on a GPU the denoiser call is recorded once per batch shape and replayed for every batch: in
  // the caller's SamplingGraphs (opts.graphs), else in one of this call's (MOE_DIFFUSEQ_GRAPHS=0:
  // plain calls); a backend without graphs ignores it
  const own = opts.graphs === undefined ? SamplingGraphs.unlessDisabled() : null;
  const graphs = own ?? opts.graphs ?? false;
  try {
    for (let k = 0; k < K; k++) {
      for (let b0 = 0; b0 < encoded.length; b0 += bs) {
        const rows = encoded.slice(b0, b0 + bs);
        const B = rows.length;
        const ids = new Int32Array(B * N).fill(pad);
        const mask = new Int32Array(B * N);
        rows.forEach((r, b) => {
          ids.set(r, b * N);
          mask.fill(1, b * N + r.length, (b + 1) * N);
        });
        const decodeRows = (tokens: ArrayLike<number>) => rows.map((r, b) => tok.decode(extractTarget(Array.from({ length: N }, (_, n) => tokens[b * N + n]!), r.length, N, sep, pad)));
        const out = sampleIds(model, ids, mask, B, N, {
          sampler: opts.sampler,
          steps: opts.steps,
          seed: opts.seed + k * 1_000_003 + b0,
          ...(opts.clamp !== undefined ? { clamp: opts.clamp } : {}),
          ...(opts.eta !== undefined ? { eta: opts.eta } : {}),
          graphs,
          ...(opts.onStep ? { onStep: (s: number, t: number, tokens: Int32Array) => opts.onStep!(s, t, decodeRows(tokens), b0) } : {}),
        });
        decodeRows(out).forEach((t, b) => texts[b0 + b]!.push(t));
        opts.onProgress?.(k * encoded.length + b0 + B, K * encoded.length);
      }
    }
  } finally {
    own?.dispose();
  }
  return texts.map((c) => {
    if (K === 1) return { text: c[0]! };
    const chosen = mbrSelect(c);
    return { text: c[chosen]!, candidates: c, chosen };
  });
}
