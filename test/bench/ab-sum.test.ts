/** bench/ab-sum.ts: the medians of an A/B log per build and measure. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { abTable, parseAb } from '../../bench/ab-sum.js';

const LOG = `== dist (round 1)
base sample 16x2048, 10 denoiser calls: 224.4 ms (14.0 ms per document)
base sample 1x2048, 10 denoiser calls: 21.5 ms (21.5 ms per document)
== dist-base (round 1)
base sample 16x2048, 10 denoiser calls: 230.0 ms (14.4 ms per document)
base sample 1x2048, 10 denoiser calls: 22.0 ms (22.0 ms per document)
== dist (round 2)
base sample 1x2048, 10 denoiser calls: 21.1 ms (21.1 ms per document)
noise line: 99 ms
== dist-base (round 2)
base sample 1x2048, 10 denoiser calls: 22.4 ms (22.4 ms per document)
== dist (round 3)
base sample 1x2048, 10 denoiser calls: 30.0 ms (30.0 ms per document)
base train 16x2048: 467,383 tok/s, 70.1 ms/step, 250.2 TFLOP/s (MFU 31.75%)
`;

test('ab-sum groups the figures by build and measure, skipping other lines, and gives medians and ratios', () => {
  const { builds, runs } = parseAb(LOG);
  assert.deepEqual(builds, ['dist', 'dist-base']);
  assert.deepEqual(runs.get('base sample 1x2048, 10 denoiser calls')!.get('dist'), [21.5, 21.1, 30.0]);
  assert.deepEqual(runs.get('base sample 1x2048, 10 denoiser calls')!.get('dist-base'), [22.0, 22.4]);
  assert.deepEqual(runs.get('base sample 16x2048, 10 denoiser calls')!.get('dist'), [224.4], 'the figure in ms, not the per-document one');
  assert.deepEqual(runs.get('base train 16x2048')!.get('dist'), [70.1], 'a training line gives its ms/step, not its tok/s');
  const t = abTable(builds, runs).split('\n');
  assert.equal(t.length, 2 + 3);
  assert.equal(t[2], '| base sample 16x2048, 10 denoiser calls | 224.40 (1) | 230.00 (1) | 1.025x |');
  assert.equal(t[3], '| base sample 1x2048, 10 denoiser calls | 21.50 (3) | 22.20 (2) | 1.033x |');
  assert.equal(t[4], '| base train 16x2048 | 70.10 (1) | - | - |');
});
