/**
 * `moe-diffuseq tokenizer train|encode|decode|info`: train a byte-level BPE tokenizer on a corpus, and
 * look at what a tokenizer does with a text.
 */
import { join } from 'node:path';
import { UsageError } from '../../errors.js';
import { defaultTokenizer, loadTokenizer, readCorpus, trainBpe, type CorpusFormat, type PipelineTokenizer, type TrainProgress } from '../../tokenizer/index.js';
import { defineCommand, required, type OptionValues } from '../command.js';

const SUBCOMMANDS = ['train', 'encode', 'decode', 'info'] as const;
type Sub = (typeof SUBCOMMANDS)[number];

const options = {
  data: { type: 'string', multiple: true, placeholder: 'FILE', description: 'train: corpus file (JSONL with src/trg or text, or plain text; .gz too)' },
  'vocab-size': { type: 'int', placeholder: 'N', description: 'train: vocabulary size, special tokens and the 256 bytes included' },
  out: { type: 'string', placeholder: 'DIR', description: 'train: folder to write tokenizer.json and tokenizer_config.json into' },
  'min-frequency': { type: 'int', placeholder: 'N', default: 2, description: 'train: never merge a pair seen fewer times' },
  format: { type: 'string', choices: ['auto', 'jsonl', 'text'], default: 'auto', description: 'train: how to read --data (auto: .jsonl/.json are JSONL)' },
  special: {
    type: 'string',
    multiple: true,
    placeholder: 'TOKEN',
    description: 'train: special tokens in id order (default [PAD] [UNK] [CLS] [SEP] [MASK]; [CLS] [SEP] [PAD] always added)',
  },
  quiet: { type: 'boolean', description: 'train: no progress line on stderr' },
  tokenizer: { type: 'string', placeholder: 'PATH', description: 'encode/decode/info: tokenizer folder or file (default: bundled bert-base-uncased)' },
  text: { type: 'string', placeholder: 'TEXT', description: 'encode: the text to encode' },
  ids: { type: 'string', placeholder: 'IDS', description: 'decode: token ids separated by spaces or commas' },
  json: { type: 'boolean', description: 'encode/decode/info: print JSON' },
} as const;

/** Which subcommand each option belongs to (so a stray flag is an error, not silently ignored). */
const OWNER: Record<keyof typeof options, readonly Sub[]> = {
  data: ['train'],
  'vocab-size': ['train'],
  out: ['train'],
  'min-frequency': ['train'],
  format: ['train'],
  special: ['train'],
  quiet: ['train'],
  tokenizer: ['encode', 'decode', 'info'],
  text: ['encode'],
  ids: ['decode'],
  json: ['encode', 'decode', 'info'],
};

type Opts = OptionValues<typeof options>;

function load(opts: Opts): PipelineTokenizer {
  return opts.tokenizer === undefined ? defaultTokenizer() : loadTokenizer(opts.tokenizer);
}

/** A progress line on stderr: rewritten in place on a terminal, one line every 5 s otherwise. */
function progressPrinter(quiet: boolean): { show(msg: string): void; done(): void } {
  const tty = process.stderr.isTTY === true;
  let last = 0;
  let shown = false;
  return {
    show(msg: string): void {
      if (quiet) return;
      const now = Date.now();
      if (now - last < (tty ? 100 : 5000)) return;
      last = now;
      shown = true;
      process.stderr.write(tty ? `\r\x1b[K${msg}` : `${msg}\n`);
    },
    done(): void {
      if (!quiet && tty && shown) process.stderr.write('\r\x1b[K');
    },
  };
}

async function train(opts: Opts): Promise<number> {
  const files = required('tokenizer train', 'data', opts.data);
  const vocabSize = required('tokenizer train', 'vocab-size', opts['vocab-size']);
  const out = required('tokenizer train', 'out', opts.out);
  const progress = progressPrinter(opts.quiet === true);
  const t0 = Date.now();
  const mb = (n: number): string => (n / 1e6).toFixed(1);
  let bytes = '';
  const texts = readCorpus(files, {
    format: (opts.format ?? 'auto') as CorpusFormat,
    onBytes: (read, total) => {
      bytes = `${mb(read)}/${mb(total)} MB`;
    },
  });
  const tok = await trainBpe(texts, {
    vocabSize,
    minFrequency: opts['min-frequency'] ?? 2,
    ...(opts.special ? { specialTokens: opts.special } : {}),
    onProgress: (p: TrainProgress) => {
      const secs = ((Date.now() - t0) / 1000).toFixed(0);
      progress.show(p.phase === 'count' ? `reading: ${bytes}, ${p.done} texts (${secs} s)` : `merging: ${p.done}/${p.total} (${secs} s)`);
    },
  });
  progress.done();
  tok.save(out);
  const merges = tok.vocabSize - 256 - tok.added.tokens.length;
  process.stdout.write(
    `wrote ${join(out, 'tokenizer.json')}: byte-level BPE, vocabulary ${tok.vocabSize} (${merges} merged tokens), ` +
      `[CLS] ${tok.specials.cls} [SEP] ${tok.specials.sep} [PAD] ${tok.specials.pad}, fingerprint ${tok.fingerprint()}, ` +
      `${((Date.now() - t0) / 1000).toFixed(1)} s\n`,
  );
  if (tok.vocabSize < vocabSize) {
    process.stdout.write(`note: stopped below --vocab-size ${vocabSize}: no pair of tokens occurs --min-frequency (${opts['min-frequency'] ?? 2}) times any more\n`);
  }
  return 0;
}

function encode(opts: Opts): number {
  const text = required('tokenizer encode', 'text', opts.text);
  const tok = load(opts);
  const ids = tok.encode(text);
  const tokens = ids.map((id) => tok.idToToken(id) ?? '');
  if (opts.json) process.stdout.write(JSON.stringify({ ids, tokens }) + '\n');
  else process.stdout.write(`ids: ${ids.join(' ')}\ntokens: ${tokens.map((t) => JSON.stringify(t)).join(' ')}\ncount: ${ids.length}\n`);
  return 0;
}

function decode(opts: Opts): number {
  const raw = required('tokenizer decode', 'ids', opts.ids);
  const parts = raw.split(/[\s,]+/).filter((s) => s !== '');
  const ids = parts.map((s) => {
    const v = Number(s);
    if (!Number.isInteger(v)) throw new UsageError(`tokenizer decode: --ids expects integers (got '${s}')`);
    return v;
  });
  const tok = load(opts);
  const text = tok.decode(ids);
  process.stdout.write(opts.json ? JSON.stringify({ text }) + '\n' : `${text}\n`);
  return 0;
}

function info(opts: Opts): number {
  const tok = load(opts);
  const name = (id: number | undefined): string | null => (id === undefined ? null : (tok.idToToken(id) ?? null));
  const data = {
    kind: tok.kind,
    vocabSize: tok.vocabSize,
    specials: {
      cls: { id: tok.specials.cls, token: name(tok.specials.cls) },
      sep: { id: tok.specials.sep, token: name(tok.specials.sep) },
      pad: { id: tok.specials.pad, token: name(tok.specials.pad) },
      unk: tok.specials.unk === undefined ? null : { id: tok.specials.unk, token: name(tok.specials.unk) },
    },
    addedTokens: tok.added.tokens.map((t) => ({ id: t.id, content: t.content, special: t.special })),
    fingerprint: tok.fingerprint(),
  };
  if (opts.json) {
    process.stdout.write(JSON.stringify(data, null, 2) + '\n');
    return 0;
  }
  const s = data.specials;
  process.stdout.write(
    [
      `kind         ${data.kind === 'wordpiece' ? 'WordPiece' : 'byte-level BPE'}`,
      `vocab size   ${data.vocabSize}`,
      `specials     [CLS] ${s.cls.id} ${JSON.stringify(s.cls.token)}, [SEP] ${s.sep.id} ${JSON.stringify(s.sep.token)}, [PAD] ${s.pad.id} ${JSON.stringify(s.pad.token)}, [UNK] ${s.unk ? `${s.unk.id} ${JSON.stringify(s.unk.token)}` : 'none'}`,
      `added        ${data.addedTokens.map((t) => `${t.id} ${JSON.stringify(t.content)}`).join(', ') || 'none'}`,
      `fingerprint  ${data.fingerprint}`,
    ].join('\n') + '\n',
  );
  return 0;
}

/** The `tokenizer` command of the CLI. */
export const tokenizerCommand = defineCommand({
  name: 'tokenizer',
  summary: 'train a byte-level BPE tokenizer on a corpus, or encode/decode with a tokenizer',
  usage: [
    'tokenizer train --data FILE... --vocab-size N --out DIR [--min-frequency N] [--format auto|jsonl|text] [--special TOKEN...]',
    '       moe-diffuseq tokenizer encode [--tokenizer PATH] --text TEXT [--json]',
    '       moe-diffuseq tokenizer decode [--tokenizer PATH] --ids "ID ID ..." [--json]',
    '       moe-diffuseq tokenizer info [--tokenizer PATH] [--json]',
  ].join('\n'),
  details: [
    'train   learns a byte-level BPE vocabulary (GPT-2 style: every byte is a token, so nothing is',
    '        unknown and decoding is exact) and writes tokenizer.json, which Hugging Face loads too.',
    '        Use it where the default BERT vocabulary fits badly (code, other domains and languages).',
    'encode  prints the ids and tokens of --text (the default tokenizer is bert-base-uncased).',
    'decode  prints the text of --ids (special tokens dropped).',
    'info    prints the kind, vocabulary size, special tokens and fingerprint of a tokenizer.',
  ].join('\n'),
  options,
  positionals: { name: 'subcommand (train, encode, decode or info)', min: 1, max: 1 },
  async run(opts, positionals) {
    const sub = positionals[0] as Sub;
    if (!SUBCOMMANDS.includes(sub)) {
      throw new UsageError(`tokenizer: unknown subcommand '${positionals[0]}' (expected ${SUBCOMMANDS.join(', ')})`, 'moe-diffuseq tokenizer --help');
    }
    for (const flag of Object.keys(options) as (keyof typeof options)[]) {
      if (opts[flag] !== undefined && !OWNER[flag].includes(sub)) {
        throw new UsageError(`tokenizer ${sub}: --${flag} is only for ${OWNER[flag].join('/')}`, 'moe-diffuseq tokenizer --help');
      }
    }
    switch (sub) {
      case 'train':
        return train(opts);
      case 'encode':
        return encode(opts);
      case 'decode':
        return decode(opts);
      case 'info':
        return info(opts);
    }
  },
});
