/**
 * SPEC section 1: how a (src, trg) pair becomes the model's input.
 *
 *   `[CLS] src [SEP] trg [SEP] [PAD] ... [PAD]` (length seqLen), inputMask 0 on `[CLS] src [SEP]`
 *   and 1 on everything after it (target and padding are noised).
 *
 * A plain document is a pair with an empty source: `[CLS] [SEP] doc [SEP]`, inputMask 1 from position 2.
 *
 * Trimming (SPEC: "trim the longer side first until it fits"): one token at a time from the end of the
 * longer side; when both sides are equally long, the source loses the token. Reasons: the target is
 * what the loss is computed on, so of two equal sides it is the one kept whole; and trimming one token
 * per step (DiffuSeq's code drops one from each side on a tie) never trims more than needed to fit.
 *
 * Long documents can instead be cut into windows (`documents: 'chunk'`) of seqLen - 3 tokens that
 * overlap by `overlap` tokens; see {@link chunkSpans}.
 */
import { ConfigError, InputError } from '../errors.js';
import type { SpecialTokens, Tokenizer } from '../tokenizer/tokenizer.js';

/** Specials in a sequence: `[CLS]`, the `[SEP]` after the source and the `[SEP]` after the target. */
export const SPECIALS_PER_SEQUENCE = 3;

/** One encoded example: the unpadded sequence and where its kept-clean prefix ends. */
export interface EncodedExample {
  /** `[CLS] src [SEP] trg [SEP]` (after trimming), without padding; length at most seqLen. */
  readonly ids: Int32Array;
  /** Length of `[CLS] src [SEP]`: inputMask is 0 before this position and 1 from it on. */
  readonly srcEnd: number;
  /** Index of the example (in the list given to {@link encodeExamples}) this came from; chunks share it. */
  readonly example: number;
  /** The source text, untrimmed (only with `keepText`). */
  readonly srcText?: string;
  /** The target text, untrimmed; for a chunk, the chunk's decoded tokens (only with `keepText`). */
  readonly trgText?: string;
}

/** What to do with a document (empty source) longer than seqLen - 3 tokens. */
export type LongDocuments = 'trim' | 'chunk';

/** Options of {@link encodeExamples}. */
export interface EncodeOptions {
  /** Sequence length N (at least 4: the three specials and one target token). */
  seqLen: number;
  /** `trim` (default, SPEC's literal rule) or `chunk` (overlapping windows) for long documents. */
  documents?: LongDocuments;
  /** Tokens shared by consecutive chunks (default 0; less than seqLen - 3). */
  overlap?: number;
  /** Keep the texts on the encoded examples (for evaluation and sampling output). Default false. */
  keepText?: boolean;
}

/** Anything with a source and a target text; `file` and `line` make error messages point at the data. */
export interface TextPair {
  /** Source text; empty for a plain document. */
  readonly src: string;
  /** Target text. */
  readonly trg: string;
  /** File the pair was read from, for error messages. */
  readonly file?: string;
  /** 1-based line the pair was read from, for error messages. */
  readonly line?: number;
}

/** Checks seqLen: an integer of at least 4, so that at least one target token fits. */
export function checkSeqLen(seqLen: number): void {
  if (!Number.isSafeInteger(seqLen) || seqLen < SPECIALS_PER_SEQUENCE + 1) {
    throw new ConfigError(`seqLen must be an integer >= ${SPECIALS_PER_SEQUENCE + 1}, got ${String(seqLen)}`);
  }
}

/**
 * The lengths src and trg are trimmed to so that `srcLen + trgLen <= budget` (budget = seqLen - 3):
 * repeatedly drop one token from the longer side, from the source on a tie. Computed in closed form;
 * the test checks it against that loop.
 */
export function trimLengths(srcLen: number, trgLen: number, budget: number): { src: number; trg: number } {
  if (srcLen + trgLen <= budget) return { src: srcLen, trg: trgLen };
  const shorter = Math.min(srcLen, trgLen);
  if (2 * shorter <= budget) {
    // Only the longer side is trimmed: it stays strictly longer until the sum fits, so no tie occurs.
    return srcLen <= trgLen ? { src: srcLen, trg: budget - srcLen } : { src: budget - trgLen, trg: trgLen };
  }
  // Both sides get trimmed down to a tie, then alternate starting with the source.
  return { src: Math.floor(budget / 2), trg: Math.ceil(budget / 2) };
}

/**
 * Builds `[CLS] src [SEP] trg [SEP]` from token ids, trimming as {@link trimLengths} says so that it
 * fits in seqLen. Padding is added when batching (see {@link toInputs}).
 */
export function buildSequence(
  src: ArrayLike<number>,
  trg: ArrayLike<number>,
  specials: SpecialTokens,
  seqLen: number,
  example = 0,
): EncodedExample {
  checkSeqLen(seqLen);
  const { src: s, trg: t } = trimLengths(src.length, trg.length, seqLen - SPECIALS_PER_SEQUENCE);
  const ids = new Int32Array(s + t + SPECIALS_PER_SEQUENCE);
  let p = 0;
  ids[p++] = specials.cls;
  for (let i = 0; i < s; i++) ids[p++] = src[i]!;
  ids[p++] = specials.sep;
  const srcEnd = p;
  for (let i = 0; i < t; i++) ids[p++] = trg[i]!;
  ids[p++] = specials.sep;
  return { ids, srcEnd, example };
}

/**
 * The padded model inputs of one example: `inputIds` (`[PAD]` after the sequence) and `inputMask`
 * (0 before `srcEnd`, 1 after), both of length `width` (seqLen, or a bucket's width).
 */
export function toInputs(ex: EncodedExample, width: number, pad: number): { inputIds: Int32Array; inputMask: Int32Array } {
  const inputIds = new Int32Array(width);
  const inputMask = new Int32Array(width);
  writeInputs(ex, width, pad, inputIds, inputMask, 0);
  return { inputIds, inputMask };
}

/** Writes one padded example into row `offset / width` of batch arrays (shared with batching). */
export function writeInputs(ex: EncodedExample, width: number, pad: number, inputIds: Int32Array, inputMask: Int32Array, offset: number): void {
  if (ex.ids.length > width) {
    throw new ConfigError(`an encoded example has ${ex.ids.length} tokens, more than the width ${width}; encode with the same seqLen`);
  }
  inputIds.set(ex.ids, offset);
  inputIds.fill(pad, offset + ex.ids.length, offset + width);
  inputMask.fill(0, offset, offset + ex.srcEnd);
  inputMask.fill(1, offset + ex.srcEnd, offset + width);
}

/**
 * Windows `[start, end)` over a document of `length` tokens, each at most seqLen - 3 tokens (so that
 * `[CLS] [SEP] window [SEP]` fits), starting every seqLen - 3 - overlap tokens.
 *
 * Boundaries: windows start at 0, stride, 2 stride, ...; the last window is the first that reaches the
 * end of the document and may be shorter than the others (it is padded like any short sequence, so the
 * model also sees real document ends). Every window holds at least one token no earlier window had, so
 * a document that fits in one window gives exactly one.
 */
export function chunkSpans(length: number, seqLen: number, overlap = 0): Array<[number, number]> {
  checkSeqLen(seqLen);
  const size = seqLen - SPECIALS_PER_SEQUENCE;
  if (!Number.isSafeInteger(overlap) || overlap < 0 || overlap >= size) {
    throw new ConfigError(`overlap must be an integer in [0, seqLen - 3 = ${size}), got ${String(overlap)}`);
  }
  const stride = size - overlap;
  const spans: Array<[number, number]> = [];
  for (let start = 0; ; start += stride) {
    const end = Math.min(start + size, length);
    spans.push([start, end]);
    if (end >= length) break;
  }
  return spans;
}

/**
 * Encodes one pair (or document: empty `src`) into one sequence, or into several windows when it is a
 * document, `documents` is `chunk` and it is longer than seqLen - 3 tokens.
 *
 * @throws InputError when the target encodes to no tokens at all (nothing to learn from).
 */
export function encodeExample(tokenizer: Tokenizer, pair: TextPair, options: EncodeOptions, example = 0): EncodedExample[] {
  const { seqLen } = options;
  checkSeqLen(seqLen);
  const documents = options.documents ?? 'trim';
  if (documents !== 'trim' && documents !== 'chunk') throw new ConfigError(`documents must be trim or chunk, got ${String(documents)}`);
  const src = pair.src === '' ? [] : tokenizer.encode(pair.src);
  const trg = tokenizer.encode(pair.trg);
  if (trg.length === 0) throw new InputError(pair.file ?? '<input>', pair.line, 'the target encodes to no tokens');
  const sp = tokenizer.specials;
  if (documents === 'chunk' && src.length === 0) {
    return chunkSpans(trg.length, seqLen, options.overlap ?? 0).map(([a, b]) => {
      const part = trg.slice(a, b);
      const ex = buildSequence([], part, sp, seqLen, example);
      return options.keepText ? { ...ex, srcText: '', trgText: tokenizer.decode(part) } : ex;
    });
  }
  const ex = buildSequence(src, trg, sp, seqLen, example);
  return [options.keepText ? { ...ex, srcText: pair.src, trgText: pair.trg } : ex];
}

/** Encodes a list of pairs/documents (see {@link encodeExample}); `example` fields index into `pairs`. */
export function encodeExamples(tokenizer: Tokenizer, pairs: Iterable<TextPair>, options: EncodeOptions): EncodedExample[] {
  const out: EncodedExample[] = [];
  let i = 0;
  for (const p of pairs) {
    for (const ex of encodeExample(tokenizer, p, options, i)) out.push(ex);
    i++;
  }
  return out;
}

/** Encodes a stream of pairs (e.g. a reader) straight into memory, without keeping the texts around. */
export async function encodeStream(tokenizer: Tokenizer, pairs: AsyncIterable<TextPair>, options: EncodeOptions): Promise<EncodedExample[]> {
  const out: EncodedExample[] = [];
  let i = 0;
  for await (const p of pairs) {
    for (const ex of encodeExample(tokenizer, p, options, i)) out.push(ex);
    i++;
  }
  return out;
}
