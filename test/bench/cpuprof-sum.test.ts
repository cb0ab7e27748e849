import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sumProfile, type CpuProfile } from '../../bench/cpuprof-sum.js';

const frame = (functionName: string, lineNumber: number) => ({ functionName, url: 'file:///x/dist/src/a.js', lineNumber });
// (root) > run > loss > toArray, and run > loss > loss (recursion) ; run > sync
const P: CpuProfile = {
  nodes: [
    { id: 1, callFrame: frame('(root)', -1), children: [2] },
    { id: 2, callFrame: frame('run', 10), children: [3, 6] },
    { id: 3, callFrame: frame('loss', 20), children: [4, 5] },
    { id: 4, callFrame: frame('toArray', 30) },
    { id: 5, callFrame: frame('loss', 20) },
    { id: 6, callFrame: frame('sync', 40) },
  ],
  samples: [4, 4, 5, 6, 2],
  timeDeltas: [1000, 3000, 500, 250, 2000],
};

test('sumProfile: self and inclusive ms per function, recursion counted once, callers of a name', () => {
  const s = sumProfile(P, 'toArray');
  assert.equal(s.totalMs, 6.75);
  assert.equal(s.self.get('toArray a.js:30'), 4);
  assert.equal(s.self.get('loss a.js:20'), 0.5);
  assert.equal(s.self.get('run a.js:10'), 2);
  assert.equal(s.inclusive.get('loss a.js:20'), 4.5, 'the recursive loss sample counts once');
  assert.equal(s.inclusive.get('run a.js:10'), 6.75);
  assert.equal(s.inclusive.get('(root) a.js:-1'), 6.75);
  assert.deepEqual([...s.callers], [['loss a.js:20 < run a.js:10 < (root) a.js:-1', 4]]);
  const r = sumProfile(P, 'loss', 1);
  assert.deepEqual([...r.callers], [['run a.js:10', 4.5]], 'the outermost loss frame, one frame up');
});

test('sumProfile: what is not a profile is refused', () => {
  assert.throws(() => sumProfile({ nodes: [], samples: [1], timeDeltas: [] } as CpuProfile), /not a V8 CPU profile/);
  assert.throws(() => sumProfile({ nodes: [], samples: [7], timeDeltas: [5] }), /sample 0 names node 7/);
});
