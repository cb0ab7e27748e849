/**
 * Kernel compilation with NVRTC, cached on disk.
 *
 * The kernels are CUDA C++ sources shipped in the package (src/backend/cuda/kernels/*.cu, each
 * prefixed with common.cuh: NVRTC has no include path of its own). A source is compiled for the
 * device's own architecture (sm_XY, to a CUBIN the driver loads without a JIT step) the first time a
 * process needs one of its kernels, and the CUBIN is kept under
 *   $MOE_DIFFUSEQ_CACHE/nvrtc/<sha256(source, arch, NVRTC version, options)>.cubin
 * (MOE_DIFFUSEQ_CACHE defaults to $XDG_CACHE_HOME/moe-diffuseq or ~/.cache/moe-diffuseq), so later
 * processes skip NVRTC. When NVRTC is older than the GPU (it cannot target sm_XY), the source is
 * compiled to PTX for the newest virtual architecture NVRTC knows and the driver finishes the job.
 * An unwritable cache folder only costs a recompile per process.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DeviceError } from '../../errors.js';
import { CudaError } from './driver.js';
import { bindFunctions, loadCudaLibrary, nvrtcVersionOf, type NativeFn } from './libs.js';

/**
 * Options every kernel is compiled with. `--fmad=false`: no contraction of a*b+c into one rounding,
 * so the float64 arithmetic in the kernels rounds exactly as the CPU reference's JavaScript does
 * (several ops then agree bit for bit; correctness first, speed later).
 */
const OPTIONS = ['--fmad=false', '--std=c++17'];

/** The root of the package's on-disk cache. */
export function cacheRoot(): string {
  const env = process.env['MOE_DIFFUSEQ_CACHE'];
  if (env) return env;
  const xdg = process.env['XDG_CACHE_HOME'];
  return join(xdg || join(homedir(), '.cache'), 'moe-diffuseq');
}

/** Where the kernel sources are: next to this module (a source checkout) or under src/ (from dist/). */
export function kernelDir(): string {
  const env = process.env['MOE_DIFFUSEQ_KERNELS'];
  const candidates = [
    ...(env ? [env] : []),
    fileURLToPath(new URL('./kernels/', import.meta.url)),
    // dist/src/backend/cuda/nvrtc.js -> <package>/src/backend/cuda/kernels (the package ships src/)
    fileURLToPath(new URL('../../../../src/backend/cuda/kernels/', import.meta.url)),
  ];
  for (const c of candidates) if (existsSync(join(c, 'common.cuh'))) return c;
  throw new DeviceError(`the CUDA kernel sources were not found (looked in ${candidates.join(', ')})`, 'reinstall the package, or set MOE_DIFFUSEQ_KERNELS to the folder holding the .cu files');
}

/** A compiled module image for cuModuleLoadData. */
export interface ModuleImage {
  /** CUBIN, or NUL-terminated PTX. */
  image: Buffer;
  format: 'cubin' | 'ptx';
  /** True when it came from the disk cache. */
  cached: boolean;
  /** The cache file (whether or not it could be written). */
  cacheFile: string;
}

/** NVRTC, bound once per process. */
export class Nvrtc {
  private static instance: Nvrtc | undefined;
  readonly path: string;
  /** "major.minor". */
  readonly version: string;
  private readonly f: Record<string, NativeFn>;
  private supported: number[] | undefined;

  private constructor() {
    const { lib, path } = loadCudaLibrary('nvrtc');
    this.path = path;
    this.version = nvrtcVersionOf(lib);
    this.f = bindFunctions(lib, [
      'const char *nvrtcGetErrorString(int result)',
      'int nvrtcCreateProgram(_Out_ void **prog, const char *src, const char *name, int numHeaders, const char **headers, const char **includeNames)',
      'int nvrtcCompileProgram(void *prog, int numOptions, const char **options)',
      'int nvrtcGetProgramLogSize(void *prog, _Out_ size_t *size)',
      'int nvrtcGetProgramLog(void *prog, _Out_ uint8_t *log)',
      'int nvrtcGetCUBINSize(void *prog, _Out_ size_t *size)',
      'int nvrtcGetCUBIN(void *prog, _Out_ uint8_t *cubin)',
      'int nvrtcGetPTXSize(void *prog, _Out_ size_t *size)',
      'int nvrtcGetPTX(void *prog, _Out_ uint8_t *ptx)',
      'int nvrtcDestroyProgram(_Inout_ void **prog)',
      'int nvrtcGetNumSupportedArchs(_Out_ int *n)',
      'int nvrtcGetSupportedArchs(_Out_ int *archs)',
    ]);
  }

  /** The process-wide NVRTC (throws a DeviceError naming what was tried when it is missing). */
  static get(): Nvrtc {
    if (!Nvrtc.instance) Nvrtc.instance = new Nvrtc();
    return Nvrtc.instance;
  }

  private check(call: string, rc: unknown, detail?: string, hint?: string): void {
    const code = rc as number;
    if (code === 0) return;
    const name = (this.f['nvrtcGetErrorString']!(code) as string | null) ?? `nvrtcResult ${code}`;
    throw new CudaError('nvrtc', call, code, name, detail, hint);
  }

  /** Real architectures NVRTC can compile for (e.g. [75, 80, 86, 89, 90, ...]). */
  supportedArchs(): number[] {
    if (!this.supported) {
      const n = [0];
      this.check('nvrtcGetNumSupportedArchs', this.f['nvrtcGetNumSupportedArchs']!(n));
      const archs = new Int32Array(n[0]!);
      this.check('nvrtcGetSupportedArchs', this.f['nvrtcGetSupportedArchs']!(archs));
      this.supported = [...archs];
    }
    return this.supported;
  }

  /**
   * Compiles `source` (named `name` in messages) for compute capability `arch` (e.g. 90; with
   * `suffix` 'a' its architecture-specific variant, sm_90a), or returns the cached image. A compile
   * error throws a CudaError carrying NVRTC's log.
   */
  compile(name: string, source: string, arch: number, suffix: '' | 'a' = ''): ModuleImage {
    const archs = this.supportedArchs();
    // `suffix` 'a': the architecture-specific target (sm_90a: wgmma), which has no PTX fallback
    const target = archs.includes(arch) ? `sm_${arch}${suffix}` : `compute_${Math.max(...archs.filter((a) => a <= arch), archs[0] ?? 52)}`;
    const format = target.startsWith('sm_') ? 'cubin' : 'ptx';
    const options = [`--gpu-architecture=${target}`, ...OPTIONS];
    const key = createHash('sha256').update(source).update('\0').update(`${arch}\0${target}\0${this.version}\0${options.join(' ')}`).digest('hex');
    const dir = join(cacheRoot(), 'nvrtc');
    const cacheFile = join(dir, `${key}.${format}`);
    try {
      const image = readFileSync(cacheFile);
      if (image.length > 0) return { image, format, cached: true, cacheFile };
    } catch {
      /* not cached yet */
    }
    const image = this.build(name, source, options, format);
    try {
      mkdirSync(dir, { recursive: true });
      // write-then-rename: a concurrent process never reads a half-written image
      const tmp = `${cacheFile}.${process.pid}.tmp`;
      writeFileSync(tmp, image);
      renameSync(tmp, cacheFile);
    } catch {
      /* an unwritable cache only costs a recompile next time */
    }
    return { image, format, cached: false, cacheFile };
  }

  private build(name: string, source: string, options: string[], format: 'cubin' | 'ptx'): Buffer {
    const prog: (bigint | null)[] = [null];
    this.check('nvrtcCreateProgram', this.f['nvrtcCreateProgram']!(prog, source, name, 0, null, null), name);
    let image: Buffer;
    try {
      const rc = this.f['nvrtcCompileProgram']!(prog[0], options.length, options) as number;
      if (rc !== 0) {
        const log = this.log(prog[0]!);
        this.check('nvrtcCompileProgram', rc, `${name} (${options.join(' ')}):\n${log}`, 'a kernel source failed to compile: this is a bug in moe-diffuseq (or an NVRTC it does not support); the log above names the line');
      }
      const size = [0];
      const sizeCall = format === 'cubin' ? 'nvrtcGetCUBINSize' : 'nvrtcGetPTXSize';
      const getCall = format === 'cubin' ? 'nvrtcGetCUBIN' : 'nvrtcGetPTX';
      this.check(sizeCall, this.f[sizeCall]!(prog[0], size), name);
      image = Buffer.alloc(Number(size[0]));
      this.check(getCall, this.f[getCall]!(prog[0], image), name);
    } catch (e) {
      // the first error is the one to report; the program is released regardless
      this.f['nvrtcDestroyProgram']!(prog);
      throw e;
    }
    this.check('nvrtcDestroyProgram', this.f['nvrtcDestroyProgram']!(prog), name);
    return image;
  }

  private log(prog: bigint): string {
    const size = [0];
    if (this.f['nvrtcGetProgramLogSize']!(prog, size) !== 0) return '(no log)';
    const buf = Buffer.alloc(Math.max(1, Number(size[0])));
    if (this.f['nvrtcGetProgramLog']!(prog, buf) !== 0) return '(no log)';
    const end = buf.indexOf(0);
    return buf.toString('utf8', 0, end < 0 ? buf.length : end).trim();
  }
}

/** Reads a kernel source file with the common prelude in front (and #line so errors name the file). */
export function kernelSource(file: string): string {
  const dir = kernelDir();
  const common = readFileSync(join(dir, 'common.cuh'), 'utf8');
  const body = readFileSync(join(dir, file), 'utf8');
  return `#line 1 "common.cuh"\n${common}\n#line 1 "${file}"\n${body}`;
}
