import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, InputError } from '../../src/errors.js';
import {
  buildSequence,
  chunkSpans,
  encodeExample,
  encodeExamples,
  encodeStream,
  readPairs,
  toInputs,
  trimLengths,
} from '../../src/data/index.js';
import { FakeTokenizer } from './fake-tokenizer.js';
import { fixture } from './tmp.js';

// Fake vocabulary: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, the 4, cat 5, sat 6, on 7, mat 8, a 9, dog 10,
// ran 11, far 12, away 13, and 14, home 15.
const tok = new FakeTokenizer();
const PAD = 0;

function inputs(src: string, trg: string, seqLen: number): { ids: number[]; mask: number[] } {
  const [ex] = encodeExample(tok, { src, trg }, { seqLen });
  const { inputIds, inputMask } = toInputs(ex!, seqLen, PAD);
  return { ids: [...inputIds], mask: [...inputMask] };
}

/** SPEC's rule as the literal loop: drop one token from the longer side, from the source on a tie. */
function trimLoop(s: number, t: number, budget: number): { src: number; trg: number } {
  while (s + t > budget) {
    if (s >= t) s--;
    else t--;
  }
  return { src: s, trg: t };
}

describe('SPEC section 1 sequences', () => {
  it('a pair is [CLS] src [SEP] trg [SEP] [PAD]..., inputMask 0 on [CLS] src [SEP]', () => {
    assert.deepEqual(inputs('the cat sat', 'a dog ran', 10), {
      ids: [2, 4, 5, 6, 3, 9, 10, 11, 3, 0],
      mask: [0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
    });
  });

  it('a document is [CLS] [SEP] doc [SEP], inputMask 1 from position 2', () => {
    assert.deepEqual(inputs('', 'the cat', 8), {
      ids: [2, 3, 4, 5, 3, 0, 0, 0],
      mask: [0, 0, 1, 1, 1, 1, 1, 1],
    });
  });

  it('unknown words become [UNK]; an exact fit has no padding', () => {
    assert.deepEqual(inputs('zebra', 'cat', 5), { ids: [2, 1, 3, 5, 3], mask: [0, 0, 0, 1, 1] });
  });

  it('trims the longer side from its end: a long source', () => {
    // budget 8 - 3 = 5: src 6 tokens -> 3, trg 2 kept
    assert.deepEqual(inputs('the cat sat on the mat', 'a dog', 8), {
      ids: [2, 4, 5, 6, 3, 9, 10, 3],
      mask: [0, 0, 0, 0, 0, 1, 1, 1],
    });
  });

  it('trims the longer side from its end: a long target', () => {
    assert.deepEqual(inputs('the', 'a dog ran far away home', 8), {
      ids: [2, 4, 3, 9, 10, 11, 12, 3],
      mask: [0, 0, 0, 1, 1, 1, 1, 1],
    });
  });

  it('on a tie the source loses the token: 4 + 4 into a budget of 7 gives 3 + 4', () => {
    assert.deepEqual(inputs('the cat sat on', 'a dog ran far', 10), {
      ids: [2, 4, 5, 6, 3, 9, 10, 11, 12, 3],
      mask: [0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
    });
  });

  it('trimLengths (closed form) equals the one-token-at-a-time loop for all small lengths', () => {
    for (let budget = 1; budget <= 25; budget++) {
      for (let s = 0; s <= 30; s++) {
        for (let t = 0; t <= 30; t++) assert.deepEqual(trimLengths(s, t, budget), trimLoop(s, t, budget), `s ${s} t ${t} budget ${budget}`);
      }
    }
  });

  it('a long document is trimmed at its end by default', () => {
    assert.deepEqual(inputs('', 'the cat sat on the mat', 6), { ids: [2, 3, 4, 5, 6, 3], mask: [0, 0, 1, 1, 1, 1] });
  });

  it('buildSequence works on raw ids and records srcEnd', () => {
    const ex = buildSequence([7, 8], [9], tok.specials, 16);
    assert.deepEqual([...ex.ids], [2, 7, 8, 3, 9, 3]);
    assert.equal(ex.srcEnd, 4);
  });

  it('keepText keeps the untrimmed texts', () => {
    const [ex] = encodeExample(tok, { src: 'the cat sat on the mat', trg: 'a dog' }, { seqLen: 8, keepText: true });
    assert.equal(ex!.srcText, 'the cat sat on the mat');
    assert.equal(ex!.trgText, 'a dog');
    const [plain] = encodeExample(tok, { src: 'the', trg: 'cat' }, { seqLen: 8 });
    assert.equal(plain!.srcText, undefined);
  });

  it('a target with no tokens is an InputError pointing at the data', () => {
    assert.throws(
      () => encodeExample(tok, { src: 'the', trg: '   ', file: 'x.jsonl', line: 7 }, { seqLen: 8 }),
      (e: unknown) => e instanceof InputError && e.message === 'x.jsonl:7: the target encodes to no tokens',
    );
  });

  it('seqLen below 4 is a ConfigError', () => {
    assert.throws(() => encodeExample(tok, { src: '', trg: 'cat' }, { seqLen: 3 }), ConfigError);
    assert.throws(() => buildSequence([], [5], tok.specials, 2.5), /seqLen must be an integer >= 4, got 2.5/);
  });
});

describe('chunking long documents', () => {
  it('windows of seqLen - 3 tokens overlapping by `overlap`, the last one reaching the end', () => {
    // seqLen 7: windows of 4 tokens; overlap 1: stride 3
    assert.deepEqual(chunkSpans(10, 7, 1), [
      [0, 4],
      [3, 7],
      [6, 10],
    ]);
    assert.deepEqual(chunkSpans(11, 7, 1), [
      [0, 4],
      [3, 7],
      [6, 10],
      [9, 11],
    ]);
    assert.deepEqual(chunkSpans(8, 7, 0), [
      [0, 4],
      [4, 8],
    ]);
    assert.deepEqual(chunkSpans(4, 7, 2), [[0, 4]]);
    assert.deepEqual(chunkSpans(3, 7, 2), [[0, 3]]);
  });

  it('every window is full but the last, consecutive windows share exactly `overlap` tokens, all tokens are covered', () => {
    for (const [len, seqLen, overlap] of [
      [1000, 67, 16],
      [64, 67, 0],
      [65, 67, 63],
      [129, 35, 31],
    ] as const) {
      const spans = chunkSpans(len, seqLen, overlap);
      const size = seqLen - 3;
      assert.equal(spans[0]![0], 0);
      assert.equal(spans[spans.length - 1]![1], len);
      for (let i = 0; i < spans.length; i++) {
        const [a, b] = spans[i]!;
        if (i < spans.length - 1) assert.equal(b - a, size);
        if (i > 0) {
          assert.equal(spans[i - 1]![1] - a, Math.min(overlap, spans[i - 1]![1] - spans[i - 1]![0]));
          assert.ok(b > spans[i - 1]![1], 'each window adds new tokens');
        }
      }
    }
  });

  it('rejects an overlap that leaves no new tokens', () => {
    assert.throws(() => chunkSpans(10, 7, 4), /overlap must be an integer in \[0, seqLen - 3 = 4\), got 4/);
    assert.throws(() => chunkSpans(10, 7, -1), ConfigError);
  });

  it("documents: 'chunk' encodes each window as [CLS] [SEP] window [SEP]; pairs are still trimmed", () => {
    const doc = { src: '', trg: 'the cat sat on the mat and a dog ran' }; // 10 tokens
    const chunks = encodeExample(tok, doc, { seqLen: 7, documents: 'chunk', overlap: 1, keepText: true }, 5);
    assert.deepEqual(
      chunks.map((c) => [...c.ids]),
      [
        [2, 3, 4, 5, 6, 7, 3],
        [2, 3, 7, 4, 8, 14, 3],
        [2, 3, 14, 9, 10, 11, 3],
      ],
    );
    assert.deepEqual(
      chunks.map((c) => [c.srcEnd, c.example, c.trgText]),
      [
        [2, 5, 'the cat sat on'],
        [2, 5, 'on the mat and'],
        [2, 5, 'and a dog ran'],
      ],
    );
    const pair = encodeExample(tok, { src: 'the', trg: 'the cat sat on the mat and a dog ran' }, { seqLen: 7, documents: 'chunk', overlap: 1 });
    assert.equal(pair.length, 1);
    assert.deepEqual([...pair[0]!.ids], [2, 4, 3, 4, 5, 6, 3]);
  });

  it('encodeExamples numbers examples by input position, chunks sharing their example', () => {
    const out = encodeExamples(
      tok,
      [
        { src: 'a', trg: 'dog' },
        { src: '', trg: 'the cat sat on the mat' },
        { src: 'the', trg: 'cat' },
      ],
      { seqLen: 7, documents: 'chunk' },
    );
    assert.deepEqual(
      out.map((e) => e.example),
      [0, 1, 1, 2],
    );
  });
});

describe('end to end on the QQP fixture', () => {
  it('every encoded pair fits, starts with [CLS], has a [SEP] at srcEnd - 1 and ends with [SEP]', async () => {
    const encoded = await encodeStream(tok, readPairs(fixture('qqp-valid-200.jsonl')), { seqLen: 16 });
    assert.equal(encoded.length, 200);
    for (const ex of encoded) {
      assert.ok(ex.ids.length <= 16);
      assert.equal(ex.ids[0], 2);
      assert.equal(ex.ids[ex.srcEnd - 1], 3);
      assert.equal(ex.ids[ex.ids.length - 1], 3);
      assert.equal(ex.ids.filter((t) => t === 3).length, 2);
    }
    // first pair: 11 source and 9 target words, trimmed into 13 = 6 + 7
    assert.equal(encoded[0]!.srcEnd, 8);
    assert.equal(encoded[0]!.ids.length, 16);
  });
});
