/**
 * Model folders in the Hugging Face layout (SPEC section 7): config.json, model.safetensors and the
 * tokenizer (tokenizer.json, plus vocab.txt for WordPiece). Every file is written atomically; loading
 * checks the config, every tensor's name and shape against it, and that the tokenizer matches the
 * vocabulary the model was trained with.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Backend, FloatDType } from '../backend/backend.js';
import { CheckpointError, ConfigError } from '../errors.js';
import { configToJson, parseConfig, type ModelConfig } from '../model/config.js';
import { Model } from '../model/model.js';
import type { ParamStore } from '../model/params.js';
import { loadTokenizer } from '../tokenizer/index.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { writeFileAtomic } from './atomic.js';
import { readSafetensors, writeSafetensors, type SafeTensorsFile, type TensorToWrite } from './safetensors.js';

/** File names inside a model folder. */
export const CONFIG_FILE = 'config.json';
export const WEIGHTS_FILE = 'model.safetensors';

/** Options of {@link saveModel}. */
export interface SaveOptions {
  /** Written into the folder (and its fingerprint into the weights' metadata). */
  tokenizer?: Tokenizer;
  /** Stored dtype of the weights (default F32). */
  dtype?: 'F32' | 'F64';
}

/** The parameters as safetensors entries (SPEC names, [out, in] Linear weights). */
export function paramTensors(params: ParamStore, dtype: 'F32' | 'F64' = 'F32'): TensorToWrite[] {
  return params.specs.map((s) => ({ name: s.name, dtype, shape: s.shape, data: params.backend.toArray(params.get(s.name)) }));
}

/** Writes a model folder (creating it). */
export function saveModel(dir: string, model: Model, opts: SaveOptions = {}): void {
  saveModelFolder(dir, model.config, paramTensors(model.params, opts.dtype ?? 'F32'), opts.tokenizer);
}

/**
 * Writes a model folder from tensors already on the host (e.g. EMA weights): tokenizer, weights,
 * then config.json last, so a folder with a config.json has its weights.
 */
export function saveModelFolder(dir: string, config: ModelConfig, tensors: readonly TensorToWrite[], tokenizer?: Tokenizer): void {
  mkdirSync(dir, { recursive: true });
  const metadata: Record<string, string> = { format: 'pt', modelType: 'moe-diffuseq' };
  if (tokenizer) {
    if (tokenizer.vocabSize !== config.vocabSize) {
      throw new ConfigError(`tokenizer has ${tokenizer.vocabSize} ids but the model's vocabSize is ${config.vocabSize}`);
    }
    metadata['tokenizer_fingerprint'] = tokenizer.fingerprint();
    tokenizer.save(dir);
  }
  writeSafetensors(join(dir, WEIGHTS_FILE), tensors, metadata);
  writeFileAtomic(join(dir, CONFIG_FILE), [JSON.stringify(configToJson(config), null, 2) + '\n']);
}

/** Reads and validates a folder's config.json. */
export function readConfig(dir: string): ModelConfig {
  const path = join(dir, CONFIG_FILE);
  if (!existsSync(path)) throw new CheckpointError(`${dir}: not a model folder (no ${CONFIG_FILE})`, 'create one with `moe-diffuseq init --preset tiny --out DIR` or `moe-diffuseq train`');
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new CheckpointError(`${path}: invalid JSON (${(e as Error).message})`);
  }
  if (typeof raw === 'object' && raw !== null && !('modelType' in raw)) throw new CheckpointError(`${path}: missing modelType "moe-diffuseq" (is this another model's folder?)`);
  return parseConfig(raw, path);
}

/** Copies tensors from a parsed file into a ParamStore, checking names and shapes. */
export function loadParams(params: ParamStore, file: SafeTensorsFile, where: string): void {
  const known = new Set(params.specs.map((s) => s.name));
  const unknown = [...file.tensors.keys()].filter((n) => !known.has(n));
  if (unknown.length) throw new CheckpointError(`${where}: tensors not in this config: ${unknown.slice(0, 5).join(', ')}${unknown.length > 5 ? ` and ${unknown.length - 5} more` : ''}`);
  for (const s of params.specs) {
    const t = file.tensors.get(s.name);
    if (!t) throw new CheckpointError(`${where}: tensor '${s.name}' is missing (the config expects shape [${s.shape.join(', ')}])`);
    if (t.shape.length !== s.shape.length || t.shape.some((d, i) => d !== s.shape[i])) {
      throw new CheckpointError(`${where}: tensor '${s.name}' has shape [${t.shape.join(', ')}], the config expects [${s.shape.join(', ')}]`);
    }
    if (t.dtype === 'I32' || t.dtype === 'I64') throw new CheckpointError(`${where}: tensor '${s.name}' is ${t.dtype}, expected a float type`);
    params.backend.write(params.get(s.name), t.data);
  }
}

/** Options of {@link loadModel}. */
export interface LoadOptions {
  /** Compute dtype (default float32). */
  dtype?: FloatDType;
  /** Skip loading the tokenizer (folders without one are allowed then). */
  noTokenizer?: boolean;
}

/** A loaded model folder. */
export interface LoadedModel {
  model: Model;
  tokenizer: Tokenizer | null;
  /** The weights file's metadata. */
  metadata: Record<string, string>;
}

/** Loads a model folder onto a backend. */
export function loadModel(dir: string, backend: Backend, opts: LoadOptions = {}): LoadedModel {
  const config = readConfig(dir);
  const file = readSafetensors(join(dir, WEIGHTS_FILE));
  let tokenizer: Tokenizer | null = null;
  if (!opts.noTokenizer && (existsSync(join(dir, 'tokenizer.json')) || existsSync(join(dir, 'vocab.txt')))) {
    tokenizer = loadTokenizer(dir);
    if (tokenizer.vocabSize !== config.vocabSize) {
      throw new CheckpointError(`${dir}: the tokenizer has ${tokenizer.vocabSize} ids but config.json says vocabSize ${config.vocabSize}`);
    }
    const fp = file.metadata['tokenizer_fingerprint'];
    if (fp && fp !== tokenizer.fingerprint()) {
      throw new CheckpointError(`${dir}: the tokenizer differs from the one the model was saved with (fingerprint ${tokenizer.fingerprint()} vs ${fp})`);
    }
  }
  const model = new Model(config, backend, opts.dtype ?? 'float32');
  try {
    loadParams(model.params, file, join(dir, WEIGHTS_FILE));
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model, tokenizer, metadata: file.metadata };
}
