/**
 * The samplers of SPEC section 5 against a host-side reference written from the SPEC text: the
 * whole trajectory x (the denoiser's input at every step) must match, for DDIM (clamped or not, eta
 * 0 and > 0) and DPM-Solver++(2M).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CpuBackend } from '../../src/backend/cpu/backend.js';
import { philoxNormal, PhiloxStream } from '../../src/backend/philox.js';
import { Model } from '../../src/model/model.js';
import { extractTarget, roundHalfEven, sampleIds, samplingTimesteps } from '../../src/sample/sampler.js';
import { microConfig } from '../model/fixtures.js';

const be = new CpuBackend({ threads: 1 });

test('the DDIM grid: tau_i = round((i+1) T / S) - 1 with Python rounding, from T-1 down', () => {
  assert.deepEqual(samplingTimesteps(2000, 10), [1999, 1799, 1599, 1399, 1199, 999, 799, 599, 399, 199]);
  assert.deepEqual(samplingTimesteps(10, 4), [9, 7, 4, 1]); // 10, 7.5 -> 8, 5, 2.5 -> 2 (half to even), minus 1
  assert.deepEqual(samplingTimesteps(5, 5), [4, 3, 2, 1, 0]);
  assert.deepEqual([0.5, 1.5, 2.5, -0.5, 2.4, 2.6].map(roundHalfEven), [0, 2, 2, -0, 2, 3]);
  assert.throws(() => samplingTimesteps(10, 11), /steps/);
});

test('extractTarget: between the [SEP] after the source and the next [SEP] or [PAD]', () => {
  assert.deepEqual(extractTarget([1, 5, 2, 7, 8, 2, 9, 0], 3, 8, 2, 0), [7, 8]);
  assert.deepEqual(extractTarget([1, 5, 2, 7, 0, 8], 3, 6, 2, 0), [7]);
  assert.deepEqual(extractTarget([1, 5, 2, 7, 8, 9], 3, 6, 2, 0), [7, 8, 9]);
});

/** The reference: SPEC section 5 on the host in float64, using the model's denoiser for x0_hat. */
function reference(model: Model, ids: Int32Array, mask: Int32Array, B: number, N: number, sampler: 'ddim' | 'dpm++', S: number, clamp: boolean, eta: number, seed: number): Float64Array[] {
  const cfg = model.config;
  const e = cfg.embDim;
  const T = cfg.diffusionSteps;
  const ab = model.alphaBar;
  const E = be.toArray(model.params.get('word_embeddings.weight'));
  const m = cfg.absorbing ? be.toArray(model.params.get('mean_embed')) : new Float64Array(e);
  const V = cfg.vocabSize;
  const rng = new PhiloxStream(seed);
  const noise = new Float64Array(B * N * e);
  philoxNormal(noise, seed, rng.take(B * N * e), Math.sqrt(1 - ab[T - 1]!));
  // y = x - m on targets; sources are E[src]
  const y = Float64Array.from(noise);
  const taus = samplingTimesteps(T, S);
  const states: Float64Array[] = [];
  let prevY0: Float64Array | null = null;
  let hPrev = 0;
  for (let k = 0; k < taus.length; k++) {
    const t = taus[k]!;
    const abT = ab[t]!;
    const abPrev = k === taus.length - 1 ? 1 : ab[taus[k + 1]!]!;
    const x = new Float64Array(B * N * e);
    for (let i = 0; i < B * N; i++) for (let c = 0; c < e; c++) x[i * e + c] = mask[i] ? y[i * e + c]! + m[c]! : E[ids[i]! * e + c]!;
    states.push(x);
    if (k === taus.length - 1) break;
    const xt = be.fromArray(x, [B, N, e], model.dtype);
    const cache = model.denoiser.forward(xt, new Array(B).fill(t), { train: false });
    const x0 = be.toArray(cache.x0);
    cache.dispose();
    xt.dispose();
    const y0 = new Float64Array(B * N * e);
    for (let i = 0; i < B * N; i++) {
      let best = 0;
      if (clamp) {
        let bd = Infinity;
        for (let v = 0; v < V; v++) {
          let dd = 0;
          for (let c = 0; c < e; c++) dd += (x0[i * e + c]! - E[v * e + c]!) ** 2;
          if (dd < bd) [bd, best] = [dd, v];
        }
      }
      for (let c = 0; c < e; c++) y0[i * e + c] = (clamp ? E[best * e + c]! : x0[i * e + c]!) - m[c]!;
    }
    if (sampler === 'ddim') {
      const s = eta * Math.sqrt((1 - abPrev) / (1 - abT)) * Math.sqrt(1 - abT / abPrev);
      const z = new Float64Array(B * N * e);
      if (s > 0) philoxNormal(z, seed, rng.take(B * N * e), s);
      for (let j = 0; j < y.length; j++) {
        const epsHat = (y[j]! - Math.sqrt(abT) * y0[j]!) / Math.sqrt(1 - abT);
        y[j] = Math.sqrt(abPrev) * y0[j]! + Math.sqrt(1 - abPrev - s * s) * epsHat + z[j]!;
      }
    } else {
      const lam = (a: number) => Math.log(Math.sqrt(a) / Math.sqrt(1 - a));
      const h = lam(abPrev) - lam(abT);
      for (let j = 0; j < y.length; j++) {
        const D = prevY0 ? (1 + 1 / (2 * (hPrev / h))) * y0[j]! - (1 / (2 * (hPrev / h))) * prevY0[j]! : y0[j]!;
        y[j] = (Math.sqrt(1 - abPrev) / Math.sqrt(1 - abT)) * y[j]! - Math.sqrt(abPrev) * (Math.exp(-h) - 1) * D;
      }
      prevY0 = y0;
      hPrev = h;
    }
  }
  return states;
}

for (const [sampler, clamp, eta, absorbing] of [['ddim', true, 0, true], ['ddim', false, 0, false], ['ddim', true, 0.7, true], ['dpm++', false, 0, true]] as const) {
  test(`${sampler} (clamp ${clamp}, eta ${eta}, absorbing ${absorbing}): the trajectory matches the SPEC reference`, () => {
    const cfg = microConfig({ diffusionSteps: 60, absorbing });
    const model = Model.init(cfg, be, 11, 'float64');
    const B = 2, N = 7;
    const ids = Int32Array.from([1, 4, 5, 2, 0, 0, 0, 1, 6, 2, 0, 0, 0, 0]);
    const mask = Int32Array.from([0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1]);
    const states: (Float32Array | Float64Array)[] = [];
    const tokens = sampleIds(model, ids, mask, B, N, { sampler, steps: 5, clamp, eta, seed: 21, onState: (_k, x) => states.push(x) });
    const ref = reference(model, ids, mask, B, N, sampler, 5, clamp, eta, 21);
    assert.equal(states.length, ref.length);
    states.forEach((x, k) => {
      for (let j = 0; j < x.length; j++) assert.ok(Math.abs(x[j]! - ref[k]![j]!) < 1e-9 * (1 + Math.abs(ref[k]![j]!)), `step ${k} element ${j}: ${x[j]} vs ${ref[k]![j]}`);
    });
    // sources are copied through; generated ids are valid
    for (let i = 0; i < B * N; i++) {
      if (!mask[i]) assert.equal(tokens[i], ids[i]);
      assert.ok(tokens[i]! >= 0 && tokens[i]! < cfg.vocabSize);
    }
    model.dispose();
  });
}

test('sampling is deterministic in the seed, and different seeds differ', () => {
  const cfg = microConfig({ diffusionSteps: 60 });
  const model = Model.init(cfg, be, 12, 'float32');
  const ids = Int32Array.from([1, 4, 2, 0, 0, 0, 0]);
  const mask = Int32Array.from([0, 0, 0, 1, 1, 1, 1]);
  const run = (seed: number) => {
    const xs: number[] = [];
    sampleIds(model, ids, mask, 1, 7, { sampler: 'ddim', steps: 3, seed, onState: (k, x) => k === 1 && xs.push(...x) });
    return xs;
  };
  assert.deepEqual(run(5), run(5));
  assert.notDeepEqual(run(5), run(6));
  model.dispose();
});
