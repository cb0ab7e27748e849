/** MOE_DIFFUSEQ_DEFINES: the `#define` lines a benchmark's what-if variants put before the CUDA kernel sources. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { definesOf } from '../../src/backend/cuda/backend.js';

test('definesOf turns NAME and NAME=VALUE items into #define lines, and refuses anything that is not one', () => {
  assert.equal(definesOf(''), '');
  assert.equal(definesOf('WHATIF_NO_GELU'), '#define WHATIF_NO_GELU\n');
  assert.equal(definesOf(' A=1, B_2 ,C=-0.5'), '#define A 1\n#define B_2\n#define C -0.5\n');
  assert.throws(() => definesOf('1A'), /'1A' is not NAME or NAME=VALUE/);
  assert.throws(() => definesOf('A=1;B'), /is not NAME/);
  assert.throws(() => definesOf('A=x y'), /is not NAME/, 'no spaces inside a value: a define is one token');
});
