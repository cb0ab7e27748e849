/**
 * The BPE model: a word starts as its characters and adjacent pairs are merged, always the pair whose
 * merge rule has the lowest rank (the earliest learnt), the leftmost one on ties, until no rule
 * applies. This is what HF `tokenizers` does (and, for GPT-2's merges, what OpenAI's `bpe()` does).
 * With a byte-level pre-tokenizer every character is in the vocabulary, so nothing is unknown.
 */
import type { JsonObject, TokenModel } from './components.js';
import { invertVocab, vocabToJSON } from './components.js';

/** Options of {@link BpeModel}, as in `tokenizer.json`. */
export interface BpeOptions {
  /** Token used for characters missing from the vocabulary; null drops them (byte-level never needs it). */
  readonly unkToken?: string | null;
  /** Several unknown characters in a row give one unknown token. */
  readonly fuseUnk?: boolean;
  /** Prefix of non-initial symbols (BERT-like BPE); null for GPT-2. */
  readonly continuingSubwordPrefix?: string | null;
  /** Suffix of the last symbol (`</w>` in the original BPE); null for GPT-2. */
  readonly endOfWordSuffix?: string | null;
  /** A word that is itself a vocabulary entry is emitted whole (Llama 3 style); default false. */
  readonly ignoreMerges?: boolean;
}

/** Pair keys: `left * PAIR_BASE + right` stays an exact double for ids below 2^21. */
export const PAIR_BASE = 2 ** 21;
const CACHE_LIMIT = 200_000;
/** Heap entries are `rank * POS_BASE + position`, so one number orders by rank, then position. */
const POS_BASE = 2 ** 26;

/** A byte-level (or character) BPE model with ranked merges. */
export class BpeModel implements TokenModel {
  readonly type = 'BPE' as const;
  readonly tokens: readonly (string | undefined)[];
  /** Merge rules in rank order, as token pairs. */
  readonly merges: readonly (readonly [string, string])[];
  readonly unkToken: string | null;
  readonly fuseUnk: boolean;
  readonly prefix: string | null;
  readonly suffix: string | null;
  readonly ignoreMerges: boolean;
  readonly unkId: number | undefined;
  get continuingPrefix(): string | undefined {
    return this.prefix ?? undefined;
  }
  /** Pair key -> rank. */
  private readonly rank = new Map<number, number>();
  /** Rank -> id of the merged token. */
  private readonly mergedId: Int32Array;
  private cache = new Map<string, readonly number[]>();

  /**
   * @param vocab token -> id
   * @param merges merge rules, best first; each pair's parts and their concatenation must be tokens
   * @throws Error naming the first bad merge (the loaders turn it into an InputError)
   */
  constructor(readonly vocab: ReadonlyMap<string, number>, merges: readonly (readonly [string, string])[], opts: BpeOptions = {}) {
    this.unkToken = opts.unkToken ?? null;
    this.fuseUnk = opts.fuseUnk ?? false;
    this.prefix = opts.continuingSubwordPrefix || null;
    this.suffix = opts.endOfWordSuffix || null;
    this.ignoreMerges = opts.ignoreMerges ?? false;
    this.tokens = invertVocab(vocab);
    if (this.tokens.length >= PAIR_BASE) throw new Error(`vocabulary too large (${this.tokens.length} ids; at most ${PAIR_BASE})`);
    if (this.unkToken !== null && !vocab.has(this.unkToken)) throw new Error(`the unknown token '${this.unkToken}' is not in the vocabulary`);
    this.unkId = this.unkToken === null ? undefined : vocab.get(this.unkToken);
    this.merges = merges;
    this.mergedId = new Int32Array(merges.length);
    const prefixLen = this.prefix?.length ?? 0;
    merges.forEach(([a, b], r) => {
      const ia = vocab.get(a);
      const ib = vocab.get(b);
      if (ia === undefined || ib === undefined) throw new Error(`merge ${r + 1} ('${a} ${b}'): '${ia === undefined ? a : b}' is not in the vocabulary`);
      // with a continuing prefix, "a" + "##b" merges to "ab" (the prefix of the right part goes)
      const merged = a + (prefixLen && b.startsWith(this.prefix!) ? b.slice(prefixLen) : b);
      const im = vocab.get(merged);
      if (im === undefined) throw new Error(`merge ${r + 1} ('${a} ${b}'): the merged token '${merged}' is not in the vocabulary`);
      const key = ia * PAIR_BASE + ib;
      // a rule listed twice keeps its last rank, as in HF (whose map insert overwrites)
      this.rank.set(key, r);
      this.mergedId[r] = im;
    });
  }

  tokenize(word: string, out: number[]): void {
    let ids = this.cache.get(word);
    if (ids === undefined) {
      ids = this.encodeWord(word);
      if (this.cache.size >= CACHE_LIMIT) this.cache = new Map();
      this.cache.set(word, ids);
    }
    for (const id of ids) out.push(id);
  }

  /** Initial symbols (one per character, unknowns handled) then merges. */
  private encodeWord(word: string): readonly number[] {
    if (this.ignoreMerges) {
      const whole = this.vocab.get(word);
      if (whole !== undefined) return [whole];
    }
    const syms: number[] = [];
    const chars = Array.from(word);
    const unkId = this.unkId ?? -1;
    let lastWasUnk = false;
    chars.forEach((ch, i) => {
      let s = ch;
      if (i > 0 && this.prefix) s = this.prefix + s;
      if (i === chars.length - 1 && this.suffix) s += this.suffix;
      const id = this.vocab.get(s);
      if (id !== undefined) {
        syms.push(id);
        lastWasUnk = false;
      } else if (unkId >= 0) {
        if (!(this.fuseUnk && lastWasUnk)) syms.push(unkId);
        lastWasUnk = true;
      }
      // no unknown token: the character is dropped, as HF does
    });
    return this.merge(syms);
  }

  /**
   * Applies merges to a symbol sequence: a doubly linked list plus a min-heap of (rank, position), so
   * a word of n symbols costs O(n log n) even for very long words (whitespace runs, base64 blobs).
   */
  private merge(syms: number[]): number[] {
    const n = syms.length;
    if (n < 2) return syms;
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap: number[] = [];
    const pushPair = (i: number): void => {
      const j = next[i]!;
      if (j < 0) return;
      const r = this.rank.get(syms[i]! * PAIR_BASE + syms[j]!);
      if (r !== undefined) heapPush(heap, r * POS_BASE + i);
    };
    for (let i = 0; i < n - 1; i++) pushPair(i);
    while (heap.length) {
      const top = heapPop(heap);
      const r = Math.floor(top / POS_BASE);
      const i = top - r * POS_BASE;
      if (!alive[i]) continue;
      const j = next[i]!;
      if (j < 0) continue;
      // stale entry: the pair at i changed since it was pushed
      if (this.rank.get(syms[i]! * PAIR_BASE + syms[j]!) !== r) continue;
      syms[i] = this.mergedId[r]!;
      alive[j] = 0;
      next[i] = next[j]!;
      if (next[j]! >= 0) prev[next[j]!] = i;
      if (prev[i]! >= 0) pushPair(prev[i]!);
      pushPair(i);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]!) out.push(syms[i]!);
    return out;
  }

  toJSON(): JsonObject {
    return {
      type: 'BPE',
      dropout: null,
      unk_token: this.unkToken,
      continuing_subword_prefix: this.prefix,
      end_of_word_suffix: this.suffix,
      fuse_unk: this.fuseUnk,
      byte_fallback: false,
      ...(this.ignoreMerges ? { ignore_merges: true } : {}),
      vocab: vocabToJSON(this.tokens),
      // "a b" strings: every version of HF tokenizers reads them (byte-level tokens never hold a space)
      merges: this.merges.map(([a, b]) => `${a} ${b}`),
    };
  }
}

/** Min-heap push on a plain number array. */
function heapPush(h: number[], v: number): void {
  let i = h.length;
  h.push(v);
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (h[p]! <= v) break;
    h[i] = h[p]!;
    i = p;
  }
  h[i] = v;
}

/** Min-heap pop; the heap must not be empty. */
function heapPop(h: number[]): number {
  const top = h[0]!;
  const last = h.pop()!;
  const n = h.length;
  if (n > 0) {
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && h[r]! < h[l]! ? r : l;
      if (h[c]! >= last) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = last;
  }
  return top;
}
