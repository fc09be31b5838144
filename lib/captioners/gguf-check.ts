// Explains why llama.cpp refused a GGUF file: walks the header (metadata + tensor table) and checks that
// the tensor data lies inside the file. Used only after a load failed, to make the error message precise.
import fs from 'node:fs';

// bytes per block / elements per block of ggml types (those whose layout is certain)
const TYPE_SIZES: Record<number, [number, number]> = {
  0: [4, 1],
  1: [2, 1],
  2: [18, 32],
  3: [20, 32],
  6: [22, 32],
  7: [24, 32],
  8: [34, 32],
  9: [36, 32],
  10: [84, 256],
  11: [110, 256],
  12: [144, 256],
  13: [176, 256],
  14: [210, 256],
  15: [292, 256],
  24: [1, 1],
  25: [2, 1],
  26: [4, 1],
  27: [8, 1],
  28: [8, 1],
  30: [2, 1],
};
const SCALAR_SIZES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

class Reader {
  pos = 0;
  private buf = new Uint8Array(0);
  private bufStart = 0;
  constructor(
    private fd: number,
    readonly size: number,
  ) {}
  private need(n: number): DataView {
    if (this.pos + n > this.size) throw new RangeError(`header ends early (needs byte ${this.pos + n}, file has ${this.size})`);
    if (this.pos < this.bufStart || this.pos + n > this.bufStart + this.buf.length) {
      const len = Math.min(Math.max(n, 1 << 20), this.size - this.pos);
      this.buf = new Uint8Array(len);
      fs.readSync(this.fd, this.buf, 0, len, this.pos);
      this.bufStart = this.pos;
    }
    const off = this.pos - this.bufStart;
    this.pos += n;
    return new DataView(this.buf.buffer, this.buf.byteOffset + off, n);
  }
  u32(): number {
    return this.need(4).getUint32(0, true);
  }
  u64(): number {
    return Number(this.need(8).getBigUint64(0, true));
  }
  skip(n: number): void {
    if (this.pos + n > this.size) throw new RangeError(`header ends early (needs byte ${this.pos + n}, file has ${this.size})`);
    this.pos += n;
  }
  str(): string {
    const n = this.u64();
    if (n > 1 << 24) throw new RangeError(`implausible string length ${n} at byte ${this.pos - 8}`);
    const v = this.need(n);
    return new TextDecoder().decode(new Uint8Array(v.buffer, v.byteOffset, n));
  }
}

/** A sentence saying what is wrong with the GGUF file, or undefined if its structure looks fine. */
export function describeGgufProblem(file: string): string | undefined {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    return `cannot open it: ${(e as Error).message}`;
  }
  try {
    const size = fs.fstatSync(fd).size;
    const r = new Reader(fd, size);
    const magic = r.u32();
    if (magic !== 0x46554747) return 'it is not a GGUF file (bad magic)';
    const version = r.u32();
    if (version < 2 || version > 3) return `unsupported GGUF version ${version}`;
    const nTensors = r.u64();
    const nKv = r.u64();
    if (nTensors > 1e6 || nKv > 1e6) return `corrupt header (${nTensors} tensors, ${nKv} metadata entries)`;
    let alignment = 32;
    const skipValue = (type: number, key: string): void => {
      if (type === 8) {
        r.str();
        return;
      }
      if (type === 9) {
        const itemType = r.u32();
        const count = r.u64();
        if (itemType === 8) {
          for (let i = 0; i < count; i++) r.str();
          return;
        }
        const s = SCALAR_SIZES[itemType];
        if (s === undefined) throw new RangeError(`metadata '${key}' has an unknown array item type ${itemType}`);
        r.skip(s * count);
        return;
      }
      const s = SCALAR_SIZES[type];
      if (s === undefined) throw new RangeError(`metadata '${key}' has an unknown value type ${type}`);
      if (key === 'general.alignment' && type === 4) {
        alignment = r.u32();
        return;
      }
      r.skip(s);
    };
    for (let i = 0; i < nKv; i++) {
      const key = r.str();
      skipValue(r.u32(), key);
    }
    const tensors: Array<{ name: string; offset: number; bytes?: number }> = [];
    for (let i = 0; i < nTensors; i++) {
      const name = r.str();
      const nd = r.u32();
      if (nd > 8) return `tensor '${name}' has ${nd} dimensions (corrupt tensor table)`;
      let n = 1;
      for (let k = 0; k < nd; k++) n *= r.u64();
      const type = r.u32();
      const offset = r.u64();
      const ts = TYPE_SIZES[type];
      tensors.push({ name, offset, bytes: ts ? (n / ts[1]) * ts[0] : undefined });
    }
    const dataStart = Math.ceil(r.pos / alignment) * alignment;
    for (const t of tensors) {
      const end = dataStart + t.offset + (t.bytes ?? 0);
      if (end > size) {
        return `it is truncated or corrupt: tensor '${t.name}' needs bytes up to ${end} but the file has ${size}`;
      }
    }
    return undefined;
  } catch (e) {
    return `its header is corrupt or truncated: ${(e as Error).message}`;
  } finally {
    fs.closeSync(fd);
  }
}
