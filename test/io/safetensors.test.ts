/**
 * The safetensors reader and writer (src/io/safetensors.ts) and crash-safe writes (src/io/atomic.ts):
 * exact round trips, a hand-built file (BF16/F16/I64 with known bit patterns), every refusal with its
 * message, a mutation fuzz (CheckpointError or a valid parse, never another exception), and atomic
 * replacement (an exception mid-write, and a writer killed with SIGKILL).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CheckpointError } from '../../src/errors.js';
import { writeFileAtomic } from '../../src/io/atomic.js';
import { parseSafetensors, readSafetensors, serializeSafetensors, writeSafetensors, type SafeTensorsFile, type TensorToWrite } from '../../src/io/safetensors.js';

const dir = mkdtempSync(join(tmpdir(), 'moe-diffuseq-safetensors-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((s, c) => s + c.length, 0));
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

/** A file from a header object and a data section (header written as given, unpadded). */
function build(header: unknown, data: Uint8Array = new Uint8Array(0), rawHeader?: string): Uint8Array {
  const json = Buffer.from(rawHeader ?? JSON.stringify(header), 'utf8');
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/** Bytes of little-endian u16 values. */
function u16(...v: number[]): Uint8Array {
  const b = new Uint8Array(2 * v.length);
  const dv = new DataView(b.buffer);
  v.forEach((x, i) => dv.setUint16(2 * i, x, true));
  return b;
}

function bitsF32(a: ArrayLike<number>): number[] {
  return Array.from(new Uint32Array(Float32Array.from(a).buffer));
}

function bitsF64(a: ArrayLike<number>): bigint[] {
  return Array.from(new BigUint64Array(Float64Array.from(a).buffer));
}

/** Asserts `fn` throws a CheckpointError whose message contains every one of `parts`. */
function refuses(fn: () => unknown, ...parts: (string | RegExp)[]): CheckpointError {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof CheckpointError, `expected a CheckpointError, got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
  for (const p of parts) {
    if (typeof p === 'string') assert.ok(err.message.includes(p), `message ${JSON.stringify(err.message)} lacks ${JSON.stringify(p)}`);
    else assert.match(err.message, p);
  }
  return err;
}

const F32_SPECIAL = [0, -0, 1, -1.5, 3.4028234663852886e38, -3.4028234663852886e38, 1.401298464324817e-45, 1.1754943508222875e-38, Infinity, -Infinity, Math.fround(Math.PI), Math.fround(-1e-20)];
const F64_SPECIAL = [0, -0, Math.PI, -Math.E, Number.MAX_VALUE, Number.MIN_VALUE, 2.2250738585072014e-308, Infinity, -Infinity, 1e300, -1 / 3, 0.1];
const I32_SPECIAL = [0, -1, 1, 2147483647, -2147483648, 123456789, -987654321];

function sampleTensors(): TensorToWrite[] {
  const rnd = Array.from({ length: 6 * 5 }, (_, i) => Math.sin(i * 12.9898) * 43758.5453 % 1);
  return [
    { name: 'a.f32', dtype: 'F32', shape: [12], data: F32_SPECIAL },
    { name: 'b.f32.matrix', dtype: 'F32', shape: [6, 5], data: Float32Array.from(rnd) },
    { name: 'c.f64', dtype: 'F64', shape: [3, 4], data: F64_SPECIAL },
    { name: 'd.i32', dtype: 'I32', shape: [7], data: I32_SPECIAL },
    { name: 'e.scalar', dtype: 'F64', shape: [], data: [42.5] },
    { name: 'f.empty', dtype: 'F32', shape: [0, 3], data: [] },
  ];
}

describe('safetensors round trip', () => {
  it('F32, F64 and I32 come back with the same bits, names, shapes and metadata', () => {
    const path = join(dir, 'round.safetensors');
    const tensors = sampleTensors();
    const meta = { format: 'pt', note: 'ünïcode ✓', empty: '' };
    writeSafetensors(path, tensors, meta);
    const f = readSafetensors(path);
    assert.deepEqual([...f.tensors.keys()].sort(), tensors.map((t) => t.name).sort());
    assert.deepEqual(f.metadata, meta);
    for (const t of tensors) {
      const r = f.tensors.get(t.name)!;
      assert.equal(r.dtype, t.dtype, t.name);
      assert.deepEqual(r.shape, [...t.shape], t.name);
      assert.equal(r.data.length, t.data.length, t.name);
      if (t.dtype === 'F32') {
        assert.ok(r.data instanceof Float32Array, t.name);
        assert.deepEqual(bitsF32(r.data), bitsF32(t.data), t.name);
      } else if (t.dtype === 'F64') {
        assert.ok(r.data instanceof Float64Array, t.name);
        assert.deepEqual(bitsF64(r.data), bitsF64(t.data), t.name);
      } else {
        assert.ok(r.data instanceof Int32Array, t.name);
        assert.deepEqual(Array.from(r.data), Array.from(t.data), t.name);
      }
    }
    // -0 survives (bit-exact, not just ==)
    assert.ok(Object.is(f.tensors.get('a.f32')!.data[1], -0));
    assert.ok(Object.is(f.tensors.get('c.f64')!.data[1], -0));
  });

  it('the file on disk: 8-byte length, header padded with spaces to a multiple of 8, data in order', () => {
    for (let extra = 0; extra < 9; extra++) {
      const name = 'x'.repeat(extra + 1);
      const chunks = serializeSafetensors([{ name, dtype: 'F32', shape: [2], data: [1, 2] }], extra % 2 ? { k: 'v'.repeat(extra) } : {});
      const bytes = concat(chunks);
      const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
      assert.equal((8 + n) % 8, 0, `header of '${name}' not padded: ${n}`);
      const header = Buffer.from(bytes.subarray(8, 8 + n)).toString('utf8');
      assert.match(header, /^\{.*\} *$/);
      const parsed = JSON.parse(header) as Record<string, unknown>;
      assert.deepEqual(parsed[name], { dtype: 'F32', shape: [2], data_offsets: [0, 8] });
      assert.equal(bytes.length, 8 + n + 8);
      assert.deepEqual(Array.from(new Float32Array(bytes.slice(8 + n).buffer)), [1, 2]);
      if (extra % 2) assert.deepEqual(parsed['__metadata__'], { k: 'v'.repeat(extra) });
      else assert.ok(!('__metadata__' in parsed), 'no empty __metadata__');
    }
  });

  it('offsets are contiguous in the order given, and a mismatched value count is refused on write', () => {
    const bytes = concat(serializeSafetensors([
      { name: 'z', dtype: 'F64', shape: [1], data: [1] },
      { name: 'a', dtype: 'I32', shape: [3], data: [1, 2, 3] },
      { name: 'm', dtype: 'F32', shape: [2], data: [1, 2] },
    ]));
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const h = JSON.parse(Buffer.from(bytes.subarray(8, 8 + n)).toString()) as Record<string, { data_offsets: number[] }>;
    assert.deepEqual(h['z']!.data_offsets, [0, 8]);
    assert.deepEqual(h['a']!.data_offsets, [8, 20]);
    assert.deepEqual(h['m']!.data_offsets, [20, 28]);
    refuses(() => serializeSafetensors([{ name: 'bad', dtype: 'F32', shape: [2, 2], data: [1, 2, 3] }]), "tensor 'bad'", '3 values', '[2, 2]');
  });

  it('parses from a Buffer that is a view into a larger buffer (not only from offset 0)', () => {
    const file = concat(serializeSafetensors(sampleTensors()));
    const big = Buffer.alloc(file.length + 13, 0xee);
    big.set(file, 5);
    const f = parseSafetensors(big.subarray(5, 5 + file.length), 'view');
    assert.deepEqual(bitsF32(f.tensors.get('a.f32')!.data), bitsF32(F32_SPECIAL));
    assert.deepEqual(Array.from(f.tensors.get('d.i32')!.data), I32_SPECIAL);
    // and a small file read by readFileSync (a slice of Node's shared pool) reads exactly its values
    const path = join(dir, 'small.safetensors');
    writeSafetensors(path, [{ name: 't', dtype: 'F32', shape: [3], data: [7, 8, 9] }]);
    const t = readSafetensors(path).tensors.get('t')!;
    assert.equal(t.data.length, 3);
    assert.deepEqual(Array.from(t.data), [7, 8, 9]);
  });
});

describe('safetensors: a hand-built file', () => {
  it('reads BF16, F16, F32, F64, I32 and I64 values with known bit patterns', () => {
    // BF16: 1, -3, 3.140625, +inf, 2^-133 (smallest subnormal), -0
    const bf16 = u16(0x3f80, 0xc040, 0x4049, 0x7f80, 0x0001, 0x8000);
    // F16: 1, -2, 65504 (max), 2^-24 (smallest subnormal), 0.333251953125, -inf, -0, 2^-14 (smallest normal)
    const f16 = u16(0x3c00, 0xc000, 0x7bff, 0x0001, 0x3555, 0xfc00, 0x8000, 0x0400);
    const f16nan = u16(0x7e00);
    const f32 = new Uint8Array(new Float32Array([0.5, -2.25]).buffer);
    const f64 = new Uint8Array(new Float64Array([Math.PI]).buffer);
    const i32 = new Uint8Array(new Int32Array([-7, 2147483647]).buffer);
    const i64 = new Uint8Array(new BigInt64Array([-2147483648n, 5n, 2147483647n]).buffer);
    const parts = [bf16, f16, f16nan, f32, f64, i32, i64];
    const offs: [number, number][] = [];
    let o = 0;
    for (const p of parts) {
      offs.push([o, o + p.length]);
      o += p.length;
    }
    // tensors listed in the header in a different order than their data, metadata in the middle
    const header = {
      i64: { dtype: 'I64', shape: [3], data_offsets: offs[6] },
      'w.bf16': { dtype: 'BF16', shape: [2, 3], data_offsets: offs[0] },
      __metadata__: { format: 'pt', who: 'hand' },
      'w.f16': { dtype: 'F16', shape: [8], data_offsets: offs[1] },
      nan16: { dtype: 'F16', shape: [1], data_offsets: offs[2] },
      f32: { dtype: 'F32', shape: [1, 2], data_offsets: offs[3] },
      f64: { dtype: 'F64', shape: [], data_offsets: offs[4] },
      i32: { dtype: 'I32', shape: [2], data_offsets: offs[5] },
    };
    const file = build(header, concat(parts));
    const path = join(dir, 'hand.safetensors');
    writeFileSync(path, file);
    const f = readSafetensors(path);
    assert.deepEqual(f.metadata, { format: 'pt', who: 'hand' });
    assert.equal(f.tensors.size, 7);
    const bf = f.tensors.get('w.bf16')!;
    assert.equal(bf.dtype, 'BF16');
    assert.deepEqual(bf.shape, [2, 3]);
    assert.deepEqual(Array.from(bf.data), [1, -3, 3.140625, Infinity, 2 ** -133, -0]);
    assert.ok(Object.is(bf.data[5], -0));
    const h = f.tensors.get('w.f16')!;
    assert.equal(h.dtype, 'F16');
    assert.deepEqual(Array.from(h.data), [1, -2, 65504, 2 ** -24, 0.333251953125, -Infinity, -0, 2 ** -14]);
    assert.ok(Object.is(h.data[6], -0));
    assert.ok(Number.isNaN(f.tensors.get('nan16')!.data[0]));
    assert.deepEqual(Array.from(f.tensors.get('f32')!.data), [0.5, -2.25]);
    assert.deepEqual(f.tensors.get('f32')!.shape, [1, 2]);
    const s = f.tensors.get('f64')!;
    assert.deepEqual(s.shape, []);
    assert.deepEqual(Array.from(s.data), [Math.PI]);
    assert.deepEqual(Array.from(f.tensors.get('i32')!.data), [-7, 2147483647]);
    const l = f.tensors.get('i64')!;
    assert.equal(l.dtype, 'I64');
    assert.ok(l.data instanceof Int32Array);
    assert.deepEqual(Array.from(l.data), [-2147483648, 5, 2147483647]);
  });

  it('reads a file whose header is not padded, and one with no tensors at all', () => {
    const f = parseSafetensors(build({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(new Float32Array([9]).buffer)), 'unpadded');
    assert.deepEqual(Array.from(f.tensors.get('a')!.data), [9]);
    const empty = parseSafetensors(build({}), 'empty');
    assert.equal(empty.tensors.size, 0);
    assert.deepEqual(empty.metadata, {});
  });

  it('refuses an I64 value that does not fit int32', () => {
    const data = new Uint8Array(new BigInt64Array([1n, 2147483648n]).buffer);
    refuses(() => parseSafetensors(build({ big: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, data), 'big.st'), 'big.st', "tensor 'big'", '2147483648');
  });
});

describe('safetensors refusals: CheckpointError naming the file and the tensor', () => {
  const F = 'damaged.safetensors';
  const four = new Uint8Array(4);
  const one = (entry: unknown, data: Uint8Array = four) => build({ t: entry }, data);

  it('a header length over 100 MB (only the 8 bytes exist; nothing is allocated)', () => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(100 * 1024 * 1024 + 1), true);
    refuses(() => parseSafetensors(b, F), F, 'header length 104857601', 'limit');
    new DataView(b.buffer).setBigUint64(0, 0xffffffffffffffffn, true);
    refuses(() => parseSafetensors(b, F), F, 'limit');
    // and from disk
    const path = join(dir, 'huge-header.safetensors');
    writeFileSync(path, b);
    refuses(() => readSafetensors(path), path, 'limit');
  });

  it('a header reaching past the end of the file, and truncated files', () => {
    const b = build({ t: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, four);
    const n = b.length - 12;
    refuses(() => parseSafetensors(b.subarray(0, 8 + n - 1), F), F, `header length ${n} reaches past the end of the file`);
    refuses(() => parseSafetensors(b.subarray(0, 5), F), F, 'too short', '5 bytes');
    refuses(() => parseSafetensors(new Uint8Array(0), F), F, 'too short');
    refuses(() => parseSafetensors(b.subarray(0, b.length - 1), F), F, "tensor 't'", 'data_offsets [0, 4] reach past the data section (3 bytes)');
    const path = join(dir, 'truncated.safetensors');
    writeFileSync(path, b.subarray(0, b.length - 2));
    refuses(() => readSafetensors(path), path, "tensor 't'", 'past the data section');
  });

  it('invalid JSON, invalid UTF-8, and a header that is not an object', () => {
    refuses(() => parseSafetensors(build(null, four, '{"t": {"dtype": "F32",'), F), F, 'not valid JSON');
    const badUtf8 = build(null, new Uint8Array(0), '{"a?": {}}');
    badUtf8[8 + 3] = 0xff; // the '?' becomes a byte that is not UTF-8
    refuses(() => parseSafetensors(badUtf8, F), F, 'not valid JSON');
    refuses(() => parseSafetensors(build([1, 2]), F), F, 'not a JSON object');
    refuses(() => parseSafetensors(build(null, new Uint8Array(0), 'null'), F), F, 'not a JSON object');
    refuses(() => parseSafetensors(build(null, new Uint8Array(0), '"str"'), F), F, 'not a JSON object');
    refuses(() => parseSafetensors(build({ t: 5 }), F), F, "tensor 't'", 'not an object');
  });

  it('unknown dtypes (inherited object keys included)', () => {
    for (const dtype of ['F8', 'f32', 'U8', 'constructor', 'toString', '__proto__', 4, null]) {
      refuses(() => parseSafetensors(one({ dtype, shape: [1], data_offsets: [0, 4] }), F), F, "tensor 't'", `unsupported dtype ${JSON.stringify(dtype)}`);
    }
    refuses(() => parseSafetensors(one({ shape: [1], data_offsets: [0, 4] }), F), F, "tensor 't'", 'unsupported dtype undefined');
  });

  it('bad shapes', () => {
    for (const shape of [[-1], [1.5], ['1'], 3, null, [1, null], [2 ** 60]]) {
      refuses(() => parseSafetensors(one({ dtype: 'F32', shape, data_offsets: [0, 4] }), F), F, "tensor 't'", 'shape must be a list of non-negative integers');
    }
  });

  it('bad data_offsets, and offsets past the data', () => {
    for (const offs of [[0], [0, 4, 8], [4, 0], [-4, 0], [0, '4'], null, [0, 4.5]]) {
      refuses(() => parseSafetensors(one({ dtype: 'F32', shape: [1], data_offsets: offs }), F), F, "tensor 't'", 'data_offsets must be [begin, end]');
    }
    refuses(() => parseSafetensors(one({ dtype: 'F32', shape: [1], data_offsets: [4, 8] }), F), F, "tensor 't'", 'data_offsets [4, 8] reach past the data section (4 bytes)');
  });

  it('a shape whose byte size disagrees with the offsets', () => {
    refuses(() => parseSafetensors(one({ dtype: 'F32', shape: [2], data_offsets: [0, 4] }), F), F, "tensor 't'", 'shape [2] of F32 needs 8 bytes, its offsets give 4');
    refuses(() => parseSafetensors(one({ dtype: 'F64', shape: [1], data_offsets: [0, 4] }), F), F, "tensor 't'", 'F64 needs 8 bytes');
    refuses(() => parseSafetensors(one({ dtype: 'BF16', shape: [1], data_offsets: [0, 4] }), F), F, "tensor 't'", 'BF16 needs 2 bytes');
  });

  it('a gap, an overlap and trailing bytes', () => {
    const d12 = new Uint8Array(12);
    const gap = build({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, d12);
    refuses(() => parseSafetensors(gap, F), F, "tensor 'b' starts at byte 8", 'ended at 4', 'gap');
    const lead = build({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8));
    refuses(() => parseSafetensors(lead, F), F, "tensor 'a' starts at byte 4", 'gap');
    const overlap = build({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8));
    refuses(() => parseSafetensors(overlap, F), F, "tensor 'b' starts at byte 4", 'ended at 8', 'overlap');
    const same = build({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'I32', shape: [1], data_offsets: [0, 4] } }, four);
    refuses(() => parseSafetensors(same, F), F, 'starts at byte 0', 'overlap');
    const trailing = build({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(7));
    refuses(() => parseSafetensors(trailing, F), F, "3 bytes after the last tensor 'a'");
    refuses(() => parseSafetensors(build({}, new Uint8Array(2)), F), F, '2 bytes after the last tensor');
  });

  it('non-string or non-object metadata', () => {
    refuses(() => parseSafetensors(build({ __metadata__: { format: 'pt', n: 3 } }), F), F, '__metadata__.n must be a string');
    refuses(() => parseSafetensors(build({ __metadata__: { x: null } }), F), F, '__metadata__.x must be a string');
    refuses(() => parseSafetensors(build({ __metadata__: ['a'] }), F), F, '__metadata__ must be an object of strings');
    refuses(() => parseSafetensors(build({ __metadata__: 'pt' }), F), F, '__metadata__ must be an object of strings');
  });

  it('a file that cannot be read', () => {
    const missing = join(dir, 'nope', 'model.safetensors');
    refuses(() => readSafetensors(missing), missing, 'cannot read (ENOENT)');
    refuses(() => readSafetensors(dir), dir, 'cannot read (EISDIR)');
  });

  it('every refusal carries a hint', () => {
    const e = refuses(() => parseSafetensors(build([1]), F), F);
    assert.match(e.hint ?? '', /re-save/);
  });
});

describe('safetensors fuzz', () => {
  /** A small deterministic generator (mulberry32). */
  function rng(seed: number): () => number {
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function isValid(f: SafeTensorsFile): void {
    for (const [name, t] of f.tensors) {
      const count = t.shape.reduce((a, b) => a * b, 1);
      assert.equal(t.data.length, count, `${name}: ${t.data.length} values for shape [${t.shape.join(', ')}]`);
    }
    for (const v of Object.values(f.metadata)) assert.equal(typeof v, 'string');
  }

  it('500 random mutations and truncations: a valid parse or a CheckpointError, nothing else', () => {
    const base = concat(serializeSafetensors([
      { name: 'w', dtype: 'F32', shape: [2, 3], data: [1, 2, 3, 4, 5, 6] },
      { name: 'b', dtype: 'F64', shape: [2], data: [-1, 0.5] },
      { name: 'i', dtype: 'I32', shape: [3], data: [7, -8, 9] },
      { name: 'h', dtype: 'F32', shape: [], data: [0.25] },
    ], { format: 'pt' }));
    const headerEnd = 8 + Number(new DataView(base.buffer).getBigUint64(0, true));
    const r = rng(20240611);
    const counts = { ok: 0, refused: 0 };
    for (let iter = 0; iter < 500; iter++) {
      let b: Uint8Array = base.slice();
      const kind = iter % 5;
      const pos = () => (r() < 0.8 ? Math.floor(r() * headerEnd) : Math.floor(r() * b.length));
      if (kind === 0) {
        b = b.slice(0, Math.floor(r() * b.length)); // truncation
      } else if (kind === 1) {
        for (let k = 0, n = 1 + Math.floor(r() * 4); k < n; k++) b[pos()] = Math.floor(r() * 256); // random bytes
      } else if (kind === 2) {
        const p = pos();
        b[p] = b[p]! ^ (1 << Math.floor(r() * 8)); // one bit flip
      } else if (kind === 3) {
        // a printable character from the header's alphabet, so that JSON often stays valid
        const alphabet = '0123456789,[]{}":FIBU68_ -';
        b[pos()] = alphabet.charCodeAt(Math.floor(r() * alphabet.length));
      } else {
        // insert or delete a byte
        const p = pos();
        b = r() < 0.5 ? concat([b.subarray(0, p), new Uint8Array([Math.floor(r() * 256)]), b.subarray(p)]) : concat([b.subarray(0, p), b.subarray(p + 1)]);
      }
      try {
        isValid(parseSafetensors(b, `fuzz-${iter}`));
        counts.ok++;
      } catch (e) {
        if (e instanceof assert.AssertionError) throw e;
        assert.ok(e instanceof CheckpointError, `iteration ${iter} (kind ${kind}): ${(e as Error)?.name}: ${(e as Error)?.message}`);
        assert.ok(e.message.startsWith(`fuzz-${iter}: `), e.message);
        counts.refused++;
      }
    }
    assert.equal(counts.ok + counts.refused, 500);
    assert.ok(counts.refused > 250, `only ${counts.refused} refusals`);
    assert.ok(counts.ok > 5, `only ${counts.ok} valid parses (mutations in the data section should parse)`);
  });
});

describe('atomic writes', () => {
  const target = (name: string) => {
    const d = join(dir, `atomic-${name}`);
    mkdirSync(d, { recursive: true });
    return { d, p: join(d, 'file.bin') };
  };
  const leftovers = (d: string) => readdirSync(d).filter((f) => f.includes('.tmp-'));

  it('replaces the file with exactly the chunks (bytes and strings)', () => {
    const { d, p } = target('ok');
    writeFileSync(p, 'old');
    writeFileAtomic(p, [new Uint8Array([1, 2, 3]), 'é', Buffer.from([4])]);
    assert.deepEqual(Array.from(readFileSync(p)), [1, 2, 3, 0xc3, 0xa9, 4]);
    assert.deepEqual(leftovers(d), []);
  });

  it('an exception mid-write keeps the old content and leaves no temp file', () => {
    const { d, p } = target('throw');
    writeFileSync(p, 'old content');
    const big = new Uint8Array(1 << 20).fill(7);
    for (const bad of [5, { length: 4 }, null, [1, 2, 3]]) {
      assert.throws(() => writeFileAtomic(p, [big, bad as unknown as Uint8Array, big]), TypeError);
      assert.equal(readFileSync(p, 'utf8'), 'old content');
      assert.deepEqual(leftovers(d), [], `temp file left after chunk ${JSON.stringify(bad)}`);
    }
    // a throwing iterator (the chunk list itself fails mid-way)
    const chunks = {
      *[Symbol.iterator]() {
        yield big;
        throw new Error('source failed');
      },
    };
    assert.throws(() => writeFileAtomic(p, chunks as unknown as Uint8Array[]), /source failed/);
    assert.equal(readFileSync(p, 'utf8'), 'old content');
    assert.deepEqual(leftovers(d), []);
  });

  it('a failing rename (the target is a non-empty folder) and a missing folder leave nothing behind', () => {
    const { d } = target('rename');
    const p = join(d, 'occupied');
    mkdirSync(join(p, 'inside'), { recursive: true });
    assert.throws(() => writeFileAtomic(p, ['new']), (e: NodeJS.ErrnoException) => ['EISDIR', 'ENOTEMPTY', 'EEXIST'].includes(e.code ?? ''));
    assert.ok(existsSync(join(p, 'inside')));
    assert.deepEqual(leftovers(d), []);
    assert.throws(() => writeFileAtomic(join(d, 'missing', 'f'), ['x']), (e: NodeJS.ErrnoException) => e.code === 'ENOENT');
    assert.ok(!existsSync(join(d, 'missing')));
  });

  it('a read-only folder: the write fails, the old file stays', { skip: process.getuid?.() === 0 ? 'root ignores folder permissions' : false }, () => {
    const { d, p } = target('readonly');
    writeFileSync(p, 'old');
    chmodSync(d, 0o555);
    try {
      assert.throws(() => writeFileAtomic(p, ['new']), (e: NodeJS.ErrnoException) => e.code === 'EACCES');
      assert.equal(readFileSync(p, 'utf8'), 'old');
      assert.deepEqual(leftovers(d), []);
    } finally {
      chmodSync(d, 0o755);
    }
  });

  it('a writer killed with SIGKILL leaves the target old or new, never torn', async () => {
    const { p } = target('kill');
    const mod = (rel: string) => JSON.stringify(new URL(rel, import.meta.url).href);
    // each generation k: a valid safetensors file whose every value is k (about 4 MB)
    const script = [
      `import { writeFileAtomic } from ${mod('../../src/io/atomic.js')};`,
      `import { serializeSafetensors } from ${mod('../../src/io/safetensors.js')};`,
      'const path = process.argv[1];',
      'const data = new Float32Array(1 << 20);',
      'for (let k = 1; ; k++) {',
      '  data.fill(k);',
      "  writeFileAtomic(path, serializeSafetensors([{ name: 'gen', dtype: 'F32', shape: [data.length], data }, { name: 'k', dtype: 'I32', shape: [1], data: [k] }], { gen: String(k) }));",
      "  if (k === 1) process.stdout.write('first\\n');",
      '}',
    ].join('\n');
    writeSafetensors(p, [{ name: 'gen', dtype: 'F32', shape: [4], data: [0, 0, 0, 0] }, { name: 'k', dtype: 'I32', shape: [1], data: [0] }], { gen: '0' });
    const seen = new Set<number>();
    for (const delay of [100, 180, 260, 140, 300]) {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script, p], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      const exited = new Promise<NodeJS.Signals | null>((res) => child.on('exit', (_code, sig) => res(sig)));
      // wait for the child to start writing, then a little more, then kill it mid-loop
      await new Promise<void>((res) => {
        const timer = setTimeout(res, 5000);
        child.stdout.once('data', () => {
          clearTimeout(timer);
          res();
        });
      });
      await new Promise((res) => setTimeout(res, delay));
      child.kill('SIGKILL');
      const sig = await exited;
      assert.equal(sig, 'SIGKILL', `the writer ended before it was killed: ${stderr}`);
      const f = readSafetensors(p);
      const k = f.tensors.get('k')!.data[0]!;
      const gen = f.tensors.get('gen')!.data;
      assert.equal(f.metadata['gen'], String(k));
      assert.ok(k >= 1, 'the first generation was complete before the kill');
      assert.equal(gen.length, 1 << 20);
      for (let i = 0; i < gen.length; i += 4099) assert.equal(gen[i], k, `value ${i} of generation ${k}`);
      assert.equal(gen[gen.length - 1], k);
      seen.add(k);
    }
    assert.ok(seen.size >= 1);
  });
});
