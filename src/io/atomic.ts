/**
 * Crash-safe file writes: write a temporary file in the same folder, fsync it, rename it over the
 * target, fsync the folder. A crash, kill -9 or power loss at any moment leaves either the old file
 * or the new one, never a torn mix.
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** Atomically replaces `path` with the given chunks of bytes. */
export function writeFileAtomic(path: string, chunks: readonly (Uint8Array | string)[]): void {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${Date.now()}`);
  let fd = -1;
  try {
    fd = openSync(tmp, 'w', 0o644);
    for (const c of chunks) {
      const buf = typeof c === 'string' ? Buffer.from(c, 'utf8') : c;
      // anything else would be skipped silently (no .length) and the file renamed into place torn
      if (!(buf instanceof Uint8Array)) throw new TypeError(`writeFileAtomic(${path}): a chunk is ${typeof c}, expected a Uint8Array or a string`);
      let off = 0;
      while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    }
    fsyncSync(fd);
    closeSync(fd);
    fd = -1;
    renameSync(tmp, path);
    fsyncDir(dirname(path));
  } catch (e) {
    if (fd >= 0) closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** fsync a folder so that a rename in it is durable (a no-op where the platform refuses). */
export function fsyncDir(dir: string): void {
  let fd = -1;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    /* some platforms cannot fsync a directory; the rename itself is still atomic */
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}
