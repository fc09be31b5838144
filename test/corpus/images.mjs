// Hostile images, generated at test time (nothing big is committed). Each generator returns the bytes
// of one file; `imageCases` lists them with the error code the library must give (README "Error codes").
import { deflateSync, crc32 } from 'node:zlib';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { fixtures } from '../helpers/fixtures.mjs';

const good = (name) => readFileSync(path.join(fixtures, 'images', name));

function chunk(type, data = Buffer.alloc(0)) {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])) >>> 0, 0);
  return Buffer.concat([head, data, crc]);
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** A PNG with the given header and raw (filtered) scanlines. */
export function png(width, height, { bitDepth = 8, colorType = 2, raw = Buffer.alloc(1) } = {}) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = bitDepth;
  ihdr[9] = colorType;
  return Buffer.concat([PNG_SIGNATURE, chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND')]);
}

/** A PNG header declaring width x height with almost no data behind it. */
export const pngHeader = (width, height) => png(width, height);

/** A decompression bomb: a 1-bit grey PNG of side x side whose zero rows compress ~1000:1 (10000: 12 KB file, 300 MB decoded). */
export function pngBomb(side = 10000) {
  const row = Math.ceil(side / 8) + 1;
  return png(side, side, { bitDepth: 1, colorType: 0, raw: Buffer.alloc(row * side) });
}

/** A real small JPEG whose SOF0 is patched to declare width x height. */
export async function jpegDeclaring(width, height) {
  const b = Buffer.from(await sharp(good('coffee_32x24.png')).jpeg().toBuffer());
  for (let i = 2; i < b.length - 9; i++) {
    if (b[i] === 0xff && b[i + 1] === 0xc0) {
      b.writeUInt16BE(height, i + 5);
      b.writeUInt16BE(width, i + 7);
      return b;
    }
  }
  throw new Error('no SOF0 marker');
}

/** A baseline JPEG header (SOI, SOF0) declaring width x height, then nothing. */
export function jpegHeader(width, height) {
  const sof = Buffer.from([
    0xff,
    0xc0,
    0x00,
    0x11,
    0x08,
    height >> 8,
    height & 255,
    width >> 8,
    width & 255,
    0x03,
    0x01,
    0x22,
    0x00,
    0x02,
    0x11,
    0x01,
    0x03,
    0x11,
    0x01,
  ]);
  return Buffer.concat([Buffer.from([0xff, 0xd8]), sof, Buffer.from([0xff, 0xd9])]);
}

/** A TIFF header (little endian) declaring width x height, 8-bit RGB, with one strip of 3 bytes. */
export function tiffHeader(width, height) {
  const entries = [
    [256, 4, width],
    [257, 4, height],
    [258, 3, 8],
    [259, 3, 1],
    [262, 3, 2],
    [273, 4, 8 + 2 + 10 * 12 + 4],
    [277, 3, 3],
    [278, 4, height],
    [279, 4, 3],
    [284, 3, 1],
  ];
  const b = Buffer.alloc(8 + 2 + entries.length * 12 + 4 + 3);
  b.write('II', 0, 'latin1');
  b.writeUInt16LE(42, 2);
  b.writeUInt32LE(8, 4);
  b.writeUInt16LE(entries.length, 8);
  entries.forEach(([tag, type, value], i) => {
    const o = 10 + i * 12;
    b.writeUInt16LE(tag, o);
    b.writeUInt16LE(type, o + 2);
    b.writeUInt32LE(1, o + 4);
    if (type === 3) b.writeUInt16LE(value, o + 8);
    else b.writeUInt32LE(value, o + 8);
  });
  return b;
}

const laughs = () => {
  let dtd = '<!ENTITY a0 "lol">';
  for (let i = 1; i < 10; i++) dtd += `<!ENTITY a${i} "${`&a${i - 1};`.repeat(10)}">`;
  return Buffer.from(
    `<?xml version="1.0"?><!DOCTYPE svg [${dtd}]><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><text>&a9;</text></svg>`,
  );
};

const useBomb = () => {
  let s =
    '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="64" height="64"><defs><rect id="r0" width="1" height="1"/>';
  for (let i = 1; i < 40; i++) s += `<g id="r${i}"><use xlink:href="#r${i - 1}"/><use xlink:href="#r${i - 1}"/></g>`;
  return Buffer.from(`${s}</defs><use xlink:href="#r39"/></svg>`);
};

const strip = (width, height) => png(width, height, { raw: Buffer.alloc((width * 3 + 1) * height) });

/**
 * name: file name (its stem is unique, so a CLI batch has no output collisions); bytes(): the file (or a promise);
 * code: the error code; why: what the case is about.
 */
export const imageCases = [
  { name: 'empty.png', bytes: () => Buffer.alloc(0), code: 'ERR_IMAGE_EMPTY', why: 'zero bytes' },
  { name: 'text.png', bytes: () => Buffer.from('this is not an image\n'), code: 'ERR_IMAGE_UNREADABLE', why: 'text with an image extension' },
  {
    name: 'random.jpg',
    bytes: () => Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 2654435761) >>> 24)),
    code: 'ERR_IMAGE_UNREADABLE',
    why: 'random bytes',
  },
  { name: 'truncated-png.png', bytes: () => good('coffee_64x48.png').subarray(0, 200), code: 'ERR_IMAGE_UNREADABLE', why: 'a real PNG cut short' },
  { name: 'only-signature.png', bytes: () => PNG_SIGNATURE, code: 'ERR_IMAGE_UNREADABLE', why: 'a PNG signature and nothing else' },
  {
    name: 'bad-crc.png',
    bytes: () => {
      const b = Buffer.from(good('coffee_32x24.png'));
      b[29] ^= 0xff;
      return b;
    },
    code: 'ERR_IMAGE_UNREADABLE',
    why: 'IHDR checksum wrong',
  },
  { name: 'zero-size.png', bytes: () => pngHeader(0, 0), code: 'ERR_IMAGE_UNREADABLE', why: 'a 0x0 header' },
  { name: 'huge-declared-png.png', bytes: () => pngHeader(100000, 100000), code: 'ERR_IMAGE_TOO_LARGE', why: 'a header of 10^10 pixels, no data' },
  { name: 'bomb.png', bytes: () => pngBomb(10000), code: 'ERR_IMAGE_TOO_LARGE', why: '12 KB that decode to 300 MB' },
  { name: 'huge-declared-jpg.jpg', bytes: () => jpegDeclaring(65000, 65000), code: 'ERR_IMAGE_TOO_LARGE', why: 'a JPEG SOF of 65000x65000, no scan' },
  { name: 'truncated-jpg.jpg', bytes: () => jpegHeader(64, 64), code: 'ERR_IMAGE_UNREADABLE', why: 'a JPEG header without a scan' },
  { name: 'huge-declared-tif.tif', bytes: () => tiffHeader(200000, 200000), code: 'ERR_IMAGE_TOO_LARGE', why: 'a TIFF of 4*10^10 pixels in 3 bytes' },
  {
    name: 'truncated-webp.webp',
    bytes: () => Buffer.from('RIFF\u0024\u0000\u0000\u0000WEBPVP8 \u0018\u0000\u0000\u0000', 'latin1'),
    code: 'ERR_IMAGE_UNREADABLE',
    why: 'a WebP header cut short',
  },
  { name: 'laughs.svg', bytes: laughs, code: 'ERR_IMAGE_UNREADABLE', why: 'SVG billion laughs (entity expansion)' },
  {
    name: 'huge.svg',
    bytes: () => Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000"><rect width="100%" height="100%"/></svg>'),
    code: 'ERR_IMAGE_TOO_LARGE',
    why: 'SVG of 10^10 pixels',
  },
  {
    name: 'deep.svg',
    bytes: () => Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">${'<g>'.repeat(100000)}${'</g>'.repeat(100000)}</svg>`),
    code: 'ERR_IMAGE_UNREADABLE',
    why: 'SVG nested 100000 deep',
  },
  { name: 'use-bomb.svg', bytes: useBomb, code: 'ERR_IMAGE_UNREADABLE', why: 'SVG <use> doubling 40 times' },
  {
    name: 'strip-1000x1.png',
    bytes: () => strip(1000, 1),
    code: 'ERR_IMAGE_TOO_LARGE',
    why: 'a thin strip (aspect 1000:1; would be processed at 512000x512)',
  },
  { name: 'strip-1x1000.png', bytes: () => strip(1, 1000), code: 'ERR_IMAGE_TOO_LARGE', why: 'a thin column' },
];
