/** `moe-diffuseq info`: what this machine offers the package (Node, CPU kernels, threads, CUDA). */
import { availableParallelism, cpus, totalmem } from 'node:os';
import { VERSION } from '../version.js';
import { cpuFeatures } from '../backend/cpu/features.js';
import { defaultThreads } from '../backend/cpu/kernels.js';
import { cudaLibraryReport, type CudaLibraryReport } from '../backend/cuda/libs.js';
import { probeCuda } from '../backend/cuda/probe.js';
import { defineCommand } from './command.js';

export const infoCommand = defineCommand({
  name: 'info',
  summary: 'show the Node.js version, CPU kernel features, threads, and whether a CUDA driver, NVRTC and cuBLAS are found',
  usage: 'info [--json]',
  options: {
    json: { type: 'boolean', description: 'print machine-readable JSON' },
  },
  async run(opts) {
    const feats = cpuFeatures();
    const cuda = probeCuda();
    // NVRTC and cuBLAS are looked for even without a driver: their absence is worth knowing too
    const cudaLibraries = cudaLibraryReport();
    const info = {
      version: VERSION,
      node: process.version,
      platform: `${process.platform}-${process.arch}`,
      cpu: { model: cpus()[0]?.model ?? 'unknown', cores: availableParallelism(), memoryGiB: +(totalmem() / 2 ** 30).toFixed(1) },
      kernels: feats,
      threads: defaultThreads(),
      cuda,
      cudaLibraries,
    };
    if (opts.json) {
      process.stdout.write(JSON.stringify(info, null, 2) + '\n');
      return 0;
    }
    const yes = (b: boolean) => (b ? 'yes' : 'no');
    const lines = [
      `moe-diffuseq ${VERSION}`,
      `node            ${info.node} (${info.platform})`,
      `cpu             ${info.cpu.model}, ${info.cpu.cores} cores, ${info.cpu.memoryGiB} GiB`,
      `wasm simd128    ${yes(feats.simd)}`,
      `wasm threads    ${yes(feats.threads)} (shared memory + atomics)`,
      `kernels         ${feats.kernelsBuilt ? feats.kernelsPath : `not built (${feats.kernelsPath}): run npm run build`}`,
      `threads         ${info.threads} (set MOE_DIFFUSEQ_THREADS to change)`,
      `cuda driver     ${cuda.available ? `found: ${cuda.detail}` : `not available: ${cuda.reason}`}`,
    ];
    if (cuda.available) for (const d of cuda.devices) lines.push(`  cuda:${d.index}        ${d.name}, ${d.memoryGiB} GiB, compute capability ${d.computeCapability}`);
    const lib = (r: CudaLibraryReport['nvrtc']) => (r.found ? `${r.version} (${r.path})` : r.reason);
    lines.push(`nvrtc           ${lib(cudaLibraries.nvrtc)}`, `cublas          ${lib(cudaLibraries.cublas)}`);
    process.stdout.write(lines.join('\n') + '\n');
    return 0;
  },
});
