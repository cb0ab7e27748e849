/** Chooses and creates a backend from a device string (`auto`, `cpu`, `cuda`, `cuda:N`). */
import { DeviceError, UsageError } from '../errors.js';
import type { Backend } from './backend.js';
import { CpuBackend } from './cpu/backend.js';

const CUDA_DEVICE = /^cuda(?::(\d+))?$/;

/**
 * Creates the backend a `--device` value names (`auto`: cuda:0 where a driver, GPU, NVRTC and
 * cuBLAS are all usable, else the CPU; `cpu`; `cuda` = `cuda:0`; `cuda:N`). The CUDA backend module
 * is imported only here, on demand. A machine without a usable driver, GPU, NVRTC or cuBLAS gets a
 * DeviceError saying what is missing and what was tried, never a crash.
 */
export async function createBackend(device: string): Promise<Backend> {
  if (device === 'cpu') return new CpuBackend();
  const { probeCuda } = await import('./cuda/probe.js');
  if (device === 'auto') {
    if (!probeCuda().available) return new CpuBackend();
    try {
      return await cudaBackend(0);
    } catch (e) {
      if (e instanceof DeviceError) return new CpuBackend();
      throw e;
    }
  }
  const m = CUDA_DEVICE.exec(device);
  if (!m) throw new UsageError(`unknown device '${device}' (expected auto, cpu, cuda or cuda:N)`);
  const probe = probeCuda();
  if (!probe.available) throw new DeviceError(`--device ${device}: CUDA is not available: ${probe.reason}`, 'use --device cpu; `moe-diffuseq info` shows what was found');
  const index = m[1] === undefined ? 0 : Number(m[1]);
  if (index >= probe.devices.length) {
    throw new DeviceError(`--device ${device}: there ${probe.devices.length === 1 ? 'is 1 CUDA device' : `are ${probe.devices.length} CUDA devices`} (cuda:0${probe.devices.length > 1 ? `..cuda:${probe.devices.length - 1}` : ''})`, '`moe-diffuseq info` lists them');
  }
  return cudaBackend(index);
}

/** The CUDA backend on device `index` (its module imported on demand). */
async function cudaBackend(index: number): Promise<Backend> {
  const { CudaBackend } = await import('./cuda/backend.js');
  return new CudaBackend({ device: index });
}
