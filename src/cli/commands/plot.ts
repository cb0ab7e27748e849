/** `moe-diffuseq plot RUN`: draws a run's metrics.jsonl as SVG curves. */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../../errors.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { renderSvg, type Panel } from '../../io/plot.js';
import { defineCommand } from '../command.js';

export const plotCommand = defineCommand({
  name: 'plot',
  summary: "draw a run's training curves (loss terms, validation loss, BLEU/ROUGE) as an SVG file",
  usage: 'plot RUN [--out FILE]',
  positionals: { name: 'RUN', min: 1, max: 1 },
  options: {
    out: { type: 'string', description: 'SVG file to write', placeholder: 'FILE', default: 'RUN/curves.svg' },
  },
  async run(f, [run]) {
    const path = existsSync(join(run!, 'metrics.jsonl')) ? join(run!, 'metrics.jsonl') : run!;
    if (!existsSync(path) || statSync(path).isDirectory()) throw new InputError(run!, undefined, 'no metrics.jsonl here (is it a run folder of moe-diffuseq train?)');
    const rows: Record<string, unknown>[] = [];
    readFileSync(path, 'utf8')
      .split('\n')
      .forEach((l, i) => {
        if (!l.trim()) return;
        try {
          rows.push(JSON.parse(l) as Record<string, unknown>);
        } catch {
          throw new InputError(path, i + 1, 'not JSON');
        }
      });
    const series = (split: string, key: string): [number, number][] =>
      rows.filter((r) => r['split'] === split && typeof r[key] === 'number' && typeof r['step'] === 'number').map((r) => [r['step'] as number, r[key] as number]);
    const panels: Panel[] = [
      { title: 'loss', logY: true, series: [{ name: 'train', color: '#1f77b4', points: series('train', 'loss') }, { name: 'valid', color: '#d62728', points: series('valid', 'loss') }] },
      {
        title: 'loss terms (train)',
        logY: true,
        series: [
          { name: 'mse', color: '#2ca02c', points: series('train', 'mse') },
          { name: 'nll', color: '#9467bd', points: series('train', 'nll') },
          { name: 'tT', color: '#8c564b', points: series('train', 'tT') },
        ],
      },
      {
        title: 'valid BLEU / ROUGE-L',
        series: [
          { name: 'bleu', color: '#ff7f0e', points: series('valid', 'bleu') },
          { name: 'rougeL', color: '#17becf', points: series('valid', 'rougeL') },
        ],
      },
      { title: 'tokens/s', series: [{ name: 'train', color: '#7f7f7f', points: series('train', 'tokensPerSec') }] },
    ];
    const out = f.out ?? join(existsSync(join(run!, 'metrics.jsonl')) ? run! : '.', 'curves.svg');
    writeFileAtomic(out, [renderSvg(panels, `moe-diffuseq run ${run}`)]);
    process.stdout.write(`wrote ${out}\n`);
    return 0;
  },
});
