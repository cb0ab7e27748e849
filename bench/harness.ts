/**
 * Shared pieces of the CPU kernel benchmark (bench/cpu-kernels.ts): the result rows, the kernel
 * interface every implementation is wrapped in, the sliding-window attention pattern (one
 * definition, used for the masks, the FLOP count, the js loop and the float64 reference), the
 * correctness checks, the interleaved timer, and the report (machine info, table).
 */
import { readFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';

/** The implementations compared. `ours` is the CPU backend of this package. */
export type Impl = 'ours' | 'tfjs-wasm' | 'jax-js' | 'js-loop';
/** The benchmarked operations. */
export type Op = 'matmul' | 'attention';

/** One row of bench/results/cpu-kernels.json (and of the printed table). */
export interface ResultRow {
  op: Op;
  /** n for matmul (n x n times n x n); a shape string for attention. */
  size: number | string;
  impl: Impl;
  /** Median throughput in GFLOP/s (useful FLOPs only), or null when not timed. */
  gflops: number | null;
  /** GFLOP/s of the fastest call (a hint of the machine's capability when other work interferes). */
  bestGflops?: number;
  /** Median wall time of one call in milliseconds. */
  ms?: number;
  /** Timed calls the median is taken over. */
  reps?: number;
  /** Threads the implementation computed on. */
  threads?: number;
  /** Normwise relative error of the checked entries against the float64 reference. */
  maxRelErr?: number;
  /** How the implementation was run, or why it was not timed. */
  note?: string;
  /**
   * Cores' worth of CPU that other processes used while this cell was timed (0 = quiet; on this
   * 2-core machine 1 means another job held a whole core). Linux only.
   */
  othersCores?: number;
}

/**
 * One implementation of one problem, prepared for timing: inputs already resident in the
 * implementation's own memory (so only the kernel is timed, not data transfer).
 */
export interface Kernel {
  /** Runs the operation once and returns when the result is really computed. */
  run(): void | Promise<void>;
  /** The output of the last run(), copied to the host (for the correctness check). */
  output(): Float32Array | Promise<Float32Array>;
  /** Frees the implementation's tensors. */
  dispose(): void;
}

// ---- the sliding-window pattern ---------------------------------------------------------------

/** A sliding-window attention problem (batch 1): qkv [S, 3d] -> out [S, d], S = G + N, d = H dh. */
export interface AttnShape {
  /** Global tokens in front of the sequence. */
  G: number;
  /** Local (windowed) tokens. */
  N: number;
  H: number;
  dh: number;
  /** One-sided window w: the local token at position p attends positions p + k for |k| <= w. */
  w: number;
}

/**
 * The keys row i attends to, as [first local key row, last local key row] plus "all globals":
 * a global row (i < G) attends every row; a local row at p = i - G attends rows 0..G-1 and the
 * local rows G + q with |q - p| <= w, 0 <= q < N. Mirrors src/backend/cpu/attention.ts keysOf
 * (dilation 1) but is written independently, so the reference does not inherit a bug from it.
 */
export function localKeyRange(s: AttnShape, i: number): [number, number] {
  if (i < s.G) return [s.G, s.G + s.N - 1];
  const p = i - s.G;
  return [s.G + Math.max(0, p - s.w), s.G + Math.min(s.N - 1, p + s.w)];
}

/** Allowed (query, key) pairs of one head, counted exactly. */
export function allowedPairs(s: AttnShape): number {
  let pairs = 0;
  for (let i = 0; i < s.G + s.N; i++) {
    const [lo, hi] = localKeyRange(s, i);
    pairs += s.G + (hi - lo + 1);
  }
  return pairs;
}

/** Useful FLOPs of the attention: QK^T and PV, one multiply-add (2 FLOPs) per element each. */
export function attentionFlops(s: AttnShape): number {
  return 4 * s.dh * allowedPairs(s) * s.H;
}

/** A compact description of the shape, used as the `size` of the attention rows. */
export function attnShapeLabel(s: AttnShape): string {
  return `B1 S${s.G + s.N} (G${s.G}+N${s.N}) H${s.H} dh${s.dh} w${s.w}`;
}

// ---- float64 references -------------------------------------------------------------------------

/** A deterministic generator of sample indices (the check must not depend on Math.random). */
function lcg(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 4294967296;
  };
}

/**
 * Normwise relative error of C = A B (n x n, row-major) on a sample of entries: max |c - ref| /
 * max |ref| over the sample, ref computed in float64. Normwise, because a single entry that
 * happens to be near zero would make an entrywise relative error meaningless.
 */
export function checkMatmul(n: number, a: Float32Array, b: Float32Array, c: Float32Array, samples = 256): number {
  const rnd = lcg(n * 7919);
  const picks: [number, number][] = [[0, 0], [0, n - 1], [n - 1, 0], [n - 1, n - 1]];
  while (picks.length < samples) picks.push([Math.floor(rnd() * n), Math.floor(rnd() * n)]);
  let err = 0;
  let ref = 0;
  for (const [i, j] of picks) {
    let s = 0;
    for (let k = 0; k < n; k++) s += a[i * n + k]! * b[k * n + j]!;
    err = Math.max(err, Math.abs(c[i * n + j]! - s));
    ref = Math.max(ref, Math.abs(s));
  }
  return Number.isFinite(err) ? err / ref : Infinity;
}

/** float64 attention output of row i, all heads: out [d] (scale 1/sqrt(dh), as the backend). */
export function attentionRowRef(s: AttnShape, qkv: Float32Array, i: number): Float64Array {
  const d = s.H * s.dh;
  const S = s.G + s.N;
  const scale = 1 / Math.sqrt(s.dh);
  const [lo, hi] = localKeyRange(s, i);
  const keys: number[] = [];
  for (let j = 0; j < s.G; j++) keys.push(j);
  for (let j = lo; j <= hi; j++) keys.push(j);
  if (keys.some((j) => j < 0 || j >= S)) throw new Error('attentionRowRef: key outside the sequence');
  const out = new Float64Array(d);
  const sc = new Float64Array(keys.length);
  for (let h = 0; h < s.H; h++) {
    const q = i * 3 * d + h * s.dh;
    let mx = -Infinity;
    for (let t = 0; t < keys.length; t++) {
      const k = keys[t]! * 3 * d + d + h * s.dh;
      let dot = 0;
      for (let x = 0; x < s.dh; x++) dot += qkv[q + x]! * qkv[k + x]!;
      sc[t] = dot * scale;
      mx = Math.max(mx, sc[t]!);
    }
    let sum = 0;
    for (let t = 0; t < keys.length; t++) {
      sc[t] = Math.exp(sc[t]! - mx);
      sum += sc[t]!;
    }
    for (let t = 0; t < keys.length; t++) {
      const v = keys[t]! * 3 * d + 2 * d + h * s.dh;
      const p = sc[t]! / sum;
      for (let x = 0; x < s.dh; x++) out[h * s.dh + x]! += p * qkv[v + x]!;
    }
  }
  return out;
}

/** Rows the attention check covers: both ends of the globals, the sequence edges, block seams. */
export function attentionCheckRows(s: AttnShape): number[] {
  const S = s.G + s.N;
  const rows = [0, s.G - 1, s.G, s.G + 1, s.G + s.w - 1, s.G + s.w, s.G + (s.N >> 1), S - s.w - 1, S - 2, S - 1];
  return [...new Set(rows.filter((r) => r >= 0 && r < S))].sort((x, y) => x - y);
}

/** Normwise relative error of an attention output [S, d] on the check rows (see checkMatmul). */
export function checkAttention(s: AttnShape, out: Float32Array, refs: Map<number, Float64Array>): number {
  const d = s.H * s.dh;
  let err = 0;
  let ref = 0;
  for (const [i, r] of refs) {
    for (let x = 0; x < d; x++) {
      err = Math.max(err, Math.abs(out[i * d + x]! - r[x]!));
      ref = Math.max(ref, Math.abs(r[x]!));
    }
  }
  return Number.isFinite(err) ? err / ref : Infinity;
}

// ---- timing -----------------------------------------------------------------------------------

/** Median of a non-empty list. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** A kernel taking part in one cell's timing, with its samples (ms per call). */
export interface Contender {
  impl: Impl;
  kernel: Kernel;
  samples: number[];
  /** Stop after this many samples even if the time budget is not spent (slow js loops). */
  maxSamples: number;
}

/** Options of {@link timeInterleaved}. */
export interface TimingOptions {
  /** Wall time each contender should spend being timed, in total (ms). */
  targetMs: number;
  /** Rounds the budget is split into. */
  rounds: number;
  /** Samples every contender gets at least (slow ones exceed targetMs to reach it). */
  minSamples: number;
  /**
   * Untimed calls (for this long, at least one) before each contender's slice, except for
   * contenders limited to a few slow calls. Why: while the other libraries run, a contender's
   * caches go cold and its worker threads sleep (their cores may idle down), which a sustained
   * workload never sees; re-warming excludes that alike for every implementation.
   */
  rewarmMs: number;
}

/**
 * Times the contenders in interleaved rounds (A A A, B B B, C C C, A A A, ...) rather than one
 * after the other, so a burst of load from another process on this shared 2-core machine hits all
 * implementations alike instead of skewing the ratio against whichever ran during it. Each round
 * gives every contender a re-warm-up and then targetMs / rounds of timed calls (at least one); the
 * caller takes the median.
 */
export async function timeInterleaved(cs: Contender[], o: TimingOptions): Promise<void> {
  const slice = o.targetMs / o.rounds;
  // rounds past o.rounds only serve contenders that still lack minSamples (bounded, in case a
  // contender's calls are very slow)
  for (let r = 0; r < o.rounds * 4; r++) {
    let busy = false;
    for (const c of cs) {
      const spent = c.samples.reduce((a, b) => a + b, 0);
      if (c.samples.length >= c.maxSamples) continue;
      if (c.samples.length >= o.minSamples && (spent >= o.targetMs || r >= o.rounds)) continue;
      busy = true;
      if (c.maxSamples > o.minSamples) await warmUp(c.kernel, o.rewarmMs);
      const t0 = performance.now();
      do {
        const t = performance.now();
        await c.kernel.run();
        c.samples.push(performance.now() - t);
      } while (performance.now() - t0 < slice && c.samples.length < c.maxSamples);
    }
    if (!busy) break;
  }
}

/** Runs a kernel until warmMs has passed (at least once): JIT tiers, wasm tier-up, caches, allocators. */
export async function warmUp(k: Kernel, warmMs: number): Promise<void> {
  const t0 = performance.now();
  do await k.run();
  while (performance.now() - t0 < warmMs);
}

// ---- interference from other processes ----------------------------------------------------------

/** Machine-wide busy CPU time and this process's own CPU time, in seconds, at one instant. */
export interface CpuSnapshot {
  wall: number;
  busy: number;
  own: number;
}

/**
 * Reads /proc/stat (all CPUs: user + nice + system + irq + softirq + steal, in USER_HZ = 1/100 s)
 * and process.cpuUsage() (all threads of this process). The difference over an interval is the
 * CPU time other processes (or the hypervisor) took: on a shared 2-core machine that explains
 * most of the run-to-run spread, so it is recorded with every cell. Null where /proc is missing.
 */
export function cpuSnapshot(): CpuSnapshot | null {
  let line: string;
  try {
    line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  } catch {
    return null;
  }
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
  const u = process.cpuUsage();
  return { wall: performance.now() / 1000, busy: (user + nice + system + irq + softirq + steal) / 100, own: (u.user + u.system) / 1e6 };
}

/** Average cores' worth of CPU used by other processes between two snapshots. */
export function othersCores(a: CpuSnapshot | null, b: CpuSnapshot | null): number | undefined {
  if (!a || !b || b.wall <= a.wall) return undefined;
  return Math.max(0, b.busy - a.busy - (b.own - a.own)) / (b.wall - a.wall);
}

// ---- report -----------------------------------------------------------------------------------

/** What the numbers were measured on. */
export interface MachineInfo {
  cpu: string;
  cores: number;
  node: string;
  v8: string;
  platform: string;
  date: string;
  /** 1, 5 and 15 minute load averages when the benchmark started. */
  load: number[];
}

/** The machine the benchmark runs on. */
export function machineInfo(): MachineInfo {
  return {
    cpu: cpus()[0]?.model.trim() ?? 'unknown',
    cores: availableParallelism(),
    node: process.version,
    v8: process.versions.v8,
    platform: `${process.platform}-${process.arch}`,
    date: new Date().toISOString(),
    load: loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

/**
 * Formats rows as an aligned text table: ratio = ours median GFLOP/s / the row's (same op and size),
 * best = GFLOP/s of the row's fastest call, others = cores' worth of CPU other processes used
 * while the cell was timed (see {@link othersCores}; above ~0.2 the cell's numbers are disturbed).
 */
export function formatTable(rows: readonly ResultRow[]): string {
  const ours = new Map<string, number>();
  for (const r of rows) if (r.impl === 'ours' && r.gflops !== null) ours.set(`${r.op}|${r.size}`, r.gflops);
  const head = ['op', 'size', 'impl', 'ms', 'GFLOP/s', 'ours/impl', 'best', 'others', 'note'];
  const body = rows.map((r) => {
    const o = ours.get(`${r.op}|${r.size}`);
    const ratio = r.impl === 'ours' || r.gflops === null || o === undefined ? '' : `${(o / r.gflops).toFixed(2)}x`;
    const best = r.bestGflops === undefined ? '' : r.bestGflops.toFixed(1);
    const others = r.othersCores === undefined ? '' : r.othersCores.toFixed(2);
    return [r.op, String(r.size), r.impl, r.ms === undefined ? '-' : fmtMs(r.ms), r.gflops === null ? '-' : r.gflops.toFixed(1), ratio, best, others, r.note ?? ''];
  });
  const width = head.map((h, c) => Math.max(h.length, ...body.map((b) => b[c]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((x, c) => (c === cells.length - 1 ? x : c >= 3 && c <= 7 ? x.padStart(width[c]!) : x.padEnd(width[c]!)))
      .join('  ')
      .trimEnd();
  return [line(head), line(width.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

function fmtMs(ms: number): string {
  return ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2);
}
