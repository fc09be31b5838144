import test from 'ava';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { readSafetensors } from '../dist/lib/io/safetensors.js';
import { colorFix, adainColorFixFloat, waveletColorFixFloat, chwToU8Truncate, toTensorCHW, torchSumF32 } from '../dist/lib/colorfix.js';

const FIX = fileURLToPath(new URL('./fixtures/', import.meta.url));
const fx = readSafetensors(join(FIX, 'colorfix.safetensors'));
const T = (k) => fx.tensors.get(k);
const [H, W] = T('target_u8').shape;
const target = { data: T('target_u8').data, width: W, height: H };
const source = { data: T('source_u8').data, width: W, height: H };

function err(a, b) {
  let abs = 0,
    neq = 0;
  for (let i = 0; i < b.length; i++) {
    abs = Math.max(abs, Math.abs(a[i] - b[i]));
    if (a[i] !== b[i]) neq++;
  }
  return { abs, neq };
}

for (const [kind, fn] of [
  ['adain', adainColorFixFloat],
  ['wavelet', waveletColorFixFloat],
]) {
  test(`${kind}: float result matches ${kind}_float32 (and float64 within 1e-6), uint8 matches ${kind}_u8`, (t) => {
    const r = fn(target, source);
    t.is(r.length, 3 * H * W);
    const e32 = err(r, T(`${kind}_float32`).data);
    const e64 = err(r, T(`${kind}_float64`).data);
    t.true(e32.abs <= 1e-6, `float32 max abs ${e32.abs}`);
    t.true(e64.abs <= 1e-6, `float64 max abs ${e64.abs}`);
    const u8 = colorFix(kind, target, source);
    const ref = T(`${kind}_u8`).data;
    let diff = 0,
      maxd = 0;
    for (let i = 0; i < ref.length; i++)
      if (u8[i] !== ref[i]) {
        diff++;
        maxd = Math.max(maxd, Math.abs(u8[i] - ref[i]));
      }
    t.log(
      `vs float32: max ${e32.abs.toExponential(2)} (${e32.neq} of ${r.length} differ); vs float64: ${e64.abs.toExponential(2)}; uint8: ${diff} differ (max ${maxd})`,
    );
    t.is(diff, 0);
  });
}

test('AdaIN works with a source of another size; wavelet requires equal sizes', (t) => {
  const small = { data: source.data.subarray(0, 10 * 7 * 3), width: 7, height: 10 };
  const out = colorFix('adain', target, small);
  t.is(out.length, target.data.length);
  t.throws(() => colorFix('wavelet', target, small), { message: /sizes must match/, code: 'ERR_SHAPE_MISMATCH' });
});

test('none returns a copy; argument validation', (t) => {
  const out = colorFix('none', target, source);
  t.deepEqual(out, target.data);
  t.not(out, target.data);
  t.throws(() => colorFix('hist', target, source), { message: /unknown kind "hist"/ });
  t.throws(() => colorFix('adain', { data: new Uint8Array(5), width: 2, height: 2 }, source), { message: /has 5 bytes, expected 2×2×3 = 12/ });
  t.throws(() => colorFix('adain', { data: [1, 2, 3], width: 1, height: 1 }, source), { message: /must be \{data: Uint8Array/ });
});

test('ToTensor / ToPILImage conversions (truncating, clamped)', (t) => {
  const img = { data: Uint8Array.from([0, 128, 255, 1, 2, 3]), width: 2, height: 1 };
  const chw = toTensorCHW(img);
  t.deepEqual(
    Array.from(chw),
    [0, 1, 128, 2, 255, 3].map((v) => Math.fround(v / 255)),
  );
  t.deepEqual(chwToU8Truncate(chw, 2, 1), img.data);
  // truncation, clamping, NaN → 0
  const u = chwToU8Truncate(Float32Array.from([0.9999, -0.5, 2, NaN, 0.5, 0.00392]), 2, 1);
  t.deepEqual(Array.from(u), [254, 255, 127, 0, 0, 0]);
});

test('torchSumF32 is close to the exact sum for assorted lengths', (t) => {
  for (const n of [0, 1, 7, 8, 9, 31, 32, 33, 100, 2240, 70000]) {
    const x = Float32Array.from({ length: n }, (_, i) => Math.fround(((i * 7919) % 1000) / 997));
    const exact = x.reduce((s, v) => s + v, 0);
    const got = torchSumF32(x, 0, n);
    t.true(Math.abs(got - exact) <= 1e-6 * Math.max(1, exact), `n=${n}: ${got} vs ${exact}`);
  }
});
