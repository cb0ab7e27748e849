/** bench/kernel-cost.ts: reading bench:gpu's figures and the medians of the rounds. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { median, parseMs, variants } from '../../bench/kernel-cost.js';

test('kernel-cost reads the sampling run\'s and the training step\'s milliseconds from bench:gpu\'s output, and nothing else', () => {
  const sample = 'cuda:0 (NVIDIA H200)\nbase sample 16x2048, 10 denoiser calls: 224.4 ms (14.0 ms per document)\nbase sample 1x2048, 10 denoiser calls: 21.5 ms (21.5 ms per document)\n';
  assert.equal(parseMs(sample, 'sample'), 21.5, 'the batch-1 line, not the batch of 16');
  assert.equal(parseMs('base train 16x2048: 467,383 tok/s, 70.1 ms/step, 250.2 TFLOP/s (MFU 31.75%)', 'train'), 70.1);
  assert.equal(parseMs('base train 16x2048: 451465 tok/s, 72.6 ms/step', 'train'), 72.6);
  assert.equal(parseMs(sample, 'train'), null);
  assert.equal(parseMs('Error: no CUDA GPU', 'sample'), null);
});

test('kernel-cost\'s median: the middle of an odd count, the mean of the middle two of an even one, whatever the order', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.equal(median([7]), 7);
  assert.equal(median([22.0, 21.4, 21.8, 40.9, 21.3]), 21.8);
});

test('kernel-cost\'s variants: a kernel each, launched twice, or the values of one environment switch; malformed requests refused', () => {
  assert.deepEqual(variants('a, b', undefined, ['x']), [
    { label: 'a', env: { MOE_DIFFUSEQ_REPEAT_KERNELS: 'a' } },
    { label: 'b', env: { MOE_DIFFUSEQ_REPEAT_KERNELS: 'b' } },
  ]);
  assert.deepEqual(variants(undefined, undefined, ['x', 'y']).map((v) => v.label), ['x', 'y'], 'the defaults without --kernels');
  assert.deepEqual(variants('a', 'MOE_DIFFUSEQ_ATTN_SPLIT_TILES=4,16', ['x']), [
    { label: 'MOE_DIFFUSEQ_ATTN_SPLIT_TILES=4', env: { MOE_DIFFUSEQ_ATTN_SPLIT_TILES: '4' } },
    { label: 'MOE_DIFFUSEQ_ATTN_SPLIT_TILES=16', env: { MOE_DIFFUSEQ_ATTN_SPLIT_TILES: '16' } },
  ], '--env wins over --kernels');
  assert.throws(() => variants(undefined, 'NOVALUE', []), /NAME=value/);
  assert.throws(() => variants(undefined, 'X=,', []), /no values/);
  assert.throws(() => variants(' , ', undefined, ['x']), /no kernel names/);
});
