/** Loading: the bundled default, folder and file forms, and clear errors for bad files. */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { InputError } from '../../src/errors.js';
import { bundledTokenizerDir, defaultTokenizer, loadTokenizer, type JsonObject } from '../../src/tokenizer/index.js';
import { repoPath, tempDir, tinyBpeJson } from './util.js';

const tmp = tempDir();
after(() => tmp.cleanup());

function write(name: string, content: string): string {
  const p = join(tmp.dir, name);
  mkdirSync(join(p, '..'), { recursive: true });
  writeFileSync(p, content);
  return p;
}

/** Asserts an InputError naming `file` (and `line` when given) whose message matches `re`. */
function assertInputError(fn: () => unknown, file: string, re: RegExp, line?: number): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof InputError, `expected InputError, got ${String(e)}`);
    assert.equal(e.file, file);
    if (line !== undefined) assert.equal(e.line, line);
    assert.match(e.message, re);
    return true;
  });
}

describe('bundled tokenizer', () => {
  it('is found relative to the compiled module', () => {
    assert.equal(bundledTokenizerDir(), repoPath('resources/tokenizers/bert-base-uncased'));
  });
  it('defaultTokenizer() is bert-base-uncased and shared', () => {
    const t = defaultTokenizer();
    assert.equal(t.vocabSize, 30522);
    assert.equal(defaultTokenizer(), t);
  });
});

describe('loadTokenizer forms', () => {
  it('loads a folder, a tokenizer.json and a vocab.txt', () => {
    const dir = repoPath('resources/tokenizers/bert-base-uncased');
    const fp = loadTokenizer(dir).fingerprint();
    assert.equal(loadTokenizer(join(dir, 'tokenizer.json')).fingerprint(), fp);
    assert.equal(loadTokenizer(join(dir, 'vocab.txt')).fingerprint(), fp);
  });
  it('reads do_lower_case from tokenizer_config.json beside a vocab.txt', () => {
    write('cased/vocab.txt', ['[PAD]', '[UNK]', '[CLS]', '[SEP]', 'Hello', 'hello', '##s'].join('\n') + '\n');
    write('cased/tokenizer_config.json', '{"do_lower_case": false}');
    assert.deepEqual(loadTokenizer(join(tmp.dir, 'cased')).encode('Hello hellos'), [4, 5, 6]);
    write('uncased/vocab.txt', ['[PAD]', '[UNK]', '[CLS]', '[SEP]', 'Hello', 'hello'].join('\n'));
    assert.deepEqual(loadTokenizer(join(tmp.dir, 'uncased')).encode('Hello'), [5]);
  });
  it('makes [CLS]/[SEP]/[PAD] of the plain vocabulary special, keeping their ids', () => {
    const vocab = { '[UNK]': 0, '[CLS]': 1, '[SEP]': 2, '[PAD]': 3, hi: 4 };
    const p = write('plain/tokenizer.json', JSON.stringify({ pre_tokenizer: { type: 'BertPreTokenizer' }, model: { type: 'WordPiece', vocab } }));
    const t = loadTokenizer(p);
    assert.deepEqual(t.specials, { cls: 1, sep: 2, pad: 3, unk: 0 });
    assert.equal(t.vocabSize, 5);
    assert.equal(t.decode([1, 4, 2, 3, 3]), 'hi');
    assert.deepEqual(t.encode('[CLS]hi'), [1, 4]);
  });
  it('infers the model type of an untyped model (old files)', () => {
    const json = tinyBpeJson();
    delete (json['model'] as JsonObject)['type'];
    const p = write('untyped/tokenizer.json', JSON.stringify(json));
    assert.equal(loadTokenizer(p).kind, 'bpe');
  });
});

describe('loadTokenizer errors', () => {
  it('a missing path', () => {
    const p = join(tmp.dir, 'nope');
    assertInputError(() => loadTokenizer(p), p, /no such file or directory/);
  });
  it('a folder with neither file', () => {
    const d = join(tmp.dir, 'empty');
    mkdirSync(d, { recursive: true });
    assertInputError(() => loadTokenizer(d), d, /neither tokenizer.json nor vocab.txt/);
  });
  it('malformed JSON, with the line of the error', () => {
    const p = write('bad/tokenizer.json', '{\n  "version": "1.0",\n  "model": {\n    "vocab": {"a": 1,}\n  }\n}\n');
    assertInputError(() => loadTokenizer(p), p, /malformed JSON/, 4);
  });
  it('an unknown model type', () => {
    const json = tinyBpeJson();
    (json['model'] as JsonObject)['type'] = 'Unigram';
    const p = write('unigram/tokenizer.json', JSON.stringify(json));
    assertInputError(() => loadTokenizer(p), p, /model type "Unigram" is not supported/);
  });
  it('a missing vocabulary', () => {
    const json = tinyBpeJson();
    delete (json['model'] as JsonObject)['vocab'];
    const p = write('novocab/tokenizer.json', JSON.stringify(json));
    assertInputError(() => loadTokenizer(p), p, /model.vocab is missing/);
  });
  it('an unsupported normalizer', () => {
    const json = tinyBpeJson();
    json['normalizer'] = { type: 'Precompiled', precompiled_charsmap: '' };
    const p = write('precompiled/tokenizer.json', JSON.stringify(json));
    assertInputError(() => loadTokenizer(p), p, /normalizer type "Precompiled" is not supported/);
  });
  it('a WordPiece vocabulary without [UNK]', () => {
    const p = write('nounk/vocab.txt', 'a\nb\n');
    assertInputError(() => loadTokenizer(p), p, /no \[UNK\]/);
    const json = { model: { type: 'WordPiece', unk_token: '[UNK]', vocab: { a: 0 } } };
    const q = write('nounk2/tokenizer.json', JSON.stringify(json));
    assertInputError(() => loadTokenizer(q), q, /unknown token '\[UNK\]' is not in the vocabulary/);
  });
  it('two tokens with one id', () => {
    const q = write('dup/tokenizer.json', JSON.stringify({ model: { type: 'WordPiece', vocab: { '[UNK]': 0, a: 1, b: 1 } } }));
    assertInputError(() => loadTokenizer(q), q, /gives id 1 to both 'a' and 'b'/);
  });
});
