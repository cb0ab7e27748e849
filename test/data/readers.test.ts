import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { InputError } from '../../src/errors.js';
import {
  BadInputReport,
  collect,
  listTextFiles,
  loadExamples,
  readDocuments,
  readExamples,
  readPairs,
  readTextFiles,
} from '../../src/data/index.js';
import { fixture, tempDir } from './tmp.js';

const tmp = tempDir('readers');
after(() => tmp.cleanup());

async function inputError(fn: () => Promise<unknown>): Promise<InputError> {
  try {
    await fn();
  } catch (err) {
    assert.ok(err instanceof InputError, `expected an InputError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected an InputError, but it succeeded');
}

const jsonl = (...rows: unknown[]): string => rows.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n');

describe('readPairs', () => {
  it('reads the QQP fixture: 200 pairs with exact texts and line numbers, same from .gz', async () => {
    const pairs = await collect(readPairs(fixture('qqp-valid-200.jsonl')));
    assert.equal(pairs.length, 200);
    assert.deepEqual(
      { src: pairs[0]!.src, trg: pairs[0]!.trg, line: pairs[0]!.line },
      { src: 'Why does he want to have sex with me not her?', trg: 'Why did he chose me to have sex with?', line: 1 },
    );
    assert.deepEqual(
      { src: pairs[199]!.src, trg: pairs[199]!.trg, line: pairs[199]!.line },
      { src: 'What is/are your New Year resolutions for 2017?', trg: "What's your resolutions for 2017?", line: 200 },
    );
    const gz = await collect(readPairs(fixture('qqp-valid-200.jsonl.gz')));
    assert.deepEqual(
      gz.map((p) => [p.src, p.trg, p.line]),
      pairs.map((p) => [p.src, p.trg, p.line]),
    );
  });

  it('takes other field names, ignores other fields and blank lines, keeps texts untrimmed', async () => {
    const f = tmp.write('qa.jsonl', jsonl({ q: ' the cat ', a: 'sat', id: 3 }, '', '   ', { q: 'a', a: 'dog' }) + '\n\n');
    const pairs = await collect(readPairs(f, { srcField: 'q', trgField: 'a' }));
    assert.deepEqual(
      pairs.map((p) => [p.src, p.trg, p.file, p.line]),
      [
        [' the cat ', 'sat', f, 1],
        ['a', 'dog', f, 4],
      ],
    );
  });

  const cases: Array<[string, string, string]> = [
    ['not JSON', '{"src": "a", "trg": ', 'not valid JSON ('],
    ['not an object', '[1, 2]', 'expected a JSON object, got an array'],
    ['null', 'null', 'expected a JSON object, got null'],
    ['missing field', '{"src": "a", "text": "b"}', 'missing field "trg" (the record has fields "src", "text")'],
    ['not a string', '{"src": "a", "trg": 5}', 'field "trg" is a number, expected a string'],
    ['source not a string', '{"src": ["a"], "trg": "b"}', 'field "src" is an array, expected a string'],
    ['empty target', '{"src": "a", "trg": " \\t "}', 'empty target (field "trg")'],
  ];
  for (const [what, line, detail] of cases) {
    it(`a line that is ${what} is an InputError with file:line`, async () => {
      const f = tmp.write(`bad-${what.replace(/ /g, '-')}.jsonl`, jsonl({ src: 'ok', trg: 'fine' }, line, { src: 'x', trg: 'y' }));
      const err = await inputError(() => collect(readPairs(f)));
      assert.equal(err.file, f);
      assert.equal(err.line, 2);
      assert.ok(err.message.startsWith(`${f}:2: ${detail}`), err.message);
      if (what !== 'not JSON') assert.equal(err.message, `${f}:2: ${detail}`);
    });
  }

  it('the missing-field error names the option that fixes it', async () => {
    const f = tmp.write('hint.jsonl', jsonl({ question: 'a', answer: 'b' }));
    const err = await inputError(() => collect(readPairs(f)));
    assert.equal(err.message, `${f}:1: missing field "src" (the record has fields "question", "answer")`);
    assert.match(err.hint ?? '', /srcField/);
  });

  it('skipBad counts bad lines and reports the first few with file:line', async () => {
    const f = tmp.write(
      'mixed.jsonl',
      jsonl({ src: 'a', trg: 'b' }, 'nope', { src: 'c', trg: 'd' }, { src: 'e' }, '', { src: 'g', trg: '' }, { src: 'i', trg: 'j' }),
    );
    const stream = readPairs(f, { skipBad: true });
    const pairs = await collect(stream);
    assert.deepEqual(
      pairs.map((p) => [p.line, p.src, p.trg]),
      [
        [1, 'a', 'b'],
        [3, 'c', 'd'],
        [7, 'i', 'j'],
      ],
    );
    assert.equal(stream.report.count, 3);
    assert.deepEqual(
      stream.report.examples.map((e) => e.line),
      [2, 4, 6],
    );
    const summary = stream.report.summary().split('\n');
    assert.equal(summary[0], '3 bad records skipped:');
    assert.ok(summary[1]!.startsWith(`  ${f}:2: not valid JSON (`), summary[1]);
    assert.equal(summary[2], `  ${f}:4: missing field "trg" (the record has fields "src")`);
    assert.equal(summary[3], `  ${f}:6: empty target (field "trg")`);
  });

  it('the report keeps only the first maxExamples problems but counts all', async () => {
    const f = tmp.write('many-bad.jsonl', jsonl('x', 'x', 'x', 'x', { src: 'a', trg: 'b' }));
    const report = new BadInputReport(2);
    const pairs = await collect(readPairs(f, { skipBad: true, report }));
    assert.equal(pairs.length, 1);
    assert.equal(report.count, 4);
    assert.equal(report.examples.length, 2);
    assert.match(report.summary(), /\n {2}\.\.\. and 2 more$/);
  });

  it('an empty file, or one whose every line was skipped, is an error even with skipBad', async () => {
    const empty = tmp.write('empty.jsonl', '\n\n');
    assert.equal((await inputError(() => collect(readPairs(empty)))).message, `${empty}: no records (empty file)`);
    const allBad = tmp.write('all-bad.jsonl', jsonl('x', '{"src": 1, "trg": "b"}'));
    assert.equal(
      (await inputError(() => collect(readPairs(allBad, { skipBad: true })))).message,
      `${allBad}: no valid records (all 2 skipped as bad)`,
    );
  });

  it('a read or gzip failure is never skipped', async () => {
    const gz = gzipSync(jsonl(...Array.from({ length: 2000 }, (_, i) => ({ src: `s${i}`, trg: `t${i}` }))));
    const f = tmp.write('cut.jsonl.gz', gz.subarray(0, gz.length - 20));
    const err = await inputError(() => collect(readPairs(f, { skipBad: true })));
    assert.match(err.message, /cut\.jsonl\.gz:\d+: truncated gzip stream/);
  });
});

describe('readDocuments', () => {
  it('reads the text field of the SOTU fixture (gzip) and another field by option', async () => {
    const docs = await collect(readDocuments(fixture('sotu-2.jsonl.gz')));
    assert.equal(docs.length, 2);
    assert.ok(docs[0]!.text.startsWith('Fellow-Citizens of the Senate and House of Representatives:'));
    assert.equal(docs[0]!.text.length, 8356);
    assert.equal(docs[1]!.text.length, 8331);
    assert.deepEqual(
      docs.map((d) => d.line),
      [1, 2],
    );
    const names = await collect(readDocuments(fixture('sotu-2.jsonl.gz'), { field: 'name' }));
    assert.deepEqual(
      names.map((d) => d.text),
      ['George Washington', 'John Adams'],
    );
  });

  it('a non-string or empty text is an error with file:line', async () => {
    const f = tmp.write('docs.jsonl', jsonl({ text: 'fine' }, { text: 12 }));
    assert.equal((await inputError(() => collect(readDocuments(f)))).message, `${f}:2: field "text" is a number, expected a string`);
    const g = tmp.write('docs2.jsonl', jsonl({ text: 'fine' }, { text: '' }));
    assert.equal((await inputError(() => collect(readDocuments(g)))).message, `${g}:2: empty document (field "text")`);
  });
});

describe('readTextFiles', () => {
  const folder = join(tmp.dir, 'corpus');
  tmp.write('corpus/b.txt', 'second\r\nfile\n');
  tmp.write('corpus/a.txt.gz', gzipSync('first file\n\nwith a gap'));
  tmp.write('corpus/sub/c.txt', 'third');
  tmp.write('corpus/.hidden.txt', 'hidden');
  tmp.write('corpus/notes.md', 'not a txt');

  it('lists .txt and .txt.gz files recursively in code-unit order, skipping hidden files', async () => {
    assert.deepEqual(await listTextFiles(folder), [join(folder, 'a.txt.gz'), join(folder, 'b.txt'), join(folder, 'sub', 'c.txt')]);
    assert.deepEqual(await listTextFiles(folder, ['.md']), [join(folder, 'notes.md')]);
  });

  it('reads each file as one document (CRLF -> LF, no final line break), with progress over all files', async () => {
    const calls: Array<[number, number]> = [];
    const docs = await collect(readTextFiles(folder, { onProgress: (d, t) => calls.push([d, t]) }));
    assert.deepEqual(
      docs.map((d) => [d.text, d.line]),
      [
        ['first file\n\nwith a gap', 1],
        ['second\nfile', 1],
        ['third', 1],
      ],
    );
    const total = ['a.txt.gz', 'b.txt', 'sub/c.txt'].map((n) => statSync(join(folder, n)).size).reduce((a, b) => a + b);
    assert.ok(calls.every(([, t]) => t === total));
    assert.deepEqual(calls[calls.length - 1], [total, total]);
  });

  it('splits into paragraphs or lines, with the line each starts on', async () => {
    const f = tmp.write('paras.txt', '\n\nthe cat\nsat\n\n\n  \non the mat\n');
    const paras = await collect(readTextFiles(f, { split: 'paragraph' }));
    assert.deepEqual(
      paras.map((d) => [d.text, d.line]),
      [
        ['the cat\nsat', 3],
        ['on the mat', 8],
      ],
    );
    const lines = await collect(readTextFiles(f, { split: 'line' }));
    assert.deepEqual(
      lines.map((d) => [d.text, d.line]),
      [
        ['the cat', 3],
        ['sat', 4],
        ['on the mat', 8],
      ],
    );
  });

  it('with skipBad, drops the whole paragraph that holds an invalid UTF-8 line', async () => {
    const f = tmp.write('bad-para.txt', Buffer.concat([Buffer.from('one\n\ntwo\n'), Buffer.from([0xff]), Buffer.from('\n\nthree')]));
    const stream = readTextFiles(f, { split: 'paragraph', skipBad: true });
    assert.deepEqual(
      (await collect(stream)).map((d) => d.text),
      ['one', 'three'],
    );
    assert.equal(stream.report.count, 1);
    assert.equal(stream.report.examples[0]!.message, `${f}:4: invalid UTF-8 (at byte 0 of the line)`);
  });

  it('an empty file is an error, or a skipped file under skipBad; an empty folder is an error', async () => {
    const f = tmp.write('mixed/empty.txt', '');
    tmp.write('mixed/full.txt', 'words');
    assert.equal((await inputError(() => collect(readTextFiles(join(tmp.dir, 'mixed'))))).message, `${f}: no text (empty file)`);
    const stream = readTextFiles(join(tmp.dir, 'mixed'), { skipBad: true });
    assert.deepEqual(
      (await collect(stream)).map((d) => d.text),
      ['words'],
    );
    assert.equal(stream.report.count, 1);
    const none = join(tmp.dir, 'none');
    tmp.write('none/readme.md', 'x');
    assert.equal((await inputError(() => collect(readTextFiles(none)))).message, `${none}: no .txt or .txt.gz files in this folder`);
  });

  it('a document over maxDocumentChars is an error', async () => {
    const f = tmp.write('big.txt', 'abcdef\nghijkl\n'); // 13 characters once joined
    assert.equal((await collect(readTextFiles(f, { maxDocumentChars: 13 })))[0]!.text, 'abcdef\nghijkl');
    assert.equal(
      (await inputError(() => collect(readTextFiles(f, { maxDocumentChars: 12 })))).message,
      `${f}:1: document longer than 12 characters`,
    );
  });
});

describe('readExamples', () => {
  it('auto: pairs from JSONL with src/trg, documents (empty src) from JSONL with text, text from folders', async () => {
    const pairs = await collect(readExamples(fixture('qqp-valid-200.jsonl.gz')));
    assert.equal(pairs.length, 200);
    assert.equal(pairs[0]!.src, 'Why does he want to have sex with me not her?');
    const docs = await collect(readExamples(fixture('sotu-2.jsonl.gz')));
    assert.deepEqual(
      docs.map((d) => [d.src, d.trg.length]),
      [
        ['', 8356],
        ['', 8331],
      ],
    );
    const f = tmp.write('auto/one.txt', 'the cat sat');
    const text = await collect(readExamples(join(tmp.dir, 'auto')));
    assert.deepEqual(
      text.map((d) => [d.src, d.trg, d.file]),
      [['', 'the cat sat', f]],
    );
  });

  it('auto: a record with neither kind of field is an error naming the fields', async () => {
    const f = tmp.write('code.jsonl', jsonl({ nl: 'add', code: 'a+b' }));
    const err = await inputError(() => collect(readExamples(f)));
    assert.equal(err.message, `${f}:1: cannot tell pairs from documents: no "src"/"trg" nor "text" field (the record has fields "nl", "code")`);
    const ok = await collect(readExamples(f, { srcField: 'nl', trgField: 'code' }));
    assert.deepEqual(
      ok.map((e) => [e.src, e.trg]),
      [['add', 'a+b']],
    );
  });

  it('an explicit format is enforced; loadExamples returns the examples and the report', async () => {
    const err = await inputError(() => collect(readExamples(fixture('sotu-2.jsonl.gz'), { format: 'pairs' })));
    assert.match(err.message, /sotu-2\.jsonl\.gz:1: missing field "src"/);
    const f = tmp.write('load.jsonl', jsonl({ src: 'a', trg: 'b' }, 'bad'));
    const { examples, report } = await loadExamples(f, { skipBad: true });
    assert.equal(examples.length, 1);
    assert.equal(report.count, 1);
  });
});
