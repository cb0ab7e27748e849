/**
 * The denoiser f(x_t, t) -> predicted x0 of SPEC section 2, forward and backward, written once
 * against the Backend interface. The forward is a flat list of backend calls per block; the backward
 * is that list reversed (llm.c style), accumulating parameter gradients into the ParamStore.
 *
 *   h = LN(Linear(d,d)(tanh(Linear(e,d)(x_t))) + P[pos] + time(t)), dropout
 *   h = [globals; h]                                   (G learned rows, no position or time)
 *   L x { h = LN(h + drop(Attn(h)));  h = LN(h + drop(FFN(h))) }        (post-LN, BERT order)
 *   x0_hat = Linear(d,e)(tanh(Linear(d,d)(h[G:])))
 */
import type { AttentionSpec, Backend, DType, FloatDType, MoeRouting, Tensor } from '../backend/backend.js';
import { DTypeError } from '../errors.js';
import { timestepEmbedding } from '../diffusion/schedule.js';
import { expertHidden, type ModelConfig } from './config.js';
import { LayerwiseCopy, type ParamCopy, type ParamOperands, type ParamStore } from './params.js';
import { Scope } from './scope.js';

/** LayerNorm epsilon of every norm (SPEC 2.3). */
export const LN_EPS = 1e-12;

/** Dropout randomness of one forward: site s uses Philox counters from offset + s * stride. */
export interface DropoutRng {
  seed: number;
  offset: number;
}

/** Options of {@link Denoiser.forward}. */
export interface ForwardOptions {
  /** Training mode: dropout on (when the config's dropout > 0 and rng is given). */
  train: boolean;
  rng?: DropoutRng;
  /**
   * Activation recomputation: keep only each block's input for the backward, which runs the block's
   * forward again (same numbers: the kernels are deterministic and dropout is counter-based). Less
   * memory for very long sequences, about a third more compute.
   */
  recompute?: boolean;
  /**
   * No backward follows (sampling): the forward leaves out what only the backward reads (the
   * experts' pre-activations are not written). {@link Denoiser.backward} refuses such a cache.
   */
  inference?: boolean;
  /**
   * Keep the experts' GELU output from the forward for the backward (fc2's weight gradient) instead
   * of recomputing it there: [rows, f] more memory a layer until its backward, one GELU pass less.
   * diffusionLoss asks for it in a training step without `recompute`: base at 16 x 2048 on an H200,
   * 2.5% more tokens/s for 0.14 GiB more at one 2k sequence (2.25 GiB at 32k), still under the
   * PyTorch peer's peak at every length (bench/NOTES.md, v17).
   */
  keepExpertActivations?: boolean;
  /**
   * The sinusoidal embedding of t [B, e], already on the device in the activations' dtype (from
   * {@link Denoiser.timestepInput}); t is then not read. Lets a forward be recorded as a graph and
   * replayed with another t written into the same tensor.
   */
  timeEmbedding?: Tensor;
  /**
   * The parameters converted for the matrix products (from {@link Denoiser.castWeights} or
   * {@link Denoiser.layerwiseWeights}): bfloat16 with bfloat16 activations (the products round
   * their float32 weights to bfloat16 anyway: the same numbers without a rounding per product),
   * else the parameters' own dtype (the same numbers). For many forwards of unchanged parameters
   * (sampling: a whole copy) or a forward and its backward (a training step: a layerwise copy, each
   * layer released after its forward and after its backward; the backward's products take them
   * from the cache). The caller disposes them after the backward.
   */
  weights?: ParamOperands;
}

/** Per-MoE-layer routing statistics of a forward. */
export interface MoeStats {
  aux: number;
  z: number;
  /** Share of the assignments routed to each expert (before capacity drops). */
  loadShare: readonly number[];
}

/** What the backward has of a block: its input and dropout sites, and its tensors unless recomputed. */
interface LayerRecord {
  x: Tensor; // block input [B, S, d]
  dropAttn: number; // dropout counter offsets (-1: no dropout)
  dropFfn: number;
  /** The block's tensors, or null when the backward recomputes them (ForwardOptions.recompute). */
  cache: LayerCache | null;
}

interface LayerCache {
  /** Owns the layer's tensors (x is the previous layer's): the backward frees it when done with the layer. */
  scope: Scope;
  x: Tensor; // block input [B, S, d]
  qkv: Tensor;
  att: Tensor;
  lse: Tensor;
  r1: Tensor;
  mean1: Tensor;
  rstd1: Tensor;
  h1: Tensor;
  ffn: FfnCache;
  r2: Tensor;
  mean2: Tensor;
  rstd2: Tensor;
  h2: Tensor;
  dropAttn: number; // dropout counter offsets (-1: no dropout)
  dropFfn: number;
}

type FfnCache =
  | { kind: 'dense'; pre: Tensor }
  | { kind: 'moe'; routing: MoeRouting; pre: Tensor | null; act: Tensor | null; ys: Tensor; shared: { pre: Tensor; act: Tensor }[] };

/** Everything the backward needs from a forward. Dispose it after the backward. */
export interface DenoiserCache {
  readonly B: number;
  readonly N: number;
  readonly t: readonly number[];
  readonly x0: Tensor;
  readonly moe: MoeStats[];
  /** @internal */
  readonly inner: {
    xt: Tensor;
    temb0: Tensor;
    th1: Tensor;
    ta1: Tensor;
    temb: Tensor;
    u1: Tensor;
    u2: Tensor;
    hs: Tensor;
    mean0: Tensor;
    rstd0: Tensor;
    dropIn: number;
    layers: LayerRecord[];
    hout: Tensor;
    y1: Tensor;
    y2: Tensor;
    rngSeed: number;
    /** ForwardOptions.weights, for the backward's products. */
    weights: ParamOperands | null;
  };
  dispose(): void;
}

/**
 * The denoiser over a ParamStore. Stateless apart from the parameters and the activation dtype.
 *
 * Precision: parameters, their gradients, the normalisation statistics and the boundary tensors
 * (x_t in, x0_hat out, dL/dx_t) have the parameters' dtype. The activations in between have
 * `activations`: the same dtype (the default), or bfloat16 on a backend that holds it (mixed
 * precision: the matrix products then run in bfloat16 with float32 accumulation).
 */
export class Denoiser {
  private readonly be: Backend;
  private readonly dtype: FloatDType;
  private act: DType;
  /** ForwardOptions.weights during a forward (the helpers read their weights through w), else null. */
  private operands: ParamOperands | null = null;

  constructor(
    readonly cfg: ModelConfig,
    readonly params: ParamStore,
  ) {
    this.be = params.backend;
    this.dtype = params.dtype;
    this.act = params.dtype;
  }

  /** The dtype of the activations (see the class comment). */
  get activations(): DType {
    return this.act;
  }
  set activations(d: DType) {
    if (d !== this.dtype && d !== 'bfloat16') throw new DTypeError('denoiser', `activations must be ${this.dtype} or bfloat16, got ${d}`);
    if (d === 'bfloat16' && (this.dtype !== 'float32' || !this.be.supports('bfloat16'))) {
      throw new DTypeError('denoiser', `bfloat16 activations need float32 parameters on a backend that holds bfloat16 (${this.be.name} with ${this.dtype} parameters does not)`);
    }
    this.act = d;
  }

  private p(name: string): Tensor {
    return this.params.get(name);
  }
  /** A weight as a matrix product's operand: from the forward's ForwardOptions.weights when given. */
  private w(name: string): Tensor {
    return this.operands ? this.operands.get(name) : this.params.get(name);
  }
  /** Consecutive weights as one operand (see w). */
  private wSpan(first: string, shape: readonly number[]): Tensor {
    return this.operands ? this.operands.span(first, shape) : this.params.span(first, shape);
  }
  /**
   * A Linear's bias for an output of `dtype` (consecutive biases from `first` as one [n] tensor):
   * from bfloat16 operands (ForwardOptions.weights) into a bfloat16 output, where the backend can add
   * it in the product's epilogue (cuBLASLt's takes a bias of the output's type; PyTorch's autocast
   * rounds a Linear's bias to bf16 as well); else the float32 parameter.
   */
  private bias(first: string, n: number, dtype: DType): Tensor {
    if (dtype === 'bfloat16' && this.operands?.dtype === 'bfloat16') return this.operands.span(first, [n]);
    return this.params.span(first, [n]);
  }

  /**
   * The parameters rounded to bfloat16 once, for ForwardOptions.weights (the sampler's forwards);
   * null unless the activations are bfloat16. A snapshot (stale once the parameters change) of the
   * parameters' size in bf16; dispose it after use.
   */
  castWeights(): ParamCopy | null {
    return this.act === 'bfloat16' ? this.params.copyAs('bfloat16') : null;
  }

  /**
   * The parameters rounded to bfloat16 layer by layer, for the ForwardOptions.weights of a forward
   * and its backward (a training step): one conversion per layer each way, one layer's copy alive
   * at a time (a whole castWeights() copy held through the step raised base's 2k-token peak by
   * 0.5 GB); null unless the activations are bfloat16. Dispose it after the backward.
   */
  layerwiseWeights(): LayerwiseCopy | null {
    return this.act === 'bfloat16' ? new LayerwiseCopy(this.params, 'bfloat16') : null;
  }

  /** y [rows, out] = x [rows, in] W^T + b with W [out, in] (a PyTorch Linear); y of `dtype` (default: the activations'). */
  private linear(s: Scope, x: Tensor, prefix: string, rows: number, out: number, dtype: DType = this.act): Tensor {
    const y = s.keep(this.be.empty([rows, out], dtype));
    this.be.matmul(y, x, this.w(`${prefix}.weight`), { transB: true, bias: this.bias(`${prefix}.bias`, out, dtype) });
    return y;
  }

  /**
   * Backward of a Linear: dW += dy^T x, db += colsum(dy); returns dx = dy W (or accumulates into
   * `dxInto`; with `needDx` false, nothing).
   */
  private linearBackward(s: Scope, dy: Tensor, x: Tensor, w: Tensor, gw: Tensor, gb: Tensor | null, rows: number, inF: number, outF: number, needDx: boolean, dxInto?: Tensor): Tensor | null {
    const be = this.be;
    const dy2 = s.keep(be.view(dy, 0, [rows, outF]));
    const x2 = s.keep(be.view(x, 0, [rows, inF]));
    be.matmul(gw, dy2, x2, { transA: true, beta: 1 });
    if (gb) be.biasBackward(gb, dy2, true);
    if (!needDx) return null;
    if (dxInto) {
      be.matmul(dxInto, dy2, w, { beta: 1 });
      return dxInto;
    }
    const dx = s.keep(be.empty([rows, inF], this.act));
    be.matmul(dx, dy2, w);
    return dx;
  }

  /** Whether a forward with these options applies dropout (training, p > 0, a random stream). */
  private dropoutOn(opts: ForwardOptions): boolean {
    return opts.train && this.cfg.dropout > 0 && opts.rng !== undefined;
  }
  /** Dropout in place of a fresh tensor; returns the counter offset used, or -1 when off. */
  private dropout(x: Tensor, opts: ForwardOptions, site: () => number): number {
    if (!this.dropoutOn(opts) || !opts.rng) return -1;
    const off = site();
    this.be.dropout(x, x, this.cfg.dropout, opts.rng.seed, off);
    return off;
  }

  /** The attention pattern of every block (SPEC section 2). */
  private attentionSpec(): AttentionSpec {
    const c = this.cfg;
    return { kind: c.attention.kind, heads: c.heads, window: c.attention.window, dilation: c.attention.dilation, globalTokens: c.globalTokens };
  }

  /** The sinusoidal embeddings of the timesteps t, [t.length, e] row-major (the time MLP's input). */
  timestepInput(t: readonly number[]): Float64Array {
    const e = this.cfg.embDim;
    const host = new Float64Array(t.length * e);
    for (let b = 0; b < t.length; b++) timestepEmbedding(t[b]!, e, this.cfg.diffusionSteps, host, b * e);
    return host;
  }

  /** Runs f(x_t, t). x_t is [B, N, e]; t holds B integer timesteps. */
  forward(xt: Tensor, t: readonly number[], opts: ForwardOptions = { train: false }): DenoiserCache {
    // bf16 operands with bf16 activations, else the parameters' own dtype (a copy: the same numbers)
    const want = this.act === 'bfloat16' ? 'bfloat16' : this.dtype;
    if (opts.weights && (opts.weights.source !== this.params || opts.weights.dtype !== want)) {
      throw new DTypeError('denoiser', `ForwardOptions.weights must be converted from this denoiser's parameters to ${want}`);
    }
    this.operands = opts.weights ?? null;
    // the cache's tensors; freed here if the forward throws (a graph recording that fails midway
    // on a read-back left 26 tensors of a tiny model live per failed recording)
    const s = new Scope();
    try {
      return this.forwardPass(s, xt, t, opts);
    } catch (e) {
      s.dispose();
      throw e;
    } finally {
      this.operands = null;
    }
  }

  private forwardPass(s: Scope, xt: Tensor, t: readonly number[], opts: ForwardOptions): DenoiserCache {
    const be = this.be;
    const c = this.cfg;
    const dt = this.dtype;
    const ac = this.act;
    const { embDim: e, hidden: d, globalTokens: G } = c;
    if (xt.shape.length !== 3 || xt.shape[2] !== e) throw new Error(`denoiser: x_t must be [B, N, ${e}], got [${xt.shape.join(', ')}]`);
    const [B, N] = xt.shape as [number, number];
    if (t.length !== B) throw new Error(`denoiser: ${t.length} timesteps for a batch of ${B}`);
    if (N > c.maxLen) throw new Error(`denoiser: sequence of ${N} positions is longer than maxLen ${c.maxLen}`);
    const S = G + N;
    // dropout sites take consecutive counter ranges of B*S*d (every site's tensor fits in that)
    let site = opts.rng?.offset ?? 0;
    const stride = Math.ceil((B * S * d) / 4) * 4;
    const nextSite = () => {
      const o = site;
      site += stride;
      return o;
    };

    // time embedding: sinusoidal -> Linear(e, 4e) -> SiLU -> Linear(4e, d)
    if (opts.timeEmbedding && (opts.timeEmbedding.size !== B * e || opts.timeEmbedding.dtype !== ac)) {
      throw new Error(`denoiser: timeEmbedding must be [${B}, ${e}] ${ac}, got [${opts.timeEmbedding.shape.join(', ')}] ${opts.timeEmbedding.dtype}`);
    }
    const temb0 = opts.timeEmbedding ?? s.keep(be.fromArray(this.timestepInput(t), [B, e], ac));
    const th1 = this.linear(s, temb0, 'time_embed.0', B, 4 * e);
    const ta1 = s.keep(be.empty([B, 4 * e], ac));
    be.activation(ta1, th1, 'silu');
    const temb = this.linear(s, ta1, 'time_embed.2', B, d);

    // input: Linear(d,d)(tanh(Linear(e,d)(x_t))) + P[pos] + time, LayerNorm, dropout
    const xt2 = s.keep(be.view(xt, 0, [B * N, e]));
    const u1 = this.linear(s, xt2, 'input_up_proj.0', B * N, d);
    const u2 = s.keep(be.empty([B * N, d], ac));
    be.activation(u2, u1, 'tanh');
    const hs = this.linear(s, u2, 'input_up_proj.2', B * N, d);
    const pos = s.keep(be.view(this.p('position_embeddings.weight'), 0, [N, d]));
    be.addBroadcast(hs, hs, pos, [B, N, d], [1, N, d]);
    be.addBroadcast(hs, hs, temb, [B, N, d], [B, 1, d]);
    // global tokens in front: h = [globals, LayerNorm rows] per sequence; one sequence's rows are
    // one span of h, which the LayerNorm writes itself (no copy: batch-1 sampling's latency)
    let h: Tensor = s.keep(be.empty([B, S, d], ac));
    if (G > 0) be.stridedCopy(h, this.p('global_tokens'), { count: B, length: G * d, srcOffset: 0, srcStride: 0, dstOffset: 0, dstStride: S * d });
    const hln = B === 1 || G === 0 ? s.keep(be.view(h, G * d, [B * N, d])) : s.keep(be.empty([B * N, d], ac));
    const mean0 = s.keep(be.empty([B * N], dt));
    const rstd0 = s.keep(be.empty([B * N], dt));
    be.layerNorm(hln, mean0, rstd0, hs, this.p('input_norm.weight'), this.p('input_norm.bias'), LN_EPS);
    const dropIn = this.dropout(hln, opts, nextSite);
    if (B > 1 && G > 0) be.stridedCopy(h, hln, { count: B, length: N * d, srcOffset: 0, srcStride: N * d, dstOffset: G * d, dstStride: S * d });

    const layers: LayerRecord[] = [];
    const moe: MoeStats[] = [];
    for (let i = 0; i < c.layers; i++) {
      const ls = s.keep(new Scope()); // this layer's tensors (the backward frees them layer by layer)
      const L = this.layerForward(ls, opts.recompute ? s : ls, h, i, B, S, opts, nextSite);
      const stats = L.ffn.kind === 'moe' ? L.ffn.routing : null;
      if (opts.recompute) {
        // keep the input and the statistics (read now: the routing goes with the layer's tensors)
        if (stats) moe.push({ aux: stats.aux, z: stats.z, loadShare: stats.loadShare });
        ls.dispose();
        layers.push({ x: h, dropAttn: L.dropAttn, dropFfn: L.dropFfn, cache: null });
      } else {
        // the routing itself: its statistics may be read back from the device only when asked for
        if (stats) moe.push(stats);
        layers.push({ x: h, dropAttn: L.dropAttn, dropFfn: L.dropFfn, cache: L });
      }
      h = L.h2;
      this.operands?.release(i); // a layerwise copy converts the layer again for its backward
    }

    // output: drop the globals, Linear(d,e)(tanh(Linear(d,d)(h)))
    let hout: Tensor;
    if (B > 1 && G > 0) {
      hout = s.keep(be.empty([B * N, d], ac));
      be.stridedCopy(hout, h, { count: B, length: N * d, srcOffset: G * d, srcStride: S * d, dstOffset: 0, dstStride: N * d });
    } else hout = s.keep(be.view(h, G * d, [B * N, d]));
    const y1 = this.linear(s, hout, 'output_down_proj.0', B * N, d);
    const y2 = s.keep(be.empty([B * N, d], ac));
    be.activation(y2, y1, 'tanh');
    const x0flat = this.linear(s, y2, 'output_down_proj.2', B * N, e, dt);
    const x0 = s.keep(be.view(x0flat, 0, [B, N, e]));
    return {
      B, N, t: [...t], x0, moe,
      inner: { xt, temb0, th1, ta1, temb, u1, u2, hs, mean0, rstd0, dropIn, layers, hout, y1, y2, rngSeed: opts.rng?.seed ?? 0, weights: opts.weights ?? null },
      dispose: () => s.dispose(),
    };
  }

  private ffnForward(s: Scope, h1: Tensor, M: number, p: string, S: number, inference = false, keepAct = false): { out: Tensor; cache: FfnCache } {
    const be = this.be;
    const c = this.cfg;
    const dt = this.dtype;
    const ac = this.act;
    const d = c.hidden;
    if (c.ffn.kind === 'dense') {
      // the activation is not kept: the backward recomputes gelu(pre)
      const pre = s.keep(be.empty([M, 4 * d], ac));
      const act = be.empty([M, 4 * d], ac);
      try {
        be.matmul(act, h1, this.w(`${p}.ffn.fc1.weight`), { transB: true, bias: this.p(`${p}.ffn.fc1.bias`), gelu: { pre } });
        const out = this.linear(s, act, `${p}.ffn.fc2`, M, d);
        return { out, cache: { kind: 'dense', pre } };
      } finally {
        act.dispose();
      }
    }
    const E = c.ffn.experts;
    const f = expertHidden(c);
    const logits = s.keep(be.empty([M, E], dt));
    be.matmul(logits, h1, this.w(`${p}.ffn.router.weight`), { transB: true });
    const routing = be.moeRoute(logits, {
      topK: c.ffn.topK,
      seqLen: S,
      ...(c.ffn.capacityFactor !== null ? { capacityFactor: c.ffn.capacityFactor } : {}),
      ...(c.ffn.balance === 'bias' ? { selectionBias: this.p(`${p}.ffn.expert_bias`) } : {}),
    });
    s.keep(routing);
    const A = routing.order.size;
    // the permuted input and the activation are not kept: the backward recomputes them (a gather and
    // a GELU) instead of holding [A, d] + [A, f] per layer from the forward to the backward. fc1 takes
    // h1's rows in the routing's order (`gather`: the backend permutes them into a temporary), and
    // an inference forward keeps no pre-activation at all
    const pre = inference ? null : s.keep(be.empty([A, f], ac));
    const ys = s.keep(be.empty([A, d], ac));
    const tmp = new Scope();
    let kept: Tensor | null = null;
    try {
      const act = (keepAct ? s : tmp).keep(be.empty([A, f], ac));
      be.groupedMatmul(act, h1, this.w(`${p}.ffn.experts.fc1.weight`), this.p(`${p}.ffn.experts.fc1.bias`), routing, { gelu: { pre }, gather: true });
      be.groupedMatmul(ys, act, this.w(`${p}.ffn.experts.fc2.weight`), this.p(`${p}.ffn.experts.fc2.bias`), routing);
      if (keepAct) kept = act;
    } finally {
      tmp.dispose();
    }
    const out = s.keep(be.empty([M, d], ac));
    be.moeCombine(out, ys, routing, false);
    const shared: { pre: Tensor; act: Tensor }[] = [];
    for (let j = 0; j < c.ffn.sharedExperts; j++) {
      const w1 = s.keep(be.view(this.w(`${p}.ffn.shared.fc1.weight`), j * f * d, [f, d]));
      const b1 = s.keep(be.view(this.p(`${p}.ffn.shared.fc1.bias`), j * f, [f]));
      const w2 = s.keep(be.view(this.w(`${p}.ffn.shared.fc2.weight`), j * d * f, [d, f]));
      const b2 = s.keep(be.view(this.p(`${p}.ffn.shared.fc2.bias`), j * d, [d]));
      const spre = s.keep(be.empty([M, f], ac));
      const sact = s.keep(be.empty([M, f], ac));
      be.matmul(sact, h1, w1, { transB: true, bias: b1, gelu: { pre: spre } });
      // shared experts are added unweighted: out += act W2^T + b2
      const so = s.keep(be.empty([M, d], ac));
      be.matmul(so, sact, w2, { transB: true, bias: b2 });
      be.axpby(out, 1, out, 1, so);
      shared.push({ pre: spre, act: sact });
    }
    return { out, cache: { kind: 'moe', routing, pre, act: kept, ys, shared } };
  }

  /**
   * One block on x [B, S, d]: attention, residual, LayerNorm, feed-forward, residual, LayerNorm. Its
   * tensors go into `ls`, its output h2 into `out` (the same scope, or the forward's when the block
   * is recomputed later); dropout sites come from `site` in order (attention, then feed-forward).
   */
  private layerForward(ls: Scope, out: Scope, x: Tensor, i: number, B: number, S: number, opts: ForwardOptions, site: () => number): LayerCache {
    const be = this.be;
    const c = this.cfg;
    const dt = this.dtype;
    const ac = this.act;
    const d = c.hidden;
    const p = `layers.${i}`;
    const M = B * S;
    const spec = this.attentionSpec();
    // attention
    const qkv = ls.keep(be.empty([B, S, 3 * d], ac));
    be.matmul(qkv, x, this.wSpan(`${p}.attn.q.weight`, [3 * d, d]), { transB: true, bias: this.bias(`${p}.attn.q.bias`, 3 * d, ac) });
    const att = ls.keep(be.empty([B, S, d], ac));
    const lse = ls.keep(be.empty([B, c.heads, S], dt));
    be.attention(att, lse, qkv, spec);
    // the output projection's bias goes into the residual add when no dropout comes between them
    // (the same numbers: addLayerNorm rounds b + bias as the product's epilogue does)
    const foldBias = !this.dropoutOn(opts);
    const ao = foldBias ? ls.keep(be.empty([M, d], ac)) : this.linear(ls, att, `${p}.attn.o`, M, d);
    if (foldBias) be.matmul(ao, att, this.w(`${p}.attn.o.weight`), { transB: true });
    const dropAttn = this.dropout(ao, opts, site);
    const r1 = ao; // residual in place: r1 = x + drop(ao)
    const h1 = ls.keep(be.empty([B, S, d], ac));
    const mean1 = ls.keep(be.empty([M], dt));
    const rstd1 = ls.keep(be.empty([M], dt));
    be.addLayerNorm(r1, h1, mean1, rstd1, x, ao, this.p(`${p}.attn_norm.weight`), this.p(`${p}.attn_norm.bias`), LN_EPS, foldBias ? this.p(`${p}.attn.o.bias`) : null);
    // feed-forward
    const { out: fo, cache: ffn } = this.ffnForward(ls, h1, M, p, S, !!opts.inference, !!opts.keepExpertActivations && !opts.inference);
    const dropFfn = this.dropout(fo, opts, site);
    const r2 = fo; // r2 = h1 + drop(fo)
    const h2 = out.keep(be.empty([B, S, d], ac));
    const mean2 = ls.keep(be.empty([M], dt));
    const rstd2 = ls.keep(be.empty([M], dt));
    be.addLayerNorm(r2, h2, mean2, rstd2, h1, fo, this.p(`${p}.ffn_norm.weight`), this.p(`${p}.ffn_norm.bias`), LN_EPS);
    return { scope: ls, x, qkv, att, lse, r1, mean1, rstd1, h1, ffn, r2, mean2, rstd2, h2, dropAttn, dropFfn };
  }

  /** A recomputed block's tensors, in `ls`: its forward again, with the dropout sites it used. */
  private recomputeLayer(ls: Scope, rec: LayerRecord, i: number, B: number, S: number, seed: number): LayerCache {
    const sites = [rec.dropAttn, rec.dropFfn];
    // dropout was on for both sites or for neither
    const opts: ForwardOptions = rec.dropAttn >= 0 ? { train: true, rng: { seed, offset: 0 } } : { train: false };
    return this.layerForward(ls, ls, rec.x, i, B, S, opts, () => sites.shift()!);
  }

  /**
   * Backward: given dL/dx0 [B, N, e] and the weights of the MoE terms in the loss (dL/daux and dL/dz
   * per MoE layer), accumulates parameter gradients and returns dL/dx_t [B, N, e] (caller disposes).
   * It frees each layer's part of the cache once done with it: a cache serves one backward.
   */
  backward(cache: DenoiserCache, dx0: Tensor, dAux: number, dZ: number): Tensor {
    // an inference forward's cache (no experts' pre-activations) is refused before any gradient is
    // accumulated (ffnBackward's own check would come after the head's and the top layers' grads)
    for (const rec of cache.inner.layers) {
      if (rec.cache?.ffn.kind === 'moe' && !rec.cache.ffn.pre) throw new Error('backward of an inference forward (ForwardOptions.inference): it kept no pre-activations');
    }
    // the forward's bf16 weights (ForwardOptions.weights) as the products' operands here too
    this.operands = cache.inner.weights;
    try {
      return this.backwardPass(cache, dx0, dAux, dZ);
    } finally {
      this.operands = null;
    }
  }
  private backwardPass(cache: DenoiserCache, dx0: Tensor, dAux: number, dZ: number): Tensor {
    const be = this.be;
    const c = this.cfg;
    const dt = this.dtype;
    const ac = this.act;
    const P = this.params;
    const { embDim: e, hidden: d, globalTokens: G } = c;
    const { B, N } = cache;
    const S = G + N;
    const M = B * S;
    const I = cache.inner;
    const s = new Scope();
    try {
      // output head
      const dy2 = this.linearBackward(s, dx0, I.y2, this.w('output_down_proj.2.weight'), P.grad('output_down_proj.2.weight'), P.grad('output_down_proj.2.bias'), B * N, d, e, true)!;
      const dy1 = s.keep(be.empty([B * N, d], ac));
      be.activationBackward(dy1, dy2, I.y1, 'tanh', false);
      const dhout = this.linearBackward(s, dy1, I.hout, this.w('output_down_proj.0.weight'), P.grad('output_down_proj.0.weight'), P.grad('output_down_proj.0.bias'), B * N, d, d, true)!;
      let dh: Tensor;
      if (G > 0) {
        dh = s.keep(be.zeros([B, S, d], ac));
        be.stridedCopy(dh, dhout, { count: B, length: N * d, srcOffset: 0, srcStride: N * d, dstOffset: G * d, dstStride: S * d });
      } else dh = s.keep(be.view(dhout, 0, [B, S, d]));

      const spec = this.attentionSpec();
      const seed = I.rngSeed;
      // Layer by layer, each layer's temporaries in their own scope and its forward tensors freed
      // when done, so the backward's peak is the forward's cache, not twice it. `carry` owns the
      // gradient passed to the next (lower) layer.
      let carry: Scope | null = null;
      for (let i = c.layers - 1; i >= 0; i--) {
        const p = `layers.${i}`;
        const rec = I.layers[i]!;
        const ls = new Scope();
        try {
          // the block's tensors: kept by the forward, or made again now from its input
          const L = rec.cache ?? this.recomputeLayer(ls, rec, i, B, S, seed);
          // h2 = LN(r2); r2 = h1 + drop(ffn(h1))
          const dr2 = ls.keep(be.empty([B, S, d], ac));
          be.layerNormBackward(dr2, P.grad(`${p}.ffn_norm.weight`), P.grad(`${p}.ffn_norm.bias`), dh, L.r2, P.get(`${p}.ffn_norm.weight`), L.mean2, L.rstd2, false);
          carry?.dispose(); // dh is consumed
          // without dropout the FFN's output gradient is dr2 itself, which also takes the residual's
          // sum (dh1 = dr2 + d(ffn input)): ffnBackward reads dfo before it adds into dh1, unless
          // shared experts read it again after their adds (then a copy; a copy of [M, d] bf16 was
          // ~35 us a layer at 16 x 2048 on an H200, twice a layer, outside any kernel profile)
          const aliasFfn = L.dropFfn < 0 && (c.ffn.kind === 'dense' || c.ffn.sharedExperts === 0);
          const dfo = aliasFfn ? dr2 : ls.keep(be.empty([M, d], ac));
          if (L.dropFfn >= 0) be.dropoutBackward(dfo, dr2, c.dropout, seed, L.dropFfn);
          else if (!aliasFfn) be.copy(dfo, dr2);
          const dh1 = dr2; // residual: dh1 = dr2 + d(ffn input)
          this.ffnBackward(ls, L.ffn, dfo, L.h1, dh1, M, p, dAux, dZ);
          // h1 = LN(r1); r1 = x + drop(attn(x))
          carry = s.keep(new Scope()); // in s too: freed on an error
          const dr1 = carry.keep(be.empty([B, S, d], ac));
          be.layerNormBackward(dr1, P.grad(`${p}.attn_norm.weight`), P.grad(`${p}.attn_norm.bias`), dh1, L.r1, P.get(`${p}.attn_norm.weight`), L.mean1, L.rstd1, false);
          // likewise dr1 itself without dropout: the out-projection's backward reads it before the
          // qkv projection's backward adds into dx = dr1
          const dao = L.dropAttn >= 0 ? ls.keep(be.empty([M, d], ac)) : dr1;
          if (L.dropAttn >= 0) be.dropoutBackward(dao, dr1, c.dropout, seed, L.dropAttn);
          const datt = this.linearBackward(ls, dao, L.att, this.w(`${p}.attn.o.weight`), P.grad(`${p}.attn.o.weight`), P.grad(`${p}.attn.o.bias`), M, d, d, true)!;
          const dqkv = ls.keep(be.empty([B, S, 3 * d], ac));
          be.attentionBackward(dqkv, ls.keep(be.view(datt, 0, [B, S, d])), L.qkv, L.att, L.lse, spec);
          const dx = dr1; // residual: dx = dr1 + dqkv Wqkv
          this.linearBackward(ls, dqkv, L.x, this.wSpan(`${p}.attn.q.weight`, [3 * d, d]), P.gradSpan(`${p}.attn.q.weight`, [3 * d, d]), P.gradSpan(`${p}.attn.q.bias`, [3 * d]), M, d, 3 * d, true, ls.keep(be.view(dx, 0, [M, d])));
          dh = dx;
        } finally {
          ls.dispose();
          rec.cache?.scope.dispose();
          this.operands?.release(i);
        }
      }

      // globals and the input stage
      let dhln: Tensor;
      if (G > 0) {
        be.stridedCopy(P.grad('global_tokens'), dh, { count: B, length: G * d, srcOffset: 0, srcStride: S * d, dstOffset: 0, dstStride: 0, accumulate: true });
        dhln = s.keep(be.empty([B * N, d], ac));
        be.stridedCopy(dhln, dh, { count: B, length: N * d, srcOffset: G * d, srcStride: S * d, dstOffset: 0, dstStride: N * d });
      } else dhln = s.keep(be.view(dh, 0, [B * N, d]));
      if (I.dropIn >= 0) be.dropoutBackward(dhln, dhln, c.dropout, seed, I.dropIn);
      const dhs = s.keep(be.empty([B * N, d], ac));
      be.layerNormBackward(dhs, P.grad('input_norm.weight'), P.grad('input_norm.bias'), dhln, I.hs, P.get('input_norm.weight'), I.mean0, I.rstd0, false);
      const dpos = s.keep(be.view(P.grad('position_embeddings.weight'), 0, [N, d]));
      be.reduceBroadcast(dpos, dhs, [B, N, d], [1, N, d], true);
      const dtemb = s.keep(be.empty([B, d], dt));
      be.reduceBroadcast(dtemb, dhs, [B, N, d], [B, 1, d], false);
      const du2 = this.linearBackward(s, dhs, I.u2, this.w('input_up_proj.2.weight'), P.grad('input_up_proj.2.weight'), P.grad('input_up_proj.2.bias'), B * N, d, d, true)!;
      const du1 = s.keep(be.empty([B * N, d], ac));
      be.activationBackward(du1, du2, I.u1, 'tanh', false);
      const dxt2 = this.linearBackward(s, du1, I.xt, this.w('input_up_proj.0.weight'), P.grad('input_up_proj.0.weight'), P.grad('input_up_proj.0.bias'), B * N, e, d, true)!;
      const dxt = be.empty([B, N, e], dt);
      be.copy(dxt, dxt2);
      // time embedding
      const dta1 = this.linearBackward(s, dtemb, I.ta1, this.w('time_embed.2.weight'), P.grad('time_embed.2.weight'), P.grad('time_embed.2.bias'), B, 4 * e, d, true)!;
      const dth1 = s.keep(be.empty([B, 4 * e], ac));
      be.activationBackward(dth1, dta1, I.th1, 'silu', false);
      this.linearBackward(s, dth1, I.temb0, this.w('time_embed.0.weight'), P.grad('time_embed.0.weight'), P.grad('time_embed.0.bias'), B, e, 4 * e, false);
      return dxt;
    } finally {
      s.dispose();
    }
  }

  /** FFN backward: accumulates d(ffn input) into dh1 and the FFN's parameter gradients. */
  private ffnBackward(s: Scope, f: FfnCache, dfo: Tensor, h1: Tensor, dh1: Tensor, M: number, p: string, dAux: number, dZ: number): void {
    const be = this.be;
    const c = this.cfg;
    const dt = this.dtype;
    const ac = this.act;
    const P = this.params;
    const d = c.hidden;
    const dh1flat = s.keep(be.view(dh1, 0, [M, d]));
    if (f.kind === 'dense') {
      const act = s.keep(be.empty([M, 4 * d], ac)); // recomputed: gelu(pre), as the forward's epilogue made it
      be.activation(act, f.pre, 'gelu');
      const dact = this.linearBackward(s, dfo, act, this.w(`${p}.ffn.fc2.weight`), P.grad(`${p}.ffn.fc2.weight`), P.grad(`${p}.ffn.fc2.bias`), M, 4 * d, d, true)!;
      act.dispose();
      be.activationBackward(dact, dact, f.pre, 'gelu', false);
      this.linearBackward(s, dact, h1, this.w(`${p}.ffn.fc1.weight`), P.grad(`${p}.ffn.fc1.weight`), P.grad(`${p}.ffn.fc1.bias`), M, d, 4 * d, true, dh1flat);
      return;
    }
    const r = f.routing;
    const fpre = f.pre;
    if (!fpre) throw new Error('backward of an inference forward (ForwardOptions.inference): it kept no pre-activations');
    const E = c.ffn.experts;
    const fh = expertHidden(c);
    const A = r.order.size;
    // shared experts
    for (let j = 0; j < c.ffn.sharedExperts; j++) {
      const sh = f.shared[j]!;
      const w1 = s.keep(be.view(this.w(`${p}.ffn.shared.fc1.weight`), j * fh * d, [fh, d]));
      const w2 = s.keep(be.view(this.w(`${p}.ffn.shared.fc2.weight`), j * d * fh, [d, fh]));
      const gw1 = s.keep(be.view(P.grad(`${p}.ffn.shared.fc1.weight`), j * fh * d, [fh, d]));
      const gb1 = s.keep(be.view(P.grad(`${p}.ffn.shared.fc1.bias`), j * fh, [fh]));
      const gw2 = s.keep(be.view(P.grad(`${p}.ffn.shared.fc2.weight`), j * d * fh, [d, fh]));
      const gb2 = s.keep(be.view(P.grad(`${p}.ffn.shared.fc2.bias`), j * d, [d]));
      const dact = this.linearBackward(s, dfo, sh.act, w2, gw2, gb2, M, fh, d, true)!;
      be.activationBackward(dact, dact, sh.pre, 'gelu', false);
      this.linearBackward(s, dact, h1, w1, gw1, gb1, M, d, fh, true, dh1flat);
    }
    // routed experts
    const dys = s.keep(be.empty([A, d], ac));
    const dgates = s.keep(be.empty([M, r.topK], dt));
    be.moeCombineBackward(dys, dgates, s.keep(be.view(dfo, 0, [M, d])), f.ys, r);
    // the forward's activation (keepExpertActivations), else recomputed: gelu(pre), as the forward's
    // epilogue made it
    const act = f.act ?? s.keep(be.empty([A, fh], ac));
    if (!f.act) be.activation(act, fpre, 'gelu');
    const dact = s.keep(be.empty([A, fh], ac));
    be.groupedMatmulBackward(dact, P.grad(`${p}.ffn.experts.fc2.weight`), P.grad(`${p}.ffn.experts.fc2.bias`), dys, act, this.w(`${p}.ffn.experts.fc2.weight`), r);
    // a recomputed one is freed now; a kept one goes with its layer's scope
    if (!f.act) act.dispose();
    be.activationBackward(dact, dact, fpre, 'gelu', false);
    const xs = s.keep(be.empty([A, d], ac)); // recomputed: the permuted input
    be.moePermute(xs, h1, r);
    const dxs = s.keep(be.empty([A, d], ac));
    be.groupedMatmulBackward(dxs, P.grad(`${p}.ffn.experts.fc1.weight`), P.grad(`${p}.ffn.experts.fc1.bias`), dact, xs, this.w(`${p}.ffn.experts.fc1.weight`), r);
    xs.dispose();
    be.moePermuteBackward(dh1flat, dxs, r, true);
    // router
    const dlogits = s.keep(be.empty([M, E], dt));
    be.moeRouteBackward(dlogits, r, dgates, dAux, dZ);
    be.matmul(dh1flat, dlogits, this.w(`${p}.ffn.router.weight`), { beta: 1 });
    be.matmul(P.grad(`${p}.ffn.router.weight`), dlogits, s.keep(be.view(h1, 0, [M, d])), { transA: true, beta: 1 });
  }
}
