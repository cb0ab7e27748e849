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
import { microConfig } from './fixtures.js';

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
