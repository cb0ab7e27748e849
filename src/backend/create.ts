/** Chooses and creates a backend from a device string (`cpu`, `cuda`, `cuda:N`). */
import { UsageError } from '../errors.js';
import type { Backend } from './backend.js';
import { CpuBackend } from './cpu/backend.js';

/** Creates the backend a `--device` value names. */
export function createBackend(device: string): Backend {
  if (device === 'cpu') return new CpuBackend();
  if (/^cuda(:\d+)?$/.test(device)) throw new UsageError(`--device ${device}: the CUDA backend is not available in this build yet`, 'use --device cpu');
  throw new UsageError(`unknown device '${device}' (expected cpu, cuda or cuda:N)`);
}
