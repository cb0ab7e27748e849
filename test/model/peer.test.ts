/**
 * `check-loss` against an independent implementation of SPEC.md: the PyTorch peer
 * (shared/peers/pytorch), evaluated in float64 by test/fixtures/gen/peer_loss.py on the cases of
 * test/fixtures/loss-cases. The contract: agreement to 1e-9 (relative) in float64, 1e-5 in
 * float32.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { relErr } from '../helpers.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const cases = `${root}test/fixtures/loss-cases`;
const peer = JSON.parse(readFileSync(`${cases}/peer-expected.json`, 'utf8')) as Record<string, Record<string, number | number[][][]>>;

for (const name of Object.keys(peer)) {
  for (const [dtype, tol] of [['float64', 1e-9], ['float32', 1e-5]] as const) {
    test(`check-loss ${dtype} agrees with the PyTorch peer: ${name}`, () => {
      const out = execFileSync(process.execPath, [`${root}dist/src/cli/main.js`, 'check-loss', '--model', `${cases}/${name}`, '--case', `${cases}/${name}/case.json`, '--dtype', dtype], {
        encoding: 'utf8',
        env: { ...process.env, MOE_DIFFUSEQ_THREADS: '1' },
      });
      const ours = JSON.parse(out) as Record<string, number | number[][][]>;
      const ref = peer[name]!;
      for (const k of ['total', 'mse', 'tT', 'nll', 'aux', 'z', 'mNorm']) {
        const a = ours[k] as number;
        const b = ref[k] as number;
        assert.ok(Math.abs(a - b) <= tol * Math.max(Math.abs(b), 1e-12), `${k}: ours ${a}, peer ${b}`);
      }
      const flat = (x: number[][][]) => x.flat(2);
      const e = relErr(flat(ours['x0Hat'] as number[][][]), flat(ref['x0Hat'] as number[][][]));
      assert.ok(e <= tol, `x0Hat relative error ${e}`);
    });
  }
}
