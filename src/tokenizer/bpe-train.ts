/**
 * Training a byte-level BPE tokenizer (GPT-2 style) on a corpus, for domains (code, chemistry, other
 * languages) that the BERT vocabulary fits badly.
 *
 * Words come from the GPT-2 pattern; each starts as its UTF-8 bytes. All 256 bytes are always in the
 * vocabulary (nothing is ever unknown), after the special tokens. Then, repeatedly, the most frequent
 * adjacent pair (ties: the lower pair of ids) is merged, until the vocabulary has `vocabSize` entries
 * or no pair occurs `minFrequency` times. Pair counts are updated incrementally: a merge only revisits
 * the words that contain the pair (found through a pair -> words index) and only the pairs next to it
 * change; a max-heap with lazy deletion gives the next best pair.
 */
import { ConfigError } from '../errors.js';
import { BpeModel, PAIR_BASE } from './bpe.js';
import { BYTE_TO_CHAR, ByteLevelPreTokenizer, GPT2_PATTERN } from './byte-level.js';
import { PipelineTokenizer } from './pipeline.js';

/** The special tokens a trained tokenizer gets by default (ids 0..4): `[PAD]` is 0. */
export const DEFAULT_SPECIAL_TOKENS: readonly string[] = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'];
/** Those a MoE-DiffuSeq sequence cannot do without; added after the given ones when missing. */
const REQUIRED_SPECIALS = ['[CLS]', '[SEP]', '[PAD]'];

/** Progress of {@link trainBpe}: texts read while counting, merges learnt while merging. */
export interface TrainProgress {
  readonly phase: 'count' | 'merge';
  readonly done: number;
  /** Merges wanted (merge phase); the number of texts is not known in advance. */
  readonly total: number | undefined;
}

/** Options of {@link trainBpe}. */
export interface TrainBpeOptions {
  /** Final vocabulary size, special tokens and the 256 bytes included. */
  readonly vocabSize: number;
  /** Pairs seen fewer times are never merged (default 2). */
  readonly minFrequency?: number;
  /**
   * Special tokens, given ids 0, 1, ... in this order (default {@link DEFAULT_SPECIAL_TOKENS}); `[CLS]`,
   * `[SEP]` and `[PAD]` are appended when missing. They are never produced from text by the merges,
   * only matched as whole added tokens. `[UNK]`, if present, is never produced at all (bytes cover all).
   */
  readonly specialTokens?: readonly string[];
  /** Called now and then (every 1000 texts, every 100 merges, and at the end of each phase). */
  readonly onProgress?: (p: TrainProgress) => void;
}

/** Word counts of a corpus under the GPT-2 pattern. */
class WordCounter {
  readonly counts = new Map<string, number>();
  texts = 0;
  constructor(private readonly onProgress: TrainBpeOptions['onProgress']) {}
  add(text: string): void {
    const m = text.match(GPT2_PATTERN);
    if (m) for (const w of m) this.counts.set(w, (this.counts.get(w) ?? 0) + 1);
    if (++this.texts % 1000 === 0) this.onProgress?.({ phase: 'count', done: this.texts, total: undefined });
  }
}

/** Max-heap of (count, pair key): higher count first, then lower key, so the order is deterministic. */
class PairHeap {
  private readonly counts: number[] = [];
  private readonly keys: number[] = [];
  get size(): number {
    return this.counts.length;
  }
  private better(i: number, j: number): boolean {
    const ci = this.counts[i]!;
    const cj = this.counts[j]!;
    return ci > cj || (ci === cj && this.keys[i]! < this.keys[j]!);
  }
  private swap(i: number, j: number): void {
    const c = this.counts[i]!;
    this.counts[i] = this.counts[j]!;
    this.counts[j] = c;
    const k = this.keys[i]!;
    this.keys[i] = this.keys[j]!;
    this.keys[j] = k;
  }
  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    let i = this.counts.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.better(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }
  /** Removes the best entry; returns [count, key]. */
  pop(): [number, number] {
    const top: [number, number] = [this.counts[0]!, this.keys[0]!];
    const lastC = this.counts.pop()!;
    const lastK = this.keys.pop()!;
    const n = this.counts.length;
    if (n > 0) {
      this.counts[0] = lastC;
      this.keys[0] = lastK;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && this.better(r, l) ? r : l;
        if (!this.better(c, i)) break;
        this.swap(c, i);
        i = c;
      }
    }
    return top;
  }
}

/** Checks the options (before a long corpus is read); returns the special tokens in id order. */
function validate(opts: TrainBpeOptions): string[] {
  const specials: string[] = [];
  for (const t of [...(opts.specialTokens ?? DEFAULT_SPECIAL_TOKENS), ...REQUIRED_SPECIALS]) {
    if (t === '') throw new ConfigError('trainBpe: a special token cannot be empty');
    // a special token spelled like one byte character would take that character's vocabulary entry
    if (BYTE_TO_CHAR.includes(t)) throw new ConfigError(`trainBpe: special token '${t}' clashes with the byte alphabet`);
    if (!specials.includes(t)) specials.push(t);
  }
  const base = specials.length + 256;
  if (!Number.isInteger(opts.vocabSize) || opts.vocabSize < base) {
    throw new ConfigError(`trainBpe: vocabSize must be an integer of at least ${base} (${specials.length} special tokens + 256 bytes), got ${opts.vocabSize}`);
  }
  if (opts.vocabSize >= PAIR_BASE) throw new ConfigError(`trainBpe: vocabSize must be below ${PAIR_BASE}`);
  const mf = opts.minFrequency ?? 2;
  if (!Number.isInteger(mf) || mf < 1) throw new ConfigError(`trainBpe: minFrequency must be a positive integer, got ${mf}`);
  return specials;
}

/** The learning itself, on counted words. */
function learn(counts: ReadonlyMap<string, number>, opts: TrainBpeOptions): PipelineTokenizer {
  const specials = validate(opts);
  const minFrequency = opts.minFrequency ?? 2;

  // vocabulary: specials, then the byte alphabet in code-point order (as HF's trainer sorts it)
  const tokens: string[] = [...specials];
  const index = new Map<string, number>(tokens.map((t, i) => [t, i]));
  const byteId = new Int32Array(256);
  const order = [...BYTE_TO_CHAR.keys()].sort((x, y) => BYTE_TO_CHAR[x]!.charCodeAt(0) - BYTE_TO_CHAR[y]!.charCodeAt(0));
  for (const b of order) {
    const ch = BYTE_TO_CHAR[b]!;
    byteId[b] = tokens.length;
    index.set(ch, tokens.length);
    tokens.push(ch);
  }

  // words as symbol-id arrays, with their corpus counts
  const encoder = new TextEncoder();
  const words: number[][] = [];
  const freq: number[] = [];
  for (const [w, c] of counts) {
    const bytes = encoder.encode(w);
    const syms = new Array<number>(bytes.length);
    for (let i = 0; i < bytes.length; i++) syms[i] = byteId[bytes[i]!]!;
    words.push(syms);
    freq.push(c);
  }

  // pair counts and the pair -> words index (a word may be listed more than once; deduplicated on use)
  const pairCount = new Map<number, number>();
  const where = new Map<number, number[]>();
  const addTo = (key: number, w: number): void => {
    const list = where.get(key);
    if (list === undefined) where.set(key, [w]);
    else if (list[list.length - 1] !== w) list.push(w);
  };
  words.forEach((syms, w) => {
    const f = freq[w]!;
    for (let i = 0; i + 1 < syms.length; i++) {
      const key = syms[i]! * PAIR_BASE + syms[i + 1]!;
      pairCount.set(key, (pairCount.get(key) ?? 0) + f);
      addTo(key, w);
    }
  });
  const heap = new PairHeap();
  for (const [key, c] of pairCount) if (c >= minFrequency) heap.push(c, key);

  const merges: [string, string][] = [];
  const seen = new Int32Array(words.length).fill(-1);
  const target = opts.vocabSize;
  const wanted = target - tokens.length;
  const change = (key: number, delta: number): void => {
    const c = (pairCount.get(key) ?? 0) + delta;
    if (c > 0) pairCount.set(key, c);
    else pairCount.delete(key);
  };

  while (tokens.length < target && heap.size > 0) {
    const [count, key] = heap.pop();
    const current = pairCount.get(key) ?? 0;
    if (current !== count) {
      // stale: the pair lost occurrences since it was pushed
      if (current >= minFrequency) heap.push(current, key);
      continue;
    }
    if (count < minFrequency) break;
    const a = Math.floor(key / PAIR_BASE);
    const b = key - a * PAIR_BASE;
    const merged = tokens[a]! + tokens[b]!;
    let c = index.get(merged);
    if (c === undefined) {
      c = tokens.length;
      tokens.push(merged);
      index.set(merged, c);
    }
    merges.push([tokens[a]!, tokens[b]!]);
    const step = merges.length;
    const touched = new Set<number>();
    // only pairs with a, b or c in them can change; the others appear as often before as after
    const involved = (x: number, y: number): boolean => x === a || x === b || x === c || y === a || y === b || y === c;
    for (const w of where.get(key) ?? []) {
      if (seen[w] === step) continue;
      seen[w] = step;
      const syms = words[w]!;
      const n = syms.length;
      let hit = false;
      for (let i = 0; i + 1 < n; i++) {
        if (syms[i] === a && syms[i + 1] === b) {
          hit = true;
          break;
        }
      }
      if (!hit) continue;
      const f = freq[w]!;
      const out: number[] = [];
      for (let i = 0; i < n; ) {
        if (i + 1 < n && syms[i] === a && syms[i + 1] === b) {
          out.push(c);
          i += 2;
        } else out.push(syms[i++]!);
      }
      for (let i = 0; i + 1 < n; i++) {
        const x = syms[i]!;
        const y = syms[i + 1]!;
        if (involved(x, y)) change(x * PAIR_BASE + y, -f);
      }
      for (let i = 0; i + 1 < out.length; i++) {
        const x = out[i]!;
        const y = out[i + 1]!;
        if (!involved(x, y)) continue;
        const k = x * PAIR_BASE + y;
        change(k, f);
        if (x === c || y === c) {
          touched.add(k);
          addTo(k, w);
        }
      }
      words[w] = out;
    }
    where.delete(key);
    for (const k of touched) {
      const cnt = pairCount.get(k) ?? 0;
      if (cnt >= minFrequency) heap.push(cnt, k);
    }
    if (merges.length % 100 === 0) opts.onProgress?.({ phase: 'merge', done: merges.length, total: wanted });
  }
  opts.onProgress?.({ phase: 'merge', done: merges.length, total: wanted });

  const vocab = new Map<string, number>(tokens.map((t, i) => [t, i]));
  return new PipelineTokenizer({
    normalizer: null,
    preTokenizer: new ByteLevelPreTokenizer({ addPrefixSpace: false, useRegex: true, trimOffsets: true }),
    model: new BpeModel(vocab, merges),
    addedTokens: specials.map((content, id) => ({ id, content, special: true, singleWord: false, lstrip: false, rstrip: false, normalized: false })),
    postProcessor: null,
  });
}

/**
 * Trains a byte-level BPE tokenizer on `texts` (see the module comment for the algorithm). The result
 * writes a `tokenizer.json` that HF `tokenizers` loads with the same ids: no normalizer, `ByteLevel`
 * pre-tokenizer and decoder, BPE model, the special tokens as special added tokens and a
 * `[CLS] $A [SEP]` / `[CLS] $A [SEP] $B [SEP]` post-processor.
 * @throws ConfigError for a vocabSize below specials + 256, or a bad minFrequency
 */
export async function trainBpe(texts: AsyncIterable<string> | Iterable<string>, opts: TrainBpeOptions): Promise<PipelineTokenizer> {
  validate(opts); // fail on bad options before reading a large corpus
  const counter = new WordCounter(opts.onProgress);
  if (Symbol.asyncIterator in texts) for await (const t of texts) counter.add(t);
  else for (const t of texts) counter.add(t);
  opts.onProgress?.({ phase: 'count', done: counter.texts, total: undefined });
  return learn(counter.counts, opts);
}

/** {@link trainBpe} for texts already in memory. */
export function trainBpeSync(texts: Iterable<string>, opts: TrainBpeOptions): PipelineTokenizer {
  validate(opts);
  const counter = new WordCounter(opts.onProgress);
  for (const t of texts) counter.add(t);
  opts.onProgress?.({ phase: 'count', done: counter.texts, total: undefined });
  return learn(counter.counts, opts);
}
