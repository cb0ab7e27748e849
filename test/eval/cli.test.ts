/**
 * `moe-diffuseq eval` end to end, in a child process (the test runner owns this process's stdout),
 * through the CLI's parse-and-run path: plain and JSONL files, several references and samples,
 * the table and JSON outputs, and every input error as one line with exit code 2.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';

const dir = mkdtempSync(join(tmpdir(), 'moe-diffuseq-eval-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, content: string): string {
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
}

function cli(args: string[]): { code: number; out: string; err: string } {
  const mod = (p: string): string => JSON.stringify(new URL(p, import.meta.url).href);
  const script = [
    `import { parseCommandArgs } from ${mod('../../src/cli/command.js')};`,
    `import { evalCommand } from ${mod('../../src/cli/commands/eval.js')};`,
    `import { MoeDiffuseqError } from ${mod('../../src/errors.js')};`,
    'try {',
    '  const { values, positionals } = parseCommandArgs(evalCommand, process.argv.slice(1));',
    '  process.exitCode = (await evalCommand.run(values, positionals)) ?? 0;',
    '} catch (e) {',
    // as src/cli/main.ts reports errors (importing it here would run its entry-point check)
    '  if (!(e instanceof MoeDiffuseqError)) throw e;',
    '  process.stderr.write(`moe-diffuseq: error: ${e.message}\\n`);',
    '  process.exitCode = 2;',
    '}',
  ].join('\n');
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, '--', ...args], { encoding: 'utf8' });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

interface JsonOut {
  sentences: number;
  referencesPerSentence: number | 'var';
  results: { file: string; metrics: Record<string, number>; bleu?: { score: number; signature: string } }[];
  diversity?: { samples: number; selfBleu: number; div4: number } | null;
  mbr?: { metrics: Record<string, number>; selected: number[] };
}
function json(args: string[]): JsonOut {
  const r = cli([...args, '--json']);
  assert.equal(r.code, 0, r.err);
  return JSON.parse(r.out) as JsonOut;
}

// the sacreBLEU README example (mjpost/sacrebleu README.md): BLEU 48.530827
const hyp = write('hyp.txt', "The dog bit the man.\nIt wasn't surprising.\nThe man had just bitten him.\n");
const ref1 = write('ref1.txt', 'The dog bit the man.\nIt was not unexpected.\nThe man bit him first.\n');
const ref2 = write('ref2.txt', 'The dog had bit the man.\nNo one was surprised.\nThe man had bitten the dog.');

describe('moe-diffuseq eval', () => {
  it('scores plain files with two references: the README value, table and JSON', () => {
    const j = json(['--hyp', hyp, '--ref', ref1, '--ref', ref2]);
    assert.equal(j.sentences, 3);
    assert.equal(j.referencesPerSentence, 2);
    assert.ok(Math.abs(j.results[0]!.metrics['bleu']! - 48.530827) < 1e-6);
    assert.equal(j.results[0]!.bleu!.signature, 'nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp');
    // 5 + 3 + 6 tokens; the first output equals its first reference
    assert.ok(Math.abs(j.results[0]!.metrics['meanLength']! - 14 / 3) < 1e-12);
    assert.ok(Math.abs(j.results[0]!.metrics['exactMatch']! - 1 / 3) < 1e-12);
    assert.equal(j.diversity, null);
    const t = cli(['--hyp', hyp, '--ref', ref1, '--ref', ref2]);
    assert.equal(t.code, 0, t.err);
    assert.match(t.out, /^bleu\s+48\.53\s/m);
    assert.match(t.out, /BLEU = 48\.53 82\.4\/50\.0\/45\.5\/37\.5 \(BP = 0\.943 ratio = 0\.944 hyp_len = 17 ref_len = 18\)/);
    assert.match(t.out, /^self-bleu\s+n\/a/m);
  });
  it('--metrics selects, --tokenize/--smooth/--lowercase reach bleu', () => {
    const j = json(['--hyp', hyp, '--ref', ref1, '--ref', ref2, '--metrics', 'bleu,rougeL', '--tokenize', 'intl']);
    assert.deepEqual(Object.keys(j.results[0]!.metrics), ['bleu', 'rougeL']);
    // test_bleu.py: tokenize intl -> 43.91623493
    assert.ok(Math.abs(j.results[0]!.metrics['bleu']! - 43.91623493) < 1e-6);
    const f = json(['--hyp', hyp, '--ref', ref1, '--ref', ref2, '--metrics', 'bleu', '--smooth', 'floor', '--smooth-value', '0.5', '--lowercase']);
    assert.equal(f.results[0]!.bleu!.signature, 'nrefs:2|case:lc|eff:no|tok:13a|smooth:floor[0.50]');
  });
  it('a final newline ends the last line; an empty line inside is an empty sentence', () => {
    const a = write('a.txt', 'x y\n\nz\n');
    const b = write('b.txt', 'x y\nw\nz');
    const j = json(['--hyp', a, '--ref', b, '--metrics', 'exactMatch,meanLength']);
    assert.equal(j.sentences, 3);
    // 'x y' and 'z' match; lengths 2, 0, 1
    assert.ok(Math.abs(j.results[0]!.metrics['exactMatch']! - 2 / 3) < 1e-12);
    assert.ok(Math.abs(j.results[0]!.metrics['meanLength']! - 1) < 1e-12);
  });
  it("reads DiffuSeq's JSONL output as both sides (recover / reference), and lists of references", () => {
    const out = write(
      'seed0.json',
      [
        JSON.stringify({ source: 's1', recover: 'the cat sat', reference: 'the cat sat' }),
        '',
        JSON.stringify({ source: 's2', recover: 'a dog', reference: 'the dog' }),
      ].join('\n') + '\n',
    );
    const j = json(['--hyp', out, '--ref', out, '--metrics', 'exactMatch']);
    assert.equal(j.sentences, 2);
    assert.equal(j.results[0]!.metrics['exactMatch'], 0.5);
    const multi = write('multi.jsonl', `${JSON.stringify({ trg: ['x', 'the cat sat'] })}\n${JSON.stringify({ trg: 'a dog' })}\n`);
    const m = json(['--hyp', out, '--ref', multi, '--metrics', 'exactMatch,bleu']);
    assert.equal(m.results[0]!.metrics['exactMatch'], 1);
    assert.equal(m.referencesPerSentence, 'var');
    const named = write('named.jsonl', `${JSON.stringify({ gold: 'the cat sat' })}\n${JSON.stringify({ gold: 'x' })}\n`);
    assert.equal(json(['--hyp', out, '--ref', named, '--ref-field', 'gold', '--metrics', 'exactMatch']).results[0]!.metrics['exactMatch'], 0.5);
  });
  it('several --hyp files: per-file scores, self-BLEU / div4 across them, and --mbr', () => {
    const s0 = write('s0.txt', 'a b c d\ne f g h\n');
    const s1 = write('s1.txt', 'a b c d\nx\n');
    const s2 = write('s2.txt', 'q r s t\nx\n');
    const r = write('r.txt', 'a b c d\nx\n');
    const j = json(['--hyp', s0, '--hyp', s1, '--hyp', s2, '--ref', r, '--mbr', '--metrics', 'exactMatch,selfBleu,div4']);
    assert.equal(j.results.length, 3);
    assert.deepEqual(
      j.results.map((x) => x.metrics['exactMatch']),
      [0.5, 1, 0.5],
    );
    // source 1: pairs (a b c d, a b c d) = 1, others 0 -> 1/3; 4-grams abcd x2, qrst -> 2/3
    // source 2: 'e f g h', 'x', 'x': pair (x, x) is one token: p1 = 1, BP 1 -> 1; others 0 -> 1/3;
    //           4-grams: only efgh -> 1
    assert.equal(j.diversity!.samples, 3);
    assert.ok(Math.abs(j.diversity!.selfBleu - 1 / 3) < 1e-12);
    assert.ok(Math.abs(j.diversity!.div4 - (2 / 3 + 1) / 2) < 1e-12);
    // MBR picks the consensus: 'a b c d' (file 1, the lower of the tied pair) and 'x' (file 2)
    assert.deepEqual(j.mbr!.selected, [0, 1]);
    assert.equal(j.mbr!.metrics['exactMatch'], 1);
  });
  it('reports input errors as one line naming file and line, with exit code 2', () => {
    const short = write('short.txt', 'only one line\n');
    let r = cli(['--hyp', hyp, '--ref', short]);
    assert.equal(r.code, 2);
    assert.match(r.err, /^moe-diffuseq: error: .*short\.txt: 1 sentences, but .*hyp\.txt has 3\n$/);
    r = cli(['--hyp', join(dir, 'nope.txt'), '--ref', ref1]);
    assert.equal(r.code, 2);
    assert.match(r.err, /nope\.txt: no such file/);
    const bad = write('bad.jsonl', '{"trg": "a"}\n{oops\n');
    r = cli(['--hyp', hyp, '--ref', bad]);
    assert.equal(r.code, 2);
    assert.match(r.err, /bad\.jsonl:2: invalid JSON/);
    const nofield = write('nofield.jsonl', '{"trg": "a"}\n{"trg": "b"}\n{"src": "c"}\n');
    r = cli(['--hyp', hyp, '--ref', nofield]);
    assert.equal(r.code, 2);
    assert.match(r.err, /nofield\.jsonl:3: no field 'trg' \(has: src\)/);
    const notString = write('num.jsonl', '{"hyp": 3}\n');
    r = cli(['--hyp', notString, '--ref', short]);
    assert.match(r.err, /num\.jsonl:1: field 'hyp' must be a string/);
    const empty = write('empty.txt', '');
    r = cli(['--hyp', empty, '--ref', empty]);
    assert.match(r.err, /empty\.txt: no sentences/);
  });
  it('reports usage errors', () => {
    let r = cli(['--ref', ref1]);
    assert.equal(r.code, 2);
    assert.match(r.err, /--hyp is required/);
    r = cli(['--hyp', hyp, '--ref', ref1, '--metrics', 'bleu,meteor']);
    assert.equal(r.code, 2);
    assert.match(r.err, /unknown metric 'meteor'/);
    r = cli(['--hyp', hyp, '--ref', ref1, '--smooth-value', '0.5']);
    assert.match(r.err, /--smooth-value applies to --smooth floor or add-k/);
    r = cli(['--hyp', hyp, '--ref', ref1, '--mbr']);
    assert.match(r.err, /--mbr needs two or more --hyp files/);
    r = cli(['--hyp', hyp, '--ref', ref1, '--tokenize', 'zh']);
    assert.match(r.err, /--tokenize must be one of 13a, none, intl, char/);
  });
});
