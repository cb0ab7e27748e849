/**
 * What each kernel adds to the wall time of batch-1 sampling (a replayed graph) or of a training
 * step: the run timed with the kernel launched twice at each of its launches
 * (MOE_DIFFUSEQ_REPEAT_KERNELS) against the run as it is, rounds alternated in one process tree.
 * A profiler's per-kernel durations do not give this: in a replayed graph a small kernel's ncu time
 * and its share of the wall time differ (bench/NOTES.md, v18a: a fusion that cut 0.42 ms of ncu
 * time left the run's time as it was). The doubled run's figures only time; a repeated in-place
 * kernel changes the numbers.
 *
 *   node dist/bench/kernel-cost.js [--item sample|train] [--rounds 3] [--kernels a,b] [--out k.json]
 *
 * Prints a table (kernel, the run's median, the doubled run's median, the difference) and writes it
 * as JSON. cuBLAS's kernels are not ours to launch twice and are not listed.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Batch-1 sampling's own kernels that are not matrix products, largest first (v17 profile). */
const SAMPLE_KERNELS = [
  'grouped_wgmma64_nt_bf16',
  'attn_fwd_wgmma',
  'layernorm_bf16_vec',
  'score_argmax_wgmma',
  'moe_order_small',
  'moe_route_lanes_f32',
  'moe_combine_bf16v',
  'moe_permute_bf16v',
  'attn_fwd_combine',
];
/** A training step's (16 x 2048). */
const TRAIN_KERNELS = [
  'grouped_wgmma_nt_bf16',
  'attn_bwd_dkdv_wgmma',
  'attn_bwd_dq_wgmma',
  'attn_fwd_wgmma',
  'gelu_backward_bf16x8',
  'col_sums_partial_bf16x8',
  'adamw_x4',
  'xe_tied_grad',
  'xe_tied_stats',
  'layernorm_bf16_vec',
  'moe_permute_bf16v',
  'col_sums_segments_partial',
  'layernorm_backward_dx_bf16_vec',
];

/** One kernel's row: milliseconds of the run as it is and with the kernel doubled (medians). */
export interface KernelCost {
  kernel: string;
  baseMs: number;
  doubledMs: number;
  addedMs: number;
}

/** The median of a non-empty list. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The milliseconds in a bench:gpu line: a sampling run's, or a training step's. */
export function parseMs(output: string, item: 'sample' | 'train'): number | null {
  const re = item === 'sample' ? /^base sample 1x\d+, \d+ denoiser calls: ([\d.]+) ms/m : /^base train \d+x\d+: [\d,]+ tok\/s, ([\d.]+) ms\/step/m;
  const m = re.exec(output);
  return m ? Number(m[1]) : null;
}

function main(): void {
  const args = process.argv.slice(2);
  const flag = (name: string): string | undefined => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  if (args.includes('--help')) {
    process.stdout.write(`usage: node dist/bench/kernel-cost.js [--item sample|train] [--rounds N] [--kernels a,b] [--out file.json]
What each kernel adds to the wall time: each run timed with the kernel launched twice
(MOE_DIFFUSEQ_REPEAT_KERNELS) against the run as it is, rounds alternated.
  --item     sample (batch-1 sampling of base, default) or train (a base 16 x 2048 step)
  --rounds   rounds of every kernel and the plain run (default 3)
  --kernels  comma-separated kernel names (default: the item's own kernels, largest first)
  --out      the JSON file (default kernel-cost.json)
`);
    return;
  }
  const item = flag('--item') ?? 'sample';
  if (item !== 'sample' && item !== 'train') throw new Error(`--item ${item}: expected sample or train`);
  const rounds = Number(flag('--rounds') ?? 3);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds ${flag('--rounds')}: expected a positive integer`);
  const kernels = (flag('--kernels')?.split(',').filter(Boolean) ?? (item === 'sample' ? SAMPLE_KERNELS : TRAIN_KERNELS)).map((k) => k.trim());
  const out = flag('--out') ?? 'kernel-cost.json';
  const gpu = join(dirname(fileURLToPath(import.meta.url)), 'gpu.js');
  const benchArgs = item === 'sample' ? ['--items', 'sample', '--batches', '1'] : ['--items', 'train', '--shape', '16x2048'];
  const run = (repeat: string): number => {
    const env = { ...process.env, MOE_DIFFUSEQ_REPEAT_KERNELS: repeat };
    const r = spawnSync(process.execPath, [gpu, ...benchArgs, '--configs', 'base', '--peer', 'none', '--out', join(dirname(resolve(out)), '.kernel-cost-run.json')], { env, encoding: 'utf8' });
    const ms = parseMs(`${r.stdout}\n${r.stderr}`, item);
    if (ms === null) throw new Error(`bench:gpu gave no ${item} figure (repeat '${repeat}', exit ${r.status}):\n${r.stdout}\n${r.stderr}`);
    return ms;
  };
  const base: number[] = [];
  const doubled = new Map<string, number[]>(kernels.map((k) => [k, []]));
  for (let round = 0; round < rounds; round++) {
    for (const k of kernels) {
      base.push(run(''));
      doubled.get(k)!.push(run(k));
      process.stderr.write(`round ${round + 1}/${rounds}: ${k} ${doubled.get(k)!.at(-1)!.toFixed(2)} ms (plain ${base.at(-1)!.toFixed(2)})\n`);
    }
  }
  const b = median(base);
  const rows: KernelCost[] = kernels.map((k) => {
    const d = median(doubled.get(k)!);
    return { kernel: k, baseMs: b, doubledMs: d, addedMs: d - b };
  });
  rows.sort((x, y) => y.addedMs - x.addedMs);
  const lines = [`| kernel (${item}, ${rounds} rounds) | plain ms | doubled ms | added ms |`, '|---|---|---|---|'];
  for (const r of rows) lines.push(`| ${r.kernel} | ${r.baseMs.toFixed(2)} | ${r.doubledMs.toFixed(2)} | ${r.addedMs.toFixed(2)} |`);
  process.stdout.write(`${lines.join('\n')}\n`);
  writeFileSync(out, `${JSON.stringify({ item, rounds, plainRuns: base, rows }, null, 2)}\n`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
