import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import {
  BatchIterator,
  batchWidth,
  buildSequence,
  collate,
  encodeExamples,
  iterateBatches,
  SplitMix32,
  type Batch,
  type BatchIteratorOptions,
  type BatchIteratorState,
  type EncodedExample,
} from '../../src/data/index.js';
import { FakeTokenizer } from './fake-tokenizer.js';

const tok = new FakeTokenizer();
const sp = tok.specials;

/** n examples; example i has target token 100 + i (so rows identify examples) and length 5 + (i * 7) % 29. */
function dataset(n: number, seqLen = 64): EncodedExample[] {
  const out: EncodedExample[] = [];
  for (let i = 0; i < n; i++) {
    const trg = Array.from({ length: 1 + ((i * 7) % 29) }, () => 100 + i);
    out.push(buildSequence([50], trg, sp, seqLen, i));
  }
  return out;
}

/** A batch as plain data, for deepEqual. */
const plain = (b: Batch): unknown => ({ ids: [...b.inputIds], mask: [...b.inputMask], B: b.batch, N: b.seqLen, idx: b.indices });

const take = (it: BatchIterator, k: number): Batch[] => Array.from({ length: k }, () => it.next());

describe('collate', () => {
  const two = encodeExamples(
    tok,
    [
      { src: 'the cat', trg: 'sat' },
      { src: '', trg: 'a dog ran' },
    ],
    { seqLen: 8, keepText: true },
  );

  it('pads every row to seqLen by default (SPEC), row-major, with masks and texts', () => {
    const b = collate(two, { seqLen: 8, pad: 0 }, [0, 1]);
    assert.equal(b.batch, 2);
    assert.equal(b.seqLen, 8);
    assert.deepEqual([...b.inputIds], [2, 4, 5, 3, 6, 3, 0, 0, 2, 3, 9, 10, 11, 3, 0, 0]);
    assert.deepEqual([...b.inputMask], [0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1]);
    assert.deepEqual(b.srcText, ['the cat', '']);
    assert.deepEqual(b.trgText, ['sat', 'a dog ran']);
    assert.deepEqual(b.indices, [0, 1]);
  });

  it('with a block size, pads to the smallest multiple that holds the longest row', () => {
    const b = collate(two, { seqLen: 8, pad: 0, blockSize: 4 }); // longest row 6 tokens: ceil(6 / 4) * 4 = 8
    assert.equal(b.seqLen, 8);
    const c = collate([two[0]!], { seqLen: 64, pad: 0, blockSize: 3 }); // 6 tokens -> 6
    assert.equal(c.seqLen, 6);
    assert.deepEqual([...c.inputIds], [2, 4, 5, 3, 6, 3]);
    assert.equal(c.srcText?.[0], 'the cat');
  });

  it('batchWidth: multiple of the block size, never beyond seqLen', () => {
    assert.equal(batchWidth(5, 64, 16), 16);
    assert.equal(batchWidth(16, 64, 16), 16);
    assert.equal(batchWidth(17, 64, 16), 32);
    assert.equal(batchWidth(60, 64, 16), 64);
    assert.equal(batchWidth(45, 50, 16), 48);
    assert.equal(batchWidth(49, 50, 16), 50);
    assert.equal(batchWidth(1, 64, 128), 64);
    assert.equal(batchWidth(5, 64), 64);
  });

  it('texts are left out when an example has none; an example longer than seqLen is an error', () => {
    const noText = collate(dataset(2), { seqLen: 64, pad: 0 });
    assert.equal(noText.srcText, undefined);
    assert.throws(() => collate(dataset(3, 64), { seqLen: 8, pad: 0 }), /more than seqLen 8; encode with the same seqLen/);
  });
});

describe('iterateBatches', () => {
  it('one pass in dataset order, the last batch smaller', () => {
    const batches = [...iterateBatches(dataset(7), { batchSize: 3, seqLen: 64, pad: 0 })];
    assert.deepEqual(
      batches.map((b) => b.indices),
      [[0, 1, 2], [3, 4, 5], [6]],
    );
    assert.deepEqual([...batches[2]!.inputIds.subarray(0, 5)], [2, 50, 3, 106, 106]);
  });
});

describe('BatchIterator', () => {
  const data = dataset(10);
  const opts: BatchIteratorOptions = { batchSize: 3, seqLen: 64, pad: 0, seed: 42 };

  it('draws the same epoch orders on every platform (golden values, cross-checked in Python)', () => {
    // SplitMix32 itself
    const r = new SplitMix32(42);
    assert.deepEqual([r.nextUint32(), r.nextUint32(), r.nextUint32(), r.nextUint32()], [939911724, 3948730756, 321366731, 3317318717]);
    const it = new BatchIterator(data, opts);
    assert.deepEqual(
      take(it, 8).map((b) => b.indices),
      [[9, 1, 2], [5, 0, 8], [6, 3, 7], [4], [1, 0, 9], [2, 7, 6], [3, 5, 4], [8]],
    );
  });

  it('each epoch holds every example exactly once; dropLast drops the short batch', () => {
    const it = new BatchIterator(data, opts);
    assert.equal(it.batchesPerEpoch, 4);
    for (let e = 0; e < 3; e++) {
      const seen = take(it, 4).flatMap((b) => b.indices!);
      assert.deepEqual(
        [...seen].sort((a, b) => a - b),
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
      );
    }
    const dl = new BatchIterator(data, { ...opts, dropLast: true });
    assert.equal(dl.batchesPerEpoch, 3);
    assert.deepEqual(
      take(dl, 4).map((b) => b.batch),
      [3, 3, 3, 3],
    );
    assert.equal(dl.epoch, 1);
  });

  it('rows are the examples named by indices, padded to seqLen', () => {
    const b = new BatchIterator(data, opts).next();
    assert.equal(b.seqLen, 64);
    for (let r = 0; r < b.batch; r++) {
      const i = b.indices![r]!;
      assert.deepEqual([...b.inputIds.subarray(r * 64, r * 64 + data[i]!.ids.length)], [...data[i]!.ids]);
      assert.equal(b.inputIds[r * 64 + 63], 0);
    }
  });

  it('the same seed gives the same batches; another seed another order; shuffle: false keeps the order', () => {
    const a = take(new BatchIterator(data, opts), 12).map(plain);
    const b = take(new BatchIterator(data, opts), 12).map(plain);
    assert.deepEqual(a, b);
    const c = take(new BatchIterator(data, { ...opts, seed: 43 }), 12).map(plain);
    assert.notDeepEqual(a, c);
    const inOrder = new BatchIterator(data, { ...opts, shuffle: false });
    assert.deepEqual(
      take(inOrder, 5).map((x) => x.indices),
      [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9], [0, 1, 2]],
    );
  });

  for (const [label, o] of [
    ['plain', opts],
    ['bucketed', { ...opts, bucket: { blockSize: 16, poolBatches: 2 } }],
    ['dropLast', { ...opts, dropLast: true }],
  ] as const) {
    it(`resuming from a saved state gives exactly the remaining batches (${label})`, () => {
      for (const stopAfter of [0, 1, 2, 4, 5, 9]) {
        const original = new BatchIterator(data, o);
        take(original, stopAfter);
        const saved = JSON.parse(JSON.stringify(original.state())) as BatchIteratorState;
        const expected = take(original, 10).map(plain);
        const resumed = new BatchIterator(data, o);
        resumed.restore(saved);
        assert.equal(resumed.epoch, saved.epoch);
        assert.deepEqual(take(resumed, 10).map(plain), expected, `stopped after ${stopAfter}`);
      }
    });
  }

  it('the saved state is a few plain numbers', () => {
    const it = new BatchIterator(data, opts);
    take(it, 5);
    const s = it.state();
    assert.deepEqual({ version: s.version, epoch: s.epoch, index: s.index, seed: s.seed }, { version: 1, epoch: 1, index: 1, seed: 42 });
    assert.ok(Number.isInteger(s.rng) && s.rng >= 0 && s.rng <= 0xffffffff);
  });

  it('refuses a state from another dataset or other options, or a malformed one', () => {
    const s = new BatchIterator(data, opts).state();
    assert.throws(() => new BatchIterator(dataset(11), opts).restore(s), /saved for another dataset or other batch options/);
    assert.throws(() => new BatchIterator(data, { ...opts, batchSize: 4 }).restore(s), ConfigError);
    const other = data.slice();
    other[3] = buildSequence([50], [1, 2], sp, 64, 3);
    assert.throws(() => new BatchIterator(other, opts).restore(s), /another dataset/);
    assert.throws(() => new BatchIterator(data, opts).restore({ ...s, version: 2 } as unknown as BatchIteratorState), /unknown version 2/);
    assert.throws(() => new BatchIterator(data, opts).restore({ ...s, index: 99 }), /index 99 beyond the 4 batches/);
    assert.throws(() => new BatchIterator(data, opts).restore({ ...s, rng: -1 }), ConfigError);
  });

  it('rejects an empty dataset and a dropLast that leaves nothing', () => {
    assert.throws(() => new BatchIterator([], opts), /empty dataset/);
    assert.throws(() => new BatchIterator(dataset(2), { ...opts, dropLast: true }), /gives no batch/);
  });

  it('bucketing groups similar lengths and pads each batch to a block multiple <= seqLen', () => {
    const n = 64;
    const big = dataset(n, 64); // lengths 5..33
    // one pool = the whole dataset, so the batches are exactly the length-sorted order cut into 8s
    const it = new BatchIterator(big, { batchSize: 8, seqLen: 40, pad: 0, seed: 1, bucket: { blockSize: 16, poolBatches: 8 } });
    const batches = take(it, 8);
    const len = (i: number): number => big[i]!.ids.length;
    const sorted = big.map((_, i) => len(i)).sort((a, b) => a - b);
    const expectedGroups = Array.from({ length: 8 }, (_, k) => sorted.slice(8 * k, 8 * k + 8).join(','));
    const gotGroups = batches.map((b) => b.indices!.map(len).sort((a, b) => a - b).join(','));
    assert.deepEqual([...gotGroups].sort(), [...expectedGroups].sort());
    assert.notDeepEqual(gotGroups, expectedGroups, 'batch order is shuffled, not short to long');
    for (const b of batches) {
      const longest = Math.max(...b.indices!.map(len));
      assert.equal(b.seqLen, Math.min(40, Math.ceil(longest / 16) * 16), `longest ${longest}`);
      assert.equal(b.inputIds.length, b.batch * b.seqLen);
    }
    const padded = batches.reduce((s, b) => s + b.batch * b.seqLen, 0);
    assert.ok(padded < n * 40, `bucketing pads less than seqLen padding (${padded} < ${n * 40})`);
  });
});
