// Shared fixtures of the captioner tests: random-weight LLaVA GGUF pairs written by the test-only GGUF writer
// (gguf-writer.mjs, gguf-random-llava.mjs) into a temporary folder, and small test images.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';

import { createRandomLlava } from './gguf-random-llava.mjs';

export const HIGH = 'Please provide a descriptive summary of the content of this image.';
export const LOW = 'Describe and evaluate the quality of the image.';

/** True when the captioner was deliberately disabled (XPSR_CAPTIONER=off): llava tests are skipped then. */
export const captionerDisabled = ['off', '0', 'false', 'disabled'].includes(String(process.env.XPSR_CAPTIONER ?? '').toLowerCase());

export function tempDir(prefix = 'xpsr-captioner-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

export function makeModels(dir, size = 'tiny', seed = 1234) {
  return createRandomLlava({ dir, size, seed });
}

/** A deterministic RGB gradient. */
export function testRgb(width = 40, height = 30, seed = 0) {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      data[i] = (x * 7 + seed) & 255;
      data[i + 1] = (y * 11 + seed * 3) & 255;
      data[i + 2] = ((x + y) * 5 + seed * 7) & 255;
    }
  }
  return { data, width, height };
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf) {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Packed 8-bit RGB as a PNG file's bytes (synchronous, independent of sharp: a second opinion for tests). */
export function encodePngRgb(rgb, width, height) {
  const stride = width * 3 + 1;
  const raw = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) raw.set(rgb.subarray(y * width * 3, (y + 1) * width * 3), y * stride + 1);
  const chunk = (type, data) => {
    const td = Buffer.concat([Buffer.from(type, 'latin1'), Buffer.from(data)]);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td));
    return Buffer.concat([head, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type RGB
  const png = Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)),
    chunk('IEND', new Uint8Array(0)),
  ]);
  return new Uint8Array(png.buffer, png.byteOffset, png.byteLength);
}

export function writeTestPng(file, seed = 0, width = 40, height = 30) {
  const { data } = testRgb(width, height, seed);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, encodePngRgb(data, width, height));
  return file;
}
