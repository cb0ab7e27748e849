// Build: TypeScript -> dist/, AssemblyScript kernels -> dist/kernels/*.wasm.
// Runs on `npm ci` (prepare) and before tests, so a fresh clone needs nothing but Node.js and npm.
import { spawnSync } from 'node:child_process';
import { mkdirSync, existsSync, statSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => join(root, 'node_modules', '.bin', name);

function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  // a missing tool (no `npm ci` yet) is an error that says so, not a silent exit code
  if (r.error) {
    console.error(`build: cannot run ${cmd}: ${r.error.message}; run \`npm ci\` first`);
    process.exit(1);
  }
  if (r.status !== 0) process.exit(r.status ?? 1);
}

function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

// kernels: rebuilt only when the AssemblyScript sources changed (asc takes a few seconds). Two builds
// of one source: cpu.wasm (SIMD128) and cpu-relaxed.wasm (plus relaxed SIMD: fused multiply-add in
// the GEMM micro-kernel), which the loader uses where the runtime supports it.
mkdirSync(join(root, 'dist', 'kernels'), { recursive: true });
const stamp = newest(join(root, 'assembly'));
for (const [file, extra] of [['cpu.wasm', []], ['cpu-relaxed.wasm', ['--enable', 'relaxed-simd']]]) {
  const wasm = join(root, 'dist', 'kernels', file);
  if (existsSync(wasm) && statSync(wasm).mtimeMs >= stamp) continue;
  run(bin('asc'), [
    'assembly/index.ts', '-o', wasm,
    '--enable', 'simd', '--enable', 'threads', ...extra,
    '--importMemory', '--sharedMemory', '--initialMemory', '1', '--maximumMemory', '65536',
    '-O3', '--runtime', 'stub', '--noAssert',
  ]);
}
run(bin('tsc'), ['-p', 'tsconfig.json']);
