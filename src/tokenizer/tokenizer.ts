/**
 * The tokenizer contract the rest of the package relies on (data batching, sampling, checkpoints).
 * Implementations: WordPiece (BERT, DiffuSeq's default) and byte-level BPE (GPT-2 style), loaded from
 * Hugging Face `tokenizer.json` or a WordPiece `vocab.txt`, with no network.
 */

/** Ids of the special tokens a MoE-DiffuSeq sequence needs (SPEC.md section 1). */
export interface SpecialTokens {
  /** `[CLS]` (or the tokenizer's equivalent): first token of every sequence. */
  readonly cls: number;
  /** `[SEP]`: after the source and after the target. */
  readonly sep: number;
  /** `[PAD]`: fills up to seqLen; the model produces it to end the output. */
  readonly pad: number;
  /**
   * `[UNK]` where the tokenizer has one: WordPiece's unknown token; a BPE tokenizer trained here
   * reserves `[UNK]` but never produces it (bytes cover everything); GPT-2 has none.
   */
  readonly unk: number | undefined;
}

/** A loaded tokenizer. */
export interface Tokenizer {
  /** `wordpiece` or `bpe` (byte-level). */
  readonly kind: 'wordpiece' | 'bpe';
  /** Number of ids (the model's vocabSize), added special tokens included. */
  readonly vocabSize: number;
  readonly specials: SpecialTokens;
  /** Text to ids, without special tokens around it. */
  encode(text: string): number[];
  /** Ids to text; special tokens are dropped, WordPiece `##` pieces are joined. */
  decode(ids: readonly number[]): string;
  /** The id of a token string, if it is in the vocabulary. */
  tokenToId(token: string): number | undefined;
  /** The token string of an id. */
  idToToken(id: number): string | undefined;
  /** Writes `tokenizer.json` (Hugging Face format) into `dir` (and `vocab.txt` for WordPiece). */
  save(dir: string): void;
  /** A short stable fingerprint of the vocabulary (checked when a checkpoint is loaded). */
  fingerprint(): string;
}
