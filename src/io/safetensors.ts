/**
 * safetensors, read and written by our own strict code (https://huggingface.co/docs/safetensors):
 * an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}, and an
 * optional "__metadata__" of strings}, then the tensors' bytes.
 *
 * The reader refuses anything a careful reader should: a header over 100 MB or past the end of the
 * file, invalid JSON, unknown dtypes, shapes whose byte size disagrees with their offsets, offsets
 * outside the data section, and data that is not contiguous (gaps, overlaps, trailing bytes). Every
 * refusal is a CheckpointError naming the file and the tensor.
 */
import { readFileSync } from 'node:fs';
import { CheckpointError } from '../errors.js';
import { writeFileAtomic } from './atomic.js';

/** Element types we read and write. */
export type SafeDType = 'F32' | 'F64' | 'I32' | 'BF16' | 'F16' | 'I64';

const DTYPE_BYTES: Record<SafeDType, number> = { F32: 4, F64: 8, I32: 4, BF16: 2, F16: 2, I64: 8 };
const MAX_HEADER = 100 * 1024 * 1024;

/** One tensor as read from a file: values decoded to float64/float32/int32 arrays. */
export interface SafeTensor {
  dtype: SafeDType;
  shape: number[];
  /** The values (BF16/F16 widened to float32, I64 narrowed to int32 when exact). */
  data: Float32Array | Float64Array | Int32Array;
}

/** The contents of a safetensors file. */
export interface SafeTensorsFile {
  tensors: Map<string, SafeTensor>;
  metadata: Record<string, string>;
}

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new Error('safetensors: a little-endian platform is required');

function bf16ToF32(bits: number): number {
  const b = new DataView(new ArrayBuffer(4));
  b.setUint32(0, bits << 16, true);
  return b.getFloat32(0, true);
}

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/** Parses safetensors bytes. `file` names the source in errors. */
export function parseSafetensors(bytes: Uint8Array, file: string): SafeTensorsFile {
  const fail = (msg: string): never => {
    throw new CheckpointError(`${file}: ${msg}`, 'the file is damaged or not a safetensors file; re-save it or pick another checkpoint');
  };
  if (bytes.length < 8) fail(`too short for a safetensors header (${bytes.length} bytes)`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  if (n > MAX_HEADER) fail(`header length ${n} is over the ${MAX_HEADER}-byte limit`);
  if (8 + n > bytes.length) fail(`header length ${n} reaches past the end of the file (${bytes.length} bytes)`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n)));
  } catch (e) {
    fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('header is not a JSON object');
  const h = header as Record<string, unknown>;
  const dataStart = 8 + n;
  const dataLen = bytes.length - dataStart;
  const metadata: Record<string, string> = {};
  const entries: { name: string; dtype: SafeDType; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, v] of Object.entries(h)) {
    if (name === '__metadata__') {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) fail('__metadata__ must be an object of strings');
      for (const [k, s] of Object.entries(v as Record<string, unknown>)) {
        if (typeof s !== 'string') fail(`__metadata__.${k} must be a string`);
        metadata[k] = s as string;
      }
      continue;
    }
    if (typeof v !== 'object' || v === null) fail(`tensor '${name}': entry is not an object`);
    const o = v as Record<string, unknown>;
    const dtype = o['dtype'];
    if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_BYTES, dtype)) fail(`tensor '${name}': unsupported dtype ${JSON.stringify(dtype)}`);
    const shape = o['shape'];
    if (!Array.isArray(shape) || !shape.every((s) => Number.isSafeInteger(s) && s >= 0)) fail(`tensor '${name}': shape must be a list of non-negative integers`);
    const offs = o['data_offsets'];
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((x) => Number.isSafeInteger(x) && x >= 0) || offs[0] > offs[1]) {
      fail(`tensor '${name}': data_offsets must be [begin, end] with 0 <= begin <= end`);
    }
    const [begin, end] = offs as [number, number];
    if (end > dataLen) fail(`tensor '${name}': data_offsets [${begin}, ${end}] reach past the data section (${dataLen} bytes)`);
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    if (count * DTYPE_BYTES[dtype as SafeDType] !== end - begin) {
      fail(`tensor '${name}': shape [${(shape as number[]).join(', ')}] of ${dtype} needs ${count * DTYPE_BYTES[dtype as SafeDType]} bytes, its offsets give ${end - begin}`);
    }
    entries.push({ name, dtype: dtype as SafeDType, shape: shape as number[], begin, end });
  }
  // contiguity: sorted by offset, each tensor starts where the previous ended, the last ends the file
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  for (const e of sorted) {
    if (e.begin !== pos) fail(`tensor '${e.name}' starts at byte ${e.begin} of the data but the previous tensor ended at ${pos} (${e.begin > pos ? 'gap' : 'overlap'})`);
    pos = e.end;
  }
  if (pos !== dataLen) fail(`${dataLen - pos} bytes after the last tensor${sorted.length ? ` '${sorted[sorted.length - 1]!.name}'` : ''} (the data section has ${dataLen} bytes)`);
  const tensors = new Map<string, SafeTensor>();
  for (const e of entries) {
    const count = e.shape.reduce((a, b) => a * b, 1);
    const at = dataStart + e.begin;
    let data: Float32Array | Float64Array | Int32Array;
    // the platform is little-endian (as safetensors): copy the bytes into an aligned buffer and view them
    // (a copy of exactly this tensor's bytes: `bytes` may be a Buffer, whose slice() is a view sharing
    // the whole file's or Node's pool's ArrayBuffer)
    const raw = () => new Uint8Array(bytes.subarray(at, at + (e.end - e.begin))).buffer;
    if (e.dtype === 'F32') data = new Float32Array(raw());
    else if (e.dtype === 'F64') data = new Float64Array(raw());
    else if (e.dtype === 'I32') data = new Int32Array(raw());
    else if (e.dtype === 'I64') {
      data = new Int32Array(count);
      for (let i = 0; i < count; i++) {
        const v = dv.getBigInt64(at + 8 * i, true);
        if (v < -2147483648n || v > 2147483647n) fail(`tensor '${e.name}': int64 value ${v} does not fit int32`);
        data[i] = Number(v);
      }
    } else {
      data = new Float32Array(count);
      const conv = e.dtype === 'BF16' ? bf16ToF32 : f16ToF32;
      for (let i = 0; i < count; i++) data[i] = conv(dv.getUint16(at + 2 * i, true));
    }
    tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data });
  }
  return { tensors, metadata };
}

/** Reads and parses a safetensors file. */
export function readSafetensors(path: string): SafeTensorsFile {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new CheckpointError(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return parseSafetensors(bytes, path);
}

/** A tensor to write: F32, F64 or I32 values. */
export interface TensorToWrite {
  name: string;
  dtype: 'F32' | 'F64' | 'I32';
  shape: readonly number[];
  data: ArrayLike<number>;
}

/** Serialises tensors (in the given order) and metadata to safetensors bytes (header padded to 8). */
export function serializeSafetensors(tensors: readonly TensorToWrite[], metadata: Record<string, string> = {}): Uint8Array[] {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header['__metadata__'] = metadata;
  let off = 0;
  for (const t of tensors) {
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.data.length) throw new CheckpointError(`tensor '${t.name}': ${t.data.length} values for shape [${t.shape.join(', ')}]`);
    const n = count * DTYPE_BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [off, off + n] };
    off += n;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const head = new Uint8Array(8 + Buffer.byteLength(json));
  new DataView(head.buffer).setBigUint64(0, BigInt(Buffer.byteLength(json)), true);
  head.set(Buffer.from(json, 'utf8'), 8);
  const chunks: Uint8Array[] = [head];
  for (const t of tensors) {
    const count = t.data.length;
    const typed = t.dtype === 'F32' ? Float32Array.from(t.data) : t.dtype === 'F64' ? Float64Array.from(t.data) : Int32Array.from(t.data);
    chunks.push(new Uint8Array(typed.buffer, 0, count * DTYPE_BYTES[t.dtype]));
  }
  return chunks;
}

/** Writes a safetensors file atomically. */
export function writeSafetensors(path: string, tensors: readonly TensorToWrite[], metadata: Record<string, string> = {}): void {
  writeFileAtomic(path, serializeSafetensors(tensors, metadata));
}
