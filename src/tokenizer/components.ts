/**
 * The text-processing stages of a tokenizer pipeline, as Hugging Face `tokenizers` splits them:
 * a normalizer rewrites the text, a pre-tokenizer cuts it into words, a model turns each word into ids.
 * Only what the pipelines we load need is here (BERT, GPT-2 / RoBERTa style byte-level BPE and the
 * simple building blocks around them); each stage writes back the JSON it was read from, so a loaded
 * tokenizer saves to a file HF loads the same way.
 */

import { lowercaseChars, WHITE_SPACE_CLASS, WORD_CLASS } from './unicode.js';

const LEADING_WS = new RegExp(`^[${WHITE_SPACE_CLASS}]+`, 'u');
const TRAILING_WS = new RegExp(`[${WHITE_SPACE_CLASS}]+$`, 'u');
const NON_WS_RUNS = new RegExp(`[^${WHITE_SPACE_CLASS}]+`, 'gu');

/** A JSON value (what `tokenizer.json` holds). */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
/** A JSON object. */
export type JsonObject = { [key: string]: Json };

/** Rewrites text before it is cut into words (lowercasing, accent stripping, Unicode forms). */
export interface Normalizer {
  normalize(text: string): string;
  /** The `normalizer` entry of `tokenizer.json`. */
  toJSON(): JsonObject;
}

/** Cuts normalised text into words; the model tokenizes each word on its own. */
export interface PreTokenizer {
  /** Appends the words of `text` to `out`. */
  split(text: string, out: string[]): void;
  /** The `pre_tokenizer` entry of `tokenizer.json`. */
  toJSON(): JsonObject;
}

/** HF `Lowercase`. */
export class LowercaseNormalizer implements Normalizer {
  normalize(text: string): string {
    return lowercaseChars(text);
  }
  toJSON(): JsonObject {
    return { type: 'Lowercase' };
  }
}

/** HF `NFC`, `NFD`, `NFKC`, `NFKD`. */
export class UnicodeFormNormalizer implements Normalizer {
  constructor(readonly form: 'NFC' | 'NFD' | 'NFKC' | 'NFKD') {}
  normalize(text: string): string {
    return text.normalize(this.form);
  }
  toJSON(): JsonObject {
    return { type: this.form };
  }
}

/** HF `StripAccents`: drops combining marks (General_Category M); usually after `NFD`. */
export class StripAccentsNormalizer implements Normalizer {
  normalize(text: string): string {
    return text.replace(/\p{M}/gu, '');
  }
  toJSON(): JsonObject {
    return { type: 'StripAccents' };
  }
}

/** HF `Strip`: removes leading and/or trailing Unicode whitespace. */
export class StripNormalizer implements Normalizer {
  constructor(readonly left: boolean, readonly right: boolean) {}
  normalize(text: string): string {
    let s = text;
    if (this.left) s = s.replace(LEADING_WS, '');
    if (this.right) s = s.replace(TRAILING_WS, '');
    return s;
  }
  toJSON(): JsonObject {
    return { type: 'Strip', strip_left: this.left, strip_right: this.right };
  }
}

/** HF `Sequence` of normalizers, applied in order. */
export class SequenceNormalizer implements Normalizer {
  constructor(readonly parts: readonly Normalizer[]) {}
  normalize(text: string): string {
    let s = text;
    for (const p of this.parts) s = p.normalize(s);
    return s;
  }
  toJSON(): JsonObject {
    return { type: 'Sequence', normalizers: this.parts.map((p) => p.toJSON()) };
  }
}

/** HF `WhitespaceSplit`: words are the runs of non-whitespace. */
export class WhitespaceSplitPreTokenizer implements PreTokenizer {
  split(text: string, out: string[]): void {
    const m = text.match(NON_WS_RUNS);
    if (m) for (const w of m) out.push(w);
  }
  toJSON(): JsonObject {
    return { type: 'WhitespaceSplit' };
  }
}

/** HF `Whitespace`: `\w+|[^\w\s]+` with Rust's Unicode `\w` and `\s`. */
export class WhitespacePreTokenizer implements PreTokenizer {
  private static readonly RE = new RegExp(`[${WORD_CLASS}]+|[^${WORD_CLASS}${WHITE_SPACE_CLASS}]+`, 'gu');
  split(text: string, out: string[]): void {
    const m = text.match(WhitespacePreTokenizer.RE);
    if (m) for (const w of m) out.push(w);
  }
  toJSON(): JsonObject {
    return { type: 'Whitespace' };
  }
}

/** HF `Sequence` of pre-tokenizers: each splits every piece the previous one produced. */
export class SequencePreTokenizer implements PreTokenizer {
  constructor(readonly parts: readonly PreTokenizer[]) {}
  split(text: string, out: string[]): void {
    let pieces = [text];
    for (const p of this.parts) {
      const next: string[] = [];
      for (const piece of pieces) p.split(piece, next);
      pieces = next;
    }
    for (const p of pieces) out.push(p);
  }
  toJSON(): JsonObject {
    return { type: 'Sequence', pretokenizers: this.parts.map((p) => p.toJSON()) };
  }
}

/** Turns one word (a pre-tokenizer output) into ids: WordPiece or BPE. */
export interface TokenModel {
  /** `WordPiece` or `BPE`, the `model.type` of `tokenizer.json`. */
  readonly type: 'WordPiece' | 'BPE';
  /** Token -> id of the model's own vocabulary (added tokens are kept apart). */
  readonly vocab: ReadonlyMap<string, number>;
  /** Id -> token; undefined where the vocabulary has a hole. */
  readonly tokens: readonly (string | undefined)[];
  /** Id of the model's unknown token, if it has one. */
  readonly unkId: number | undefined;
  /** Prefix of word-internal pieces (`##` for WordPiece), if any. */
  readonly continuingPrefix: string | undefined;
  /** Appends the ids of `word` to `out`. */
  tokenize(word: string, out: number[]): void;
  /** The `model` entry of `tokenizer.json`. */
  toJSON(): JsonObject;
}

/** Id -> token array of a token -> id map. */
export function invertVocab(vocab: ReadonlyMap<string, number>): (string | undefined)[] {
  let n = 0;
  for (const id of vocab.values()) n = Math.max(n, id + 1);
  const tokens = new Array<string | undefined>(n).fill(undefined);
  for (const [tok, id] of vocab) tokens[id] = tok;
  return tokens;
}

/**
 * The vocabulary as a JSON object in id order, as HF writes it (JavaScript lists integer-like keys
 * such as "7" first; readers do not care). Keys are defined, not assigned, so a token named
 * `__proto__` is an ordinary key.
 */
export function vocabToJSON(tokens: readonly (string | undefined)[]): JsonObject {
  const o: JsonObject = {};
  tokens.forEach((t, id) => {
    if (t !== undefined) Object.defineProperty(o, t, { value: id, enumerable: true, writable: true, configurable: true });
  });
  return o;
}
