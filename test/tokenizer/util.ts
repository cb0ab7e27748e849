/** Shared helpers of the tokenizer tests (they run from dist/test/tokenizer). */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BYTE_TO_CHAR, type JsonObject } from '../../src/tokenizer/index.js';

/** Absolute path of a file of the repository. */
export function repoPath(rel: string): string {
  return fileURLToPath(new URL(`../../../${rel}`, import.meta.url));
}

/** GPT-2's tokenizer folder where this machine has one (not in the repository: 2.1 MB), else undefined. */
export function gpt2Dir(): string | undefined {
  for (const d of [process.env['MOE_DIFFUSEQ_GPT2_DIR'], '/work/shared/data/tokenizers/gpt2']) {
    if (d && existsSync(join(d, 'tokenizer.json'))) return d;
  }
  return undefined;
}

/** The bundled BERT vocabulary, read straight from vocab.txt: token -> line index. */
export function bertVocabLines(): Map<string, number> {
  const lines = readFileSync(repoPath('resources/tokenizers/bert-base-uncased/vocab.txt'), 'utf8').split('\n');
  const m = new Map<string, number>();
  lines.forEach((l, i) => {
    if (l !== '' || i < lines.length - 1) m.set(l, i);
  });
  return m;
}

/** A temporary folder, removed by `cleanup()`. */
export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'moe-diffuseq-tok-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * A tiny GPT-2-style tokenizer.json built by hand: ids 0..255 are the bytes (id = byte value), then
 * one id per merge in rank order, then `<|endoftext|>`. The merges are chosen so that rank, not
 * position, decides: in "the", `h e` (rank 1) beats `t h` (rank 3).
 *   rank 0 `Ġ t` -> 256 "Ġt"     rank 1 `h e` -> 257 "he"     rank 2 `Ġt he` -> 258 "Ġthe"
 *   rank 3 `t h` -> 259 "th"     rank 4 `i n` -> 260 "in"     rank 5 `in g` -> 261 "ing"
 */
export function tinyBpeJson(mergeFormat: 'strings' | 'pairs' = 'strings'): JsonObject {
  const vocab: JsonObject = {};
  BYTE_TO_CHAR.forEach((c, b) => {
    vocab[c] = b;
  });
  const merges: [string, string][] = [
    ['Ġ', 't'],
    ['h', 'e'],
    ['Ġt', 'he'],
    ['t', 'h'],
    ['i', 'n'],
    ['in', 'g'],
  ];
  merges.forEach(([a, b], r) => {
    vocab[a + b] = 256 + r;
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [{ id: 262, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      vocab,
      merges: mergeFormat === 'strings' ? merges.map(([a, b]) => `${a} ${b}`) : merges,
    },
  };
}

/**
 * Tricky strings for round trips (a superset of what tokenizer_refs.py sends to HF is not needed here:
 * these only have to come back unchanged).
 */
export const TRICKY: readonly string[] = [
  'Hello, world!',
  "Don't stop: it's 5:30 p.m., isn't it?",
  'Café naïve façade résumé Ångström ÉCOLE İstanbul ΣΊΣΥΦΟΣ Straße',
  'e\u0301 vs \u00e9, ﬁ ½ ²',
  '我爱北京天安门 日本語のテキスト 한국어 abc中文def',
  'Привет мир ελληνικά עברית العربية हिन्दी ไทย',
  'I \u2764\ufe0f NY \u{1F600}\u{1F44D}\u{1F3FD} \u{1F468}\u200d\u{1F469}\u200d\u{1F467} \u{1F972}',
  '  leading and trailing  ',
  'a   b\t\tc\n\nd\r\ne',
  '\u00a0nbsp\u2003em\u3000ideographic\u2028line\u0085nel',
  '    ',
  '',
  'a'.repeat(101),
  'supercalifragilisticexpialidocious'.repeat(4),
  '!!!???...,,,;;; $100 + 50% = #1 @user ^_^ `code` ~x~ |p| {b} [b] <a>',
  '\u00abquotes\u00bb \u201eGerman\u201c \u2018single\u2019 \u2013 \u2014 \u2026 \u00bfQu\u00e9? \u00a1S\u00ed!',
  'null\u0000char bell\u0007 esc\u001b[0m zero\u200bwidth bom\ufeff repl\ufffd soft\u00ad vt\u000bff\u000cdel\u007f',
  '3.14159 1,000,000 2024-01-01 \u0663\u0664\u0665 \u2460\u2461',
  'def f(x):\n    return x**2  # square\n',
  'https://example.com/path?q=1&r=2 user@example.org',
];
