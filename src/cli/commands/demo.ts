/** `moe-diffuseq demo`: the main job on a built-in default (see src/train/demo.ts). */
import { DEFAULT_DEMO, runDemo } from '../../train/demo.js';
import { defineCommand } from '../command.js';

export const demoCommand = defineCommand({
  name: 'demo',
  summary: 'train the tiny model on bundled Wiki-Auto pairs, then sample held-out inputs and score them (BLEU/ROUGE)',
  usage: 'demo [--out DIR] [--steps N] [--fresh]',
  details: [
    'Everything is local: the data (2000 Wiki-Auto sentences x 8 simplifications, CC BY-SA 4.0) ships',
    'with the package. About 7 minutes on 2 CPU cores. Running it again continues the run in --out',
    '(or starts over with --fresh); afterwards `moe-diffuseq sample --model DIR/run --text "..."` works.',
  ].join('\n'),
  options: {
    out: { type: 'string', description: 'run folder', placeholder: 'DIR', default: DEFAULT_DEMO.out },
    steps: { type: 'int', description: 'training steps', default: DEFAULT_DEMO.steps },
    'eval-sources': { type: 'int', description: 'held-out sources sampled and scored', default: DEFAULT_DEMO.evalSources },
    show: { type: 'int', description: 'examples printed', default: DEFAULT_DEMO.show },
    'sample-steps': { type: 'int', description: 'denoiser calls per sample', default: DEFAULT_DEMO.sampleSteps },
    seed: { type: 'int', description: 'seed', default: DEFAULT_DEMO.seed },
    fresh: { type: 'boolean', description: 'start over even if --out holds a run' },
    json: { type: 'boolean', description: 'print the result as JSON' },
    quiet: { type: 'boolean', description: 'no progress bars' },
  },
  async run(f) {
    const r = await runDemo(
      {
        out: f.out ?? DEFAULT_DEMO.out,
        steps: f.steps ?? DEFAULT_DEMO.steps,
        evalSources: f['eval-sources'] ?? DEFAULT_DEMO.evalSources,
        show: f.show ?? DEFAULT_DEMO.show,
        sampleSteps: f['sample-steps'] ?? DEFAULT_DEMO.sampleSteps,
        seed: f.seed ?? DEFAULT_DEMO.seed,
        fresh: !!f.fresh,
      },
      { progress: !f.quiet },
    );
    const m = r.metrics;
    if (f.json) {
      process.stdout.write(JSON.stringify(r, null, 2) + '\n');
      return 0;
    }
    const lines: string[] = [''];
    r.examples.forEach((e, i) => {
      lines.push(`[${i + 1}] input:     ${e.src}`, `    output:    ${e.hyp}`, `    reference: ${e.refs[0]}`, '');
    });
    const pct = (x: number | undefined) => (x === undefined ? '-' : (100 * x).toFixed(2));
    lines.push(
      `held-out sources: ${m.sentences} (each against ${r.examples[0]?.refs.length ?? 0} references)`,
      `BLEU (sacreBLEU, 13a) ${m.bleu?.toFixed(2)}   sentence-BLEU (DiffuSeq) ${pct(m.sentenceBleu)}   ROUGE-1/2/L ${pct(m.rouge1)} / ${pct(m.rouge2)} / ${pct(m.rougeL)}`,
      `dist-1 ${m.dist1?.toFixed(3)}   mean length ${m.meanLength?.toFixed(1)} words   training ${r.trainSeconds.toFixed(0)} s, sampling ${r.sampleSeconds.toFixed(0)} s`,
      `outputs: ${r.out}/samples.jsonl   model: ${r.out}/run   curves: moe-diffuseq plot ${r.out}/run`,
    );
    process.stdout.write(lines.join('\n') + '\n');
    return 0;
  },
});
