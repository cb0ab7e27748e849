/**
 * BERT's text normalisation and word splitting, as Hugging Face `tokenizers` does it (its
 * `BertNormalizer` and `BertPreTokenizer`, which reproduce Google's original `BasicTokenizer`).
 *
 * The order matters and follows HF (Rust): clean text, pad CJK ideographs with spaces, strip accents
 * (NFD, then drop Mn), lowercase. Google's Python lowercases before stripping accents; the two orders
 * give the same text for every case we know of (e.g. U+0130 becomes `i` either way).
 */
import type { JsonObject, Normalizer, PreTokenizer } from './components.js';
import { BERT_PUNCT_CLASS, isAscii, lowercaseChars, WHITE_SPACE_CLASS } from './unicode.js';

/**
 * Characters `clean_text` deletes: NUL, U+FFFD and every "other" (C*: Cc, Cf, Cs, Co, Cn) except
 * tab, LF and CR, which count as whitespace. So U+000B, U+000C and U+0085, though White_Space, are
 * deleted, not turned into spaces: Rust filters controls before it maps whitespace.
 */
const CLEAN_DROP = /[^\P{C}\t\n\r]|\uFFFD/gu;
/** Whitespace that `clean_text` turns into a plain space (after the deletions above). */
const CLEAN_SPACE = /[\t\n\r\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/g;
/**
 * The "Chinese character" blocks of BERT (CJK Unified Ideographs and extensions, compatibility
 * ideographs). Hiragana, Katakana and Hangul are not in them: those scripts separate words by spaces.
 */
const CJK =
  /[\u4E00-\u9FFF\u3400-\u4DBF\u{20000}-\u{2A6DF}\u{2A700}-\u{2B73F}\u{2B740}-\u{2B81F}\u{2B920}-\u{2CEAF}\uF900-\uFAFF\u{2F800}-\u{2FA1F}]/gu;
const NONSPACING_MARK = /\p{Mn}/gu;
/** A word is one punctuation character or a run of characters that are neither space nor punctuation. */
const BERT_WORD = new RegExp(`[${BERT_PUNCT_CLASS}]|[^${WHITE_SPACE_CLASS}${BERT_PUNCT_CLASS}]+`, 'gu');

/** Options of {@link BertNormalizer}, named as in `tokenizer.json`. */
export interface BertNormalizerOptions {
  /** Delete control characters and map whitespace to a space (default true). */
  readonly cleanText?: boolean;
  /** Put spaces around CJK ideographs so each is a word (default true). */
  readonly handleChineseChars?: boolean;
  /** NFD and drop non-spacing marks; `null` means "same as lowercase" (default null). */
  readonly stripAccents?: boolean | null;
  /** Lowercase (default true: bert-base-uncased). */
  readonly lowercase?: boolean;
}

/** HF `BertNormalizer`. */
export class BertNormalizer implements Normalizer {
  readonly cleanText: boolean;
  readonly handleChineseChars: boolean;
  readonly stripAccents: boolean | null;
  readonly lowercase: boolean;

  constructor(opts: BertNormalizerOptions = {}) {
    this.cleanText = opts.cleanText ?? true;
    this.handleChineseChars = opts.handleChineseChars ?? true;
    this.stripAccents = opts.stripAccents ?? null;
    this.lowercase = opts.lowercase ?? true;
  }

  normalize(text: string): string {
    const ascii = isAscii(text);
    let s = text;
    if (this.cleanText) {
      // the fast path: printable ASCII text without tabs/newlines needs neither pass
      if (!ascii || /[\x00-\x1f\x7f]/.test(s)) s = s.replace(CLEAN_DROP, '').replace(CLEAN_SPACE, ' ');
    }
    if (ascii) return this.lowercase ? s.toLowerCase() : s;
    if (this.handleChineseChars) s = s.replace(CJK, ' $& ');
    if (this.stripAccents ?? this.lowercase) s = s.normalize('NFD').replace(NONSPACING_MARK, '');
    if (this.lowercase) s = lowercaseChars(s);
    return s;
  }

  toJSON(): JsonObject {
    return {
      type: 'BertNormalizer',
      clean_text: this.cleanText,
      handle_chinese_chars: this.handleChineseChars,
      strip_accents: this.stripAccents,
      lowercase: this.lowercase,
    };
  }
}

/**
 * HF `BertPreTokenizer`: splits on whitespace (dropped) and around every punctuation character (each
 * kept as its own word). Whitespace is Unicode White_Space, punctuation BERT's definition (ASCII
 * symbols plus Unicode P*).
 */
export class BertPreTokenizer implements PreTokenizer {
  split(text: string, out: string[]): void {
    const m = text.match(BERT_WORD);
    if (m) for (const w of m) out.push(w);
  }
  toJSON(): JsonObject {
    return { type: 'BertPreTokenizer' };
  }
}
