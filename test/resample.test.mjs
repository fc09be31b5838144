import test from 'ava';
import fs from 'node:fs';
import { createHash } from 'node:crypto';
import sharp from 'sharp';
import { resize, resizeRgb, precomputeCoefficients, RESAMPLE_FILTERS } from '../dist/lib/image/resample.js';

const PILLOW = new URL('./fixtures/pillow/', import.meta.url);
const IMAGES = new URL('./fixtures/images/', import.meta.url);
const manifest = JSON.parse(fs.readFileSync(new URL('manifest.json', PILLOW), 'utf8'));

const sha256 = (u8) => createHash('sha256').update(u8).digest('hex');

/** Load a fixture PNG as raw pixels: RGB (3 channels) or L (1 channel). */
async function load(url, mode) {
  let s = sharp(url.pathname).keepIccProfile(); // no ICC transform: PIL ignores profiles
  if (mode === 'L') s = s.extractChannel(0);
  const { data, info } = await s.raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data), width: info.width, height: info.height, channels: mode === 'L' ? 1 : 3 };
}

test('golden manifest is from Pillow and covers the required cases', (t) => {
  t.regex(manifest.pillow, /^\d+\.\d+/);
  const names = manifest.cases.map((c) => c.name);
  t.true(names.includes('coffee32_bicubic_x4'));
  t.true(names.includes('coffee64_bilinear_down_odd'));
  t.true(manifest.cases.length >= 20);
});

for (const c of manifest.cases) {
  test(`bit-exact vs Pillow ${manifest.pillow}: ${c.name} (${c.call})`, async (t) => {
    const src = await load(new URL(c.source, IMAGES), c.mode);
    const out = resize(src, c.size[0], c.size[1], c.filter, c.box ? { box: c.box } : {});
    t.is(out.width, c.size[0]);
    t.is(out.height, c.size[1]);
    t.is(out.channels, src.channels);
    const got = sha256(out.data);
    if (got !== c.sha256 && c.output) {
      const ref = await load(new URL(c.output, PILLOW), c.mode);
      let n = 0;
      let max = 0;
      let first = -1;
      for (let i = 0; i < ref.data.length; i++) {
        const d = Math.abs(ref.data[i] - out.data[i]);
        if (d) {
          n++;
          max = Math.max(max, d);
          if (first < 0) first = i;
        }
      }
      t.log(`${n} values differ (max ${max}), first at byte ${first}`);
    }
    t.is(got, c.sha256);
  });
}

function rng(seed) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0), s >>> 24);
}
function noise(w, h, ch = 3, seed = 1) {
  const r = rng(seed);
  const d = new Uint8Array(w * h * ch);
  for (let i = 0; i < d.length; i++) d[i] = r();
  return { data: d, width: w, height: h, channels: ch };
}

test('same size → an unchanged copy (Pillow returns im.copy())', (t) => {
  const img = noise(17, 9);
  for (const f of RESAMPLE_FILTERS) {
    const out = resize(img, 17, 9, f);
    t.deepEqual(out.data, img.data);
    t.not(out.data, img.data);
  }
});

test('a constant image stays constant for every filter, up and down, odd sizes', (t) => {
  for (const v of [0, 1, 128, 254, 255]) {
    const img = { data: new Uint8Array(13 * 11 * 3).fill(v), width: 13, height: 11, channels: 3 };
    for (const f of RESAMPLE_FILTERS) {
      for (const [w, h] of [
        [52, 44],
        [5, 3],
        [1, 1],
        [13, 40],
        [31, 11],
        [7, 29],
      ]) {
        const out = resize(img, w, h, f);
        t.true(
          out.data.every((x) => x === v),
          `${f} ${w}x${h} v=${v}`,
        );
      }
    }
  }
});

test('mirror symmetry for integer scale factors', (t) => {
  const w = 16;
  const h = 10;
  const img = noise(w, h, 3, 7);
  const flip = new Uint8Array(img.data.length);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) flip[(y * w + x) * 3 + c] = img.data[(y * w + (w - 1 - x)) * 3 + c];
  for (const f of ['bilinear', 'bicubic', 'lanczos']) {
    for (const [W, H] of [
      [64, 40],
      [8, 5],
    ]) {
      const a = resize(img, W, H, f).data;
      const b = resize({ ...img, data: flip }, W, H, f).data;
      let bad = 0;
      for (let y = 0; y < H; y++)
        for (let x = 0; x < W; x++) for (let c = 0; c < 3; c++) if (a[(y * W + x) * 3 + c] !== b[(y * W + (W - 1 - x)) * 3 + c]) bad++;
      t.is(bad, 0, `${f} ${W}x${H}`);
    }
  }
});

test('a linear ramp stays linear away from the borders (bilinear/bicubic, x4)', (t) => {
  const w = 32;
  const d = new Uint8Array(w * 4 * 3);
  for (let y = 0; y < 4; y++) for (let x = 0; x < w; x++) d.fill(x * 8, (y * w + x) * 3, (y * w + x) * 3 + 3);
  for (const f of ['bilinear', 'bicubic']) {
    const out = resize({ data: d, width: w, height: 4, channels: 3 }, w * 4, 16, f);
    for (let X = 8; X < w * 4 - 8; X++) {
      const expected = ((X + 0.5) / 4 - 0.5) * 8; // continuous position in the input
      const got = out.data[(5 * w * 4 + X) * 3];
      t.true(Math.abs(got - expected) <= 1, `${f} X=${X} got ${got} expected ${expected}`);
    }
  }
});

test('fixed-point coefficients sum to 2^22 (±rounding) and taps stay inside the image', (t) => {
  for (const f of ['box', 'bilinear', 'hamming', 'bicubic', 'lanczos']) {
    for (const [inS, outS] of [
      [32, 128],
      [64, 23],
      [100, 7],
      [5, 5],
    ]) {
      const c = precomputeCoefficients(inS, 0, inS, outS, f);
      for (let i = 0; i < outS; i++) {
        const xmin = c.bounds[2 * i];
        const n = c.bounds[2 * i + 1];
        t.true(xmin >= 0 && xmin + n <= inS);
        let s = 0;
        for (let k = 0; k < n; k++) s += c.fixed[i * c.ksize + k];
        t.true(Math.abs(s - (1 << 22)) <= c.ksize, `${f} ${inS}->${outS} i=${i} sum ${s}`);
      }
    }
  }
});

test('1-channel (L) and 4-channel buffers are resampled channel by channel', (t) => {
  const img = noise(9, 7, 4, 3);
  const out4 = resize(img, 20, 15, 'bicubic');
  for (let c = 0; c < 4; c++) {
    const plane = new Uint8Array(9 * 7);
    for (let i = 0; i < plane.length; i++) plane[i] = img.data[i * 4 + c];
    const o = resize({ data: plane, width: 9, height: 7, channels: 1 }, 20, 15, 'bicubic').data;
    for (let i = 0; i < o.length; i++) if (o[i] !== out4.data[i * 4 + c]) return t.fail(`channel ${c} pixel ${i}`);
  }
  t.pass();
});

test('resizeRgb convenience matches resize', (t) => {
  const img = noise(10, 6);
  t.deepEqual(resizeRgb(img.data, 10, 6, 40, 24), resize(img, 40, 24, 'bicubic').data);
});

test('invalid arguments are rejected with clear errors', (t) => {
  const img = noise(4, 4);
  t.is(t.throws(() => resize(img, 0, 4)).code, 'ERR_INVALID_OPTION');
  t.is(t.throws(() => resize(img, 4.5, 4)).code, 'ERR_INVALID_OPTION');
  t.is(t.throws(() => resize(img, 4, 4, 'cubic')).code, 'ERR_INVALID_OPTION');
  t.is(t.throws(() => resize({ ...img, width: 5 }, 8, 8)).code, 'ERR_INVALID_ARGUMENT');
  t.is(t.throws(() => resize(img, 8, 8, 'bicubic', { box: [0, 0, 5, 4] })).code, 'ERR_INVALID_OPTION');
  t.is(t.throws(() => resize(img, 8, 8, 'bicubic', { box: [-1, 0, 4, 4] })).code, 'ERR_INVALID_OPTION');
});

test('speed: 128x128 → 512x512 and 512x512 → 2048x2048 bicubic', (t) => {
  for (const [s, S, reps] of [
    [128, 512, 10],
    [512, 2048, 2],
  ]) {
    const img = noise(s, s, 3, 5);
    resize(img, S, S, 'bicubic');
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) resize(img, S, S, 'bicubic');
    const ms = (performance.now() - t0) / reps;
    t.log(`${s}x${s} → ${S}x${S} bicubic: ${ms.toFixed(1)} ms`);
    t.true(ms < 5000);
  }
});
