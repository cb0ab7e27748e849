/** The training job: checkpoints, exact resume, metrics, NaN stop, crash safety. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { DivergenceError } from '../../src/errors.js';
import { loadModel } from '../../src/io/checkpoint.js';
import { CpuBackend } from '../../src/backend/cpu/backend.js';
import { listCheckpoints, resolveModelDir } from '../../src/train/checkpoints.js';
import { learningRate } from '../../src/train/options.js';
import { train } from '../../src/train/trainer.js';
import { CLI, microRun, quiet, tempDir } from './fixtures.js';

const bytes = (p: string) => readFileSync(p);

test('20 steps straight and 10 + resume + 10 (with activation recomputation) give bitwise the same weights, moments and EMA', async () => {
  const t = tempDir();
  try {
    const a = join(t.dir, 'a');
    const b = join(t.dir, 'b');
    const ra = await train(microRun(a), quiet);
    assert.equal(ra.step, 20);
    const rb1 = await train(microRun(b, { stopAfter: 10 }), quiet);
    assert.equal(rb1.step, 10);
    assert.deepEqual(listCheckpoints(b).map((c) => c.step), [5, 10], 'keeps the last 2');
    // the resumed half recomputes its activations: the same numbers
    const rb2 = await train({ out: b, resume: true, recompute: true }, quiet);
    assert.equal(rb2.step, 20);
    for (const f of ['optimizer.safetensors', 'model.safetensors']) {
      assert.ok(bytes(join(ra.checkpoint, f)).equals(bytes(join(rb2.checkpoint, f))), `${f} differs after resume`);
    }
    const sa = JSON.parse(readFileSync(join(ra.checkpoint, 'trainer_state.json'), 'utf8'));
    const sb = JSON.parse(readFileSync(join(rb2.checkpoint, 'trainer_state.json'), 'utf8'));
    assert.deepEqual(sb.sampler, sa.sampler);
    assert.deepEqual(sb.data, sa.data);
    assert.equal(sb.rngOffset, sa.rngOffset);
    // the metrics log of the resumed run continues without duplicates
    const steps = readFileSync(join(b, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.split === 'train').map((r) => r.step);
    assert.deepEqual(steps, [5, 10, 15, 20]);
  } finally {
    t.done();
  }
});

test('a run logs metrics, evaluates, and leaves a loadable model folder with the EMA weights', async () => {
  const t = tempDir();
  try {
    const logs: Record<string, unknown>[] = [];
    const r = await train(microRun(t.dir, { maxSteps: 6, logEvery: 2, evalEvery: 3 }), { ...quiet, onLog: (x) => logs.push(x) });
    const train_ = logs.filter((x) => x['split'] === 'train');
    assert.deepEqual(train_.map((x) => x['step']), [2, 4, 6]);
    for (const x of train_) for (const k of ['loss', 'mse', 'nll', 'lr', 'gradNorm', 'tokensPerSec']) assert.ok(Number.isFinite(x[k] as number), `${k} logged`);
    const valid = logs.filter((x) => x['split'] === 'valid');
    assert.deepEqual(valid.map((x) => x['step']), [3, 6]);
    assert.ok(typeof valid[0]!['bleu'] === 'number' && typeof valid[0]!['rougeL'] === 'number');
    assert.ok(r.eval && r.eval.samples.length === 4);
    const be = new CpuBackend({ threads: 1 });
    const { model, tokenizer } = loadModel(resolveModelDir(t.dir), be);
    assert.ok(tokenizer);
    assert.equal(model.config.hidden, 16);
    model.dispose();
    be.close();
  } finally {
    t.done();
  }
});

test('learning-rate schedule: warm-up, then linear or cosine decay to 0', () => {
  const o = { lr: 1, warmup: 4, maxSteps: 14, decay: 'linear' as const };
  assert.deepEqual([1, 2, 4].map((s) => learningRate(o, s)), [0.25, 0.5, 1]);
  assert.equal(learningRate(o, 5), 1);
  assert.equal(learningRate(o, 10), 0.5);
  assert.ok(Math.abs(learningRate({ ...o, decay: 'cosine' }, 10) - 0.5) < 1e-12);
  assert.equal(learningRate({ ...o, decay: 'constant' }, 14), 1);
});

test('a NaN loss stops the run with the step and a hint, and keeps the last good checkpoint', async () => {
  const t = tempDir();
  try {
    // an absurd learning rate overflows float32 within a few steps
    await assert.rejects(
      () => train(microRun(t.dir, { lr: 1e30, warmup: 0, clip: 0, maxSteps: 50, saveEvery: 1, keep: 1 }), quiet),
      (e: unknown) => e instanceof DivergenceError && /^step \d+: the (loss|gradient norm) is (NaN|Infinity|-Infinity)/.test(e.message) && /--lr/.test(e.hint ?? ''),
    );
    const cps = listCheckpoints(t.dir);
    assert.equal(cps.length, 1);
    const be = new CpuBackend({ threads: 1 });
    const { model } = loadModel(cps[0]!.dir, be);
    const w = be.toArray(model.params.flat);
    assert.ok(w.every((x) => Number.isFinite(x)), 'the kept checkpoint has finite weights');
    model.dispose();
    be.close();
  } finally {
    t.done();
  }
});

test('kill -9 at any moment leaves the previous checkpoint intact and loadable', async () => {
  const t = tempDir();
  try {
    for (const delay of [700, 1100, 1500]) {
      const out = join(t.dir, `run-${delay}`);
      const cfg = JSON.stringify(microRun(out, { maxSteps: 100000, saveEvery: 1, keep: 2 }));
      const child = spawn(process.execPath, ['--input-type=module', '-e', `import { train } from ${JSON.stringify(join(CLI, '../../train/trainer.js'))}; await train(${cfg}, { progress: false, log: () => {} });`], { stdio: 'ignore', env: { ...process.env, MOE_DIFFUSEQ_THREADS: '1' } });
      await new Promise((r) => setTimeout(r, delay));
      child.kill('SIGKILL');
      await new Promise((r) => child.on('exit', r));
      const cps = listCheckpoints(out);
      assert.ok(cps.length >= 1, `a checkpoint exists after ${delay} ms`);
      const be = new CpuBackend({ threads: 1 });
      for (const c of cps) {
        const { model } = loadModel(c.dir, be);
        assert.ok(existsSync(join(c.dir, 'optimizer.safetensors')) && existsSync(join(c.dir, 'trainer_state.json')));
        model.dispose();
      }
      be.close();
      // and the run resumes from the newest checkpoint
      const r = await train({ out, resume: true, maxSteps: cps[cps.length - 1]!.step + 2 }, quiet);
      assert.equal(r.step, cps[cps.length - 1]!.step + 2);
      assert.ok(!readdirSync(out).some((n) => n.startsWith('.checkpoint-')), 'no temporary folders left');
    }
  } finally {
    t.done();
  }
});

test('task lm trains on plain documents, chunked with overlap', async () => {
  const t = tempDir();
  try {
    const logs: Record<string, unknown>[] = [];
    const r = await train(
      microRun(t.dir, { data: join(CLI, '../../../../test/fixtures/data/sotu-2.jsonl.gz'), task: 'lm', overlap: 4, maxSteps: 3, logEvery: 1, evalExamples: 0 }),
      { ...quiet, log: (l) => logs.push({ l }), onLog: (x) => logs.push(x) },
    );
    assert.equal(r.step, 3);
    const dataLine = logs.find((x) => typeof x['l'] === 'string' && (x['l'] as string).startsWith('data:'))!['l'] as string;
    const n = Number(/data: (\d+) training sequences/.exec(dataLine)![1]);
    assert.ok(n > 100, `two speeches in chunks of 24 give many sequences (${dataLine})`);
    assert.ok(logs.some((x) => x['split'] === 'train' && Number.isFinite(x['loss'] as number)));
  } finally {
    t.done();
  }
});

test('the library: load(run folder) and sample()', async () => {
  const t = tempDir();
  try {
    await train(microRun(t.dir, { maxSteps: 2, evalExamples: 0 }), quiet);
    const { load } = await import('../../src/sample/load.js');
    const m = await load(t.dir);
    assert.match(m.dir, /checkpoint-000002$/);
    const out = m.sample(['what is love ?', 'how to cook ?'], { steps: 2, truncate: true });
    assert.equal(out.length, 2);
    assert.ok(out.every((o) => typeof o.text === 'string'));
    const k = m.sample(['what is love ?'], { steps: 2, candidates: 3, truncate: true });
    assert.equal(k[0]!.candidates!.length, 3);
    assert.equal(k[0]!.text, k[0]!.candidates![k[0]!.chosen!]);
    m.dispose();
  } finally {
    t.done();
  }
});
