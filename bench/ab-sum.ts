/**
 * The medians of an A/B log (bench/device-run.sh sample-ab / train-ab): blocks headed
 * `== <build> (round N)` holding bench:gpu lines such as `base sample 1x2048, 10 denoiser calls:
 * 21.5 ms (...)` or `base train 16x2048: 467,383 tok/s, 70.1 ms/step, ...`. Prints a table of each
 * measure's median milliseconds per build (the first build seen against the others) and the change.
 *
 *   node dist/bench/ab-sum.js sample-ab.log
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { median } from './kernel-cost.js';

/** Milliseconds per build per measure: measure label -> build -> the rounds' figures. */
export type AbRuns = Map<string, Map<string, number[]>>;

/** Reads an A/B log; lines outside a build's block or without a millisecond figure are skipped. */
export function parseAb(text: string): { builds: string[]; runs: AbRuns } {
  const builds: string[] = [];
  const runs: AbRuns = new Map();
  let build: string | null = null;
  for (const line of text.split('\n')) {
    const head = /^== (\S+) \(round \d+\)/.exec(line);
    if (head) {
      build = head[1]!;
      if (!builds.includes(build)) builds.push(build);
      continue;
    }
    const m = /^(base [^:]+): .*?([\d.]+) ms(?:\/step)?\b/.exec(line);
    if (!build || !m) continue;
    const label = m[1]!;
    if (!runs.has(label)) runs.set(label, new Map());
    const per = runs.get(label)!;
    if (!per.has(build)) per.set(build, []);
    per.get(build)!.push(Number(m[2]));
  }
  return { builds, runs };
}

/** The table: one row per measure, the median of each build and the others' change against the first. */
export function abTable(builds: readonly string[], runs: AbRuns): string {
  const lines = [`| measure | ${builds.map((b) => `${b} ms`).join(' | ')} | ${builds.slice(1).map((b) => `${b} / ${builds[0]}`).join(' | ')} |`];
  lines.push(`|---|${builds.map(() => '---|').join('')}${builds.slice(1).map(() => '---|').join('')}`);
  for (const [label, per] of runs) {
    const meds = builds.map((b) => (per.get(b)?.length ? median(per.get(b)!) : NaN));
    const cells = meds.map((v, i) => (Number.isNaN(v) ? '-' : `${v.toFixed(2)} (${per.get(builds[i]!)!.length})`));
    const ratios = meds.slice(1).map((v) => (Number.isNaN(v) || Number.isNaN(meds[0]!) ? '-' : `${(v / meds[0]!).toFixed(3)}x`));
    lines.push(`| ${label} | ${cells.join(' | ')} | ${ratios.join(' | ')} |`);
  }
  return lines.join('\n');
}

function main(): void {
  const file = process.argv[2];
  if (!file || file === '--help') {
    process.stdout.write('usage: node dist/bench/ab-sum.js <a/b log>\nThe medians of each measure per build, from bench/device-run.sh sample-ab / train-ab logs.\n');
    return;
  }
  const { builds, runs } = parseAb(readFileSync(file, 'utf8'));
  process.stdout.write(`${abTable(builds, runs)}\n`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
