// Images of captioners: every input (path, encoded bytes, raw pixels) is decoded once by the library's image
// decoder (lib/image) into packed 8-bit RGB. Captioners, the caption cache and `xpsr caption` share the
// decoded pixels, so one image is decoded once however many captioners look at it.
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';

import { XpsrError } from '../errors.js';
import { decodeImage, encodeImage } from '../image/io.js';
import { type CaptionImage, isRawImage, type RawImage } from './types.js';

/** Where decoded pixels came from: the encoded original is kept for captioners that send files (HTTP). */
export interface CaptionImageSource {
  /** The file path given. */
  path?: string;
  /** The encoded bytes given. */
  bytes?: Uint8Array;
  /** Container format ('png', 'jpeg', 'webp', ...) of a path or bytes. */
  format?: string;
  /** Name of the image (file stem, or options.name): used by sidecar captions and messages. */
  name?: string;
}

/** A decoded image: a RawImage of packed RGB (channels 3) plus its source. */
export class CaptionPixels implements RawImage {
  readonly channels = 3 as const;
  readonly data: Uint8Array;
  readonly width: number;
  readonly height: number;
  readonly source: CaptionImageSource;
  #hash: string | undefined;

  constructor(rgb: Uint8Array, width: number, height: number, source: CaptionImageSource = {}) {
    this.data = rgb;
    this.width = width;
    this.height = height;
    this.source = source;
  }

  /** SHA-256 of the size and pixels: the same picture as a path, bytes or raw pixels hashes alike. */
  contentHash(): string {
    this.#hash ??= createHash('sha256').update(`rgb\0${this.width}x${this.height}\0`).update(this.data).digest('hex');
    return this.#hash;
  }
}

function rawToRgb(image: RawImage): Uint8Array {
  const { width, height } = image;
  const ch = image.channels ?? 3;
  if (
    !Number.isInteger(width) ||
    !Number.isInteger(height) ||
    width <= 0 ||
    height <= 0 ||
    ![1, 3, 4].includes(ch) ||
    image.data.length !== width * height * ch
  ) {
    throw new XpsrError('ERR_INVALID_ARGUMENT', 'raw image: data must hold width*height*channels bytes (channels 1, 3 or 4)', {
      width,
      height,
      channels: ch,
      bytes: image.data.length,
    });
  }
  if (ch === 3) return image.data;
  const n = width * height;
  const rgb = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    if (ch === 1) rgb[i * 3] = rgb[i * 3 + 1] = rgb[i * 3 + 2] = image.data[i]!;
    else {
      rgb[i * 3] = image.data[i * 4]!;
      rgb[i * 3 + 1] = image.data[i * 4 + 1]!;
      rgb[i * 3 + 2] = image.data[i * 4 + 2]!;
    }
  }
  return rgb;
}

/**
 * Decodes a caption input (once: CaptionPixels pass through). Throws XpsrError: ERR_IMAGE_UNREADABLE
 * (missing file, not an image, corrupt), ERR_IMAGE_EMPTY, ERR_IMAGE_TOO_LARGE (lib/image's limit),
 * ERR_INVALID_ARGUMENT (not an image input).
 */
export async function prepareImage(image: CaptionImage, name?: string): Promise<CaptionPixels> {
  if (image instanceof CaptionPixels) return image;
  if (typeof image === 'string') {
    const d = await decodeImage(image, { name: image });
    return new CaptionPixels(d.rgb, d.width, d.height, { path: image, format: d.format, name: name ?? path.parse(image).name });
  }
  if (image instanceof Uint8Array) {
    const d = await decodeImage(image, name ? { name } : {});
    return new CaptionPixels(d.rgb, d.width, d.height, { bytes: image, format: d.format, name });
  }
  if (isRawImage(image)) return new CaptionPixels(rawToRgb(image), image.width, image.height, { name });
  throw new XpsrError('ERR_INVALID_ARGUMENT', 'image must be a path, the bytes of an image file, or {data, width, height}');
}

const SENDABLE: Record<string, string> = { png: 'image/png', jpeg: 'image/jpeg', webp: 'image/webp', gif: 'image/gif' };

/**
 * An image file for captioners that send one (HTTP): the original bytes when their format is one servers
 * read (PNG, JPEG, WebP, GIF), else the pixels encoded as PNG.
 */
export async function imageFile(img: CaptionPixels): Promise<{ bytes: Uint8Array; mime: string }> {
  const mime = img.source.format ? SENDABLE[img.source.format] : undefined;
  if (mime && img.source.bytes) return { bytes: img.source.bytes, mime };
  if (mime && img.source.path) {
    try {
      return { bytes: new Uint8Array(await fs.readFile(img.source.path)), mime };
    } catch {
      /* changed since it was decoded: send the decoded pixels */
    }
  }
  const png = await encodeImage({ rgb: img.data, width: img.width, height: img.height }, 'png');
  return { bytes: new Uint8Array(png.buffer, png.byteOffset, png.byteLength), mime: 'image/png' };
}

/**
 * A Node Buffer sharing `b`'s memory, typed as Uint8Array (the installed @types/node's Buffer does not type-check
 * as a Uint8Array under TypeScript 5.9). Native code that checks for a Buffer gets one.
 */
export function asBuffer(b: Uint8Array): Uint8Array {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength) as unknown as Uint8Array;
}
