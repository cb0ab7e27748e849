/**
 * The BPE trainer: its merges equal those of a naive trainer that recounts every pair after every
 * merge (same tie-break), the committed trained-small fixture is reproduced exactly, and the result
 * round-trips, carries the special tokens and saves to a file that loads back the same.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { BYTE_TO_CHAR, GPT2_PATTERN, loadTokenizer, readCorpus, trainBpe, trainBpeSync, type JsonObject, type TrainProgress } from '../../src/tokenizer/index.js';
import { repoPath, tempDir, TRICKY } from './util.js';

/**
 * Reference trainer: count every adjacent pair of every word (weighted by word count), take the most
 * frequent (ties: the lower pair of ids), merge it everywhere, repeat. Ids: specials, then the bytes
 * ordered by their character's code point, then new tokens.
 */
function naiveTrain(texts: readonly string[], specials: readonly string[], vocabSize: number, minFrequency: number): string[] {
  const tokens = [...specials, ...[...BYTE_TO_CHAR].sort((a, b) => a.charCodeAt(0) - b.charCodeAt(0))];
  const id = new Map(tokens.map((t, i) => [t, i]));
  const counts = new Map<string, number>();
  for (const t of texts) for (const w of t.match(GPT2_PATTERN) ?? []) counts.set(w, (counts.get(w) ?? 0) + 1);
  const words = [...counts].map(([w, c]) => ({ syms: [...Buffer.from(w, 'utf8')].map((b) => id.get(BYTE_TO_CHAR[b]!)!), c }));
  const merges: string[] = [];
  while (tokens.length < vocabSize) {
    const pairs = new Map<number, number>();
    for (const { syms, c } of words) for (let i = 0; i + 1 < syms.length; i++) pairs.set(syms[i]! * 1e6 + syms[i + 1]!, (pairs.get(syms[i]! * 1e6 + syms[i + 1]!) ?? 0) + c);
    let best = -1;
    let bestCount = 0;
    for (const [k, c] of pairs) if (c > bestCount || (c === bestCount && k < best)) [best, bestCount] = [k, c];
    if (best < 0 || bestCount < minFrequency) break;
    const a = Math.floor(best / 1e6);
    const b = best % 1e6;
    const merged = tokens[a]! + tokens[b]!;
    let m = id.get(merged);
    if (m === undefined) {
      m = tokens.length;
      tokens.push(merged);
      id.set(merged, m);
    }
    merges.push(`${tokens[a]} ${tokens[b]}`);
    for (const w of words) {
      const out: number[] = [];
      for (let i = 0; i < w.syms.length; ) {
        if (i + 1 < w.syms.length && w.syms[i] === a && w.syms[i + 1] === b) {
          out.push(m);
          i += 2;
        } else out.push(w.syms[i++]!);
      }
      w.syms = out;
    }
  }
  return merges;
}

function mergesOf(tok: { toJSON(): JsonObject }): string[] {
  return (tok.toJSON()['model'] as JsonObject)['merges'] as string[];
}

const SPECIALS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'];

/** A deterministic corpus with repeats, overlaps ("aaaa", "abab") and non-ASCII text. */
function corpus(): string[] {
  const texts = [...TRICKY];
  const words = ['the', 'then', 'there', 'aaaa', 'abab', 'banana', 'naïve', '日本', 'x_y', '  ', '\n\t'];
  let seed = 7;
  for (let i = 0; i < 300; i++) {
    let s = '';
    for (let j = 0; j < 12; j++) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      s += `${words[seed % words.length]}${j % 3 ? ' ' : ''}`;
    }
    texts.push(s);
  }
  return texts;
}

describe('trainBpe', () => {
  const texts = corpus();
  it('learns the same merges as the naive trainer', () => {
    for (const [vocabSize, minFrequency] of [
      [400, 2],
      [330, 1],
      [600, 3],
    ] as const) {
      const tok = trainBpeSync(texts, { vocabSize, minFrequency });
      assert.deepEqual(mergesOf(tok), naiveTrain(texts, SPECIALS, vocabSize, minFrequency), `vocabSize ${vocabSize}, minFrequency ${minFrequency}`);
    }
  });
  it('reaches vocabSize, with the specials first and every byte', () => {
    const tok = trainBpeSync(texts, { vocabSize: 400 });
    assert.equal(tok.vocabSize, 400);
    assert.equal(tok.kind, 'bpe');
    assert.deepEqual(SPECIALS.map((s) => tok.tokenToId(s)), [0, 1, 2, 3, 4]);
    assert.deepEqual(tok.specials, { pad: 0, unk: 1, cls: 2, sep: 3 });
    for (const c of BYTE_TO_CHAR) assert.notEqual(tok.tokenToId(c), undefined);
  });
  it('stops early when no pair is frequent enough', () => {
    const tok = trainBpeSync(['abc abd'], { vocabSize: 1000, minFrequency: 5 });
    assert.equal(tok.vocabSize, SPECIALS.length + 256);
  });
  it('round-trips exactly and matches the specials in text', () => {
    const tok = trainBpeSync(texts, { vocabSize: 500 });
    for (const t of TRICKY) assert.equal(tok.decode(tok.encode(t)), t, JSON.stringify(t));
    const ids = tok.encode('[CLS]the[SEP]');
    assert.equal(ids[0], 2);
    assert.equal(ids[ids.length - 1], 3);
    assert.equal(tok.decode(ids), 'the');
  });
  it('adds the required specials to a custom list', () => {
    const tok = trainBpeSync(texts, { vocabSize: 300, specialTokens: ['<s>', '[SEP]'] });
    assert.deepEqual(['<s>', '[SEP]', '[CLS]', '[PAD]'].map((s) => tok.tokenToId(s)), [0, 1, 2, 3]);
    assert.deepEqual(tok.specials, { cls: 2, sep: 1, pad: 3, unk: undefined });
  });
  it('accepts async iterables and reports progress', async () => {
    async function* gen(): AsyncGenerator<string> {
      for (const t of texts) yield t;
    }
    const seen: TrainProgress[] = [];
    const tok = await trainBpe(gen(), { vocabSize: 400, onProgress: (p) => seen.push(p) });
    assert.deepEqual(mergesOf(tok), mergesOf(trainBpeSync(texts, { vocabSize: 400 })));
    const last = seen[seen.length - 1]!;
    assert.equal(last.phase, 'merge');
    assert.equal(last.done, mergesOf(tok).length);
    assert.ok(seen.some((p) => p.phase === 'count'));
  });
  it('rejects a vocabulary smaller than specials + 256 bytes', () => {
    assert.throws(() => trainBpeSync(texts, { vocabSize: 200 }), (e: unknown) => e instanceof ConfigError && /at least 261/.test(e.message));
    assert.throws(() => trainBpeSync(texts, { vocabSize: 300, minFrequency: 0 }), ConfigError);
    assert.throws(() => trainBpeSync(texts, { vocabSize: 300, specialTokens: ['a'] }), /clashes with the byte alphabet/);
  });
  it('saves a tokenizer.json that loads back the same', () => {
    const tok = trainBpeSync(texts, { vocabSize: 450 });
    const t = tempDir();
    try {
      tok.save(t.dir);
      const again = loadTokenizer(t.dir);
      assert.equal(again.fingerprint(), tok.fingerprint());
      for (const s of TRICKY) assert.deepEqual(again.encode(s), tok.encode(s));
      const config = JSON.parse(readFileSync(join(t.dir, 'tokenizer_config.json'), 'utf8')) as JsonObject;
      assert.equal(config['cls_token'], '[CLS]');
      assert.equal(config['pad_token'], '[PAD]');
    } finally {
      t.cleanup();
    }
  });
});

describe('trained-small fixture', () => {
  it('is what training on its corpus gives (deterministic training)', async () => {
    const dir = repoPath('test/fixtures/tokenizers/trained-small');
    const tok = await trainBpe(readCorpus([join(dir, 'corpus.txt')]), { vocabSize: 400 });
    const committed = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')) as JsonObject;
    assert.deepEqual(JSON.parse(JSON.stringify(tok.toJSON())), committed);
  });
});
