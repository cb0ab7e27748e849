import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { InputError } from '../../src/errors.js';
import { BadInputReport, firstInvalidUtf8Offset, readLines, type Line, type ReadLinesOptions } from '../../src/data/index.js';
import { fixture, tempDir } from './tmp.js';

const tmp = tempDir('lines');
after(() => tmp.cleanup());

async function lines(file: string, options: ReadLinesOptions = {}): Promise<Array<[number, string]>> {
  const out: Array<[number, string]> = [];
  for await (const l of readLines(file, options)) out.push([l.line, l.text]);
  return out;
}

/** Runs `fn` and returns the InputError it rejects with (failing if it resolves or throws another kind). */
async function inputError(fn: () => Promise<unknown>): Promise<InputError> {
  try {
    await fn();
  } catch (err) {
    assert.ok(err instanceof InputError, `expected an InputError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected an InputError, but it succeeded');
}

const enc = (s: string): Buffer => Buffer.from(s, 'utf8');

describe('readLines', () => {
  // BOM, CRLF, an empty line and a last line without a line break: the quirks of the real data files.
  const messy = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), enc('a\r\nb\n\nlast')]);
  const expected: Array<[number, string]> = [
    [1, 'a'],
    [2, 'b'],
    [3, ''],
    [4, 'last'],
  ];

  it('splits lines, drops BOM and CR, keeps empty lines and an unterminated last line', async () => {
    assert.deepEqual(await lines(tmp.write('messy.txt', messy)), expected);
  });

  it('gives the same lines from a .gz file and from gzip data under another name (magic bytes)', async () => {
    assert.deepEqual(await lines(tmp.write('messy.txt.gz', gzipSync(messy))), expected);
    assert.deepEqual(await lines(tmp.write('messy-gz.data', gzipSync(messy))), expected);
  });

  it('decodes multi-byte characters and long lines split across tiny read chunks', async () => {
    const text = 'héllo wörld €\n𝄞 clef\n' + 'x'.repeat(50) + '\n';
    const f = tmp.write('utf8.txt', text);
    const want: Array<[number, string]> = [
      [1, 'héllo wörld €'],
      [2, '𝄞 clef'],
      [3, 'x'.repeat(50)],
    ];
    for (const chunkBytes of [1, 2, 3, 7, 1024]) assert.deepEqual(await lines(f, { chunkBytes }), want, `chunkBytes ${chunkBytes}`);
  });

  it('an empty file yields no line; a lone newline yields one empty line', async () => {
    assert.deepEqual(await lines(tmp.write('empty.txt', '')), []);
    assert.deepEqual(await lines(tmp.write('nl.txt', '\n')), [[1, '']]);
  });

  it('rejects invalid UTF-8 with file:line and the byte offset', async () => {
    const f = tmp.write('bad-utf8.txt', Buffer.concat([enc('ok\n'), Buffer.from([0x61, 0xff, 0x62]), enc('\nz')]));
    const err = await inputError(() => lines(f));
    assert.equal(err.message, `${f}:2: invalid UTF-8 (at byte 1 of the line)`);
    assert.equal(err.file, f);
    assert.equal(err.line, 2);
  });

  it('skipBad skips an invalid UTF-8 line, keeps the numbering, and reports it', async () => {
    const f = tmp.write('bad-utf8-2.txt', Buffer.concat([enc('ok\n'), Buffer.from([0xc3, 0x28]), enc('\nz')]));
    const report = new BadInputReport();
    assert.deepEqual(await lines(f, { skipBad: true, report }), [
      [1, 'ok'],
      [3, 'z'],
    ]);
    assert.equal(report.count, 1);
    assert.equal(report.summary(), `1 bad record skipped:\n  ${f}:2: invalid UTF-8 (at byte 1 of the line)`);
  });

  it('rejects a line over maxLineBytes without buffering it, and can skip it', async () => {
    const f = tmp.write('long.txt', `short\n${'y'.repeat(20)}\nend\n`);
    const err = await inputError(() => lines(f, { maxLineBytes: 10, chunkBytes: 4 }));
    assert.equal(err.message, `${f}:2: line longer than 10 bytes`);
    const report = new BadInputReport();
    assert.deepEqual(await lines(f, { maxLineBytes: 10, chunkBytes: 4, skipBad: true, report }), [
      [1, 'short'],
      [3, 'end'],
    ]);
    assert.equal(report.count, 1);
    // exactly at the limit is fine
    assert.deepEqual(await lines(f, { maxLineBytes: 20 }), [
      [1, 'short'],
      [2, 'y'.repeat(20)],
      [3, 'end'],
    ]);
  });

  it('fails fast on an endless line (8 MiB without a newline, limit 1 KiB)', async () => {
    const f = tmp.write('endless.txt.gz', gzipSync(Buffer.alloc(8 << 20, 0x61)));
    const err = await inputError(() => lines(f, { maxLineBytes: 1024 }));
    assert.equal(err.message, `${f}:1: line longer than 1024 bytes`);
  });

  it('a truncated gzip stream is an error, never a short file', async () => {
    const full = Array.from({ length: 5000 }, (_, i) => `line ${i} ${'z'.repeat(i % 37)}`).join('\n');
    const gz = gzipSync(full);
    const f = tmp.write('trunc.jsonl.gz', gz.subarray(0, Math.floor(gz.length / 2)));
    let seen = 0;
    const err = await inputError(async () => {
      for await (const _ of readLines(f)) seen++;
    });
    assert.match(err.message, /^.*trunc\.jsonl\.gz:\d+: truncated gzip stream \(unexpected end of file\); the file is incomplete$/);
    assert.ok(seen < 5000, `saw ${seen} lines`);
    assert.equal(err.line, seen + 1, 'names the line it was reading');
  });

  it('a gzip stream with a bad checksum is an error', async () => {
    const gz = Buffer.from(gzipSync('one\ntwo\n'));
    gz[gz.length - 8] ^= 0xff; // CRC32 of the trailer
    const f = tmp.write('crc.gz', gz);
    const err = await inputError(() => lines(f));
    assert.match(err.message, /crc\.gz:\d+: corrupt gzip stream \(incorrect data check\)$/);
  });

  it('trailing garbage after the gzip data is an error', async () => {
    const f = tmp.write('garbage.gz', Buffer.concat([gzipSync('one\n'), enc('not gzip')]));
    const err = await inputError(() => lines(f));
    assert.match(err.message, /garbage\.gz:\d+: corrupt gzip stream/);
  });

  it('a .gz name without gzip data, a missing file and a directory are clear errors', async () => {
    const f = tmp.write('fake.jsonl.gz', '{"src": "a", "trg": "b"}\n');
    assert.equal((await inputError(() => lines(f))).message, `${f}: the name ends in .gz but the file is not gzip-compressed (no gzip header)`);
    const missing = `${tmp.dir}/nope.jsonl`;
    assert.equal((await inputError(() => lines(missing))).message, `${missing}: no such file or directory`);
    assert.equal((await inputError(() => lines(tmp.dir))).message, `${tmp.dir}: is a directory, expected a file`);
  });

  it('reports progress in bytes of the file, ending at the total (compressed bytes for .gz)', async () => {
    const text = Array.from({ length: 300 }, (_, i) => `row ${i}`).join('\n');
    for (const [name, data] of [
      ['p.txt', enc(text)],
      ['p.txt.gz', gzipSync(text)],
    ] as const) {
      const f = tmp.write(name, data);
      const calls: Array<[number, number]> = [];
      const got = await lines(f, { chunkBytes: 64, onProgress: (d, t) => calls.push([d, t]) });
      assert.equal(got.length, 300);
      assert.ok(calls.length >= 2, `${name}: ${calls.length} progress calls`);
      const size = statSync(f).size;
      assert.ok(calls.every(([, t]) => t === size));
      for (let i = 1; i < calls.length; i++) assert.ok(calls[i]![0] > calls[i - 1]![0], 'strictly increasing');
      assert.deepEqual(calls[calls.length - 1], [size, size]);
    }
  });

  it('stopping early closes the file and leaves no error behind', async () => {
    const f = tmp.write('many.txt', Array.from({ length: 1000 }, (_, i) => `l${i}`).join('\n'));
    const first: Line[] = [];
    for await (const l of readLines(f, { chunkBytes: 16 })) {
      first.push(l);
      if (first.length === 3) break;
    }
    assert.deepEqual(
      first.map((l) => l.text),
      ['l0', 'l1', 'l2'],
    );
  });

  it('reads the committed QQP fixture (no final newline) identically plain and gzipped', async () => {
    const plain = await lines(fixture('qqp-valid-200.jsonl'));
    const gz = await lines(fixture('qqp-valid-200.jsonl.gz'));
    assert.equal(plain.length, 200);
    assert.deepEqual(gz, plain);
    assert.deepEqual(plain[0], [1, '{"src": "Why does he want to have sex with me not her?", "trg": "Why did he chose me to have sex with?"}']);
    assert.equal(plain[199]![1], readFileSync(fixture('qqp-valid-200.jsonl'), 'utf8').split('\n')[199]);
  });

  it('rejects bad options', async () => {
    await assert.rejects(() => lines(fixture('qqp-valid-200.jsonl'), { maxLineBytes: 0 }), /maxLineBytes must be a positive integer, got 0/);
  });
});

describe('firstInvalidUtf8Offset', () => {
  it('finds where a fatal decoder fails', () => {
    assert.equal(firstInvalidUtf8Offset(Buffer.from([0x61, 0x62, 0xff])), 2);
    assert.equal(firstInvalidUtf8Offset(Buffer.from([0x80])), 0);
    assert.equal(firstInvalidUtf8Offset(Buffer.from([0xe2, 0x82, 0x61])), 2); // cut 3-byte sequence
    assert.equal(firstInvalidUtf8Offset(enc('héllo')), 6); // valid: the length
  });
});
