/**
 * Finds the CUDA driver without initialising a backend: used by `moe-diffuseq info` and to choose
 * the default device. Never throws: a missing driver is a reason string.
 */
import { createRequire } from 'node:module';

/** One CUDA device as the driver reports it. */
export interface CudaDeviceInfo {
  index: number;
  name: string;
  memoryGiB: number;
  computeCapability: string;
}

/** Outcome of the probe. */
export type CudaProbe =
  | { available: true; detail: string; driverVersion: string; devices: CudaDeviceInfo[] }
  | { available: false; reason: string; devices: [] };

let cached: CudaProbe | undefined;

/** Candidate file names of the driver library (MOE_DIFFUSEQ_LIBCUDA first). */
export function libcudaCandidates(): string[] {
  const env = process.env['MOE_DIFFUSEQ_LIBCUDA'];
  return [...(env ? [env] : []), 'libcuda.so.1', 'libcuda.so', '/usr/local/nvidia/lib64/libcuda.so.1', '/usr/lib/x86_64-linux-gnu/libcuda.so.1'];
}

interface KoffiLib {
  func(signature: string): (...args: unknown[]) => unknown;
}
interface Koffi {
  load(path: string): KoffiLib;
}

/** koffi, loaded lazily (synchronously, through its CommonJS entry). */
export function loadKoffi(): Koffi {
  const require = createRequire(import.meta.url);
  return require('koffi') as Koffi;
}

/** Probes the driver once per process. */
export function probeCuda(): CudaProbe {
  if (cached) return cached;
  cached = doProbe();
  return cached;
}

function doProbe(): CudaProbe {
  if (process.platform !== 'linux' && process.platform !== 'win32') return { available: false, reason: `CUDA is not supported on ${process.platform}`, devices: [] };
  let koffi: Koffi;
  try {
    koffi = loadKoffi();
  } catch (e) {
    return { available: false, reason: `the koffi FFI module did not load (${(e as Error).message})`, devices: [] };
  }
  let lib: KoffiLib | undefined;
  const tried: string[] = [];
  for (const name of libcudaCandidates()) {
    try {
      lib = koffi.load(name);
      break;
    } catch {
      tried.push(name);
    }
  }
  if (!lib) return { available: false, reason: `no CUDA driver library found (tried ${tried.join(', ')}; set MOE_DIFFUSEQ_LIBCUDA to its path)`, devices: [] };
  try {
    const cuInit = lib.func('int cuInit(unsigned int)');
    const cuDriverGetVersion = lib.func('int cuDriverGetVersion(_Out_ int *v)');
    const cuDeviceGetCount = lib.func('int cuDeviceGetCount(_Out_ int *n)');
    const cuDeviceGet = lib.func('int cuDeviceGet(_Out_ int *dev, int ordinal)');
    const cuDeviceGetName = lib.func('int cuDeviceGetName(_Out_ uint8_t *name, int len, int dev)');
    const cuDeviceTotalMem = lib.func('int cuDeviceTotalMem_v2(_Out_ size_t *bytes, int dev)');
    const cuDeviceGetAttribute = lib.func('int cuDeviceGetAttribute(_Out_ int *v, int attr, int dev)');
    const rc = cuInit(0) as number;
    if (rc !== 0) return { available: false, reason: `cuInit failed with CUDA error ${rc}${rc === 100 ? ' (no CUDA-capable device)' : ''}`, devices: [] };
    const ver = [0];
    cuDriverGetVersion(ver);
    const n = [0];
    cuDeviceGetCount(n);
    const devices: CudaDeviceInfo[] = [];
    for (let i = 0; i < n[0]!; i++) {
      const dev = [0];
      cuDeviceGet(dev, i);
      const name = Buffer.alloc(256);
      cuDeviceGetName(name, 256, dev[0]);
      const mem = [0];
      cuDeviceTotalMem(mem, dev[0]);
      const major = [0];
      const minor = [0];
      cuDeviceGetAttribute(major, 75, dev[0]);
      cuDeviceGetAttribute(minor, 76, dev[0]);
      devices.push({
        index: i,
        name: name.toString('utf8', 0, name.indexOf(0)),
        memoryGiB: +(Number(mem[0]) / 2 ** 30).toFixed(1),
        computeCapability: `${major[0]}.${minor[0]}`,
      });
    }
    if (devices.length === 0) return { available: false, reason: 'the CUDA driver reports no devices', devices: [] };
    const v = ver[0]!;
    const driverVersion = `${Math.floor(v / 1000)}.${(v % 1000) / 10}`;
    return { available: true, detail: `CUDA driver ${driverVersion}, ${devices.length} device(s)`, driverVersion, devices };
  } catch (e) {
    return { available: false, reason: `the CUDA driver library loaded but a call failed (${(e as Error).message})`, devices: [] };
  }
}
