/** Temporary folders for the data tests (os.tmpdir + mkdtemp), removed after each test file. */
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A fresh temporary folder and helpers to write files into it; call `cleanup()` in `after`. */
export function tempDir(prefix: string): { dir: string; write: (name: string, data: string | Uint8Array) => string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `moe-diffuseq-${prefix}-`));
  return {
    dir,
    write(name, data) {
      const p = join(dir, name);
      mkdirSync(dirname(p), { recursive: true });
      writeFileSync(p, data);
      return p;
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Path of a committed fixture in test/fixtures/data (tests run from dist/test/data). */
export function fixture(name: string): string {
  return fileURLToPath(new URL(`../../../test/fixtures/data/${name}`, import.meta.url));
}
