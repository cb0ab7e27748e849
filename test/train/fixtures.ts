/** A micro training setup: the small trained tokenizer, 200 QQP pairs, a model that steps in milliseconds. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TrainOptions } from '../../src/train/options.js';

export const root = fileURLToPath(new URL('../../../', import.meta.url));
export const TOKENIZER = join(root, 'test/fixtures/tokenizers/trained-small');
export const DATA = join(root, 'test/fixtures/data/qqp-valid-200.jsonl');
export const CLI = join(root, 'dist/src/cli/main.js');

/** Options of a run of a few steps (override anything). */
export function microRun(out: string, over: Partial<TrainOptions> = {}): Partial<TrainOptions> {
  return {
    data: DATA,
    out,
    tokenizer: TOKENIZER,
    preset: 'tiny',
    model: {
      embDim: 8, hidden: 16, layers: 2, heads: 2, seqLen: 24, maxLen: 24, globalTokens: 2, diffusionSteps: 100, dropout: 0.1,
      attention: { window: 4 }, ffn: { experts: 2, topK: 1 },
    },
    batchSize: 4,
    maxSteps: 20,
    lr: 1e-3,
    warmup: 2,
    saveEvery: 5,
    keep: 2,
    evalEvery: 0,
    evalExamples: 4,
    evalSteps: 2,
    logEvery: 5,
    seed: 3,
    ...over,
  };
}

/** A fresh temporary folder and its cleanup. */
export function tempDir(): { dir: string; done: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'moe-diffuseq-train-'));
  return { dir, done: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Silent controls for in-process runs. */
export const quiet = { progress: false, log: () => {} } as const;
