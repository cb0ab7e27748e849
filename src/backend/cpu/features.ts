/** Detection of the WebAssembly features the CPU kernels need. */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// (module (func (result v128) v128.const i32x4 0 0 0 0)): validates only where SIMD128 is supported
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 22, 1, 20, 0, 253, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11,
]);

/** What the CPU kernels rely on, and whether they are built. */
export interface CpuFeatures {
  simd: boolean;
  threads: boolean;
  kernelsBuilt: boolean;
  kernelsPath: string;
}

/** Probes SIMD128, shared memory and the built kernel file. */
export function cpuFeatures(): CpuFeatures {
  let threads = false;
  try {
    const m = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
    threads = typeof SharedArrayBuffer !== 'undefined' && m.buffer instanceof SharedArrayBuffer && typeof Atomics.wait === 'function';
  } catch {
    threads = false;
  }
  const kernelsPath = fileURLToPath(new URL('../../../kernels/cpu.wasm', import.meta.url));
  return { simd: WebAssembly.validate(SIMD_PROBE), threads, kernelsBuilt: existsSync(kernelsPath), kernelsPath };
}
