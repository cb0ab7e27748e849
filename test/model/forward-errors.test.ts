/**
 * A denoiser forward that fails midway (a device error, or a graph recording that meets a read-back)
 * frees what it had allocated: nothing of its cache stays live.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CpuBackend } from '../../src/backend/cpu/backend.js';
import { Model } from '../../src/model/model.js';
import { microConfig } from './fixtures.js';

test('a forward that throws midway leaves no tensor live, and the next forward works', () => {
  const be = new CpuBackend({ threads: 1 });
  try {
    const cfg = microConfig();
    assert.equal(cfg.ffn.kind, 'moe', 'the failure is injected into the experts\' product');
    const m = Model.init(cfg, be, 2);
    const xt = be.empty([2, 6, cfg.embDim], 'float32');
    be.randomNormal(xt, 3, 0);
    const before = be.memory();
    const grouped = be.groupedMatmul.bind(be);
    let calls = 0;
    // the second layer's experts fail: the first layer's tensors and the second's attention are live
    be.groupedMatmul = (...args) => {
      if (++calls === 3) throw new Error('injected failure');
      grouped(...args);
    };
    assert.throws(() => m.denoiser.forward(xt, [4, 9], { train: true }), /injected failure/);
    assert.equal(calls, 3, 'it failed in the second layer');
    assert.equal(be.memory().liveTensors, before.liveTensors, 'no tensor of the failed forward is live');
    assert.equal(be.memory().liveBytes, before.liveBytes);
    be.groupedMatmul = grouped;
    const cache = m.denoiser.forward(xt, [4, 9], { train: true });
    assert.ok(be.memory().liveBytes > before.liveBytes, 'a forward that succeeds holds its cache');
    cache.dispose();
    assert.equal(be.memory().liveBytes, before.liveBytes);
    xt.dispose();
    m.dispose();
  } finally {
    be.close();
  }
});
