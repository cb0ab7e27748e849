/**
 * Character classes shared by the tokenizers. They follow what Hugging Face `tokenizers` (Rust) uses,
 * not JavaScript's own definitions, because our ids must agree with the ids that library produces:
 * JavaScript's `\s` includes U+FEFF and lacks U+0085, while Rust's `char::is_whitespace` and
 * Oniguruma's `\s` (used by the GPT-2 pre-tokenizer regex) are the Unicode White_Space property.
 */

/** Unicode White_Space as a regex character-class body (for use inside `[...]` with the `u` flag). */
export const WHITE_SPACE_CLASS = '\\t\\n\\v\\f\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';

/**
 * BERT's punctuation: every ASCII symbol that is not a letter, digit or space (so `$`, `+`, `^`, `` ` ``
 * count, although Unicode files them under S*), plus the Unicode P* categories.
 */
export const BERT_PUNCT_CLASS = '!-\\/:-@\\[-`{-~\\p{P}';

/** Rust regex's Unicode `\w` (used by HF's `Whitespace` pre-tokenizer and added-token word checks). */
export const WORD_CLASS = '\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}';

/** True when `s` holds only code units below 0x80 (the fast paths of the normalisers). */
export function isAscii(s: string): boolean {
  return !/[^\x00-\x7f]/.test(s);
}

/** Number of Unicode code points in `s` (what Rust's `chars().count()` gives). */
export function codePointLength(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length - 1; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n--;
        i++;
      }
    }
  }
  return n;
}

/**
 * Lowercases code point by code point, as Rust's `char::to_lowercase` does. `String#toLowerCase`
 * would turn a word-final capital sigma into final `ς`; Rust (and so HF) always gives `σ`.
 */
export function lowercaseChars(s: string): string {
  if (!s.includes('\u03a3')) return s.toLowerCase();
  let out = '';
  for (const ch of s) out += ch === '\u03a3' ? '\u03c3' : ch.toLowerCase();
  return out;
}
