/**
 * The training objective of SPEC sections 3 and 4, forward and backward:
 *
 *   z0  = E[w] + sqrt(1 - alphaBar_0) eps0
 *   x_t = sqrt(ab_t) (z0 - m) + sqrt(1 - ab_t) eps + m   (targets; m where replaced; z0 on sources)
 *   loss = mean_b( w_b (mse_b + tT_b + nll_b) ) + auxWeight aux + zWeight z + 0.01 ||m||_2
 *
 * mse_b: mean over masked positions of ||target - x0_hat||^2 / e (target = E[w] where t = 0, else z0);
 * tT_b: mean of ||sqrt(ab_{T-1}) z0||^2 / e; nll_b: mean cross-entropy of softmax(z0 E^T) against w.
 * Nothing is detached: the z0 target and the nll both send gradient into E. The randomness (t, eps0,
 * eps, the replacement mask) is an input, so the loss can be checked against another implementation;
 * drawNoise() draws it from a seeded stream, leaving the two normal tensors as ranges of that stream
 * for the backend to draw where it computes (on a GPU: no host generation, no upload).
 */
import type { Backend, Tensor } from '../backend/backend.js';
import type { PhiloxStream } from '../backend/philox.js';
import type { ModelConfig } from '../model/config.js';
import type { DenoiserCache, DropoutRng, MoeStats } from '../model/denoiser.js';
import type { Model } from '../model/model.js';
import { Scope } from '../model/scope.js';
import type { TimestepSampler } from './timestep.js';

/** Weight of the ||m||_2 term (SPEC section 4). */
export const M_NORM_WEIGHT = 0.01;

/** A batch of encoded sequences (SPEC section 1). */
export interface LossBatch {
  /** B x N token ids, row-major. */
  inputIds: Int32Array;
  /** B x N: 0 on [CLS] src [SEP] (kept clean), 1 after. */
  inputMask: Int32Array;
  batch: number;
  seqLen: number;
}

/**
 * Standard normals by reference: element i is normal(seed, offset + i) of the Philox stream
 * (src/backend/philox.ts), which every backend's randomNormal draws.
 */
export interface NormalDraw {
  readonly seed: number;
  readonly offset: number;
}

/** Whether noise is given by reference (a {@link NormalDraw}) rather than as values. */
export function isNormalDraw(x: ArrayLike<number> | NormalDraw): x is NormalDraw {
  return typeof (x as NormalDraw).seed === 'number' && (x as ArrayLike<number>).length === undefined;
}

/** The loss's randomness for one batch. */
export interface LossNoise {
  /** Timestep per example, in [0, T). */
  t: number[];
  /** B x N x e standard normal (z0's noise): values, or a range of the Philox stream. */
  eps0: ArrayLike<number> | NormalDraw;
  /** B x N x e standard normal (x_t's noise): values, or a range of the Philox stream. */
  eps: ArrayLike<number> | NormalDraw;
  /** B x N: 1 where a target position is replaced by m. */
  replaceMask: Int32Array;
  /** Importance weight per example (1 for the uniform sampler). */
  weights: number[];
}

/** The loss and its terms; mse, tT and nll are mean_b(w_b term_b). */
export interface LossTerms {
  total: number;
  mse: number;
  tT: number;
  nll: number;
  /** Balance loss, averaged over the MoE layers (0 without MoE). */
  aux: number;
  /** Router z-loss, averaged over the MoE layers. */
  z: number;
  /** ||m||_2 (0 with absorbing off). */
  mNorm: number;
  /** Unweighted mse_b + tT_b + nll_b per example (what the loss-aware sampler records). */
  perExample: number[];
}

/** Options of {@link diffusionLoss}. */
export interface LossOptions {
  /** Dropout on (with rng). */
  train: boolean;
  rng?: DropoutRng;
  /** Also accumulate parameter gradients (scaled by gradScale, default 1). */
  backward: boolean;
  gradScale?: number;
  /** Return x0_hat [B, N, e] on the host. */
  returnX0?: boolean;
  /** Activation recomputation in the backward (ForwardOptions.recompute): less memory, more compute. */
  recompute?: boolean;
}

/** Result of {@link diffusionLoss}. */
export interface LossResult {
  terms: LossTerms;
  x0?: Float32Array | Float64Array;
  /** Per-MoE-layer expert load shares (for bias balancing). */
  loadShares: (readonly number[])[];
}

/**
 * Rows of the tied-head logits computed at once: 16 M values of [rows, V] scratch (64 MB of float32
 * logits), or 64 M under bf16 activations, where a GPU's fused kernels write only the bf16 dlogits
 * (128 MB; float32 logits where the composed path serves). The larger chunks are for the GPU's
 * waves: at V = 30,522, 2,198 rows a chunk took 1.2 ms off a base 16 x 2048 step's kernels against
 * 549, and the peak memory of 2k-32k tokens stayed the same (the denoiser's backward holds it).
 */
function nllChunk(V: number, bf: boolean): number {
  return Math.max(1, Math.floor((bf ? 64 << 20 : 16 << 20) / V));
}

/** Draws the loss's randomness from a seeded stream (t from the sampler). */
export function drawNoise(cfg: ModelConfig, alphaBar: Float64Array, batch: LossBatch, sampler: TimestepSampler, rng: PhiloxStream): LossNoise {
  const { batch: B, seqLen: N } = batch;
  const e = cfg.embDim;
  const { t, weights } = sampler.sample(B, rng);
  // the normals by reference (the same counters rng.normal would take): generating 2 B N e of them
  // on the host took 0.4 s per 16 x 2048 batch, twice a GPU training step
  const eps0: NormalDraw = { seed: rng.seed, offset: rng.take(B * N * e) };
  const eps: NormalDraw = { seed: rng.seed, offset: rng.take(B * N * e) };
  const replaceMask = new Int32Array(B * N);
  const u = rng.uniform(B * N);
  if (cfg.absorbing) {
    for (let b = 0; b < B; b++) {
      const prob = cfg.gamma * Math.sqrt(1 - alphaBar[t[b]!]!);
      for (let n = 0; n < N; n++) if (batch.inputMask[b * N + n] && u[b * N + n]! < prob) replaceMask[b * N + n] = 1;
    }
  }
  return { t, eps0, eps, replaceMask, weights };
}

/** Validates a batch and its noise against the config; throws a clear message. */
function checkInputs(cfg: ModelConfig, batch: LossBatch, noise: LossNoise): void {
  const { batch: B, seqLen: N } = batch;
  const e = cfg.embDim;
  const fail = (m: string) => {
    throw new Error(`loss inputs: ${m}`);
  };
  if (batch.inputIds.length !== B * N) fail(`inputIds has ${batch.inputIds.length} ids, expected B x N = ${B * N}`);
  if (batch.inputMask.length !== B * N) fail(`inputMask has ${batch.inputMask.length} values, expected ${B * N}`);
  if (N > cfg.maxLen) fail(`sequence length ${N} is over maxLen ${cfg.maxLen}`);
  if (noise.t.length !== B) fail(`t has ${noise.t.length} values, expected ${B}`);
  for (const t of noise.t) if (!Number.isInteger(t) || t < 0 || t >= cfg.diffusionSteps) fail(`timestep ${t} outside [0, ${cfg.diffusionSteps})`);
  for (const [name, x] of [['eps0', noise.eps0], ['eps', noise.eps]] as const) {
    if (isNormalDraw(x)) {
      if (!Number.isSafeInteger(x.seed) || x.seed < 0 || !Number.isSafeInteger(x.offset) || x.offset < 0) fail(`${name}: seed and offset must be non-negative safe integers (got ${x.seed}, ${x.offset})`);
    } else if (x.length !== B * N * e) fail(`${name} has ${x.length} values, expected B x N x e = ${B * N * e}`);
  }
  if (noise.replaceMask.length !== B * N) fail(`replaceMask has ${noise.replaceMask.length} values, expected ${B * N}`);
  if (noise.weights.length !== B) fail(`weights has ${noise.weights.length} values, expected ${B}`);
  for (const id of batch.inputIds) if (!Number.isInteger(id) || id < 0 || id >= cfg.vocabSize) fail(`token id ${id} outside the vocabulary [0, ${cfg.vocabSize})`);
}

/** The per-row terms read back from the device. */
interface LossRows {
  msR: ArrayLike<number>;
  ttR: ArrayLike<number>;
  /** nll of the rows the mask counts (rowsUsed), R of them. */
  ceh: ArrayLike<number>;
  /** ||m||_2 (0 with absorbing off). */
  mNorm: number;
}
/** What the host knows of the batch for the scalar loss. */
interface LossLayout {
  B: number;
  N: number;
  e: number;
  R: number;
  abLast: number;
  mask: Float64Array;
  cnt: Float64Array;
  rowsUsed: readonly number[];
  weights: readonly number[];
  moe: readonly MoeStats[];
  cfg: ModelConfig;
}

/** The scalar loss and its terms from the per-row terms read back from the device. */
function lossResult(rows: LossRows, L: LossLayout): LossResult {
  const { B, N, e, R, abLast, mask, cnt, rowsUsed, weights, moe, cfg } = L;
  const { msR, ttR, ceh, mNorm } = rows;
  const mseB = new Float64Array(B);
  const tTB = new Float64Array(B);
  const nllB = new Float64Array(B);
  for (let i = 0; i < B * N; i++) {
    const b = Math.floor(i / N);
    mseB[b]! += (mask[i]! * msR[i]!) / e / cnt[b]!;
    tTB[b]! += (mask[i]! * abLast * ttR[i]!) / e / cnt[b]!;
  }
  for (let i = 0; i < R; i++) {
    const row = rowsUsed[i]!;
    const b = Math.floor(row / N);
    nllB[b]! += (mask[row]! * ceh[i]!) / cnt[b]!;
  }
  const perExample: number[] = [];
  let mse = 0;
  let tT = 0;
  let nll = 0;
  for (let b = 0; b < B; b++) {
    perExample.push(mseB[b]! + tTB[b]! + nllB[b]!);
    mse += (weights[b]! * mseB[b]!) / B;
    tT += (weights[b]! * tTB[b]!) / B;
    nll += (weights[b]! * nllB[b]!) / B;
  }
  const nMoe = moe.length;
  const aux = nMoe ? moe.reduce((a, st) => a + st.aux, 0) / nMoe : 0;
  const z = nMoe ? moe.reduce((a, st) => a + st.z, 0) / nMoe : 0;
  const total = mse + tT + nll + cfg.ffn.auxWeight * aux + cfg.ffn.zWeight * z + M_NORM_WEIGHT * mNorm;
  const terms: LossTerms = { total, mse, tT, nll, aux, z, mNorm, perExample };
  return { terms, loadShares: moe.map((st) => st.loadShare) };
}

/** A loss whose work is queued on the device: {@link PendingLoss.read} brings its numbers back. */
export interface PendingLoss {
  /**
   * Waits for the queued work up to the loss's numbers and returns them (the first call; later
   * calls return the same result). Until then the pending loss holds a few small device buffers.
   */
  read(): LossResult;
}

/** The loss of one batch (and, with opts.backward, its gradient accumulated into the model's grads). */
export function diffusionLoss(model: Model, batch: LossBatch, noise: LossNoise, opts: LossOptions): LossResult {
  return queueDiffusionLoss(model, batch, noise, opts).read();
}

/**
 * {@link diffusionLoss} with its read-back left to the caller: the step's work is queued and nothing
 * waits for the device (but a dropless MoE backward's expert counts, each waiting for its own
 * layer's routing only). A training loop can queue its optimizer and the next batch's step before
 * it reads this one, so that the device never waits for the host between steps.
 */
export function queueDiffusionLoss(model: Model, batch: LossBatch, noise: LossNoise, opts: LossOptions): PendingLoss {
  const cfg = model.config;
  checkInputs(cfg, batch, noise);
  const be: Backend = model.backend;
  const P = model.params;
  const dt = P.dtype;
  const { batch: B, seqLen: N } = batch;
  const { embDim: e, vocabSize: V } = cfg;
  const T = cfg.diffusionSteps;
  const ab = model.alphaBar;
  const BN = B * N;
  const s = new Scope();
  const kept = new Scope(); // what read() needs: per-row terms, ||m||^2
  let queued = false;
  let cache: DenoiserCache | null = null;
  // bfloat16 activations: the weights rounded to bf16 layer by layer for the forward and again for
  // the backward (one conversion a layer each way, one layer's copy alive at a time), not by each
  // product into scratch (164 conversions a base step, 1.2 ms on an H200); null otherwise. A whole
  // copy held through the step (v13) raised the 2k-token peak by 0.5 GB, above the compiled peer's.
  const weights = model.denoiser.layerwiseWeights();
  try {
    const E = P.get('word_embeddings.weight');
    const m = cfg.absorbing ? P.get('mean_embed') : null;
    // every number this step brings back to the host is read by read(), once the backward is
    // queued, so that the host runs ahead of the device through the whole step (a read-back after
    // the forward drained the queue: ~15 ms a base 64 x 512 step on an H200 waited there, and the
    // device then waited on the host). ||m|| stays on the device too: its gradient scales by it there.
    const mSq = m ? kept.keep(be.empty([1], dt)) : null;
    if (m && mSq) be.rowSquaredDistance(mSq, m);
    const ids = s.keep(be.fromArray(batch.inputIds, [B, N], 'int32'));
    const imask = s.keep(be.fromArray(batch.inputMask, [B, N], 'int32'));
    const rmask = s.keep(be.fromArray(noise.replaceMask, [B, N], 'int32'));
    // z0 = E[w] + sqrt(1 - ab_0) eps0
    const emb = s.keep(be.empty([B, N, e], dt));
    be.embedding(emb, E, ids);
    const normals = (x: ArrayLike<number> | NormalDraw): Tensor => {
      if (!isNormalDraw(x)) return be.fromArray(x, [B, N, e], dt);
      const t = be.empty([B, N, e], dt);
      be.randomNormal(t, x.seed, x.offset);
      return t;
    };
    const eps0 = s.keep(normals(noise.eps0));
    const z0 = s.keep(be.empty([B, N, e], dt));
    be.axpby(z0, 1, emb, Math.sqrt(1 - ab[0]!), eps0);
    // x_t
    const sa = s.keep(be.fromArray(noise.t.map((t) => Math.sqrt(ab[t]!)), [B], dt));
    const sb = s.keep(be.fromArray(noise.t.map((t) => Math.sqrt(1 - ab[t]!)), [B], dt));
    const eps = s.keep(normals(noise.eps));
    const xt = s.keep(be.empty([B, N, e], dt));
    be.qSample(xt, z0, eps, m, sa, sb, imask, rmask);
    cache = model.denoiser.forward(xt, noise.t, { train: opts.train, ...(opts.rng ? { rng: opts.rng } : {}), ...(weights ? { weights } : {}), recompute: !!opts.recompute && opts.backward, inference: !opts.backward, keepExpertActivations: opts.backward && !opts.recompute });
    const x0 = cache.x0;

    // masks and per-example counts
    const mask = new Float64Array(BN);
    const cnt = new Float64Array(B);
    for (let i = 0; i < BN; i++) {
      mask[i] = cfg.lossMask === 'all' ? 1 : batch.inputMask[i]!;
      cnt[Math.floor(i / N)]! += mask[i]!;
    }
    for (let b = 0; b < B; b++) cnt[b] = Math.max(cnt[b]!, 1);

    // target: E[w] where t = 0, z0 elsewhere
    const target = s.keep(be.empty([B, N, e], dt));
    be.copy(target, z0);
    for (let b = 0; b < B; b++) if (noise.t[b] === 0) be.stridedCopy(target, emb, { count: 1, length: N * e, srcOffset: b * N * e, srcStride: 0, dstOffset: b * N * e, dstStride: 0 });

    const rowsMse = kept.keep(be.empty([BN], dt));
    be.rowSquaredDistance(rowsMse, target, x0);
    const rowsTT = kept.keep(be.empty([BN], dt));
    be.rowSquaredDistance(rowsTT, z0);
    const abLast = ab[T - 1]!;

    // gradient coefficient of each position's term: w_b / B * mask / cnt_b
    const scale = opts.gradScale ?? 1;
    const g = new Float64Array(BN);
    for (let i = 0; i < BN; i++) {
      const b = Math.floor(i / N);
      g[i] = (scale * noise.weights[b]! * mask[i]!) / B / cnt[b]!;
    }
    const dz0 = opts.backward ? s.keep(be.zeros([B, N, e], dt)) : null;
    const dE = opts.backward ? P.grad('word_embeddings.weight') : null;

    // nll over the tied head, only at the positions the mask counts (the others weigh 0), gathered
    // into consecutive rows and taken in chunks (never [rows, V] at once); forward and backward together
    const rowsUsed: number[] = [];
    for (let i = 0; i < BN; i++) if (mask[i]) rowsUsed.push(i);
    const R = rowsUsed.length;
    const rowIdx = s.keep(be.fromArray(rowsUsed, [R], 'int32'));
    const z0flat = s.keep(be.view(z0, 0, [BN, e]));
    const zr = s.keep(be.empty([Math.max(R, 1), e], dt));
    if (R) be.embedding(be.view(zr, 0, [R, e]), z0flat, rowIdx);
    const idsUsed = s.keep(be.fromArray(rowsUsed.map((i) => batch.inputIds[i]!), [R], 'int32'));
    const dzr = opts.backward && R ? s.keep(be.zeros([R, e], dt)) : null;
    // every row's nll in one buffer (and below, every row's loss weight): one upload, one read-back
    // at the step's end (a read-back per chunk drained the stream about 30 times a base 16 x 2048 step)
    const ce = kept.keep(be.empty([Math.max(R, 1)], dt));
    // the head's chunk buffers (the logits' gradient, bf16 copies) go before the denoiser's
    // backward, which holds the step's peak of memory
    const head = new Scope();
    try {
      const bf = model.denoiser.activations === 'bfloat16';
      const chunk = Math.max(1, Math.min(R, nllChunk(V, bf)));
      // under bf16 the gradient of the logits is written in bf16 straight away (the operand of the
      // head's backward products), never as a float32 chunk
      const dlogits = opts.backward ? head.keep(be.empty([chunk, V], bf ? 'bfloat16' : dt)) : null;
      const wAll = opts.backward && R ? head.keep(be.fromArray(rowsUsed.map((i) => g[i]!), [R], dt)) : null;
      // mixed precision: the tied head's products in bf16 like the denoiser's (float32 accumulation
      // and logits), with E, the rows and each chunk's dlogits rounded once (in float32 they ran on
      // the CUDA cores: about 7 ms of a base 16 x 2048 step)
      const E16 = bf ? head.keep(be.empty([V, e], 'bfloat16')) : null;
      const zr16 = bf ? head.keep(be.empty(zr.shape, 'bfloat16')) : null;
      if (E16 && zr16) {
        be.copy(E16, E);
        be.copy(zr16, zr);
      }
      for (let r0 = 0; r0 < R; r0 += chunk) {
        const n = Math.min(chunk, R - r0);
        const zc = be.view(zr16 ?? zr, r0 * e, [n, e]);
        const idr = be.view(idsUsed, r0, [n]);
        const cer = be.view(ce, r0, [n]);
        const dl = dlogits ? be.view(dlogits, 0, [n, V]) : null;
        const wr = dl && wAll ? be.view(wAll, r0, [n]) : null;
        // the logits zc E^T and their cross-entropy (on sm_90 never written: tiedCrossEntropy)
        be.tiedCrossEntropy(cer, dl, zc, E16 ?? E, idr, wr);
        if (dl && dzr && dE) {
          be.matmul(be.view(dzr, r0 * e, [n, e]), dl, E16 ?? E, { beta: 1 });
          be.matmul(dE, dl, zc, { transA: true, beta: 1 });
        }
        [zc, idr, cer, dl, wr].forEach((t) => t?.dispose());
      }
    } finally {
      head.dispose();
    }
    // scatter the gathered rows' gradient back into dz0
    if (dzr && dz0) be.embeddingBackward(s.keep(be.view(dz0, 0, [BN, e])), rowIdx, dzr);

    const nMoe = cache.moe.length;
    if (opts.backward && dz0 && dE) {
      const gt = s.keep(be.fromArray(g, [BN], dt));
      // mse: d x0 = 2 g / e (x0 - target); d target = -d x0
      const diff = s.keep(be.empty([B, N, e], dt));
      be.axpby(diff, 1, x0, -1, target);
      const c2 = s.keep(be.empty([BN], dt));
      be.axpby(c2, 2 / e, gt);
      const dx0 = s.keep(be.empty([B, N, e], dt));
      be.scaleRows(dx0, diff, c2, false);
      // target gradient: into emb where t = 0, into z0 elsewhere
      const demb = s.keep(be.zeros([B, N, e], dt));
      for (let b = 0; b < B; b++) {
        const dst = noise.t[b] === 0 ? demb : dz0;
        const src = be.view(dx0, b * N * e, [N * e]);
        const dv = be.view(dst, b * N * e, [N * e]);
        be.axpby(dv, 1, dv, -1, src);
        src.dispose();
        dv.dispose();
      }
      // tT: d z0 += 2 ab_{T-1} g / e z0
      const c3 = s.keep(be.empty([BN], dt));
      be.axpby(c3, (2 * abLast) / e, gt);
      be.scaleRows(dz0, z0, c3, true);
      // the denoiser, then x_t's dependence on z0 and m
      const nm = Math.max(nMoe, 1);
      const dxt = s.keep(model.denoiser.backward(cache, dx0, (scale * cfg.ffn.auxWeight) / nm, (scale * cfg.ffn.zWeight) / nm));
      const dm = m ? P.grad('mean_embed') : null;
      be.qSampleBackward(dz0, dm, dxt, sa, imask, rmask);
      // z0 = emb + c eps0: d emb += d z0
      be.axpby(demb, 1, demb, 1, dz0);
      be.embeddingBackward(dE, ids, demb);
      if (m && dm && mSq) be.addNormGradient(dm, m, mSq, scale * M_NORM_WEIGHT);
    }

    // the MoE statistics now (a backward has read them already; the routings go with the cache)
    const moe = cache.moe.map((st) => ({ aux: st.aux, z: st.z, loadShare: st.loadShare }));
    const x0host = opts.returnX0 ? (be.toArray(cache.x0) as Float32Array | Float64Array) : undefined;
    // the per-row terms as this step's work leaves them: the read waits for it alone
    const readRows = be.readLater(mSq ? [rowsMse, rowsTT, ce, mSq] : [rowsMse, rowsTT, ce]);
    let result: LossResult | null = null;
    const read = (): LossResult => {
      if (result) return result;
      try {
        const [msR, ttR, ceh, sq] = readRows();
        const rows = { msR: msR!, ttR: ttR!, ceh: ceh!, mNorm: sq ? Math.sqrt(sq[0]!) : 0 };
        result = lossResult(rows, { B, N, e, R, abLast, mask, cnt, rowsUsed, weights: noise.weights, moe, cfg });
        if (x0host) result.x0 = x0host;
        return result;
      } finally {
        kept.dispose();
      }
    };
    queued = true;
    return { read };
  } finally {
    cache?.dispose();
    weights?.dispose();
    s.dispose();
    if (!queued) kept.dispose();
  }
}
