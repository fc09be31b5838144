// Image inputs of captioners: paths, encoded bytes or raw pixels -> bytes/pixels, content hash, MIME type.
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';

import { CaptionError } from './errors.js';
import { CaptionImage, isRawImage } from './types.js';

export type LoadedImage =
  | { kind: 'encoded'; bytes: Uint8Array; name?: string; path?: string }
  | { kind: 'raw'; rgb: Uint8Array; width: number; height: number; name?: string };

/**
 * A Node Buffer sharing `b`'s memory, typed as Uint8Array (the installed @types/node's Buffer does not type-check
 * as a Uint8Array under TypeScript 5.9). Native code that checks for a Buffer gets one.
 */
export function asBuffer(b: Uint8Array): Uint8Array {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength) as unknown as Uint8Array;
}

/** A Buffer returned by a Node API, typed as Uint8Array. */
export function u8(b: Buffer): Uint8Array {
  return b as unknown as Uint8Array;
}

/** Reads a path, wraps bytes, or converts raw pixels to packed RGB. */
export async function loadImage(image: CaptionImage, name?: string): Promise<LoadedImage> {
  if (typeof image === 'string') {
    let bytes: Uint8Array;
    try {
      bytes = u8(await fs.readFile(image));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new CaptionError(code === 'ENOENT' ? 'ERR_IMAGE_MISSING' : 'ERR_IMAGE_DECODE',
        code === 'ENOENT' ? `image not found: ${image}` : `cannot read image ${image}: ${(e as Error).message}`, { cause: e });
    }
    if (bytes.length === 0) throw new CaptionError('ERR_IMAGE_DECODE', `image is empty: ${image}`);
    return { kind: 'encoded', bytes, path: image, name: name ?? path.parse(image).name };
  }
  if (image instanceof Uint8Array) {
    if (image.length === 0) throw new CaptionError('ERR_IMAGE_DECODE', 'image is empty');
    return { kind: 'encoded', bytes: asBuffer(image), name };
  }
  if (isRawImage(image)) {
    const { width, height } = image;
    const ch = image.channels ?? 3;
    if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0 || ![1, 3, 4].includes(ch) ||
      image.data.length !== width * height * ch) {
      throw new CaptionError('ERR_INVALID_ARGUMENT', 'raw image: data must hold width*height*channels bytes (channels 1, 3 or 4)');
    }
    let rgb: Uint8Array;
    if (ch === 3) {
      rgb = asBuffer(image.data);
    } else {
      rgb = asBuffer(new Uint8Array(width * height * 3));
      for (let i = 0, n = width * height; i < n; i++) {
        if (ch === 1) rgb[i * 3] = rgb[i * 3 + 1] = rgb[i * 3 + 2] = image.data[i]!;
        else { rgb[i * 3] = image.data[i * 4]!; rgb[i * 3 + 1] = image.data[i * 4 + 1]!; rgb[i * 3 + 2] = image.data[i * 4 + 2]!; }
      }
    }
    return { kind: 'raw', rgb, width, height, name };
  }
  throw new CaptionError('ERR_INVALID_ARGUMENT', 'image must be a path, the bytes of an image file, or {data, width, height}');
}

/** SHA-256 of the image content (file bytes, or dimensions + pixels). Paths do not matter. */
export function imageContentHash(img: LoadedImage): string {
  const h = createHash('sha256');
  if (img.kind === 'encoded') h.update('enc\0').update(img.bytes);
  else h.update(`raw\0${img.width}x${img.height}\0`).update(img.rgb);
  return h.digest('hex');
}

export function sniffImageMime(b: Uint8Array): string | undefined {
  const at = (i: number) => b[i] ?? -1;
  if (at(0) === 0x89 && at(1) === 0x50 && at(2) === 0x4e && at(3) === 0x47) return 'image/png';
  if (at(0) === 0xff && at(1) === 0xd8 && at(2) === 0xff) return 'image/jpeg';
  if (at(0) === 0x47 && at(1) === 0x49 && at(2) === 0x46) return 'image/gif';
  if (at(0) === 0x42 && at(1) === 0x4d) return 'image/bmp';
  if (at(0) === 0x52 && at(1) === 0x49 && at(2) === 0x46 && at(3) === 0x46 && at(8) === 0x57 && at(9) === 0x45 && at(10) === 0x42 &&
    at(11) === 0x50) return 'image/webp';
  if ((at(0) === 0x49 && at(1) === 0x49 && at(2) === 0x2a) || (at(0) === 0x4d && at(1) === 0x4d && at(3) === 0x2a)) return 'image/tiff';
  return undefined;
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

function crc32(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Encodes packed 8-bit RGB as a PNG (for HTTP endpoints that need an image file). */
export function encodePngRgb(rgb: Uint8Array, width: number, height: number): Uint8Array {
  const stride = width * 3 + 1;
  const raw = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) raw.set(rgb.subarray(y * width * 3, (y + 1) * width * 3), y * stride + 1);
  const parts: Uint8Array[] = [new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])];
  const chunk = (type: string, data: Uint8Array) => {
    const td = new Uint8Array(4 + data.length);
    for (let i = 0; i < 4; i++) td[i] = type.charCodeAt(i);
    td.set(data, 4);
    const head = new Uint8Array(4);
    new DataView(head.buffer).setUint32(0, data.length);
    const crc = new Uint8Array(4);
    new DataView(crc.buffer).setUint32(0, crc32(td));
    parts.push(head, td, crc);
  };
  const ihdr = new Uint8Array(13);
  const dv = new DataView(ihdr.buffer);
  dv.setUint32(0, width);
  dv.setUint32(4, height);
  ihdr[8] = 8;
  ihdr[9] = 2;
  chunk('IHDR', ihdr);
  chunk('IDAT', u8(zlib.deflateSync(raw)));
  chunk('IEND', new Uint8Array(0));
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/** Decodes any format sharp reads (WebP, TIFF, AVIF, ...) to packed RGB. */
export async function decodeWithSharp(bytes: Uint8Array): Promise<{ rgb: Uint8Array; width: number; height: number }> {
  type SharpFn = typeof import('sharp');
  let sharp: SharpFn;
  try {
    const mod = (await import('sharp')) as unknown as { default?: SharpFn };
    sharp = mod.default ?? (mod as unknown as SharpFn);
  } catch (e) {
    throw new CaptionError('ERR_IMAGE_DECODE', `cannot decode the image: unsupported format and sharp is unavailable`, { cause: e });
  }
  try {
    const { data, info } = await sharp(asBuffer(bytes) as never).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`unexpected ${info.channels} channels`);
    return { rgb: u8(data), width: info.width, height: info.height };
  } catch (e) {
    throw new CaptionError('ERR_IMAGE_DECODE', `cannot decode the image: ${(e as Error).message}`, { cause: e });
  }
}
