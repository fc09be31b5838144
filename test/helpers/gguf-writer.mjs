// A small, dependency-free GGUF (v3) writer: metadata + tensors in F32, F16, Q8_0 or Q4_0.
// Test-only (not part of the package): generates the random-weight LLaVA fixtures of the tests and the
// captioner benchmark (gguf-random-llava.mjs); streams tensor data to disk, so multi-GB files need little memory.
//
// Layout: "GGUF", u32 version 3, u64 tensor count, u64 kv count, kv pairs, tensor infos (name, u32 n_dims,
// u64 ne[] in ggml order — ne[0] is the row length —, u32 type, u64 offset relative to the data section),
// padding to `general.alignment` (32), tensor data (each tensor padded to the alignment). Little-endian.
import fs from 'node:fs';

/** ggml tensor types the writer encodes. */
export const GgmlType = Object.freeze({ F32: 0, F16: 1, Q4_0: 2, Q8_0: 8 });

/** 'F32', 'Q4_0', ... of a GgmlType value. */
export function ggmlTypeName(type) {
  return Object.keys(GgmlType).find((k) => GgmlType[k] === type) ?? String(type);
}

/** GGUF metadata value types. */
export const GgufValueType = Object.freeze({
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
});

/**
 * Metadata values: `{ type, value }` for scalars, `{ type: ARRAY, itemType, value: [...] }` for arrays.
 * @typedef {{ type: number, value: number | bigint | boolean | string, itemType?: number }} GgufValue
 */
export const gguf = {
  u32: (value) => ({ type: GgufValueType.UINT32, value }),
  i32: (value) => ({ type: GgufValueType.INT32, value }),
  f32: (value) => ({ type: GgufValueType.FLOAT32, value }),
  bool: (value) => ({ type: GgufValueType.BOOL, value }),
  str: (value) => ({ type: GgufValueType.STRING, value }),
  arr: (itemType, value) => ({ type: GgufValueType.ARRAY, itemType, value }),
};

/**
 * A tensor to write. `ne` is in ggml order (ne[0] = row length: numpy/torch shape reversed). `fill(out,
 * start)` produces the tensor's values in row-major ggml order (element i of row r is value r*ne[0]+i),
 * out.length values starting at element `start`; the writer quantizes them.
 * @typedef {{ name: string, ne: number[], type: number, fill: (out: Float32Array, start: number) => void }} GgufTensor
 */

const BLOCK = 32;

export function tensorByteSize(type, ne) {
  const n = ne.reduce((a, b) => a * b, 1);
  switch (type) {
    case GgmlType.F32:
      return n * 4;
    case GgmlType.F16:
      return n * 2;
    case GgmlType.Q8_0:
    case GgmlType.Q4_0: {
      if ((ne[0] ?? 0) % BLOCK !== 0) throw new RangeError(`row length ${ne[0]} is not a multiple of ${BLOCK} for ${ggmlTypeName(type)}`);
      return (n / BLOCK) * (type === GgmlType.Q8_0 ? 34 : 18);
    }
    default:
      throw new RangeError(`unsupported ggml type ${type}`);
  }
}

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);
/** IEEE binary16 bits of a float (round to nearest even). */
export function floatToHalf(v) {
  f32buf[0] = v;
  const x = u32buf[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return sign | h;
}

function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Encodes `src` (length multiple of the block size for quantized types) into `dst` at `off`; returns bytes. */
export function encodeValues(type, src, dst, off) {
  const n = src.length;
  const dv = new DataView(dst.buffer, dst.byteOffset, dst.byteLength);
  switch (type) {
    case GgmlType.F32:
      for (let i = 0; i < n; i++) dv.setFloat32(off + i * 4, src[i], true);
      return n * 4;
    case GgmlType.F16:
      for (let i = 0; i < n; i++) dv.setUint16(off + i * 2, floatToHalf(src[i]), true);
      return n * 2;
    case GgmlType.Q8_0: {
      let o = off;
      for (let b = 0; b < n; b += BLOCK) {
        let amax = 0;
        for (let i = 0; i < BLOCK; i++) amax = Math.max(amax, Math.abs(src[b + i]));
        const dh = floatToHalf(amax / 127);
        const d = halfToFloat(dh);
        const id = d ? 1 / d : 0;
        dv.setUint16(o, dh, true);
        for (let i = 0; i < BLOCK; i++) dv.setInt8(o + 2 + i, Math.max(-127, Math.min(127, Math.round(src[b + i] * id))));
        o += 34;
      }
      return o - off;
    }
    case GgmlType.Q4_0: {
      // ggml reference: d = max/-8 (signed value of largest magnitude), q = clamp(round(x/d) + 8, 0, 15),
      // byte j holds element j (low nibble) and element j+16 (high nibble).
      let o = off;
      for (let b = 0; b < n; b += BLOCK) {
        let amax = 0;
        let max = 0;
        for (let i = 0; i < BLOCK; i++) {
          const v = src[b + i];
          if (Math.abs(v) > amax) {
            amax = Math.abs(v);
            max = v;
          }
        }
        const dh = floatToHalf(max / -8);
        const d = halfToFloat(dh);
        const id = d ? 1 / d : 0;
        dv.setUint16(o, dh, true);
        for (let j = 0; j < BLOCK / 2; j++) {
          const q0 = Math.min(15, Math.max(0, Math.trunc(src[b + j] * id + 8.5)));
          const q1 = Math.min(15, Math.max(0, Math.trunc(src[b + j + 16] * id + 8.5)));
          dst[o + 2 + j] = q0 | (q1 << 4);
        }
        o += 18;
      }
      return o - off;
    }
    default:
      throw new RangeError(`unsupported ggml type ${type}`);
  }
}

const utf8 = new TextEncoder();

class ByteSink {
  #chunks = [];
  size = 0;
  push(b) {
    this.#chunks.push(b);
    this.size += b.length;
  }
  #num(bytes, set) {
    const b = new Uint8Array(bytes);
    set(new DataView(b.buffer));
    this.push(b);
  }
  u32(v) {
    this.#num(4, (d) => d.setUint32(0, v >>> 0, true));
  }
  u64(v) {
    this.#num(8, (d) => d.setBigUint64(0, BigInt(v), true));
  }
  str(s) {
    const b = utf8.encode(s);
    this.u64(b.length);
    this.push(b);
  }
  scalar(t, v) {
    switch (t) {
      case GgufValueType.UINT8:
        this.#num(1, (d) => d.setUint8(0, Number(v)));
        break;
      case GgufValueType.INT8:
        this.#num(1, (d) => d.setInt8(0, Number(v)));
        break;
      case GgufValueType.UINT16:
        this.#num(2, (d) => d.setUint16(0, Number(v), true));
        break;
      case GgufValueType.INT16:
        this.#num(2, (d) => d.setInt16(0, Number(v), true));
        break;
      case GgufValueType.UINT32:
        this.#num(4, (d) => d.setUint32(0, Number(v), true));
        break;
      case GgufValueType.INT32:
        this.#num(4, (d) => d.setInt32(0, Number(v), true));
        break;
      case GgufValueType.FLOAT32:
        this.#num(4, (d) => d.setFloat32(0, Number(v), true));
        break;
      case GgufValueType.BOOL:
        this.#num(1, (d) => d.setUint8(0, v ? 1 : 0));
        break;
      case GgufValueType.STRING:
        this.str(String(v));
        break;
      case GgufValueType.UINT64:
        this.#num(8, (d) => d.setBigUint64(0, BigInt(v), true));
        break;
      case GgufValueType.INT64:
        this.#num(8, (d) => d.setBigInt64(0, BigInt(v), true));
        break;
      case GgufValueType.FLOAT64:
        this.#num(8, (d) => d.setFloat64(0, Number(v), true));
        break;
      default:
        throw new RangeError(`bad GGUF value type ${t}`);
    }
  }
  concat() {
    const out = new Uint8Array(this.size);
    let o = 0;
    for (const c of this.#chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}

/**
 * Writes a GGUF file; returns its size in bytes.
 * @param {string} file
 * @param {Map<string, GgufValue> | Record<string, GgufValue>} kv metadata
 * @param {GgufTensor[]} tensors
 * @param {{ alignment?: number, chunkElements?: number, onProgress?: (bytesWritten: number, totalBytes: number) => void }} [options]
 *   chunkElements: elements produced per fill() call (memory bound for big tensors)
 */
export function writeGguf(file, kv, tensors, options = {}) {
  const alignment = options.alignment ?? 32;
  const entries = kv instanceof Map ? [...kv.entries()] : Object.entries(kv);
  const head = new ByteSink();
  head.push(utf8.encode('GGUF'));
  head.u32(3);
  head.u64(tensors.length);
  head.u64(entries.length);
  for (const [key, v] of entries) {
    head.str(key);
    head.u32(v.type);
    if (v.type === GgufValueType.ARRAY) {
      head.u32(v.itemType);
      head.u64(v.value.length);
      for (const item of v.value) head.scalar(v.itemType, item);
    } else {
      head.scalar(v.type, v.value);
    }
  }
  const align = (x) => Math.ceil(x / alignment) * alignment;
  let offset = 0;
  const sizes = [];
  for (const t of tensors) {
    head.str(t.name);
    head.u32(t.ne.length);
    for (const d of t.ne) head.u64(d);
    head.u32(t.type);
    head.u64(offset);
    const sz = tensorByteSize(t.type, t.ne);
    sizes.push(sz);
    offset = align(offset + sz);
  }
  const header = head.concat();
  const dataStart = align(header.length);
  const total = dataStart + offset;
  const fd = fs.openSync(file, 'w');
  try {
    let pos = 0;
    const write = (b) => {
      fs.writeSync(fd, b, 0, b.length, pos);
      pos += b.length;
    };
    write(header);
    write(new Uint8Array(dataStart - header.length));
    const chunkElems = Math.max(BLOCK, Math.floor((options.chunkElements ?? 1 << 20) / BLOCK) * BLOCK);
    const vals = new Float32Array(chunkElems);
    const out = new Uint8Array(chunkElems * 4);
    for (let k = 0; k < tensors.length; k++) {
      const t = tensors[k];
      const n = t.ne.reduce((a, b) => a * b, 1);
      let written = 0;
      for (let start = 0; start < n; start += chunkElems) {
        const cnt = Math.min(chunkElems, n - start);
        const view = vals.subarray(0, cnt);
        t.fill(view, start);
        const nb = encodeValues(t.type, view, out, 0);
        write(out.subarray(0, nb));
        written += nb;
      }
      if (written !== sizes[k]) throw new Error(`internal: tensor ${t.name} wrote ${written} of ${sizes[k]} bytes`);
      const pad = align(pos - dataStart) - (pos - dataStart);
      if (pad) write(new Uint8Array(pad));
      options.onProgress?.(pos, total);
    }
    if (pos !== total) throw new Error(`internal: wrote ${pos} of ${total} bytes`);
  } finally {
    fs.closeSync(fd);
  }
  return total;
}

/** Deterministic PRNG (mulberry32) for reproducible random weights. */
export function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fill: uniform values in [-scale, scale) from a seeded PRNG. */
export function uniformFill(seed, scale) {
  const rnd = mulberry32(seed);
  return (out) => {
    for (let i = 0; i < out.length; i++) out[i] = (rnd() * 2 - 1) * scale;
  };
}

/** Fill: a constant. */
export function constantFill(value) {
  return (out) => {
    out.fill(value);
  };
}
