/**
 * Added tokens (`added_tokens` in `tokenizer.json`): strings such as `[CLS]` or `<|endoftext|>` that
 * are found in the input before any normalisation or splitting and mapped straight to their id, as HF
 * does (and as DiffuSeq's BERT tokenizer does). Matching is leftmost-longest over all of them.
 */
import type { Json, JsonObject } from './components.js';
import { WHITE_SPACE_CLASS, WORD_CLASS } from './unicode.js';

/** One added token, with HF's flags. */
export interface AddedToken {
  readonly id: number;
  readonly content: string;
  /** Only matches when not inside a word (Rust `\w` on both sides). */
  readonly singleWord: boolean;
  /** Swallows the whitespace on its left. */
  readonly lstrip: boolean;
  /** Swallows the whitespace on its right. */
  readonly rstrip: boolean;
  /** Matched in the normalised text (its content normalised too) instead of the raw text. */
  readonly normalized: boolean;
  /** Dropped when decoding with `skipSpecialTokens` (the default). */
  readonly special: boolean;
}

/** A piece of text still to be tokenized, or the id of an added token found in it. */
export type Piece = string | number;

const WORD_BEFORE = new RegExp(`[${WORD_CLASS}]$`, 'u');
const WORD_AFTER = new RegExp(`^[${WORD_CLASS}]`, 'u');
const WS_BEFORE = new RegExp(`[${WHITE_SPACE_CLASS}]+$`, 'u');
const WS_AFTER = new RegExp(`^[${WHITE_SPACE_CLASS}]+`, 'u');

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/** One matcher: a regex whose alternatives are tried longest first, so it finds leftmost-longest matches. */
class Matcher {
  private readonly re: RegExp | null;
  private readonly byPattern = new Map<string, AddedToken>();
  constructor(entries: readonly (readonly [string, AddedToken])[]) {
    for (const [pattern, tok] of entries) if (pattern && !this.byPattern.has(pattern)) this.byPattern.set(pattern, tok);
    const patterns = [...this.byPattern.keys()].sort((a, b) => b.length - a.length);
    // literal alternatives need no `u` flag (surrogate pairs match unit by unit)
    this.re = patterns.length ? new RegExp(patterns.map(escapeRegex).join('|'), 'g') : null;
  }

  /** Cuts `text` at the matches; appends text pieces and ids to `out`. */
  split(text: string, out: Piece[]): void {
    if (this.re === null || text === '') {
      if (text) out.push(text);
      return;
    }
    const re = this.re;
    re.lastIndex = 0;
    let done = 0;
    for (let m = re.exec(text); m !== null; m = re.exec(text)) {
      const tok = this.byPattern.get(m[0])!;
      let start = m.index;
      let stop = start + m[0].length;
      if (tok.singleWord && (WORD_BEFORE.test(text.slice(Math.max(0, start - 2), start)) || WORD_AFTER.test(text.slice(stop, stop + 2)))) {
        continue;
      }
      if (tok.lstrip) {
        const ws = WS_BEFORE.exec(text.slice(done, start));
        if (ws) start -= ws[0].length;
      }
      if (tok.rstrip) {
        const ws = WS_AFTER.exec(text.slice(stop));
        if (ws) stop += ws[0].length;
        re.lastIndex = stop;
      }
      if (start > done) out.push(text.slice(done, start));
      out.push(tok.id);
      done = stop;
    }
    if (done < text.length) out.push(text.slice(done));
  }
}

/** The added tokens of a tokenizer, and the two matchers (raw and normalised text). */
export class AddedVocabulary {
  readonly tokens: readonly AddedToken[];
  readonly byId = new Map<number, AddedToken>();
  readonly byContent = new Map<string, AddedToken>();
  private readonly raw: Matcher;
  private readonly normalized: Matcher;

  /** @param normalize the tokenizer's normaliser, applied to the content of `normalized` tokens */
  constructor(tokens: readonly AddedToken[], normalize: (s: string) => string) {
    this.tokens = [...tokens].sort((a, b) => a.id - b.id);
    for (const t of this.tokens) {
      this.byId.set(t.id, t);
      this.byContent.set(t.content, t);
    }
    this.raw = new Matcher(this.tokens.filter((t) => !t.normalized).map((t) => [t.content, t] as const));
    this.normalized = new Matcher(this.tokens.filter((t) => t.normalized).map((t) => [normalize(t.content), t] as const));
  }

  /** Splits raw text on the tokens that are matched before normalisation. */
  splitRaw(text: string, out: Piece[]): void {
    this.raw.split(text, out);
  }

  /** Splits normalised text on the tokens that are matched after normalisation. */
  splitNormalized(text: string, out: Piece[]): void {
    this.normalized.split(text, out);
  }

  /** The `added_tokens` entry of `tokenizer.json`. */
  toJSON(): Json[] {
    return this.tokens.map(
      (t): JsonObject => ({
        id: t.id,
        content: t.content,
        single_word: t.singleWord,
        lstrip: t.lstrip,
        rstrip: t.rstrip,
        normalized: t.normalized,
        special: t.special,
      }),
    );
  }
}
