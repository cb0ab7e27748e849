/**
 * Precision choices on the CPU: `auto` means float32 there, bf16 is refused with a clear error (the
 * CPU holds no bfloat16), and an unknown name is an error naming the choices. (The bf16 numbers
 * themselves are tested on a GPU: test/cuda/bf16.test.ts.)
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CpuBackend } from '../../src/backend/cpu/backend.js';
import { DTypeError, ConfigError } from '../../src/errors.js';
import { Model, resolvePrecision } from '../../src/model/model.js';
import { resolveTrainOptions } from '../../src/train/options.js';
import { microConfig, microDenoiserInputs } from './fixtures.js';

test('precision: auto is float32 on the CPU; bf16 and unknown names are refused clearly', () => {
  const be = new CpuBackend({ threads: 1 });
  try {
    assert.equal(be.supports('bfloat16'), false);
    assert.equal(be.supports('float64'), true);
    assert.equal(resolvePrecision('auto', be), 'float32');
    assert.equal(resolvePrecision('float32', be), 'float32');
    assert.throws(() => resolvePrecision('bf16', be), (e: unknown) => e instanceof ConfigError && /needs a GPU/.test(e.message));
    assert.throws(() => resolvePrecision('fp16', be), (e: unknown) => e instanceof ConfigError && /auto, float32, bf16/.test(e.message));
    const m = Model.init(microConfig(), be, 1);
    assert.equal(m.precision, 'float32');
    assert.throws(() => {
      m.precision = 'bf16';
    }, DTypeError);
    assert.equal(m.precision, 'float32', 'a refused change leaves the model as it was');
    m.dispose();
    assert.throws(() => be.empty([3], 'bfloat16'), DTypeError);
    assert.throws(() => resolveTrainOptions({ data: 'x', out: 'y', precision: 'half' }), (e: unknown) => e instanceof ConfigError && /precision must be auto, float32, bf16/.test(e.message));
    assert.equal(resolveTrainOptions({ data: 'x', out: 'y' }).precision, 'auto');
  } finally {
    be.close();
  }
});

test('castWeights: none without bfloat16 activations; forward refuses a copy it cannot use; copyAs views a snapshot by name', () => {
  const be = new CpuBackend({ threads: 1 });
  try {
    const m = Model.init(microConfig(), be, 1, 'float64');
    assert.equal(m.denoiser.castWeights(), null, 'float activations round nothing');
    const copy = m.params.copyAs('float32');
    // every parameter's copy is its value rounded to float32, at the same name and shape
    for (const spec of m.params.specs) {
      const want = Float32Array.from(be.toArray(m.params.get(spec.name)));
      const got = copy.get(spec.name);
      assert.deepEqual(got.shape, spec.shape, spec.name);
      assert.deepEqual([...(be.toArray(got) as Float32Array)], [...want], spec.name);
    }
    const q = m.params.specs.find((s) => s.name.endsWith('attn.q.weight'))!;
    const d = q.shape[0]!;
    assert.deepEqual([...(be.toArray(copy.span(q.name, [3 * d, d])) as Float32Array)].slice(0, d * d), [...(be.toArray(copy.get(q.name)) as Float32Array)]);
    // a snapshot: a later change of the parameters does not reach it
    const before = (be.toArray(copy.get(q.name)) as Float32Array)[0];
    be.fill(m.params.get(q.name), 0.5);
    assert.equal((be.toArray(copy.get(q.name)) as Float32Array)[0], before);
    assert.throws(() => copy.get('no.such'), /no parameter named no.such/);
    const xt = be.zeros([1, 4, microConfig().embDim], 'float64');
    assert.throws(() => m.denoiser.forward(xt, [1], { train: false, weights: copy }), (e: unknown) => e instanceof DTypeError && /converted from this denoiser's parameters to float64/.test(e.message));
    for (const t of [xt, copy, m]) t.dispose();
  } finally {
    be.close();
  }
});

test('an inference forward (no pre-activations kept) gives the training-free forward\'s x0 and refuses a backward', () => {
  const be = new CpuBackend({ threads: 1 });
  try {
    const cfg = microConfig();
    const m = Model.init(cfg, be, 5, 'float64');
    const { xt, dx0 } = microDenoiserInputs(be, cfg, 11);
    const full = m.denoiser.forward(xt, [4, 9], { train: false });
    const inf = m.denoiser.forward(xt, [4, 9], { train: false, inference: true });
    assert.deepEqual([...be.toArray(inf.x0)], [...be.toArray(full.x0)]);
    // refused before any gradient is accumulated (the head's would come first)
    const head = () => [...be.toArray(m.params.grad('output_down_proj.2.weight'))];
    const before = head();
    assert.throws(() => m.denoiser.backward(inf, dx0, 0.01, 0.001), /inference/);
    assert.deepEqual(head(), before, 'no gradient accumulated by a refused backward');
    for (const t of [full, inf, xt, dx0, m]) t.dispose();
  } finally {
    be.close();
  }
});

test('keepExpertActivations: the forward\'s experts\' activation serves the backward, with the recomputed one\'s gradients', () => {
  const be = new CpuBackend({ threads: 1 });
  try {
    const cfg = microConfig();
    const m = Model.init(cfg, be, 6, 'float64');
    const { xt, dx0 } = microDenoiserInputs(be, cfg, 13);
    const run = (keep: boolean) => {
      m.params.zeroGrads();
      const live = be.memory().liveBytes;
      const cache = m.denoiser.forward(xt, [5, 21], { train: true, keepExpertActivations: keep });
      const held = be.memory().liveBytes - live;
      const dxt = m.denoiser.backward(cache, dx0, 0.01, 0.001);
      const out = { held, dxt: [...be.toArray(dxt)], grads: [...be.toArray(m.params.grads)] };
      dxt.dispose();
      cache.dispose();
      assert.equal(be.memory().liveBytes, live, 'everything freed');
      return out;
    };
    const recomputed = run(false);
    const kept = run(true);
    assert.deepEqual(kept.dxt, recomputed.dxt);
    assert.deepEqual(kept.grads, recomputed.grads);
    assert.ok(kept.held > recomputed.held, `the forward holds the activations (${kept.held} vs ${recomputed.held} bytes)`);
    for (const t of [xt, dx0, m]) t.dispose();
  } finally {
    be.close();
  }
});
