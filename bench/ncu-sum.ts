/**
 * Sums Nsight Compute's per-launch GPU times by kernel name: where a step's kernel time goes,
 * without the ~40 us per call that `--items kernels` (host-timed, synchronised) adds.
 *
 *   ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
 *     node dist/bench/gpu.js --items kernels --configs base --peer none > step.csv
 *   node dist/bench/ncu-sum.js step.csv --runs 2 [--top 45]
 *
 * `--items kernels` runs the step twice (a warm-up, then the profiled one), so `--runs 2` gives one
 * step's figures. Prints a table of milliseconds, launches and shares, largest first.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Fields of one CSV line (double-quoted fields, "" inside quotes for a quote). */
export function csvFields(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        cur += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else cur += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

/** Milliseconds per unit of ncu's duration column. */
const UNIT_MS: Record<string, number> = { ns: 1e-6, nsecond: 1e-6, us: 1e-3, usecond: 1e-3, ms: 1, msecond: 1 };

/** Per kernel name (the part before its parameter list): total ms and launches, over `runs`. */
export function sumByKernel(csv: string, runs = 1): Map<string, { ms: number; launches: number }> {
  const lines = csv.split(/\r?\n/);
  const head = lines.findIndex((l) => l.startsWith('"ID"'));
  if (head < 0) throw new Error('no ncu CSV header ("ID", ...) found: was ncu run with --csv --page raw?');
  const cols = csvFields(lines[head]!);
  const name = cols.indexOf('Kernel Name');
  const time = cols.indexOf('gpu__time_duration.sum');
  if (name < 0 || time < 0) throw new Error('the CSV lacks "Kernel Name" or gpu__time_duration.sum');
  const unit = csvFields(lines[head + 1] ?? '')[time] ?? '';
  const scale = UNIT_MS[unit];
  if (scale === undefined) throw new Error(`unknown duration unit "${unit}" on line ${head + 2}`);
  const sums = new Map<string, { ms: number; launches: number }>();
  for (let i = head + 2; i < lines.length; i++) {
    const f = csvFields(lines[i]!);
    const v = Number((f[time] ?? '').replace(/,/g, ''));
    if (f.length <= time || !Number.isFinite(v) || f[time] === '') continue;
    const k = f[name]!.split('(')[0]!.trim();
    const e = sums.get(k) ?? { ms: 0, launches: 0 };
    e.ms += (v * scale) / runs;
    e.launches += 1 / runs;
    sums.set(k, e);
  }
  return sums;
}

function main(): void {
  const file = process.argv[2];
  const opt = (n: string, d: number): number => {
    const i = process.argv.indexOf(`--${n}`);
    return i >= 0 ? Number(process.argv[i + 1]) : d;
  };
  if (!file || file.startsWith('--')) {
    process.stderr.write('usage: node dist/bench/ncu-sum.js STEP.csv [--runs N] [--top N]\n');
    process.exit(2);
  }
  const sums = sumByKernel(readFileSync(file, 'utf8'), opt('runs', 1));
  const rows = [...sums.entries()].sort((a, b) => b[1].ms - a[1].ms);
  const total = rows.reduce((t, [, e]) => t + e.ms, 0);
  console.log(`total ${total.toFixed(2)} ms of kernel time in ${Math.round(rows.reduce((t, [, e]) => t + e.launches, 0))} launches`);
  for (const [k, e] of rows.slice(0, opt('top', 45))) {
    console.log(`  ${k.slice(0, 64).padEnd(64)} ${e.ms.toFixed(3).padStart(9)} ms ${String(Math.round(e.launches)).padStart(6)}  ${((100 * e.ms) / total).toFixed(1).padStart(5)}%`);
  }
}

// run as a script, not when a test imports it
if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) main();
