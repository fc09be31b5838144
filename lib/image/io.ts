/**
 * Image decoding / encoding through sharp (libvips).
 *
 * decodeImage(): anything sharp reads (path, Buffer/Uint8Array, or a sharp instance) → 8-bit sRGB HWC
 * pixels (+ separate alpha plane), with EXIF orientation applied, 16-bit → 8-bit, grey → RGB,
 * CMYK → sRGB, first frame of animated input, and an input pixel limit. Every failure is an XpsrError
 * naming the input: ERR_IMAGE_EMPTY, ERR_IMAGE_UNREADABLE, ERR_IMAGE_TOO_LARGE (never a crash).
 *
 * Parity with the official test.py (PIL `Image.open(...).convert("RGB")`): like PIL, embedded ICC
 * profiles are ignored by default (option applyIccProfile), so 8-bit RGB PNG pixels match PIL's
 * exactly (JPEG decoding may differ slightly between libjpeg builds). Differences from PIL, on purpose: EXIF orientation
 * is applied, 16-bit grey is scaled (PIL clips it to 255), CMYK uses an ICC transform (PIL a naive
 * formula), and only the first frame of animations is read (PIL too).
 */

import { randomBytes } from 'node:crypto';
import { rename, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import type { Sharp } from 'sharp';
import {
  XpsrError,
  ERR_IMAGE_EMPTY,
  ERR_IMAGE_TOO_LARGE,
  ERR_IMAGE_UNREADABLE,
  ERR_INVALID_ARGUMENT,
  ERR_UNSUPPORTED,
  ERR_IO,
  invalidOption,
} from '../errors.js';

export type ImageInput = string | Buffer | Uint8Array | Sharp;

/**
 * File extensions taken when a folder is expanded: the raster formats this build of sharp decodes (BMP is
 * not one of them; SVG is decoded when given by name, but is not picked up from folders).
 */
export const INPUT_EXTENSIONS: readonly string[] = Object.freeze(['.png', '.jpg', '.jpeg', '.webp', '.gif', '.tif', '.tiff', '.avif']);

/** Default limit on input pixels (width × height of the first frame): 64 megapixels. */
export const DEFAULT_MAX_INPUT_PIXELS = 64_000_000;
/** The largest `maxInputPixels` the XPSR options accept (lib/options.ts LIMITS); advice never goes above it. */
export const MAX_INPUT_PIXELS_LIMIT = 2 ** 32;

export interface DecodeOptions {
  /** Refuse inputs with more pixels than this (default 64,000,000). `Infinity` disables the check. */
  maxInputPixels?: number;
  /** Name used for the input in error messages (default: the path, or "buffer of N bytes"). */
  name?: string;
  /**
   * Convert RGB/grey pixels to sRGB through their embedded ICC profile (default false: the stored
   * values are used as they are, like PIL's `convert("RGB")` in the official test.py). CMYK input is
   * always converted to sRGB (with its embedded profile, else a generic CMYK profile).
   */
  applyIccProfile?: boolean;
  /**
   * Called with the size (EXIF orientation applied) as soon as the header is read, before any pixel is
   * decoded: throw to refuse the image without allocating it.
   */
  checkSize?: (width: number, height: number) => void;
}

export interface DecodedImage {
  /** 8-bit sRGB pixels, HxWx3, row-major. */
  rgb: Uint8Array;
  /** 8-bit alpha plane HxW, present when the input had an alpha channel. */
  alpha?: Uint8Array;
  width: number;
  height: number;
  /** Container format as reported by sharp ('png', 'jpeg', 'webp', 'gif', 'tiff', ...). */
  format: string;
  hadAlpha: boolean;
  /** Bits per sample of the input (8, 16, 32, ...; 1/2/4 for low-depth PNG where reported). */
  bitDepth: number;
  /** EXIF orientation tag of the input (1..8) if any; it has been applied to the pixels. */
  orientation?: number;
  /** Number of frames/pages in the input (only the first one is decoded). */
  pages: number;
}

/** Pixels to encode: RGB HxWx3 plus optional alpha HxW. */
export interface RgbImage {
  rgb: Uint8Array;
  alpha?: Uint8Array;
  width: number;
  height: number;
}

export type OutputFormat = 'png' | 'jpeg' | 'webp' | 'tiff';

export interface EncodeOptions {
  /** JPEG / WebP / TIFF(jpeg) quality 1..100 (default 95 for JPEG, 90 for WebP). */
  quality?: number;
  /** WebP lossless (default false). */
  lossless?: boolean;
  /** PNG zlib compression level 0..9 (default 6). */
  compressionLevel?: number;
  /**
   * Text fields embedded in the file as XMP (every format; PNG stores it in an iTXt chunk), in the
   * namespace https://github.com/xpsr-native/ns/1.0/ (prefix `xpsr`). Read back with readImageMetadata().
   */
  metadata?: Record<string, string>;
}

export function describeInput(input: unknown, name?: string): string {
  if (name) return `'${name}'`;
  if (typeof input === 'string') return `'${input}'`;
  if (input instanceof Uint8Array) return `<buffer of ${input.length} bytes>`;
  return '<sharp instance>';
}

function isSharp(x: unknown): x is Sharp {
  return typeof x === 'object' && x !== null && typeof (x as Sharp).metadata === 'function' && typeof (x as Sharp).clone === 'function';
}

function fmtInt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

function depthBits(depth: string | undefined, bitsPerSample: number | undefined): number {
  if (typeof bitsPerSample === 'number' && bitsPerSample > 0) return bitsPerSample;
  switch (depth) {
    case 'uchar':
    case 'char':
      return 8;
    case 'ushort':
    case 'short':
      return 16;
    case 'uint':
    case 'int':
    case 'float':
      return 32;
    case 'double':
      return 64;
    default:
      return 8;
  }
}

function sharpMessage(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.replace(/\s+/g, ' ').trim(); // libvips messages span lines; ours are one line
}

/** Advice for an input of `pixels` over `limit`: a value of 'maxInputPixels' the validator accepts, or none. */
function raiseLimitAdvice(pixels: number): string {
  const need = Math.min(Math.ceil(pixels / 1e6) * 1e6, MAX_INPUT_PIXELS_LIMIT);
  return pixels <= MAX_INPUT_PIXELS_LIMIT
    ? `raise 'maxInputPixels' to at least ${need} to process it`
    : `that is more than the largest accepted 'maxInputPixels' (${MAX_INPUT_PIXELS_LIMIT}); downscale or crop it first`;
}

function mapSharpError(e: unknown, what: string, limit: number): XpsrError {
  const msg = sharpMessage(e);
  if (/pixel limit/i.test(msg)) {
    return new XpsrError(
      ERR_IMAGE_TOO_LARGE,
      `Image ${what} exceeds the input pixel limit of ${fmtInt(limit)} pixels ('maxInputPixels') (${msg})`,
      { input: what, maxInputPixels: limit, option: 'maxInputPixels' },
      { cause: e },
    );
  }
  if (/empty/i.test(msg)) {
    return new XpsrError(ERR_IMAGE_EMPTY, `Image ${what} is empty (${msg})`, { input: what }, { cause: e });
  }
  // libvips keeps one global error buffer: under concurrent decodes its text can be "Unknown error",
  // so anything that is not clearly "not an image" / "missing" is reported as a decode failure
  let hint = ': the file is truncated or corrupt';
  if (/unsupported image format/i.test(msg)) hint = ': not an image, or a format this build cannot read';
  else if (/input file is missing|no such file/i.test(msg)) hint = ': file not found';
  return new XpsrError(ERR_IMAGE_UNREADABLE, `Cannot read image ${what}${hint} (${msg})`, { input: what, reason: msg }, { cause: e });
}

function checkMaxPixels(v: unknown): number {
  if (v === undefined) return DEFAULT_MAX_INPUT_PIXELS;
  if (v === Infinity) return Infinity;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
    throw invalidOption('maxInputPixels', 'a positive integer or Infinity', v);
  }
  return v;
}

/**
 * Decode an image to 8-bit sRGB RGB + optional alpha.
 * Throws XpsrError: ERR_IMAGE_EMPTY (zero bytes), ERR_IMAGE_UNREADABLE (missing, not an image,
 * truncated, corrupt), ERR_IMAGE_TOO_LARGE (over `maxInputPixels`), ERR_INVALID_OPTION.
 */
export async function decodeImage(input: ImageInput, options: DecodeOptions = {}): Promise<DecodedImage> {
  const limit = checkMaxPixels(options.maxInputPixels);
  const what = describeInput(input, options.name);
  // libvips' own guard: a little above ours so that our clearer message wins; sharp wants an integer
  const sharpLimit: number | false = limit === Infinity || limit >= Number.MAX_SAFE_INTEGER / 2 ? false : limit;
  const ctorOptions = { pages: 1, page: 0, failOn: 'error' as const, limitInputPixels: sharpLimit };
  // header-only probe without libvips' limit, so that an over-limit input gets our message with its size
  const probeOptions = { ...ctorOptions, limitInputPixels: false as const };

  let base: Sharp;
  let probe: Sharp;
  if (typeof input === 'string') {
    let st: Awaited<ReturnType<typeof stat>>;
    try {
      st = await stat(input);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const reason = code === 'ENOENT' ? 'file not found' : code === 'EACCES' ? 'permission denied' : sharpMessage(e);
      throw new XpsrError(ERR_IMAGE_UNREADABLE, `Cannot read image ${what}: ${reason}`, { input: what, reason: code ?? reason }, { cause: e });
    }
    if (st.isDirectory()) throw new XpsrError(ERR_IMAGE_UNREADABLE, `Cannot read image ${what}: it is a directory`, { input: what });
    // a device or a FIFO would block or never end (/dev/zero, a named pipe)
    if (!st.isFile()) throw new XpsrError(ERR_IMAGE_UNREADABLE, `Cannot read image ${what}: not a regular file`, { input: what });
    if (st.size === 0) throw new XpsrError(ERR_IMAGE_EMPTY, `Image ${what} is empty (0 bytes)`, { input: what });
    base = sharp(input, ctorOptions);
    probe = sharp(input, probeOptions);
  } else if (input instanceof Uint8Array) {
    if (input.length === 0) throw new XpsrError(ERR_IMAGE_EMPTY, `Image ${what} is empty (0 bytes)`, { input: what });
    base = sharp(input, ctorOptions);
    probe = sharp(input, probeOptions);
  } else if (isSharp(input)) {
    base = input.clone();
    probe = input.clone();
  } else {
    throw new XpsrError(
      ERR_INVALID_ARGUMENT,
      `Cannot read image: expected a file path, a Buffer/Uint8Array or a sharp instance, got ${input === null ? 'null' : typeof input}`,
    );
  }

  let meta: sharp.Metadata;
  try {
    meta = await probe.metadata();
  } catch (e) {
    throw mapSharpError(e, what, limit);
  }
  const mw = meta.width ?? 0;
  const mh = meta.pageHeight ?? meta.height ?? 0;
  if (!(mw > 0 && mh > 0)) {
    throw new XpsrError(ERR_IMAGE_EMPTY, `Image ${what} has no pixels (${mw}x${mh})`, { input: what, width: mw, height: mh });
  }
  if (mw * mh > limit) {
    throw new XpsrError(
      ERR_IMAGE_TOO_LARGE,
      `Image ${what} is ${mw}x${mh} = ${fmtInt(mw * mh)} pixels, more than 'maxInputPixels' (${fmtInt(limit)}); ` + raiseLimitAdvice(mw * mh),
      { input: what, width: mw, height: mh, pixels: mw * mh, maxInputPixels: limit, option: 'maxInputPixels' },
    );
  }
  // EXIF orientations 5..8 swap the sides (autoOrient below)
  const swapped = (meta.orientation ?? 1) >= 5;
  options.checkSize?.(swapped ? mh : mw, swapped ? mw : mh);

  const hadAlpha = meta.hasAlpha === true;
  let data: Buffer;
  let info: sharp.OutputInfo;
  try {
    let p = base.clone().autoOrient();
    // keepIccProfile(): no profile-based transform of RGB/grey values (PIL parity); CMYK still converts
    if (!options.applyIccProfile && meta.space !== 'cmyk') p = p.keepIccProfile();
    p = p.toColourspace('srgb');
    p = hadAlpha ? p.ensureAlpha() : p.removeAlpha();
    ({ data, info } = await p.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true }));
  } catch (e) {
    throw mapSharpError(e, what, limit);
  }
  const { width, height, channels } = info;
  const n = width * height;
  if (!(width > 0 && height > 0) || data.length !== n * channels || (channels !== 3 && channels !== 4)) {
    throw new XpsrError(
      ERR_IMAGE_UNREADABLE,
      `Cannot read image ${what}: unexpected decoded layout ${width}x${height}x${channels} (${data.length} bytes)`,
      { input: what },
    );
  }
  let rgb: Uint8Array;
  let alpha: Uint8Array | undefined;
  if (channels === 3) {
    rgb = new Uint8Array(data.buffer, data.byteOffset, data.length).slice();
  } else {
    rgb = new Uint8Array(n * 3);
    alpha = new Uint8Array(n);
    for (let i = 0, j = 0; i < n; i++, j += 4) {
      rgb[i * 3] = data[j]!;
      rgb[i * 3 + 1] = data[j + 1]!;
      rgb[i * 3 + 2] = data[j + 2]!;
      alpha[i] = data[j + 3]!;
    }
  }
  const out: DecodedImage = {
    rgb,
    width,
    height,
    format: meta.format ?? 'unknown',
    hadAlpha,
    bitDepth: depthBits(meta.depth, (meta as { bitsPerSample?: number }).bitsPerSample),
    pages: meta.pages ?? 1,
  };
  if (alpha) out.alpha = alpha;
  if (meta.orientation !== undefined) out.orientation = meta.orientation;
  return out;
}

const FORMAT_ALIASES: Record<string, OutputFormat> = {
  png: 'png',
  jpg: 'jpeg',
  jpeg: 'jpeg',
  webp: 'webp',
  tif: 'tiff',
  tiff: 'tiff',
};

export const SUPPORTED_OUTPUT_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.webp', '.tif', '.tiff'] as const;

/** Output format from a file path's extension (case-insensitive). Unknown → XpsrError(ERR_UNSUPPORTED). */
export function formatFromPath(file: string): OutputFormat {
  const ext = path.extname(file).toLowerCase();
  const f = FORMAT_ALIASES[ext.slice(1)];
  if (!ext || !f) {
    throw new XpsrError(
      ERR_UNSUPPORTED,
      `Cannot choose an output format for '${file}': ${ext ? `unknown extension '${ext}'` : 'no file extension'}; ` +
        `use one of ${SUPPORTED_OUTPUT_EXTENSIONS.join(' ')}`,
      { path: file, extension: ext },
    );
  }
  return f;
}

/** A format name ('png', 'jpeg', 'jpg', 'webp', 'tiff', 'tif', optionally with a dot) or a path. */
export function resolveOutputFormat(formatOrPath: string): OutputFormat {
  if (typeof formatOrPath !== 'string' || formatOrPath.length === 0) {
    throw invalidOption('format', `a format name or an output path ending in ${SUPPORTED_OUTPUT_EXTENSIONS.join(' ')}`, formatOrPath);
  }
  const direct = FORMAT_ALIASES[formatOrPath.toLowerCase().replace(/^\./, '')];
  return direct ?? formatFromPath(formatOrPath);
}

function checkRgbImage(img: RgbImage): void {
  const { width, height } = img;
  if (!Number.isInteger(width) || width < 1 || !Number.isInteger(height) || height < 1) {
    throw new XpsrError(ERR_INVALID_ARGUMENT, `Cannot encode image: invalid size ${width}x${height}`);
  }
  if (!(img.rgb instanceof Uint8Array) || img.rgb.length !== width * height * 3) {
    throw new XpsrError(
      ERR_INVALID_ARGUMENT,
      `Cannot encode image: rgb must be a Uint8Array of ${width}x${height}x3 = ${width * height * 3} bytes, got ${
        img.rgb instanceof Uint8Array ? img.rgb.length : typeof img.rgb
      }`,
    );
  }
  if (img.alpha !== undefined && (!(img.alpha instanceof Uint8Array) || img.alpha.length !== width * height)) {
    throw new XpsrError(ERR_INVALID_ARGUMENT, `Cannot encode image: alpha must be a Uint8Array of ${width * height} bytes`);
  }
}

/** A sharp instance over the raw pixels (3 channels, or 4 when alpha is present). */
export function toSharp(img: RgbImage): Sharp {
  checkRgbImage(img);
  const { width, height } = img;
  const n = width * height;
  if (img.alpha) {
    const buf = Buffer.allocUnsafe(n * 4);
    for (let i = 0, j = 0; i < n; i++, j += 4) {
      buf[j] = img.rgb[i * 3]!;
      buf[j + 1] = img.rgb[i * 3 + 1]!;
      buf[j + 2] = img.rgb[i * 3 + 2]!;
      buf[j + 3] = img.alpha[i]!;
    }
    return sharp(buf, { raw: { width, height, channels: 4 } });
  }
  const buf = Buffer.from(img.rgb.buffer, img.rgb.byteOffset, img.rgb.byteLength);
  return sharp(buf, { raw: { width, height, channels: 3 } });
}

/**
 * Encode to PNG / JPEG / WebP / TIFF. `formatOrPath` is a format name or a path whose extension picks
 * the format. JPEG has no alpha: the alpha plane is dropped (colours kept as they are).
 */
export async function encodeImage(img: RgbImage, formatOrPath: string, options: EncodeOptions = {}): Promise<Buffer> {
  const format = resolveOutputFormat(formatOrPath);
  const { quality, lossless, compressionLevel } = options;
  if (quality !== undefined && (!Number.isInteger(quality) || quality < 1 || quality > 100)) {
    throw invalidOption('quality', 'an integer between 1 and 100', quality);
  }
  if (compressionLevel !== undefined && (!Number.isInteger(compressionLevel) || compressionLevel < 0 || compressionLevel > 9)) {
    throw invalidOption('compressionLevel', 'an integer between 0 and 9', compressionLevel);
  }
  let s = toSharp(img);
  switch (format) {
    case 'png':
      s = s.png({ compressionLevel: compressionLevel ?? 6 });
      break;
    case 'jpeg':
      if (img.alpha) s = s.removeAlpha();
      s = s.jpeg({ quality: quality ?? 95, chromaSubsampling: (quality ?? 95) >= 90 ? '4:4:4' : '4:2:0' });
      break;
    case 'webp':
      s = s.webp({ quality: quality ?? 90, lossless: lossless ?? false });
      break;
    case 'tiff':
      s = s.tiff({ compression: 'lzw' });
      break;
  }
  if (options.metadata && Object.keys(options.metadata).length) s = s.withXmp(toXmp(options.metadata));
  try {
    return await s.toBuffer();
  } catch (e) {
    throw new XpsrError(ERR_IO, `Cannot encode image as ${format}: ${sharpMessage(e)}`, { format }, { cause: e });
  }
}

/** Namespace of the fields written by encodeImage({ metadata }). */
export const XMP_NAMESPACE = 'https://github.com/xpsr-native/ns/1.0/';

const xmlEscape = (v: string) =>
  v
    .replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!)
    // XML 1.0 cannot hold most control characters even escaped: keep tab/newline/CR, drop the rest
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, '');

function toXmp(fields: Record<string, string>): string {
  const props = Object.entries(fields).map(([k, v]) => {
    if (!/^[A-Za-z][A-Za-z0-9_-]*$/.test(k)) throw new XpsrError(ERR_INVALID_ARGUMENT, `metadata key '${k}' is not a valid XML name`);
    return `<xpsr:${k}>${xmlEscape(String(v))}</xpsr:${k}>`;
  });
  return (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">' +
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">' +
    `<rdf:Description rdf:about="" xmlns:xpsr="${XMP_NAMESPACE}">${props.join('')}</rdf:Description>` +
    '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
  );
}

/** The `xpsr:` fields of an image written with encodeImage({ metadata }) (an empty object if none). */
export async function readImageMetadata(input: string | Uint8Array): Promise<Record<string, string>> {
  let xmp: Buffer | undefined;
  try {
    xmp = (await sharp(input).metadata()).xmp;
  } catch (e) {
    throw mapSharpError(e, describeInput(input), Infinity);
  }
  const out: Record<string, string> = {};
  if (!xmp) return out;
  const unxml = (v: string) => v.replace(/&(amp|lt|gt|quot);/g, (_m, n: string) => ({ amp: '&', lt: '<', gt: '>', quot: '"' })[n]!);
  for (const m of xmp.toString('utf8').matchAll(/<xpsr:([A-Za-z][A-Za-z0-9_-]*)>([\s\S]*?)<\/xpsr:\1>/g)) out[m[1]!] = unxml(m[2]!);
  return out;
}

/**
 * Encode (format from the extension) and write to `file` atomically: the bytes go to a temporary file in
 * the same folder, renamed over `file` only when complete, so a failure or an interruption never leaves a
 * partial output. Throws XpsrError ERR_UNSUPPORTED (unknown extension) or ERR_IO (cannot write).
 */
export async function writeImage(img: RgbImage, file: string, options: EncodeOptions = {}): Promise<void> {
  const buf = await encodeImage(img, formatFromPath(file), options);
  await writeFileAtomic(file, buf);
}

/** Writes `data` to `file` through a temporary sibling and a rename; ERR_IO (with the OS reason) on failure. */
export async function writeFileAtomic(file: string, data: Uint8Array): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    await writeFile(tmp, data, { flag: 'wx' });
    await rename(tmp, file);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    const code = (e as NodeJS.ErrnoException).code;
    const reason =
      code === 'ENOENT'
        ? 'the folder does not exist'
        : code === 'EACCES' || code === 'EPERM'
          ? 'permission denied'
          : code === 'ENOSPC'
            ? 'no space left on the device'
            : code === 'EISDIR'
              ? 'it is a folder'
              : sharpMessage(e);
    throw new XpsrError(ERR_IO, `Cannot write image '${file}': ${reason}`, { path: file, reason: code ?? reason }, { cause: e });
  }
}
