/**
 * A kernel worker thread (see kernels.ts for the protocol): instantiates the kernels over the shared
 * memory, then waits for jobs, runs its slice (tid, nth) and signals completion.
 */
import { workerData } from 'node:worker_threads';

interface Init {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  ctrl: SharedArrayBuffer;
  tid: number;
  names: string[];
  /** The generation at spawn time: the first job is the one after it (a late start must not miss it). */
  gen: number;
}

const init = workerData as Init;
const instance = new WebAssembly.Instance(init.module, {
  env: {
    memory: init.memory,
    abort: () => {
      throw new Error('wasm kernel abort');
    },
  },
});
const ex = instance.exports as Record<string, (...a: number[]) => void>;
const fns = init.names.map((n) => ex[n]!);
const ctrl = new Int32Array(init.ctrl, 0, 16);
const args = new Float64Array(init.ctrl, 64, 32);

let gen = init.gen;
for (;;) {
  // Wait until the generation moves on. A wake-up alone proves nothing: the caller's notify for a
  // job can arrive after this thread already ran that job (the caller was descheduled between
  // bumping the generation and notifying), and running it twice would accumulate twice. Waits are
  // bounded for the reason given in kernels.ts.
  // Spin for up to ~2 ms first: kernels come in quick succession during a training step, and a
  // sleeping thread takes tens of microseconds (more on a busy host) to wake.
  let cur = Atomics.load(ctrl, 0);
  const spinUntil = performance.now() + 2;
  for (let i = 0; cur === gen; i++) {
    if ((i & 255) === 255 && performance.now() > spinUntil) break;
    cur = Atomics.load(ctrl, 0);
  }
  while ((cur = Atomics.load(ctrl, 0)) === gen) Atomics.wait(ctrl, 0, gen, 200);
  gen = cur;
  const fi = ctrl[2]!;
  if (fi < 0) break;
  const nth = ctrl[4]!;
  if (init.tid < nth) {
    try {
      const a: number[] = [];
      for (let i = 0; i < ctrl[3]!; i++) a.push(args[i]!);
      fns[fi]!(...a, init.tid, nth);
    } catch {
      ctrl[5] = 1;
    }
  }
  if (Atomics.sub(ctrl, 1, 1) === 1) Atomics.notify(ctrl, 1);
}
