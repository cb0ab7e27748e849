/**
 * Loads the WebAssembly SIMD kernels (assembly/index.ts, built to dist/kernels/cpu.wasm) over the
 * backend's shared memory and runs them on a pool of worker threads.
 *
 * Dispatch protocol (no postMessage on the hot path): a small SharedArrayBuffer holds a generation
 * counter, a pending counter, the kernel index and its arguments. The caller writes a job, bumps the
 * generation and wakes the workers (Atomics.notify); every thread, the caller included, runs the same
 * kernel with its own (tid, nth) and computes its own slice; the last worker to finish wakes the caller.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { LinearMemory } from './memory.js';

/** The kernels' exported functions, by name (see assembly/index.ts). */
export const KERNEL_NAMES = ['gemm_f32', 'bias_act_f32', 'attn_fwd_f32', 'attn_bwd_f32', 'xent_f32', 'gelu_f32', 'gelu_bwd_f32', 'dropout_f32', 'attn_fwd_blk_f32', 'attn_bwd_blk_f32'] as const;
/** A kernel name. */
export type KernelName = (typeof KERNEL_NAMES)[number];

type KernelFn = (...args: number[]) => void;

const CTRL_INTS = 16; // generation, pending, fn, nargs, nth, error
const MAX_ARGS = 32;

let compiled: { module: WebAssembly.Module; relaxed: boolean } | undefined;

/**
 * Whether the relaxed-SIMD build may be used: Node 20's V8 validates relaxed SIMD only behind a flag,
 * which can be raised at run time before the module is compiled (Node 22 has it on by default).
 * MOE_DIFFUSEQ_RELAXED_SIMD=0 turns it off (plain SIMD results are the same on every x86/ARM CPU;
 * fused multiply-adds round differently from a multiply and an add).
 */
function relaxedWanted(): boolean {
  if (process.env['MOE_DIFFUSEQ_RELAXED_SIMD'] === '0') return false;
  try {
    setFlagsFromString('--experimental-wasm-relaxed-simd');
  } catch {
    /* an unknown flag on a newer V8 where the feature is standard */
  }
  return true;
}

function readKernel(file: string): Buffer | null {
  try {
    return readFileSync(fileURLToPath(new URL(`../../../kernels/${file}`, import.meta.url)));
  } catch {
    return null;
  }
}

/** The compiled kernel module (compiled once per process): the relaxed-SIMD build where valid. */
export function kernelModule(): WebAssembly.Module {
  if (!compiled) {
    const relaxed = relaxedWanted() ? readKernel('cpu-relaxed.wasm') : null;
    if (relaxed && WebAssembly.validate(relaxed)) compiled = { module: new WebAssembly.Module(relaxed), relaxed: true };
    else {
      const plain = readKernel('cpu.wasm');
      if (!plain) throw new Error(`CPU kernels not built: ${fileURLToPath(new URL('../../../kernels/cpu.wasm', import.meta.url))} is missing (run npm run build)`);
      compiled = { module: new WebAssembly.Module(plain), relaxed: false };
    }
  }
  return compiled.module;
}

/** True when the kernels in use fuse multiply-adds (the relaxed-SIMD build). */
export function kernelsUseFma(): boolean {
  kernelModule();
  return compiled!.relaxed;
}

/** Instantiates the kernels over `memory` (used by the main thread and by each worker). */
export function instantiateKernels(memory: WebAssembly.Memory): WebAssembly.Instance {
  return new WebAssembly.Instance(kernelModule(), {
    env: {
      memory,
      abort: (_msg: number, _file: number, line: number, col: number) => {
        throw new Error(`wasm kernel abort at ${line}:${col}`);
      },
    },
  });
}

/** Default thread count: MOE_DIFFUSEQ_THREADS, else the number of cores. */
export function defaultThreads(): number {
  const env = Number(process.env['MOE_DIFFUSEQ_THREADS']);
  if (Number.isInteger(env) && env >= 1) return env;
  return Math.max(1, availableParallelism());
}

/** The main thread's kernel instance plus the worker pool. */
export class KernelPool {
  readonly instance: WebAssembly.Instance;
  private readonly fns: KernelFn[];
  private readonly ctrl: Int32Array;
  private readonly args: Float64Array;
  private workers: Worker[] = [];
  private started = false;

  constructor(
    private readonly mem: LinearMemory,
    readonly threads: number,
  ) {
    this.instance = instantiateKernels(mem.memory);
    const ex = this.instance.exports as Record<string, unknown>;
    this.fns = KERNEL_NAMES.map((n) => ex[n] as KernelFn);
    const sab = new SharedArrayBuffer(CTRL_INTS * 4 + MAX_ARGS * 8);
    this.ctrl = new Int32Array(sab, 0, CTRL_INTS);
    this.args = new Float64Array(sab, CTRL_INTS * 4, MAX_ARGS);
  }

  /** A numeric export of the module (e.g. GEMM_WS_BYTES). */
  constant(name: string): number {
    const g = (this.instance.exports as Record<string, unknown>)[name];
    if (g instanceof WebAssembly.Global) return Number(g.value);
    throw new Error(`kernel constant ${name} missing`);
  }

  /** The control words (tests use them to inject stale wake-ups). */
  get control(): Int32Array {
    return this.ctrl;
  }

  /** Calls an exported helper function on the main thread and returns its result. */
  call(name: string, ...args: number[]): number {
    const f = (this.instance.exports as Record<string, unknown>)[name] as (...a: number[]) => number;
    return f(...args);
  }

  private start(): void {
    this.started = true;
    const url = new URL('./worker.js', import.meta.url);
    for (let tid = 1; tid < this.threads; tid++) {
      const w = new Worker(url, {
        workerData: { module: kernelModule(), memory: this.mem.memory, ctrl: this.ctrl.buffer, tid, names: [...KERNEL_NAMES], gen: Atomics.load(this.ctrl, 0) },
      });
      w.unref();
      this.workers.push(w);
    }
  }

  /**
   * Runs kernel `name` with `args` + (tid, nth) on `nth` threads (1 = the caller alone) and returns
   * when all are done. Workers beyond nth skip the job.
   */
  run(name: KernelName, args: number[], nth: number): void {
    const fn = this.fns[KERNEL_NAMES.indexOf(name)]!;
    nth = Math.max(1, Math.min(nth, this.threads));
    if (nth === 1) {
      fn(...args, 0, 1);
      return;
    }
    if (!this.started) this.start();
    const c = this.ctrl;
    for (let i = 0; i < args.length; i++) this.args[i] = args[i]!;
    c[2] = KERNEL_NAMES.indexOf(name);
    c[3] = args.length;
    c[4] = nth;
    c[5] = 0;
    Atomics.store(c, 1, this.workers.length);
    Atomics.add(c, 0, 1);
    Atomics.notify(c, 0);
    let err: unknown;
    try {
      fn(...args, 0, nth);
    } catch (e) {
      err = e;
    }
    // the workers usually finish within microseconds of the caller: spin a little before sleeping
    for (let i = 0; i < 20000 && Atomics.load(c, 1) !== 0; i++);
    for (;;) {
      const p = Atomics.load(c, 1);
      if (p === 0) break;
      // a wake-up may be stale (a late notify of an earlier job): the loop re-checks the count; the
      // wait is bounded as a safety net so that a lost notify costs 50 ms, never a hang
      Atomics.wait(c, 1, p, 50);
    }
    if (err) throw err;
    if (c[5] !== 0) throw new Error(`wasm kernel ${name} failed in a worker thread`);
  }

  /** Stops the workers. */
  close(): void {
    if (this.started) {
      this.ctrl[2] = -1;
      Atomics.add(this.ctrl, 0, 1);
      Atomics.notify(this.ctrl, 0);
      for (const w of this.workers) void w.terminate();
    }
    this.workers = [];
    this.started = false;
  }
}
