/** The jobs end to end through the CLI: train, resume, sample, eval, plot; and their error messages. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { CLI, DATA, TOKENIZER, tempDir } from '../train/fixtures.js';

/** Trains a 1-step model into DIR/run (for tests that need any trained model); returns the run folder. */
function trainedRun(dir: string): string {
  const cfg = join(dir, 'run.json');
  writeFileSync(cfg, MODEL);
  const out = join(dir, 'run');
  const r = cli(['train', '--data', DATA, '--out', out, '--tokenizer', TOKENIZER, '--config', cfg, '--max-steps', '1', '--quiet', '--eval-examples', '0']);
  assert.equal(r.code, 0, r.err);
  return out;
}

function cli(args: string[], input?: string): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', input, env: { ...process.env, MOE_DIFFUSEQ_THREADS: '1' } });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

const MODEL = JSON.stringify({
  model: { embDim: 8, hidden: 16, layers: 1, heads: 2, seqLen: 24, maxLen: 24, globalTokens: 2, diffusionSteps: 50, attention: { window: 4 }, ffn: { experts: 2, topK: 1 } },
  batchSize: 4,
  evalExamples: 3,
  evalSteps: 2,
  logEvery: 2,
});

test('train -> resume -> sample -> eval -> plot in a temporary folder', () => {
  const t = tempDir();
  try {
    const cfg = join(t.dir, 'run.json');
    writeFileSync(cfg, MODEL);
    const out = join(t.dir, 'run');
    let r = cli(['train', '--data', DATA, '--out', out, '--tokenizer', TOKENIZER, '--config', cfg, '--max-steps', '6', '--stop-after', '4', '--save-every', '2', '--quiet']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /finished step 4; checkpoint .*checkpoint-000004/);
    r = cli(['train', '--out', out, '--resume', '--quiet']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /finished step 6/);
    assert.match(r.err, /resuming .* \(step 4\)/);
    // sample: inline text and a JSONL file (with references carried to the output)
    r = cli(['sample', '--model', out, '--text', 'how do i learn to cook ?', '--steps', '3', '--truncate']);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out.split('\n').length, 2, 'one line of output for one input');
    const inputs = join(t.dir, 'in.jsonl');
    writeFileSync(inputs, readFileSync(DATA, 'utf8').split('\n').slice(0, 3).join('\n') + '\n');
    const hyps = join(t.dir, 'hyps.jsonl');
    r = cli(['sample', '--model', out, '--input', inputs, '--steps', '2', '--candidates', '2', '--out', hyps, '--truncate']);
    assert.equal(r.code, 0, r.err);
    const rows = readFileSync(hyps, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { src: string; hyp: string; ref: string; candidates: string[] });
    assert.equal(rows.length, 3);
    assert.ok(rows.every((x) => typeof x.hyp === 'string' && x.candidates.length === 2 && x.candidates.includes(x.hyp) && typeof x.ref === 'string'));
    r = cli(['eval', '--hyp', hyps, '--ref', inputs, '--json']);
    assert.equal(r.code, 0, r.err);
    const m = JSON.parse(r.out) as { sentences: number; results: { metrics: Record<string, number> }[] };
    assert.equal(m.sentences, 3);
    const scores = m.results[0]!.metrics;
    assert.ok(scores['bleu']! >= 0 && scores['bleu']! <= 100 && scores['rougeL']! >= 0 && scores['rougeL']! <= 1, JSON.stringify(scores));
    r = cli(['plot', out]);
    assert.equal(r.code, 0, r.err);
    assert.match(readFileSync(join(out, 'curves.svg'), 'utf8'), /^<svg[^>]*>.*<polyline/s);
  } finally {
    t.done();
  }
});

test('--show-steps prints the decoded text of every step', () => {
  const t = tempDir();
  try {
    const out = trainedRun(t.dir);
    const r = cli(['sample', '--model', out, '--text', 'what is it ?', '--steps', '3', '--show-steps']);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(r.err.match(/\[input 1, step \d\/3\]/g), ['[input 1, step 1/3]', '[input 1, step 2/3]', '[input 1, step 3/3]']);
  } finally {
    t.done();
  }
});

test('every user-facing error is one line with exit code 2', () => {
  const t = tempDir();
  try {
    const bad = join(t.dir, 'bad.jsonl');
    writeFileSync(bad, '{"src": "a", "trg": "b"}\n{"src": "a", "trg": \n');
    const empty = join(t.dir, 'empty.txt');
    writeFileSync(empty, '\n');
    const cfg = join(t.dir, 'bad-config.json');
    writeFileSync(cfg, '{"maxStep": 3}');
    const cases: [string[], RegExp][] = [
      [['train', '--out', t.dir], /train: --data is required/],
      [['train', '--data', DATA], /train: --out is required/],
      [['train', '--data', DATA, '--out', join(t.dir, 'x'), '--preset', 'huge'], /--preset must be one of tiny, base, diffuseq-base, long/],
      [['train', '--data', DATA, '--out', join(t.dir, 'x'), '--lr', 'fast'], /--lr expects a number \(got 'fast'\)/],
      [['train', '--data', DATA, '--out', join(t.dir, 'x'), '--lr=-1'], /lr must be/],
      [['train', '--data', join(t.dir, 'missing.jsonl'), '--out', join(t.dir, 'x')], /missing\.jsonl/],
      [['train', '--data', bad, '--out', join(t.dir, 'x'), '--tokenizer', TOKENIZER], /bad\.jsonl:2: /],
      [['train', '--data', DATA, '--out', join(t.dir, 'x'), '--config', cfg], /bad-config\.json: unknown option 'maxStep'/],
      [['train', '--out', join(t.dir, 'nothing'), '--resume'], /--resume: no checkpoint in/],
      [['train', '--data', DATA, '--out', join(t.dir, 'x'), '--bogus'], /Unknown option '--bogus'/],
      [['sample', '--model', join(t.dir, 'nope'), '--text', 'x'], /neither a model folder .* nor a run folder/],
      [['sample', '--model', t.dir], /give --input FILE or --text/],
      [['sample', '--model', t.dir, '--text', 'x', '--steps', '0'], /--steps must be at least 1/],
      [['sample', '--model', t.dir, '--text', 'x', '--input', 'y'], /either --input or --text/],
      [['eval', '--hyp', empty], /--ref/],
      [['plot', t.dir], /no metrics\.jsonl here/],
      [['nonsense'], /unknown command 'nonsense'/],
    ];
    for (const [args, re] of cases) {
      const r = cli(args);
      assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}; ${r.err}`);
      assert.match(r.err, re, args.join(' '));
      assert.ok(!/\n\s+at /.test(r.err), `${args.join(' ')}: no stack trace`);
    }
    assert.ok(!existsSync(join(t.dir, 'x', 'checkpoint-000001')));
  } finally {
    t.done();
  }
});

test('sample: empty and over-long inputs are clear errors naming the line', () => {
  const t = tempDir();
  try {
    const out = trainedRun(t.dir);
    const inp = join(t.dir, 'in.txt');
    writeFileSync(inp, 'fine input\n   \n');
    let r = cli(['sample', '--model', out, '--input', inp, '--steps', '1']);
    assert.equal(r.code, 2);
    assert.match(r.err, /in\.txt:2: empty input/);
    writeFileSync(inp, 'fine\n' + 'word '.repeat(40) + '\n');
    r = cli(['sample', '--model', out, '--input', inp, '--steps', '1']);
    assert.equal(r.code, 2);
    assert.match(r.err, /in\.txt:2: input of \d+ tokens is over the limit of 10 source tokens for seqLen 24/);
    r = cli(['sample', '--model', out, '--input', inp, '--steps', '1', '--truncate']);
    assert.equal(r.code, 0, r.err);
  } finally {
    t.done();
  }
});

test('Ctrl-C (SIGINT) saves a checkpoint and exits; --resume continues from it', async () => {
  const t = tempDir();
  try {
    const cfg = join(t.dir, 'run.json');
    writeFileSync(cfg, MODEL);
    const out = join(t.dir, 'run');
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, [CLI, 'train', '--data', DATA, '--out', out, '--tokenizer', TOKENIZER, '--config', cfg, '--max-steps', '100000', '--save-every', '0', '--quiet'], {
      env: { ...process.env, MOE_DIFFUSEQ_THREADS: '1' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    // wait until it is training (its first metrics line), then interrupt
    const metrics = join(out, 'metrics.jsonl');
    for (let i = 0; i < 200 && !existsSync(metrics); i++) await new Promise((r) => setTimeout(r, 50));
    child.kill('SIGINT');
    const code = await new Promise<number>((r) => child.on('exit', (c) => r(c ?? -1)));
    assert.equal(code, 130, stderr);
    assert.match(stderr, /Ctrl-C: saving a checkpoint/);
    assert.match(stdout, /interrupted at step (\d+); checkpoint .*checkpoint-0*\1/);
    const step = Number(/interrupted at step (\d+)/.exec(stdout)![1]);
    const r = cli(['train', '--out', out, '--resume', '--max-steps', String(step + 2), '--quiet']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, new RegExp(`finished step ${step + 2}`));
  } finally {
    t.done();
  }
});
