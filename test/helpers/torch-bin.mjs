// Writes a PyTorch-format state dict (.bin: zip with archive/data.pkl + archive/data/<k>) from float32
// tensors, the way torch.save lays it out (pickle protocol 2, _rebuild_tensor_v2, FloatStorage persistent
// ids, an OrderedDict of backward hooks). Lets tests check that .bin checkpoints load like safetensors.
import { writeTorchZip } from './fixtures.mjs';

const op = (c) => Buffer.from([c]);
function unicode(s) {
  const b = Buffer.from(s, 'utf8');
  const n = Buffer.alloc(4);
  n.writeUInt32LE(b.length);
  return Buffer.concat([op(0x58), n, b]);
}
function int(v) {
  if (v >= 0 && v < 256) return Buffer.from([0x4b, v]);
  const b = Buffer.alloc(5);
  b[0] = 0x4a;
  b.writeInt32LE(v, 1);
  return b;
}
const MARK = op(0x28),
  TUPLE = op(0x74),
  REDUCE = op(0x52),
  BINPERSID = op(0x51),
  NEWFALSE = op(0x89);
const global = (mod, name) => Buffer.from(`c${mod}\n${name}\n`, 'latin1');

/** tensors: Map<string, { shape: number[], data: Float32Array }> */
export function writeTorchStateDict(file, tensors) {
  const parts = [Buffer.from([0x80, 0x02]), op(0x7d), MARK];
  const storages = {};
  let k = 0;
  for (const [name, t] of tensors) {
    const key = String(k++);
    storages[key] = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    const strides = t.shape.map((_, i) => t.shape.slice(i + 1).reduce((a, b) => a * b, 1));
    parts.push(
      unicode(name),
      global('torch._utils', '_rebuild_tensor_v2'),
      MARK,
      MARK,
      unicode('storage'),
      global('torch', 'FloatStorage'),
      unicode(key),
      unicode('cpu'),
      int(t.data.length),
      TUPLE,
      BINPERSID,
      int(0),
      MARK,
      ...t.shape.map(int),
      TUPLE,
      MARK,
      ...strides.map(int),
      TUPLE,
      NEWFALSE,
      global('collections', 'OrderedDict'),
      op(0x29),
      REDUCE,
      TUPLE,
      REDUCE,
    );
  }
  parts.push(op(0x75), op(0x2e));
  writeTorchZip(file, Buffer.concat(parts), storages);
}
