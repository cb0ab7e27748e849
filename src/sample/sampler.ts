/**
 * Sampling (SPEC section 5): the reverse process from the absorbing state to text.
 *
 * - Source positions hold E[src] and are reset to it after every step; target positions start at
 *   m + sqrt(1 - alphaBar_{T-1}) eps (absorbing) or eps.
 * - `ddim` (default clamped, eta 0) visits tau_i = round((i+1) T / S) - 1 for i = S-1 down to 0,
 *   and updates in the m-shifted frame y = x - m.
 * - `dpm++`: second-order multistep DPM-Solver++ (2M) on the x0 predictions over the same uniform
 *   grid, in the m-shifted frame; first order on the first step, the last step lands on x0.
 * - Output: argmax of the last (unclamped) x0_hat E^T.
 */
import type { Backend, DType, PreparedTable, Replayable, ScoreOptions, Tensor } from '../backend/backend.js';
import { PhiloxStream } from '../backend/philox.js';
import type { DenoiserCache } from '../model/denoiser.js';
import type { Model } from '../model/model.js';
import type { ParamCopy } from '../model/params.js';
import { Scope } from '../model/scope.js';

/** Options of {@link sampleIds}. */
export interface SampleOptions {
  sampler: 'ddim' | 'dpm++';
  /** Denoiser calls S. */
  steps: number;
  /** Replace each predicted x0 by its nearest word embedding before the update (default: on for ddim). */
  clamp?: boolean;
  /** DDIM eta (0 = deterministic; 1 with S = T is ancestral DDPM). */
  eta?: number;
  /** Seed of the starting noise (and of eta's noise). */
  seed: number;
  /** Called after each step with the argmax tokens of that step's x0_hat (for --show-steps). */
  onStep?: (step: number, total: number, tokens: Int32Array) => void;
  /** Called with the denoiser's input x [B, N, e] at every step (for tests and inspection). */
  onState?: (step: number, x: Float32Array | Float64Array) => void;
  /**
   * Record the denoiser call as a device graph after the first step and replay it for the others
   * (backends with Backend.capture; default: MOE_DIFFUSEQ_GRAPHS=1). A {@link SamplingGraphs} keeps
   * the recording for the next calls of the same model and batch shape, which then replay it from
   * their first step. Falls back to plain calls when the recording fails (on a GPU it needs the
   * grouped kernels, so that the routing is never read back: the default for at most 8192 expert
   * rows, or MOE_DIFFUSEQ_GROUPED=mma). Same numbers either way.
   */
  graphs?: boolean | SamplingGraphs;
}

/** One recorded denoiser call of a {@link SamplingGraphs}, with the buffers the recording reads. */
interface GraphEntry {
  /** The denoiser's input [B, N, e] and time embedding [B, e], written before every replay. */
  x: Tensor;
  temb: Tensor;
  /** The weights the recording's products read: its model's copy, shared by the model's shapes. */
  cast: ParamCopy | null;
  /** The recording, once made; null before, or when it failed (`failed`: not tried again). */
  recorded: { cache: DenoiserCache; graph: Replayable } | null;
  failed: boolean;
  /** Its model's part (the kept score operands under fixedWeights). */
  model: ModelGraphs;
}

/** One model's part of a {@link SamplingGraphs}: its bf16 weights and its batch shapes, least recently used first. */
interface ModelGraphs {
  /** The model's activations when they were made (its precision may change between calls). */
  act: DType;
  cast: ParamCopy | null;
  /** The vocabulary table's score operands, kept here under `fixedWeights` (else made per call). */
  prepared: PreparedTable | null;
  shapes: Map<string, GraphEntry>;
}

/** Options of a {@link SamplingGraphs}. */
export interface SamplingGraphsOptions {
  /**
   * The models' weights do not change while it lives (a server, the CLI's sampling, a benchmark):
   * their bfloat16 copy and the vocabulary table's score operands are made in the first call and
   * kept, where by default every call converts the current weights again (0.36 ms of an H200's
   * time for `base`). A model whose parameters change after its first call samples with the old
   * values: dispose it and make a new one. Default false.
   */
  fixedWeights?: boolean;
}

/** Frees an entry's recording and buffers (not the model's weights, which its other shapes share). */
function freeEntry(ent: GraphEntry): void {
  ent.recorded?.graph.dispose();
  ent.recorded?.cache.dispose();
  ent.temb.dispose();
  ent.x.dispose();
}

/**
 * Denoiser calls recorded as device graphs (Backend.capture) and kept from one {@link sampleIds}
 * call to the next: one recording per model and batch shape, made in the first call and replayed at
 * every step of the later ones, where a plain `graphs: true` records again in every call (its first
 * step plain, the recording's host time and the graph's instantiation in each). For a server, the
 * CLI's batches and benchmarks. It holds device memory until {@link SamplingGraphs.dispose}: per
 * model one bfloat16 copy of the weights (converted again at the start of every call, so a model
 * trained in between samples with its current values; once, with `fixedWeights`), and per batch shape the denoiser's input and
 * the recording's buffers, for at most {@link SamplingGraphs.MAX_SHAPES} shapes a model (the least
 * recently used one is freed to make room).
 */
export class SamplingGraphs {
  /** Batch shapes kept per model. */
  static readonly MAX_SHAPES = 4;

  /** A new one, or null when MOE_DIFFUSEQ_GRAPHS=0 asks for plain denoiser calls. */
  static unlessDisabled(opts: SamplingGraphsOptions = {}): SamplingGraphs | null {
    return process.env['MOE_DIFFUSEQ_GRAPHS'] === '0' ? null : new SamplingGraphs(opts);
  }
  private readonly models = new Map<Model, ModelGraphs>();
  /** See {@link SamplingGraphsOptions.fixedWeights}. */
  readonly fixedWeights: boolean;
  constructor(opts: SamplingGraphsOptions = {}) {
    this.fixedWeights = opts.fixedWeights ?? false;
  }

  /** The entry of `model` at batch shape B x N, made (buffers allocated, nothing recorded) on first use. */
  entry(model: Model, B: number, N: number): GraphEntry {
    let mg = this.models.get(model);
    if (mg && mg.act !== model.denoiser.activations) {
      // another precision since: recordings and weights of the old one are of no use
      this.release(model, mg);
      mg = undefined;
    }
    if (!mg) {
      mg = { act: model.denoiser.activations, cast: model.denoiser.castWeights(), prepared: null, shapes: new Map() };
      this.models.set(model, mg);
    } else if (!this.fixedWeights) mg.cast?.refresh();
    const key = `${B}x${N}`;
    const known = mg.shapes.get(key);
    if (known) {
      // most recently used last
      mg.shapes.delete(key);
      mg.shapes.set(key, known);
      return known;
    }
    for (const [k, old] of mg.shapes) {
      if (mg.shapes.size < SamplingGraphs.MAX_SHAPES) break;
      mg.shapes.delete(k);
      freeEntry(old);
    }
    const be = model.backend;
    const x = be.empty([B, N, model.config.embDim], model.dtype);
    let temb: Tensor;
    try {
      temb = be.empty([B, model.config.embDim], model.denoiser.activations);
    } catch (e) {
      x.dispose();
      throw e;
    }
    const ent: GraphEntry = { x, temb, cast: mg.cast, recorded: null, failed: false, model: mg };
    mg.shapes.set(key, ent);
    return ent;
  }

  /** Frees every recording and its buffers (the models stay usable; later calls record again). */
  dispose(): void {
    for (const [model, mg] of [...this.models]) this.release(model, mg);
  }

  private release(model: Model, mg: ModelGraphs): void {
    for (const ent of mg.shapes.values()) freeEntry(ent);
    mg.cast?.dispose();
    mg.prepared?.dispose();
    this.models.delete(model);
  }
}

/**
 * A denoiser call recorded on the device (Backend.capture) with the cache it keeps its buffers in,
 * or null when the recording failed (nothing ran; its cache, if any, is freed).
 */
function record(be: Backend, denoise: () => DenoiserCache): { cache: DenoiserCache; graph: Replayable } | null {
  let cache: DenoiserCache | null = null;
  const graph = be.capture!(() => {
    cache = denoise();
  });
  const made = cache as DenoiserCache | null;
  if (graph && made) return { cache: made, graph };
  made?.dispose();
  return null;
}

/** Python's round (half to even), as DiffuSeq computes the DDIM grid. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** The timesteps a sampler visits, first to last: tau_{S-1} = T-1 down to tau_0. */
export function samplingTimesteps(T: number, S: number): number[] {
  if (!Number.isInteger(S) || S < 1 || S > T) throw new RangeError(`steps must be an integer in [1, ${T}], got ${S}`);
  const taus: number[] = [];
  for (let i = S - 1; i >= 0; i--) taus.push(roundHalfEven(((i + 1) * T) / S) - 1);
  return taus;
}

/**
 * Generates the target positions of a batch. `inputIds` holds the sources (and anything at target
 * positions, which is ignored); `inputMask` is 1 on the positions to generate. Returns the token ids
 * [B * N] (sources copied through).
 */
export function sampleIds(model: Model, inputIds: Int32Array, inputMask: Int32Array, B: number, N: number, opts: SampleOptions): Int32Array {
  const be: Backend = model.backend;
  const cfg = model.config;
  const dt = model.dtype;
  const e = cfg.embDim;
  const T = cfg.diffusionSteps;
  const ab = model.alphaBar;
  const clamp = opts.clamp ?? opts.sampler === 'ddim';
  const eta = opts.eta ?? 0;
  const taus = samplingTimesteps(T, opts.steps);
  const rng = new PhiloxStream(opts.seed);
  const s = new Scope();
  try {
    const E = model.params.get('word_embeddings.weight');
    const m = cfg.absorbing ? model.params.get('mean_embed') : null;
    const ids = s.keep(be.fromArray(inputIds, [B * N], 'int32'));
    const src = s.keep(be.empty([B, N, e], dt));
    be.embedding(src, E, ids);
    // mask as a per-row 0/1 scale, to mix "x on targets, E[src] on sources" with scaleRows
    const tgtRows = s.keep(be.fromArray(Array.from(inputMask, (v) => (v ? 1 : 0)), [B * N], dt));
    const srcRows = s.keep(be.fromArray(Array.from(inputMask, (v) => (v ? 0 : 1)), [B * N], dt));
    const mrep = m ? s.keep(be.empty([B * N, e], dt)) : null;
    if (m && mrep) be.stridedCopy(mrep, m, { count: B * N, length: e, srcOffset: 0, srcStride: 0, dstOffset: 0, dstStride: e });
    // y = x - m on target rows (the m-shifted frame); sources are kept apart and added back
    const y = s.keep(be.empty([B, N, e], dt));
    be.randomNormal(y, opts.seed, rng.take(B * N * e), Math.sqrt(1 - ab[T - 1]!));
    // graphs: the time embedding goes into one device tensor before each call; the first call runs
    // plainly (kernels compiled, the allocator's blocks in place), the second is recorded, and the
    // recording (whose cache holds its buffers) is replayed from then on; a SamplingGraphs keeps the
    // recording and its buffers for the next call, which replays it from its first step
    const kept = opts.graphs instanceof SamplingGraphs ? opts.graphs : null;
    let useGraph = (opts.graphs === undefined ? process.env['MOE_DIFFUSEQ_GRAPHS'] === '1' : opts.graphs !== false) && typeof be.capture === 'function';
    const ent = useGraph && kept ? kept.entry(model, B, N) : null;
    if (ent?.failed) useGraph = false;
    const x = ent ? ent.x : s.keep(be.empty([B, N, e], dt));
    const x0c = s.keep(be.empty([B * N, e], dt));
    const nearest = s.keep(be.empty([B * N], 'int32'));
    const out = s.keep(be.empty([B * N], 'int32'));
    const y0 = s.keep(be.empty([B * N, e], dt));
    const prevY0 = opts.sampler === 'dpm++' ? s.keep(be.empty([B * N, e], dt)) : null;
    const noise = eta > 0 ? s.keep(be.empty([B * N, e], dt)) : null;
    /** x = (y + m) on targets, E[src] on sources. */
    const assemble = () => {
      if (mrep) be.axpby(x, 1, y, 1, mrep);
      else be.copy(x, y);
      be.scaleRows(x, x, tgtRows, false);
      be.scaleRows(x, src, srcRows, true);
    };
    const temb = ent ? ent.temb : useGraph ? s.keep(be.empty([B, e], model.denoiser.activations)) : null;
    // bf16 activations: the weights rounded once for every call, not once per product per call
    const cast = ent ? ent.cast : model.denoiser.castWeights();
    if (cast && !ent) s.keep(cast);
    // x0 from bf16 activations is of bf16 accuracy: its scores against the vocabulary need no
    // more than the split bf16 products (the float32 ones were 12% of batch-1 sampling on a GPU)
    const precision = model.denoiser.activations === 'bfloat16' ? 'bf16x3' : 'float32';
    // the table's split parts and half norms made once for the run's scorings (GPU backends), or
    // once for every run of a kept entry whose weights are fixed
    const keepPrepared = ent !== null && kept?.fixedWeights === true;
    let prepared = keepPrepared ? ent.model.prepared : null;
    if (!prepared) {
      prepared = be.prepareScores?.(E, { precision }) ?? null;
      if (prepared && keepPrepared) ent.model.prepared = prepared;
      else if (prepared) s.keep(prepared);
    }
    const scoring: ScoreOptions = { precision, prepared };
    let recorded: { cache: DenoiserCache; graph: Replayable } | null = ent?.recorded ?? null;
    let hPrev = 0;
    try {
      for (let k = 0; k < taus.length; k++) {
        const t = taus[k]!;
        const last = k === taus.length - 1;
        const abT = ab[t]!;
        const abPrev = last ? 1 : ab[taus[k + 1]!]!;
        assemble();
        opts.onState?.(k, be.toArray(x) as Float32Array | Float64Array);
        const ts = new Array<number>(B).fill(t);
        if (temb) be.write(temb, model.denoiser.timestepInput(ts));
        const denoise = () => model.denoiser.forward(x, ts, { train: false, inference: true, ...(temb ? { timeEmbedding: temb } : {}), ...(cast ? { weights: cast } : {}) });
        if (useGraph && !recorded && k > 0) {
          recorded = record(be, denoise);
          useGraph = recorded !== null;
          if (ent) {
            ent.recorded = recorded;
            ent.failed = !recorded;
          }
        }
        // this step's x0: the recording replayed into its cache, or a plain call
        if (recorded) recorded.graph.replay();
        const cache = recorded ? null : denoise();
        const x0hat = s.keep(be.empty([B * N, e], dt));
        try {
          be.copy(x0hat, (recorded?.cache ?? cache!).x0);
        } finally {
          cache?.dispose();
        }
        if (opts.onStep || last) {
          be.argmaxDot(out, x0hat, E, scoring);
          if (opts.onStep) opts.onStep(k + 1, taus.length, be.toArray(out) as Int32Array);
        }
        if (last) break;
        // predicted x0 (clamped to the nearest embedding), shifted: y0 = x0 - m
        if (clamp) {
          be.nearestRows(nearest, x0hat, E, scoring);
          be.embedding(x0c, E, nearest);
        } else be.copy(x0c, x0hat);
        if (mrep) be.axpby(y0, 1, x0c, -1, mrep);
        else be.copy(y0, x0c);
        x0hat.dispose();
        if (opts.sampler === 'ddim') {
          // eps_hat = (y - sqrt(ab_t) y0) / sqrt(1 - ab_t);
          // y' = sqrt(ab_prev) y0 + sqrt(1 - ab_prev - s^2) eps_hat + s noise
          const sig = eta * Math.sqrt((1 - abPrev) / (1 - abT)) * Math.sqrt(1 - abT / abPrev);
          const c = Math.sqrt(Math.max(0, 1 - abPrev - sig * sig)) / Math.sqrt(1 - abT);
          // y' = c y + (sqrt(ab_prev) - c sqrt(ab_t)) y0 (+ sig noise)
          be.axpby(y, c, y, Math.sqrt(abPrev) - c * Math.sqrt(abT), y0);
          if (noise && sig > 0) {
            be.randomNormal(noise, opts.seed, rng.take(B * N * e), sig);
            be.axpby(y, 1, y, 1, noise);
          }
        } else {
          // DPM-Solver++(2M) with alpha = sqrt(ab), sigma = sqrt(1 - ab), lambda = log(alpha / sigma):
          // y_t = (sigma_t / sigma_s) y_s - alpha_t (e^{-h} - 1) D, D = y0 (first step) or
          // (1 + 1/(2r)) y0 - 1/(2r) y0_prev with r = h_prev / h.
          const lamS = Math.log(Math.sqrt(abT) / Math.sqrt(1 - abT));
          const lamT = Math.log(Math.sqrt(abPrev) / Math.sqrt(1 - abPrev));
          const h = lamT - lamS;
          const a = Math.sqrt(1 - abPrev) / Math.sqrt(1 - abT);
          const b = -Math.sqrt(abPrev) * Math.expm1(-h);
          if (k === 0 || !prevY0) be.axpby(y, a, y, b, y0);
          else {
            const r = hPrev / h;
            be.axpby(y, a, y, b * (1 + 1 / (2 * r)), y0);
            be.axpby(y, 1, y, -b / (2 * r), prevY0);
          }
          if (prevY0) be.copy(prevY0, y0);
          hPrev = h;
        }
      }
    } finally {
      // a kept recording stays with its SamplingGraphs
      if (!ent) {
        recorded?.graph.dispose();
        recorded?.cache.dispose();
      }
    }
    const tokens = be.toArray(out) as Int32Array;
    // sources are given, not generated
    for (let i = 0; i < B * N; i++) if (!inputMask[i]) tokens[i] = inputIds[i]!;
    return tokens;
  } finally {
    s.dispose();
  }
}

/**
 * The text of a generated row: what lies between the [SEP] after the source and the next
 * [SEP] or [PAD] (SPEC section 5), as token ids.
 */
export function extractTarget(tokens: ArrayLike<number>, srcEnd: number, N: number, sep: number, pad: number): number[] {
  const out: number[] = [];
  for (let n = srcEnd; n < N; n++) {
    const t = tokens[n]!;
    if (t === sep || t === pad) break;
    out.push(t);
  }
  return out;
}
