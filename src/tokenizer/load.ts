/**
 * Finding and loading tokenizers from disk (never the network): a folder holding `tokenizer.json` or
 * `vocab.txt`, either file itself, or the bert-base-uncased tokenizer shipped in the package.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, InputError } from '../errors.js';
import { parseJsonFile, tokenizerFromJSON, wordPieceFromVocabTxt, type VocabTxtOptions } from './hf-json.js';
import type { PipelineTokenizer } from './pipeline.js';

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new InputError(file, undefined, code === 'ENOENT' ? 'no such file' : `cannot read: ${(e as Error).message}`);
  }
}

/** transformers' BERT options from a `tokenizer_config.json` beside a `vocab.txt`, if there is one. */
function vocabTxtOptions(dir: string): VocabTxtOptions {
  const file = join(dir, 'tokenizer_config.json');
  if (!existsSync(file)) return {};
  const cfg = parseJsonFile(readText(file), file);
  if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg)) throw new InputError(file, undefined, 'expected a JSON object');
  const bool = (k: string): boolean | undefined => {
    const v = cfg[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean') throw new InputError(file, undefined, `${k} must be true or false`);
    return v;
  };
  const sa = cfg['strip_accents'];
  return {
    ...(bool('do_lower_case') !== undefined ? { lowercase: bool('do_lower_case')! } : {}),
    ...(bool('tokenize_chinese_chars') !== undefined ? { handleChineseChars: bool('tokenize_chinese_chars')! } : {}),
    ...(typeof sa === 'boolean' ? { stripAccents: sa } : {}),
  };
}

/**
 * Loads a tokenizer from a folder (its `tokenizer.json`, else its `vocab.txt` with the BERT options of
 * a `tokenizer_config.json` beside it) or from a file (`*.json` is read as `tokenizer.json`, anything
 * else as a WordPiece `vocab.txt`).
 * @throws InputError for a missing path, malformed JSON (with its line), an unsupported model or
 *   component, or a vocabulary without what the model needs
 */
export function loadTokenizer(pathOrDir: string): PipelineTokenizer {
  const path = resolve(pathOrDir);
  if (!existsSync(path)) throw new InputError(pathOrDir, undefined, 'no such file or directory', 'give a folder with tokenizer.json or vocab.txt, or one of those files');
  if (statSync(path).isDirectory()) {
    const json = join(path, 'tokenizer.json');
    if (existsSync(json)) return tokenizerFromJSON(parseJsonFile(readText(json), json), json);
    const vocab = join(path, 'vocab.txt');
    if (existsSync(vocab)) return wordPieceFromVocabTxt(readText(vocab), vocab, vocabTxtOptions(path));
    throw new InputError(pathOrDir, undefined, 'the folder has neither tokenizer.json nor vocab.txt');
  }
  if (basename(path).toLowerCase().endsWith('.json')) return tokenizerFromJSON(parseJsonFile(readText(path), path), path);
  return wordPieceFromVocabTxt(readText(path), path, vocabTxtOptions(dirname(path)));
}

/** Name of the tokenizer shipped in `resources/tokenizers/` and used when none is given. */
export const DEFAULT_TOKENIZER = 'bert-base-uncased';

/**
 * The folder of a tokenizer shipped with the package. Searched upwards from this module, so it is found
 * from `dist/src/tokenizer/` (compiled), `src/tokenizer/` (run from source) and inside
 * `node_modules/moe-diffuseq/` alike.
 * @throws ConfigError when the package's resources are missing (a broken install)
 */
export function bundledTokenizerDir(name: string = DEFAULT_TOKENIZER): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'resources', 'tokenizers', name);
    if (existsSync(join(candidate, 'tokenizer.json')) || existsSync(join(candidate, 'vocab.txt'))) return candidate;
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new ConfigError(`the bundled tokenizer '${name}' was not found (resources/tokenizers/${name} above ${fileURLToPath(import.meta.url)})`, 'reinstall moe-diffuseq, or pass a tokenizer folder explicitly');
}

let cachedDefault: PipelineTokenizer | undefined;

/** The bundled bert-base-uncased WordPiece tokenizer (DiffuSeq's), loaded once and shared. */
export function defaultTokenizer(): PipelineTokenizer {
  cachedDefault ??= loadTokenizer(bundledTokenizerDir());
  return cachedDefault;
}
