/**
 * Texts for tokenizer training, streamed from files: JSONL records (`src` and `trg`, or `text`) or plain
 * text, either of them gzip-compressed (`.gz`).
 */
import { createReadStream, statSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { InputError } from '../errors.js';

/** How to read a corpus file: `auto` goes by the name (`.jsonl`/`.json`, optionally `.gz`, is JSONL). */
export type CorpusFormat = 'auto' | 'jsonl' | 'text';

/** Options of {@link readCorpus}. */
export interface ReadCorpusOptions {
  readonly format?: CorpusFormat;
  /** Called with the bytes read so far (compressed bytes for `.gz`) and the total size of the files. */
  readonly onBytes?: (read: number, total: number) => void;
}

/** Plain text is handed to the trainer in blocks of lines, so that newlines and indentation are seen. */
const BLOCK_LINES = 256;

function isJsonl(file: string, format: CorpusFormat): boolean {
  if (format !== 'auto') return format === 'jsonl';
  return /\.jsonl?(\.gz)?$/i.test(file);
}

/**
 * Yields the texts of the files in order. JSONL: every record gives its `src` and its `trg` (or its
 * `text`), blank lines are skipped, anything else is an InputError with the file and line. Plain text:
 * the file's lines, in blocks of 256 joined by newlines.
 * @throws InputError for an unreadable file, invalid JSON, or a record without a text field
 */
export async function* readCorpus(files: readonly string[], opts: ReadCorpusOptions = {}): AsyncGenerator<string> {
  const format = opts.format ?? 'auto';
  const sizes = files.map((f) => {
    try {
      return statSync(f).size;
    } catch {
      throw new InputError(f, undefined, 'no such file');
    }
  });
  const total = sizes.reduce((a, b) => a + b, 0);
  let before = 0;
  for (const [fi, file] of files.entries()) {
    const raw = createReadStream(file);
    let input: Readable = raw;
    if (/\.gz$/i.test(file)) {
      const gunzip = createGunzip();
      raw.on('error', (e) => gunzip.destroy(e));
      input = raw.pipe(gunzip);
    }
    const lines = createInterface({ input, crlfDelay: Infinity });
    const jsonl = isJsonl(file, format);
    let lineNo = 0;
    let block: string[] = [];
    try {
      for await (const line of lines) {
        lineNo++;
        // bytesRead is what the file stream has handed on (readline reads ahead a little)
        if (opts.onBytes && lineNo % 256 === 0) opts.onBytes(before + raw.bytesRead, total);
        if (!jsonl) {
          block.push(line);
          if (block.length === BLOCK_LINES) {
            yield block.join('\n');
            block = [];
          }
          continue;
        }
        if (line.trim() === '') continue;
        let rec: unknown;
        try {
          rec = JSON.parse(line);
        } catch (e) {
          throw new InputError(file, lineNo, `invalid JSON: ${(e as Error).message}`);
        }
        if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) throw new InputError(file, lineNo, 'expected a JSON object');
        const r = rec as Record<string, unknown>;
        let found = false;
        for (const k of ['src', 'trg']) {
          if (typeof r[k] === 'string') {
            found = true;
            if (r[k]) yield r[k] as string;
          }
        }
        if (!found && typeof r['text'] === 'string') {
          found = true;
          if (r['text']) yield r['text'] as string;
        }
        if (!found) throw new InputError(file, lineNo, 'expected a string field "src"/"trg" or "text"', 'or pass --format text to read the file as plain text');
      }
      if (block.length) yield block.join('\n');
    } catch (e) {
      if (e instanceof InputError) throw e;
      throw new InputError(file, lineNo || undefined, `cannot read: ${(e as Error).message}`);
    } finally {
      lines.close();
      raw.destroy();
    }
    before += sizes[fi]!;
    opts.onBytes?.(before, total);
  }
}
