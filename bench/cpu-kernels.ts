/**
 * CPU kernel benchmark (`npm run bench:cpu`): float32 matmul at n = 256, 512, 1024 and one
 * sliding-window attention shape, each run in the same process by
 *
 * - `ours`: this package's CpuBackend (WebAssembly SIMD kernels on all cores),
 * - `tfjs-wasm`: @tensorflow/tfjs-backend-wasm (XNNPACK),
 * - `jax-js`: @jax-js/jax on its wasm device,
 * - `js-loop`: plain JavaScript loops over Float32Arrays.
 *
 * Every implementation first gets the same fresh random inputs and is checked against a float64
 * reference on a sample of entries (normwise relative error < 1e-4; otherwise its row says FAILED
 * and it is not timed). Then all passing implementations of a cell are warmed up and timed in
 * interleaved rounds (about 1 s each); the table and bench/results/cpu-kernels.json report the
 * median. GFLOP/s counts useful FLOPs only: 2 n^3 for matmul, 4 dh H (allowed query-key pairs)
 * for attention, so an implementation that computes masked-out pairs is charged for them in time.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Tensor } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/backend.js';
import {
  allowedPairs,
  attentionCheckRows,
  attentionFlops,
  attentionRowRef,
  attnShapeLabel,
  checkAttention,
  checkMatmul,
  cpuSnapshot,
  formatTable,
  localKeyRange,
  machineInfo,
  median,
  othersCores,
  timeInterleaved,
  warmUp,
  type AttnShape,
  type Contender,
  type Impl,
  type Kernel,
  type Op,
  type ResultRow,
} from './harness.js';
import { JaxJs, TfjsWasm } from './peers.js';

/** Matrix sizes n of the matmul rows. */
const MATMUL_SIZES = [256, 512, 1024] as const;
/**
 * The attention shape: a long document at the model's width (d = 768, 12 heads of 64), window
 * 128, 16 global tokens. S = 4112 keeps the js loop at a few seconds per call.
 */
const ATTN: AttnShape = { G: 16, N: 4096, H: 12, dh: 64, w: 128 };
/** Largest accepted normwise relative error against the float64 reference. */
const TOLERANCE = 1e-4;
/** Timing budget per implementation and cell. */
const TIMING = { targetMs: 1000, rounds: 5, minSamples: 5, rewarmMs: 100 };
/** A call slower than this (the js loops at the large sizes) is timed SLOW_SAMPLES times only. */
const SLOW_MS = 1000;
const SLOW_SAMPLES = 3;
/** An implementation whose SLOW_SAMPLES calls would take longer than this is not timed. */
const SKIP_ABOVE_MS = 20_000;
const WARM_MS = 200;

const RESULTS = fileURLToPath(new URL('../../bench/results/cpu-kernels.json', import.meta.url));

/** One implementation of a cell: how to build it, and what the table should say about it. */
interface Entry {
  impl: Impl;
  threads: number;
  note: string;
  prepare: () => Kernel;
}

/** A peer that could not be initialised: its rows say why. */
interface Unavailable {
  error: string;
}

// ---- plain JavaScript loops -------------------------------------------------------------------

/** C = A B by the i-k-j loop (the cache-friendly order a careful JS programmer writes). */
function jsMatmul(n: number, a: Float32Array, b: Float32Array, c: Float32Array): void {
  c.fill(0);
  for (let i = 0; i < n; i++) {
    const ci = i * n;
    for (let k = 0; k < n; k++) {
      const aik = a[ci + k]!;
      const bk = k * n;
      for (let j = 0; j < n; j++) c[ci + j]! += aik * b[bk + j]!;
    }
  }
}

/** Sliding-window attention by plain loops over exactly the allowed pairs (rows x keys x dh). */
function jsAttention(s: AttnShape, qkv: Float32Array, out: Float32Array): void {
  const d = s.H * s.dh;
  const S = s.G + s.N;
  const scale = 1 / Math.sqrt(s.dh);
  const sc = new Float64Array(S);
  const acc = new Float64Array(s.dh);
  for (let i = 0; i < S; i++) {
    const [lo, hi] = localKeyRange(s, i);
    const nk = s.G + hi - lo + 1;
    for (let h = 0; h < s.H; h++) {
      const q = i * 3 * d + h * s.dh;
      let mx = -Infinity;
      for (let t = 0; t < nk; t++) {
        const j = t < s.G ? t : lo + t - s.G;
        const k = j * 3 * d + d + h * s.dh;
        let dot = 0;
        for (let x = 0; x < s.dh; x++) dot += qkv[q + x]! * qkv[k + x]!;
        sc[t] = dot * scale;
        if (sc[t]! > mx) mx = sc[t]!;
      }
      let sum = 0;
      for (let t = 0; t < nk; t++) sum += sc[t] = Math.exp(sc[t]! - mx);
      acc.fill(0);
      for (let t = 0; t < nk; t++) {
        const j = t < s.G ? t : lo + t - s.G;
        const v = j * 3 * d + 2 * d + h * s.dh;
        const p = sc[t]! / sum;
        for (let x = 0; x < s.dh; x++) acc[x]! += p * qkv[v + x]!;
      }
      const o = i * d + h * s.dh;
      for (let x = 0; x < s.dh; x++) out[o + x] = acc[x]!;
    }
  }
}

// ---- one cell ---------------------------------------------------------------------------------

/**
 * Checks, warms up and times every entry of one (op, size) cell and returns its rows in entry
 * order. An entry that throws, fails the check or would be too slow gets a row with gflops null.
 */
async function benchCell(op: Op, size: number | string, flops: number, entries: readonly (Entry | (Unavailable & { impl: Impl }))[], check: (out: Float32Array) => number): Promise<ResultRow[]> {
  const rows: ResultRow[] = [];
  const timed: { row: ResultRow; c: Contender }[] = [];
  for (const e of entries) {
    if ('error' in e) {
      rows.push({ op, size, impl: e.impl, gflops: null, note: `not run: ${e.error}` });
      continue;
    }
    const row: ResultRow = { op, size, impl: e.impl, gflops: null, threads: e.threads };
    rows.push(row);
    let k: Kernel | null = null;
    try {
      k = e.prepare();
      const t0 = performance.now();
      await k.run();
      const firstMs = performance.now() - t0;
      const err = check(await k.output());
      row.maxRelErr = err;
      if (!(err < TOLERANCE)) {
        row.note = `FAILED: relative error ${err.toExponential(2)} >= ${TOLERANCE} (${e.note})`;
        k.dispose();
        continue;
      }
      if (firstMs * SLOW_SAMPLES > SKIP_ABOVE_MS) {
        row.note = `not timed: one call took ${(firstMs / 1000).toFixed(1)} s (${e.note})`;
        k.dispose();
        continue;
      }
      row.note = e.note;
      // a slow call is its own warm-up (the check call already compiled it) and gets a fixed
      // small sample count instead of the time budget
      const slow = firstMs > SLOW_MS;
      if (!slow) await warmUp(k, WARM_MS);
      timed.push({ row, c: { impl: e.impl, kernel: k, samples: [], maxSamples: slow ? SLOW_SAMPLES : 10_000 } });
    } catch (err) {
      row.note = `failed to run: ${err instanceof Error ? err.message : String(err)}`;
      k?.dispose();
    }
  }
  const before = cpuSnapshot();
  await timeInterleaved(
    timed.map((t) => t.c),
    TIMING,
  );
  const others = othersCores(before, cpuSnapshot());
  for (const { row, c } of timed) {
    if (others !== undefined) row.othersCores = Math.round(others * 100) / 100;
    const ms = median(c.samples);
    row.ms = ms;
    row.reps = c.samples.length;
    row.gflops = flops / (ms * 1e6);
    row.bestGflops = flops / (Math.min(...c.samples) * 1e6);
    c.kernel.dispose();
  }
  return rows;
}

// ---- the problems -----------------------------------------------------------------------------

/** A float32 tensor of our backend, copied to the host. */
function hostF32(be: CpuBackend, t: Tensor): Float32Array {
  const d = be.toArray(t);
  if (!(d instanceof Float32Array)) throw new Error(`expected a float32 tensor, got ${t.dtype}`);
  return d;
}

type Peers = { tfjs: TfjsWasm | Unavailable; jax: JaxJs | Unavailable };

async function benchMatmul(be: CpuBackend, peers: Peers, n: number, seed: number): Promise<ResultRow[]> {
  // fresh N(0, 1) inputs per size, generated in our backend's memory and copied to the peers
  const ta = be.empty([n, n]);
  const tb = be.empty([n, n]);
  const tc = be.empty([n, n]);
  be.randomNormal(ta, seed, 0);
  be.randomNormal(tb, seed + 1, 0);
  const a = hostF32(be, ta);
  const b = hostF32(be, tb);
  const entries = [
    { impl: 'ours', threads: be.threads, note: `${be.threads} threads, into a preallocated output`, prepare: (): Kernel => ({ run: () => be.matmul(tc, ta, tb), output: () => hostF32(be, tc), dispose: () => {} }) },
    peerEntry('tfjs-wasm', peers.tfjs, (p) => p.matmul(n, a, b), 'tf.matMul (sync kernel)'),
    peerEntry('jax-js', peers.jax, (p) => p.matmul(n, a, b), 'np.matmul + blockUntilReady'),
    {
      impl: 'js-loop',
      threads: 1,
      note: 'i-k-j loop over Float32Array',
      prepare: (): Kernel => {
        const c = new Float32Array(n * n);
        return { run: () => jsMatmul(n, a, b, c), output: () => c, dispose: () => {} };
      },
    },
  ] as const;
  const rows = await benchCell('matmul', n, 2 * n ** 3, entries, (c) => checkMatmul(n, a, b, c));
  for (const t of [ta, tb, tc]) t.dispose();
  return rows;
}

async function benchAttention(be: CpuBackend, peers: Peers, s: AttnShape, seed: number): Promise<ResultRow[]> {
  const S = s.G + s.N;
  const d = s.H * s.dh;
  const tq = be.empty([1, S, 3 * d]);
  const to = be.empty([1, S, d]);
  const tl = be.empty([1, s.H, S]);
  be.randomNormal(tq, seed, 0);
  const qkv = hostF32(be, tq);
  const refs = new Map(attentionCheckRows(s).map((i) => [i, attentionRowRef(s, qkv, i)] as const));
  const spec = { kind: 'sliding', heads: s.H, window: s.w, dilation: 1, globalTokens: s.G } as const;
  const blocked = `blocked: ${s.N / s.w} blocks of ${s.w} queries x (G + 3w) keys + masks, ${(((s.G + 3 * s.w) * s.N + s.G * S) / allowedPairs(s)).toFixed(2)}x the allowed pairs`;
  const entries = [
    { impl: 'ours', threads: be.threads, note: `${be.threads} threads, be.attention (forward + lse)`, prepare: (): Kernel => ({ run: () => be.attention(to, tl, tq, spec), output: () => hostF32(be, to), dispose: () => {} }) },
    peerEntry('tfjs-wasm', peers.tfjs, (p) => p.attention(s, qkv), `${blocked}; batched tf.matMul + tf.softmax`),
    peerEntry('jax-js', peers.jax, (p) => p.attention(s, qkv), `${blocked}; jit(np.matmul + nn.softmax)`),
    {
      impl: 'js-loop',
      threads: 1,
      note: 'loops over exactly the allowed pairs',
      prepare: (): Kernel => {
        const out = new Float32Array(S * d);
        return { run: () => jsAttention(s, qkv, out), output: () => out, dispose: () => {} };
      },
    },
  ] as const;
  const rows = await benchCell('attention', attnShapeLabel(s), attentionFlops(s), entries, (out) => checkAttention(s, out, refs));
  for (const t of [tq, to, tl]) t.dispose();
  return rows;
}

/** The entry of a peer, or its "not run" row when the peer did not initialise. */
function peerEntry<P extends TfjsWasm | JaxJs>(impl: Impl, peer: P | Unavailable, make: (p: P) => Kernel, how: string): Entry | (Unavailable & { impl: Impl }) {
  if ('error' in peer) return { impl, error: peer.error };
  return { impl, threads: peer.info.threads, note: `${peer.info.threads} thread${peer.info.threads > 1 ? 's' : ''}, ${how}`, prepare: () => make(peer) };
}

async function tryCreate<P>(create: () => Promise<P>): Promise<P | Unavailable> {
  try {
    return await create();
  } catch (err) {
    return { error: err instanceof Error ? err.message : String(err) };
  }
}

// ---- main -------------------------------------------------------------------------------------

function progress(what: string, t0: number, cell: readonly ResultRow[]): void {
  const others = cell.find((r) => r.othersCores !== undefined)?.othersCores;
  const load = others === undefined ? '' : `; other processes used ${others.toFixed(2)} cores while it was timed`;
  console.log(`${what}: ${((performance.now() - t0) / 1000).toFixed(1)} s${load}`);
}

async function main(): Promise<void> {
  const m = machineInfo();
  console.log(`CPU kernel benchmark: ${m.cpu}, ${m.cores} cores, Node ${m.node} (V8 ${m.v8}), ${m.platform}, ${m.date}, load average ${m.load.join(' ')}`);
  const be = new CpuBackend();
  const peers: Peers = { tfjs: await tryCreate(() => TfjsWasm.create()), jax: await tryCreate(() => JaxJs.create()) };
  console.log(`ours:      ${be.describe()}`);
  console.log(`tfjs-wasm: ${'error' in peers.tfjs ? `unavailable (${peers.tfjs.error})` : peers.tfjs.info.describe}`);
  console.log(`jax-js:    ${'error' in peers.jax ? `unavailable (${peers.jax.error})` : peers.jax.info.describe}`);
  console.log(`timing: median over ${TIMING.rounds} interleaved rounds (each re-warmed ${TIMING.rewarmMs} ms), ~${TIMING.targetMs} ms and >= ${TIMING.minSamples} calls per cell (${SLOW_SAMPLES} for calls over ${SLOW_MS} ms); check: normwise relative error vs float64 < ${TOLERANCE}\n`);

  // `--only matmul` / `--only attention` runs one op (for development); the JSON is written only
  // by a full run, so a partial run never leaves a results file that lacks rows
  const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined;
  if (only !== undefined && only !== 'matmul' && only !== 'attention') throw new Error(`--only takes matmul or attention (got ${only})`);
  const rows: ResultRow[] = [];
  try {
    if (only === undefined || only === 'matmul') {
      for (const [i, n] of MATMUL_SIZES.entries()) {
        const t0 = performance.now();
        const cell = await benchMatmul(be, peers, n, 1000 + 10 * i);
        progress(`matmul n=${n}`, t0, cell);
        rows.push(...cell);
      }
    }
    if (only === undefined || only === 'attention') {
      const t0 = performance.now();
      const cell = await benchAttention(be, peers, ATTN, 2000);
      progress('attention', t0, cell);
      rows.push(...cell);
    }
  } finally {
    be.close();
  }

  console.log('\n' + formatTable(rows));
  if (only === undefined) {
    mkdirSync(dirname(RESULTS), { recursive: true });
    writeFileSync(RESULTS, JSON.stringify(rows, null, 2) + '\n');
    console.log(`\nwrote ${RESULTS}`);
  } else console.log(`\n--only ${only}: ${RESULTS} not written`);
}

await main();
