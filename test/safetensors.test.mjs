import test from 'ava';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  readSafetensors,
  writeSafetensors,
  serializeSafetensors,
  toFloat32,
  toNumbers,
  halfToFloat,
  bf16ToFloat,
} from '../dist/lib/io/safetensors.js';

const FIX = fileURLToPath(new URL('./fixtures/', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'xpsr-st-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

/** Builds a raw safetensors file from a header object and a data block. */
function rawFile(header, data = new Uint8Array(0), lenOverride) {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(lenOverride ?? json.length));
  return Buffer.concat([len, json, Buffer.from(data)]);
}

test('reads a fixture: dtypes, shapes, metadata', (t) => {
  const { tensors, metadata } = readSafetensors(join(FIX, 'scheduler_ddpm.safetensors'));
  t.is(metadata.profile, 'shared');
  const betas = tensors.get('betas');
  t.is(betas.dtype, 'F32');
  t.deepEqual(betas.shape, [1000]);
  t.true(betas.data instanceof Float32Array);
  t.is(betas.data.length, 1000);
  const ts = tensors.get('timesteps_4');
  t.is(ts.dtype, 'I64');
  t.true(ts.data instanceof BigInt64Array);
  t.deepEqual(toNumbers(ts), [751, 501, 251, 1]);
  const c = readSafetensors(join(FIX, 'colorfix.safetensors'));
  const u8 = c.tensors.get('target_u8');
  t.is(u8.dtype, 'U8');
  t.deepEqual(u8.shape, [40, 56, 3]);
  t.true(u8.data instanceof Uint8Array);
});

test('reads from a Buffer identically to a path (and copies data out of unaligned buffers)', (t) => {
  const path = join(FIX, 'scheduler_unipc_multistep.safetensors');
  const a = readSafetensors(path);
  const bytes = readFileSync(path);
  const shifted = new Uint8Array(bytes.length + 3).subarray(3); // deliberately misaligned view
  shifted.set(bytes);
  const b = readSafetensors(shifted, 'unipc-buffer');
  t.deepEqual([...b.tensors.keys()], [...a.tensors.keys()]);
  for (const [k, v] of a.tensors) t.deepEqual(b.tensors.get(k).data, v.data, k);
  t.deepEqual(b.metadata, a.metadata);
});

test('round trip of every writable dtype with metadata', (t) => {
  const tensors = new Map([
    ['f32', { dtype: 'F32', shape: [2, 3], data: Float32Array.from([1, -2, 3.5, 1e-30, Infinity, NaN]) }],
    ['f64', { dtype: 'F64', shape: [2], data: Float64Array.from([Math.PI, -0]) }],
    ['i64', { dtype: 'I64', shape: [3], data: BigInt64Array.from([-1n, 2n ** 62n, 0n]) }],
    ['i32', { dtype: 'I32', shape: [1], data: Int32Array.from([-7]) }],
    ['u8', { dtype: 'U8', shape: [1, 1, 3], data: Uint8Array.from([0, 128, 255]) }],
    ['f16', { dtype: 'F16', shape: [3], data: Uint16Array.from([0x3c00, 0xc000, 0x7bff]) }],
    ['bf16', { dtype: 'BF16', shape: [1], data: Uint16Array.from([0x3fc0]) }],
    ['scalar', { dtype: 'F32', shape: [], data: Float32Array.from([42]) }],
    ['empty', { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) }],
  ]);
  const p = join(tmp, 'rt.safetensors');
  writeSafetensors(p, tensors, { kind: 'test', note: 'héllo' });
  const raw = readFileSync(p);
  t.is(Number(raw.readBigUInt64LE(0)) % 8, 0, 'header padded to 8 bytes');
  const r = readSafetensors(p);
  t.deepEqual(r.metadata, { kind: 'test', note: 'héllo' });
  t.deepEqual([...r.tensors.keys()], [...tensors.keys()]);
  for (const [k, v] of tensors) {
    const got = r.tensors.get(k);
    t.is(got.dtype, v.dtype, k);
    t.deepEqual(got.shape, v.shape, k);
    t.deepEqual(got.data, v.data, k);
  }
  t.deepEqual(Array.from(toFloat32(r.tensors.get('f16'))), [1, -2, 65504]);
  t.deepEqual(Array.from(toFloat32(r.tensors.get('bf16'))), [1.5]);
  t.deepEqual(Array.from(toFloat32(r.tensors.get('i64'))), [-1, 2 ** 62, 0]);
  t.is(toFloat32(r.tensors.get('f64'))[0], Math.fround(Math.PI));
  const f32 = r.tensors.get('f32');
  t.is(toFloat32(f32), f32.data, 'F32 is returned without a copy');
  // plain-object collection and in-memory serialisation
  const bytes = serializeSafetensors({ a: { dtype: 'U8', shape: [2], data: Uint8Array.from([5, 6]) } });
  t.deepEqual(Array.from(readSafetensors(bytes).tensors.get('a').data), [5, 6]);
});

test('half / bfloat16 decoding', (t) => {
  t.is(halfToFloat(0x0001), 2 ** -24);
  t.is(halfToFloat(0x7c00), Infinity);
  t.true(Number.isNaN(halfToFloat(0x7e00)));
  t.is(halfToFloat(0x8000), -0);
  t.is(bf16ToFloat(0xbf80), -1);
});

test('writer rejects inconsistent tensors', (t) => {
  const p = join(tmp, 'bad.safetensors');
  t.throws(() => writeSafetensors(p, { a: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }), { message: /shape \[3\] does not match/ });
  t.throws(() => writeSafetensors(p, { a: { dtype: 'F32', shape: [2], data: new Float64Array(2) } }), { message: /needs a Float32Array/ });
  t.throws(() => writeSafetensors(p, { a: { dtype: 'Q4', shape: [2], data: new Float32Array(2) } }), { message: /unknown dtype/ });
  t.throws(() => writeSafetensors(p, {}, { n: 3 }), { message: /metadata\["n"\] must be a string/ });
});

test('reader validation errors name the file', (t) => {
  const cases = [
    ['short.st', Buffer.from([1, 2, 3]), /shorter than the 8-byte header length/],
    ['hugelen.st', rawFile('{}', [], 2 ** 40), /exceeds/],
    ['pastend.st', rawFile('{}', [], 500), /runs past the end of the file/],
    ['badjson.st', rawFile('{"a":'), /not valid UTF-8 JSON/],
    ['array.st', rawFile('[1,2]'), /not an object/],
    ['dtype.st', rawFile({ a: { dtype: 'X9', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)), /unknown dtype "X9"/],
    ['shape.st', rawFile({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, new Uint8Array(4)), /invalid shape/],
    ['size.st', rawFile({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, new Uint8Array(4)), /needs 8 bytes but data_offsets span 4/],
    ['outside.st', rawFile({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, new Uint8Array(4)), /outside the data block/],
    [
      'overlap.st',
      rawFile({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8)),
      /overlap/,
    ],
    ['meta.st', rawFile({ __metadata__: { a: 1 } }), /__metadata__\["a"\] is not a string/],
  ];
  for (const [name, bytes, re] of cases) {
    const p = join(tmp, name);
    writeFileSync(p, bytes);
    const e = t.throws(() => readSafetensors(p), { message: re }, name);
    t.true(e.message.startsWith(p), `${name}: message names the file`);
    t.is(e.code, 'ERR_WEIGHTS_INVALID');
  }
  const e = t.throws(() => readSafetensors(join(tmp, 'missing.safetensors')));
  t.is(e.code, 'ERR_IO');
  t.regex(e.message, /missing\.safetensors: cannot read safetensors file \(ENOENT\)/);
  t.throws(() => readSafetensors(Buffer.from('zz')), { message: /^<buffer>:/ });
});
