/**
 * Training checkpoints: `OUT/checkpoint-000123/` holds a loadable model folder (config.json,
 * model.safetensors with the EMA weights that sampling uses, the tokenizer) plus what resuming needs:
 * optimizer.safetensors (the raw weights and AdamW's moments, flat, float32) and trainer_state.json
 * (step, random stream, timestep-sampler history, data position, options).
 *
 * A checkpoint is built in a hidden temporary folder and renamed into place when complete, and old
 * ones are removed only after the new one exists: a crash, kill -9 or power loss at any moment leaves
 * the previous checkpoint intact and loadable.
 */
import { existsSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { SamplerState } from '../diffusion/timestep.js';
import type { BatchIteratorState } from '../data/batches.js';
import { CheckpointError } from '../errors.js';
import { fsyncDir, writeFileAtomic } from '../io/atomic.js';
import { CONFIG_FILE, saveModelFolder } from '../io/checkpoint.js';
import { readSafetensors, writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import type { ModelConfig } from '../model/config.js';
import type { ParamSpec } from '../model/params.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { TrainOptions } from './options.js';

export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const STATE_FILE = 'trainer_state.json';
const PREFIX = 'checkpoint-';

/** trainer_state.json. */
export interface TrainerState {
  version: 1;
  /** Optimizer steps done. */
  step: number;
  /** Offset of the run's Philox stream (its seed is options.seed). */
  rngOffset: number;
  sampler: SamplerState;
  data: BatchIteratorState;
  options: TrainOptions;
  /** Training tokens processed and seconds spent (for throughput across resumes). */
  tokens: number;
  seconds: number;
}

/** The flat host arrays of a training state. */
export interface TrainingArrays {
  params: Float32Array;
  ema: Float32Array;
  expAvg: Float32Array;
  expAvgSq: Float32Array;
}

/** Name of the checkpoint folder of a step. */
export function checkpointName(step: number): string {
  return `${PREFIX}${String(step).padStart(6, '0')}`;
}

/** Checkpoint folders of a run, oldest first (complete ones only). */
export function listCheckpoints(out: string): { step: number; dir: string }[] {
  if (!existsSync(out)) return [];
  return readdirSync(out)
    .filter((n) => n.startsWith(PREFIX) && /^\d+$/.test(n.slice(PREFIX.length)))
    .map((n) => ({ step: Number(n.slice(PREFIX.length)), dir: join(out, n) }))
    .filter((c) => existsSync(join(c.dir, STATE_FILE)) && existsSync(join(c.dir, CONFIG_FILE)))
    .sort((a, b) => a.step - b.step);
}

/** A model folder, or the newest checkpoint of a run folder. */
export function resolveModelDir(dir: string): string {
  if (existsSync(join(dir, CONFIG_FILE))) return dir;
  const list = listCheckpoints(dir);
  if (!list.length) throw new CheckpointError(`${dir}: neither a model folder (no config.json) nor a run folder with checkpoints`, 'train one with `moe-diffuseq train`, or `moe-diffuseq init --preset tiny --out DIR`');
  return list[list.length - 1]!.dir;
}

/** Slices a flat array into named tensors by the parameter table. */
export function flatToTensors(specs: readonly ParamSpec[], flat: Float32Array): TensorToWrite[] {
  let off = 0;
  return specs.map((s) => {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const t: TensorToWrite = { name: s.name, dtype: 'F32', shape: s.shape, data: flat.subarray(off, off + n) };
    off += n;
    return t;
  });
}

/** Writes checkpoint `step` into `out`, then keeps only the newest `keep`. Returns its folder. */
export function saveCheckpoint(
  out: string,
  step: number,
  config: ModelConfig,
  specs: readonly ParamSpec[],
  arrays: TrainingArrays,
  state: TrainerState,
  tokenizer: Tokenizer | undefined,
  keep: number,
): string {
  const final = join(out, checkpointName(step));
  const tmp = join(out, `.${checkpointName(step)}.tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  saveModelFolder(tmp, config, flatToTensors(specs, arrays.ema), tokenizer);
  const n = arrays.params.length;
  writeSafetensors(join(tmp, OPTIMIZER_FILE), [
    { name: 'params', dtype: 'F32', shape: [n], data: arrays.params },
    { name: 'exp_avg', dtype: 'F32', shape: [n], data: arrays.expAvg },
    { name: 'exp_avg_sq', dtype: 'F32', shape: [n], data: arrays.expAvgSq },
  ]);
  writeFileAtomic(join(tmp, STATE_FILE), [JSON.stringify(state) + '\n']);
  fsyncDir(tmp);
  rmSync(final, { recursive: true, force: true });
  renameSync(tmp, final);
  fsyncDir(out);
  const all = listCheckpoints(out);
  for (const c of all.slice(0, Math.max(0, all.length - keep))) rmSync(c.dir, { recursive: true, force: true });
  // leftovers of a crashed save
  for (const name of readdirSync(out)) if (name.startsWith(`.${PREFIX}`) && name !== `.${checkpointName(step)}.tmp-${process.pid}`) rmSync(join(out, name), { recursive: true, force: true });
  return final;
}

/** Reads what resuming needs from a checkpoint folder. */
export function readCheckpointState(dir: string, total: number): { state: TrainerState; arrays: Omit<TrainingArrays, 'ema'> } {
  let state: TrainerState;
  try {
    state = JSON.parse(readFileSync(join(dir, STATE_FILE), 'utf8')) as TrainerState;
  } catch (e) {
    throw new CheckpointError(`${join(dir, STATE_FILE)}: cannot read (${(e as Error).message})`);
  }
  if (state.version !== 1 || !Number.isInteger(state.step)) throw new CheckpointError(`${join(dir, STATE_FILE)}: unknown format`);
  const f = readSafetensors(join(dir, OPTIMIZER_FILE));
  const get = (name: string): Float32Array => {
    const t = f.tensors.get(name);
    if (!t || t.dtype !== 'F32' || t.data.length !== total) throw new CheckpointError(`${join(dir, OPTIMIZER_FILE)}: '${name}' must be F32 [${total}]`);
    return t.data as Float32Array;
  };
  return { state, arrays: { params: get('params'), expAvg: get('exp_avg'), expAvgSq: get('exp_avg_sq') } };
}
