/**
 * Dataset readers: JSONL pairs (DiffuSeq's `{"src", "trg"}`), JSONL documents (`{"text"}`), and plain
 * text files or folders of them (long documents). All of them stream on top of {@link readLines}, so
 * they take plain or gzip-compressed files of any size, report progress, and turn every problem into an
 * {@link InputError} naming file and line (or, with `skipBad`, into a count in a {@link BadInputReport}).
 *
 * Texts are returned exactly as the file has them (no trimming): whitespace can matter (code), and
 * tokenizers drop what does not. "Empty" checks ignore whitespace, though: a target of spaces is empty.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError, InputError } from '../errors.js';
import { fileSize, openError, readLines, type Compression, type Line, type ProgressCallback, type ReadLinesOptions } from './lines.js';
import { BadInputReport, handleBad } from './report.js';

/** Options every reader takes. */
export interface ReaderOptions {
  /** Skip bad records (counted in `report`) instead of throwing at the first one. Default false. */
  skipBad?: boolean;
  /** Where skipped records are counted; pass one to share it between readers. Default: a new one. */
  report?: BadInputReport;
  /** Progress in bytes read of the total size of all files read (compressed bytes for `.gz`). */
  onProgress?: ProgressCallback;
  /** Longest line accepted, in bytes (default 64 MiB). */
  maxLineBytes?: number;
  /** Decompression (default `auto`: by `.gz` name or gzip magic bytes). */
  compression?: Compression;
}

/** A stream of records that also carries the report of what was skipped (filled in as it is read). */
export type DataStream<T> = AsyncGenerator<T, void, undefined> & {
  /** Skipped records so far; complete once the stream has been read to the end. */
  readonly report: BadInputReport;
};

/** A source/target pair with where it came from. A document is a pair with `src === ""`. */
export interface Example {
  /** Source (condition) text; empty for a plain document. */
  readonly src: string;
  /** Target text (what the model generates). Never empty. */
  readonly trg: string;
  /** File it was read from. */
  readonly file: string;
  /** 1-based line where the record starts. */
  readonly line: number;
}

/** A document: one text, with where it came from. */
export interface TextDocument {
  /** The text. Never empty. */
  readonly text: string;
  /** File it was read from. */
  readonly file: string;
  /** 1-based line where the document starts. */
  readonly line: number;
}

/** Options of {@link readPairs}. */
export interface PairReaderOptions extends ReaderOptions {
  /** Field holding the source (default `src`). */
  srcField?: string;
  /** Field holding the target (default `trg`). */
  trgField?: string;
}

/** Options of {@link readDocuments}. */
export interface DocumentReaderOptions extends ReaderOptions {
  /** Field holding the text (default `text`). */
  field?: string;
}

/**
 * How a text file is cut into documents: `file` (default; the whole file is one document, for books
 * and long documents), `paragraph` (blocks separated by blank lines) or `line` (every non-blank line).
 */
export type TextSplit = 'file' | 'paragraph' | 'line';

/** Options of {@link readTextFiles}. */
export interface TextFileReaderOptions extends ReaderOptions {
  /** Which files of a folder are read (default `.txt` and `.txt.gz`); a single named file is always read. */
  extensions?: readonly string[];
  /** How files are cut into documents (default `file`). */
  split?: TextSplit;
  /**
   * Longest document accepted, in UTF-16 characters (default 2^28): one document must fit in one
   * JavaScript string, whose length V8 caps at about 2^29.
   */
  maxDocumentChars?: number;
}

/** Input formats {@link readExamples} knows; `auto` decides from the path and the first record. */
export type DataFormat = 'auto' | 'pairs' | 'documents' | 'text';

/** Options of {@link readExamples}. */
export interface ExampleReaderOptions extends PairReaderOptions, Omit<TextFileReaderOptions, keyof ReaderOptions> {
  /** Input format (default `auto`). */
  format?: DataFormat;
  /** Field holding a document's text in JSONL documents (default `text`). */
  textField?: string;
}

const DEFAULT_EXTENSIONS: readonly string[] = ['.txt', '.txt.gz'];
const DEFAULT_MAX_DOCUMENT_CHARS = 1 << 28;

/** Attaches the report to a generator (the stream's public shape). */
function withReport<T>(gen: AsyncGenerator<T, void, undefined>, report: BadInputReport): DataStream<T> {
  return Object.assign(gen, { report });
}

/** Progress over several files: offsets each file's progress by the sizes of the files before it. */
class MultiFileProgress {
  private base = 0;
  constructor(private readonly total: number, private readonly cb: ProgressCallback | undefined) {}
  /** The callback to give the reader of the next file, of size `size`. */
  forFile(size: number): ProgressCallback | undefined {
    const cb = this.cb;
    if (!cb) return undefined;
    const base = this.base;
    this.base += size;
    return (done) => cb(base + done, this.total);
  }
}

/** Names a JSON value's type for an error message ("an array", "null", "a number"). */
function describeJson(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  const t = typeof value;
  return t === 'object' ? 'an object' : `a ${t}`;
}

/** Lists an object's keys for a "missing field" message, capped so one wide record cannot flood it. */
function keyList(obj: Record<string, unknown>): string {
  const keys = Object.keys(obj);
  if (keys.length === 0) return 'no fields';
  const shown = keys.slice(0, 8).map((k) => JSON.stringify(k)).join(', ');
  return `fields ${shown}${keys.length > 8 ? `, ... (${keys.length} in all)` : ''}`;
}

/** Parses one JSONL line into an object; undefined for a blank line (tolerated, not data). */
function parseObjectLine(ln: Line): Record<string, unknown> | undefined {
  if (ln.text.trim() === '') return undefined;
  let value: unknown;
  try {
    value = JSON.parse(ln.text);
  } catch (err) {
    throw new InputError(ln.file, ln.line, `not valid JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InputError(ln.file, ln.line, `expected a JSON object, got ${describeJson(value)}`);
  }
  return value as Record<string, unknown>;
}

/** Reads a string field of a record, with the errors the readers share. */
function stringField(obj: Record<string, unknown>, field: string, ln: Line, hint: string): string {
  if (!Object.prototype.hasOwnProperty.call(obj, field)) {
    throw new InputError(ln.file, ln.line, `missing field "${field}" (the record has ${keyList(obj)})`, hint);
  }
  const v = obj[field];
  if (typeof v !== 'string') throw new InputError(ln.file, ln.line, `field "${field}" is ${describeJson(v)}, expected a string`);
  return v;
}

const isBlank = (s: string): boolean => s.trim() === '';

/** Throws when a file gave no record at all: an empty or wholly bad file is never an empty dataset. */
function checkNotEmpty(file: string, records: number, skippedBefore: number, report: BadInputReport): void {
  if (records > 0) return;
  const skipped = report.count - skippedBefore;
  throw new InputError(file, undefined, skipped > 0 ? `no valid records (all ${skipped} skipped as bad)` : 'no records (empty file)');
}

/**
 * Reads DiffuSeq-style JSONL pairs, one `{"src": ..., "trg": ...}` object per line (other field names
 * by option; other fields are ignored). Blank lines are ignored. `.gz` files are decompressed.
 *
 * @throws InputError `file:line: what` for a line that is not JSON, not an object, lacks a field, has a
 *   non-string field, or has an empty (or all-whitespace) target; for an empty file; and for everything
 *   {@link readLines} throws. With `skipBad`, bad lines are counted in `report` instead.
 */
export function readPairs(file: string, options: PairReaderOptions = {}): DataStream<Example> {
  const report = options.report ?? new BadInputReport();
  return withReport(pairsGen(file, options, report), report);
}

async function* pairsGen(file: string, options: PairReaderOptions, report: BadInputReport): AsyncGenerator<Example, void, undefined> {
  const srcField = options.srcField ?? 'src';
  const trgField = options.trgField ?? 'trg';
  const hint = 'choose the field names with the srcField / trgField options';
  yield* jsonlRecords(file, options, report, (obj, ln) => {
    const src = stringField(obj, srcField, ln, hint);
    const trg = stringField(obj, trgField, ln, hint);
    if (isBlank(trg)) throw new InputError(ln.file, ln.line, `empty target (field "${trgField}")`);
    return { src, trg, file: ln.file, line: ln.line };
  });
}

/**
 * The JSON objects of a JSONL file turned into records by `toRecord` (which throws InputError for a
 * bad one): blank lines skipped, bad lines thrown or (skipBad) counted, an empty result an error.
 */
async function* jsonlRecords<T>(
  file: string,
  options: ReaderOptions,
  report: BadInputReport,
  toRecord: (obj: Record<string, unknown>, ln: Line) => T,
): AsyncGenerator<T, void, undefined> {
  const skipBad = options.skipBad ?? false;
  const before = report.count;
  let n = 0;
  for await (const ln of readLines(file, lineOptions(options, report, options.onProgress))) {
    let rec: T;
    try {
      const obj = parseObjectLine(ln);
      if (obj === undefined) continue;
      rec = toRecord(obj, ln);
    } catch (err) {
      if (!(err instanceof InputError)) throw err;
      handleBad(err, skipBad, report);
      continue;
    }
    n++;
    yield rec;
  }
  checkNotEmpty(file, n, before, report);
}

/**
 * Reads JSONL documents, one object per line with the text in field `text` (or `field`). Blank lines
 * are ignored; `.gz` files are decompressed.
 *
 * @throws InputError as {@link readPairs}, with "empty document" for an empty text.
 */
export function readDocuments(file: string, options: DocumentReaderOptions = {}): DataStream<TextDocument> {
  const report = options.report ?? new BadInputReport();
  return withReport(documentsGen(file, options, report), report);
}

async function* documentsGen(file: string, options: DocumentReaderOptions, report: BadInputReport): AsyncGenerator<TextDocument, void, undefined> {
  const field = options.field ?? 'text';
  yield* jsonlRecords(file, options, report, (obj, ln) => {
    const text = stringField(obj, field, ln, 'choose the text field with the field option');
    if (isBlank(text)) throw new InputError(ln.file, ln.line, `empty document (field "${field}")`);
    return { text, file: ln.file, line: ln.line };
  });
}

/** The {@link readLines} options a reader passes on (only those set, so readLines' defaults apply). */
function lineOptions(options: ReaderOptions, report: BadInputReport, onProgress: ProgressCallback | undefined): ReadLinesOptions {
  return {
    skipBad: options.skipBad ?? false,
    report,
    ...(onProgress ? { onProgress } : {}),
    ...(options.maxLineBytes !== undefined ? { maxLineBytes: options.maxLineBytes } : {}),
    ...(options.compression !== undefined ? { compression: options.compression } : {}),
  };
}

/**
 * The files a text path stands for: the file itself, or every file under a folder (recursively) whose
 * name ends with one of `extensions`, hidden entries (`.name`) excluded, in code-unit order of their
 * paths so that every platform reads them in the same order.
 */
export async function listTextFiles(path: string, extensions: readonly string[] = DEFAULT_EXTENSIONS): Promise<string[]> {
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    throw openError(path, err);
  }
  if (!st.isDirectory()) return [path];
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const names = (await readdir(dir)).filter((n) => !n.startsWith('.'));
    names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    for (const name of names) {
      const p = join(dir, name);
      const s = await stat(p);
      if (s.isDirectory()) await walk(p);
      else if (s.isFile() && extensions.some((e) => name.toLowerCase().endsWith(e.toLowerCase()))) out.push(p);
    }
  };
  await walk(path);
  if (out.length === 0) {
    throw new InputError(path, undefined, `no ${extensions.join(' or ')} files in this folder`, 'pass the extensions option to read other files');
  }
  return out;
}

/**
 * Reads plain text (or `.txt.gz`) files as documents: one file, or a folder of them (see
 * {@link listTextFiles}). Lines are joined with `\n` (CRLF becomes LF; the final line break is not part
 * of the text). With `split: 'file'` a whole file is one document, which must fit in memory; the other
 * modes stream files of any size.
 *
 * With `skipBad`, a document containing a bad line (invalid UTF-8, too long) is dropped whole rather
 * than used with a hole in it; the bad line is in the report.
 *
 * @throws InputError for an empty file (in `file` mode), a file without any text, a document over
 *   `maxDocumentChars`, an empty folder, and everything {@link readLines} throws.
 */
export function readTextFiles(path: string, options: TextFileReaderOptions = {}): DataStream<TextDocument> {
  const report = options.report ?? new BadInputReport();
  return withReport(textFilesGen(path, options, report), report);
}

async function* textFilesGen(path: string, options: TextFileReaderOptions, report: BadInputReport): AsyncGenerator<TextDocument, void, undefined> {
  const split = options.split ?? 'file';
  if (split !== 'file' && split !== 'paragraph' && split !== 'line') throw new ConfigError(`split must be file, paragraph or line, got ${String(split)}`);
  const maxChars = options.maxDocumentChars ?? DEFAULT_MAX_DOCUMENT_CHARS;
  const skipBad = options.skipBad ?? false;
  const files = await listTextFiles(path, options.extensions ?? DEFAULT_EXTENSIONS);
  const sizes: number[] = [];
  for (const f of files) sizes.push(options.onProgress ? await fileSize(f) : 0);
  const progress = new MultiFileProgress(
    sizes.reduce((a, b) => a + b, 0),
    options.onProgress,
  );

  const reportStart = report.count;
  let total = 0;
  for (let fi = 0; fi < files.length; fi++) {
    const file = files[fi]!;
    const before = report.count;
    let n = 0;
    let parts: string[] = [];
    let chars = 0;
    let startLine = 0;
    let badAt = report.count; // report.count when the current document started
    let tooLongReported = false;

    // Ends the document being built; yields it unless a line of it was bad or it is blank.
    const finish = (): TextDocument | undefined => {
      const text = parts.join('\n');
      const clean = report.count === badAt && !tooLongReported;
      parts = [];
      chars = 0;
      tooLongReported = false;
      badAt = report.count;
      if (!clean || isBlank(text)) return undefined;
      return { text, file, line: startLine };
    };

    for await (const ln of readLines(file, lineOptions(options, report, progress.forFile(sizes[fi]!)))) {
      if (split === 'line') {
        if (isBlank(ln.text)) continue;
        if (ln.text.length > maxChars) {
          handleBad(new InputError(file, ln.line, `document longer than ${maxChars} characters`), skipBad, report);
          continue;
        }
        n++;
        yield { text: ln.text, file, line: ln.line };
        continue;
      }
      if (split === 'paragraph' && isBlank(ln.text)) {
        const doc = finish();
        if (doc) {
          n++;
          yield doc;
        }
        continue;
      }
      if (parts.length === 0) startLine = ln.line;
      if (tooLongReported) continue;
      chars += ln.text.length + (parts.length > 0 ? 1 : 0); // the joined text's length, line breaks included
      if (chars > maxChars) {
        handleBad(
          new InputError(file, startLine, `document longer than ${maxChars} characters`, "split it with split: 'paragraph' or raise maxDocumentChars"),
          skipBad,
          report,
        );
        tooLongReported = true;
        parts = [];
        continue;
      }
      parts.push(ln.text);
    }
    const doc = finish();
    if (doc) {
      n++;
      yield doc;
    }
    // A file without any text is a problem of its own (a failed export, a wrong folder), but under
    // skipBad one empty file among many should not stop the others.
    if (n === 0 && report.count === before) handleBad(new InputError(file, undefined, 'no text (empty file)'), skipBad, report);
    total += n;
  }
  checkNotEmpty(path, total, reportStart, report);
}

/** True for names that {@link readExamples} in `auto` mode reads as JSONL. */
function looksJsonl(path: string): boolean {
  const p = path.toLowerCase().replace(/\.gz$/, '');
  return p.endsWith('.jsonl') || p.endsWith('.json') || p.endsWith('.ndjson');
}

/**
 * Reads any supported dataset as examples (pairs; a document becomes a pair with an empty source).
 *
 * `format: 'auto'` (default): a folder or a non-JSON name (`.txt`, `.txt.gz`, ...) is read as text
 * files; a `.jsonl` / `.json` / `.ndjson` name (optionally `.gz`) as JSONL, where the first record
 * decides per file: pairs if it has `srcField` and `trgField`, else documents if it has `textField`.
 */
export function readExamples(path: string, options: ExampleReaderOptions = {}): DataStream<Example> {
  const report = options.report ?? new BadInputReport();
  return withReport(examplesGen(path, options, report), report);
}

async function* examplesGen(path: string, options: ExampleReaderOptions, report: BadInputReport): AsyncGenerator<Example, void, undefined> {
  const format = options.format ?? 'auto';
  const opts = { ...options, report };
  let isDir = false;
  if (format === 'auto' || format === 'text') {
    try {
      isDir = (await stat(path)).isDirectory();
    } catch (err) {
      throw openError(path, err);
    }
  }
  if (format === 'text' || (format === 'auto' && (isDir || !looksJsonl(path)))) {
    for await (const d of readTextFiles(path, opts)) yield { src: '', trg: d.text, file: d.file, line: d.line };
    return;
  }
  if (format === 'pairs') {
    yield* readPairs(path, opts);
    return;
  }
  const textField = options.textField ?? 'text';
  if (format === 'documents') {
    for await (const d of readDocuments(path, { ...opts, field: textField })) yield { src: '', trg: d.text, file: d.file, line: d.line };
    return;
  }
  if (format !== 'auto') throw new ConfigError(`format must be auto, pairs, documents or text, got ${String(format)}`);
  yield* autoJsonlGen(path, options, report, textField);
}

/** JSONL whose kind (pairs or documents) the first valid object decides. */
async function* autoJsonlGen(path: string, options: ExampleReaderOptions, report: BadInputReport, textField: string): AsyncGenerator<Example, void, undefined> {
  const srcField = options.srcField ?? 'src';
  const trgField = options.trgField ?? 'trg';
  const skipBad = options.skipBad ?? false;
  const before = report.count;
  let kind: 'pairs' | 'documents' | undefined;
  let n = 0;
  for await (const ln of readLines(path, lineOptions(options, report, options.onProgress))) {
    let ex: Example | undefined;
    try {
      const obj = parseObjectLine(ln);
      if (obj === undefined) continue;
      if (kind === undefined) {
        const has = (f: string): boolean => Object.prototype.hasOwnProperty.call(obj, f);
        if (has(srcField) && has(trgField)) kind = 'pairs';
        else if (has(textField)) kind = 'documents';
        else {
          throw new InputError(
            ln.file,
            ln.line,
            `cannot tell pairs from documents: no "${srcField}"/"${trgField}" nor "${textField}" field (the record has ${keyList(obj)})`,
            'choose the fields with srcField / trgField / textField, or set format',
          );
        }
      }
      if (kind === 'pairs') {
        const hint = 'choose the field names with the srcField / trgField options';
        const src = stringField(obj, srcField, ln, hint);
        const trg = stringField(obj, trgField, ln, hint);
        if (isBlank(trg)) throw new InputError(ln.file, ln.line, `empty target (field "${trgField}")`);
        ex = { src, trg, file: ln.file, line: ln.line };
      } else {
        const text = stringField(obj, textField, ln, 'choose the text field with the textField option');
        if (isBlank(text)) throw new InputError(ln.file, ln.line, `empty document (field "${textField}")`);
        ex = { src: '', trg: text, file: ln.file, line: ln.line };
      }
    } catch (err) {
      if (!(err instanceof InputError)) throw err;
      handleBad(err, skipBad, report);
      continue;
    }
    n++;
    yield ex;
  }
  checkNotEmpty(path, n, before, report);
}

/** Reads a whole stream into an array (for datasets that fit in memory). */
export async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of stream) out.push(x);
  return out;
}

/** Reads a whole dataset ({@link readExamples}) into memory, with the report of what was skipped. */
export async function loadExamples(path: string, options: ExampleReaderOptions = {}): Promise<{ examples: Example[]; report: BadInputReport }> {
  const stream = readExamples(path, options);
  const examples = await collect(stream);
  return { examples, report: stream.report };
}
