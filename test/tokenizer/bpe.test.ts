/**
 * Byte-level BPE. Expected ids come from a tiny tokenizer.json built by hand in util.ts (bytes are ids
 * 0..255, merges follow), from GPT-2's well-known ids where its file is on this machine, and from a
 * naive reference implementation of rank-ordered merging.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { InputError } from '../../src/errors.js';
import { BYTE_TO_CHAR, fromByteLevel, GPT2_PATTERN, loadTokenizer, toByteLevel, tokenizerFromJSON, type JsonObject, type PipelineTokenizer } from '../../src/tokenizer/index.js';
import { gpt2Dir, repoPath, tempDir, tinyBpeJson, TRICKY } from './util.js';

describe('byte-level alphabet', () => {
  it('maps the 256 bytes to 256 distinct printable characters', () => {
    assert.equal(new Set(BYTE_TO_CHAR).size, 256);
    for (const c of BYTE_TO_CHAR) assert.doesNotMatch(c, /[\s\p{C}]/u);
    assert.equal(BYTE_TO_CHAR[0x20], '\u0120'); // 'Ġ'
    assert.equal(BYTE_TO_CHAR[0x0a], '\u010a'); // 'Ċ'
    assert.equal(BYTE_TO_CHAR[0x41], 'A');
    assert.equal(BYTE_TO_CHAR[0xa0], '\u0142'); // NBSP: 'ł'
  });
  it('round-trips every byte sequence that is valid UTF-8', () => {
    for (const t of TRICKY) assert.equal(fromByteLevel(toByteLevel(t)), t);
    assert.equal(toByteLevel('é'), '\u00c3\u00a9');
  });
  it('turns a lone surrogate into U+FFFD (it has no UTF-8 form)', () => {
    assert.equal(fromByteLevel(toByteLevel('a\ud800b')), 'a\ufffdb');
  });
});

describe('GPT-2 pre-tokenizer pattern', () => {
  const split = (s: string): string[] => s.match(GPT2_PATTERN) ?? [];
  it('splits words with their leading space, contractions, numbers, symbols', () => {
    assert.deepEqual(split('Hello world'), ['Hello', ' world']);
    assert.deepEqual(split("I'm  here   now  "), ['I', "'m", ' ', ' here', '  ', ' now', '  ']);
    assert.deepEqual(split('x123 4.5!!'), ['x', '123', ' 4', '.', '5', '!!']);
    assert.deepEqual(split("DON'T they'll"), ['DON', "'", 'T', ' they', "'ll"]);
  });
  it('treats Unicode White_Space (U+0085 included) as whitespace, as Oniguruma does', () => {
    assert.deepEqual(split('a \u0085b'), ['a', ' ', '\u0085', 'b']);
    assert.deepEqual(split('a\u00a0b'), ['a', '\u00a0', 'b']);
  });
});

describe('BPE on a hand-built tokenizer.json', () => {
  const tok = tokenizerFromJSON(tinyBpeJson(), 'tiny.json');
  it('merges by rank, not by position', () => {
    // "the": h e (rank 1) before t h (rank 3) -> t + he; " the" -> Ġt (0), he (1), Ġthe (2)
    assert.deepEqual(tok.encode('the'), [116, 257]);
    assert.deepEqual(tok.encode(' the'), [258]);
    // "thing": t h (3) before i n (4), then in g (5); " thing": Ġ t (0) takes the t first
    assert.deepEqual(tok.encode('thing'), [259, 261]);
    assert.deepEqual(tok.encode('the thing'), [116, 257, 256, 104, 261]);
    assert.deepEqual(tok.tokenize('the thing'), ['t', 'he', 'Ġt', 'h', 'ing']);
  });
  it('reads merges written as ["a", "b"] pairs (tokenizers >= 0.20) the same', () => {
    const pairs = tokenizerFromJSON(tinyBpeJson('pairs'), 'tiny.json');
    assert.equal(pairs.fingerprint(), tok.fingerprint());
    assert.deepEqual(pairs.encode('the thing'), tok.encode('the thing'));
  });
  it('matches added tokens in the text', () => {
    assert.deepEqual(tok.encode('x<|endoftext|>the'), [120, 262, 116, 257]);
  });
  it('adds [CLS], [SEP], [PAD] after the vocabulary when the file lacks them', () => {
    assert.equal(tok.vocabSize, 263 + 3);
    assert.deepEqual(tok.specials, { cls: 263, sep: 264, pad: 265, unk: undefined });
    assert.equal(tok.idToToken(264), '[SEP]');
    assert.deepEqual(tok.encode('[CLS]the[PAD]'), [263, 116, 257, 265]);
  });
  it('round-trips exactly', () => {
    for (const t of TRICKY) assert.equal(tok.decode(tok.encode(t)), t, JSON.stringify(t));
    assert.equal(tok.decode(tok.encode('x<|endoftext|>y')), 'xy');
    assert.equal(tok.decode(tok.encode('x<|endoftext|>y'), { skipSpecialTokens: false }), 'x<|endoftext|>y');
  });
  it('saves the added tokens, so a reload has the same ids and size', () => {
    const t = tempDir();
    try {
      tok.save(t.dir);
      const again = loadTokenizer(t.dir);
      assert.equal(again.vocabSize, tok.vocabSize);
      assert.deepEqual(again.specials, tok.specials);
      assert.equal(again.fingerprint(), tok.fingerprint());
      const json = JSON.parse(readFileSync(join(t.dir, 'tokenizer.json'), 'utf8')) as JsonObject;
      const added = (json['added_tokens'] as JsonObject[]).map((a) => [a['id'], a['content'], a['special']]);
      assert.deepEqual(added, [
        [262, '<|endoftext|>', true],
        [263, '[CLS]', true],
        [264, '[SEP]', true],
        [265, '[PAD]', true],
      ]);
    } finally {
      t.cleanup();
    }
  });
  it('refuses BPE without a byte-level pre-tokenizer', () => {
    const json = tinyBpeJson();
    json['pre_tokenizer'] = { type: 'Whitespace' };
    assert.throws(() => tokenizerFromJSON(json, 'x.json'), (e: unknown) => e instanceof InputError && /byte-level/.test(e.message));
  });
  it('refuses a merge whose parts are not in the vocabulary', () => {
    const json = tinyBpeJson();
    (json['model'] as JsonObject)['merges'] = ['Ġ t', 'q zz'];
    assert.throws(() => tokenizerFromJSON(json, 'x.json'), /merge 2 \('q zz'\): 'zz' is not in the vocabulary/);
  });
});

/** Naive BPE: merge the lowest-ranked adjacent pair, leftmost first, until none applies. */
function naiveBpe(word: string, ranks: Map<string, number>): string[] {
  const syms = Array.from(word);
  for (;;) {
    let best = -1;
    let bestRank = Infinity;
    for (let i = 0; i + 1 < syms.length; i++) {
      const r = ranks.get(`${syms[i]} ${syms[i + 1]}`);
      if (r !== undefined && r < bestRank) {
        bestRank = r;
        best = i;
      }
    }
    if (best < 0) return syms;
    syms.splice(best, 2, syms[best]! + syms[best + 1]!);
  }
}

describe('BPE merging agrees with a naive implementation', () => {
  const file = repoPath('test/fixtures/tokenizers/trained-small/tokenizer.json');
  const json = JSON.parse(readFileSync(file, 'utf8')) as JsonObject;
  const merges = (json['model'] as JsonObject)['merges'] as string[];
  const ranks = new Map(merges.map((m, r) => [m, r]));
  const tok = loadTokenizer(file);
  it('on long and random words (the heap path)', () => {
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const alphabet = 'the ing and  er,.\n\taeiou';
    for (let k = 0; k < 300; k++) {
      const len = 1 + rand(k < 290 ? 40 : 3000);
      let s = '';
      for (let i = 0; i < len; i++) s += alphabet[rand(alphabet.length)];
      const expected = (s.match(GPT2_PATTERN) ?? []).flatMap((w) => naiveBpe(toByteLevel(w), ranks));
      assert.deepEqual(tok.tokenize(s), expected, JSON.stringify(s.slice(0, 50)));
      assert.equal(tok.decode(tok.encode(s)), s);
    }
  });
});

describe('GPT-2 (when its tokenizer.json is on this machine)', () => {
  const dir = gpt2Dir();
  let gpt2: PipelineTokenizer | undefined;
  const get = (): PipelineTokenizer => (gpt2 ??= loadTokenizer(dir!));
  it('known ids', { skip: dir ? false : 'GPT-2 tokenizer.json not found (set MOE_DIFFUSEQ_GPT2_DIR)' }, () => {
    const t = get();
    assert.deepEqual(t.encode('Hello world'), [15496, 995]);
    assert.deepEqual(t.encode('<|endoftext|>'), [50256]);
    assert.equal(t.vocabSize, 50260);
    assert.deepEqual(t.specials, { cls: 50257, sep: 50258, pad: 50259, unk: undefined });
  });
  it('exact round trip', { skip: dir ? false : 'GPT-2 tokenizer.json not found' }, () => {
    const t = get();
    for (const s of TRICKY) assert.equal(t.decode(t.encode(s)), s, JSON.stringify(s));
  });
});
