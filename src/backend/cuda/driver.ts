/**
 * The CUDA driver API through koffi: contexts, streams, events, memory, modules and launches.
 * Every call goes through one checker that turns a non-zero CUresult into a {@link CudaError} naming
 * the call, the code and the driver's name for it (cuGetErrorName), with a hint where one helps.
 *
 * Handles (CUcontext, CUstream, CUmodule, CUfunction, CUevent) are koffi pointers, i.e. BigInt;
 * device addresses (CUdeviceptr) are JS numbers (on x86-64 and arm64 they stay far below 2^53).
 */
import { DeviceError } from '../../errors.js';
import { loadDriverLibrary, type NativeFn } from './libs.js';

/** Which CUDA library a failed call belongs to. */
export type CudaLibrary = 'driver' | 'nvrtc' | 'cublas';

/** A CUDA driver, NVRTC or cuBLAS call returned an error code. */
export class CudaError extends DeviceError {
  constructor(
    readonly library: CudaLibrary,
    /** The C function that failed, e.g. `cuMemAlloc_v2`. */
    readonly call: string,
    /** Its return code (CUresult, nvrtcResult or cublasStatus_t). */
    readonly code: number,
    /** The library's name for the code, e.g. `CUDA_ERROR_OUT_OF_MEMORY`. */
    readonly codeName: string,
    detail?: string,
    hint?: string,
  ) {
    super(`${call} failed: ${codeName} (${code})${detail ? `: ${detail}` : ''}`, hint ?? hintFor(codeName));
  }
}

/** Hints for the codes a user can do something about. */
function hintFor(codeName: string): string | undefined {
  switch (codeName) {
    case 'CUDA_ERROR_OUT_OF_MEMORY':
    case 'CUBLAS_STATUS_ALLOC_FAILED':
      return 'the GPU is out of memory: use a smaller batch or model, or free other programs on the GPU';
    case 'CUDA_ERROR_NO_DEVICE':
      return 'no CUDA-capable GPU is visible (check CUDA_VISIBLE_DEVICES and nvidia-smi), or use --device cpu';
    case 'CUDA_ERROR_INVALID_DEVICE':
      return 'the device index is out of range: `moe-diffuseq info` lists the GPUs';
    case 'CUDA_ERROR_INSUFFICIENT_DRIVER':
    case 'CUDA_ERROR_UNSUPPORTED_PTX_VERSION':
      return 'the NVIDIA driver is older than the CUDA toolkit (NVRTC) in use: update the driver or point MOE_DIFFUSEQ_LIBNVRTC at an older NVRTC';
    case 'CUDA_ERROR_NO_BINARY_FOR_GPU':
    case 'CUDA_ERROR_INVALID_IMAGE':
      return 'the compiled kernels do not match this GPU: delete the kernel cache (MOE_DIFFUSEQ_CACHE, default ~/.cache/moe-diffuseq/nvrtc)';
    case 'CUDA_ERROR_ILLEGAL_ADDRESS':
    case 'CUDA_ERROR_LAUNCH_FAILED':
    case 'CUDA_ERROR_ILLEGAL_INSTRUCTION':
    case 'CUDA_ERROR_MISALIGNED_ADDRESS':
      return 'a kernel failed; the error surfaces at the next synchronising call: set MOE_DIFFUSEQ_CUDA_SYNC=1 to name the kernel. The CUDA context is unusable afterwards';
    default:
      return undefined;
  }
}

/** Device attributes this package reads (CUdevice_attribute values). */
export const CU_DEVICE_ATTRIBUTE = {
  MAX_THREADS_PER_BLOCK: 1,
  MAX_SHARED_MEMORY_PER_BLOCK: 8,
  MULTIPROCESSOR_COUNT: 16,
  COMPUTE_CAPABILITY_MAJOR: 75,
  COMPUTE_CAPABILITY_MINOR: 76,
  MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: 97,
} as const;

/** CUfunction_attribute values used here. */
export const CU_FUNC_ATTRIBUTE = {
  MAX_DYNAMIC_SHARED_SIZE_BYTES: 8,
} as const;

/** A kernel's launch geometry. */
export interface LaunchDims {
  grid: readonly [number, number, number];
  block: readonly [number, number, number];
  sharedBytes: number;
}

/** Converts a koffi integer result (number or BigInt) to a safe JS number. */
function toNumber(v: unknown, what: string): number {
  const n = typeof v === 'bigint' ? Number(v) : (v as number);
  if (!Number.isSafeInteger(n)) throw new DeviceError(`${what}: value ${String(v)} is not representable as a JS number`);
  return n;
}

/** The driver API, bound once per process (cuInit runs on first use). */
export class Driver {
  private static instance: Driver | undefined;
  /** Where libcuda was loaded from. */
  readonly path: string;
  private readonly f: Record<string, NativeFn> = {};

  private constructor() {
    const { lib, path } = loadDriverLibrary();
    this.path = path;
    const sigs = [
      'int cuInit(unsigned int flags)',
      'int cuDriverGetVersion(_Out_ int *v)',
      'int cuGetErrorName(int err, _Out_ const char **name)',
      'int cuGetErrorString(int err, _Out_ const char **text)',
      'int cuDeviceGetCount(_Out_ int *n)',
      'int cuDeviceGet(_Out_ int *dev, int ordinal)',
      'int cuDeviceGetName(_Out_ uint8_t *name, int len, int dev)',
      'int cuDeviceTotalMem_v2(_Out_ size_t *bytes, int dev)',
      'int cuDeviceGetAttribute(_Out_ int *v, int attr, int dev)',
      'int cuDevicePrimaryCtxRetain(_Out_ void **ctx, int dev)',
      'int cuDevicePrimaryCtxRelease_v2(int dev)',
      'int cuCtxSetCurrent(void *ctx)',
      'int cuCtxSynchronize()',
      'int cuMemAlloc_v2(_Out_ uint64_t *dptr, size_t bytes)',
      'int cuMemFree_v2(uint64_t dptr)',
      'int cuMemGetInfo_v2(_Out_ size_t *free, _Out_ size_t *total)',
      'int cuMemcpyHtoD_v2(uint64_t dst, const void *src, size_t bytes)',
      'int cuMemcpyHtoDAsync_v2(uint64_t dst, const void *src, size_t bytes, void *stream)',
      'int cuMemcpyDtoH_v2(void *dst, uint64_t src, size_t bytes)',
      'int cuMemcpyDtoHAsync_v2(void *dst, uint64_t src, size_t bytes, void *stream)',
      'int cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t bytes, void *stream)',
      'int cuMemsetD32Async(uint64_t dst, unsigned int value, size_t count, void *stream)',
      'int cuMemsetD16Async(uint64_t dst, unsigned short value, size_t count, void *stream)',
      'int cuModuleLoadData(_Out_ void **module, const void *image)',
      'int cuModuleUnload(void *module)',
      'int cuModuleGetFunction(_Out_ void **fn, void *module, const char *name)',
      'int cuFuncSetAttribute(void *fn, int attrib, int value)',
      'int cuLaunchKernel(void *fn, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, unsigned int bz, unsigned int shared, void *stream, void *params, void *extra)',
      'int cuStreamCreate(_Out_ void **stream, unsigned int flags)',
      'int cuStreamBeginCapture_v2(void *stream, int mode)',
      'int cuStreamEndCapture(void *stream, _Out_ void **graph)',
      'int cuGraphInstantiateWithFlags(_Out_ void **exec, void *graph, unsigned long long flags)',
      'int cuGraphLaunch(void *exec, void *stream)',
      'int cuGraphExecDestroy(void *exec)',
      'int cuGraphDestroy(void *graph)',
      'int cuStreamSynchronize(void *stream)',
      'int cuStreamDestroy_v2(void *stream)',
      'int cuEventCreate(_Out_ void **event, unsigned int flags)',
      'int cuEventRecord(void *event, void *stream)',
      'int cuEventSynchronize(void *event)',
      'int cuStreamWaitEvent(void *stream, void *event, unsigned int flags)',
      // CUDA 13 headers map cuEventElapsedTime to _v2; older drivers only have the first form
      'int cuEventElapsedTime_v2(_Out_ float *ms, void *start, void *end) | cuEventElapsedTime',
      'int cuEventDestroy_v2(void *event)',
    ];
    for (const entry of sigs) {
      // 'sig | older_name': bind the first symbol the library has, under the first name
      const [sig, ...older] = entry.split(' | ') as [string, ...string[]];
      const name = /\s(\w+)\(/.exec(sig)![1]!;
      let err: Error | undefined;
      for (const sym of [name, ...older]) {
        try {
          this.f[name] = lib.func(sig.replace(name, sym));
          err = undefined;
          break;
        } catch (e) {
          err = e as Error;
        }
      }
      if (err) throw new DeviceError(`the CUDA driver at ${path} lacks ${name} (${err.message})`, 'update the NVIDIA driver');
    }
    // optional (CUDA 11.8+ drivers): launches with attributes, for programmatic dependent launch
    try {
      this.f['cuLaunchKernelEx'] = lib.func('int cuLaunchKernelEx(void *config, void *fn, void *params, void *extra)');
    } catch {
      // absent: launchEx reports it; the backend then launches plainly
    }
    // optional (CUDA 12+ drivers): tensor maps for the Tensor Memory Accelerator (sm_90)
    try {
      this.f['cuTensorMapEncodeTiled'] = lib.func(
        'int cuTensorMapEncodeTiled(void *map, int dtype, uint32_t rank, uint64_t addr, const uint64_t *dims, const uint64_t *strides, const uint32_t *box, const uint32_t *elementStrides, int interleave, int swizzle, int l2Promotion, int oobFill)',
      );
    } catch {
      // absent: hasTensorMaps is false and the backend keeps its cp.async kernels
    }
    this.check('cuInit', this.f['cuInit']!(0));
  }

  /** Whether the driver has cuLaunchKernelEx. */
  get hasLaunchEx(): boolean {
    return this.f['cuLaunchKernelEx'] !== undefined;
  }

  /** Whether the driver has cuTensorMapEncodeTiled. */
  get hasTensorMaps(): boolean {
    return this.f['cuTensorMapEncodeTiled'] !== undefined;
  }

  /**
   * Writes the 128-byte tensor map of a row-major bf16 matrix [rows, cols] at device address `addr`
   * (16-byte aligned, cols a multiple of 8) into native memory at `map` (64-byte aligned): boxes of
   * `boxCols` x `boxRows` elements, 128-byte swizzled in shared memory (boxCols * 2 <= 128), elements
   * outside the matrix read as zeros.
   */
  tensorMapBf16(map: bigint, addr: number, rows: number, cols: number, boxCols: number, boxRows: number): void {
    const f = this.f['cuTensorMapEncodeTiled'];
    if (!f) throw new DeviceError(`the CUDA driver at ${this.path} lacks cuTensorMapEncodeTiled`, 'update the NVIDIA driver (CUDA 12 or later)');
    // CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, _SWIZZLE_128B, _L2_PROMOTION_L2_256B (cuda.h)
    const BFLOAT16 = 9;
    const SWIZZLE_128B = 3;
    const L2_PROMOTION_256B = 3;
    const dims = BigUint64Array.from([BigInt(cols), BigInt(rows)]);
    const strides = BigUint64Array.from([BigInt(cols * 2)]);
    const rc = f(map, BFLOAT16, 2, addr, dims, strides, Uint32Array.from([boxCols, boxRows]), Uint32Array.from([1, 1]), 0, SWIZZLE_128B, L2_PROMOTION_256B, 0);
    this.check('cuTensorMapEncodeTiled', rc, `bf16 [${rows}, ${cols}] at 0x${addr.toString(16)}, boxes ${boxCols} x ${boxRows}`);
  }

  /** The process-wide driver (loads libcuda and runs cuInit on first use). */
  static get(): Driver {
    if (!Driver.instance) Driver.instance = new Driver();
    return Driver.instance;
  }

  /** Throws a CudaError unless `rc` is CUDA_SUCCESS. */
  check(call: string, rc: unknown, detail?: string): void {
    const code = rc as number;
    if (code === 0) return;
    throw new CudaError('driver', call, code, this.errorName(code), detail);
  }

  /** cuGetErrorName's text for a code (or `CUresult n` when the driver does not know it). */
  errorName(code: number): string {
    const out: (string | null)[] = [null];
    const rc = this.f['cuGetErrorName']?.(code, out);
    return rc === 0 && out[0] ? out[0] : `CUresult ${code}`;
  }

  private call(name: string, ...args: unknown[]): void {
    this.check(name, this.f[name]!(...args));
  }

  driverVersion(): string {
    const v = [0];
    this.call('cuDriverGetVersion', v);
    return `${Math.floor(v[0]! / 1000)}.${(v[0]! % 1000) / 10}`;
  }
  deviceCount(): number {
    const n = [0];
    this.call('cuDeviceGetCount', n);
    return n[0]!;
  }
  device(ordinal: number): number {
    const d = [0];
    this.call('cuDeviceGet', d, ordinal);
    return d[0]!;
  }
  deviceName(dev: number): string {
    const buf = Buffer.alloc(256);
    this.call('cuDeviceGetName', buf, 256, dev);
    const end = buf.indexOf(0);
    return buf.toString('utf8', 0, end < 0 ? 256 : end);
  }
  deviceTotalMem(dev: number): number {
    const b = [0];
    this.call('cuDeviceTotalMem_v2', b, dev);
    return toNumber(b[0], 'cuDeviceTotalMem_v2');
  }
  attribute(dev: number, attr: number): number {
    const v = [0];
    this.call('cuDeviceGetAttribute', v, attr, dev);
    return v[0]!;
  }
  primaryCtxRetain(dev: number): bigint {
    const c: (bigint | null)[] = [null];
    this.call('cuDevicePrimaryCtxRetain', c, dev);
    return c[0]!;
  }
  primaryCtxRelease(dev: number): void {
    this.call('cuDevicePrimaryCtxRelease_v2', dev);
  }
  ctxSetCurrent(ctx: bigint): void {
    this.call('cuCtxSetCurrent', ctx);
  }
  ctxSynchronize(): void {
    this.call('cuCtxSynchronize');
  }
  /** Allocates device memory; returns its address. Errors come back as CudaError (OOM included). */
  memAlloc(bytes: number): number {
    const p: (number | bigint)[] = [0];
    this.call('cuMemAlloc_v2', p, bytes);
    return toNumber(p[0], 'cuMemAlloc_v2');
  }
  memFree(ptr: number): void {
    this.call('cuMemFree_v2', ptr);
  }
  memGetInfo(): { free: number; total: number } {
    const f = [0];
    const t = [0];
    this.call('cuMemGetInfo_v2', f, t);
    return { free: toNumber(f[0], 'cuMemGetInfo_v2'), total: toNumber(t[0], 'cuMemGetInfo_v2') };
  }
  /** Synchronous host-to-device copy (ordered after earlier work on blocking streams). */
  memcpyHtoD(dst: number, src: ArrayBufferView, bytes: number): void {
    this.call('cuMemcpyHtoD_v2', dst, src, bytes);
  }
  /**
   * Host-to-device copy ordered on `stream`. From pageable memory (a typed array) the driver stages
   * the bytes before it returns, without waiting for the device: the source may be reused at once.
   */
  memcpyHtoDAsync(dst: number, src: ArrayBufferView, bytes: number, stream: bigint | null): void {
    this.call('cuMemcpyHtoDAsync_v2', dst, src, bytes, stream);
  }
  /** Synchronous device-to-host copy (waits for earlier work on blocking streams). */
  memcpyDtoH(dst: ArrayBufferView, src: number, bytes: number): void {
    this.call('cuMemcpyDtoH_v2', dst, src, bytes);
  }
  /**
   * Device-to-host copy ordered on `stream` alone. Into pageable memory (a typed array) it returns
   * only once the copy is done (CUDA's rules for pageable transfers), so `dst` holds the bytes on
   * return; on a stream that waits only on an event, it waits for the work before that event, not
   * for everything queued since (what the synchronous copy waits for).
   */
  memcpyDtoHAsync(dst: ArrayBufferView, src: number, bytes: number, stream: bigint): void {
    this.call('cuMemcpyDtoHAsync_v2', dst, src, bytes, stream);
  }
  memcpyDtoDAsync(dst: number, src: number, bytes: number, stream: bigint | null): void {
    this.call('cuMemcpyDtoDAsync_v2', dst, src, bytes, stream);
  }
  memsetD32Async(dst: number, value: number, count: number, stream: bigint | null): void {
    this.call('cuMemsetD32Async', dst, value >>> 0, count, stream);
  }
  memsetD16Async(dst: number, value: number, count: number, stream: bigint | null): void {
    this.call('cuMemsetD16Async', dst, value & 0xffff, count, stream);
  }
  moduleLoadData(image: Uint8Array, what: string): bigint {
    const m: (bigint | null)[] = [null];
    this.check('cuModuleLoadData', this.f['cuModuleLoadData']!(m, image), what);
    return m[0]!;
  }
  moduleUnload(mod: bigint): void {
    this.call('cuModuleUnload', mod);
  }
  /** Sets a kernel attribute (e.g. its dynamic shared memory limit, for more than 48 KiB). */
  funcSetAttribute(fn: bigint, name: string, attrib: number, value: number): void {
    this.check('cuFuncSetAttribute', this.f['cuFuncSetAttribute']!(fn, attrib, value), `kernel ${name}, attribute ${attrib} = ${value}`);
  }
  moduleGetFunction(mod: bigint, name: string): bigint {
    const fn: (bigint | null)[] = [null];
    this.check('cuModuleGetFunction', this.f['cuModuleGetFunction']!(fn, mod, name), `kernel ${name}`);
    return fn[0]!;
  }
  /** Launches a kernel; `params` is the address of the kernel-parameter pointer array. */
  launch(fn: bigint, name: string, d: LaunchDims, stream: bigint | null, params: bigint): void {
    const rc = this.f['cuLaunchKernel']!(fn, d.grid[0], d.grid[1], d.grid[2], d.block[0], d.block[1], d.block[2], d.sharedBytes, stream, params, null);
    this.check('cuLaunchKernel', rc, `kernel ${name} (grid ${d.grid.join('x')}, block ${d.block.join('x')}, ${d.sharedBytes} B shared)`);
  }
  /**
   * Launches a kernel through cuLaunchKernelEx: `config` is the address of a CUlaunchConfig (with its
   * grid, block, shared bytes, stream and attributes filled in by the caller).
   */
  launchEx(fn: bigint, name: string, config: bigint, params: bigint, what: () => string): void {
    const f = this.f['cuLaunchKernelEx'];
    if (!f) throw new DeviceError(`kernel ${name}: the CUDA driver at ${this.path} lacks cuLaunchKernelEx`);
    this.check('cuLaunchKernelEx', f(config, fn, params, null), `kernel ${name} (${what()})`);
  }
  /**
   * Starts recording the work queued on `stream` into a graph instead of running it; relaxed mode
   * (other threads' calls are not checked; calls that would synchronise still end the capture).
   */
  beginCapture(stream: bigint): void {
    this.call('cuStreamBeginCapture_v2', stream, 2); // CU_STREAM_CAPTURE_MODE_RELAXED
  }
  /** Ends the recording; the graph (throws if the capture was invalidated). */
  endCapture(stream: bigint): bigint {
    const g: (bigint | null)[] = [null];
    this.call('cuStreamEndCapture', stream, g);
    if (!g[0]) throw new CudaError('driver', 'cuStreamEndCapture', 0, 'CUDA_ERROR_UNKNOWN', 'no graph came back');
    return g[0];
  }
  /** An executable instance of a graph. */
  graphInstantiate(graph: bigint): bigint {
    const e: (bigint | null)[] = [null];
    this.call('cuGraphInstantiateWithFlags', e, graph, 0);
    return e[0]!;
  }
  graphLaunch(exec: bigint, stream: bigint): void {
    this.call('cuGraphLaunch', exec, stream);
  }
  graphExecDestroy(exec: bigint): void {
    this.call('cuGraphExecDestroy', exec);
  }
  graphDestroy(graph: bigint): void {
    this.call('cuGraphDestroy', graph);
  }
  /**
   * A stream. flags 0 (CU_STREAM_DEFAULT): it synchronises with the legacy default stream, so the
   * synchronous cuMemcpy calls are ordered with its kernels without extra waits; 1
   * (CU_STREAM_NON_BLOCKING): it does not, and waits only on what it is told to (streamWaitEvent).
   */
  streamCreate(flags: 0 | 1 = 0): bigint {
    const s: (bigint | null)[] = [null];
    this.call('cuStreamCreate', s, flags);
    return s[0]!;
  }
  /** Makes later work on `stream` wait for `event`'s recorded point, without blocking the host. */
  streamWaitEvent(stream: bigint, event: bigint): void {
    this.call('cuStreamWaitEvent', stream, event, 0);
  }
  streamSynchronize(stream: bigint | null, detail?: string): void {
    this.check('cuStreamSynchronize', this.f['cuStreamSynchronize']!(stream), detail);
  }
  streamDestroy(stream: bigint): void {
    this.call('cuStreamDestroy_v2', stream);
  }
  /** An event; `timing` false (CU_EVENT_DISABLE_TIMING) for one that only orders work (cheaper to record and wait on). */
  eventCreate(timing = true): bigint {
    const e: (bigint | null)[] = [null];
    this.call('cuEventCreate', e, timing ? 0 : 2);
    return e[0]!;
  }
  eventRecord(event: bigint, stream: bigint | null): void {
    this.call('cuEventRecord', event, stream);
  }
  eventSynchronize(event: bigint): void {
    this.call('cuEventSynchronize', event);
  }
  /** Milliseconds between two recorded events. */
  eventElapsedTime(start: bigint, end: bigint): number {
    const ms = [0];
    this.call('cuEventElapsedTime_v2', ms, start, end);
    return ms[0]!;
  }
  eventDestroy(event: bigint): void {
    this.call('cuEventDestroy_v2', event);
  }
}
