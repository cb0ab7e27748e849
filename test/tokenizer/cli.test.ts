/** Corpus reading (JSONL, text, gzip) and the `tokenizer` command end to end. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { InputError } from '../../src/errors.js';
import { loadTokenizer, readCorpus } from '../../src/tokenizer/index.js';
import { tempDir } from './util.js';

const tmp = tempDir();
after(() => tmp.cleanup());

function write(name: string, content: string | Uint8Array): string {
  const p = join(tmp.dir, name);
  mkdirSync(join(p, '..'), { recursive: true });
  writeFileSync(p, content);
  return p;
}

async function collect(files: string[], format?: 'auto' | 'jsonl' | 'text'): Promise<string[]> {
  const out: string[] = [];
  for await (const t of readCorpus(files, format ? { format } : {})) out.push(t);
  return out;
}

/**
 * Runs `moe-diffuseq tokenizer ...args` in a child process (the test runner owns this process's
 * stdout), through the CLI's parse and run path; returns the exit code and output.
 */
function cli(args: string[]): { code: number; out: string; err: string } {
  const mod = (p: string): string => JSON.stringify(new URL(p, import.meta.url).href);
  const script = [
    `import { parseCommandArgs } from ${mod('../../src/cli/command.js')};`,
    `import { tokenizerCommand } from ${mod('../../src/cli/commands/tokenizer.js')};`,
    `import { MoeDiffuseqError } from ${mod('../../src/errors.js')};`,
    'try {',
    '  const { values, positionals } = parseCommandArgs(tokenizerCommand, process.argv.slice(1));',
    '  process.exitCode = (await tokenizerCommand.run(values, positionals)) ?? 0;',
    '} catch (e) {',
    // as src/cli/main.ts reports errors (importing it here would run its entry-point check)
    '  if (!(e instanceof MoeDiffuseqError)) throw e;',
    '  process.stderr.write(`moe-diffuseq: error: ${e.message}\\n`);',
    '  process.exitCode = 2;',
    '}',
  ].join('\n');
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, ...args], { encoding: 'utf8' });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

describe('readCorpus', () => {
  it('reads src and trg of JSONL records (or text), plain text in line blocks, and .gz', async () => {
    const jsonl = '{"src": "a b", "trg": "c d"}\n\n{"text": "e f"}\n{"trg": "g", "src": ""}\n';
    const a = write('c/a.jsonl', jsonl);
    const b = write('c/b.jsonl.gz', gzipSync(jsonl));
    const c = write('c/c.txt', 'line one\n  indented\nlast');
    assert.deepEqual(await collect([a, b, c]), ['a b', 'c d', 'e f', 'g', 'a b', 'c d', 'e f', 'g', 'line one\n  indented\nlast']);
    assert.deepEqual(await collect([a], 'text'), [jsonl.replace(/\n$/, '')]);
  });
  it('names the file and line of a bad record', async () => {
    const p = write('c/bad.jsonl', '{"src": "ok", "trg": "ok"}\n{"src": 1}\n');
    await assert.rejects(collect([p]), (e: unknown) => e instanceof InputError && e.file === p && e.line === 2 && /src.*trg.*text/.test(e.message));
    const q = write('c/bad2.jsonl', '{"src": "ok"}\n{oops\n');
    await assert.rejects(collect([q]), (e: unknown) => e instanceof InputError && e.line === 2 && /invalid JSON/.test(e.message));
  });
  it('reports a missing file and a corrupt gzip file', async () => {
    await assert.rejects(collect([join(tmp.dir, 'none.txt')]), InputError);
    const z = write('c/corrupt.txt.gz', 'this is not gzip');
    await assert.rejects(collect([z]), InputError);
  });
});

describe('moe-diffuseq tokenizer', () => {
  it('train writes a tokenizer that round-trips its corpus', () => {
    const lines: string[] = [];
    for (let i = 0; i < 400; i++) lines.push(JSON.stringify({ src: `question ${i % 17}: what is the answer?`, trg: `the answer is ${i % 13} and café ${i % 5}` }));
    const data = write('train/data.jsonl.gz', gzipSync(lines.join('\n')));
    const out = join(tmp.dir, 'train/out');
    const r = cli(['train', '--data', data, '--vocab-size', '290', '--out', out, '--quiet']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /vocabulary 290/);
    assert.ok(existsSync(join(out, 'tokenizer.json')) && existsSync(join(out, 'tokenizer_config.json')));
    const tok = loadTokenizer(out);
    assert.equal(tok.vocabSize, 290);
    assert.equal(tok.decode(tok.encode('the answer is 7 and café 3')), 'the answer is 7 and café 3');
    assert.ok(tok.encode(' answer').length < 3, 'frequent words are merged');
  });
  it('encode prints ids and tokens', () => {
    const r = cli(['encode', '--text', 'Hello, world!', '--json']);
    assert.deepEqual(JSON.parse(r.out), { ids: [7592, 1010, 2088, 999], tokens: ['hello', ',', 'world', '!'] });
    const plain = cli(['encode', '--text', 'Hello']);
    assert.match(plain.out, /^ids: 7592\ntokens: "hello"\n/);
  });
  it('decode prints text', () => {
    assert.equal(cli(['decode', '--ids', '101, 7592 1010 2088 102']).out, 'hello, world\n');
  });
  it('rejects misuse with exit code 2 and a one-line message', () => {
    const cases: [string[], RegExp][] = [
      [['train', '--out', join(tmp.dir, 'x')], /--data is required/],
      [['encode', '--text', 'x', '--vocab-size', '3'], /--vocab-size is only for train/],
      [['bogus'], /unknown subcommand 'bogus'/],
      [['decode', '--ids', '1 x'], /expects integers/],
      [['train', '--data', join(tmp.dir, 'missing.txt'), '--vocab-size', '300', '--out', join(tmp.dir, 'y')], /missing.txt: no such file/],
    ];
    for (const [args, re] of cases) {
      const r = cli(args);
      assert.equal(r.code, 2, args.join(' '));
      assert.match(r.err, re);
    }
  });
});
