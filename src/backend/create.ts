/** Chooses and creates a backend from a device string (`cpu`, `cuda`, `cuda:N`). */
import { DeviceError, UsageError } from '../errors.js';
import type { Backend } from './backend.js';
import { CpuBackend } from './cpu/backend.js';

const CUDA_DEVICE = /^cuda(?::(\d+))?$/;

/**
 * Creates the backend a `--device` value names (`cpu`, `cuda` = `cuda:0`, `cuda:N`). The CUDA backend
 * module is imported only here, on demand. A machine without a usable driver, GPU, NVRTC or cuBLAS
 * gets a DeviceError saying what is missing and what was tried, never a crash.
 */
export async function createBackend(device: string): Promise<Backend> {
  if (device === 'cpu') return new CpuBackend();
  if (device === 'auto') {
    // the GPU where one is fully usable (driver, GPU, NVRTC, cuBLAS), else the CPU
    const { probeCuda } = await import('./cuda/probe.js');
    if (!probeCuda().available) return new CpuBackend();
    try {
      return await createBackend('cuda');
    } catch (e) {
      if (e instanceof DeviceError) return new CpuBackend();
      throw e;
    }
  }
  const m = CUDA_DEVICE.exec(device);
  if (!m) throw new UsageError(`unknown device '${device}' (expected auto, cpu, cuda or cuda:N)`);
  const { probeCuda } = await import('./cuda/probe.js');
  const probe = probeCuda();
  if (!probe.available) throw new DeviceError(`--device ${device}: CUDA is not available: ${probe.reason}`, 'use --device cpu; `moe-diffuseq info` shows what was found');
  const index = m[1] === undefined ? 0 : Number(m[1]);
  if (index >= probe.devices.length) {
    throw new DeviceError(`--device ${device}: there ${probe.devices.length === 1 ? 'is 1 CUDA device' : `are ${probe.devices.length} CUDA devices`} (cuda:0${probe.devices.length > 1 ? `..cuda:${probe.devices.length - 1}` : ''})`, '`moe-diffuseq info` lists them');
  }
  const { CudaBackend } = await import('./cuda/backend.js');
  return new CudaBackend({ device: index });
}
