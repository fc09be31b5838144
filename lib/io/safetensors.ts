/**
 * Minimal safetensors reader / writer for Node.js (no dependencies).
 *
 * File format (https://github.com/huggingface/safetensors): 8-byte little-endian unsigned header length
 * `N`, then `N` bytes of UTF-8 JSON `{ "<name>": { "dtype": "F32", "shape": [..], "data_offsets": [b, e] },
 * ..., "__metadata__": { "<key>": "<string>" } }`, then the raw little-endian data block; offsets are
 * relative to the start of the data block.
 *
 * API:
 * - {@link readSafetensors}`(pathOrBuffer)` → `{ tensors: Map<string, Tensor>, metadata }` (every tensor's data
 *   is copied into its own aligned typed array, so the source buffer can be dropped);
 * - {@link writeSafetensors}`(path, tensors, metadata?)` / {@link serializeSafetensors} (Uint8Array);
 * - {@link toFloat32}`(t)` converts any numeric tensor to a Float32Array (F16/BF16 decoded).
 *
 * Typed-array view per dtype: F64 Float64Array, F32 Float32Array, F16/BF16 Uint16Array (raw bits), I64
 * BigInt64Array, U64 BigUint64Array, I32 Int32Array, U32 Uint32Array, I16 Int16Array, U16 Uint16Array,
 * I8 Int8Array, U8/BOOL/F8_E4M3/F8_E5M2 Uint8Array.
 *
 * Scope: reads the whole file into memory and copies each tensor (fine for fixtures, configs and parity data;
 * multi-GB checkpoints are meant for the native engine's memory-mapped loader).
 *
 * All failures throw {@link XpsrError} (`ERR_IO` for file-system problems, `ERR_WEIGHTS_INVALID` for a malformed
 * file) with a message naming the file.
 */

import { readFileSync, writeFileSync } from 'node:fs';
import { endianness } from 'node:os';
import { ERR_INVALID_ARGUMENT, ERR_IO, ERR_WEIGHTS_INVALID, XpsrError } from '../errors.js';

/** Element types of the safetensors format. */
export type Dtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U64' | 'U32' | 'U16' | 'U8' | 'BOOL' | 'F8_E4M3' | 'F8_E5M2';

/** Typed array holding a tensor's elements (see the module doc for the dtype → array mapping). */
export type TensorData =
  | Float64Array
  | Float32Array
  | Uint16Array
  | BigInt64Array
  | BigUint64Array
  | Int32Array
  | Uint32Array
  | Int16Array
  | Int8Array
  | Uint8Array;

/** A tensor: dtype, shape (row-major, `[]` = scalar) and its elements (length = product of shape). */
export interface Tensor {
  dtype: Dtype;
  shape: number[];
  data: TensorData;
}

/** Result of {@link readSafetensors}: tensors in header order, and the `__metadata__` string map. */
export interface SafetensorsFile {
  tensors: Map<string, Tensor>;
  metadata: Record<string, string>;
}

/** Bytes per element for every dtype. */
export const DTYPE_SIZE: Readonly<Record<Dtype, number>> = Object.freeze({
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
});

/** Largest header accepted (safetensors itself caps it at 100 MB). */
const MAX_HEADER = 100_000_000;
const LITTLE_ENDIAN_HOST = endianness() === 'LE';

function isDtype(s: unknown): s is Dtype {
  return typeof s === 'string' && Object.hasOwn(DTYPE_SIZE, s);
}

function allocate(dtype: Dtype, n: number): TensorData {
  switch (dtype) {
    case 'F64':
      return new Float64Array(n);
    case 'F32':
      return new Float32Array(n);
    case 'F16':
    case 'BF16':
    case 'U16':
      return new Uint16Array(n);
    case 'I64':
      return new BigInt64Array(n);
    case 'U64':
      return new BigUint64Array(n);
    case 'I32':
      return new Int32Array(n);
    case 'U32':
      return new Uint32Array(n);
    case 'I16':
      return new Int16Array(n);
    case 'I8':
      return new Int8Array(n);
    case 'U8':
    case 'BOOL':
    case 'F8_E4M3':
    case 'F8_E5M2':
      return new Uint8Array(n);
  }
}

/** Typed-array constructor expected for a dtype (used to validate tensors handed to the writer). */
function expectedArray(dtype: Dtype): Function {
  return allocate(dtype, 0).constructor;
}

function swapBytes(bytes: Uint8Array, width: number): void {
  if (width === 1) return;
  for (let i = 0; i < bytes.length; i += width) {
    for (let a = i, b = i + width - 1; a < b; a++, b--) {
      const t = bytes[a]!;
      bytes[a] = bytes[b]!;
      bytes[b] = t;
    }
  }
}

function product(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function bad(where: string, msg: string, details?: object): XpsrError {
  return new XpsrError(ERR_WEIGHTS_INVALID, `${where}: invalid safetensors file: ${msg}`, details);
}

/**
 * Reads a safetensors file (path) or an in-memory file (Buffer / Uint8Array).
 *
 * Validates: header length (≥ 2, ≤ 100 MB, inside the file), JSON object, known dtypes, shapes of
 * non-negative safe integers, `data_offsets` = `[begin, end]` inside the data block with
 * `end − begin = elements × dtype size`, no two tensors overlapping, and `__metadata__` being a string map.
 *
 * @param source file path, or the file's bytes.
 * @param name   label used in error messages when `source` is a buffer (default `<buffer>`).
 */
export function readSafetensors(source: string | Uint8Array, name?: string): SafetensorsFile {
  let bytes: Uint8Array;
  let where: string;
  if (typeof source === 'string') {
    where = name ?? source;
    try {
      const buf = readFileSync(source);
      bytes = new Uint8Array(buf.buffer as ArrayBuffer, buf.byteOffset, buf.byteLength);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new XpsrError(ERR_IO, `${where}: cannot read safetensors file (${code ?? String(e)})`, { path: source }, { cause: e });
    }
  } else if (source instanceof Uint8Array) {
    bytes = source;
    where = name ?? '<buffer>';
  } else {
    throw new XpsrError(ERR_INVALID_ARGUMENT, 'readSafetensors: expected a file path or a Uint8Array/Buffer');
  }

  if (bytes.length < 8) throw bad(where, `file is ${bytes.length} bytes, shorter than the 8-byte header length`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen64 = dv.getBigUint64(0, true);
  if (headerLen64 > BigInt(MAX_HEADER)) throw bad(where, `header length ${headerLen64} exceeds ${MAX_HEADER} bytes`);
  const headerLen = Number(headerLen64);
  if (headerLen < 2) throw bad(where, `header length ${headerLen} is too small for a JSON object`);
  if (8 + headerLen > bytes.length) {
    throw bad(where, `header length ${headerLen} runs past the end of the file (${bytes.length} bytes)`);
  }
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLen)));
  } catch (e) {
    throw bad(where, `header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw bad(where, 'header JSON is not an object');
  }

  const dataStart = 8 + headerLen;
  const dataSize = bytes.length - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, Tensor>();
  const spans: Array<[number, number, string]> = [];

  for (const [key, entry] of Object.entries(header as Record<string, unknown>)) {
    if (key === '__metadata__') {
      if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
        throw bad(where, '__metadata__ is not an object');
      }
      for (const [mk, mv] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof mv !== 'string') throw bad(where, `__metadata__["${mk}"] is not a string`);
        metadata[mk] = mv;
      }
      continue;
    }
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
      throw bad(where, `entry "${key}" is not an object`);
    }
    const { dtype, shape, data_offsets: offs } = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (!isDtype(dtype)) throw bad(where, `tensor "${key}" has unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      throw bad(where, `tensor "${key}" has an invalid shape ${JSON.stringify(shape)}`);
    }
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)) {
      throw bad(where, `tensor "${key}" has invalid data_offsets ${JSON.stringify(offs)}`);
    }
    const [begin, end] = offs as [number, number];
    if (begin > end || end > dataSize) {
      throw bad(where, `tensor "${key}" data_offsets [${begin}, ${end}] lie outside the data block (${dataSize} bytes)`);
    }
    const n = product(shape as number[]);
    const width = DTYPE_SIZE[dtype];
    if (!Number.isSafeInteger(n * width) || n * width !== end - begin) {
      throw bad(where, `tensor "${key}" (${dtype} ${JSON.stringify(shape)}) needs ${n * width} bytes but data_offsets span ${end - begin}`);
    }
    const data = allocate(dtype, n);
    const dst = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    dst.set(bytes.subarray(dataStart + begin, dataStart + end));
    if (!LITTLE_ENDIAN_HOST) swapBytes(dst, width);
    tensors.set(key, { dtype, shape: (shape as number[]).slice(), data });
    if (end > begin) spans.push([begin, end, key]);
  }

  spans.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i]![0] < spans[i - 1]![1]) {
      throw bad(where, `tensors "${spans[i - 1]![2]}" and "${spans[i]![2]}" overlap in the data block`);
    }
  }
  return { tensors, metadata };
}

/** Tensors accepted by the writer: a Map or a plain object, iterated in insertion order. */
export type TensorCollection = Map<string, Tensor> | Record<string, Tensor>;

/**
 * Serialises tensors to safetensors bytes. Tensors are laid out in the iteration order of `tensors`;
 * the header is padded with spaces to a multiple of 8 bytes so every tensor starts 8-byte aligned.
 * Any dtype is accepted as long as `data` is the matching typed array (F16/BF16 as raw Uint16Array bits).
 */
export function serializeSafetensors(tensors: TensorCollection, metadata?: Record<string, string>): Uint8Array {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') {
        throw new XpsrError(ERR_INVALID_ARGUMENT, `writeSafetensors: metadata["${k}"] must be a string`);
      }
    }
    header['__metadata__'] = { ...metadata };
  }
  let offset = 0;
  const parts: Uint8Array[] = [];
  for (const [key, t] of entries) {
    if (key === '__metadata__') throw new XpsrError(ERR_INVALID_ARGUMENT, 'writeSafetensors: "__metadata__" is reserved');
    if (!isDtype(t.dtype)) throw new XpsrError(ERR_INVALID_ARGUMENT, `writeSafetensors: tensor "${key}" has unknown dtype ${String(t.dtype)}`);
    const want = expectedArray(t.dtype);
    if (!(t.data instanceof want)) {
      throw new XpsrError(
        ERR_INVALID_ARGUMENT,
        `writeSafetensors: tensor "${key}" (${t.dtype}) needs a ${want.name}, got ${(t.data as object | undefined)?.constructor?.name}`,
      );
    }
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0) || product(t.shape) !== t.data.length) {
      throw new XpsrError(
        ERR_INVALID_ARGUMENT,
        `writeSafetensors: tensor "${key}" shape ${JSON.stringify(t.shape)} does not match its ${t.data.length} elements`,
      );
    }
    let raw = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    if (!LITTLE_ENDIAN_HOST) {
      raw = raw.slice();
      swapBytes(raw, DTYPE_SIZE[t.dtype]);
    }
    header[key] = { dtype: t.dtype, shape: t.shape.slice(), data_offsets: [offset, offset + raw.length] };
    parts.push(raw);
    offset += raw.length;
  }
  const jsonBytes = new TextEncoder().encode(JSON.stringify(header));
  const headerLen = Math.ceil(jsonBytes.length / 8) * 8;
  const out = new Uint8Array(8 + headerLen + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLen), true);
  out.set(jsonBytes, 8);
  out.fill(0x20, 8 + jsonBytes.length, 8 + headerLen);
  let pos = 8 + headerLen;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/** Writes tensors (and optional string metadata) to a safetensors file; see {@link serializeSafetensors}. */
export function writeSafetensors(path: string, tensors: TensorCollection, metadata?: Record<string, string>): void {
  const buf = serializeSafetensors(tensors, metadata);
  try {
    writeFileSync(path, buf);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new XpsrError(ERR_IO, `${path}: cannot write safetensors file (${code ?? String(e)})`, { path }, { cause: e });
  }
}

/** Decodes an IEEE half-precision bit pattern. */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

const bf16Scratch = new Uint32Array(1);
const bf16View = new Float32Array(bf16Scratch.buffer);
/** Decodes a bfloat16 bit pattern (the top 16 bits of a float32). */
export function bf16ToFloat(b: number): number {
  bf16Scratch[0] = (b & 0xffff) << 16;
  return bf16View[0]!;
}

/**
 * Converts any numeric tensor to a Float32Array. F32 returns `t.data` itself (no copy); F64 and integer
 * types are rounded to float32; F16/BF16 are decoded. F8 types are rejected.
 */
export function toFloat32(t: Tensor): Float32Array {
  const d = t.data;
  switch (t.dtype) {
    case 'F32':
      return d as Float32Array;
    case 'F16': {
      const s = d as Uint16Array;
      const o = new Float32Array(s.length);
      for (let i = 0; i < s.length; i++) o[i] = halfToFloat(s[i]!);
      return o;
    }
    case 'BF16': {
      const s = d as Uint16Array;
      const o = new Float32Array(s.length);
      for (let i = 0; i < s.length; i++) o[i] = bf16ToFloat(s[i]!);
      return o;
    }
    case 'I64':
    case 'U64': {
      const s = d as BigInt64Array | BigUint64Array;
      const o = new Float32Array(s.length);
      for (let i = 0; i < s.length; i++) o[i] = Number(s[i]!);
      return o;
    }
    case 'F8_E4M3':
    case 'F8_E5M2':
      throw new XpsrError(ERR_INVALID_ARGUMENT, `toFloat32: ${t.dtype} tensors are not supported`);
    default:
      return Float32Array.from(d as Float64Array);
  }
}

/** Converts an integer tensor (I64/I32/.../U8/BOOL) to plain numbers; throws if a value is not a safe integer. */
export function toNumbers(t: Tensor): number[] {
  if (t.dtype === 'F32' || t.dtype === 'F64' || t.dtype === 'F16' || t.dtype === 'BF16') {
    return Array.from(toFloat32(t));
  }
  const out: number[] = [];
  const d = t.data as ArrayLike<number | bigint>;
  for (let i = 0; i < d.length; i++) {
    const v = d[i]!;
    const n = Number(v);
    if (!Number.isSafeInteger(n)) throw new XpsrError(ERR_INVALID_ARGUMENT, `toNumbers: value ${String(v)} is not a safe integer`);
    out.push(n);
  }
  return out;
}
