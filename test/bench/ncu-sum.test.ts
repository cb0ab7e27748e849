import assert from 'node:assert/strict';
import { test } from 'node:test';
import { csvFields, sumByKernel } from '../../bench/ncu-sum.js';

// the shape of `ncu --csv --page raw` output: a preamble, the header, the units row, one row per launch
const CSV = [
  '==PROF== Connected to process 495',
  '"ID","Process ID","Kernel Name","Context","gpu__time_duration.sum"',
  '"","","","","ns"',
  '"0","495","attn_fwd_mma64(bf16_t *, float *, int)","1","1,500"',
  '"1","495","void cutlass::Kernel2<a, b>(T1::Params)","1","250"',
  '"2","495","attn_fwd_mma64(bf16_t *, float *, int)","1","2,500"',
  '"3","495","convert_float","1","n/a"',
].join('\n');

test('csvFields: quoted fields with commas and doubled quotes', () => {
  assert.deepEqual(csvFields('"a,b","c""d",e,'), ['a,b', 'c"d', 'e', '']);
});

test('sumByKernel: milliseconds and launches per kernel name, over runs; bad input named', () => {
  const s = sumByKernel(CSV, 2);
  assert.deepEqual(s.get('attn_fwd_mma64'), { ms: (1500 + 2500) * 1e-6 / 2, launches: 1 });
  assert.deepEqual(s.get('void cutlass::Kernel2<a, b>'), { ms: 250e-6 / 2, launches: 0.5 });
  assert.equal(s.has('convert_float'), false, 'a row without a number is skipped');
  assert.throws(() => sumByKernel('no header here'), /no ncu CSV header/);
  assert.throws(() => sumByKernel(CSV.replace('"ns"', '"furlongs"')), /unknown duration unit "furlongs" on line 3/);
});
