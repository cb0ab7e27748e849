/**
 * Finding and loading the CUDA libraries through koffi: the driver (libcuda), NVRTC and cuBLAS.
 *
 * Search order for NVRTC and cuBLAS (the toolkit's libraries are often NOT on the loader path, e.g.
 * /usr/local/cuda/lib64 on the GPU machines this project uses):
 *   1. the environment override (MOE_DIFFUSEQ_LIBNVRTC, MOE_DIFFUSEQ_LIBCUBLAS, MOE_DIFFUSEQ_LIBCUBLASLT):
 *      a full path, used alone (an explicit choice that fails is an error, not a reason to look elsewhere);
 *   2. the loader path, by soname (libnvrtc.so.13, then .12);
 *   3. the toolkit folders: $CUDA_HOME/lib64, $CUDA_PATH/lib64, /usr/local/cuda/lib64,
 *      /usr/local/cuda/targets/<arch>-linux/lib.
 * A library found in a folder has its companions preloaded from the same folder first
 * (libnvrtc-builtins for NVRTC, libcublasLt for cuBLAS): the dynamic loader resolves them by soname
 * and would not look in that folder by itself; once a library of that soname is loaded, it is reused.
 */
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { DeviceError } from '../../errors.js';
import { libcudaCandidates } from './probe.js';

/** A koffi function: arguments and result are whatever the C prototype maps them to. */
export type NativeFn = (...args: unknown[]) => unknown;

/** A loaded shared library (the part of koffi's LibraryHandle this package uses). */
export interface NativeLibrary {
  func(signature: string): NativeFn;
}

/**
 * The part of koffi's API this package uses. koffi's own typings use `any` throughout; this narrow
 * view keeps `any` out of our code (pointers are BigInt in koffi 3).
 */
export interface KoffiApi {
  load(path: string): NativeLibrary;
  /** Stable native memory (freed with free()); the result is its address. */
  alloc(type: string, count: number): bigint;
  free(ptr: bigint): void;
  /** An ArrayBuffer over native memory (no copy). */
  view(ptr: bigint, length: number): ArrayBuffer;
}

let koffiCache: KoffiApi | undefined;

/** koffi, loaded lazily through its CommonJS entry (synchronous; CPU-only users never load it). */
export function koffi(): KoffiApi {
  if (!koffiCache) {
    try {
      const require = createRequire(import.meta.url);
      // narrow cast: koffi's exports are typed with `any`; KoffiApi names the calls we make
      koffiCache = require('koffi') as KoffiApi;
    } catch (e) {
      throw new DeviceError(`the koffi FFI module did not load (${(e as Error).message})`, 'reinstall the package dependencies (npm ci)');
    }
  }
  return koffiCache;
}

/**
 * Binds C prototypes of a library, keyed by function name ('int cublasCreate_v2(_Out_ void **h)' ->
 * 'cublasCreate_v2').
 */
export function bindFunctions(lib: NativeLibrary, signatures: readonly string[]): Record<string, NativeFn> {
  const f: Record<string, NativeFn> = {};
  for (const sig of signatures) f[/\s\*?(\w+)\(/.exec(sig)![1]!] = lib.func(sig);
  return f;
}

/** A library that was found, and where. */
export interface FoundLibrary {
  lib: NativeLibrary;
  /** The path or soname it was loaded from. */
  path: string;
}

/** The libraries this package loads. */
export type CudaLibraryName = 'nvrtc' | 'cublas' | 'cublasLt';

interface LibrarySpec {
  env: string;
  sonames: readonly string[];
  /** Companion libraries to preload from the same folder (regexes on file names). */
  companions: readonly RegExp[];
  /** Environment variable overriding the companion (full path). */
  companionEnv?: string;
  hint: string;
}

const SPECS: Record<CudaLibraryName, LibrarySpec> = {
  nvrtc: {
    env: 'MOE_DIFFUSEQ_LIBNVRTC',
    sonames: ['libnvrtc.so.13', 'libnvrtc.so.12', 'libnvrtc.so'],
    companions: [/^libnvrtc-builtins\.so\.\d+\.\d+$/],
    hint: 'install the CUDA toolkit (NVRTC), or set MOE_DIFFUSEQ_LIBNVRTC or CUDA_HOME',
  },
  cublas: {
    env: 'MOE_DIFFUSEQ_LIBCUBLAS',
    sonames: ['libcublas.so.13', 'libcublas.so.12', 'libcublas.so'],
    companions: [/^libcublasLt\.so\.\d+$/],
    companionEnv: 'MOE_DIFFUSEQ_LIBCUBLASLT',
    hint: 'install the CUDA toolkit (cuBLAS), or set MOE_DIFFUSEQ_LIBCUBLAS (and MOE_DIFFUSEQ_LIBCUBLASLT) or CUDA_HOME',
  },
  // cuBLAS's companion, bound on its own for the bias epilogue (cublaslt.ts); by soname it is the
  // copy cuBLAS already loaded
  cublasLt: {
    env: 'MOE_DIFFUSEQ_LIBCUBLASLT',
    sonames: ['libcublasLt.so.13', 'libcublasLt.so.12', 'libcublasLt.so'],
    companions: [],
    hint: 'install the CUDA toolkit (cuBLAS), or set MOE_DIFFUSEQ_LIBCUBLASLT or CUDA_HOME',
  },
};

/** The toolkit folders searched after the loader path, in order (existing or not). */
export function toolkitDirs(): string[] {
  const arch = process.arch === 'arm64' ? 'sbsa' : 'x86_64';
  const dirs: string[] = [];
  for (const v of ['CUDA_HOME', 'CUDA_PATH']) {
    const root = process.env[v];
    if (root) dirs.push(join(root, 'lib64'), join(root, 'lib'));
  }
  dirs.push('/usr/local/cuda/lib64', `/usr/local/cuda/targets/${arch}-linux/lib`);
  return [...new Set(dirs)];
}

const loaded = new Map<CudaLibraryName, FoundLibrary>();

/**
 * Loads NVRTC or cuBLAS (once per process). Throws a DeviceError listing every place tried.
 */
export function loadCudaLibrary(name: CudaLibraryName): FoundLibrary {
  const hit = loaded.get(name);
  if (hit) return hit;
  const spec = SPECS[name];
  const k = koffi();
  const tried: string[] = [];
  const attempt = (path: string, quietIfMissing = false): NativeLibrary | null => {
    try {
      return k.load(path);
    } catch (e) {
      const msg = firstLine((e as Error).message);
      // a soname that is simply not on the loader path is summarised once, below
      if (!(quietIfMissing && /cannot open shared object file/.test(msg))) tried.push(`${path} (${msg})`);
      return null;
    }
  };
  const finish = (lib: NativeLibrary, path: string): FoundLibrary => {
    const f = { lib, path };
    loaded.set(name, f);
    return f;
  };

  const override = process.env[spec.env];
  if (override) {
    const companion = spec.companionEnv ? process.env[spec.companionEnv] : undefined;
    if (companion && !attempt(companion)) throw notFound(name, tried, spec, `${spec.companionEnv} is set but did not load`);
    preloadCompanions(k, dirOf(override), spec.companions);
    const lib = attempt(override);
    if (!lib) throw notFound(name, tried, spec, `${spec.env} is set but did not load`);
    return finish(lib, override);
  }
  // the loader path (LD_LIBRARY_PATH, ldconfig): companions resolve the same way
  for (const so of spec.sonames) {
    const lib = attempt(so, true);
    if (lib) return finish(lib, so);
  }
  tried.push(`not on the loader path (${spec.sonames.join(', ')})`);
  const absent: string[] = [];
  for (const dir of toolkitDirs()) {
    let present = false;
    for (const so of spec.sonames) {
      const path = join(dir, so);
      if (!existsSync(path)) continue;
      present = true;
      preloadCompanions(k, dir, spec.companions);
      const lib = attempt(path);
      if (lib) return finish(lib, path);
    }
    if (!present) absent.push(dir);
  }
  if (absent.length) tried.push(`not in ${absent.join(', ')}`);
  throw notFound(name, tried, spec);
}

function dirOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i > 0 ? path.slice(0, i) : '.';
}

/** Loads every companion library found in `dir` (best effort: a failure shows up later, named). */
function preloadCompanions(k: KoffiApi, dir: string, patterns: readonly RegExp[]): void {
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch {
    return;
  }
  for (const f of files) {
    if (!patterns.some((p) => p.test(f))) continue;
    try {
      k.load(join(dir, f));
    } catch {
      /* the main library's own load or first call reports what is missing */
    }
  }
}

function firstLine(s: string): string {
  const l = s.split('\n')[0] ?? s;
  return l.length > 160 ? `${l.slice(0, 157)}...` : l;
}

function notFound(name: CudaLibraryName, tried: string[], spec: LibrarySpec, why?: string): DeviceError {
  const label = name === 'nvrtc' ? 'NVRTC' : name === 'cublas' ? 'cuBLAS' : 'cuBLASLt';
  return new DeviceError(`${label} not found${why ? ` (${why})` : ''}: ${tried.join('; ')}`, spec.hint);
}

/** Loads the CUDA driver library (libcuda), same candidates as the probe. */
export function loadDriverLibrary(): FoundLibrary {
  const k = koffi();
  const tried: string[] = [];
  for (const path of libcudaCandidates()) {
    try {
      return { lib: k.load(path), path };
    } catch (e) {
      tried.push(`${path} (${firstLine((e as Error).message)})`);
    }
  }
  throw new DeviceError(`no CUDA driver library found; tried ${tried.join('; ')}`, 'install the NVIDIA driver, or set MOE_DIFFUSEQ_LIBCUDA to libcuda.so.1');
}

/** Versions of NVRTC and cuBLAS for `moe-diffuseq info`; never throws (a missing library is a reason). */
export interface CudaLibraryReport {
  nvrtc: { found: true; version: string; path: string } | { found: false; reason: string };
  cublas: { found: true; version: string; path: string } | { found: false; reason: string };
}

/** Finds NVRTC and cuBLAS and reads their versions (no GPU needed). */
export function cudaLibraryReport(): CudaLibraryReport {
  const one = (name: CudaLibraryName, version: (lib: NativeLibrary) => string) => {
    try {
      const f = loadCudaLibrary(name);
      return { found: true as const, version: version(f.lib), path: f.path };
    } catch (e) {
      const err = e as Error & { hint?: string };
      return { found: false as const, reason: `${err.message}${err.hint ? ` (${err.hint})` : ''}` };
    }
  };
  return {
    nvrtc: one('nvrtc', nvrtcVersionOf),
    cublas: one('cublas', cublasVersionOf),
  };
}

/** NVRTC's version, "major.minor". */
export function nvrtcVersionOf(lib: NativeLibrary): string {
  const major = [0];
  const minor = [0];
  const rc = lib.func('int nvrtcVersion(_Out_ int *major, _Out_ int *minor)')(major, minor);
  if (rc !== 0) throw new DeviceError(`nvrtcVersion failed with NVRTC error ${String(rc)}`);
  return `${major[0]}.${minor[0]}`;
}

/** cuBLAS's version, "major.minor.patch" (cublasGetProperty needs no handle and no GPU). */
export function cublasVersionOf(lib: NativeLibrary): string {
  const get = lib.func('int cublasGetProperty(int type, _Out_ int *value)');
  const parts: number[] = [];
  for (const type of [0, 1, 2]) {
    const v = [0];
    const rc = get(type, v);
    if (rc !== 0) throw new DeviceError(`cublasGetProperty failed with cuBLAS status ${String(rc)}`);
    parts.push(v[0]!);
  }
  return parts.join('.');
}
