/**
 * `moe-diffuseq eval`: scores model outputs against references with the metrics of SPEC section 6
 * (src/eval) and prints a table, or JSON with `--json`.
 *
 * Files: plain text is one sentence per line (a final newline does not add an empty sentence, a
 * trailing '\r' is dropped); `.jsonl` / `.json` files (or `--format jsonl`) hold one JSON object per
 * non-blank line, and the sentence is one field of it. Several `--ref` files give several references
 * per sentence (sacreBLEU's reference streams); a JSONL reference field may also hold a list of
 * references. Several `--hyp` files are several samples per source (DiffuSeq decodes one file per
 * seed): each file is scored, and self-BLEU / div-4 are computed across them.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { InputError, UsageError } from '../../errors.js';
import {
  BLEU_SMOOTH_METHODS,
  BLEU_TOKENIZERS,
  diversity,
  evaluate,
  formatBleu,
  mbrSelect,
  MetricError,
  METRICS,
  parseMetricList,
  SENTENCE_BLEU_ORDERS,
  type BleuSmoothMethod,
  type BleuTokenizerName,
  type EvalOptions,
  type EvalResult,
  type MetricName,
  type SentenceBleuOrder,
} from '../../eval/index.js';
import { defineCommand, required, type OptionValues } from '../command.js';

/** JSONL fields tried, in order, when no field is named (DiffuSeq's output files use recover / reference). */
const HYP_FIELDS = ['recover', 'hyp', 'prediction', 'output', 'text'] as const;
const REF_FIELDS = ['trg', 'reference', 'ref', 'target'] as const;

/** How each metric is shown in the table, and what it is. */
const DISPLAY: Readonly<Record<MetricName, { name: string; about: string; digits: number }>> = {
  bleu: { name: 'bleu', about: 'sacreBLEU corpus BLEU, 0-100', digits: 2 },
  sentenceBleu: { name: 'sentence-bleu', about: "DiffuSeq's mean sentence BLEU (NLTK method4), 0-1", digits: 4 },
  rouge1: { name: 'rouge1', about: 'mean ROUGE-1 F (rouge-score), 0-1', digits: 4 },
  rouge2: { name: 'rouge2', about: 'mean ROUGE-2 F (rouge-score), 0-1', digits: 4 },
  rougeL: { name: 'rougeL', about: 'mean ROUGE-L F (rouge-score), 0-1', digits: 4 },
  dist1: { name: 'dist1', about: 'mean distinct-unigram ratio per output, 0-1', digits: 4 },
  selfBleu: { name: 'self-bleu', about: 'across the --hyp files, lower = more diverse, 0-1', digits: 4 },
  div4: { name: 'div4', about: 'distinct 4-grams across the --hyp files, 0-1', digits: 4 },
  exactMatch: { name: 'exact-match', about: 'share of outputs equal to a reference', digits: 4 },
  meanLength: { name: 'mean-length', about: 'mean output length in whitespace tokens', digits: 2 },
};

const options = {
  hyp: {
    type: 'string',
    multiple: true,
    placeholder: 'FILE',
    description: 'model outputs, one sentence per line (or JSONL); several files = several samples per source',
  },
  ref: {
    type: 'string',
    multiple: true,
    placeholder: 'FILE',
    description: 'references, one sentence per line (or JSONL); repeat for several references per sentence',
  },
  format: { type: 'string', choices: ['auto', 'text', 'jsonl'], default: 'auto', description: 'how to read the files (auto: .jsonl and .json are JSONL)' },
  field: { type: 'string', placeholder: 'NAME', description: 'JSONL field holding the sentence, for --hyp and --ref files alike' },
  'hyp-field': { type: 'string', placeholder: 'NAME', description: `JSONL field of --hyp files (default: the first of ${HYP_FIELDS.join(', ')} in the first record)` },
  'ref-field': {
    type: 'string',
    placeholder: 'NAME',
    description: `JSONL field of --ref files, a string or a list of strings (default: the first of ${REF_FIELDS.join(', ')})`,
  },
  metrics: { type: 'string', placeholder: 'LIST', default: 'all', description: `comma list of ${METRICS.map((m) => DISPLAY[m].name).join(', ')}` },
  json: { type: 'boolean', description: 'print JSON instead of a table' },
  tokenize: { type: 'string', choices: BLEU_TOKENIZERS, default: '13a', description: 'sacreBLEU tokenizer for bleu' },
  lowercase: { type: 'boolean', description: 'lowercase outputs and references before every metric (sacreBLEU -lc)' },
  smooth: { type: 'string', choices: BLEU_SMOOTH_METHODS, default: 'exp', description: 'sacreBLEU smoothing for bleu' },
  'smooth-value': { type: 'number', placeholder: 'X', description: 'value for --smooth floor (default 0.1) or add-k (default 1)' },
  'sentence-bleu-order': {
    type: 'string',
    choices: SENTENCE_BLEU_ORDERS,
    default: 'diffuseq',
    description: "diffuseq: DiffuSeq's order (output in NLTK's reference slot); nltk: output as the hypothesis",
  },
  stem: { type: 'boolean', description: 'Porter-stem ROUGE tokens (rouge-score use_stemmer=True)' },
  mbr: { type: 'boolean', description: 'with several --hyp files: also score the MBR choice among them for each source' },
} as const;

type Opts = OptionValues<typeof options>;
type Format = 'auto' | 'text' | 'jsonl';

function readText(file: string): string {
  let raw: string;
  try {
    raw = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a folder, not a file' : (e as Error).message;
    throw new InputError(file, undefined, why);
  }
  return raw.startsWith('\uFEFF') ? raw.slice(1) : raw;
}

/** Physical lines of a file: a final newline ends the last line rather than starting an empty one. */
function splitLines(raw: string): string[] {
  if (raw === '') return [];
  const lines = raw.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines.map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
}

function isJsonl(file: string, format: Format): boolean {
  if (format !== 'auto') return format === 'jsonl';
  return /\.jsonl?$/i.test(file);
}

/**
 * Reads one file as a list of sentences; each entry lists the strings of that sentence (one for a
 * plain line or a string field, several for a reference field holding a list).
 */
function readSentences(file: string, format: Format, role: 'hyp' | 'ref', field: string | undefined): string[][] {
  const lines = splitLines(readText(file));
  if (!isJsonl(file, format)) return lines.map((l) => [l]);
  const flag = role === 'hyp' ? '--hyp-field' : '--ref-field';
  const defaults: readonly string[] = role === 'hyp' ? HYP_FIELDS : REF_FIELDS;
  let name = field;
  const out: string[][] = [];
  lines.forEach((line, i) => {
    const lineNo = i + 1;
    if (line.trim() === '') return;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch (e) {
      throw new InputError(file, lineNo, `invalid JSON: ${(e as Error).message}`);
    }
    if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) throw new InputError(file, lineNo, 'expected a JSON object on each line');
    const obj = rec as Record<string, unknown>;
    if (name === undefined) {
      name = defaults.find((f) => f in obj);
      if (name === undefined) {
        throw new InputError(file, lineNo, `none of the fields ${defaults.join(', ')} (has: ${Object.keys(obj).join(', ') || 'none'})`, `name the field with ${flag} or --field`);
      }
    }
    if (!(name in obj)) throw new InputError(file, lineNo, `no field '${name}' (has: ${Object.keys(obj).join(', ') || 'none'})`, `name the field with ${flag} or --field`);
    const v = obj[name];
    if (typeof v === 'string') out.push([v]);
    else if (role === 'ref' && Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string')) out.push(v as string[]);
    else throw new InputError(file, lineNo, `field '${name}' must be a string${role === 'ref' ? ' or a non-empty list of strings' : ''} (got ${JSON.stringify(v)?.slice(0, 60)})`);
  });
  return out;
}

/** A metric value for the table. */
function fmt(m: MetricName, v: number | null | undefined): string {
  if (v === undefined) return '';
  if (v === null) return 'n/a';
  return v.toFixed(DISPLAY[m].digits);
}

function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === 0 || c === r.length - 1 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ').trimEnd()).join('\n') + '\n';
}

/** The metric values of a result as a plain object, in report order. */
function metricValues(r: EvalResult, metrics: readonly MetricName[]): Record<string, number | null> {
  const out: Record<string, number | null> = {};
  for (const m of metrics) {
    const v = r[m];
    if (v !== undefined) out[m] = v;
  }
  return out;
}

async function run(o: Opts): Promise<number> {
  const hypFiles = required('eval', 'hyp', o.hyp);
  const refFiles = required('eval', 'ref', o.ref);
  const format = (o.format ?? 'auto') as Format;
  let metrics: MetricName[];
  try {
    metrics = parseMetricList(o.metrics ?? 'all');
  } catch (e) {
    if (e instanceof MetricError) throw new UsageError(`eval: --metrics: ${e.detail}`, 'moe-diffuseq eval --help');
    throw e;
  }
  const smooth = (o.smooth ?? 'exp') as BleuSmoothMethod;
  if (o['smooth-value'] !== undefined && smooth !== 'floor' && smooth !== 'add-k') {
    throw new UsageError(`eval: --smooth-value applies to --smooth floor or add-k (got --smooth ${smooth})`);
  }
  if (o.mbr && hypFiles.length < 2) throw new UsageError('eval: --mbr needs two or more --hyp files (one sample per file)');

  const hyps = hypFiles.map((f) => readSentences(f, format, 'hyp', o['hyp-field'] ?? o.field).map((s) => s[0]!));
  const refStreams = refFiles.map((f) => readSentences(f, format, 'ref', o['ref-field'] ?? o.field));
  const n = hyps[0]!.length;
  if (n === 0) throw new InputError(hypFiles[0]!, undefined, 'no sentences');
  const counts: [string, number][] = [...hypFiles.map((f, i): [string, number] => [f, hyps[i]!.length]), ...refFiles.map((f, i): [string, number] => [f, refStreams[i]!.length])];
  for (const [f, c] of counts) {
    if (c !== n) {
      throw new InputError(f, undefined, `${c} sentences, but ${hypFiles[0]} has ${n}`, 'every --hyp and --ref file needs one sentence per line (or record), in the same order');
    }
  }
  // refs[i] = every reference of sentence i, over the --ref files in order
  const refs = Array.from({ length: n }, (_, i) => refStreams.flatMap((s) => s[i]!));

  const perFile = metrics.filter((m) => m !== 'selfBleu' && m !== 'div4');
  const evalOpts: EvalOptions = {
    metrics: perFile,
    tokenize: (o.tokenize ?? '13a') as BleuTokenizerName,
    lowercase: o.lowercase === true,
    smoothMethod: smooth,
    ...(o['smooth-value'] !== undefined ? { smoothValue: o['smooth-value'] } : {}),
    sentenceBleuOrder: (o['sentence-bleu-order'] ?? 'diffuseq') as SentenceBleuOrder,
    stem: o.stem === true,
  };
  const score = (h: readonly string[]): EvalResult => {
    try {
      return evaluate(h, refs, evalOpts);
    } catch (e) {
      if (e instanceof MetricError && e.index !== undefined) throw new InputError(refFiles.join(', '), e.index + 1, e.detail);
      throw e;
    }
  };
  const results = hyps.map(score);
  const wantDiv = metrics.includes('selfBleu') || metrics.includes('div4');
  const samples = Array.from({ length: n }, (_, i) => hyps.map((h) => (o.lowercase ? h[i]!.toLowerCase() : h[i]!)));
  const div = wantDiv && hyps.length >= 2 ? diversity(samples) : undefined;
  let mbr: { result: EvalResult; selected: number[] } | undefined;
  if (o.mbr) {
    const selected = samples.map((c) => mbrSelect(c));
    mbr = { result: score(selected.map((k, i) => hyps[k]![i]!)), selected };
  }
  const nrefs = new Set(refs.map((r) => r.length));
  const refsPer = nrefs.size === 1 ? [...nrefs][0]! : 'var';

  if (o.json) {
    const doc = {
      sentences: n,
      hyp: hypFiles,
      ref: refFiles,
      referencesPerSentence: refsPer,
      options: {
        metrics,
        tokenize: evalOpts.tokenize,
        lowercase: evalOpts.lowercase,
        smooth,
        smoothValue: o['smooth-value'] ?? null,
        sentenceBleuOrder: evalOpts.sentenceBleuOrder,
        stem: evalOpts.stem,
      },
      results: results.map((r, i) => ({
        file: hypFiles[i],
        metrics: metricValues(r, perFile),
        ...(r.bleuDetail ? { bleu: { ...r.bleuDetail, signature: r.bleuSignature } } : {}),
      })),
      diversity: wantDiv ? (div ? { samples: hyps.length, selfBleu: div.selfBleu, div4: div.div4 } : null) : undefined,
      mbr: mbr ? { metrics: metricValues(mbr.result, perFile), selected: mbr.selected } : undefined,
    };
    process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
    return 0;
  }

  const refDesc = refsPer === 'var' ? 'a variable number of references' : `${refsPer} reference${refsPer === 1 ? '' : 's'} each`;
  const lines: string[] = [`${n} sentences, ${refDesc} (${refFiles.map((f) => basename(f)).join(', ')})`, ''];
  const cols = [...hypFiles.map((f) => basename(f)), ...(mbr ? ['mbr'] : [])];
  const all = [...results, ...(mbr ? [mbr.result] : [])];
  const rows: string[][] = [['metric', ...cols, '']];
  for (const m of perFile) rows.push([DISPLAY[m].name, ...all.map((r) => fmt(m, r[m])), DISPLAY[m].about]);
  for (const m of metrics) {
    if (m !== 'selfBleu' && m !== 'div4') continue;
    const v = div ? (m === 'selfBleu' ? div.selfBleu : div.div4) : null;
    const about = div ? DISPLAY[m].about : 'needs two or more --hyp files (one sample per file)';
    rows.push([DISPLAY[m].name, fmt(m, v), ...cols.slice(1).map(() => ''), about]);
  }
  lines.push(table(rows).trimEnd());
  if (results[0]?.bleuDetail) {
    lines.push('');
    results.forEach((r, i) => {
      if (r.bleuDetail) lines.push(`${hypFiles.length > 1 ? `${basename(hypFiles[i]!)}: ` : ''}${formatBleu(r.bleuDetail)}`);
    });
    lines.push(`bleu signature: ${results[0].bleuSignature ?? ''}`);
  }
  if (perFile.includes('sentenceBleu')) lines.push(`sentence-bleu order: ${evalOpts.sentenceBleuOrder}`);
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

/** The `eval` command. */
export const evalCommand = defineCommand({
  name: 'eval',
  summary: 'score outputs against references: sacreBLEU, DiffuSeq sentence BLEU, ROUGE, diversity',
  usage: 'eval --hyp FILE [--hyp FILE2 ...] --ref FILE [--ref FILE2 ...] [--metrics LIST] [--json]',
  details: [
    'Metrics (SPEC section 6), each on its usual scale:',
    '  bleu           sacreBLEU corpus BLEU (0-100): --tokenize (13a), --smooth (exp), --lowercase',
    "  sentence-bleu  DiffuSeq's number (0-1): mean NLTK sentence_bleu, SmoothingFunction().method4,",
    "                 whitespace tokens. DiffuSeq's script passes the output as NLTK's reference and the",
    "                 gold text as the hypothesis; --sentence-bleu-order diffuseq (default) keeps that",
    '                 order so results compare with its tables, nltk uses the documented order.',
    "  rouge1/2/L     mean F-measure as Google's rouge-score (0-1): lowercase, [a-z0-9]+ tokens,",
    '                 best reference per sentence; --stem for its Porter stemmer',
    "  dist1          DiffuSeq's distinct-unigram ratio per output, averaged",
    "  self-bleu/div4 DiffuSeq's diversity across several --hyp files (samples of the same sources)",
    '  exact-match    share of outputs equal to one of their references (whitespace-normalised)',
    '  mean-length    mean number of whitespace tokens per output',
    'Files: plain text, one sentence per line; .jsonl/.json files are JSONL, and the field is the',
    `first of ${HYP_FIELDS.join(', ')} (--hyp) or ${REF_FIELDS.join(', ')} (--ref) found in the`,
    "first record, so DiffuSeq's output files work as both: --hyp out.json --ref out.json.",
    'Several --ref files: reference k of each sentence comes from file k (empty lines are empty',
    'references, as in sacreBLEU >= 2.1).',
  ].join('\n'),
  options,
  run,
});
