/**
 * GPU benchmark (`npm run bench:gpu`, on a machine with an NVIDIA GPU): the figures issue 7 asks
 * for, on `base` and `diffuseq-base`, beside the PyTorch peer's from the same command:
 *   - training tokens/s and MFU at 64 x 512, 16 x 2048 and 4 x 8192 (forward + backward + AdamW, one
 *     step timed with a device synchronisation, median of --iters after warm-up steps; the noise of
 *     the step is drawn once and reused, as the peer's timing loop reuses its batch, its normals
 *     generated on the device from their Philox range every step, as the trainer does);
 *   - peak memory of one training step with one sequence of 2k, 4k, 8k, 16k and 32k tokens (the
 *     backend's allocator counter: parameters, gradients, AdamW state and activations), and with
 *     `long` (sliding-window configs) 64k and 128k tokens, with and without activation
 *     recomputation: the longest that trains on an 80 GB card;
 *   - sampling latency of one 2048-token document with 10 denoiser calls, and of a batch of 16;
 *   - `--items ops`: the hot operations of a base step timed alone against their FLOP counts (with
 *     the default kernels and with the experimental grouped GEMM); `kernels` / `kernels-sample`:
 *     every kernel and cuBLAS call of one base step / sampling run, synchronised and timed by name;
 *     `profile` / `profile-sample`: one training step / sampling run with every backend call
 *     synchronised and timed, by op (where the time goes, host work included).
 * The model runs at --precision (auto: bf16 on the GPU; float32 to measure the float32 path).
 * MFU counts FLOPs as the peer's README does (6 x active non-embedding parameters per position, the
 * blocks seeing G + N positions, plus 12 d L x allowed attention pairs), over the card's measured
 * bf16 matmul rate (788 TFLOP/s on an H200, GPU.md).
 * The PyTorch peer (../shared/peers/pytorch, copied to an ignored folder such as .peer/) runs in the
 * same command after ours (`--peer DIR`, default .peer when it holds bench_fast.py; `--peer none`
 * skips it) with the same configs and shapes, variants eager, compiled and compiled + CUDA graphs
 * (sampling); the table puts its figures beside ours with the ratio against its best compiled one.
 * Prints a table and writes JSON (--out, default bench/results/gpu.json; the peer's own JSON beside
 * it as <out>.peer.json).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Backend } from '../src/backend/backend.js';
import { createBackend } from '../src/backend/create.js';
import { CudaBackend } from '../src/backend/cuda/backend.js';
import { PhiloxStream } from '../src/backend/philox.js';
import { drawNoise, queueDiffusionLoss, type LossBatch, type PendingLoss } from '../src/diffusion/loss.js';
import { UniformSampler } from '../src/diffusion/timestep.js';
import { expertHidden, presetConfig, type ModelConfig } from '../src/model/config.js';
import { Model, resolvePrecision } from '../src/model/model.js';
import { SamplingGraphs, sampleIds } from '../src/sample/sampler.js';

const PEAK_TFLOPS = 788;
/** The issue's training shapes (batch x tokens), memory lengths and sampling batches. */
const TRAIN_SHAPES: readonly (readonly [number, number])[] = [[64, 512], [16, 2048], [4, 8192]];
const MEMORY_LENGTHS = [2048, 4096, 8192, 16384, 32768];
/** Lengths past the peer's, for the longest sequence that trains on one 80 GB card (`--items long`). */
const LONG_LENGTHS = [65536, 131072];
const SAMPLE_BATCHES = [1, 16];
const CARD_80GB = 80e9;

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : def;
}

/** Non-embedding parameters a position touches (top-k experts only), as the peer counts them. */
function activeParams(c: ModelConfig): { blocks: number; io: number; time: number } {
  const d = c.hidden;
  const e = c.embDim;
  const attn = 4 * d * d + 4 * d;
  const norms = 4 * d;
  const f = expertHidden(c);
  const ffn = c.ffn.kind === 'moe' ? d * c.ffn.experts + c.ffn.topK * (d * f + f + f * d + d) : d * 4 * d + 4 * d + 4 * d * d + d;
  const io = e * d + d + d * d + d + 2 * d + (d * d + d + d * e + e);
  const time = e * 4 * e + 4 * e + 4 * e * d + d;
  return { blocks: (attn + norms + ffn) * c.layers, io, time };
}

/** Allowed (query, key) pairs of one sequence. */
function attentionPairs(c: ModelConfig, N: number): number {
  const G = c.globalTokens;
  const S = G + N;
  if (c.attention.kind === 'full') return S * S;
  const w = c.attention.window;
  const local = N <= w ? N * N : N * (2 * w + 1) - w * (w + 1);
  return G * S + N * G + local;
}

/** Model FLOPs of one training step (the peer's train_flops). */
function trainFlops(c: ModelConfig, B: number, N: number): number {
  const p = activeParams(c);
  const dense = 6 * (p.blocks * B * (c.globalTokens + N) + p.io * B * N + p.time * B);
  return dense + 12 * c.hidden * c.layers * B * attentionPairs(c, N);
}

function batchOf(c: ModelConfig, B: number, N: number, srcLen: number): LossBatch {
  const rng = new PhiloxStream(7);
  const ids = new Int32Array(B * N);
  const mask = new Int32Array(B * N);
  for (let b = 0; b < B; b++)
    for (let n = 0; n < N; n++) {
      ids[b * N + n] = n === 0 ? 101 : n === srcLen - 1 ? 102 : 1000 + rng.int(c.vocabSize - 1000);
      mask[b * N + n] = n >= srcLen ? 1 : 0;
    }
  return { inputIds: ids, inputMask: mask, batch: B, seqLen: N };
}

/** The model of a config on the backend, at the benchmark's precision (--precision, default auto). */
function modelOf(cfg: ModelConfig, be: Backend): Model {
  const m = Model.init(cfg, be, 0);
  m.precision = resolvePrecision(arg('precision', 'auto'), be);
  return m;
}

function config(name: string, N: number): ModelConfig {
  return presetConfig(name, { seqLen: N, maxLen: Math.max(N, 512), dropout: 0, timestepSampler: 'uniform' });
}

/**
 * One training step: loss forward + backward, AdamW on the flat parameters. `run` queues a step and
 * waits for it; `queue` queues a step and reads the one before it, so that the host queues step
 * i + 1 while the device runs step i (the peer's timed loop too queues its steps back to back, with
 * no synchronisation between them); `finish` reads the last one queued.
 */
function makeStep(model: Model, batch: LossBatch, recompute = false) {
  const be = model.backend;
  const m = be.zeros([model.params.total]);
  const v = be.zeros([model.params.total]);
  const noise = drawNoise(model.config, model.alphaBar, batch, new UniformSampler(model.config.diffusionSteps), new PhiloxStream(3));
  let step = 0;
  let pending: PendingLoss | null = null;
  const queueOne = () => {
    model.params.zeroGrads();
    const p = queueDiffusionLoss(model, batch, noise, { train: true, backward: true, recompute });
    be.adamw(model.params.flat, model.params.grads, m, v, { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: ++step });
    return p;
  };
  const finish = () => {
    const p = pending;
    pending = null;
    const loss = p ? p.read().terms.total : NaN;
    be.synchronize();
    return loss;
  };
  return {
    run: () => {
      finish();
      pending = queueOne();
      return finish();
    },
    queue: () => {
      const before = pending;
      pending = queueOne();
      return before ? before.read().terms.total : NaN;
    },
    finish,
    dispose: () => {
      finish();
      [m, v].forEach((t) => t.dispose());
    },
  };
}

/** One figure of the peer's JSON (configs[name][item][variant][key]). */
interface PeerFigure {
  tokensPerS?: number;
  mfu?: number;
  peakGiB?: number;
  msMedian?: number;
  perDocMs?: number;
  oom?: boolean;
}
type PeerResults = { meta?: { gpu?: string; date?: string; matmulPeak?: { tflops?: number } }; configs?: Record<string, Record<string, Record<string, Record<string, PeerFigure>>>> };

/** Runs the peer's bench_fast.py on the same configs and shapes; its parsed JSON, or null. */
function runPeer(dir: string, configs: string[], items: string[], out: string, log: (s: string) => void): PeerResults | null {
  const parts: string[] = [];
  const alt = (xs: readonly (number | string)[]) => `(${xs.join('|')})`;
  if (items.includes('train')) parts.push(`train:[a-z]+:[a-z-]+:${alt(TRAIN_SHAPES.map(([B, N]) => `${B}x${N}`))}$`);
  if (items.includes('memory')) parts.push(`memory:[a-z]+:[a-z-]+:1x${alt(MEMORY_LENGTHS)}$`);
  if (items.includes('sample')) parts.push(`sample:[a-z]+:[a-z-]+:${alt(SAMPLE_BATCHES)}x2048`);
  const args = [join(dir, 'bench_fast.py'), '--skip-check', '--configs', configs.join(','), '--variants', 'eager,compiled,cudagraph', '--iters', '5', '--items', parts.join('|'), '--deadline', arg('peer-deadline', '420'), '--out', out];
  log(`peer: python3 ${args.join(' ')}`);
  const r = spawnSync('python3', args, { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.error || r.status !== 0 || !existsSync(out)) {
    log(`peer: did not finish (${r.error?.message ?? `exit ${r.status}`}); the table shows ours alone`);
    return null;
  }
  return JSON.parse(readFileSync(out, 'utf8')) as PeerResults;
}

/** The side-by-side table (Markdown) of our rows and the peer's eager and compiled figures. */
function table(rows: Record<string, unknown>[], peer: PeerResults | null): string {
  const fig = (cfg: string, item: string, variant: string, key: string): PeerFigure | undefined => peer?.configs?.[cfg]?.[item]?.[variant]?.[key];
  const L = ['| config | measure | ours | peer eager | peer compiled | peer compiled + CUDA graphs | ours / best compiled peer |', '|---|---|---|---|---|---|---|'];
  for (const r of rows) {
    const cfg = r['config'] as string;
    let what: string;
    let ours: number;
    let key: string;
    let pick: (f: PeerFigure | undefined) => number | undefined;
    let fmt: (x: number) => string;
    if (r['item'] === 'train') {
      what = `train ${r['B']}x${r['N']} tok/s (MFU)`;
      ours = r['tokensPerS'] as number;
      key = String(r['N']);
      pick = (f) => f?.tokensPerS;
      fmt = (x) => `${Math.round(x).toLocaleString('en-US')} (${((100 * x * (r['mfu'] as number)) / ours).toFixed(2)}%)`;
    } else if (r['item'] === 'memory') {
      what = `peak memory 1x${r['N']}${r['recompute'] ? ' recomputed' : ''} GiB${(r['N'] as number) > 32768 ? ` (fits 80 GB: ${(r['peakGiB'] as number) * 2 ** 30 <= CARD_80GB ? 'yes' : 'no'})` : ''}`;
      ours = r['peakGiB'] as number;
      key = String(r['N']);
      pick = (f) => (f?.oom ? undefined : f?.peakGiB);
      fmt = (x) => x.toFixed(2);
    } else {
      what = `sample ${r['B']}x${r['N']}, 10 calls, ms (per doc)`;
      ours = r['msMedian'] as number;
      key = String(r['B']);
      pick = (f) => f?.msMedian;
      fmt = (x) => `${x.toFixed(1)} (${(x / (r['B'] as number)).toFixed(1)})`;
    }
    const item = r['item'] as string;
    const e = pick(fig(cfg, item, 'eager', key));
    const c = pick(fig(cfg, item, 'compiled', key));
    const g = pick(fig(cfg, item, 'cudagraph', key));
    // the best compiled figure: most tokens/s, least memory or latency
    const best = [c, g].filter((x): x is number => x !== undefined).sort((x, y) => (item === 'train' ? y - x : x - y))[0];
    const ratio = best === undefined ? '-' : `${(ours / best).toFixed(3)}x`;
    const cell = (x: number | undefined) => (x === undefined ? '-' : fmt(x));
    L.push(`| ${cfg} | ${what} | ${fmt(ours)} | ${cell(e)} | ${cell(c)} | ${cell(g)} | ${ratio} |`);
  }
  return L.join('\n');
}

/**
 * `--profile`: a backend whose every method synchronises the device after it and adds its wall time
 * to `times` (method name -> [ms, calls]): where a step's time goes, host work included.
 */
function profiled(be: Backend, times: Map<string, [number, number]>): Backend {
  return new Proxy(be, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function' || prop === 'synchronize') return v;
      return (...args: unknown[]) => {
        const t0 = performance.now();
        const r = (v as (...a: unknown[]) => unknown).apply(target, args);
        target.synchronize();
        const e = times.get(String(prop)) ?? [0, 0];
        e[0] += performance.now() - t0;
        e[1]++;
        times.set(String(prop), e);
        return r;
      };
    },
  });
}

/** What a profile runs: one unit of work (a training step, a sampling run) and its cleanup. */
type ProfiledWork = (model: Model) => { run: () => void; dispose: () => void };

/**
 * Runs `work` on a model over `be` once to warm up, then once timed, and logs what `times` (name ->
 * [ms, calls], filled by `be`) collected during the timed run, the `top` slowest first.
 */
function runProfile(be: Backend, times: Map<string, [number, number]>, cfg: ModelConfig, label: string, make: ProfiledWork, top: number, log: (s: string) => void): void {
  const model = modelOf(cfg, be);
  const work = make(model);
  try {
    work.run();
    times.clear();
    const t0 = performance.now();
    work.run();
    be.synchronize();
    const total = performance.now() - t0;
    const all = [...times.entries()].sort((a, b) => b[1][0] - a[1][0]);
    const sum = all.reduce((a, [, [ms]]) => a + ms, 0);
    const calls = all.reduce((a, [, [, n]]) => a + n, 0);
    log(`${label}: ${total.toFixed(1)} ms; the timed calls ${sum.toFixed(1)} ms in ${calls}`);
    for (const [k, [ms, n]] of all.slice(0, top)) log(`  ${k.padEnd(48)} ${ms.toFixed(2).padStart(9)} ms  ${String(n).padStart(6)} calls  ${((100 * ms) / total).toFixed(1).padStart(5)}%`);
  } finally {
    work.dispose();
    model.dispose();
  }
}

/** `--items profile` / `profile-sample`: every backend call synchronised and timed, by op. */
function profile(be: Backend, cfg: ModelConfig, label: string, make: ProfiledWork, log: (s: string) => void): void {
  const times = new Map<string, [number, number]>();
  runProfile(profiled(be, times), times, cfg, `${label} (every op synchronised)`, make, 14, log);
}

/**
 * `--items ops`: the hot operations of a `base` step at 16 x 2048 (bf16 activations, float32
 * weights) timed alone, each against its FLOP count: which kernels are far from the card's rate.
 */
function opsTable(be: Backend, log: (s: string) => void): void {
  const rows = 16 * (2048 + 16);
  const d = 768;
  const f = 1536;
  const E = 8;
  const bf = 'bfloat16' as const;
  const rnd = (shape: number[], dtype: 'float32' | 'bfloat16' = bf) => {
    const t32 = be.empty(shape);
    be.randomNormal(t32, 1, 0, 0.02);
    if (dtype === 'float32') return t32;
    const t = be.empty(shape, dtype);
    be.copy(t, t32);
    t32.dispose();
    return t;
  };
  const time = (label: string, flops: number, fn: () => void) => {
    fn();
    be.synchronize();
    const reps = 10;
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) fn();
    be.synchronize();
    const ms = (performance.now() - t0) / reps;
    log(`  ${label.padEnd(44)} ${ms.toFixed(3).padStart(8)} ms  ${((flops / ms) * 1e-9).toFixed(1).padStart(7)} TFLOP/s`);
  };
  log('ops of base 16x2048 (bf16 activations, float32 weights), each alone:');
  const x = rnd([rows, d]);
  const wqkv = rnd([3 * d, d], 'float32');
  const qkv = be.empty([16, 2064, 3 * d], bf);
  time('matmul qkv [33024,768]x[2304,768]^T', 2 * rows * d * 3 * d, () => be.matmul(qkv, x, wqkv, { transB: true }));
  const counts = Array.from({ length: E }, () => (2 * rows) / E);
  const xs = rnd([2 * rows, d]);
  const w1 = rnd([E, f, d], 'float32');
  const b1 = rnd([E, f], 'float32');
  const h = be.empty([2 * rows, f], bf);
  const pre = be.empty([2 * rows, f], bf);
  const gflop = 2 * 2 * rows * d * f;
  time('grouped fc1 8 x [8256,768]x[1536,768]^T +b gelu', gflop, () => be.groupedMatmul(h, xs, w1, b1, counts, { gelu: { pre } }));
  time('grouped fc1, no epilogue', gflop, () => be.groupedMatmul(h, xs, w1, null, counts));
  time('grouped fc1 as one expert [66048,768]', gflop, () => be.groupedMatmul(h, xs, be.view(w1, 0, [1, f, d]), null, [2 * rows]));
  const uneven = [12000, 4000, 9001, 7003, 8100, 7999, 9947];
  uneven.push(2 * rows - uneven.reduce((a, b) => a + b, 0));
  time('grouped fc1 +b gelu, uneven counts', gflop, () => be.groupedMatmul(h, xs, w1, b1, uneven, { gelu: { pre } }));
  // the grouped products of a batch-1 sampling call (2 x 2064 rows: the one-launch kernel under `auto`)
  const sRows = 2 * (2048 + 16);
  const sCounts = Array.from({ length: E }, () => sRows / E);
  const [hs, xss, ps] = [be.view(h, 0, [sRows, f]), be.view(xs, 0, [sRows, d]), be.view(pre, 0, [sRows, f])];
  const w2g = rnd([E, d, f], 'float32');
  const sflop = 2 * sRows * d * f;
  time('grouped fc1 +b gelu, sampling 8 x [516,768]', sflop, () => be.groupedMatmul(hs, xss, w1, b1, sCounts, { gelu: { pre: ps } }));
  time('grouped fc2 +b, sampling 8 x [516,1536]', sflop, () => be.groupedMatmul(xss, hs, w2g, null, sCounts));
  for (const t of [hs, xss, ps, w2g]) t.dispose();
  const w2 = rnd([d, f], 'float32');
  // the first M rows of h and xs as an fc2-shaped product
  const fc2 = (M: number) => {
    const a = be.view(h, 0, [M, f]);
    const o = be.view(xs, 0, [M, d]);
    be.matmul(o, a, w2, { transB: true });
    a.dispose();
    o.dispose();
  };
  for (const M of [1000, 2047, 2048, 8191]) time(`matmul fc2-shaped [${M},1536]x[768,1536]^T`, 2 * M * d * f, () => fc2(M));
  let step = 0;
  time('matmul fc2-shaped [~2000,1536]x[768,1536]^T, M new each call', 2 * 2000 * d * f, () => fc2(1900 + (step++ % 200)));
  const dw = be.zeros([E, f, d]);
  const db = be.zeros([E, f]);
  const dxs = be.empty([2 * rows, d], bf);
  time('grouped fc1 backward (dxs, dW, db)', 2 * gflop, () => be.groupedMatmulBackward(dxs, dw, db, h, xs, w1, counts));
  const spec = { kind: 'sliding' as const, heads: 12, globalTokens: 16, window: 128, dilation: 1 };
  const qkv2 = rnd([16, 2064, 3 * d]);
  const out = be.empty([16, 2064, d], bf);
  const lse = be.empty([16 * 12 * 2064]);
  const pairs = 16 * (16 * 2064 + 2048 * 16 + 2048 * 257 - 128 * 129);
  time('attention fwd 16x2064 sliding 128', 4 * d * pairs, () => be.attention(out, lse, qkv2, spec));
  const [q1, o1, l1] = [be.view(qkv2, 0, [1, 2064, 3 * d]), be.view(out, 0, [1, 2064, d]), be.view(lse, 0, [12 * 2064])];
  // wall time per call: for the wgmma forward it read 68-83 us where Nsight Compute gives its kernel
  // 21 us (36 for mma.sync, which read 38) and a sampling run's wall time follows Nsight's sum: not
  // understood yet (H200, v12); trust `--items kernels-sample` under ncu for batch 1
  time('attention fwd 1x2064 (batch-1 sampling; wall)', (4 * d * pairs) / 16, () => be.attention(o1, l1, q1, spec));
  for (const t of [q1, o1, l1]) t.dispose();
  const dqkv = be.empty([16, 2064, 3 * d], bf);
  time('attention bwd', 10 * d * pairs, () => be.attentionBackward(dqkv, out, qkv2, out, lse, spec));
  // batch-1 sampling's clamp (2,048 rows against the 30,522 x 128 table) and one layer's routing
  const x0 = rnd([2048, 128], 'float32');
  const table = rnd([30522, 128], 'float32');
  const ids = be.empty([2048], 'int32');
  const cflop = 2 * 2048 * 30522 * 128;
  time('nearestRows 2048 x 30522 x 128, float32', cflop, () => be.nearestRows(ids, x0, table));
  time('nearestRows, bf16x3 (3 products counted as 1)', cflop, () => be.nearestRows(ids, x0, table, { precision: 'bf16x3' }));
  const logits = rnd([2064, E], 'float32');
  time('moeRoute 2064 tokens, 8 experts, top-2', 0, () => be.moeRoute(logits, { topK: 2, seqLen: 2064 }).dispose());
  for (const t of [x0, table, ids, logits]) t.dispose();
  const host = new Float32Array(rows * 128);
  const dev = be.empty([rows, 128]);
  time('fromArray-sized write of 16.9 MB', 0, () => be.write(dev, host));
  for (const t of [x, wqkv, qkv, xs, w1, w2, b1, h, pre, dw, db, dxs, qkv2, out, lse, dqkv, dev]) t.dispose();
}

/**
 * `--items kernels` / `kernels-sample`: every kernel launch and cuBLAS call synchronised and timed
 * by name, on a fresh CUDA backend.
 */
function kernelProfile(cfg: ModelConfig, label: string, make: ProfiledWork, log: (s: string) => void): void {
  const times = new Map<string, [number, number]>();
  const kb = new CudaBackend({ launchTimes: times });
  try {
    runProfile(kb, times, cfg, `${label} (each kernel synchronised)`, make, 40, log);
  } finally {
    kb.close();
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** --shape BxN: the training step of the kernel and op profiles (default 16x2048). */
function shapeArg(): [number, number] {
  const v = arg('shape', '16x2048');
  const m = /^(\d+)x(\d+)$/.exec(v);
  if (!m || Number(m[1]) < 1 || Number(m[2]) < 2 || Number(m[2]) % 2 !== 0) {
    process.stderr.write(`--shape ${v}: expected BxN with B >= 1 and an even N >= 2, e.g. 64x512\n`);
    process.exit(2);
  }
  return [Number(m[1]), Number(m[2])];
}

/** `--help`: the options main() reads (printed without touching a GPU). */
const USAGE = `usage: node dist/bench/gpu.js [options]   (npm run bench:gpu)

  --configs LIST      model presets, comma-separated (default base,diffuseq-base)
  --items LIST        what to measure, comma-separated (default train,memory,long,sample):
                        train           training tokens/s and MFU at 64x512, 16x2048, 4x8192
                        memory          peak memory of a step with one sequence of 2k-32k tokens
                        long            64k and 128k tokens, with and without recomputation
                        sample          sampling one 2048-token document and a batch of 16
                        ops             the hot ops of a base step alone (default and mma kernels)
                        kernels         every kernel of one base step, timed by name
                        kernels-sample  the same for one sampling run
                        profile         one base step by op, every call synchronised
                        profile-sample  the same for one sampling run
  --shape BxN         the training step that kernels and profile time (default 16x2048);
                        given, train measures that shape alone
  --batches LIST      the sample item's batch sizes, comma-separated (default 1,16); the
                        kernels-sample item profiles the first of them (default 1)
  --iters N           timed repetitions per figure, the median reported (default 5)
  --sync-steps        train: wait for each step before queueing the next (the measure before
                        2026-11-30; by default step i + 1 is queued while step i runs, as the
                        peer's loop does)
  --precision P       auto | bf16 | float32 (default auto: bf16 on a GPU)
  --device D          cuda | cuda:N (default cuda)
  --peer DIR|none     the PyTorch peer's folder (default .peer when it holds bench_fast.py)
  --peer-deadline S   seconds the peer may take (default 420)
  --out FILE          JSON results (default bench/results/gpu.json; the peer's as FILE.peer.json)
  --help              this text

Environment: MOE_DIFFUSEQ_GROUPED, MOE_DIFFUSEQ_ATTENTION, MOE_DIFFUSEQ_PDL and the other
MOE_DIFFUSEQ_* switches of the CUDA backend (src/backend/cuda/backend.ts) apply as in training.
The sample item replays one recorded denoiser call per batch shape in every run;
MOE_DIFFUSEQ_GRAPHS=0 makes plain calls, =1 records again in each run.
`;

async function main(): Promise<void> {
  if (process.argv.includes('--help') || process.argv.includes('-h')) {
    process.stdout.write(USAGE);
    return;
  }
  const configs = arg('configs', 'base,diffuseq-base').split(',');
  // the training step the kernel and op profiles time (--shape, default 16x2048): checked before the GPU
  const [pB, pN] = shapeArg();
  const shapeGiven = process.argv.includes('--shape');
  const items = arg('items', 'train,memory,long,sample').split(',');
  const iters = Number(arg('iters', '5'));
  const syncSteps = process.argv.includes('--sync-steps');
  const sampleBatches = arg('batches', SAMPLE_BATCHES.join(',')).split(',').map(Number);
  if (!sampleBatches.every((b) => Number.isInteger(b) && b >= 1)) {
    process.stderr.write(`--batches ${arg('batches', '')}: expected batch sizes >= 1, comma-separated, e.g. 1,16\n`);
    process.exit(2);
  }
  const out = arg('out', 'bench/results/gpu.json');
  const be: Backend = await createBackend(arg('device', 'cuda'));
  const rows: Record<string, unknown>[] = [];
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const precision = resolvePrecision(arg('precision', 'auto'), be);
  log(`device: ${be.describe()}; precision ${precision}`);
  if (items.includes('ops')) {
    opsTable(be, log);
    // the mma.sync kernels (grouped products, attention) beside the defaults
    const mma = new CudaBackend({ grouped: 'mma', attention: 'mma' });
    log('with grouped: mma, attention: mma');
    opsTable(mma, log);
    mma.close();
  }
  if (items.includes('kernels') || items.includes('kernels-sample')) {
    const cfg = config(configs[0]!, 2048);
    if (items.includes('kernels')) {
      const tcfg = config(configs[0]!, pN);
      kernelProfile(tcfg, `${configs[0]} kernels of one training step ${pB}x${pN}`, (model) => {
        const step = makeStep(model, batchOf(tcfg, pB, pN, pN / 2));
        return { run: () => void step.run(), dispose: () => step.dispose() };
      }, log);
    }
    if (items.includes('kernels-sample')) {
      // the first of --batches when it is given (--batches 16: batch 16's kernels), else batch 1
      const sb = process.argv.includes('--batches') ? sampleBatches[0]! : 1;
      const batch = batchOf(cfg, sb, 2048, 2);
      kernelProfile(cfg, `${configs[0]} kernels of sampling ${sb}x2048, 10 denoiser calls`, (model) => ({
        run: () => void sampleIds(model, batch.inputIds, batch.inputMask, sb, 2048, { sampler: 'ddim', steps: 10, seed: 1 }),
        dispose: () => undefined,
      }), log);
    }
  }
  for (const name of configs) {
    if (items.includes('profile')) {
      const cfg = config(name, pN);
      profile(be, cfg, `${name} profile of one training step ${pB}x${pN}`, (model) => {
        const step = makeStep(model, batchOf(cfg, pB, pN, pN / 2));
        return { run: () => void step.run(), dispose: () => step.dispose() };
      }, log);
    }
    if (items.includes('profile-sample')) {
      const cfg = config(name, 2048);
      const batch = batchOf(cfg, 1, 2048, 2);
      profile(be, cfg, `${name} profile of sampling 1x2048, 10 denoiser calls`, (model) => ({
        run: () => void sampleIds(model, batch.inputIds, batch.inputMask, 1, 2048, { sampler: 'ddim', steps: 10, seed: 1 }),
        dispose: () => undefined,
      }), log);
    }
    if (items.includes('train')) {
      // --shape given: that training shape alone
      for (const [B, N] of shapeGiven ? [[pB, pN] as const] : TRAIN_SHAPES) {
        const cfg = config(name, N);
        const model = modelOf(cfg, be);
        const step = makeStep(model, batchOf(cfg, B, N, N / 2));
        const t0 = performance.now();
        step.run();
        const first = (performance.now() - t0) / 1000;
        // warm-up steps: cuBLAS chooses an algorithm per new GEMM shape, and expert row counts vary
        for (let i = 0; i < 3; i++) step.run();
        // steps queued back to back: a call's time is the wait for the step before it (the step's
        // time once the queue is full; the first call only queues, the median passes over it)
        const ms: number[] = [];
        const each = syncSteps ? step.run : step.queue;
        let loss = NaN; // the last step's (queue returns the one before it, finish the last)
        for (let i = 0; i <= iters; i++) {
          const t = performance.now();
          const l = each();
          ms.push(performance.now() - t);
          if (!Number.isNaN(l)) loss = l;
        }
        const last = step.finish();
        if (!Number.isNaN(last)) loss = last;
        ms.shift();
        const med = median(ms);
        const tps = (B * N) / (med / 1000);
        const tflops = trainFlops(cfg, B, N) / (med / 1000) / 1e12;
        rows.push({ config: name, item: 'train', B, N, msMedian: med, tokensPerS: tps, modelTflops: tflops, mfu: tflops / PEAK_TFLOPS, firstStepS: first, loss });
        log(`${name} train ${B}x${N}: ${tps.toFixed(0)} tok/s, ${med.toFixed(1)} ms/step, ${tflops.toFixed(1)} TFLOP/s (MFU ${((100 * tflops) / PEAK_TFLOPS).toFixed(2)}%), first step ${first.toFixed(1)} s, loss ${loss.toFixed(4)}`);
        step.dispose();
        model.dispose();
      }
    }
    // the long lengths for sliding-window configs only (full attention there is hours of compute)
    const long = items.includes('long') && presetConfig(name).attention.kind !== 'full';
    // [length, activation recomputation]: the long lengths both ways
    const lengths: [number, boolean][] = [...(items.includes('memory') ? MEMORY_LENGTHS.map((N): [number, boolean] => [N, false]) : []), ...(long ? LONG_LENGTHS.flatMap((N): [number, boolean][] => [[N, false], [N, true]]) : [])];
    for (const [N, recompute] of lengths) {
      const cfg = config(name, N);
      const model = modelOf(cfg, be);
      const step = makeStep(model, batchOf(cfg, 1, N, N / 2), recompute);
      try {
        step.run();
        be.resetPeak();
        const t = performance.now();
        step.run();
        const stepMs = performance.now() - t;
        const peak = be.memory().peakBytes / 2 ** 30;
        rows.push({ config: name, item: 'memory', B: 1, N, peakGiB: peak, stepMs, recompute });
        log(`${name} memory 1x${N}${recompute ? ' recomputed' : ''}: peak ${peak.toFixed(2)} GiB (weights, gradients, AdamW state, activations), step ${stepMs.toFixed(0)} ms`);
      } catch (e) {
        // out of memory on this card: say so and go on with the other items
        log(`${name} memory 1x${N}${recompute ? ' recomputed' : ''}: failed: ${(e as Error).message.split('\n')[0]}`);
      } finally {
        step.dispose();
        model.dispose();
      }
    }
    if (items.includes('sample')) {
      const N = 2048;
      const cfg = config(name, N);
      const model = modelOf(cfg, be);
      // the denoiser call recorded once per batch shape and replayed in every run, and the weights
      // converted to bf16 once, as a server would (MOE_DIFFUSEQ_GRAPHS=0: plain calls; =1: a
      // recording made in each run; MOE_DIFFUSEQ_FIXED_WEIGHTS=0: the weights converted every run)
      const fixedWeights = process.env['MOE_DIFFUSEQ_FIXED_WEIGHTS'] !== '0';
      const graphs = process.env['MOE_DIFFUSEQ_GRAPHS'] === '1' || (SamplingGraphs.unlessDisabled({ fixedWeights }) ?? false);
      for (const B of sampleBatches) {
        const batch = batchOf(cfg, B, N, 2);
        const run = () => {
          sampleIds(model, batch.inputIds, batch.inputMask, B, N, { sampler: 'ddim', steps: 10, seed: 1, graphs });
          be.synchronize();
        };
        run();
        const ms: number[] = [];
        for (let i = 0; i < 3; i++) {
          const t = performance.now();
          run();
          ms.push(performance.now() - t);
        }
        const med = median(ms);
        rows.push({ config: name, item: 'sample', B, N, steps: 10, msMedian: med, perDocMs: med / B });
        log(`${name} sample ${B}x${N}, 10 denoiser calls: ${med.toFixed(1)} ms (${(med / B).toFixed(1)} ms per document)`);
      }
      if (graphs instanceof SamplingGraphs) graphs.dispose();
      model.dispose();
    }
  }
  const device = `${be.describe()}; precision ${precision}`;
  be.close();
  mkdirSync(dirname(out), { recursive: true });
  const peerArg = arg('peer', existsSync('.peer/bench_fast.py') ? '.peer' : 'none');
  const peer = peerArg === 'none' ? null : runPeer(peerArg, configs, items, out.replace(/\.json$/, '') + '.peer.json', log);
  const date = new Date().toISOString();
  process.stdout.write(`\n${device}; ${date}${peer?.meta ? `; peer on ${peer.meta.gpu}, bf16 matmul peak ${peer.meta.matmulPeak?.tflops?.toFixed(0)} TFLOP/s` : ''}\n\n${table(rows, peer)}\n`);
  writeFileSync(out, JSON.stringify({ device, date, precision, rows, peer: peer?.configs ?? null }, null, 2) + '\n');
}

await main();
