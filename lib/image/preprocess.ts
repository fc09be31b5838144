/**
 * The official XPSR input preprocessing (docs/architecture.md §7.1), output resize (§7.11), alpha handling,
 * and the float conversions between uint8 images and the model tensors.
 *
 * Chain for an LR image w×h (all resizes are Pillow-exact, see resample.ts):
 *   1. Pillow BICUBIC to (scale·w, scale·h)
 *   2. if min side < processSize: torchvision Resize(processSize, BILINEAR) on the PIL image:
 *      short side → processSize, long side → int(processSize·long/short) (truncation), Pillow BILINEAR
 *   3. Pillow BICUBIC to (⌊W/8⌋·8, ⌊H/8⌋·8) (a copy when already a multiple of 8)
 * After diffusion the result is resized back to (scale·w, scale·h) with Pillow BICUBIC (§7.11).
 */

import { XpsrError, ERR_INVALID_ARGUMENT, invalidOption } from '../errors.js';
import { resize } from './resample.js';

export interface PreprocessOptions {
  /** Upscaling factor (integer, default 4). */
  scale?: number;
  /** Minimum short side of the processed image (default 512). */
  processSize?: number;
}

export interface PreprocessStep {
  step: 'bicubic_scale' | 'bilinear_short_side' | 'bicubic_floor8';
  width: number;
  height: number;
  /** false when the step was a no-op (size unchanged / condition not met). */
  applied: boolean;
}

export interface PreprocessGeometry {
  inputWidth: number;
  inputHeight: number;
  /** Size of the processed image X (multiple of 8): what the VAE / ControlNet see. */
  width: number;
  height: number;
  /** Final output size (scale·w, scale·h), §7.11. */
  outWidth: number;
  outHeight: number;
  steps: PreprocessStep[];
}

export interface PreprocessResult extends PreprocessGeometry {
  /** X as HxWx3 uint8. */
  rgb: Uint8Array;
}

function checkOptions(options: PreprocessOptions): { scale: number; processSize: number } {
  const scale = options.scale ?? 4;
  const processSize = options.processSize ?? 512;
  if (typeof scale !== 'number' || !Number.isInteger(scale) || scale < 1 || scale > 16) {
    throw invalidOption('scale', 'an integer between 1 and 16', scale);
  }
  if (typeof processSize !== 'number' || !Number.isInteger(processSize) || processSize < 8 || processSize > 16384) {
    throw invalidOption('processSize', 'an integer between 8 and 16384', processSize);
  }
  return { scale, processSize };
}

function checkDims(width: number, height: number, what: string): void {
  if (!Number.isInteger(width) || width < 1 || !Number.isInteger(height) || height < 1) {
    throw new XpsrError(ERR_INVALID_ARGUMENT, `${what}: invalid image size ${width}x${height}`);
  }
}

function checkBuffer(buf: unknown, n: number, what: string): void {
  if (!(buf instanceof Uint8Array) || buf.length !== n) {
    throw new XpsrError(
      ERR_INVALID_ARGUMENT,
      `${what}: expected a Uint8Array of ${n} bytes, got ${buf instanceof Uint8Array ? `${buf.length} bytes` : typeof buf}`,
    );
  }
}

/** torchvision Resize(size) (int size = short side) output size for a PIL image w×h: [newW, newH]. */
export function shortSideResizeSize(w: number, h: number, size: number): [number, number] {
  const [short, long] = w <= h ? [w, h] : [h, w];
  if (short === size) return [w, h];
  // Python: int(size * long / short) — the same IEEE double division, then truncation
  const newShort = size;
  const newLong = Math.trunc((size * long) / short);
  return w <= h ? [newShort, newLong] : [newLong, newShort];
}

/** Sizes of every preprocessing step, without touching pixels. */
export function preprocessGeometry(inputWidth: number, inputHeight: number, options: PreprocessOptions = {}): PreprocessGeometry {
  const { scale, processSize } = checkOptions(options);
  checkDims(inputWidth, inputHeight, 'preprocess');
  const steps: PreprocessStep[] = [];
  let w = inputWidth * scale;
  let h = inputHeight * scale;
  steps.push({ step: 'bicubic_scale', width: w, height: h, applied: scale !== 1 });
  if (Math.min(w, h) < processSize) {
    [w, h] = shortSideResizeSize(w, h, processSize);
    steps.push({ step: 'bilinear_short_side', width: w, height: h, applied: true });
  } else {
    steps.push({ step: 'bilinear_short_side', width: w, height: h, applied: false });
  }
  const w8 = Math.floor(w / 8) * 8;
  const h8 = Math.floor(h / 8) * 8;
  steps.push({ step: 'bicubic_floor8', width: w8, height: h8, applied: w8 !== w || h8 !== h });
  return {
    inputWidth,
    inputHeight,
    width: w8,
    height: h8,
    outWidth: inputWidth * scale,
    outHeight: inputHeight * scale,
    steps,
  };
}

/** Run the official preprocessing chain on a decoded LR RGB image. */
export function preprocess(img: { rgb: Uint8Array; width: number; height: number }, options: PreprocessOptions = {}): PreprocessResult {
  const geo = preprocessGeometry(img.width, img.height, options);
  checkBuffer(img.rgb, img.width * img.height * 3, 'preprocess: rgb');
  let cur = { data: img.rgb, width: img.width, height: img.height, channels: 3 };
  const [s1, s2, s3] = geo.steps as [PreprocessStep, PreprocessStep, PreprocessStep];
  if (s1.applied) cur = resize(cur, s1.width, s1.height, 'bicubic');
  if (s2.applied) cur = resize(cur, s2.width, s2.height, 'bilinear');
  if (s3.applied) cur = resize(cur, s3.width, s3.height, 'bicubic');
  const rgb = cur.data === img.rgb ? img.rgb.slice() : cur.data;
  return { ...geo, rgb };
}

/** §7.11: Pillow BICUBIC resize of the (colour-fixed) result to the output size; a copy when equal. */
export function resizeToOutput(rgb: Uint8Array, width: number, height: number, outWidth: number, outHeight: number): Uint8Array {
  checkDims(width, height, 'resizeToOutput');
  checkDims(outWidth, outHeight, 'resizeToOutput (output)');
  checkBuffer(rgb, width * height * 3, 'resizeToOutput: rgb');
  return resize({ data: rgb, width, height, channels: 3 }, outWidth, outHeight, 'bicubic').data;
}

/**
 * Upscale an alpha plane (HxW uint8) straight to the output size with Pillow BICUBIC (mode "L"
 * semantics); recombined with the super-resolved RGB at the end.
 */
export function upscaleAlpha(alpha: Uint8Array, width: number, height: number, outWidth: number, outHeight: number): Uint8Array {
  checkDims(width, height, 'upscaleAlpha');
  checkDims(outWidth, outHeight, 'upscaleAlpha (output)');
  checkBuffer(alpha, width * height, 'upscaleAlpha: alpha');
  return resize({ data: alpha, width, height, channels: 1 }, outWidth, outHeight, 'bicubic').data;
}

/** uint8 HWC → float32 NCHW [1,3,H,W] = x/255 (numpy: array.astype(float32) / 255.0). ControlNet condition. */
export function toControlImage(rgb: Uint8Array, width: number, height: number): Float32Array {
  checkDims(width, height, 'toControlImage');
  checkBuffer(rgb, width * height * 3, 'toControlImage: rgb');
  const n = width * height;
  const lut = new Float32Array(256);
  for (let v = 0; v < 256; v++) lut[v] = Math.fround(v / 255);
  const out = new Float32Array(3 * n);
  for (let i = 0; i < n; i++) {
    out[i] = lut[rgb[i * 3]!]!;
    out[n + i] = lut[rgb[i * 3 + 1]!]!;
    out[2 * n + i] = lut[rgb[i * 3 + 2]!]!;
  }
  return out;
}

/** uint8 HWC → float32 NCHW [1,3,H,W] in [-1,1] = (x/255)·2 − 1 in float32 (the VAE encoder input). */
export function toVaeInput(rgb: Uint8Array, width: number, height: number): Float32Array {
  checkDims(width, height, 'toVaeInput');
  checkBuffer(rgb, width * height * 3, 'toVaeInput: rgb');
  const n = width * height;
  const lut = new Float32Array(256);
  for (let v = 0; v < 256; v++) lut[v] = Math.fround(Math.fround(v / 255) * 2 - 1);
  const out = new Float32Array(3 * n);
  for (let i = 0; i < n; i++) {
    out[i] = lut[rgb[i * 3]!]!;
    out[n + i] = lut[rgb[i * 3 + 1]!]!;
    out[2 * n + i] = lut[rgb[i * 3 + 2]!]!;
  }
  return out;
}

/** numpy's round (half to even) for finite non-negative values. */
function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

function unitToU8(v: number): number {
  // float32: v*255, then numpy round half-to-even, then astype(uint8)
  if (!(v > 0)) return 0; // also NaN → 0
  if (v >= 1) return 255;
  return roundHalfEven(Math.fround(v * 255));
}

function checkPlanes(data: unknown, width: number, height: number, what: string): void {
  checkDims(width, height, what);
  if (!(data instanceof Float32Array) || data.length !== 3 * width * height) {
    throw new XpsrError(
      ERR_INVALID_ARGUMENT,
      `${what}: expected a Float32Array [1,3,${height},${width}] (${3 * width * height} values), got ${
        data instanceof Float32Array ? `${data.length} values` : typeof data
      }`,
    );
  }
}

/**
 * VAE decoder output (float32 NCHW [1,3,H,W], ~[-1,1]) → uint8 HWC exactly like the pipeline's
 * output_type="pil": clamp(x/2 + 0.5, 0, 1) in float32, ×255 in float32, numpy round (half to even).
 */
export function fromDecoded(imagePt: Float32Array, width: number, height: number): Uint8Array {
  checkPlanes(imagePt, width, height, 'fromDecoded');
  const n = width * height;
  const out = new Uint8Array(3 * n);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < n; i++) {
      const x = imagePt[c * n + i]!;
      const v = Math.fround(x / 2 + 0.5); // x/2 is exact; one float32 rounding of the sum
      out[i * 3 + c] = unitToU8(v);
    }
  }
  return out;
}

/** Same as fromDecoded for an image already in [0,1] (the pipeline's `image_pt`, output_type="pt"). */
export function fromUnit(image01: Float32Array, width: number, height: number): Uint8Array {
  checkPlanes(image01, width, height, 'fromUnit');
  const n = width * height;
  const out = new Uint8Array(3 * n);
  for (let c = 0; c < 3; c++) for (let i = 0; i < n; i++) out[i * 3 + c] = unitToU8(image01[c * n + i]!);
  return out;
}
