import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import sharp from 'sharp';
import {
  decodeImage,
  encodeImage,
  writeImage,
  toSharp,
  formatFromPath,
  resolveOutputFormat,
  DEFAULT_MAX_INPUT_PIXELS,
} from '../dist/lib/image/io.js';
import { XpsrError, invalidOption } from '../dist/lib/errors.js';

const IMAGES = new URL('./fixtures/images/', import.meta.url);
const fixture = (name) => new URL(name, IMAGES).pathname;

// ---- helpers --------------------------------------------------------------------------------------

const crcTable = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const x of buf) c = crcTable[(c ^ x) & 255] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function pngChunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}
/** A hand-made 16-bit PNG (colour type 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA) with exactly these samples. */
function png16(w, h, colorType, samples) {
  const ch = { 0: 1, 2: 3, 4: 2, 6: 4 }[colorType];
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 16;
  ihdr[9] = colorType;
  const rows = [];
  for (let y = 0; y < h; y++) {
    const r = Buffer.alloc(1 + w * ch * 2);
    for (let i = 0; i < w * ch; i++) r.writeUInt16BE(samples[y * w * ch + i], 1 + i * 2);
    rows.push(r);
  }
  return Buffer.concat([
    Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', zlib.deflateSync(Buffer.concat(rows))),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** W x H RGB test pattern where every pixel differs: r = 40x+?, g = 30y, b = const. */
function pattern(w, h) {
  const rgb = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      rgb[i] = (x * 255) / (w - 1);
      rgb[i + 1] = (y * 255) / (h - 1);
      rgb[i + 2] = 77;
    }
  return rgb;
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xpsr-io-'));
test.after.always(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function rejectsWith(t, promise, code, ...patterns) {
  const e = await t.throwsAsync(promise);
  t.true(e instanceof XpsrError, `expected XpsrError, got ${e?.constructor?.name}: ${e?.message}`);
  t.is(e.code, code, e.message);
  for (const p of patterns) t.regex(e.message, p);
  return e;
}

// ---- errors module --------------------------------------------------------------------------------

test('invalidOption builds the documented message', (t) => {
  const e = invalidOption('steps', 'an integer between 1 and 1000', 0);
  t.true(e instanceof Error);
  t.is(e.code, 'ERR_INVALID_OPTION');
  t.is(e.message, "Invalid option 'steps': expected an integer between 1 and 1000, got 0 (number)");
  t.is(invalidOption('format', 'png', 'gif').message, `Invalid option 'format': expected png, got "gif" (string)`);
});

// ---- decoding: good inputs -----------------------------------------------------------------------

test('decodes a PNG from a path, a Buffer and a sharp instance identically', async (t) => {
  const p = fixture('coffee_32x24.png');
  const a = await decodeImage(p);
  const b = await decodeImage(fs.readFileSync(p));
  const c = await decodeImage(sharp(p));
  const u = await decodeImage(new Uint8Array(fs.readFileSync(p)));
  t.deepEqual(u.rgb, a.rgb);
  t.is(a.width, 32);
  t.is(a.height, 24);
  t.is(a.format, 'png');
  t.is(a.bitDepth, 8);
  t.false(a.hadAlpha);
  t.is(a.alpha, undefined);
  t.is(a.rgb.length, 32 * 24 * 3);
  t.deepEqual(b.rgb, a.rgb);
  t.deepEqual(c.rgb, a.rgb);
  const raw = await sharp(p).raw().toBuffer();
  t.deepEqual(Buffer.from(a.rgb), raw);
});

test('a sharp instance passed in is not modified', async (t) => {
  const s = sharp(fixture('coffee_32x24.png'));
  await decodeImage(s);
  const { info } = await s.raw().toBuffer({ resolveWithObject: true });
  t.is(info.width, 32);
});

test('16-bit RGB PNG → 8-bit by taking the high byte (like libvips and PIL)', async (t) => {
  const vals = [65535, 32768, 0, 256, 257, 4660, 65280, 65407, 65408, 127, 128, 383];
  const d = await decodeImage(png16(4, 1, 2, vals));
  t.is(d.bitDepth, 16);
  t.is(d.width, 4);
  t.deepEqual(
    Array.from(d.rgb),
    vals.map((v) => v >> 8),
  );
});

test('16-bit grey+alpha PNG → RGB + alpha, 8-bit', async (t) => {
  const d = await decodeImage(png16(2, 1, 4, [40000, 65535, 1000, 32768]));
  t.true(d.hadAlpha);
  t.is(d.bitDepth, 16);
  t.deepEqual(Array.from(d.rgb), [156, 156, 156, 3, 3, 3]);
  t.deepEqual(Array.from(d.alpha), [255, 128]);
});

test('grayscale PNG → RGB with equal channels', async (t) => {
  const g = await sharp(Buffer.from([0, 50, 100, 150, 200, 255]), { raw: { width: 3, height: 2, channels: 1 } })
    .png()
    .toBuffer();
  const d = await decodeImage(g);
  t.is(d.width, 3);
  t.is(d.height, 2);
  t.false(d.hadAlpha);
  t.deepEqual(Array.from(d.rgb), [0, 0, 0, 50, 50, 50, 100, 100, 100, 150, 150, 150, 200, 200, 200, 255, 255, 255]);
});

test('RGBA PNG → RGB plane + alpha plane (not premultiplied)', async (t) => {
  const rgba = await sharp(Buffer.from([10, 20, 30, 40, 50, 60, 70, 0, 90, 100, 110, 255]), { raw: { width: 3, height: 1, channels: 4 } })
    .png()
    .toBuffer();
  const d = await decodeImage(rgba);
  t.true(d.hadAlpha);
  t.deepEqual(Array.from(d.rgb), [10, 20, 30, 50, 60, 70, 90, 100, 110]);
  t.deepEqual(Array.from(d.alpha), [40, 0, 255]);
});

test('CMYK JPEG → sRGB', async (t) => {
  const src = fixture('chelsea_100x75.png');
  const cmyk = await sharp(src).toColourspace('cmyk').jpeg({ quality: 95 }).toBuffer();
  t.is((await sharp(cmyk).metadata()).space, 'cmyk');
  const d = await decodeImage(cmyk);
  t.is(d.format, 'jpeg');
  t.is(d.width, 100);
  t.is(d.height, 75);
  t.is(d.rgb.length, 100 * 75 * 3);
  // the colours survive the CMYK round trip roughly (mean abs difference, not exact)
  const ref = await decodeImage(src);
  let sum = 0;
  for (let i = 0; i < ref.rgb.length; i++) sum += Math.abs(ref.rgb[i] - d.rgb[i]);
  t.true(sum / ref.rgb.length < 20, `mean abs diff ${sum / ref.rgb.length}`);
});

test('EXIF orientation is applied (orientation 6 = rotate 90° clockwise)', async (t) => {
  const w = 6;
  const h = 4;
  const rgb = pattern(w, h);
  const jpg = await sharp(Buffer.from(rgb), { raw: { width: w, height: h, channels: 3 } })
    .jpeg({ quality: 100, chromaSubsampling: '4:4:4' })
    .withMetadata({ orientation: 6 })
    .toBuffer();
  t.is((await sharp(jpg).metadata()).orientation, 6);
  const d = await decodeImage(jpg);
  t.is(d.orientation, 6);
  t.is(d.width, h);
  t.is(d.height, w);
  // rotated 90° clockwise: output (x', y') = input (x = y', y = h - 1 - x')
  const at = (img, W, x, y, c) => img[(y * W + x) * 3 + c];
  const plain = await decodeImage(
    await sharp(Buffer.from(rgb), { raw: { width: w, height: h, channels: 3 } })
      .jpeg({ quality: 100, chromaSubsampling: '4:4:4' })
      .toBuffer(),
  );
  let maxd = 0;
  for (let yp = 0; yp < w; yp++)
    for (let xp = 0; xp < h; xp++)
      for (let c = 0; c < 3; c++) maxd = Math.max(maxd, Math.abs(at(d.rgb, h, xp, yp, c) - at(plain.rgb, w, yp, h - 1 - xp, c)));
  t.true(maxd <= 2, `max diff ${maxd}`);
});

async function twoFrames(format) {
  // frame 0 red, frame 1 blue, stacked vertically with pageHeight
  const w = 8;
  const h = 6;
  const buf = Buffer.alloc(w * h * 2 * 3);
  for (let i = 0; i < w * h; i++) buf[i * 3] = 255;
  for (let i = w * h; i < 2 * w * h; i++) buf[i * 3 + 2] = 255;
  const s = sharp(buf, { raw: { width: w, height: h * 2, channels: 3, pageHeight: h } });
  return format === 'gif' ? s.gif({ delay: [100, 100] }).toBuffer() : s.webp({ lossless: true, delay: [100, 100] }).toBuffer();
}

for (const format of ['gif', 'webp']) {
  test(`animated ${format}: first frame only`, async (t) => {
    const anim = await twoFrames(format);
    t.is((await sharp(anim).metadata()).pages, 2);
    const d = await decodeImage(anim);
    t.is(d.format, format);
    t.is(d.pages, 2);
    t.is(d.width, 8);
    t.is(d.height, 6);
    for (let i = 0; i < 8 * 6; i++) {
      t.true(d.rgb[i * 3] > 240 && d.rgb[i * 3 + 2] < 15, `pixel ${i} is not red: ${d.rgb.slice(i * 3, i * 3 + 3)}`);
    }
  });
}

// ---- decoding: bad inputs ------------------------------------------------------------------------

test('zero-length buffer → ERR_IMAGE_EMPTY', async (t) => {
  await rejectsWith(t, decodeImage(Buffer.alloc(0)), 'ERR_IMAGE_EMPTY', /empty/, /0 bytes/);
  await rejectsWith(t, decodeImage(new Uint8Array(0)), 'ERR_IMAGE_EMPTY');
});

test('zero-length file → ERR_IMAGE_EMPTY naming the file', async (t) => {
  const f = path.join(tmp, 'empty.png');
  fs.writeFileSync(f, '');
  await rejectsWith(t, decodeImage(f), 'ERR_IMAGE_EMPTY', /empty\.png/);
});

test('missing file / directory → ERR_IMAGE_UNREADABLE naming it', async (t) => {
  await rejectsWith(t, decodeImage(path.join(tmp, 'nope.png')), 'ERR_IMAGE_UNREADABLE', /nope\.png/, /not found/);
  await rejectsWith(t, decodeImage(tmp), 'ERR_IMAGE_UNREADABLE', /directory/);
});

test('a text file → ERR_IMAGE_UNREADABLE', async (t) => {
  const f = path.join(tmp, 'notes.txt');
  fs.writeFileSync(f, 'This is not an image.\nJust some text.\n');
  await rejectsWith(t, decodeImage(f), 'ERR_IMAGE_UNREADABLE', /notes\.txt/, /not an image/);
  await rejectsWith(t, decodeImage(Buffer.from('GIF89a but not really')), 'ERR_IMAGE_UNREADABLE', /buffer of 21 bytes/);
});

test('random / corrupt bytes → ERR_IMAGE_UNREADABLE', async (t) => {
  let s = 12345;
  const junk = Buffer.alloc(4096, 0).map(() => ((s = (s * 1103515245 + 12345) >>> 0), s >>> 24));
  await rejectsWith(t, decodeImage(junk), 'ERR_IMAGE_UNREADABLE');
  // valid PNG signature, garbage IHDR/IDAT
  const png = fs.readFileSync(fixture('coffee_64x48.png'));
  const bad = Buffer.from(png);
  for (let i = 16; i < bad.length; i++) bad[i] ^= 0xa5;
  await rejectsWith(t, decodeImage(bad), 'ERR_IMAGE_UNREADABLE');
  // PNG with corrupt compressed data
  const bad2 = Buffer.from(png);
  for (let i = 200; i < 1200; i++) bad2[i] ^= 0x5a;
  await rejectsWith(t, decodeImage(bad2), 'ERR_IMAGE_UNREADABLE');
});

test('truncated PNG → ERR_IMAGE_UNREADABLE', async (t) => {
  const png = fs.readFileSync(fixture('chelsea_100x75.png'));
  for (const n of [8, 40, 100, png.length >> 1, png.length - 20]) {
    await rejectsWith(t, decodeImage(png.subarray(0, n)), 'ERR_IMAGE_UNREADABLE');
  }
  // all pixel data present, only the IEND chunk missing: accepted (PIL accepts it too)
  t.is((await decodeImage(png.subarray(0, png.length - 12))).width, 100);
  const f = path.join(tmp, 'truncated.png');
  fs.writeFileSync(f, png.subarray(0, png.length >> 1));
  await rejectsWith(t, decodeImage(f), 'ERR_IMAGE_UNREADABLE', /truncated\.png/, /truncated or corrupt/);
});

test('truncated JPEG → ERR_IMAGE_UNREADABLE', async (t) => {
  const jpg = await sharp(fixture('chelsea_100x75.png')).jpeg().toBuffer();
  for (const n of [2, 100, jpg.length >> 1, jpg.length - 10]) {
    await rejectsWith(t, decodeImage(jpg.subarray(0, n)), 'ERR_IMAGE_UNREADABLE');
  }
});

test('over the pixel limit → ERR_IMAGE_TOO_LARGE with the limit and the option name', async (t) => {
  const png = fs.readFileSync(fixture('chelsea_100x75.png'));
  const e = await rejectsWith(t, decodeImage(png, { maxInputPixels: 5000 }), 'ERR_IMAGE_TOO_LARGE', /5,000/, /maxInputPixels/, /100x75/);
  t.is(e.details.maxInputPixels, 5000);
  // raising the limit makes it work
  const d = await decodeImage(png, { maxInputPixels: 7500 });
  t.is(d.width, 100);
  t.is(DEFAULT_MAX_INPUT_PIXELS, 64_000_000);
});

test('default limit applies to a huge (cheap to encode) image, from its header only', async (t) => {
  // 9000 x 8000 = 72 MP single-colour PNG: the header is read, the pixels are never decoded
  const big = await sharp({ create: { width: 9000, height: 8000, channels: 3, background: '#000' } })
    .png({ compressionLevel: 9 })
    .toBuffer();
  await rejectsWith(t, decodeImage(big), 'ERR_IMAGE_TOO_LARGE', /9000x8000/, /64,000,000/, /maxInputPixels/);
});

test('invalid maxInputPixels → ERR_INVALID_OPTION', async (t) => {
  await rejectsWith(t, decodeImage(fixture('coffee_32x24.png'), { maxInputPixels: 0 }), 'ERR_INVALID_OPTION', /maxInputPixels/);
  await rejectsWith(t, decodeImage(fixture('coffee_32x24.png'), { maxInputPixels: 1.5 }), 'ERR_INVALID_OPTION');
  const d = await decodeImage(fixture('coffee_32x24.png'), { maxInputPixels: Infinity });
  t.is(d.width, 32);
});

test('not an input at all → ERR_INVALID_ARGUMENT', async (t) => {
  await rejectsWith(t, decodeImage(42), 'ERR_INVALID_ARGUMENT');
  await rejectsWith(t, decodeImage(null), 'ERR_INVALID_ARGUMENT');
});

// ---- encoding ------------------------------------------------------------------------------------

test('format from extension', (t) => {
  t.is(formatFromPath('a/b/out.png'), 'png');
  t.is(formatFromPath('OUT.JPG'), 'jpeg');
  t.is(formatFromPath('x.jpeg'), 'jpeg');
  t.is(formatFromPath('x.webp'), 'webp');
  t.is(formatFromPath('x.tif'), 'tiff');
  t.is(formatFromPath('x.tiff'), 'tiff');
  t.is(resolveOutputFormat('jpg'), 'jpeg');
  t.is(resolveOutputFormat('.png'), 'png');
  const e = t.throws(() => formatFromPath('out.bmp'));
  t.is(e.code, 'ERR_UNSUPPORTED');
  t.regex(e.message, /'\.bmp'/);
  t.regex(e.message, /\.png/);
  t.is(t.throws(() => formatFromPath('out')).code, 'ERR_UNSUPPORTED');
  t.is(t.throws(() => resolveOutputFormat('gif')).code, 'ERR_UNSUPPORTED');
});

test('encode to each format by extension and decode back', async (t) => {
  const src = await decodeImage(fixture('coffee_64x48.png'));
  const img = { rgb: src.rgb, width: src.width, height: src.height };
  for (const [file, fmt, lossless] of [
    ['o.png', 'png', true],
    ['o.tif', 'tiff', true],
    ['o.tiff', 'tiff', true],
    ['o.jpg', 'jpeg', false],
    ['o.jpeg', 'jpeg', false],
    ['o.webp', 'webp', false],
  ]) {
    const buf = await encodeImage(img, file);
    t.true(Buffer.isBuffer(buf));
    const meta = await sharp(buf).metadata();
    t.is(meta.format, fmt, file);
    const back = await decodeImage(buf);
    t.is(back.width, 64);
    t.is(back.height, 48);
    if (lossless) t.deepEqual(back.rgb, src.rgb, file);
    else {
      let sum = 0;
      for (let i = 0; i < src.rgb.length; i++) sum += Math.abs(src.rgb[i] - back.rgb[i]);
      t.true(sum / src.rgb.length < 6, `${file}: mean abs diff ${sum / src.rgb.length}`);
    }
  }
  const lossless = await encodeImage(img, 'webp', { lossless: true });
  t.deepEqual((await decodeImage(lossless)).rgb, src.rgb);
  await rejectsWith(t, encodeImage(img, 'out.gif'), 'ERR_UNSUPPORTED', /\.gif/);
  await rejectsWith(t, encodeImage(img, 'out.jpg', { quality: 0 }), 'ERR_INVALID_OPTION', /quality/);
});

test('alpha is kept by PNG/WebP/TIFF and dropped by JPEG', async (t) => {
  const img = { rgb: new Uint8Array([10, 20, 30, 40, 50, 60]), alpha: new Uint8Array([0, 200]), width: 2, height: 1 };
  for (const f of ['png', 'tiff']) {
    const d = await decodeImage(await encodeImage(img, f));
    t.true(d.hadAlpha, f);
    t.deepEqual(Array.from(d.alpha), [0, 200]);
    t.deepEqual(Array.from(d.rgb), [10, 20, 30, 40, 50, 60]);
  }
  const w = await decodeImage(await encodeImage(img, 'webp', { lossless: true }));
  t.deepEqual(Array.from(w.alpha), [0, 200]);
  const j = await decodeImage(await encodeImage(img, 'jpg'));
  t.false(j.hadAlpha);
});

test('writeImage writes the file; toSharp gives a usable instance; bad pixel buffers are rejected', async (t) => {
  const rgb = pattern(5, 4);
  const f = path.join(tmp, 'out.png');
  await writeImage({ rgb, width: 5, height: 4 }, f);
  t.deepEqual((await decodeImage(f)).rgb, rgb);
  const meta = await toSharp({ rgb, width: 5, height: 4 }).metadata();
  t.is(meta.width, 5);
  t.is(meta.channels, 3);
  t.is(t.throws(() => toSharp({ rgb, width: 6, height: 4 })).code, 'ERR_INVALID_ARGUMENT');
  await rejectsWith(t, writeImage({ rgb, width: 5, height: 4 }, path.join(tmp, 'x.xyz')), 'ERR_UNSUPPORTED');
});

// ---- parity with PIL's Image.open(f).convert('RGB') ---------------------------------------------

test('decoded PNG pixels equal PIL convert("RGB") (embedded ICC profiles ignored like PIL)', async (t) => {
  const { createHash } = await import('node:crypto');
  const manifest = JSON.parse(fs.readFileSync(new URL('./fixtures/pillow/manifest.json', import.meta.url), 'utf8'));
  let withIcc = 0;
  for (const [name, s] of Object.entries(manifest.sources)) {
    if (s.mode !== 'RGB') continue;
    const d = await decodeImage(fixture(name));
    t.deepEqual([d.width, d.height], s.size, name);
    t.is(createHash('sha256').update(d.rgb).digest('hex'), s.sha256, name);
    if (s.hasIccProfile) withIcc++;
  }
  t.true(withIcc > 0, 'at least one source carries an ICC profile');
  // opting in to colour management changes the pixels of the rocket crop (its profile is not a no-op)
  const plain = await decodeImage(fixture('rocket_75x100.png'));
  const managed = await decodeImage(fixture('rocket_75x100.png'), { applyIccProfile: true });
  t.notDeepEqual(managed.rgb, plain.rgb);
});
