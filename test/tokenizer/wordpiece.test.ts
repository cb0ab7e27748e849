/**
 * WordPiece / BERT uncased. Expected ids are derived from the vocabulary file itself: each case names
 * by hand the words BERT's normalisation must produce, and an independent greedy longest-match over
 * the raw lines of vocab.txt (id = line index) turns them into ids.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BertNormalizer, BertPreTokenizer, cleanUpTokenization, defaultTokenizer, loadTokenizer, wordPieceFromVocabTxt } from '../../src/tokenizer/index.js';
import { bertVocabLines, repoPath, tempDir, TRICKY } from './util.js';

const VOCAB = bertVocabLines();
const UNK = VOCAB.get('[UNK]')!;

/** Reference WordPiece written from the paper's description, on code points, with no caching or bounds. */
function oracleWordPiece(word: string): number[] {
  const chars = Array.from(word);
  if (chars.length > 100) return [UNK];
  const ids: number[] = [];
  let start = 0;
  while (start < chars.length) {
    let id: number | undefined;
    let end = chars.length;
    for (; end > start; end--) {
      const piece = (start > 0 ? '##' : '') + chars.slice(start, end).join('');
      id = VOCAB.get(piece);
      if (id !== undefined) break;
    }
    if (id === undefined) return [UNK];
    ids.push(id);
    start = end;
  }
  return ids;
}

/** Text and the words (after normalisation and splitting) that BERT uncased must see, by hand. */
const CASES: readonly { text: string; words: readonly string[]; note: string }[] = [
  { text: 'Hello, world!', words: ['hello', ',', 'world', '!'], note: 'lowercase, punctuation split' },
  { text: "Don't stop.", words: ['don', "'", 't', 'stop', '.'], note: 'apostrophe is punctuation' },
  { text: 'Café naïve façade résumé Ångström ÉCOLE', words: ['cafe', 'naive', 'facade', 'resume', 'angstrom', 'ecole'], note: 'accents stripped' },
  { text: 'İstanbul ΟΔΟΣ Straße', words: ['istanbul', 'οδοσ', 'straße'], note: 'dotted I; final capital sigma lowercases to σ, not ς' },
  { text: 'e\u0301 vs \u00e9', words: ['e', 'vs', 'e'], note: 'combining and precomposed accents alike' },
  { text: '我爱北京', words: ['我', '爱', '北', '京'], note: 'each CJK ideograph is a word' },
  { text: 'abc中文def', words: ['abc', '中', '文', 'def'], note: 'CJK splits inside a word' },
  { text: '日本語のテキスト', words: ['日', '本', '語', 'のテキスト'], note: 'kana are not CJK ideographs' },
  { text: '한국어', words: ['한국어'.normalize('NFD')], note: 'Hangul is decomposed by NFD into conjoining jamo (Lo, kept)' },
  { text: 'I \u2764\ufe0f NY \u{1F600}', words: ['i', '\u2764', 'ny', '\u{1F600}'], note: 'variation selector (Mn) dropped; emoji are not punctuation' },
  { text: '  a   b\t\tc\n\nd\r\ne  ', words: ['a', 'b', 'c', 'd', 'e'], note: 'whitespace runs' },
  { text: '\u00a0x\u2003y\u3000z\u2028w', words: ['x', 'y', 'z', 'w'], note: 'Unicode spaces' },
  {
    text: '$100 + 50% = #1 @user ^_^ `x` ~y~ |p| {b} [b] <a>',
    words: ['$', '100', '+', '50', '%', '=', '#', '1', '@', 'user', '^', '_', '^', '`', 'x', '`', '~', 'y', '~', '|', 'p', '|', '{', 'b', '}', '[', 'b', ']', '<', 'a', '>'],
    note: 'every ASCII symbol is punctuation for BERT',
  },
  {
    text: '\u00abhi\u00bb \u201ex\u201c \u2013 \u2014 \u2026 \u00bfy? \u00a1z!',
    words: ['\u00ab', 'hi', '\u00bb', '\u201e', 'x', '\u201c', '\u2013', '\u2014', '\u2026', '\u00bf', 'y', '?', '\u00a1', 'z', '!'],
    note: 'Unicode P* punctuation',
  },
  { text: '\u00bd \u00b2 \u2122', words: ['\u00bd', '\u00b2', '\u2122'], note: 'No/So symbols are not punctuation, not decomposed (NFD, not NFKD)' },
  { text: 'null\u0000char zero\u200bwidth bom\ufeffhere soft\u00adhyphen', words: ['nullchar', 'zerowidth', 'bomhere', 'softhyphen'], note: 'Cc/Cf deleted, not spaces' },
  { text: 'nel\u0085next vt\u000bff\u000cx del\u007fx repl\ufffdx', words: ['nelnext', 'vtffx', 'delx', 'replx'], note: 'U+0085, VT, FF are controls first: deleted' },
  { text: 'esc\u001b[0m', words: ['esc', '[', '0m'], note: 'ESC deleted, bracket split' },
  { text: 'unaffable', words: ['unaffable'], note: 'greedy longest match' },
  { text: 'a'.repeat(100), words: ['a'.repeat(100)], note: '100 characters: still WordPiece' },
  { text: 'e\u0301'.repeat(60), words: ['e'.repeat(60)], note: '120 code points raw, 60 after normalisation: the limit applies after' },
];

describe('BERT uncased normalisation', () => {
  const norm = new BertNormalizer();
  it('cleans, pads CJK, strips accents and lowercases in HF order', () => {
    assert.equal(norm.normalize('A\u0000b\tc\u200bd\u00a0E'), 'ab cd e');
    assert.equal(norm.normalize('x中y'), 'x 中 y');
    assert.equal(norm.normalize('ΣΊΣΥΦΟΣ'), 'σισυφοσ');
    assert.equal(norm.normalize('İ'), 'i');
  });
  it('keeps case and accents when asked (cased BERT)', () => {
    const cased = new BertNormalizer({ lowercase: false });
    assert.equal(cased.normalize('Café'), 'Café');
    assert.equal(new BertNormalizer({ lowercase: false, stripAccents: true }).normalize('Café'), 'Cafe');
  });
  it('pre-tokenizer isolates punctuation and drops whitespace', () => {
    const out: string[] = [];
    new BertPreTokenizer().split("a,b  c's\u3000d", out);
    assert.deepEqual(out, ['a', ',', 'b', 'c', "'", 's', 'd']);
  });
});

describe('WordPiece ids agree with vocab.txt', () => {
  const tok = defaultTokenizer();
  for (const c of CASES) {
    it(`${c.note}: ${JSON.stringify(c.text).slice(0, 60)}`, () => {
      const expected = c.words.flatMap(oracleWordPiece);
      assert.deepEqual(tok.encode(c.text), expected);
    });
  }
  it('a word of 101 characters is [UNK], also after accent stripping', () => {
    assert.deepEqual(tok.encode('a'.repeat(101)), [UNK]);
    assert.deepEqual(tok.encode('\u00e9'.repeat(101)), [UNK]);
    assert.deepEqual(tok.encode(`x ${'ab'.repeat(51)} y`), [VOCAB.get('x')!, UNK, VOCAB.get('y')!]);
  });
  it('a word with an uncoverable character is one [UNK], not a partial split', () => {
    assert.deepEqual(tok.encode('ab\u{1F600}cd'), [UNK]);
  });
  it('known ids of bert-base-uncased', () => {
    assert.deepEqual(tok.encode('Hello, world!'), [7592, 1010, 2088, 999]);
    assert.deepEqual(tok.tokenize('unaffable'), ['una', '##ffa', '##ble']);
  });
});

describe('special tokens', () => {
  const tok = defaultTokenizer();
  it('has BERT ids and the full vocabulary', () => {
    assert.equal(tok.kind, 'wordpiece');
    assert.equal(tok.vocabSize, 30522);
    assert.deepEqual(tok.specials, { cls: 101, sep: 102, pad: 0, unk: 100 });
    assert.equal(tok.tokenToId('[MASK]'), 103);
    assert.equal(tok.idToToken(101), '[CLS]');
  });
  it('recognises special tokens written in the raw text, case-sensitively', () => {
    const hi = VOCAB.get('hi')!;
    assert.deepEqual(tok.encode('[CLS] hi [SEP]'), [101, hi, 102]);
    assert.deepEqual(tok.encode('[MASK]ed'), [103, VOCAB.get('ed')!]);
    assert.deepEqual(tok.encode('[mask]'), [VOCAB.get('[')!, VOCAB.get('mask')!, VOCAB.get(']')!]);
  });
  it('decode drops special tokens unless asked', () => {
    const hello = VOCAB.get('hello')!;
    assert.equal(tok.decode([101, hello, 102, 0, 0]), 'hello');
    assert.equal(tok.decode([101, hello, 102, 0], { skipSpecialTokens: false }), '[CLS] hello [SEP] [PAD]');
  });
  it('decode rejects ids outside the vocabulary', () => {
    assert.throws(() => tok.decode([30522]), /outside the vocabulary/);
    assert.throws(() => tok.decode([-1]), /outside the vocabulary/);
  });
});

describe('WordPiece round trip and decoding', () => {
  const tok = defaultTokenizer();
  it('decode(encode(x)) gives the normalised words back (no [UNK] cases)', () => {
    for (const c of CASES) {
      if (tok.encode(c.text).includes(UNK)) continue;
      assert.equal(tok.decode(tok.encode(c.text), { cleanup: false }), c.words.join(' '), c.note);
    }
  });
  it('glues ## pieces and applies the cleanup of clean_up_tokenization_spaces', () => {
    assert.equal(tok.decode(tok.encode("Hello , world . Don't you're I'm ! ?")), "hello, world. don't you're i'm!?");
    assert.equal(tok.decode(tok.encode('unaffable')), 'unaffable');
    assert.equal(cleanUpTokenization("a . b , c ' d n't e 's f 've g 're h 'm"), "a. b, c'dn't e's f've g're h'm");
  });
});

describe('vocab.txt and tokenizer.json', () => {
  const fromJson = defaultTokenizer();
  const fromTxt = loadTokenizer(repoPath('resources/tokenizers/bert-base-uncased/vocab.txt'));
  it('give the same tokenizer', () => {
    assert.equal(fromTxt.fingerprint(), fromJson.fingerprint());
    assert.deepEqual(fromTxt.specials, fromJson.specials);
    for (const t of TRICKY) assert.deepEqual(fromTxt.encode(t), fromJson.encode(t), JSON.stringify(t));
  });
  it('the fingerprint is 16 hex digits and changes with the vocabulary', () => {
    assert.match(fromJson.fingerprint(), /^[0-9a-f]{16}$/);
    const lines = [...VOCAB.keys()];
    lines[2000] = 'something-else';
    assert.notEqual(wordPieceFromVocabTxt(lines.join('\n') + '\n', 'x').fingerprint(), fromJson.fingerprint());
  });
  it('save writes files that load back identically', () => {
    const t = tempDir();
    try {
      fromJson.save(t.dir);
      const again = loadTokenizer(t.dir);
      assert.equal(again.fingerprint(), fromJson.fingerprint());
      for (const s of TRICKY) assert.deepEqual(again.encode(s), fromJson.encode(s));
      const viaTxt = loadTokenizer(`${t.dir}/vocab.txt`);
      assert.equal(viaTxt.fingerprint(), fromJson.fingerprint());
    } finally {
      t.cleanup();
    }
  });
});
