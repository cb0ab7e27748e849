/**
 * The parameter table: one {@link ParamSpec} list, derived from the config, drives the flat memory
 * layout (one allocation for all parameters, one for their gradients), initialisation, checkpoint
 * names (SPEC section 7) and optimiser groups. Parameters of one layer that the forward uses together
 * are adjacent: q, k and v weights form one [3d, d] block and their biases one [3d] block, so the
 * attention input projection is a single matrix product.
 */
import type { Backend, DType, FloatDType, Tensor } from '../backend/backend.js';
import { sizeOf } from '../backend/backend.js';
import { expertHidden, type ModelConfig } from './config.js';

/** How a parameter is initialised. */
export type ParamInit = { kind: 'normal'; std: number } | { kind: 'zeros' } | { kind: 'ones' };

/** One named tensor of the model. */
export interface ParamSpec {
  /** Checkpoint name (SPEC section 7). */
  readonly name: string;
  readonly shape: readonly number[];
  readonly init: ParamInit;
  /** False for state that is saved but not trained (the bias-balancing expert_bias). */
  readonly trainable: boolean;
  /** Whether AdamW's weight decay applies (weight matrices and embeddings; not biases or norms). */
  readonly decay: boolean;
}

/** BERT's initialiser range. */
const STD = 0.02;

/** The parameter table of a config, in memory order. */
export function paramSpecs(c: ModelConfig): ParamSpec[] {
  const { vocabSize: V, embDim: e, hidden: d, maxLen, globalTokens: G } = c;
  const out: ParamSpec[] = [];
  const w = (name: string, shape: number[], std = STD) => out.push({ name, shape, init: { kind: 'normal', std }, trainable: true, decay: true });
  const b = (name: string, shape: number[]) => out.push({ name, shape, init: { kind: 'zeros' }, trainable: true, decay: false });
  const norm = (name: string) => {
    out.push({ name: `${name}.weight`, shape: [d], init: { kind: 'ones' }, trainable: true, decay: false });
    b(`${name}.bias`, [d]);
  };
  w('word_embeddings.weight', [V, e], 1); // SPEC 2.1: N(0, 1)
  w('position_embeddings.weight', [maxLen, d]);
  w('time_embed.0.weight', [4 * e, e]);
  b('time_embed.0.bias', [4 * e]);
  w('time_embed.2.weight', [d, 4 * e]);
  b('time_embed.2.bias', [d]);
  w('input_up_proj.0.weight', [d, e]);
  b('input_up_proj.0.bias', [d]);
  w('input_up_proj.2.weight', [d, d]);
  b('input_up_proj.2.bias', [d]);
  norm('input_norm');
  if (G > 0) w('global_tokens', [G, d]);
  if (c.absorbing) out.push({ name: 'mean_embed', shape: [e], init: { kind: 'normal', std: e ** -0.5 }, trainable: true, decay: false });
  const f = expertHidden(c);
  for (let i = 0; i < c.layers; i++) {
    const p = `layers.${i}`;
    for (const x of ['q', 'k', 'v']) w(`${p}.attn.${x}.weight`, [d, d]);
    for (const x of ['q', 'k', 'v']) b(`${p}.attn.${x}.bias`, [d]);
    w(`${p}.attn.o.weight`, [d, d]);
    b(`${p}.attn.o.bias`, [d]);
    norm(`${p}.attn_norm`);
    if (c.ffn.kind === 'dense') {
      w(`${p}.ffn.fc1.weight`, [4 * d, d]);
      b(`${p}.ffn.fc1.bias`, [4 * d]);
      w(`${p}.ffn.fc2.weight`, [d, 4 * d]);
      b(`${p}.ffn.fc2.bias`, [d]);
    } else {
      const E = c.ffn.experts;
      w(`${p}.ffn.router.weight`, [E, d]);
      if (c.ffn.balance === 'bias') out.push({ name: `${p}.ffn.expert_bias`, shape: [E], init: { kind: 'zeros' }, trainable: false, decay: false });
      w(`${p}.ffn.experts.fc1.weight`, [E, f, d]);
      b(`${p}.ffn.experts.fc1.bias`, [E, f]);
      w(`${p}.ffn.experts.fc2.weight`, [E, d, f]);
      b(`${p}.ffn.experts.fc2.bias`, [E, d]);
      const S = c.ffn.sharedExperts;
      if (S > 0) {
        w(`${p}.ffn.shared.fc1.weight`, [S, f, d]);
        b(`${p}.ffn.shared.fc1.bias`, [S, f]);
        w(`${p}.ffn.shared.fc2.weight`, [S, d, f]);
        b(`${p}.ffn.shared.fc2.bias`, [S, d]);
      }
    }
    norm(`${p}.ffn_norm`);
  }
  w('output_down_proj.0.weight', [d, d]);
  b('output_down_proj.0.bias', [d]);
  w('output_down_proj.2.weight', [e, d]);
  b('output_down_proj.2.bias', [e]);
  return out;
}

/** Total number of parameter elements. */
export function countParams(specs: readonly ParamSpec[]): number {
  return specs.reduce((s, p) => s + sizeOf(p.shape), 0);
}

/**
 * All parameters in one flat tensor, with a named view per parameter; gradients likewise (created on
 * demand). Owns its memory: dispose() frees it.
 */
export class ParamStore {
  readonly specs: readonly ParamSpec[];
  /** Element offset of each parameter in the flat buffers. */
  readonly offsets: ReadonlyMap<string, number>;
  readonly total: number;
  readonly flat: Tensor;
  private readonly views = new Map<string, Tensor>();
  private gradFlat: Tensor | null = null;
  private readonly gradViews = new Map<string, Tensor>();

  constructor(
    readonly backend: Backend,
    specs: readonly ParamSpec[],
    readonly dtype: FloatDType,
  ) {
    this.specs = specs;
    const offsets = new Map<string, number>();
    let off = 0;
    for (const s of specs) {
      offsets.set(s.name, off);
      off += sizeOf(s.shape);
    }
    this.offsets = offsets;
    this.total = off;
    this.flat = backend.zeros([off], dtype);
    for (const s of specs) this.views.set(s.name, backend.view(this.flat, offsets.get(s.name)!, s.shape));
  }

  /** The spec of a parameter. */
  spec(name: string): ParamSpec {
    const s = this.specs.find((p) => p.name === name);
    if (!s) throw new Error(`no parameter named ${name}`);
    return s;
  }
  has(name: string): boolean {
    return this.views.has(name);
  }
  /** The view of a parameter. */
  get(name: string): Tensor {
    const v = this.views.get(name);
    if (!v) throw new Error(`no parameter named ${name}`);
    return v;
  }
  /** A view of `count` consecutive parameters starting at `first`, as one tensor of `shape`. */
  span(first: string, shape: readonly number[]): Tensor {
    return this.backend.view(this.flat, this.offsets.get(first)!, shape);
  }
  /** The gradient buffer (zeros on first use). */
  get grads(): Tensor {
    if (!this.gradFlat) {
      this.gradFlat = this.backend.zeros([this.total], this.dtype);
      for (const s of this.specs) this.gradViews.set(s.name, this.backend.view(this.gradFlat, this.offsets.get(s.name)!, s.shape));
    }
    return this.gradFlat;
  }
  /** The gradient view of a parameter. */
  grad(name: string): Tensor {
    void this.grads;
    const v = this.gradViews.get(name);
    if (!v) throw new Error(`no parameter named ${name}`);
    return v;
  }
  /** A gradient view spanning consecutive parameters (as span()). */
  gradSpan(first: string, shape: readonly number[]): Tensor {
    return this.backend.view(this.grads, this.offsets.get(first)!, shape);
  }
  zeroGrads(): void {
    this.backend.fill(this.grads, 0);
  }
  /**
   * Initialises every parameter from `seed`: parameter p's normal draws use the Philox counters at its
   * flat offset, so the result is independent of the backend and of which parameters exist before it.
   */
  initialize(seed: number): void {
    for (const s of this.specs) {
      const v = this.get(s.name);
      if (s.init.kind === 'zeros') this.backend.fill(v, 0);
      else if (s.init.kind === 'ones') this.backend.fill(v, 1);
      // the backend draws the same Philox numbers as philoxNormal would (on the GPU without a copy)
      else this.backend.randomNormal(v, seed, this.offsets.get(s.name)!, s.init.std);
    }
  }
  dispose(): void {
    this.flat.dispose();
    this.gradFlat?.dispose();
  }
  /**
   * Every parameter converted to `dtype` now (one conversion of the flat buffer), viewed by name
   * like the store. A snapshot: it does not follow later changes of the parameters. Dispose it.
   */
  copyAs(dtype: DType): ParamCopy {
    const flat = this.backend.empty([this.total], dtype);
    this.backend.copy(flat, this.flat);
    return new ParamCopy(this, flat);
  }
}

/**
 * Parameters converted for the matrix products (ForwardOptions.weights): a {@link ParamCopy} of all
 * of them, or a {@link LayerwiseCopy} that converts a layer's when first asked for and frees them
 * when the denoiser is done with the layer.
 */
export interface ParamOperands {
  /** The store they were converted from. */
  readonly source: ParamStore;
  /** Their element type. */
  readonly dtype: DType;
  /** The converted parameter, shaped as in the store. */
  get(name: string): Tensor;
  /** Consecutive converted parameters starting at `first`, as one tensor of `shape`. */
  span(first: string, shape: readonly number[]): Tensor;
  /** Done with layer i's parameters for now: a layerwise copy frees them (converted again on next use); a whole copy keeps them. */
  release(layer: number): void;
  dispose(): void;
}

/** A converted snapshot of a {@link ParamStore} (ParamStore.copyAs): views by name, one allocation. */
export class ParamCopy implements ParamOperands {
  private readonly views = new Map<string, Tensor>();
  constructor(
    /** The store it was copied from. */
    readonly source: ParamStore,
    readonly flat: Tensor,
  ) {}
  /** The copy of a parameter, shaped as in the store (one view per name, made on first use). */
  get(name: string): Tensor {
    let v = this.views.get(name);
    if (!v) {
      v = this.span(name, this.source.get(name).shape);
      this.views.set(name, v);
    }
    return v;
  }
  /** A view of consecutive parameters starting at `first`, as one tensor of `shape` (as ParamStore.span). */
  span(first: string, shape: readonly number[]): Tensor {
    const off = this.source.offsets.get(first);
    if (off === undefined) throw new Error(`no parameter named ${first}`);
    return this.source.backend.view(this.flat, off, shape);
  }
  get dtype(): DType {
    return this.flat.dtype;
  }
  /** Converts the store's current values into this copy again (its buffer and views stay). */
  refresh(): void {
    this.source.backend.copy(this.flat, this.source.flat);
  }
  /** A whole copy keeps every layer. */
  release(): void {}
  dispose(): void {
    this.flat.dispose();
  }
}

/** The segment of a parameter in a {@link LayerwiseCopy}: its layer (`layers.i`), or itself. */
function segmentOf(name: string): string {
  const m = /^layers\.(\d+)\./.exec(name);
  return m ? `layers.${m[1]}` : name;
}

/** One segment of a LayerwiseCopy: elements [start, end) of the store, converted from `base` on. */
interface Segment {
  start: number;
  end: number;
  base: number;
  copy: Tensor | null;
  views: Map<string, Tensor>;
}

/**
 * Parameters converted to `dtype` in segments, each when first asked for: a layer's parameters
 * (consecutive in the store, paramSpecs) as one conversion, every other parameter alone; release(i)
 * frees layer i's until next asked for. A training step converts each layer for its forward and
 * again for its backward, so at most one layer's copy is alive at a time instead of every
 * parameter's (base: 43 MB against 0.5 GB in bf16) for one conversion launch a layer each way.
 * A snapshot like ParamCopy: a segment converted after the parameters change sees the change.
 */
export class LayerwiseCopy implements ParamOperands {
  private readonly segments = new Map<string, Segment>();
  private disposed = false;
  constructor(
    readonly source: ParamStore,
    readonly dtype: DType,
  ) {
    for (const spec of source.specs) {
      const key = segmentOf(spec.name);
      const start = source.offsets.get(spec.name)!;
      const end = start + sizeOf(spec.shape);
      const seg = this.segments.get(key);
      if (!seg) {
        // converted from a multiple of 8 elements: a view keeps its 16-byte alignment (the grouped
        // kernels take 16-byte aligned weights)
        this.segments.set(key, { start, end, base: start - (start % 8), copy: null, views: new Map() });
      } else if (seg.end === start) seg.end = end;
      else throw new Error(`LayerwiseCopy: the parameters of ${key} are not consecutive in the store (${spec.name})`);
    }
  }
  /** The segment holding `name`, converted now if it is not. */
  private converted(name: string): Segment {
    if (this.disposed) throw new Error('LayerwiseCopy: used after dispose()');
    const seg = this.segments.get(segmentOf(name));
    if (!seg || !this.source.offsets.has(name)) throw new Error(`no parameter named ${name}`);
    if (!seg.copy) {
      const be = this.source.backend;
      const n = seg.end - seg.base;
      const copy = be.empty([n], this.dtype);
      const from = be.view(this.source.flat, seg.base, [n]);
      be.copy(copy, from);
      from.dispose();
      seg.copy = copy;
    }
    return seg;
  }
  get(name: string): Tensor {
    const seg = this.converted(name);
    let v = seg.views.get(name);
    if (!v) {
      v = this.source.backend.view(seg.copy!, this.source.offsets.get(name)! - seg.base, this.source.get(name).shape);
      seg.views.set(name, v);
    }
    return v;
  }
  span(first: string, shape: readonly number[]): Tensor {
    const seg = this.converted(first);
    const off = this.source.offsets.get(first)!;
    if (off + sizeOf(shape) > seg.end) throw new Error(`LayerwiseCopy: a span from ${first} of [${shape.join(', ')}] leaves its segment`);
    return this.source.backend.view(seg.copy!, off - seg.base, shape);
  }
  release(layer: number): void {
    const seg = this.segments.get(`layers.${layer}`);
    if (seg) this.free(seg);
  }
  /** Names of the segments converted now (for tests and accounting). */
  get live(): string[] {
    return [...this.segments].filter(([, s]) => s.copy !== null).map(([k]) => k);
  }
  dispose(): void {
    this.disposed = true;
    for (const seg of this.segments.values()) this.free(seg);
  }
  private free(seg: Segment): void {
    seg.copy?.dispose();
    seg.copy = null;
    seg.views.clear();
  }
}
