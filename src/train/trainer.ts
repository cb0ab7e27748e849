/**
 * The training loop (the product's main job): AdamW with warm-up and decay, gradient accumulation
 * and clipping, an EMA of the weights for sampling, the loss-aware timestep sampler, dropout, a
 * JSONL metrics log, periodic evaluation, checkpoints every N steps (keep the last K), exact resume,
 * Ctrl-C (AbortSignal) saving a checkpoint, and a NaN stop that keeps the last good checkpoint.
 *
 * Determinism: every random number of a step comes from one Philox stream (seed, offset) whose
 * offset is saved, the data order from the batch iterator's saved state, and the kernels compute each
 * output element in a fixed order; so 20 steps straight and 10 + resume + 10 give bitwise the same
 * weights.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Backend, Tensor } from '../backend/backend.js';
import { createBackend } from '../backend/create.js';
import { PhiloxStream } from '../backend/philox.js';
import { BatchIterator } from '../data/batches.js';
import { diffusionLoss, drawNoise } from '../diffusion/loss.js';
import { createSampler } from '../diffusion/timestep.js';
import { DivergenceError } from '../errors.js';
import { readConfig } from '../io/checkpoint.js';
import { Progress } from '../io/progress.js';
import { readSafetensors } from '../io/safetensors.js';
import { presetConfig, type ModelConfig } from '../model/config.js';
import { Model, resolvePrecision } from '../model/model.js';
import { countParams, paramSpecs } from '../model/params.js';
import { defaultTokenizer, loadTokenizer } from '../tokenizer/index.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { listCheckpoints, readCheckpointState, saveCheckpoint, type TrainerState } from './checkpoints.js';
import { prepareData } from './data.js';
import { evaluateModel, type EvalResult } from './evaluate.js';
import { learningRate, resolveTrainOptions, type TrainOptions } from './options.js';

/** A line of metrics.jsonl. */
export type MetricsRecord = Record<string, number | string | boolean | null>;

/** Hooks and controls of a run (not saved with the options). */
export interface TrainControls {
  /** Abort (Ctrl-C): the run saves a checkpoint after the current step and returns. */
  signal?: AbortSignal;
  /** Every metrics record, as it is logged. */
  onLog?: (r: MetricsRecord) => void;
  /** Show the progress bar on stderr (default true). */
  progress?: boolean;
  /** Messages (data summary, checkpoints); default: stderr. */
  log?: (line: string) => void;
}

/** What a run did. */
export interface TrainResult {
  out: string;
  /** Steps done. */
  step: number;
  /** The newest checkpoint folder. */
  checkpoint: string;
  interrupted: boolean;
  /** Mean training loss of the last logged window. */
  loss: number;
  /** The last evaluation (if any). */
  eval: EvalResult | null;
}

/** Options a resumed run may change; everything else comes from the checkpoint. */
const RESUMABLE = ['maxSteps', 'saveEvery', 'keep', 'evalEvery', 'evalExamples', 'evalSteps', 'logEvery', 'stopAfter', 'device', 'skipBad', 'recompute'] as const;

/** Trains a model. See {@link TrainOptions} for the options and {@link TrainControls} for the hooks. */
export async function train(input: Partial<TrainOptions>, controls: TrainControls = {}): Promise<TrainResult> {
  const log = controls.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  // a resumed run takes its data and model from the checkpoint; only the run folder is needed
  let o = resolveTrainOptions(input.resume && !input.data ? { ...input, data: '(from checkpoint)' } : input);
  const out = o.out;
  mkdirSync(out, { recursive: true });

  // ---- resume or start -------------------------------------------------------------------------
  let resumeFrom: { dir: string; state: TrainerState; arrays: ReturnType<typeof readCheckpointState>['arrays'] } | null = null;
  let config: ModelConfig;
  let tok: Tokenizer;
  if (o.resume) {
    const list = listCheckpoints(out);
    if (!list.length) throw new DivergenceError(`--resume: no checkpoint in ${out}`, 'start the run without --resume');
    const dir = list[list.length - 1]!.dir;
    config = readConfig(dir);
    tok = loadTokenizer(dir);
    const { state, arrays } = readCheckpointState(dir, countParams(paramSpecs(config)));
    const over: Partial<TrainOptions> = {};
    for (const k of RESUMABLE) if (input[k] !== undefined) (over as Record<string, unknown>)[k] = input[k];
    // --stop-after belongs to the invocation that gave it: a resumed run goes on to maxSteps unless told again
    o = resolveTrainOptions({ ...state.options, stopAfter: 0, ...over, resume: true });
    resumeFrom = { dir, state, arrays };
    log(`resuming ${out} from ${dir} (step ${state.step})`);
  } else {
    if (listCheckpoints(out).length) throw new DivergenceError(`${out} already holds checkpoints of a run`, 'pass --resume to continue it, or choose another --out');
    tok = o.tokenizer ? loadTokenizer(o.tokenizer) : defaultTokenizer();
    config = presetConfig(o.preset, { ...(o.model ?? {}), vocabSize: tok.vocabSize });
  }

  // ---- data ------------------------------------------------------------------------------------
  const readBar = controls.progress === false ? null : new Progress({ label: 'reading data', total: 0 });
  const data = await prepareData(o, tok, config.seqLen, readBar ? (d, t) => readBar.update(Math.round(d / 1e6), { MB: (t / 1e6).toFixed(1) }) : undefined);
  if (data.skipped) log(data.skipped);
  log(`data: ${data.train.length} training sequences, ${data.valid.length} validation sequences (${data.evalItems.length} sources scored by sampling)`);

  // ---- model, optimizer, state -----------------------------------------------------------------
  const be: Backend = await createBackend(o.device);
  const model = new Model(config, be, 'float32');
  model.precision = resolvePrecision(o.precision, be);
  const P = model.params;
  const total = P.total;
  const expAvg = be.zeros([total]);
  const expAvgSq = be.zeros([total]);
  const ema = be.zeros([total]);
  const sampler = createSampler(config.timestepSampler, config.diffusionSteps);
  const it = new BatchIterator(data.train, {
    batchSize: o.batchSize,
    seqLen: config.seqLen,
    pad: tok.specials.pad,
    seed: o.seed,
    ...(o.bucket > 0 ? { bucket: { blockSize: o.bucket } } : {}),
  });
  let step = 0;
  let rng = new PhiloxStream(o.seed);
  let tokens = 0;
  let seconds = 0;
  if (resumeFrom) {
    const { state, arrays } = resumeFrom;
    be.write(P.flat, arrays.params);
    be.write(expAvg, arrays.expAvg);
    be.write(expAvgSq, arrays.expAvgSq);
    be.write(ema, emaFromModelFile(resumeFrom.dir, model));
    sampler.restore(state.sampler);
    it.restore(state.data);
    step = state.step;
    rng = new PhiloxStream(o.seed, state.rngOffset);
    tokens = state.tokens;
    seconds = state.seconds;
    trimMetrics(join(out, 'metrics.jsonl'), step);
  } else {
    P.initialize(o.seed);
    be.copy(ema, P.flat);
  }
  const n = model.parameterCount();
  log(`model: preset ${o.preset}, ${(n.total / 1e6).toFixed(2)}M parameters, seqLen ${config.seqLen}, ${be.describe()}, precision ${model.precision}`);

  // AdamW groups: weight decay only on the parameters whose spec asks for it (runs of the flat layout)
  const groups = decayGroups(model, be, o.weightDecay);
  const metricsPath = join(out, 'metrics.jsonl');
  const emit = (r: MetricsRecord) => {
    appendFileSync(metricsPath, JSON.stringify(r) + '\n');
    controls.onLog?.(r);
  };

  const arrays = () => ({
    params: be.toArray(P.flat) as Float32Array,
    ema: be.toArray(ema) as Float32Array,
    expAvg: be.toArray(expAvg) as Float32Array,
    expAvgSq: be.toArray(expAvgSq) as Float32Array,
  });
  let lastCheckpoint = resumeFrom?.dir ?? '';
  const save = () => {
    const state: TrainerState = { version: 1, step, rngOffset: rng.offset, sampler: sampler.state(), data: it.state(), options: { ...o, resume: false }, tokens, seconds };
    lastCheckpoint = saveCheckpoint(out, step, config, P.specs, arrays(), state, tok, o.keep);
  };
  const withEma = <T>(fn: () => T): T => {
    // swap the EMA weights in for evaluation and sampling, then restore the raw weights
    const raw = be.empty([total]);
    be.copy(raw, P.flat);
    be.copy(P.flat, ema);
    try {
      return fn();
    } finally {
      be.copy(P.flat, raw);
      raw.dispose();
    }
  };
  const runEval = (): EvalResult => {
    const r = withEma(() => evaluateModel(model, tok, data, { examples: o.evalExamples, steps: o.evalSteps, batchSize: o.batchSize, seed: o.seed }));
    emit({ step, split: 'valid', ...r.metrics });
    const fmt = Object.entries(r.metrics).map(([k, v]) => `${k} ${typeof v === 'number' ? v.toFixed(4) : v}`).join(', ');
    log(`eval at step ${step}: ${fmt}`);
    return r;
  };

  // ---- the loop --------------------------------------------------------------------------------
  const stopAt = o.stopAfter > 0 ? Math.min(o.stopAfter, o.maxSteps) : o.maxSteps;
  const bar = controls.progress === false ? null : new Progress({ label: 'train', total: o.maxSteps });
  let window = { loss: 0, mse: 0, tT: 0, nll: 0, aux: 0, z: 0, n: 0, tokens: 0, t0: performance.now() };
  let lastLoss = NaN;
  let lastEval: EvalResult | null = null;
  let interrupted = false;
  const dropCount = (o.batchSize * (config.seqLen + config.globalTokens) * config.hidden + 4) * (1 + 2 * config.layers);
  try {
    while (step < stopAt) {
      const t0 = performance.now();
      step++;
      P.zeroGrads();
      const loadShares: number[][] = [];
      for (let a = 0; a < o.accumulate; a++) {
        const batch = it.next();
        const noise = drawNoise(config, model.alphaBar, batch, sampler, rng);
        const r = diffusionLoss(model, batch, noise, { train: true, rng: { seed: o.seed, offset: rng.take(dropCount) }, backward: true, gradScale: 1 / o.accumulate, recompute: o.recompute });
        const tt = r.terms;
        if (!Number.isFinite(tt.total)) {
          throw new DivergenceError(
            `step ${step}: the loss is ${tt.total} (mse ${tt.mse}, nll ${tt.nll}); training stopped`,
            `lower --lr (now ${o.lr}) or add --warmup; the last good checkpoint is ${lastCheckpoint || '(none yet)'}; continue from it with --resume`,
          );
        }
        sampler.update(noise.t, tt.perExample);
        r.loadShares.forEach((ls, i) => (loadShares[i] = ls.map((v, e) => (loadShares[i]?.[e] ?? 0) + v / o.accumulate)));
        window.loss += tt.total;
        window.mse += tt.mse;
        window.tT += tt.tT;
        window.nll += tt.nll;
        window.aux += tt.aux;
        window.z += tt.z;
        window.n++;
        window.tokens += batch.batch * batch.seqLen;
        tokens += batch.batch * batch.seqLen;
      }
      const gradNorm = Math.sqrt(be.sumSquares(P.grads));
      if (!Number.isFinite(gradNorm)) {
        throw new DivergenceError(`step ${step}: the gradient norm is ${gradNorm}; training stopped`, `lower --lr (now ${o.lr}); the last good checkpoint is ${lastCheckpoint || '(none yet)'}`);
      }
      if (o.clip > 0 && gradNorm > o.clip) be.axpby(P.grads, o.clip / gradNorm, P.grads);
      const lr = learningRate(o, step);
      for (const g of groups) be.adamw(g.param, g.grad, g.m, g.v, { lr, beta1: o.beta1, beta2: o.beta2, eps: o.adamEps, weightDecay: g.decay ? o.weightDecay : 0, step });
      if (config.ffn.kind === 'moe' && config.ffn.balance === 'bias') balanceBiases(model, loadShares);
      if (o.ema > 0) {
        const d = Math.min(o.ema, (1 + step) / (10 + step));
        be.axpby(ema, d, ema, 1 - d, P.flat);
      } else be.copy(ema, P.flat);
      seconds += (performance.now() - t0) / 1000;

      if (step % o.logEvery === 0 || step === stopAt) {
        const secs = (performance.now() - window.t0) / 1000;
        const k = window.n;
        lastLoss = window.loss / k;
        emit({
          step, split: 'train', loss: lastLoss, mse: window.mse / k, tT: window.tT / k, nll: window.nll / k, aux: window.aux / k, z: window.z / k,
          lr, gradNorm, tokensPerSec: window.tokens / secs, elapsed: seconds,
        });
        bar?.update(step, { loss: lastLoss.toFixed(4), 'tok/s': (window.tokens / secs).toFixed(0) }, true);
        window = { loss: 0, mse: 0, tT: 0, nll: 0, aux: 0, z: 0, n: 0, tokens: 0, t0: performance.now() };
      } else bar?.update(step, { loss: Number.isFinite(lastLoss) ? lastLoss.toFixed(4) : '-' });
      // let the event loop run (a Ctrl-C handler aborts the signal there), then look at it
      await new Promise((r) => setImmediate(r));
      interrupted = !!controls.signal?.aborted;
      if (o.evalEvery > 0 && step % o.evalEvery === 0 && step !== o.maxSteps && !interrupted) lastEval = runEval();
      if ((o.saveEvery > 0 && step % o.saveEvery === 0) || step === stopAt || interrupted) save();
      if (interrupted) {
        log(`\ninterrupted: saved ${lastCheckpoint}; continue with --resume`);
        break;
      }
    }
    if (step === o.maxSteps && !interrupted && (o.evalExamples > 0 || data.valid.length > 0)) lastEval = runEval();
    bar?.finish(step, Number.isFinite(lastLoss) ? { loss: lastLoss.toFixed(4) } : {});
    if (!lastCheckpoint) save();
    return { out, step, checkpoint: lastCheckpoint, interrupted, loss: lastLoss, eval: lastEval };
  } finally {
    for (const g of groups) if (g.owned) [g.param, g.grad, g.m, g.v].forEach((t) => t.dispose());
    [expAvg, expAvgSq, ema].forEach((t) => t.dispose());
    model.dispose();
    be.close();
  }

  function decayGroups(m: Model, b: Backend, wd: number): { param: Tensor; grad: Tensor; m: Tensor; v: Tensor; decay: boolean; owned: boolean }[] {
    const PS = m.params;
    if (wd === 0) return [{ param: PS.flat, grad: PS.grads, m: expAvg, v: expAvgSq, decay: false, owned: false }];
    const out: { param: Tensor; grad: Tensor; m: Tensor; v: Tensor; decay: boolean; owned: boolean }[] = [];
    let start = 0;
    let cur: boolean | null = null;
    let off = 0;
    const flush = (end: number) => {
      if (cur === null || end === start) return;
      const sh = [end - start];
      out.push({ param: b.view(PS.flat, start, sh), grad: b.view(PS.grads, start, sh), m: b.view(expAvg, start, sh), v: b.view(expAvgSq, start, sh), decay: cur, owned: true });
    };
    for (const s of PS.specs) {
      const size = s.shape.reduce((x, y) => x * y, 1);
      const decay = s.decay && s.trainable;
      if (decay !== cur) {
        flush(off);
        start = off;
        cur = decay;
      }
      off += size;
    }
    flush(off);
    return out;
  }
}

/** The EMA weights of a checkpoint (its model.safetensors) in the flat layout. */
function emaFromModelFile(dir: string, model: Model): Float32Array {
  const f = readSafetensors(join(dir, 'model.safetensors'));
  const out = new Float32Array(model.params.total);
  for (const s of model.params.specs) {
    const t = f.tensors.get(s.name);
    if (!t) throw new DivergenceError(`${dir}: model.safetensors lacks ${s.name}`);
    out.set(t.data, model.params.offsets.get(s.name)!);
  }
  return out;
}

/** DeepSeek-V3's auxiliary-loss-free balancing: b_i += rate * sign(mean load - load_i), per MoE layer. */
function balanceBiases(model: Model, loadShares: number[][]): void {
  const c = model.config;
  const be = model.backend;
  loadShares.forEach((load, i) => {
    const name = `layers.${i}.ffn.expert_bias`;
    const b = Array.from(be.toArray(model.params.get(name)));
    const mean = 1 / c.ffn.experts;
    for (let e = 0; e < b.length; e++) b[e]! += c.ffn.biasRate * Math.sign(mean - load[e]!);
    be.write(model.params.get(name), b);
  });
}

/** Drops metrics lines logged after `step` (by a run that crashed after its last checkpoint). */
function trimMetrics(path: string, step: number): void {
  if (!existsSync(path)) return;
  const kept = readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => {
      if (!l.trim()) return false;
      try {
        return (JSON.parse(l) as { step?: number }).step! <= step;
      } catch {
        return false;
      }
    });
  writeFileSync(path, kept.map((l) => l + '\n').join(''));
}
