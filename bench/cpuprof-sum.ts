/**
 * Sums a V8 CPU profile (`node --cpu-prof`) by function: where the host's time goes in a training
 * step, and what waits on the device (a read-back, a synchronize) inside which caller.
 *
 *   node --cpu-prof --cpu-prof-dir=prof dist/bench/gpu.js --items train --shape 64x512 --iters 20 ...
 *   node dist/bench/cpuprof-sum.js prof/CPU.*.cpuprofile [--top 30] [--callers NAME]
 *
 * Prints self and inclusive milliseconds per function (`name file:line`); `--callers NAME` adds the
 * call paths (four frames up) into the outermost calls of functions whose key starts with NAME.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The parts of a .cpuprofile this tool reads. */
export interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  samples: number[];
  /** Microseconds before each sample. */
  timeDeltas: number[];
}

/** Per-function times of a profile, in milliseconds. */
export interface ProfileSums {
  totalMs: number;
  self: Map<string, number>;
  inclusive: Map<string, number>;
  /** Call paths into the outermost frames whose key starts with `callersOf`, with their inclusive ms. */
  callers: Map<string, number>;
}

/** Sums `p` by function key (`name file:line`; a recursive function counts once per sample inclusively). */
export function sumProfile(p: CpuProfile, callersOf?: string, depth = 4): ProfileSums {
  if (!Array.isArray(p.nodes) || !Array.isArray(p.samples) || !Array.isArray(p.timeDeltas) || p.samples.length !== p.timeDeltas.length) {
    throw new Error('not a V8 CPU profile: expected nodes, and samples and timeDeltas of one length');
  }
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const key = (id: number) => {
    const f = byId.get(id)!.callFrame;
    return `${f.functionName || '(anonymous)'} ${f.url.split('/').pop() ?? ''}:${f.lineNumber}`;
  };
  const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const callers = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i]!;
    const ms = p.timeDeltas[i]! / 1000;
    if (!byId.has(id)) throw new Error(`sample ${i} names node ${id}, which the profile does not have`);
    total += ms;
    add(self, key(id), ms);
    const stack: string[] = [];
    for (let x: number | undefined = id; x !== undefined; x = parent.get(x)) stack.push(key(x));
    for (const k of new Set(stack)) add(inclusive, k, ms);
    if (callersOf !== undefined) {
      // the outermost frame of the named function, and the frames above it
      let outer = -1;
      for (let j = 0; j < stack.length; j++) if (stack[j]!.startsWith(callersOf)) outer = j;
      if (outer >= 0) add(callers, stack.slice(outer + 1, outer + 1 + depth).join(' < '), ms);
    }
  }
  return { totalMs: total, self, inclusive, callers };
}

function top(m: Map<string, number>, n: number): string[] {
  return [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => `${v.toFixed(1).padStart(10)} ms  ${k}`);
}

function main(): void {
  const file = process.argv[2];
  if (!file || file.startsWith('--')) {
    process.stderr.write('usage: node dist/bench/cpuprof-sum.js FILE.cpuprofile [--top N] [--callers NAME]\n');
    process.exit(2);
  }
  const opt = (n: string) => {
    const i = process.argv.indexOf(`--${n}`);
    return i >= 0 ? process.argv[i + 1] : undefined;
  };
  const n = Number(opt('top') ?? 30);
  const callersOf = opt('callers');
  const s = sumProfile(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile, callersOf);
  const lines = [`total ${s.totalMs.toFixed(1)} ms sampled`, '-- self', ...top(s.self, n), '-- inclusive', ...top(s.inclusive, n)];
  if (callersOf !== undefined) lines.push(`-- callers of ${callersOf}`, ...top(s.callers, n));
  process.stdout.write(`${lines.join('\n')}\n`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) main();
