/**
 * Streaming line reader: the one place where data files are opened.
 *
 * Files are read as bytes and split on `\n` here rather than with `node:readline`, for three reasons:
 * readline decodes with a lenient decoder (invalid UTF-8 silently becomes U+FFFD), it has no limit on
 * the length of a line (one huge line would exhaust memory), and it does not tell where a line ended.
 * Memory stays bounded by the read chunk plus the longest line allowed (`maxLineBytes`), so a file far
 * larger than memory streams through.
 *
 * Compressed input (`.gz`, or any file starting with the gzip magic bytes) is decompressed on the fly.
 * A truncated or corrupt gzip stream, or a failing read, is always an error: a dataset is never cut
 * short silently.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { pipeline, type Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { ConfigError, InputError } from '../errors.js';
import { BadInputReport, handleBad } from './report.js';

/** Default limit on the length of one line, in bytes (64 MiB). */
export const DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024;

/** How a file is decompressed: `auto` (default) looks at the name (`.gz`) and the first two bytes. */
export type Compression = 'auto' | 'gzip' | 'none';

/** Called as a file is read: `done` bytes of `total` (for a compressed file, compressed bytes). */
export type ProgressCallback = (done: number, total: number) => void;

/** Options of {@link readLines}. */
export interface ReadLinesOptions {
  /** Longest line accepted, in bytes without the line break (default {@link DEFAULT_MAX_LINE_BYTES}). */
  maxLineBytes?: number;
  /** Decompression (default `auto`). */
  compression?: Compression;
  /** Progress in bytes read of the file's size. */
  onProgress?: ProgressCallback;
  /** Skip (and count in `report`) lines that are not valid UTF-8 or too long, instead of throwing. */
  skipBad?: boolean;
  /** Where skipped lines are counted (a fresh, unshared one if omitted). */
  report?: BadInputReport;
  /** Size of the chunks read from disk, in bytes (default 1 MiB). */
  chunkBytes?: number;
}

/** One line of a file: its text without the line break (`\n` or `\r\n`), and its 1-based number. */
export interface Line {
  /** The file it came from, as passed to the reader. */
  readonly file: string;
  /** 1-based line number. */
  readonly line: number;
  /** The decoded text, without the line break and without a leading byte-order mark. */
  readonly text: string;
}

const GZIP_MAGIC_0 = 0x1f;
const GZIP_MAGIC_1 = 0x8b;
const LF = 0x0a;
const CR = 0x0d;

/** Checks that `value` is a positive safe integer; options come from users and CLIs. */
export function checkPositiveInt(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new ConfigError(`${name} must be a positive integer, got ${String(value)}`);
  }
}

/** The error code of a Node system or zlib error, if any. */
function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Turns a failed open/stat into an InputError that says what is wrong with the path. */
export function openError(file: string, err: unknown): InputError {
  switch (errorCode(err)) {
    case 'ENOENT':
      return new InputError(file, undefined, 'no such file or directory');
    case 'EACCES':
    case 'EPERM':
      return new InputError(file, undefined, 'permission denied');
    case 'EISDIR':
      return new InputError(file, undefined, 'is a directory, expected a file');
    default:
      return new InputError(file, undefined, `cannot open: ${errorMessage(err)}`);
  }
}

/**
 * The byte offset (0-based, within `bytes`) at which a fatal UTF-8 decoder first fails. Only used to
 * word an error message, so it may be slow: it bisects on the shortest failing prefix, which is exact
 * because once a prefix holds an invalid sequence every longer prefix does too (`stream: true` keeps a
 * merely incomplete final character from counting as invalid).
 */
export function firstInvalidUtf8Offset(bytes: Uint8Array): number {
  const fails = (k: number): boolean => {
    try {
      new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(0, k), { stream: true });
      return false;
    } catch {
      return true;
    }
  };
  if (!fails(bytes.length)) return bytes.length; // only the final character is incomplete
  let lo = 0; // prefix of length lo decodes
  let hi = bytes.length; // prefix of length hi fails
  while (hi - lo > 1) {
    const mid = (lo + hi) >>> 1;
    if (fails(mid)) hi = mid;
    else lo = mid;
  }
  return hi - 1;
}

/** Opens `file`, failing with an InputError for a missing file, a directory or no permission. */
async function openFile(file: string): Promise<{ fh: FileHandle; size: number }> {
  let fh: FileHandle;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    throw openError(file, err);
  }
  try {
    const st = await fh.stat();
    if (st.isDirectory()) throw new InputError(file, undefined, 'is a directory, expected a file');
    return { fh, size: st.size };
  } catch (err) {
    await fh.close();
    throw err instanceof InputError ? err : openError(file, err);
  }
}

/** Decides whether to gunzip: by option, else by the `.gz` name or the magic bytes at the start. */
async function isGzip(file: string, fh: FileHandle, compression: Compression): Promise<boolean> {
  if (compression !== 'auto') return compression === 'gzip';
  const head = Buffer.alloc(2);
  const { bytesRead } = await fh.read(head, 0, 2, 0);
  const magic = bytesRead === 2 && head[0] === GZIP_MAGIC_0 && head[1] === GZIP_MAGIC_1;
  if (file.toLowerCase().endsWith('.gz') && !magic) {
    // A `.gz` name without the gzip header is most likely a damaged or mislabelled download; reading it
    // as text would feed binary junk (or a different file) into training.
    throw new InputError(file, undefined, 'the name ends in .gz but the file is not gzip-compressed (no gzip header)');
  }
  return magic;
}

/**
 * Reads a text file (plain or gzip-compressed) line by line as an async iterator.
 *
 * Lines end at `\n`; a `\r` before it is dropped (CRLF files), a UTF-8 byte-order mark at the start of
 * the file is dropped, and a last line without a line break is returned like any other. An empty file
 * yields nothing; empty lines are returned (as `""`), because their meaning depends on the format.
 *
 * @throws InputError for a missing file, a line that is not valid UTF-8 or longer than `maxLineBytes`
 *   (unless `skipBad`), a truncated or corrupt gzip stream, or a read error (never skipped).
 */
export async function* readLines(file: string, options: ReadLinesOptions = {}): AsyncGenerator<Line, void, undefined> {
  const maxLineBytes = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  checkPositiveInt('maxLineBytes', maxLineBytes);
  const chunkBytes = options.chunkBytes ?? 1 << 20;
  checkPositiveInt('chunkBytes', chunkBytes);
  const skipBad = options.skipBad ?? false;
  const report = options.report ?? new BadInputReport();
  const onProgress = options.onProgress;

  const { fh, size } = await openFile(file);
  let gz: boolean;
  try {
    gz = await isGzip(file, fh, options.compression ?? 'auto');
  } catch (err) {
    await fh.close();
    throw err instanceof InputError ? err : openError(file, err);
  }
  const raw = fh.createReadStream({ start: 0, highWaterMark: chunkBytes, autoClose: true });
  // pipeline() forwards an error of either stage to the stream we iterate, and destroys both. The
  // output chunk is raised from zlib's 16 KiB default: per-chunk overhead then dominated (3x slower).
  const source: Readable = gz ? pipeline(raw, createGunzip({ chunkSize: 256 * 1024 }), () => {}) : raw;

  let decoder = new TextDecoder('utf-8', { fatal: true });
  let lineNo = 1; // number of the line being assembled
  let pending: Buffer[] = []; // pieces of the current line from earlier chunks
  let pendingLen = 0;
  let discarding = false; // skipping the rest of an over-long line (skipBad)
  let lastDone = -1;

  const progress = (): void => {
    if (onProgress && raw.bytesRead !== lastDone) {
      lastDone = raw.bytesRead;
      onProgress(lastDone, size);
    }
  };

  /** Decodes one complete line; undefined when it is bad and skipped. */
  const decode = (bytes: Uint8Array): string | undefined => {
    let end = bytes.length;
    if (end > 0 && bytes[end - 1] === CR) end--;
    let start = 0;
    if (lineNo === 1 && end >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) start = 3;
    const body = bytes.subarray(start, end);
    try {
      return decoder.decode(body);
    } catch {
      decoder = new TextDecoder('utf-8', { fatal: true }); // do not trust a decoder's state after a failure
      const at = firstInvalidUtf8Offset(body) + start;
      handleBad(new InputError(file, lineNo, `invalid UTF-8 (at byte ${at} of the line)`), skipBad, report);
      return undefined;
    }
  };

  const tooLong = (): void => {
    handleBad(
      new InputError(file, lineNo, `line longer than ${maxLineBytes} bytes`, 'raise the maxLineBytes option if such long lines are intended'),
      skipBad,
      report,
    );
  };

  try {
    for await (const data of source) {
      const chunk = data as Buffer;
      progress();
      let pos = 0;
      while (pos < chunk.length) {
        const nl = chunk.indexOf(LF, pos);
        if (discarding) {
          if (nl === -1) break;
          discarding = false;
          lineNo++;
          pos = nl + 1;
          continue;
        }
        const end = nl === -1 ? chunk.length : nl;
        if (pendingLen + (end - pos) > maxLineBytes) {
          // Checked before buffering, so an endless line never grows memory past the limit.
          tooLong();
          pending = [];
          pendingLen = 0;
          discarding = true;
          continue;
        }
        if (nl === -1) {
          pending.push(chunk.subarray(pos));
          pendingLen += chunk.length - pos;
          break;
        }
        const piece = chunk.subarray(pos, nl);
        const bytes = pendingLen > 0 ? Buffer.concat([...pending, piece], pendingLen + piece.length) : piece;
        pending = [];
        pendingLen = 0;
        const text = decode(bytes);
        if (text !== undefined) yield { file, line: lineNo, text };
        lineNo++;
        pos = nl + 1;
      }
    }
    if (!discarding && pendingLen > 0) {
      // The last line of a file that does not end with a line break.
      const text = decode(Buffer.concat(pending, pendingLen));
      if (text !== undefined) yield { file, line: lineNo, text };
    }
    progress();
  } catch (err) {
    if (err instanceof InputError) throw err;
    throw streamError(file, lineNo, gz, err);
  } finally {
    // Also reached when the consumer stops early: release the file descriptor now, not at GC.
    source.destroy();
    raw.destroy();
  }
}

/** Words an error of the byte stream (read failure, bad gzip data) as an InputError. */
function streamError(file: string, lineNo: number, gz: boolean, err: unknown): InputError {
  const code = errorCode(err);
  const msg = errorMessage(err);
  if (gz && code === 'Z_BUF_ERROR') {
    return new InputError(file, lineNo, `truncated gzip stream (${msg}); the file is incomplete`, 'download or copy the file again');
  }
  if (gz && code !== undefined && code.startsWith('Z_')) {
    return new InputError(file, lineNo, `corrupt gzip stream (${msg})`, 'download or copy the file again');
  }
  return new InputError(file, lineNo, `read error: ${msg}`);
}

/** The size of a file in bytes (what {@link ProgressCallback} counts to), or an InputError. */
export async function fileSize(file: string): Promise<number> {
  const { fh, size } = await openFile(file);
  await fh.close();
  return size;
}
