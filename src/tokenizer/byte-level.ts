/**
 * GPT-2's byte-level encoding: text is UTF-8 encoded and every byte is shown as one printable
 * character, so a BPE vocabulary over those characters covers every string with no unknown token and
 * decodes back to exactly the input bytes.
 */
import type { JsonObject, PreTokenizer } from './components.js';
import { WHITE_SPACE_CLASS } from './unicode.js';

/**
 * Byte -> character. Printable Latin-1 bytes (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) stand for themselves;
 * the other 68 (controls, space, DEL, NBSP, soft hyphen) take U+0100, U+0101, ... in byte order, so
 * that no token contains a space or a control character (space is `Ġ`, U+0120; newline `Ċ`, U+010A).
 */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const chars: string[] = new Array<string>(256);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    chars[b] = String.fromCharCode(printable ? b : next++);
  }
  return chars;
})();

/** Character code -> byte (-1 for characters outside the byte alphabet). Codes are all below 324. */
const CHAR_TO_BYTE: Int16Array = (() => {
  const t = new Int16Array(324).fill(-1);
  BYTE_TO_CHAR.forEach((c, b) => {
    t[c.charCodeAt(0)] = b;
  });
  return t;
})();

/**
 * GPT-2's pre-tokenizer pattern, with `\s` spelled out as Unicode White_Space (HF runs it with
 * Oniguruma, whose `\s` differs from JavaScript's): contractions, an optional space plus a run of
 * letters, of digits, or of other symbols, whitespace not followed by a non-space (so the last space
 * of a run goes with the next word), then any remaining whitespace.
 */
export const GPT2_PATTERN = new RegExp(
  `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^${WHITE_SPACE_CLASS}\\p{L}\\p{N}]+|[${WHITE_SPACE_CLASS}]+(?![^${WHITE_SPACE_CLASS}])|[${WHITE_SPACE_CLASS}]+`,
  'gu',
);

const encoder = new TextEncoder();

/** The byte-level form of a string: its UTF-8 bytes as alphabet characters. */
export function toByteLevel(text: string): string {
  let ascii = true;
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) >= 0x80) {
      ascii = false;
      break;
    }
  }
  let out = '';
  if (ascii) {
    for (let i = 0; i < text.length; i++) out += BYTE_TO_CHAR[text.charCodeAt(i)]!;
    return out;
  }
  // lone surrogates cannot be UTF-8 encoded; TextEncoder writes U+FFFD for them
  for (const b of encoder.encode(text)) out += BYTE_TO_CHAR[b]!;
  return out;
}

/**
 * Byte-level characters back to text. Characters outside the byte alphabet (an added token such as
 * `[CLS]` is plain ASCII, which is inside it; others need not be) contribute their own UTF-8 bytes.
 * Invalid UTF-8 (a token sequence cut inside a character) decodes to U+FFFD, as HF's lossy decoding.
 */
export function fromByteLevel(chars: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < chars.length; i++) {
    const c = chars.charCodeAt(i);
    const b = c < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[c]! : -1;
    if (b >= 0) bytes.push(b);
    else {
      // a code point outside the alphabet: copy its UTF-8 bytes (whole surrogate pair at once)
      const cp = chars.codePointAt(i)!;
      const ch = String.fromCodePoint(cp);
      for (const x of encoder.encode(ch)) bytes.push(x);
      if (cp > 0xffff) i++;
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/** Options of {@link ByteLevelPreTokenizer}, as in `tokenizer.json`. */
export interface ByteLevelOptions {
  /** Prepend a space when the text does not start with one (RoBERTa; GPT-2 false). */
  readonly addPrefixSpace?: boolean;
  /** Split with the GPT-2 pattern first (default true). */
  readonly useRegex?: boolean;
  /** Only affects offsets in HF; kept so that the file round-trips. */
  readonly trimOffsets?: boolean;
}

/** HF `ByteLevel` pre-tokenizer: GPT-2 split, then each word in byte-level characters. */
export class ByteLevelPreTokenizer implements PreTokenizer {
  readonly addPrefixSpace: boolean;
  readonly useRegex: boolean;
  readonly trimOffsets: boolean;
  constructor(opts: ByteLevelOptions = {}) {
    this.addPrefixSpace = opts.addPrefixSpace ?? false;
    this.useRegex = opts.useRegex ?? true;
    this.trimOffsets = opts.trimOffsets ?? true;
  }

  /** The words of `text` in their raw (not yet byte-level) form; BPE caches on these. */
  splitRaw(text: string, out: string[]): void {
    const s = this.addPrefixSpace && !text.startsWith(' ') ? ` ${text}` : text;
    if (!this.useRegex) {
      if (s) out.push(s);
      return;
    }
    const m = s.match(GPT2_PATTERN);
    if (m) for (const w of m) out.push(w);
  }

  split(text: string, out: string[]): void {
    const raw: string[] = [];
    this.splitRaw(text, raw);
    for (const w of raw) out.push(toByteLevel(w));
  }

  toJSON(): JsonObject {
    return { type: 'ByteLevel', add_prefix_space: this.addPrefixSpace, trim_offsets: this.trimOffsets, use_regex: this.useRegex };
  }
}
