/**
 * GPU benchmark (`npm run bench:gpu`, on a machine with an NVIDIA GPU): the first honest measurement
 * of the CUDA backend on `base` and `diffuseq-base`, with the figures the PyTorch peer reports:
 *   - training tokens/s and MFU at 16 x 2048 (forward + backward + AdamW, one step timed with a
 *     device synchronisation; the noise of the step is drawn once and reused, as the peer's timing
 *     loop reuses its batch);
 *   - peak memory of one training step with one sequence of 2048 and 8192 tokens (the backend's
 *     allocator counter: parameters, gradients, AdamW state and activations);
 *   - sampling latency of one 2048-token document with 10 denoiser calls, and of a batch of 16;
 *   - with `--items profile` / `profile-sample`: one training step / one sampling run with every
 *     backend call synchronised and timed, by op (where the time goes, host work included).
 * The model runs at --precision (auto: bf16 on the GPU; float32 to measure the float32 path).
 * MFU counts FLOPs as the peer's README does (6 x active non-embedding parameters per position, the
 * blocks seeing G + N positions, plus 12 d L x allowed attention pairs), over the card's measured
 * bf16 matmul rate (788 TFLOP/s on an H200, GPU.md).
 * The PyTorch peer (../shared/peers/pytorch, copied to an ignored folder such as .peer/) runs in the
 * same command after ours (`--peer DIR`, default .peer when it holds bench_fast.py; `--peer none`
 * skips it) with the same configs and shapes, variants eager and compiled; the table puts its
 * figures beside ours with the ratio against the compiled peer.
 * Prints a table and writes JSON (--out, default bench/results/gpu.json; the peer's own JSON beside
 * it as <out>.peer.json).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Backend } from '../src/backend/backend.js';
import { createBackend } from '../src/backend/create.js';
import { PhiloxStream } from '../src/backend/philox.js';
import { diffusionLoss, drawNoise, type LossBatch } from '../src/diffusion/loss.js';
import { UniformSampler } from '../src/diffusion/timestep.js';
import { expertHidden, presetConfig, type ModelConfig } from '../src/model/config.js';
import { Model, resolvePrecision } from '../src/model/model.js';
import { sampleIds } from '../src/sample/sampler.js';

const PEAK_TFLOPS = 788;

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

/** One training step: loss forward + backward, AdamW on the flat parameters. */
function makeStep(model: Model, batch: LossBatch) {
  const be = model.backend;
  const m = be.zeros([model.params.total]);
  const v = be.zeros([model.params.total]);
  const noise = drawNoise(model.config, model.alphaBar, batch, new UniformSampler(model.config.diffusionSteps), new PhiloxStream(3));
  let step = 0;
  return {
    run: () => {
      model.params.zeroGrads();
      const r = diffusionLoss(model, batch, noise, { train: true, backward: true });
      be.adamw(model.params.flat, model.params.grads, m, v, { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: ++step });
      be.synchronize();
      return r.terms.total;
    },
    dispose: () => [m, v].forEach((t) => t.dispose()),
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
  if (items.includes('train')) parts.push('train:[a-z]+:[a-z-]+:16x2048');
  if (items.includes('memory')) parts.push('memory:[a-z]+:[a-z-]+:1x(2048|8192)$');
  if (items.includes('sample')) parts.push('sample:[a-z]+:[a-z-]+:(1|16)x2048');
  const args = [join(dir, 'bench_fast.py'), '--skip-check', '--configs', configs.join(','), '--variants', 'eager,compiled', '--iters', '5', '--items', parts.join('|'), '--deadline', arg('peer-deadline', '300'), '--out', out];
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
  const L = ['| config | measure | ours | peer eager | peer compiled | ours / compiled |', '|---|---|---|---|---|---|'];
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
      what = `peak memory 1x${r['N']} GiB`;
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
    const ratio = c === undefined ? '-' : `${(ours / c).toFixed(3)}x`;
    L.push(`| ${cfg} | ${what} | ${fmt(ours)} | ${e === undefined ? '-' : fmt(e)} | ${c === undefined ? '-' : fmt(c)} | ${ratio} |`);
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

/**
 * Runs `work` once to warm up, then once more on a {@link profiled} backend, and logs the time of
 * each backend method, slowest first (the 14 slowest).
 */
function profile(be: Backend, cfg: ModelConfig, label: string, make: (model: Model) => { run: () => void; dispose: () => void }, log: (s: string) => void): void {
  const times = new Map<string, [number, number]>();
  const model = modelOf(cfg, profiled(be, times));
  const work = make(model);
  work.run();
  times.clear();
  const t0 = performance.now();
  work.run();
  const total = performance.now() - t0;
  log(`${label} (every op synchronised): ${total.toFixed(1)} ms`);
  for (const [op, [ms, n]] of [...times.entries()].sort((a, b) => b[1][0] - a[1][0]).slice(0, 14)) {
    log(`  ${op.padEnd(24)} ${ms.toFixed(1).padStart(9)} ms  ${String(n).padStart(6)} calls  ${((100 * ms) / total).toFixed(1).padStart(5)}%`);
  }
  work.dispose();
  model.dispose();
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main(): Promise<void> {
  const configs = arg('configs', 'base,diffuseq-base').split(',');
  const items = arg('items', 'train,memory,sample').split(',');
  const iters = Number(arg('iters', '5'));
  const out = arg('out', 'bench/results/gpu.json');
  const be: Backend = await createBackend(arg('device', 'cuda'));
  const rows: Record<string, unknown>[] = [];
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const precision = resolvePrecision(arg('precision', 'auto'), be);
  log(`device: ${be.describe()}; precision ${precision}`);
  for (const name of configs) {
    if (items.includes('profile')) {
      const cfg = config(name, 2048);
      profile(be, cfg, `${name} profile of one training step 16x2048`, (model) => {
        const step = makeStep(model, batchOf(cfg, 16, 2048, 1024));
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
      const B = 16;
      const N = 2048;
      const cfg = config(name, N);
      const model = modelOf(cfg, be);
      const step = makeStep(model, batchOf(cfg, B, N, N / 2));
      const t0 = performance.now();
      step.run();
      const first = (performance.now() - t0) / 1000;
      step.run();
      const ms: number[] = [];
      let loss = 0;
      for (let i = 0; i < iters; i++) {
        const t = performance.now();
        loss = step.run();
        ms.push(performance.now() - t);
      }
      const med = median(ms);
      const tps = (B * N) / (med / 1000);
      const tflops = (trainFlops(cfg, B, N) / (med / 1000)) / 1e12;
      rows.push({ config: name, item: 'train', B, N, msMedian: med, tokensPerS: tps, modelTflops: tflops, mfu: tflops / PEAK_TFLOPS, firstStepS: first, loss });
      log(`${name} train ${B}x${N}: ${tps.toFixed(0)} tok/s, ${med.toFixed(1)} ms/step, ${tflops.toFixed(1)} TFLOP/s (MFU ${((100 * tflops) / PEAK_TFLOPS).toFixed(2)}%), first step ${first.toFixed(1)} s, loss ${loss.toFixed(4)}`);
      step.dispose();
      model.dispose();
    }
    if (items.includes('memory')) {
      for (const N of [2048, 8192]) {
        const cfg = config(name, N);
        const model = modelOf(cfg, be);
        const step = makeStep(model, batchOf(cfg, 1, N, N / 2));
        step.run();
        be.resetPeak();
        step.run();
        const peak = be.memory().peakBytes / 2 ** 30;
        rows.push({ config: name, item: 'memory', B: 1, N, peakGiB: peak });
        log(`${name} memory 1x${N}: peak ${peak.toFixed(2)} GiB (weights, gradients, AdamW state, activations)`);
        step.dispose();
        model.dispose();
      }
    }
    if (items.includes('sample')) {
      const N = 2048;
      const cfg = config(name, N);
      const model = modelOf(cfg, be);
      for (const B of [1, 16]) {
        const batch = batchOf(cfg, B, N, 2);
        const run = () => {
          sampleIds(model, batch.inputIds, batch.inputMask, B, N, { sampler: 'ddim', steps: 10, seed: 1 });
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
