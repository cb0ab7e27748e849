/**
 * Reading Hugging Face `tokenizer.json` and BERT `vocab.txt` into a {@link PipelineTokenizer}.
 *
 * Supported: models WordPiece and BPE (byte-level only: the pre-tokenizer must contain `ByteLevel`);
 * normalizers BertNormalizer, Lowercase, NFC/NFD/NFKC/NFKD, StripAccents, Strip, Sequence;
 * pre-tokenizers BertPreTokenizer, ByteLevel, Whitespace, WhitespaceSplit, Sequence. Anything else is
 * an InputError naming the component, rather than a tokenizer that silently encodes differently.
 * Like HF, a `model` without `type` (old files, e.g. bert-base-uncased's) is recognised by its fields.
 */
import { InputError } from '../errors.js';
import type { AddedToken } from './added-tokens.js';
import { BertNormalizer, BertPreTokenizer } from './bert-normalize.js';
import { BpeModel } from './bpe.js';
import { ByteLevelPreTokenizer } from './byte-level.js';
import {
  LowercaseNormalizer,
  SequenceNormalizer,
  SequencePreTokenizer,
  StripAccentsNormalizer,
  StripNormalizer,
  UnicodeFormNormalizer,
  WhitespacePreTokenizer,
  WhitespaceSplitPreTokenizer,
  type Json,
  type JsonObject,
  type Normalizer,
  type PreTokenizer,
  type TokenModel,
} from './components.js';
import { PipelineTokenizer } from './pipeline.js';
import { WordPieceModel } from './wordpiece.js';

/** Parses JSON text; a syntax error becomes an InputError with the line of the error position. */
export function parseJsonFile(text: string, file: string): Json {
  try {
    return JSON.parse(text) as Json;
  } catch (e) {
    const msg = (e as Error).message;
    const pos = /position (\d+)/.exec(msg);
    let line: number | undefined;
    if (pos) {
      line = 1;
      const end = Math.min(Number(pos[1]), text.length);
      for (let i = 0; i < end; i++) if (text.charCodeAt(i) === 10) line++;
    }
    throw new InputError(file, line, `malformed JSON: ${msg}`);
  }
}

function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Field readers that name the file and the JSON path in their errors. */
class Reader {
  constructor(readonly file: string) {}
  fail(detail: string): never {
    throw new InputError(this.file, undefined, detail);
  }
  object(v: Json | undefined, path: string): JsonObject {
    if (!isObject(v)) this.fail(`${path} must be an object`);
    return v;
  }
  bool(o: JsonObject, key: string, path: string, dflt: boolean): boolean {
    const v = o[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') this.fail(`${path}.${key} must be true or false (got ${JSON.stringify(v)})`);
    return v;
  }
  str(o: JsonObject, key: string, path: string, dflt: string | null): string | null {
    const v = o[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'string') this.fail(`${path}.${key} must be a string (got ${JSON.stringify(v)})`);
    return v;
  }
  int(o: JsonObject, key: string, path: string, dflt: number): number {
    const v = o[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) this.fail(`${path}.${key} must be a non-negative integer (got ${JSON.stringify(v)})`);
    return v;
  }
  vocab(model: JsonObject): Map<string, number> {
    const v = model['vocab'];
    if (v === undefined || v === null) this.fail('model.vocab is missing');
    if (!isObject(v)) this.fail(`model.vocab must be an object of token -> id${Array.isArray(v) ? ' (a list is a Unigram vocabulary, which is not supported)' : ''}`);
    const map = new Map<string, number>();
    const seen = new Map<number, string>();
    for (const [tok, id] of Object.entries(v)) {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) this.fail(`model.vocab['${tok}'] must be a non-negative integer id (got ${JSON.stringify(id)})`);
      const other = seen.get(id);
      if (other !== undefined) this.fail(`model.vocab gives id ${id} to both '${other}' and '${tok}'`);
      seen.set(id, tok);
      map.set(tok, id);
    }
    if (map.size === 0) this.fail('model.vocab is empty');
    return map;
  }
}

function normalizerFromJSON(r: Reader, v: Json | undefined, path: string): Normalizer | null {
  if (v === undefined || v === null) return null;
  const o = r.object(v, path);
  const type = o['type'];
  switch (type) {
    case 'BertNormalizer': {
      const sa = o['strip_accents'];
      if (sa !== undefined && sa !== null && typeof sa !== 'boolean') r.fail(`${path}.strip_accents must be true, false or null`);
      return new BertNormalizer({
        cleanText: r.bool(o, 'clean_text', path, true),
        handleChineseChars: r.bool(o, 'handle_chinese_chars', path, true),
        stripAccents: sa ?? null,
        lowercase: r.bool(o, 'lowercase', path, true),
      });
    }
    case 'Lowercase':
      return new LowercaseNormalizer();
    case 'NFC':
    case 'NFD':
    case 'NFKC':
    case 'NFKD':
      return new UnicodeFormNormalizer(type);
    case 'StripAccents':
      return new StripAccentsNormalizer();
    case 'Strip':
      return new StripNormalizer(r.bool(o, 'strip_left', path, true), r.bool(o, 'strip_right', path, true));
    case 'Sequence': {
      const list = o['normalizers'];
      if (!Array.isArray(list)) r.fail(`${path}.normalizers must be a list`);
      return new SequenceNormalizer(list.map((n, i) => normalizerFromJSON(r, n, `${path}.normalizers[${i}]`)).filter((n): n is Normalizer => n !== null));
    }
    default:
      return r.fail(
        `${path}: normalizer type ${JSON.stringify(type)} is not supported (supported: BertNormalizer, Lowercase, NFC, NFD, NFKC, NFKD, StripAccents, Strip, Sequence)`,
      );
  }
}

function preTokenizerFromJSON(r: Reader, v: Json | undefined, path: string): PreTokenizer | null {
  if (v === undefined || v === null) return null;
  const o = r.object(v, path);
  const type = o['type'];
  switch (type) {
    case 'BertPreTokenizer':
      return new BertPreTokenizer();
    case 'ByteLevel':
      return new ByteLevelPreTokenizer({
        addPrefixSpace: r.bool(o, 'add_prefix_space', path, true),
        useRegex: r.bool(o, 'use_regex', path, true),
        trimOffsets: r.bool(o, 'trim_offsets', path, true),
      });
    case 'Whitespace':
      return new WhitespacePreTokenizer();
    case 'WhitespaceSplit':
      return new WhitespaceSplitPreTokenizer();
    case 'Sequence': {
      const list = o['pretokenizers'];
      if (!Array.isArray(list)) r.fail(`${path}.pretokenizers must be a list`);
      return new SequencePreTokenizer(list.map((p, i) => preTokenizerFromJSON(r, p, `${path}.pretokenizers[${i}]`)).filter((p): p is PreTokenizer => p !== null));
    }
    default:
      return r.fail(
        `${path}: pre-tokenizer type ${JSON.stringify(type)} is not supported (supported: BertPreTokenizer, ByteLevel, Whitespace, WhitespaceSplit, Sequence)`,
      );
  }
}

function hasByteLevel(p: PreTokenizer | null): boolean {
  if (p instanceof ByteLevelPreTokenizer) return true;
  if (p instanceof SequencePreTokenizer) return p.parts.some(hasByteLevel);
  return false;
}

/** HF decides an untagged model by its fields; we do the same for the two models we support. */
function modelType(r: Reader, m: JsonObject): string {
  const t = m['type'];
  if (typeof t === 'string') return t;
  if (t !== undefined) r.fail('model.type must be a string');
  if ('merges' in m) return 'BPE';
  if ('continuing_subword_prefix' in m || 'max_input_chars_per_word' in m) return 'WordPiece';
  if (Array.isArray(m['vocab'])) return 'Unigram';
  if ('vocab' in m) return 'WordLevel';
  return r.fail('model has no type and no vocab');
}

function mergesFromJSON(r: Reader, v: Json | undefined): [string, string][] {
  if (v === undefined || v === null) r.fail('model.merges is missing');
  if (!Array.isArray(v)) r.fail('model.merges must be a list');
  return v.map((m, i): [string, string] => {
    if (typeof m === 'string') {
      const parts = m.split(' ');
      if (parts.length !== 2) r.fail(`model.merges[${i}] must be "left right" (got ${JSON.stringify(m)})`);
      return [parts[0]!, parts[1]!];
    }
    // tokenizers >= 0.20 writes [left, right] pairs
    if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') return [m[0], m[1]];
    return r.fail(`model.merges[${i}] must be "left right" or ["left", "right"] (got ${JSON.stringify(m)})`);
  });
}

function modelFromJSON(r: Reader, v: Json | undefined, pre: PreTokenizer | null): TokenModel {
  if (v === undefined || v === null) r.fail('model is missing');
  const m = r.object(v, 'model');
  const type = modelType(r, m);
  try {
    if (type === 'WordPiece') {
      return new WordPieceModel(r.vocab(m), {
        unkToken: r.str(m, 'unk_token', 'model', '[UNK]')!,
        continuingSubwordPrefix: r.str(m, 'continuing_subword_prefix', 'model', '##')!,
        maxInputCharsPerWord: r.int(m, 'max_input_chars_per_word', 'model', 100),
      });
    }
    if (type === 'BPE') {
      if (!hasByteLevel(pre)) r.fail('only byte-level BPE is supported, and pre_tokenizer has no ByteLevel step');
      return new BpeModel(r.vocab(m), mergesFromJSON(r, m['merges']), {
        unkToken: r.str(m, 'unk_token', 'model', null),
        fuseUnk: r.bool(m, 'fuse_unk', 'model', false),
        continuingSubwordPrefix: r.str(m, 'continuing_subword_prefix', 'model', null),
        endOfWordSuffix: r.str(m, 'end_of_word_suffix', 'model', null),
        ignoreMerges: r.bool(m, 'ignore_merges', 'model', false),
      });
    }
  } catch (e) {
    if (e instanceof InputError) throw e;
    r.fail(`model: ${(e as Error).message}`);
  }
  return r.fail(`model type ${JSON.stringify(type)} is not supported (supported: WordPiece, BPE)`);
}

function addedTokensFromJSON(r: Reader, v: Json | undefined, model: TokenModel): AddedToken[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) r.fail('added_tokens must be a list');
  const out: AddedToken[] = [];
  const used = new Map<number, string>();
  v.forEach((t, i) => {
    const path = `added_tokens[${i}]`;
    const o = r.object(t, path);
    const content = r.str(o, 'content', path, null);
    if (content === null || content === '') r.fail(`${path}.content must be a non-empty string`);
    const special = r.bool(o, 'special', path, false);
    // a token already in the model keeps the model's id, as in HF
    const id = model.vocab.get(content) ?? r.int(o, 'id', path, -1);
    if (id < 0) r.fail(`${path}.id is missing`);
    const holder = model.tokens[id];
    if (holder !== undefined && holder !== content) r.fail(`${path}: id ${id} of '${content}' is the model's id of '${holder}'`);
    const prev = used.get(id);
    if (prev !== undefined) r.fail(`${path}: id ${id} is given to both '${prev}' and '${content}'`);
    used.set(id, content);
    out.push({
      id,
      content,
      special,
      singleWord: r.bool(o, 'single_word', path, false),
      lstrip: r.bool(o, 'lstrip', path, false),
      rstrip: r.bool(o, 'rstrip', path, false),
      normalized: r.bool(o, 'normalized', path, !special),
    });
  });
  return out;
}

/** Builds a tokenizer from a parsed `tokenizer.json`; `file` names it in errors. */
export function tokenizerFromJSON(json: Json, file: string): PipelineTokenizer {
  const r = new Reader(file);
  const root = r.object(json, 'the top level');
  const version = root['version'];
  if (version !== undefined && version !== '1.0') r.fail(`unknown tokenizer.json version ${JSON.stringify(version)} (expected "1.0")`);
  const normalizer = normalizerFromJSON(r, root['normalizer'], 'normalizer');
  const preTokenizer = preTokenizerFromJSON(r, root['pre_tokenizer'], 'pre_tokenizer');
  const model = modelFromJSON(r, root['model'], preTokenizer);
  const addedTokens = addedTokensFromJSON(r, root['added_tokens'], model);
  let cleanup = true;
  const dec = root['decoder'];
  if (isObject(dec) && dec['type'] === 'WordPiece') cleanup = r.bool(dec, 'cleanup', 'decoder', true);
  return new PipelineTokenizer({ normalizer, preTokenizer, model, addedTokens, cleanup, postProcessor: root['post_processor'] ?? null });
}

/** BERT options a `tokenizer_config.json` next to a `vocab.txt` may set (transformers' names). */
export interface VocabTxtOptions {
  /** `do_lower_case` (default true). */
  readonly lowercase?: boolean;
  /** `tokenize_chinese_chars` (default true). */
  readonly handleChineseChars?: boolean;
  /** `strip_accents` (default null: follow lowercase). */
  readonly stripAccents?: boolean | null;
}

/** BERT's special tokens: in a `vocab.txt` they are ordinary lines, but HF treats them as special. */
const BERT_SPECIALS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'];

/**
 * A BERT WordPiece tokenizer from `vocab.txt` (one token per line, id = line index; a repeated token
 * keeps its last line, as transformers' `load_vocab`; a trailing `\r` is dropped). Needs `[UNK]`.
 */
export function wordPieceFromVocabTxt(text: string, file: string, opts: VocabTxtOptions = {}): PipelineTokenizer {
  const lines = text.split('\n');
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  if (lines.length === 0) throw new InputError(file, undefined, 'empty vocabulary');
  const vocab = new Map<string, number>();
  lines.forEach((l, i) => vocab.set(l.endsWith('\r') ? l.slice(0, -1) : l, i));
  if (!vocab.has('[UNK]')) throw new InputError(file, undefined, 'no [UNK] token: a WordPiece vocabulary needs one');
  const model = new WordPieceModel(vocab, {});
  const addedTokens: AddedToken[] = BERT_SPECIALS.filter((t) => vocab.has(t)).map((content) => ({
    id: vocab.get(content)!,
    content,
    special: true,
    singleWord: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
  }));
  return new PipelineTokenizer({
    normalizer: new BertNormalizer({ lowercase: opts.lowercase ?? true, handleChineseChars: opts.handleChineseChars ?? true, stripAccents: opts.stripAccents ?? null }),
    preTokenizer: new BertPreTokenizer(),
    model,
    addedTokens,
    cleanup: true,
  });
}
