/**
 * The tokenizer the package uses: Hugging Face's pipeline (added tokens, normalizer, pre-tokenizer,
 * model, decoder) with WordPiece or byte-level BPE as the model. Built by the loaders in `load.ts`,
 * by `hf-json.ts` from a `tokenizer.json`, and by the BPE trainer.
 */
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { writeFileAtomic } from '../io/atomic.js';
import { join } from 'node:path';
import { IndexError } from '../errors.js';
import { AddedVocabulary, type AddedToken, type Piece } from './added-tokens.js';
import { BertNormalizer, BertPreTokenizer } from './bert-normalize.js';
import { ByteLevelPreTokenizer, fromByteLevel, toByteLevel } from './byte-level.js';
import type { Json, JsonObject, Normalizer, PreTokenizer, TokenModel } from './components.js';
import type { SpecialTokens, Tokenizer } from './tokenizer.js';

/** Options of {@link PipelineTokenizer.decode}. */
export interface DecodeOptions {
  /** Drop special added tokens (`[CLS]`, `[SEP]`, `[PAD]`, `[UNK]`, `[MASK]`...). Default true. */
  readonly skipSpecialTokens?: boolean;
  /**
   * WordPiece only: apply {@link cleanUpTokenization} (default: the decoder's `cleanup` flag, true for
   * BERT). Byte-level BPE never cleans up: its decoding is exact.
   */
  readonly cleanup?: boolean;
}

/** Everything a {@link PipelineTokenizer} is made of. */
export interface PipelineParts {
  readonly normalizer: Normalizer | null;
  readonly preTokenizer: PreTokenizer | null;
  readonly model: TokenModel;
  /** Added tokens (special ones included), each with its final id. */
  readonly addedTokens: readonly AddedToken[];
  /** WordPiece decoder `cleanup` flag (default true). */
  readonly cleanup?: boolean;
  /** `post_processor` written back as it was read (null: a `[CLS] $A [SEP]` template is written). */
  readonly postProcessor?: Json;
}

/**
 * transformers' `clean_up_tokenization` (what `decode(..., clean_up_tokenization_spaces=True)` does
 * for BERT), on the whole string, in this order: " ." -> ".", " ?" -> "?", " !" -> "!", " ," -> ",",
 * " ' " -> "'", " n't" -> "n't", " 'm" -> "'m", " 's" -> "'s", " 've" -> "'ve", " 're" -> "'re".
 * (HF `tokenizers`' WordPiece decoder applies the same list token by token, which only ever fires for
 * the first four; transformers then applies it to the whole string, so "don ' t" becomes "don't".)
 */
export function cleanUpTokenization(s: string): string {
  return s
    .replaceAll(' .', '.')
    .replaceAll(' ?', '?')
    .replaceAll(' !', '!')
    .replaceAll(' ,', ',')
    .replaceAll(" ' ", "'")
    .replaceAll(" n't", "n't")
    .replaceAll(" 'm", "'m")
    .replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve")
    .replaceAll(" 're", "'re");
}

/** Names tried, in order, for each special token a MoE-DiffuSeq sequence needs (BERT's, then RoBERTa's). */
const SPECIAL_NAMES = {
  cls: ['[CLS]', '<s>', '<cls>'],
  sep: ['[SEP]', '</s>', '<sep>'],
  pad: ['[PAD]', '<pad>'],
  unk: ['[UNK]', '<unk>'],
} as const;

const WORD_CACHE_LIMIT = 200_000;

/**
 * A Hugging Face-style tokenizer pipeline (WordPiece or byte-level BPE).
 *
 * A model needs `[CLS]`, `[SEP]` and `[PAD]` ids (SPEC.md section 1). They are looked up by name
 * (`[CLS]`/`<s>`, `[SEP]`/`</s>`, `[PAD]`/`<pad>`); a tokenizer lacking one (GPT-2 lacks all three)
 * gets it as a special added token with the next free id after the vocabulary, so `vocabSize` grows
 * (GPT-2: 50257 -> 50260, `[CLS]` 50257, `[SEP]` 50258, `[PAD]` 50259). Like every added token they
 * are then also recognised in input text, and {@link save} writes them to `added_tokens`. A role token
 * that is a plain vocabulary entry (not an added token) keeps its id but becomes a special added token
 * too, so that decoding drops it.
 */
export class PipelineTokenizer implements Tokenizer {
  readonly kind: 'wordpiece' | 'bpe';
  readonly vocabSize: number;
  readonly specials: SpecialTokens;
  readonly normalizer: Normalizer | null;
  readonly preTokenizer: PreTokenizer | null;
  readonly model: TokenModel;
  readonly added: AddedVocabulary;
  /** The decoder's cleanup flag (WordPiece). */
  readonly cleanup: boolean;
  private readonly postProcessor: Json;
  private fingerprintCache: string | undefined;
  /** Byte-level BPE: raw word -> ids, so hot words skip the byte mapping as well as the merges. */
  private wordCache = new Map<string, readonly number[]>();
  private readonly byteLevel: ByteLevelPreTokenizer | null;

  constructor(parts: PipelineParts) {
    this.model = parts.model;
    this.kind = parts.model.type === 'WordPiece' ? 'wordpiece' : 'bpe';
    this.normalizer = parts.normalizer;
    this.preTokenizer = parts.preTokenizer;
    this.cleanup = parts.cleanup ?? true;
    this.postProcessor = parts.postProcessor ?? null;
    this.byteLevel = parts.preTokenizer instanceof ByteLevelPreTokenizer ? parts.preTokenizer : null;

    // added tokens: the given ones, plus [CLS]/[SEP]/[PAD] where no token of that role exists
    const added = [...parts.addedTokens];
    const special = (id: number, content: string): AddedToken => ({ id, content, singleWord: false, lstrip: false, rstrip: false, normalized: false, special: true });
    let next = Math.max(this.model.tokens.length, ...added.map((t) => t.id + 1));
    const role = (r: keyof typeof SPECIAL_NAMES, create: boolean): number | undefined => {
      for (const name of SPECIAL_NAMES[r]) {
        const a = added.find((t) => t.content === name);
        if (a) return a.id;
        const id = this.model.vocab.get(name);
        if (id !== undefined) {
          // a plain vocabulary entry: make it special, so decoding drops it like the other specials
          added.push(special(id, name));
          return id;
        }
      }
      if (!create) return undefined;
      added.push(special(next, SPECIAL_NAMES[r][0]));
      return next++;
    };
    const cls = role('cls', true)!;
    const sep = role('sep', true)!;
    const pad = role('pad', true)!;
    const unk = this.model.unkId ?? role('unk', false);
    this.specials = { cls, sep, pad, unk };
    const normalize = this.normalizer ? (s: string): string => this.normalizer!.normalize(s) : (s: string): string => s;
    this.added = new AddedVocabulary(added, normalize);
    this.vocabSize = Math.max(this.model.tokens.length, ...added.map((t) => t.id + 1));
  }

  /** Text to ids, without special tokens around it (added tokens written in the text are recognised). */
  encode(text: string): number[] {
    const out: number[] = [];
    const rawPieces: Piece[] = [];
    this.added.splitRaw(text, rawPieces);
    const normPieces: Piece[] = [];
    for (const p of rawPieces) {
      if (typeof p === 'number') {
        normPieces.push(p);
        continue;
      }
      this.added.splitNormalized(this.normalizer ? this.normalizer.normalize(p) : p, normPieces);
    }
    const words: string[] = [];
    for (const p of normPieces) {
      if (typeof p === 'number') {
        out.push(p);
        continue;
      }
      words.length = 0;
      if (this.byteLevel) {
        this.byteLevel.splitRaw(p, words);
        for (const w of words) this.encodeByteLevelWord(w, out);
      } else {
        if (this.preTokenizer) this.preTokenizer.split(p, words);
        else words.push(p);
        for (const w of words) this.model.tokenize(w, out);
      }
    }
    return out;
  }

  private encodeByteLevelWord(raw: string, out: number[]): void {
    let ids = this.wordCache.get(raw);
    if (ids === undefined) {
      const tmp: number[] = [];
      this.model.tokenize(toByteLevel(raw), tmp);
      ids = tmp;
      if (this.wordCache.size >= WORD_CACHE_LIMIT) this.wordCache = new Map();
      this.wordCache.set(raw, ids);
    }
    for (const id of ids) out.push(id);
  }

  /** Text to token strings (byte-level BPE tokens are in the byte alphabet: a space shows as `Ġ`). */
  tokenize(text: string): string[] {
    return this.encode(text).map((id) => this.idToToken(id) ?? '');
  }

  /**
   * Ids to text. Special tokens are dropped (unless `skipSpecialTokens: false`), `[UNK]` included, as
   * HF's `skip_special_tokens=True`. WordPiece: tokens are joined with spaces, `##` pieces glued to the
   * previous one, then {@link cleanUpTokenization} (so "hello , world" reads "hello, world").
   * Byte-level BPE: the bytes are put back together and UTF-8 decoded, exactly inverting encode for
   * well-formed text (a lone surrogate was encoded as U+FFFD and comes back as U+FFFD).
   * @throws IndexError for an id outside [0, vocabSize)
   */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const skip = options.skipSpecialTokens ?? true;
    if (this.kind === 'bpe') {
      let out = '';
      let run = '';
      for (const id of ids) {
        this.checkId(id);
        const added = this.added.byId.get(id);
        if (added) {
          if (skip && added.special) continue;
          // added tokens hold raw text, not byte-level characters
          out += fromByteLevel(run) + added.content;
          run = '';
          continue;
        }
        run += this.model.tokens[id] ?? '';
      }
      return out + fromByteLevel(run);
    }
    const prefix = this.model.continuingPrefix ?? '##';
    let s = '';
    let first = true;
    for (const id of ids) {
      this.checkId(id);
      const added = this.added.byId.get(id);
      if (added && skip && added.special) continue;
      const tok = added ? added.content : this.model.tokens[id];
      if (tok === undefined) continue;
      if (first) s += tok;
      else if (tok.startsWith(prefix)) s += tok.slice(prefix.length);
      else s += ` ${tok}`;
      first = false;
    }
    return (options.cleanup ?? this.cleanup) ? cleanUpTokenization(s) : s;
  }

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new IndexError('decode', `token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
    }
  }

  tokenToId(token: string): number | undefined {
    return this.added.byContent.get(token)?.id ?? this.model.vocab.get(token);
  }

  idToToken(id: number): string | undefined {
    return this.added.byId.get(id)?.content ?? this.model.tokens[id];
  }

  /**
   * sha256 (first 16 hex digits) of the kind, every token in id order (null for a hole) and the
   * special ids. The same vocabulary loaded from `vocab.txt` or `tokenizer.json` gives the same value.
   */
  fingerprint(): string {
    if (this.fingerprintCache === undefined) {
      const h = createHash('sha256');
      h.update(JSON.stringify({ kind: this.kind, specials: [this.specials.cls, this.specials.sep, this.specials.pad, this.specials.unk ?? null] }));
      const chunk: (string | null)[] = [];
      for (let id = 0; id < this.vocabSize; id++) {
        chunk.push(this.idToToken(id) ?? null);
        if (chunk.length === 4096 || id === this.vocabSize - 1) {
          h.update(JSON.stringify(chunk));
          chunk.length = 0;
        }
      }
      this.fingerprintCache = h.digest('hex').slice(0, 16);
    }
    return this.fingerprintCache;
  }

  /** The whole pipeline as a `tokenizer.json` object (Hugging Face format). */
  toJSON(): JsonObject {
    const { cls, sep } = this.specials;
    const clsTok = this.idToToken(cls)!;
    const sepTok = this.idToToken(sep)!;
    const template: JsonObject = {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: clsTok, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: sepTok, type_id: 0 } }],
      pair: [
        { SpecialToken: { id: clsTok, type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: sepTok, type_id: 0 } },
        { Sequence: { id: 'B', type_id: 1 } },
        { SpecialToken: { id: sepTok, type_id: 1 } },
      ],
      special_tokens: {
        [clsTok]: { id: clsTok, ids: [cls], tokens: [clsTok] },
        [sepTok]: { id: sepTok, ids: [sep], tokens: [sepTok] },
      },
    };
    const decoder: JsonObject =
      this.kind === 'wordpiece'
        ? { type: 'WordPiece', prefix: this.model.continuingPrefix ?? '##', cleanup: this.cleanup }
        : { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true };
    return {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: this.added.toJSON(),
      normalizer: this.normalizer ? this.normalizer.toJSON() : null,
      pre_tokenizer: this.preTokenizer ? this.preTokenizer.toJSON() : null,
      post_processor: this.postProcessor ?? template,
      decoder,
      model: this.model.toJSON(),
    };
  }

  /**
   * Writes `tokenizer.json` (loadable by HF `Tokenizer.from_file` and by {@link loadTokenizer}) and
   * `tokenizer_config.json` (so transformers' `AutoTokenizer.from_pretrained(dir)` finds the special
   * tokens) into `dir`, created if needed; WordPiece also writes `vocab.txt` (one token per line, by id).
   */
  save(dir: string): void {
    mkdirSync(dir, { recursive: true });
    writeFileAtomic(join(dir, 'tokenizer.json'), [JSON.stringify(this.toJSON(), null, 2) + '\n']);
    const bert = this.normalizer instanceof BertNormalizer && this.preTokenizer instanceof BertPreTokenizer;
    const config: JsonObject = {
      tokenizer_class: bert ? 'BertTokenizer' : 'PreTrainedTokenizerFast',
      ...(bert
        ? {
            do_lower_case: (this.normalizer as BertNormalizer).lowercase,
            tokenize_chinese_chars: (this.normalizer as BertNormalizer).handleChineseChars,
            strip_accents: (this.normalizer as BertNormalizer).stripAccents,
          }
        : {}),
      cls_token: this.idToToken(this.specials.cls)!,
      sep_token: this.idToToken(this.specials.sep)!,
      pad_token: this.idToToken(this.specials.pad)!,
      ...(this.specials.unk !== undefined ? { unk_token: this.idToToken(this.specials.unk)! } : {}),
      ...(this.tokenToId('[MASK]') !== undefined ? { mask_token: '[MASK]' } : {}),
      clean_up_tokenization_spaces: this.kind === 'wordpiece' && this.cleanup,
    };
    writeFileAtomic(join(dir, 'tokenizer_config.json'), [JSON.stringify(config, null, 2) + '\n']);
    if (this.kind === 'wordpiece') {
      const lines: string[] = [];
      for (let id = 0; id < this.vocabSize; id++) lines.push(this.idToToken(id) ?? '');
      writeFileAtomic(join(dir, 'vocab.txt'), [lines.join('\n') + '\n']);
    }
  }
}
