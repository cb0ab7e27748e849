/**
 * `moe-diffuseq init` and `moe-diffuseq check-loss` end to end, through the real entry point
 * (`node dist/src/cli/main.js`, in a child process: the test runner owns this process's stdout).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { CpuBackend } from '../../src/backend/cpu/backend.js';
import { runCli } from '../../src/cli/main.js';
import { diffusionLoss, type LossBatch, type LossNoise } from '../../src/diffusion/loss.js';
import { loadModel, saveModel } from '../../src/io/checkpoint.js';
import { presetConfig, type ModelConfig } from '../../src/model/config.js';
import { Model } from '../../src/model/model.js';
import { paramSpecs } from '../../src/model/params.js';
import { trainBpeSync } from '../../src/tokenizer/index.js';
import { microBatch, microConfig, microNoise } from '../model/fixtures.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/loss-cases/', import.meta.url));
const be = new CpuBackend({ threads: 1 });
const root = mkdtempSync(join(tmpdir(), 'moe-diffuseq-cli-model-'));
after(() => {
  be.close();
  rmSync(root, { recursive: true, force: true });
});

/** Runs the CLI (one kernel thread, like the in-process backend, so the numbers are the same bits). */
function cli(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', env: { ...process.env, MOE_DIFFUSEQ_THREADS: '1', MOE_DIFFUSEQ_DEBUG: '' } });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

/**
 * Runs the CLI in this process (faster, for the many error cases): only stderr is captured (the test
 * runner reports on stdout), so use it only where the command fails before printing.
 */
async function cliHere(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const write = process.stderr.write;
  let err = '';
  process.stderr.write = ((chunk: string | Uint8Array) => {
    err += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
    return true;
  }) as typeof process.stderr.write;
  const threads = process.env['MOE_DIFFUSEQ_THREADS'];
  process.env['MOE_DIFFUSEQ_THREADS'] = '1';
  try {
    return { code: await runCli(args), out: '', err };
  } finally {
    process.stderr.write = write;
    if (threads === undefined) delete process.env['MOE_DIFFUSEQ_THREADS'];
    else process.env['MOE_DIFFUSEQ_THREADS'] = threads;
  }
}

/** Asserts exit code 2 and one `moe-diffuseq: error:` line (plus an optional hint) naming every part. */
function fails(r: { code: number; out: string; err: string }, ...parts: string[]): void {
  assert.equal(r.code, 2, `exit code ${r.code}; stderr: ${r.err}`);
  const lines = r.err.trimEnd().split('\n');
  assert.match(lines[0]!, /^moe-diffuseq: error: /, r.err);
  assert.ok(lines.length <= 2 && (lines.length === 1 || lines[1]!.startsWith('hint: ')), `more than an error line and a hint: ${r.err}`);
  for (const p of parts) assert.ok(lines[0]!.includes(p), `${JSON.stringify(lines[0])} lacks ${JSON.stringify(p)}`);
}

interface Printed {
  total: number;
  mse: number;
  tT: number;
  nll: number;
  aux: number;
  z: number;
  mNorm: number;
  x0Hat: number[][][];
}

describe('init', () => {
  it('init --preset tiny --out DIR writes a loadable folder (bundled tokenizer, tiny preset, the seed-0 initialisation)', () => {
    const out = join(root, 'tiny');
    const r = cli('init', '--preset', 'tiny', '--out', out);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, new RegExp(`^wrote ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: preset tiny, 3\\.\\d\\dM parameters`));
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json']) assert.ok(existsSync(join(out, f)), f);
    assert.deepEqual(readdirSync(out).filter((f) => f.includes('.tmp-')), []);
    const { model, tokenizer, metadata } = loadModel(out, be);
    assert.deepEqual(model.config, presetConfig('tiny', { vocabSize: 30522 }));
    assert.ok(tokenizer);
    assert.equal(tokenizer.vocabSize, 30522);
    assert.equal(metadata['tokenizer_fingerprint'], tokenizer.fingerprint());
    const fresh = Model.init(model.config, be, 0);
    assert.ok(Buffer.from(be.toArray(model.params.flat).buffer).equals(Buffer.from(be.toArray(fresh.params.flat).buffer)), 'the weights are Model.init(config, seed 0)');
    model.dispose();
    fresh.dispose();
  });

  it('--tokenizer sets vocabSize, --seed changes the weights deterministically', () => {
    const tokDir = join(root, 'tok');
    trainBpeSync(['the cat sat on the mat', 'a dog and a cat'], { vocabSize: 264 }).save(tokDir);
    // (tiny: the base-sized presets would write hundreds of MB)
    const a = join(root, 'seed-a');
    const b = join(root, 'seed-b');
    const c = join(root, 'seed-c');
    for (const [dir, seed] of [[a, '7'], [b, '7'], [c, '8']] as const) {
      const r = cli('init', '--preset', 'tiny', '--out', dir, '--seed', seed, '--tokenizer', tokDir);
      assert.equal(r.code, 0, r.err);
    }
    const cfg = JSON.parse(readFileSync(join(a, 'config.json'), 'utf8')) as ModelConfig;
    assert.deepEqual(cfg, presetConfig('tiny', { vocabSize: 264 }));
    const { model, tokenizer } = loadModel(a, be);
    assert.equal(tokenizer?.vocabSize, 264);
    const fresh = Model.init(model.config, be, 7);
    assert.ok(Buffer.from(be.toArray(model.params.flat).buffer).equals(Buffer.from(be.toArray(fresh.params.flat).buffer)), 'the weights are Model.init(config, seed 7)');
    model.dispose();
    fresh.dispose();
    assert.ok(readFileSync(join(a, 'model.safetensors')).equals(readFileSync(join(b, 'model.safetensors'))), 'same seed, same bytes');
    assert.ok(!readFileSync(join(a, 'model.safetensors')).equals(readFileSync(join(c, 'model.safetensors'))), 'another seed, other weights');
  });

  it('usage errors: unknown preset, missing --preset or --out, a bad seed', () => {
    fails(cli('init', '--preset', 'huge', '--out', join(root, 'x')), '--preset must be one of tiny, base, diffuseq-base, long', "'huge'");
    fails(cli('init', '--out', join(root, 'x')), '--preset is required');
    fails(cli('init', '--preset', 'tiny'), '--out is required');
    fails(cli('init', '--preset', 'tiny', '--out', join(root, 'x'), '--seed', '1.5'), '--seed expects an integer');
    fails(cli('init', '--preset', 'tiny', '--out', join(root, 'x'), '--bogus'), "Unknown option '--bogus'");
    assert.ok(!existsSync(join(root, 'x')));
  });

  it('--help lists every option and the presets', () => {
    const r = cli('init', '--help');
    assert.equal(r.code, 0);
    assert.match(r.out, /^Usage: moe-diffuseq init --preset NAME --out DIR/);
    for (const o of ['--preset NAME', '--out DIR', '--seed N', '--tokenizer PATH', '--help']) assert.ok(r.out.includes(o), `help lacks ${o}`);
    for (const p of ['tiny', 'base', 'diffuseq-base', 'long']) assert.ok(r.out.includes(p), `help lacks the preset ${p}`);
  });
});

describe('check-loss', () => {
  // a small model folder: every feature on (sliding + global tokens, MoE with a shared expert, absorbing)
  const cfg = microConfig();
  const modelDir = join(root, 'micro');
  {
    const m = Model.init(cfg, be, 21);
    saveModel(modelDir, m);
    m.dispose();
  }
  const B = 3;
  const N = cfg.seqLen;
  const e = cfg.embDim;
  const batch = microBatch(cfg, B, N);
  const noise = microNoise(cfg, batch);
  const rows = (a: ArrayLike<number>, n: number) => Array.from({ length: a.length / n }, (_, i) => Array.from(a).slice(i * n, (i + 1) * n));
  const cube = (a: ArrayLike<number>) => rows(a, e).reduce<number[][][]>((acc, v, i) => {
    if (i % N === 0) acc.push([]);
    acc[acc.length - 1]!.push(v);
    return acc;
  }, []);
  const goodCase = (): Record<string, unknown> => ({
    inputIds: rows(batch.inputIds, N),
    inputMask: rows(batch.inputMask, N),
    t: noise.t,
    eps0: cube(noise.eps0),
    eps: cube(noise.eps),
    replaceMask: rows(noise.replaceMask, N),
    weights: noise.weights,
  });
  let nCase = 0;
  const writeCase = (c: unknown, text?: string): string => {
    const p = join(root, `case-${nCase++}.json`);
    writeFileSync(p, text ?? JSON.stringify(c));
    return p;
  };

  function direct(dtype: 'float32' | 'float64', b: LossBatch, n: LossNoise) {
    const { model } = loadModel(modelDir, be, { dtype });
    const r = diffusionLoss(model, b, n, { train: false, backward: false, returnX0: true });
    model.dispose();
    return r;
  }

  function run(caseFile: string, ...extra: string[]): Printed {
    const r = cli('check-loss', '--model', modelDir, '--case', caseFile, ...extra);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.err, '');
    const lines = r.out.trimEnd().split('\n');
    assert.equal(lines.length, 1, 'one line of JSON');
    const p = JSON.parse(lines[0]!) as Printed;
    assert.deepEqual(Object.keys(p), ['total', 'mse', 'tT', 'nll', 'aux', 'z', 'mNorm', 'x0Hat']);
    return p;
  }

  for (const dtype of ['float32', 'float64'] as const) {
    it(`prints the terms of diffusionLoss called directly (${dtype}) and x0Hat [B][N][e]`, () => {
      const file = writeCase(goodCase());
      const p = dtype === 'float32' ? run(file) : run(file, '--dtype', 'float64');
      const r = direct(dtype, batch, noise);
      for (const k of ['total', 'mse', 'tT', 'nll', 'aux', 'z', 'mNorm'] as const) assert.equal(p[k], r.terms[k], `${k}: printed ${p[k]}, direct ${r.terms[k]}`);
      assert.ok(p.total > 0 && p.aux > 0 && p.z > 0 && p.mNorm > 0, 'every term is present in this model');
      assert.equal(p.x0Hat.length, B);
      for (const row of p.x0Hat) {
        assert.equal(row.length, N);
        for (const v of row) assert.equal(v.length, e);
      }
      assert.deepEqual(p.x0Hat.flat(2), Array.from(r.x0!));
    });
  }

  it('float64 and float32 agree to float32 precision; weights default to 1', () => {
    const file = writeCase(goodCase());
    const p64 = run(file, '--dtype', 'float64');
    const p32 = run(file, '--dtype', 'float32');
    for (const k of ['total', 'mse', 'nll', 'aux', 'z', 'mNorm'] as const) assert.ok(Math.abs(p64[k] - p32[k]) <= 1e-5 * Math.abs(p64[k]) + 1e-6, `${k}: ${p64[k]} vs ${p32[k]}`);
    const { weights: _, ...noWeights } = goodCase();
    const p1 = run(writeCase(noWeights), '--dtype', 'float64');
    const r1 = direct('float64', batch, { ...noise, weights: [1, 1, 1] });
    assert.equal(p1.total, r1.terms.total);
    assert.notEqual(p1.total, p64.total, 'the case weights (0.5, 0.75, 1) are applied');
  });

  it('bad case files: exit 2 and a message naming the file and the field', async () => {
    const g = goodCase;
    const with_ = (k: string, v: unknown) => ({ ...g(), [k]: v });
    const { eps: _eps, ...noEps } = g();
    const { t: _t, ...noT } = g();
    const eps0 = g()['eps0'] as number[][][];
    eps0[1]![2] = eps0[1]![2]!.slice(1);
    const ids = g()['inputIds'] as number[][];
    ids[2]![4] = cfg.vocabSize;
    const negIds = g()['inputIds'] as number[][];
    negIds[0]![1] = -1;
    const cases: [unknown, string[], string?][] = [
      [noEps, ["'eps' must be [3][7][4]"]],
      [noT, ["'t' must hold 3 integers in [0, 50)"]],
      [with_('t', [0, 50, 3]), ["'t' must hold 3 integers in [0, 50)"]],
      [with_('t', [0, -1, 3]), ["'t'"]],
      [with_('t', [0, 1.5, 3]), ["'t'"]],
      [with_('t', [0, 1]), ["'t' must hold 3 integers"]],
      [{ ...g(), eps0 }, ["'eps0[1][2]' must have 4 numbers (embDim)"]],
      [with_('eps', (g()['eps'] as unknown[]).slice(1)), ["'eps' must be [3][7][4]"]],
      [with_('inputMask', rows(batch.inputMask, N).slice(0, 2)), ["'inputMask' must be [3][7] like inputIds"]],
      [with_('replaceMask', rows(noise.replaceMask, N).map((r) => r.slice(1))), ["'replaceMask' must be [3][7]"]],
      [with_('inputMask', rows(batch.inputMask, N).map((r) => r.map((x) => x * 2))), ["'inputMask' values must be 0 or 1"]],
      [with_('inputIds', ids), ["'inputIds[2][4]'", 'token id 11 is outside the model', '[0, 11)']],
      [with_('inputIds', negIds), ["'inputIds[0][1]'", 'token id -1']],
      [with_('inputIds', [[1, 2, 3], [1, 2]]), ["'inputIds' rows must all have 3 ids"]],
      [with_('inputIds', [[1.5, 2, 3, 4, 5, 6, 7], ...rows(batch.inputIds, N).slice(1)]), ["'inputIds[0][0]' must be an integer, got 1.5"]],
      [with_('inputIds', []), ["'inputIds' must be a non-empty array"]],
      [with_('weights', [1, 2]), ["'weights' must hold 3 finite numbers"]],
      [with_('weights', [1, 'x', 2]), ["'weights'"]],
      [with_('eps', cube(noise.eps).map((r, b) => r.map((v, n) => (b === 2 && n === 6 ? [v[0], null, v[2], v[3]] : v)))), ["'eps[2][6][1]' must be a finite number"]],
      [with_('extra', 1), ["unknown field 'extra'"]],
      [[1, 2], ['expected a JSON object']],
      [null, ['invalid JSON'], '{"inputIds": [[1, 2]],'],
      [null, ['invalid JSON'], ''],
    ];
    for (const [i, [c, parts, text]] of cases.entries()) {
      const file = writeCase(c, text);
      // through the real entry point for a few, in this process for the rest
      fails(i % 8 === 0 ? cli('check-loss', '--model', modelDir, '--case', file) : await cliHere('check-loss', '--model', modelDir, '--case', file), file, ...parts);
    }
    // longer than maxLen
    const long = microConfig({ maxLen: 9, seqLen: 9 });
    const lb = microBatch(long, 1, 10);
    const ln = microNoise(long, lb);
    const longCase = { inputIds: rows(lb.inputIds, 10), inputMask: rows(lb.inputMask, 10), t: ln.t, eps0: [rows(ln.eps0, 4)], eps: [rows(ln.eps, 4)], replaceMask: rows(ln.replaceMask, 10) };
    const lf = writeCase(longCase);
    fails(await cliHere('check-loss', '--model', modelDir, '--case', lf), lf, "'inputIds'", 'longer than the model', 'maxLen 9');
    const missing = join(root, 'no-such-case.json');
    fails(cli('check-loss', '--model', modelDir, '--case', missing), missing, 'cannot read (ENOENT)');
  });

  it('flags: --model and --case required, --dtype checked, a folder that is not a model', () => {
    const file = writeCase(goodCase());
    fails(cli('check-loss', '--case', file), 'check-loss: --model is required');
    fails(cli('check-loss', '--model', modelDir), 'check-loss: --case is required');
    fails(cli('check-loss', '--model', modelDir, '--case', file, '--dtype', 'float16'), '--dtype must be one of float32, float64', "'float16'");
    const notModel = join(root, 'not-a-model');
    fails(cli('check-loss', '--model', notModel, '--case', file), notModel, 'not a model folder');
  });

  it('--help lists every option and the case format', () => {
    const r = cli('check-loss', '--help');
    assert.equal(r.code, 0);
    assert.match(r.out, /^Usage: moe-diffuseq check-loss --model DIR --case FILE/);
    for (const o of ['--model DIR', '--case FILE', '--dtype float32|float64', '--help']) assert.ok(r.out.includes(o), `help lacks ${o}`);
    for (const f of ['inputIds', 'inputMask', 'eps0', 'replaceMask', 'weights', 'x0Hat', 'mNorm']) assert.ok(r.out.includes(f), `help lacks ${f}`);
    const main = cli('--help');
    assert.equal(main.code, 0);
    assert.match(main.out, /\n {2}init +write a freshly initialised model folder/);
    assert.match(main.out, /\n {2}check-loss +evaluate/);
  });
});

describe('check-loss on the committed fixtures (test/fixtures/loss-cases)', () => {
  const names = ['moe-sliding', 'diffuseq-base', 'moe-sliding-g0'];

  it('the fixtures are small model folders of the promised kinds', () => {
    for (const n of names) {
      const dir = join(FIXTURES, n);
      assert.deepEqual(readdirSync(dir).sort(), ['case.json', 'config.json', 'expected.json', 'model.safetensors'], n);
      for (const f of readdirSync(dir)) assert.ok(readFileSync(join(dir, f)).length < 100_000, `${n}/${f} is over 100 KB`);
      const { model } = loadModel(dir, be);
      const c = model.config;
      assert.ok(c.vocabSize <= 64 && c.embDim <= 8 && c.hidden <= 32 && c.layers === 2 && c.maxLen <= 32, n);
      assert.deepEqual([...model.params.specs.map((s) => s.name)], paramSpecs(c).map((s) => s.name));
      const kc = JSON.parse(readFileSync(join(dir, 'case.json'), 'utf8')) as { t: number[]; inputIds: number[][]; inputMask: number[][]; replaceMask: number[][]; weights: number[] };
      const B = kc.t.length;
      assert.ok(B >= 2 && B <= 3, n);
      assert.ok(kc.inputIds[0]!.length >= 12 && kc.inputIds[0]!.length <= 16, n);
      assert.ok(kc.t.includes(0), `${n}: t includes 0`);
      assert.equal(kc.weights.length, B);
      kc.replaceMask.flat().forEach((r, i) => assert.ok(r === 0 || kc.inputMask.flat()[i] === 1, `${n}: a replacement outside the target`));
      for (const m of kc.inputMask) assert.deepEqual(m, [...m].sort((x, y) => x - y), `${n}: source first, then target and padding`);
      if (n === 'diffuseq-base') assert.deepEqual([c.attention.kind, c.ffn.kind, c.absorbing], ['full', 'dense', false]);
      else assert.deepEqual([c.attention.kind, c.attention.window, c.ffn.kind, c.ffn.experts, c.ffn.topK, c.absorbing, c.globalTokens], ['sliding', 3, 'moe', 4, 2, true, n.endsWith('g0') ? 0 : 2]);
      model.dispose();
    }
  });

  it('check-loss reproduces expected.json (float64 and float32)', () => {
    for (const n of names) {
      const dir = join(FIXTURES, n);
      const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8')) as Record<'float32' | 'float64', Printed>;
      for (const dtype of ['float64', 'float32'] as const) {
        const r = cli('check-loss', '--model', dir, '--case', join(dir, 'case.json'), '--dtype', dtype);
        assert.equal(r.code, 0, r.err);
        const p = JSON.parse(r.out) as Printed;
        const tol = dtype === 'float64' ? 1e-12 : 1e-5;
        for (const k of ['total', 'mse', 'tT', 'nll', 'aux', 'z', 'mNorm'] as const) {
          assert.ok(Math.abs(p[k] - expected[dtype][k]) <= tol * (1 + Math.abs(expected[dtype][k])), `${n} ${dtype} ${k}: ${p[k]} vs ${expected[dtype][k]}`);
        }
        const a = p.x0Hat.flat(2);
        const b = expected[dtype].x0Hat.flat(2);
        assert.equal(a.length, b.length);
        a.forEach((v, i) => assert.ok(Math.abs(v - b[i]!) <= tol * (1 + Math.abs(b[i]!)), `${n} ${dtype} x0Hat[${i}]: ${v} vs ${b[i]}`));
      }
    }
  });
});
