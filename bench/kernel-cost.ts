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
 *   node dist/bench/kernel-cost.js --env NAME=v1,v2 [--item ...] [--rounds 3]
 *
 * Prints a table (kernel, the run's median, the doubled run's median, the difference) and writes it
 * as JSON. cuBLAS's kernels are not ours to launch twice and are not listed. `--env` times settings
 * of one environment switch instead (say MOE_DIFFUSEQ_PDL=0), each against the run
 * without it, in the same alternated rounds.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Batch-1 sampling's own kernels, largest first (v17 profile; names as of s16). */
const SAMPLE_KERNELS = [
  'grouped_tma256p_nt_bf16',
  'attn_fwd_wgmma',
  'layernorm_bf16_vec3',
  'score_argmax_wgmma',
  'moe_order_small',
  'moe_route_lanes_f32',
  'moe_combine_bf16v',
  'moe_permute_bf16v',
  'attn_fwd_combine',
];
/** A training step's (16 x 2048). */
const TRAIN_KERNELS = [
  'grouped_tma256p_nt_bf16',
  'attn_bwd_dkdv_wgmma',
  'attn_bwd_dq_wgmma',
  'attn_fwd_wgmma',
  'gelu_backward_bf16x8',
  'col_sums_partial_bf16x8',
  'adamw_x4',
  'xe_tied_grad',
  'xe_tied_stats',
  'layernorm_bf16_vec3',
  'moe_permute_bf16v',
  'col_sums_segments_partial',
  'layernorm_backward_dx_bf16_vec',
];

/** One kernel's row: milliseconds of the run as it is and with the kernel doubled (medians). */
export interface KernelCost {
  /** The kernel's name, or NAME=value for an `--env` setting. */
  kernel: string;
  baseMs: number;
  doubledMs: number;
  addedMs: number;
}

/** One timed variant of the run: its row's label and the environment it runs under. */
export interface Variant {
  label: string;
  env: Record<string, string>;
}

/**
 * The variants a command line asks for: `--env NAME=v1,v2` gives one per value of NAME; else one
 * per kernel of `kernels` (the item's defaults when absent), launched twice.
 */
export function variants(kernels: string | undefined, env: string | undefined, defaults: readonly string[]): Variant[] {
  if (env !== undefined) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.+)$/.exec(env);
    if (!m) throw new Error(`--env ${env}: expected NAME=value,value`);
    const values = m[2]!.split(',').map((v) => v.trim()).filter(Boolean);
    if (values.length === 0) throw new Error(`--env ${env}: no values`);
    return values.map((v) => ({ label: `${m[1]}=${v}`, env: { [m[1]!]: v } }));
  }
  const names = (kernels?.split(',') ?? defaults).map((k) => k.trim()).filter(Boolean);
  if (names.length === 0) throw new Error(`--kernels ${kernels}: no kernel names`);
  return names.map((k) => ({ label: k, env: { MOE_DIFFUSEQ_REPEAT_KERNELS: k } }));
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
  --env      NAME=v1,v2: time these settings of an environment switch instead (the run without it
             is the plain run), e.g. MOE_DIFFUSEQ_PDL=0
  --out      the JSON file (default kernel-cost.json)
`);
    return;
  }
  const item = flag('--item') ?? 'sample';
  if (item !== 'sample' && item !== 'train') throw new Error(`--item ${item}: expected sample or train`);
  const rounds = Number(flag('--rounds') ?? 3);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds ${flag('--rounds')}: expected a positive integer`);
  const vs = variants(flag('--kernels'), flag('--env'), item === 'sample' ? SAMPLE_KERNELS : TRAIN_KERNELS);
  const out = flag('--out') ?? 'kernel-cost.json';
  const gpu = join(dirname(fileURLToPath(import.meta.url)), 'gpu.js');
  const benchArgs = item === 'sample' ? ['--items', 'sample', '--batches', '1'] : ['--items', 'train', '--shape', '16x2048'];
  const run = (v: Variant | null): number => {
    const env = { ...process.env, ...(v?.env ?? {}) };
    const r = spawnSync(process.execPath, [gpu, ...benchArgs, '--configs', 'base', '--peer', 'none', '--out', join(dirname(resolve(out)), '.kernel-cost-run.json')], { env, encoding: 'utf8' });
    const text = `${r.stdout}\n${r.stderr}`;
    const ms = parseMs(text, item);
    if (ms === null) throw new Error(`bench:gpu gave no ${item} figure (${v?.label ?? 'plain'}, exit ${r.status}):\n${r.stdout}\n${r.stderr}`);
    // a kernel the run never launches would read as free: say so instead of giving its row
    const never = /MOE_DIFFUSEQ_REPEAT_KERNELS: kernel (\S+) was never launched/.exec(text);
    if (never) throw new Error(`${never[1]} is not launched by the ${item} run: no figure for it`);
    return ms;
  };
  const base: number[] = [];
  const timed = new Map<string, number[]>(vs.map((v) => [v.label, []]));
  for (let round = 0; round < rounds; round++) {
    for (const v of vs) {
      base.push(run(null));
      timed.get(v.label)!.push(run(v));
      process.stderr.write(`round ${round + 1}/${rounds}: ${v.label} ${timed.get(v.label)!.at(-1)!.toFixed(2)} ms (plain ${base.at(-1)!.toFixed(2)})\n`);
    }
  }
  const b = median(base);
  const rows: KernelCost[] = vs.map((v) => {
    const d = median(timed.get(v.label)!);
    return { kernel: v.label, baseMs: b, doubledMs: d, addedMs: d - b };
  });
  rows.sort((x, y) => y.addedMs - x.addedMs);
  const lines = [`| ${flag('--env') ? 'setting' : 'kernel'} (${item}, ${rounds} rounds) | plain ms | ${flag('--env') ? 'with it' : 'doubled'} ms | added ms |`, '|---|---|---|---|'];
  for (const r of rows) lines.push(`| ${r.kernel} | ${r.baseMs.toFixed(2)} | ${r.doubledMs.toFixed(2)} | ${r.addedMs.toFixed(2)} |`);
  process.stdout.write(`${lines.join('\n')}\n`);
  writeFileSync(out, `${JSON.stringify({ item, rounds, plainRuns: base, rows }, null, 2)}\n`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
