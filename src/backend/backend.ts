/**
 * The compute substrate: one interface, implemented by the CPU backend (TypeScript + WebAssembly
 * SIMD, the reference every other backend is checked against) and the CUDA backend.
 *
 * Contract:
 * - A backend owns the memory of its tensors. Every tensor is created by a backend method and freed
 *   by `dispose()` (idempotent); views (`view`) share their parent's memory and free nothing.
 *   `memory()` reports live and peak bytes, so tests can prove that nothing leaks.
 * - Operations are coarse and write into caller-provided outputs (as llm.c does: outputs first,
 *   then saved statistics, then inputs, then sizes/options). "Accumulate" options add into the
 *   output instead of overwriting (weight gradients accumulate with +=).
 * - Every operation checks shapes and dtypes and throws ShapeError/DTypeError/IndexError naming
 *   the op and the shapes; nothing crashes the process.
 * - Randomness is counter-based (Philox-4x32-10, see philox.ts): the same (seed, offset) gives the
 *   same numbers on every backend.
 * - float64 exists on the CPU for gradient checks; the CUDA backend may compute in bfloat16 where
 *   its options say so.
 */

/**
 * Element types. `float64` is CPU-only (gradient checks); `bfloat16` is the CUDA backend's (the
 * activations of mixed-precision runs; ops that accept it say so); `int32` holds ids, masks and indices.
 */
export type DType = 'float32' | 'float64' | 'bfloat16' | 'int32';
/** The floating dtypes. */
export type FloatDType = 'float32' | 'float64';

/** A handle to an n-dimensional array in a backend's memory. */
export interface Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** Number of elements. */
  readonly size: number;
  /** True for a view into another tensor's memory (disposing it frees nothing). */
  readonly isView: boolean;
  /** True after dispose(). Using a disposed tensor throws. */
  readonly disposed: boolean;
  /** Frees the memory (idempotent). */
  dispose(): void;
}

/** Elementwise activations with a derivative. */
export type Activation = 'gelu' | 'tanh' | 'silu';

/** Options of {@link Backend.matmul}. */
export interface MatmulOptions {
  /** Use A transposed: A is stored [.., K, M]. */
  readonly transA?: boolean;
  /** Use B transposed: B is stored [.., N, K] (a PyTorch Linear weight [out, in]). */
  readonly transB?: boolean;
  /** out = alpha op(A) op(B) + beta out (+ bias). Default alpha 1, beta 0. */
  readonly alpha?: number;
  readonly beta?: number;
  /** [N], added to every row after the product. */
  readonly bias?: Tensor;
  /** GELU epilogue: `pre` receives the pre-activation, `out` gelu(pre). */
  readonly gelu?: { readonly pre: Tensor };
}

/** How nearestRows / argmaxDot may compute their scores x . table[v]. */
export interface ScoreOptions {
  /**
   * `float32` (default): float32 products. `bf16x3`: x and the table each split into a bfloat16
   * high part and a bfloat16 remainder, and the three products hi.hi + hi.lo + lo.hi summed in
   * float32 (tensor cores on a GPU): about 2^-16 relative error per product instead of 2^-24,
   * for callers whose x is itself of bfloat16 accuracy. A backend may always compute float32.
   */
  readonly precision?: 'float32' | 'bf16x3';
  /**
   * What {@link Backend.prepareScores} made of this call's table (its split parts and half norms),
   * for many calls against one unchanged table (a sampling run): used only for that table and that
   * precision, else ignored.
   */
  readonly prepared?: PreparedTable | null;
}

/** A vocabulary table's score operands made once (Backend.prepareScores); stale once the table changes. */
export interface PreparedTable {
  /** The table it was made from. */
  readonly table: Tensor;
  readonly precision: 'float32' | 'bf16x3';
  dispose(): void;
}

/** The attention pattern (SPEC section 2). */
export interface AttentionSpec {
  readonly kind: 'full' | 'sliding';
  readonly heads: number;
  /** One-sided window w (sliding only). */
  readonly window: number;
  /** Spacing r of the window (sliding only; 1 = contiguous). */
  readonly dilation: number;
  /** Global tokens G in front of the sequence (attend to all, attended by all). */
  readonly globalTokens: number;
}

/** Options of {@link Backend.moeRoute}. */
export interface MoeRouteOptions {
  readonly topK: number;
  /** Tokens per sequence (G + N): the capacity is counted per sequence. */
  readonly seqLen: number;
  /** Per-sequence capacity factor; undefined = dropless. */
  readonly capacityFactor?: number;
  /** [E] bias added to the probabilities for the top-k choice only (balance "bias"). */
  readonly selectionBias?: Tensor;
}

/**
 * The routing decisions of one MoE layer for one batch, produced by {@link Backend.moeRoute} and
 * consumed by the permute / combine ops and their backward. Owns its tensors (dispose it).
 */
export interface MoeRouting {
  readonly tokens: number;
  readonly experts: number;
  readonly topK: number;
  /** Softmax of the router logits [M, E]. */
  readonly probs: Tensor;
  /** log-sum-exp of the router logits [M] (z-loss). */
  readonly lse: Tensor;
  /** Chosen experts [M, k] (int32), rank order (highest score first; ties to the lower index). */
  readonly expertIndex: Tensor;
  /** Renormalised gates [M, k]; 0 where the assignment was dropped by the capacity. */
  readonly gates: Tensor;
  /** Sum of the chosen probabilities [M] (for the gate gradient). */
  readonly gateNorm: Tensor;
  /** For each kept assignment in expert order, its flat index m k + r (int32 [A]). */
  readonly order: Tensor;
  /** For each assignment m k + r, its row in expert order, or -1 if dropped (int32 [M k]). */
  readonly slot: Tensor;
  /**
   * Kept assignments per expert (host numbers; offsets of the grouped matmul). This and the loss
   * statistics below may be read back from the device on first use (the GPU's routing without a
   * capacity factor), so that a forward that never reads them never waits for the device.
   */
  readonly counts: readonly number[];
  /** Assignments per expert before capacity drops, as a share of M k (f_i of the balance loss). */
  readonly loadShare: readonly number[];
  /** Balance loss E sum_i f_i P_i. */
  readonly aux: number;
  /** Router z-loss mean_m lse_m^2. */
  readonly z: number;
  dispose(): void;
}

/** Recorded device work (see {@link Backend.capture}). */
export interface Replayable {
  /** Queues the recorded work again. */
  replay(): void;
  dispose(): void;
}

/** The epilogue and the operand of {@link Backend.groupedMatmul}. */
export interface GroupedMatmulOptions {
  /**
   * GELU after the bias: out = gelu(pre), the pre-activation kept in `pre` (for the backward), or
   * not kept at all with `pre: null` (a forward without backward: its writes saved).
   */
  readonly gelu?: { readonly pre: Tensor | null };
  /**
   * xs is the tokens' rows x [tokens, K], read in the routing's expert order (`groups` must be a
   * routing): the product of moePermute(x)'s rows. The CPU and CUDA backends permute into a
   * temporary (a kernel that gathered the rows itself was slower on an H200: bench/NOTES.md v17d);
   * a backend with a faster gather may read x in place.
   */
  readonly gather?: boolean;
}

/** How the rows of a grouped product split among the experts: counts per expert, or a routing. */
export type ExpertGroups = readonly number[] | MoeRouting;

/** The counts per expert of {@link ExpertGroups} (a routing's `counts`). */
export function countsOf(groups: ExpertGroups): readonly number[] {
  return isCountArray(groups) ? groups : groups.counts;
}
function isCountArray(groups: ExpertGroups): groups is readonly number[] {
  return Array.isArray(groups);
}

/** Options of {@link Backend.adamw}. */
export interface AdamWOptions {
  readonly lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** 1-based step count (bias correction). */
  readonly step: number;
}

/** Live and peak bytes held by a backend's tensors. */
export interface MemoryStats {
  readonly liveBytes: number;
  readonly peakBytes: number;
  readonly liveTensors: number;
}

/** A compute backend. See the file comment for the contract. */
export interface Backend {
  /** `cpu` or `cuda:N`. */
  readonly name: string;
  /** Human-readable description (threads, SIMD, card). */
  describe(): string;
  /** Whether tensors of `dtype` can be created here (float64: CPU only; bfloat16: CUDA only). */
  supports(dtype: DType): boolean;

  // ---- memory -------------------------------------------------------------------------------
  /** A new tensor with unspecified contents. */
  empty(shape: readonly number[], dtype?: DType): Tensor;
  /** A new tensor of zeros. */
  zeros(shape: readonly number[], dtype?: DType): Tensor;
  /** A new tensor holding `data` (converted to `dtype`). */
  fromArray(data: ArrayLike<number>, shape: readonly number[], dtype?: DType): Tensor;
  /** A copy of the tensor's contents on the host. */
  toArray(t: Tensor): Float32Array | Float64Array | Int32Array;
  /**
   * The tensors' contents as the work queued so far leaves them, read when the returned function is
   * called: it waits for that work only, not for work queued after this call (toArray waits for
   * everything queued). The tensors must not be written or disposed before it is called.
   */
  readLater(ts: readonly Tensor[]): () => (Float32Array | Float64Array | Int32Array)[];
  /** Overwrites the tensor's contents from the host. */
  write(t: Tensor, data: ArrayLike<number>): void;
  /** A view of `size(shape)` elements starting `offset` elements into `t` (shares memory). */
  view(t: Tensor, offset: number, shape: readonly number[]): Tensor;
  /** dst = src (same size; shapes may differ). Converts between float dtypes. */
  copy(dst: Tensor, src: Tensor): void;
  /** Sets every element to `value`. */
  fill(t: Tensor, value: number): void;
  /** Live/peak bytes of tensors this backend allocated. */
  memory(): MemoryStats;
  /** Starts a new peak measurement at the current live bytes. */
  resetPeak(): void;
  /** Blocks until queued work is done (no-op on the CPU). */
  synchronize(): void;

  // ---- randomness (Philox-4x32-10, counter-based) ----------------------------------------------
  /** Standard normal numbers (Box-Muller), element i from counter offset + i of the seed's stream. */
  randomNormal(out: Tensor, seed: number, offset: number, std?: number): void;
  /** Uniform numbers in (0, 1), element i from counter offset + i. */
  randomUniform(out: Tensor, seed: number, offset: number): void;

  // ---- elementwise and reductions ------------------------------------------------------------
  /** out = alpha x + beta y (y optional: out = alpha x). Same sizes. */
  axpby(out: Tensor, alpha: number, x: Tensor, beta?: number, y?: Tensor): void;
  /** out = x * y elementwise. */
  mul(out: Tensor, x: Tensor, y: Tensor): void;
  /**
   * out[p, q, r] = x[p, q, r] + y[p | 0, q | 0, r]: x viewed as [P, Q, R], y as [P or 1, Q or 1, R]
   * (`yShape` says which), e.g. positions [1, N, d] or time embeddings [B, 1, d] over [B, N, d].
   */
  addBroadcast(out: Tensor, x: Tensor, y: Tensor, dims: readonly [number, number, number], yShape: readonly [number, number, number]): void;
  /** The reverse of addBroadcast's y: dy (+)= sum of dout over the broadcast dimensions. */
  reduceBroadcast(dy: Tensor, dout: Tensor, dims: readonly [number, number, number], yShape: readonly [number, number, number], accumulate: boolean): void;
  /**
   * Strided block copy: for c < count, dst[dstOffset + c dstStride + i] (+)= src[srcOffset + c srcStride + i]
   * for i < length. A zero stride broadcasts (src) or reduces (dst, with accumulate).
   */
  stridedCopy(dst: Tensor, src: Tensor, p: { count: number; length: number; srcOffset: number; srcStride: number; dstOffset: number; dstStride: number; accumulate?: boolean }): void;
  /** out[r] = sum_c (a[r, c] - b[r, c])^2 (b optional: sum of squares). a viewed as [R, C]. */
  rowSquaredDistance(out: Tensor, a: Tensor, b?: Tensor): void;
  /** out[r, c] (+)= scale[r] x[r, c]. */
  scaleRows(out: Tensor, x: Tensor, scale: Tensor, accumulate: boolean): void;
  /**
   * dx += coef x / sqrt(sumSq[0]), nothing where sumSq[0] is 0: the gradient of coef ||x||_2 from x's
   * sum of squares left on the device (rowSquaredDistance), so that a step needs no read-back for it.
   */
  addNormGradient(dx: Tensor, x: Tensor, sumSq: Tensor, coef: number): void;
  /** Sum of all elements (computed in float64). */
  sum(x: Tensor): number;
  /** Sum of squares of all elements (computed in float64). */
  sumSquares(x: Tensor): number;

  // ---- layers --------------------------------------------------------------------------------
  /** out = op(A) op(B) (batched over leading dims; B may be unbatched), see MatmulOptions. */
  matmul(out: Tensor, a: Tensor, b: Tensor, opts?: MatmulOptions): void;
  /** bias grad: db (+)= column sums of dy [M, N]. */
  biasBackward(db: Tensor, dy: Tensor, accumulate: boolean): void;
  /** out = act(x). */
  activation(out: Tensor, x: Tensor, kind: Activation): void;
  /** dx (+)= act'(x) dy. */
  activationBackward(dx: Tensor, dy: Tensor, x: Tensor, kind: Activation, accumulate: boolean): void;
  /** Row softmax over the last dimension. */
  softmax(out: Tensor, x: Tensor): void;
  /** dx = y (dy - sum(dy y)) rowwise, y the softmax output. */
  softmaxBackward(dx: Tensor, dy: Tensor, y: Tensor): void;
  /** LayerNorm over the last dimension: out, mean [R], rstd [R]. */
  layerNorm(out: Tensor, mean: Tensor, rstd: Tensor, x: Tensor, weight: Tensor, bias: Tensor, eps: number): void;
  /**
   * The residual add and the LayerNorm after it, in one pass where the backend can: sum = a + b
   * (rounded to sum's dtype as `axpby(sum, 1, a, 1, b)` rounds it; sum may alias a or b), then
   * `layerNorm(out, mean, rstd, sum, weight, bias, eps)`. With `bBias` [C], b is first b + bBias
   * broadcast over its rows, rounded to b's dtype as a matmul's bias is (`addBroadcast`): the bias
   * of the product that made b, folded in; sum may then alias b but not a.
   */
  addLayerNorm(sum: Tensor, out: Tensor, mean: Tensor, rstd: Tensor, a: Tensor, b: Tensor, weight: Tensor, bias: Tensor, eps: number, bBias?: Tensor | null): void;
  /** dx (+)= ..., dweight += ..., dbias += ... */
  layerNormBackward(dx: Tensor, dweight: Tensor, dbias: Tensor, dy: Tensor, x: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor, accumulate: boolean): void;
  /** out[m] = table[ids[m]]; out [M, e], table [V, e], ids int32 [M]. */
  embedding(out: Tensor, table: Tensor, ids: Tensor): void;
  /** dtable[ids[m]] += dout[m]. */
  embeddingBackward(dtable: Tensor, ids: Tensor, dout: Tensor): void;
  /**
   * Fused softmax + cross-entropy over rows: loss[m] = logsumexp(logits[m]) - logits[m, target[m]];
   * if dlogits is given, dlogits[m] = weight[m] (softmax(logits[m]) - onehot(target[m])). A backend
   * that holds bfloat16 accepts bfloat16 dlogits beside float32 logits (the gradient rounded once).
   */
  crossEntropy(loss: Tensor, dlogits: Tensor | null, logits: Tensor, targets: Tensor, weights: Tensor | null): void;
  /**
   * crossEntropy of the logits x table^T (the loss's tied head: x [R, K], table [V, K], float32 or
   * bfloat16 operands as matmul takes them, float32 loss), without the [R, V] float32 logits in
   * memory where the backend can; dlogits [R, V] as crossEntropy writes them. The same numbers as
   * matmul(logits, x, table, { transB: true }) then crossEntropy, up to the order of additions.
   */
  tiedCrossEntropy(loss: Tensor, dlogits: Tensor | null, x: Tensor, table: Tensor, targets: Tensor, weights: Tensor | null): void;
  /** Attention over qkv [B, S, 3d] -> out [B, S, d], lse [B, H, S] (SPEC section 2). */
  attention(out: Tensor, lse: Tensor, qkv: Tensor, spec: AttentionSpec): void;
  /** dqkv = gradient of attention (overwrites dqkv). */
  attentionBackward(dqkv: Tensor, dout: Tensor, qkv: Tensor, out: Tensor, lse: Tensor, spec: AttentionSpec): void;
  /**
   * Dropout with a regenerable mask: out = x * keep / (1 - p), keep = uniform(seed, offset + i) >= p.
   * The backward regenerates the same mask from (seed, offset).
   */
  dropout(out: Tensor, x: Tensor, p: number, seed: number, offset: number): void;
  dropoutBackward(dx: Tensor, dy: Tensor, p: number, seed: number, offset: number): void;

  // ---- mixture of experts --------------------------------------------------------------------
  /** Router softmax, top-k with renormalised gates, optional capacity, balance and z statistics. */
  moeRoute(logits: Tensor, opts: MoeRouteOptions): MoeRouting;
  /** dlogits = gradient through softmax/top-k gates plus dAux * d(aux) + dZ * d(z). */
  moeRouteBackward(dlogits: Tensor, routing: MoeRouting, dgates: Tensor, dAux: number, dZ: number): void;
  /** xs[a] = x[token of order[a]] (tokens permuted into expert order). */
  moePermute(xs: Tensor, x: Tensor, routing: MoeRouting): void;
  /** dx (+)= sum over a token's kept assignments of dxs (the permute's backward). */
  moePermuteBackward(dx: Tensor, dxs: Tensor, routing: MoeRouting, accumulate: boolean): void;
  /** y[m] (+)= sum_r gates[m, r] ys[slot[m k + r]] (expert outputs combined in token order). */
  moeCombine(y: Tensor, ys: Tensor, routing: MoeRouting, accumulate: boolean): void;
  /** dys[slot] = gates dy; dgates[m, r] = dy[m] . ys[slot]. */
  moeCombineBackward(dys: Tensor, dgates: Tensor, dy: Tensor, ys: Tensor, routing: MoeRouting): void;
  /**
   * Grouped matmul: rows of xs [A, K] in consecutive groups of `counts[e]` rows go through expert e:
   * out[rows of e] = xs[rows of e] W[e]^T (+ bias[e]), W [E, N, K], bias [E, N] (PyTorch layout).
   * `groups` is the counts, or the routing that made xs (a GPU backend may then use the counts
   * where they are, on the device, without reading them back).
   */
  groupedMatmul(out: Tensor, xs: Tensor, weight: Tensor, bias: Tensor | null, groups: ExpertGroups, opts?: GroupedMatmulOptions): void;
  /** Its backward: dxs = dout W[e]; dW[e] += dout^T xs; dbias[e] += column sums. */
  groupedMatmulBackward(dxs: Tensor | null, dweight: Tensor, dbias: Tensor | null, dout: Tensor, xs: Tensor, weight: Tensor, groups: ExpertGroups): void;

  // ---- diffusion -----------------------------------------------------------------------------
  /**
   * Forward noising with the soft absorbing state (SPEC section 3), per example b:
   * x_t = sa[b] (z0 - m) + sb[b] eps + m on target positions (inputMask 1), m where replaceMask is 1
   * (target positions only), and z0 on source positions. m may be null (absorbing off: m = 0).
   */
  qSample(xt: Tensor, z0: Tensor, eps: Tensor, m: Tensor | null, sa: Tensor, sb: Tensor, inputMask: Tensor, replaceMask: Tensor): void;
  /** dz0 += and dm += from dxt. */
  qSampleBackward(dz0: Tensor, dm: Tensor | null, dxt: Tensor, sa: Tensor, inputMask: Tensor, replaceMask: Tensor): void;
  /** out[m] = argmin_v ||x[m] - table[v]||^2 (ties: lower v), int32 [M]. */
  nearestRows(out: Tensor, x: Tensor, table: Tensor, opts?: ScoreOptions): void;
  /** out[m] = argmax_v x[m] . table[v] (ties: lower v), int32 [M]. */
  argmaxDot(out: Tensor, x: Tensor, table: Tensor, opts?: ScoreOptions): void;
  /**
   * Optional (GPU backends): what nearestRows / argmaxDot derive from `table` at `opts.precision`
   * in every call (bf16x3's split table, the half squared norms), made once for calls that pass it
   * as ScoreOptions.prepared; same results. Null when there is nothing to prepare.
   */
  prepareScores?(table: Tensor, opts?: ScoreOptions): PreparedTable | null;

  // ---- optimiser -----------------------------------------------------------------------------
  /** One AdamW step on flat tensors of equal size (decoupled weight decay, bias-corrected). */
  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, opts: AdamWOptions): void;

  /**
   * Optional (GPU backends): records the device work that `work` queues, without running it, into a
   * graph that `replay()` runs as one launch, on the same buffers. `work` must neither read back
   * from the device nor upload from the host. Null when the recording failed (a call that is not
   * allowed while recording, such as a read-back): nothing ran then, and the caller runs the work
   * plainly. Run `replay()` once for the first result.
   */
  capture?(work: () => void): Replayable | null;

  /** Releases worker threads / device contexts. The backend is unusable afterwards. */
  close(): void;
}

/** Number of elements of a shape. */
export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

/** Bytes per element of a dtype. */
export function bytesOf(dtype: DType): number {
  return dtype === 'float64' ? 8 : dtype === 'bfloat16' ? 2 : 4;
}
