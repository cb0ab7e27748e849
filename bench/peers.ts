/**
 * The peer libraries of the CPU kernel benchmark, each wrapped as a {@link Kernel}:
 * @tensorflow/tfjs-backend-wasm (XNNPACK) and @jax-js/jax (its wasm device). Both are bench-only
 * dev dependencies. Everything here is written the way a user of each library would write it,
 * with the library's public API only.
 */
import { createRequire } from 'node:module';
import { dirname, sep } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { getThreadsCount, setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { init as jaxInit, defaultDevice as jaxDefaultDevice, jit, nn, numpy as np } from '@jax-js/jax';
import type { AttnShape, Kernel } from './harness.js';

type JaxArray = np.Array;

/** What a peer reports about how it runs. */
export interface PeerInfo {
  /** Threads the peer computes on. */
  threads: number;
  /** A one-line description for the table notes and the header. */
  describe: string;
}

// ---- blocked sliding-window attention: the plan shared by both peers ----------------------------
//
// Neither library has a sparse/banded attention kernel (jax-js's dotProductAttention accepts
// localWindowSize, but it builds the full S x S score matrix and masks it). A user therefore does
// what Longformer-style implementations do: cut the N local queries into blocks of B = w rows; the
// keys of block j are the G globals plus local rows [jB - w, jB + B + w) = three blocks of the
// local keys padded by w on each side. Each block is then one small dense attention of
// B x (G + 3B) scores, with a constant mask removing the pairs outside the window and the
// padding. That computes (G + 3w) / (G + 2w + 1) more score pairs than the pattern allows (about
// 1.5x here), far less than full masked attention (S / (G + 2w + 1), about 15x here). The G
// global query rows attend to all S keys: one dense attention.

/** The constant mask of the blocked plan: 1 where local query r of block j may see key column c. */
function blockMask(s: AttnShape): Float32Array {
  const B = s.w;
  const nb = s.N / B;
  const cols = s.G + 3 * B;
  const m = new Float32Array(nb * B * cols);
  for (let j = 0; j < nb; j++) {
    for (let r = 0; r < B; r++) {
      const p = j * B + r; // local position of the query
      const row = (j * B + r) * cols;
      for (let c = 0; c < s.G; c++) m[row + c] = 1;
      for (let c = 0; c < 3 * B; c++) {
        const q = j * B - s.w + c; // local position of the key (negative or >= N: padding)
        if (q >= 0 && q < s.N && Math.abs(q - p) <= s.w) m[row + s.G + c] = 1;
      }
    }
  }
  return m;
}

function checkBlockable(s: AttnShape): void {
  if (s.N % s.w !== 0) throw new Error(`blocked attention needs N (${s.N}) divisible by the window (${s.w})`);
}

// ---- tfjs-backend-wasm ------------------------------------------------------------------------

/** @tensorflow/tfjs-backend-wasm, initialised once per process. */
export class TfjsWasm {
  private constructor(readonly info: PeerInfo) {}

  /**
   * Loads the wasm backend from the package's own dist folder (a file path works in Node: the
   * backend reads it with fs) and checks that the SIMD binary was chosen. In Node the backend
   * never loads its threaded binary (flags_wasm.ts: WASM_HAS_MULTITHREAD_SUPPORT is false under
   * IS_NODE, tfjs issue #3830), so XNNPACK runs on the calling thread alone.
   */
  static async create(): Promise<TfjsWasm> {
    const dist = dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm'));
    setWasmPaths(dist + sep);
    if (!(await tf.setBackend('wasm'))) throw new Error("tf.setBackend('wasm') failed");
    await tf.ready();
    const simd = tf.env().getBool('WASM_HAS_SIMD_SUPPORT');
    const mt = tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT');
    if (!simd) throw new Error('tfjs-backend-wasm loaded without SIMD (WASM_HAS_SIMD_SUPPORT false)');
    const threads = getThreadsCount();
    const binary = mt ? 'tfjs-backend-wasm-threaded-simd.wasm' : 'tfjs-backend-wasm-simd.wasm';
    return new TfjsWasm({ threads, describe: `tfjs ${tf.version_core}, backend ${tf.getBackend()}, ${binary}, XNNPACK on ${threads} thread${threads > 1 ? 's' : ''}` });
  }

  /**
   * C = A B with tf.matMul. The wasm backend's kernels run synchronously inside the op call
   * (kernels/BatchMatMul.js calls the wasm export before returning), so the result is complete
   * when matMul returns: no dataSync() readback in the timed loop, as for every other
   * implementation. The output is disposed before the next call so the allocator reuses it.
   */
  matmul(n: number, a: Float32Array, b: Float32Array): Kernel {
    const ta = tf.tensor2d(a, [n, n]);
    const tb = tf.tensor2d(b, [n, n]);
    let c: tf.Tensor | null = null;
    return {
      run: () => {
        c?.dispose();
        c = tf.matMul(ta, tb);
      },
      output: () => readTf(c),
      dispose: () => tf.dispose([ta, tb, ...(c ? [c] : [])]),
    };
  }

  /**
   * Blocked sliding-window attention (see the plan above) from the packed qkv [S, 3d] to out [S, d].
   * Most of its time is the two batched tf.matMul calls: with a batch dimension > 1 the wasm
   * backend does not reach XNNPACK's fast path (measured about 2 GFLOP/s for 384 products of
   * 128 x 64 by 64 x 400, against ~25 GFLOP/s for one 2-D product of that size). Looping over
   * 2-D products instead is slower still: each tf.slice / tf.split of a block from a large
   * tensor costs several milliseconds in this backend (measured 6-25 ms per block).
   */
  attention(s: AttnShape, qkv: Float32Array): Kernel {
    checkBlockable(s);
    const { G, N, H, dh, w } = s;
    const S = G + N;
    const B = w;
    const nb = N / B;
    const cols = G + 3 * B;
    const scale = 1 / Math.sqrt(dh);
    const d = H * dh;
    const x = tf.tensor2d(qkv, [S, 3 * d]);
    // additive form of the mask (0 allowed, -1e9 not): tfjs has no masked softmax
    const m = blockMask(s);
    const bias = tf.tensor3d(m.map((v) => (v ? 0 : -1e9)), [nb, B, cols]);
    let out: tf.Tensor | null = null;
    const forward = (): tf.Tensor =>
      tf.tidy(() => {
        // q, k, v head-major [H, S, dh] (2-D column slices: tf.unstack of the [3, H, S, dh]
        // transpose measured 4x slower in the wasm backend)
        const part = (p: number): tf.Tensor3D => tf.transpose(tf.reshape(tf.slice(x, [0, p * d], [S, d]), [S, H, dh]), [1, 0, 2]);
        const qs = tf.mul(part(0), scale);
        const k = part(1);
        const v = part(2);
        // global rows: dense attention over all S keys
        const sg = tf.matMul(tf.slice(qs, [0, 0, 0], [H, G, dh]), k, false, true); // [H, G, S]
        const og = tf.matMul(tf.softmax(sg), v); // [H, G, dh]
        // local rows: blocks of B queries against G globals + 3 key blocks
        const blocks = (t: tf.Tensor3D): tf.Tensor => {
          const glob = tf.tile(tf.reshape(tf.slice(t, [0, 0, 0], [H, G, dh]), [H, 1, G, dh]), [1, nb, 1, 1]);
          const loc = tf.reshape(tf.pad(tf.slice(t, [0, G, 0], [H, N, dh]), [[0, 0], [w, w], [0, 0]]), [H, nb + 2, B, dh]);
          const shifted = [0, 1, 2].map((o) => tf.slice(loc, [0, o, 0, 0], [H, nb, B, dh]));
          return tf.reshape(tf.concat([glob, ...shifted], 2), [H * nb, cols, dh]);
        };
        const ql = tf.reshape(tf.slice(qs, [0, G, 0], [H, N, dh]), [H * nb, B, dh]);
        const sl = tf.add(tf.reshape(tf.matMul(ql, blocks(k), false, true), [H, nb, B, cols]), bias);
        const pl = tf.reshape(tf.softmax(sl), [H * nb, B, cols]);
        const ol = tf.reshape(tf.matMul(pl, blocks(v)), [H, N, dh]);
        return tf.reshape(tf.transpose(tf.concat([og, ol], 1), [1, 0, 2]), [S, d]);
      });
    return {
      run: () => {
        out?.dispose();
        out = forward();
      },
      output: () => readTf(out),
      dispose: () => tf.dispose([x, bias, ...(out ? [out] : [])]),
    };
  }
}

function readTf(t: tf.Tensor | null): Float32Array {
  if (!t) throw new Error('output() before run()');
  const d = t.dataSync();
  if (!(d instanceof Float32Array)) throw new Error('tfjs returned a non-float32 result');
  return d.slice();
}

// ---- jax-js -----------------------------------------------------------------------------------

/** @jax-js/jax on its wasm device. */
export class JaxJs {
  private constructor(readonly info: PeerInfo) {}

  /**
   * Initialises the wasm device. jax-js spreads wasm kernels over a pool of Web Workers only when
   * SharedArrayBuffer and the global `Worker` constructor exist (its createWorkerPool, sized
   * navigator.hardwareConcurrency or 4); Node 20 has worker_threads but no global Worker, so every
   * kernel runs synchronously on the calling thread.
   */
  static async create(): Promise<JaxJs> {
    const devices = await jaxInit('wasm');
    if (!devices.includes('wasm')) throw new Error(`jax-js wasm device unavailable (got ${devices.join(', ')})`);
    jaxDefaultDevice('wasm');
    // the same test jax-js makes; the globals are absent from this project's lib typings
    const g = globalThis as { Worker?: unknown; navigator?: { hardwareConcurrency?: number } };
    const pool = typeof SharedArrayBuffer !== 'undefined' && typeof g.Worker !== 'undefined';
    const threads = pool ? g.navigator?.hardwareConcurrency || 4 : 1;
    const why = pool ? 'Web Worker pool' : 'no global Worker in this Node, so no worker pool';
    return new JaxJs({ threads, describe: `jax-js wasm device, ${threads} thread${threads > 1 ? 's' : ''} (${why})` });
  }

  /**
   * C = A B with np.matmul. jax-js evaluates lazily, so each call is followed by
   * blockUntilReady() (dispatch and wait). Inputs stay resident by passing `.ref` (jax-js
   * functions consume their arguments' references).
   */
  matmul(n: number, a: Float32Array, b: Float32Array): Kernel {
    const ja = np.array(a, { shape: [n, n] });
    const jb = np.array(b, { shape: [n, n] });
    let c: JaxArray | null = null;
    return {
      run: async () => {
        c?.dispose();
        c = np.matmul(ja.ref, jb.ref);
        await c.blockUntilReady();
      },
      output: () => readJax(c),
      dispose: () => {
        for (const t of [ja, jb, c]) t?.dispose();
      },
    };
  }

  /**
   * Blocked sliding-window attention (the plan above) with np.matmul, an additive mask and
   * nn.softmax, jit-compiled as a jax user would. Not nn.dotProductAttention: it goes through
   * np.einsum, whose expression parser calls Iterator.prototype.map (matchAll(...).map), which
   * Node 20's V8 lacks, so it throws here.
   */
  attention(s: AttnShape, qkv: Float32Array): Kernel {
    checkBlockable(s);
    const { G, N, H, dh, w } = s;
    const S = G + N;
    const B = w;
    const nb = N / B;
    const cols = G + 3 * B;
    const scale = 1 / Math.sqrt(dh);
    const x = np.array(qkv, { shape: [S, 3, H, dh] });
    const bias = np.array(blockMask(s).map((v) => (v ? 0 : -1e9)), { shape: [nb, B, cols] });
    // keys/values of every block, head-major: globals, then local rows [jB - w, jB + B + w) (zero padded)
    const blocks = (t: JaxArray): JaxArray => {
      const glob = np.broadcastTo(t.ref.slice([], [0, G]).reshape([H, 1, G, dh]), [H, nb, G, dh]);
      const loc = np.pad(t.slice([], [G]), [[0, 0], [w, w], [0, 0]]).reshape([H, nb + 2, B, dh]);
      return np.concatenate([glob, loc.ref.slice([], [0, nb]), loc.ref.slice([], [1, nb + 1]), loc.slice([], [2, nb + 2])], 2); // [H, nb, cols, dh]
    };
    const forward = jit((xx: JaxArray, mb: JaxArray): JaxArray => {
      const t = xx.transpose([1, 2, 0, 3]); // [3, H, S, dh]
      const q = t.ref.slice(0).mul(scale);
      const k = t.ref.slice(1);
      const v = t.slice(2);
      // global rows: dense attention over all S keys
      const sg = np.matmul(q.ref.slice([], [0, G]), k.ref.transpose([0, 2, 1])); // [H, G, S]
      const og = np.matmul(nn.softmax(sg, -1), v.ref); // [H, G, dh]
      // local rows: blocks of B queries against G globals + 3 key blocks
      const ql = q.slice([], [G]).reshape([H, nb, B, dh]);
      const sl = np.matmul(ql, blocks(k).transpose([0, 1, 3, 2])).add(mb); // [H, nb, B, cols]
      const ol = np.matmul(nn.softmax(sl, -1), blocks(v)).reshape([H, N, dh]);
      return np.concatenate([og, ol], 1).transpose([1, 0, 2]).reshape([S, H * dh]);
    });
    let out: JaxArray | null = null;
    return {
      run: async () => {
        out?.dispose();
        out = forward(x.ref, bias.ref);
        await out.blockUntilReady();
      },
      output: () => readJax(out),
      dispose: () => {
        for (const t of [x, bias, out]) t?.dispose();
        forward.dispose();
      },
    };
  }
}

function readJax(t: JaxArray | null): Float32Array {
  if (!t) throw new Error('output() before run()');
  const d = t.ref.dataSync(); // dataSync consumes a reference: keep the array for dispose()
  if (!(d instanceof Float32Array)) throw new Error('jax-js returned a non-float32 result');
  return d.slice();
}
