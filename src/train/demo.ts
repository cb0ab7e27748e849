/**
 * The main job on a built-in default (`moe-diffuseq demo`): trains the `tiny` preset on the bundled
 * Wiki-Auto simplification pairs (GEM 2021 validation set, CC BY-SA 4.0: 2000 complex sentences with
 * 8 simplifications each), then samples held-out sources and scores them against all 8 references.
 *
 * Choices that make it fit in minutes on a laptop CPU, each an ordinary option or data choice:
 * - training pairs: for each training source, its simplification closest to it (word overlap) and
 *   the source itself (an autoencoding pair). A diffusion model first has to learn to carry the
 *   source over to the output positions; the copy pairs teach that in ~1000 steps, where the 8
 *   divergent references alone did not within the budget (measured: BLEU 1.7 after 1400 steps on
 *   all 8 references, 48 after 1200 on this mixture);
 * - a byte-level BPE tokenizer of 8000 tokens trained on the training split (the tied output head over
 *   BERT's 30522 tokens would cost most of each step), seqLen 64 (the pairs average 28 + 25 tokens),
 *   no dropout, and a high learning rate with warm-up for a short schedule.
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { createBackend } from '../backend/create.js';
import { groupBySource, splitGroupsBySeed, pick } from '../data/split.js';
import { evaluate, type EvalResult as MetricResult } from '../eval/index.js';
import { writeFileAtomic } from '../io/atomic.js';
import { loadModel } from '../io/checkpoint.js';
import { Progress } from '../io/progress.js';
import { generate } from '../sample/generate.js';
import { trainBpeSync } from '../tokenizer/index.js';
import { resolveModelDir } from './checkpoints.js';
import { train, type TrainControls } from './trainer.js';

/** Options of {@link runDemo}. */
export interface DemoOptions {
  /** Run folder (default ./moe-diffuseq-demo). */
  out: string;
  /** Optimizer steps (default 1200, about 7 minutes on 2 cores). */
  steps: number;
  /** Held-out sources scored (default 100) and printed (default 8). */
  evalSources: number;
  show: number;
  /** Denoiser calls per sample (default 20). */
  sampleSteps: number;
  seed: number;
  /** Start over even if the run folder exists. */
  fresh: boolean;
}

export const DEFAULT_DEMO: DemoOptions = { out: 'moe-diffuseq-demo', steps: 1200, evalSources: 100, show: 8, sampleSteps: 20, seed: 0, fresh: false };

/** The reference sharing the most words with the source (Jaccard over lowercased words; ties: the first). */
export function closestReference(src: string, refs: readonly string[]): string {
  const a = new Set(src.toLowerCase().split(/\s+/).filter(Boolean));
  let best = refs[0]!;
  let bestScore = -1;
  for (const r of refs) {
    const b = new Set(r.toLowerCase().split(/\s+/).filter(Boolean));
    let inter = 0;
    for (const w of b) if (a.has(w)) inter++;
    const score = inter / Math.max(1, a.size + b.size - inter);
    if (score > bestScore) [best, bestScore] = [r, score];
  }
  return best;
}

/** The bundled dataset. */
export function demoDataPath(): string {
  for (const rel of ['../../../resources/demo/wikiauto-gem2021-valid.jsonl.gz', '../../resources/demo/wikiauto-gem2021-valid.jsonl.gz']) {
    const p = new URL(rel, import.meta.url);
    if (existsSync(p)) return p.pathname;
  }
  throw new Error('bundled demo data not found (resources/demo/wikiauto-gem2021-valid.jsonl.gz)');
}

/** What the demo measured. */
export interface DemoResult {
  out: string;
  metrics: MetricResult;
  examples: { src: string; hyp: string; refs: string[] }[];
  trainSeconds: number;
  sampleSeconds: number;
}

/** Runs the demo: data split, tokenizer, training, sampling, scoring. */
export async function runDemo(o: DemoOptions, controls: TrainControls = {}): Promise<DemoResult> {
  const log = controls.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  if (o.fresh) rmSync(o.out, { recursive: true, force: true });
  mkdirSync(o.out, { recursive: true });
  const data = join(o.out, 'data');
  mkdirSync(data, { recursive: true });
  // split the 2000 sources (with all 8 references each) into train / held-out by seed
  const pairs = gunzipSync(readFileSync(demoDataPath()))
    .toString('utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as { src: string; trg: string });
  const groups = groupBySource(pairs);
  const split = splitGroupsBySeed(groups, { valid: 0.05, test: 0.05, seed: o.seed });
  const toJsonl = (rows: { src: string; trg: string }[]) => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';
  const closestPairs = (idx: number[]) => groupBySource(pick(pairs, idx)).map((g) => ({ src: g.src, trg: closestReference(g.src, g.refs) }));
  const trainPairs = closestPairs(split.train).flatMap((p) => [p, { src: p.src, trg: p.src }]);
  writeFileAtomic(join(data, 'train.jsonl'), [toJsonl(trainPairs)]);
  const validPairs = closestPairs(split.valid);
  writeFileAtomic(join(data, 'valid.jsonl'), [toJsonl(validPairs)]);
  const testGroups = groupBySource(pick(pairs, split.test)).slice(0, o.evalSources);
  log(`data: ${trainPairs.length} training pairs (closest simplification + copy per source), ${validPairs.length} validation sources, ${testGroups.length} held-out sources x ${testGroups[0]?.refs.length ?? 0} references (Wiki-Auto, CC BY-SA 4.0)`);

  const runDir = join(o.out, 'run');
  const tokDir = join(o.out, 'tokenizer');
  if (!existsSync(join(tokDir, 'tokenizer.json'))) {
    const tok = trainBpeSync(pick(pairs, split.train).flatMap((p) => [p.src, p.trg]), { vocabSize: 8000 });
    tok.save(tokDir);
    log(`tokenizer: byte-level BPE, ${tok.vocabSize} tokens, trained on the training split`);
  }
  const resume = existsSync(runDir) && !o.fresh;
  const t0 = performance.now();
  const result = await train(
    {
      data: join(data, 'train.jsonl'),
      valid: join(data, 'valid.jsonl'),
      out: runDir,
      preset: 'tiny',
      tokenizer: tokDir,
      model: { seqLen: 64, maxLen: 64, dropout: 0 },
      maxSteps: o.steps,
      batchSize: 16,
      lr: 5e-3,
      warmup: 100,
      saveEvery: 200,
      keep: 1,
      evalEvery: 0,
      evalExamples: 0,
      logEvery: 10,
      seed: o.seed,
      resume,
    },
    controls,
  );
  const trainSeconds = (performance.now() - t0) / 1000;
  if (result.interrupted) throw new Error('interrupted');

  // sample the held-out sources with the EMA weights and score them against all references
  const t1 = performance.now();
  const be = await createBackend('cpu');
  try {
    const { model, tokenizer } = loadModel(resolveModelDir(runDir), be);
    const bar = controls.progress === false ? null : new Progress({ label: 'sample', total: testGroups.length });
    const out = generate(model, tokenizer!, testGroups.map((g) => g.src), {
      sampler: 'ddim',
      steps: o.sampleSteps,
      seed: o.seed,
      batchSize: 32,
      truncate: true,
      ...(bar ? { onProgress: (d: number) => bar.update(d) } : {}),
    });
    bar?.finish(testGroups.length);
    const hyps = out.map((g) => g.text);
    const metrics = evaluate(hyps, testGroups.map((g) => g.refs), { metrics: ['bleu', 'sentenceBleu', 'rouge1', 'rouge2', 'rougeL', 'dist1', 'meanLength'] });
    writeFileAtomic(join(o.out, 'samples.jsonl'), [testGroups.map((g, i) => JSON.stringify({ src: g.src, hyp: hyps[i], refs: g.refs })).join('\n') + '\n']);
    model.dispose();
    return {
      out: o.out,
      metrics,
      examples: testGroups.slice(0, o.show).map((g, i) => ({ src: g.src, hyp: hyps[i]!, refs: g.refs })),
      trainSeconds,
      sampleSeconds: (performance.now() - t1) / 1000,
    };
  } finally {
    be.close();
  }
}
