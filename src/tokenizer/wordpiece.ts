/**
 * The WordPiece model (BERT): each word is cut greedily into the longest vocabulary entries from the
 * left, pieces after the first carrying the `##` prefix; a word that cannot be covered, or that is
 * longer than `maxInputCharsPerWord` code points, becomes the single unknown token.
 */
import type { JsonObject, TokenModel } from './components.js';
import { invertVocab, vocabToJSON } from './components.js';
import { codePointLength } from './unicode.js';

/** Options of {@link WordPieceModel}, as in `tokenizer.json` / BERT. */
export interface WordPieceOptions {
  /** Default `[UNK]`; must be in the vocabulary. */
  readonly unkToken?: string;
  /** Default `##`. */
  readonly continuingSubwordPrefix?: string;
  /** Longer words (in code points) are `[UNK]`; default 100. */
  readonly maxInputCharsPerWord?: number;
}

/** Words seen this often are cached; beyond it the cache starts over (bounded memory). */
const CACHE_LIMIT = 200_000;

/** HF / BERT WordPiece. */
export class WordPieceModel implements TokenModel {
  readonly type = 'WordPiece' as const;
  readonly tokens: readonly (string | undefined)[];
  readonly unkToken: string;
  readonly unkId: number;
  readonly prefix: string;
  readonly maxInputCharsPerWord: number;
  get continuingPrefix(): string {
    return this.prefix;
  }
  /** Longest token in UTF-16 units (prefix not counted): no longer match needs to be tried. */
  private readonly maxPieceLength: number;
  private cache = new Map<string, readonly number[]>();

  /** @throws Error when the unknown token is not in the vocabulary (the loaders wrap it). */
  constructor(readonly vocab: ReadonlyMap<string, number>, opts: WordPieceOptions = {}) {
    this.unkToken = opts.unkToken ?? '[UNK]';
    this.prefix = opts.continuingSubwordPrefix ?? '##';
    this.maxInputCharsPerWord = opts.maxInputCharsPerWord ?? 100;
    const unk = vocab.get(this.unkToken);
    if (unk === undefined) throw new Error(`the unknown token '${this.unkToken}' is not in the vocabulary`);
    this.unkId = unk;
    this.tokens = invertVocab(vocab);
    let maxLen = 1;
    for (const t of vocab.keys()) {
      const len = this.prefix && t.startsWith(this.prefix) ? t.length - this.prefix.length : t.length;
      if (len > maxLen) maxLen = len;
    }
    this.maxPieceLength = maxLen;
  }

  tokenize(word: string, out: number[]): void {
    let ids = this.cache.get(word);
    if (ids === undefined) {
      ids = this.split(word);
      if (this.cache.size >= CACHE_LIMIT) this.cache = new Map();
      this.cache.set(word, ids);
    }
    for (const id of ids) out.push(id);
  }

  /** Greedy longest-match-first, exactly as HF: the first uncoverable position makes the whole word `[UNK]`. */
  private split(word: string): readonly number[] {
    if (codePointLength(word) > this.maxInputCharsPerWord) return [this.unkId];
    const ids: number[] = [];
    const n = word.length;
    let start = 0;
    while (start < n) {
      let end = Math.min(n, start + this.maxPieceLength);
      // never cut a surrogate pair: step back to the pair's start
      if (end < n && isLowSurrogate(word.charCodeAt(end)) && isHighSurrogate(word.charCodeAt(end - 1))) end--;
      let found = -1;
      while (end > start) {
        const piece = word.slice(start, end);
        const id = this.vocab.get(start > 0 ? this.prefix + piece : piece);
        if (id !== undefined) {
          found = id;
          break;
        }
        end -= end - 2 >= start && isLowSurrogate(word.charCodeAt(end - 1)) && isHighSurrogate(word.charCodeAt(end - 2)) ? 2 : 1;
      }
      if (found < 0) return [this.unkId];
      ids.push(found);
      start = end;
    }
    return ids;
  }

  toJSON(): JsonObject {
    return {
      type: 'WordPiece',
      unk_token: this.unkToken,
      continuing_subword_prefix: this.prefix,
      max_input_chars_per_word: this.maxInputCharsPerWord,
      vocab: vocabToJSON(this.tokens),
    };
  }
}

function isHighSurrogate(c: number): boolean {
  return c >= 0xd800 && c <= 0xdbff;
}
function isLowSurrogate(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff;
}
