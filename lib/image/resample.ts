/**
 * Pillow-compatible resampler for 8-bit interleaved images (RGB, L, or any 1..4 channel layout).
 *
 * Written from a description of Pillow's `ImagingResample` (libImaging/Resample.c) and of its NEAREST
 * path (`ImagingScaleAffine`, libImaging/Geometry.c); the goal is bit-exact equality with
 * `PIL.Image.resize(size, filter[, box])` for mode "RGB" / "L" images. Verified against golden outputs
 * produced by Pillow itself (test/fixtures/pillow/, see its manifest.json for the exact version).
 *
 * Algorithm (per axis, separable; horizontal pass first, then vertical):
 *  - scale = (box1 - box0) / outSize (box coordinates are C floats), filterscale = max(scale, 1)
 *    (i.e. on downscale the kernel is stretched: antialiasing), support = filter.support * filterscale;
 *  - for output index i: center = box0 + (i + 0.5) * scale; the taps are input indices
 *    [trunc(center - support + 0.5), trunc(center + support + 0.5)) clamped to the image; tap weight
 *    w_k = filter((k - center + 0.5) / filterscale), then normalised to sum 1 per output index;
 *  - weights become 22-bit fixed point (PRECISION_BITS = 32 - 8 - 2), rounded half away from zero;
 *  - accumulation in integers starting at 2^21 (rounding), result = clip(acc >> 22, 0, 255);
 *  - a pass is skipped when its axis is unchanged (same size and the box covers the full axis);
 *    the horizontal pass only computes the rows the vertical pass will read.
 */

import { XpsrError, ERR_INVALID_ARGUMENT, invalidOption } from '../errors.js';

export type ResampleFilter = 'nearest' | 'box' | 'bilinear' | 'hamming' | 'bicubic' | 'lanczos';

/** An 8-bit image, pixels interleaved row-major (HWC). */
export interface Image8 {
  data: Uint8Array;
  width: number;
  height: number;
  /** Channels per pixel (1..4). Default 3. */
  channels?: number;
}

export interface ResizedImage8 {
  data: Uint8Array;
  width: number;
  height: number;
  channels: number;
}

export interface ResizeOptions {
  /**
   * Source region [x0, y0, x1, y1] in input pixel coordinates (Pillow's `box`), default the full image.
   * Coordinates may be fractional (they are rounded to float32 like Pillow's C code).
   */
  box?: readonly [number, number, number, number];
}

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 1 << PRECISION_BITS; // 2^22
const HALF = 1 << (PRECISION_BITS - 1); // 2^21

interface FilterDef {
  fn: (x: number) => number;
  support: number;
}

function boxFilter(x: number): number {
  return x > -0.5 && x <= 0.5 ? 1.0 : 0.0;
}

function bilinearFilter(x: number): number {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

function hammingFilter(x: number): number {
  if (x < 0.0) x = -x;
  if (x === 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x = x * Math.PI;
  return (Math.sin(x) / x) * (0.54 + 0.46 * Math.cos(x));
}

const BICUBIC_A = -0.5;
function bicubicFilter(x: number): number {
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((BICUBIC_A + 2.0) * x - (BICUBIC_A + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * BICUBIC_A;
  return 0.0;
}

function sinc(x: number): number {
  if (x === 0.0) return 1.0;
  x = x * Math.PI;
  return Math.sin(x) / x;
}

function lanczosFilter(x: number): number {
  // truncated sinc, a = 3
  if (-3.0 <= x && x < 3.0) return sinc(x) * sinc(x / 3);
  return 0.0;
}

const FILTERS: Record<Exclude<ResampleFilter, 'nearest'>, FilterDef> = {
  box: { fn: boxFilter, support: 0.5 },
  bilinear: { fn: bilinearFilter, support: 1.0 },
  hamming: { fn: hammingFilter, support: 1.0 },
  bicubic: { fn: bicubicFilter, support: 2.0 },
  lanczos: { fn: lanczosFilter, support: 3.0 },
};

export const RESAMPLE_FILTERS: readonly ResampleFilter[] = ['nearest', 'box', 'bilinear', 'hamming', 'bicubic', 'lanczos'];

/** Per-axis tap table: for output i, taps start at bounds[2i] and count bounds[2i+1]; weights at kk[i*ksize]. */
export interface AxisCoefficients {
  ksize: number;
  bounds: Int32Array;
  /** Normalised double weights (before fixed-point conversion). */
  weights: Float64Array;
  /** 22-bit fixed-point weights. */
  fixed: Int32Array;
}

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc for one axis. Exported for tests. */
export function precomputeCoefficients(
  inSize: number,
  in0: number,
  in1: number,
  outSize: number,
  filter: Exclude<ResampleFilter, 'nearest'>,
): AxisCoefficients {
  const f = FILTERS[filter];
  // box coordinates are C floats; in1 - in0 is a float subtraction, then promoted to double
  const fin0 = Math.fround(in0);
  const fin1 = Math.fround(in1);
  const scale = Math.fround(fin1 - fin0) / outSize;
  let filterscale = scale;
  if (filterscale < 1.0) filterscale = 1.0;
  const support = f.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Float64Array(outSize * ksize);
  const ss = 1.0 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = fin0 + (xx + 0.5) * scale;
    let ww = 0.0;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    const base = xx * ksize;
    for (let x = 0; x < xmax; x++) {
      const w = f.fn((x + xmin - center + 0.5) * ss);
      weights[base + x] = w;
      ww += w;
    }
    if (ww !== 0.0) {
      for (let x = 0; x < xmax; x++) weights[base + x] /= ww;
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  const fixed = new Int32Array(outSize * ksize);
  for (let i = 0; i < fixed.length; i++) {
    const v = weights[i]!;
    fixed[i] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
  }
  return { ksize, bounds, weights, fixed };
}

function clip8(acc: number): number {
  // acc is an integer that fits in int32 (normalised weights); arithmetic shift = floor division
  const v = acc >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** Horizontal pass: rows [rowOffset, rowOffset + outH) of the input, to an image outW wide. */
function resampleHorizontal(
  src: Uint8Array,
  srcW: number,
  ch: number,
  rowOffset: number,
  outW: number,
  outH: number,
  c: AxisCoefficients,
): Uint8Array {
  const out = new Uint8Array(outW * outH * ch);
  const { ksize, bounds, fixed } = c;
  const srcStride = srcW * ch;
  if (ch === 3) {
    for (let yy = 0; yy < outH; yy++) {
      const rowBase = (yy + rowOffset) * srcStride;
      let o = yy * outW * 3;
      for (let xx = 0; xx < outW; xx++) {
        const xmin = bounds[xx * 2]!;
        const xmax = bounds[xx * 2 + 1]!;
        const kb = xx * ksize;
        let s0 = HALF;
        let s1 = HALF;
        let s2 = HALF;
        let p = rowBase + xmin * 3;
        for (let x = 0; x < xmax; x++) {
          const k = fixed[kb + x]!;
          s0 = (s0 + Math.imul(src[p]!, k)) | 0;
          s1 = (s1 + Math.imul(src[p + 1]!, k)) | 0;
          s2 = (s2 + Math.imul(src[p + 2]!, k)) | 0;
          p += 3;
        }
        out[o++] = clip8(s0);
        out[o++] = clip8(s1);
        out[o++] = clip8(s2);
      }
    }
    return out;
  }
  for (let yy = 0; yy < outH; yy++) {
    const rowBase = (yy + rowOffset) * srcStride;
    let o = yy * outW * ch;
    for (let xx = 0; xx < outW; xx++) {
      const xmin = bounds[xx * 2]!;
      const xmax = bounds[xx * 2 + 1]!;
      const kb = xx * ksize;
      for (let cc = 0; cc < ch; cc++) {
        let s = HALF;
        let p = rowBase + xmin * ch + cc;
        for (let x = 0; x < xmax; x++) {
          s = (s + Math.imul(src[p]!, fixed[kb + x]!)) | 0;
          p += ch;
        }
        out[o++] = clip8(s);
      }
    }
  }
  return out;
}

/** Vertical pass over a whole image (rows already shifted so that bounds index into `src`). */
function resampleVertical(src: Uint8Array, w: number, ch: number, outH: number, c: AxisCoefficients, boundsShift: number): Uint8Array {
  const rowLen = w * ch;
  const out = new Uint8Array(rowLen * outH);
  const { ksize, bounds, fixed } = c;
  const offs = new Int32Array(ksize);
  const ks = new Int32Array(ksize);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = bounds[yy * 2]! - boundsShift;
    const ymax = bounds[yy * 2 + 1]!;
    const kb = yy * ksize;
    // taps with a zero weight contribute nothing: drop them
    let n = 0;
    for (let y = 0; y < ymax; y++) {
      const k = fixed[kb + y]!;
      if (k === 0) continue;
      offs[n] = (ymin + y) * rowLen;
      ks[n] = k;
      n++;
    }
    const ob = yy * rowLen;
    // int32 arithmetic like Pillow's C code (normalised weights keep every partial sum in range)
    if (n === 4) {
      const o0 = offs[0]!,
        o1 = offs[1]!,
        o2 = offs[2]!,
        o3 = offs[3]!;
      const k0 = ks[0]!,
        k1 = ks[1]!,
        k2 = ks[2]!,
        k3 = ks[3]!;
      for (let i = 0; i < rowLen; i++) {
        const s = (HALF + Math.imul(src[o0 + i]!, k0) + Math.imul(src[o1 + i]!, k1) + Math.imul(src[o2 + i]!, k2) + Math.imul(src[o3 + i]!, k3)) | 0;
        out[ob + i] = clip8(s);
      }
    } else if (n === 3) {
      const o0 = offs[0]!,
        o1 = offs[1]!,
        o2 = offs[2]!;
      const k0 = ks[0]!,
        k1 = ks[1]!,
        k2 = ks[2]!;
      for (let i = 0; i < rowLen; i++) {
        const s = (HALF + Math.imul(src[o0 + i]!, k0) + Math.imul(src[o1 + i]!, k1) + Math.imul(src[o2 + i]!, k2)) | 0;
        out[ob + i] = clip8(s);
      }
    } else if (n === 2) {
      const o0 = offs[0]!,
        o1 = offs[1]!;
      const k0 = ks[0]!,
        k1 = ks[1]!;
      for (let i = 0; i < rowLen; i++) {
        out[ob + i] = clip8((HALF + Math.imul(src[o0 + i]!, k0) + Math.imul(src[o1 + i]!, k1)) | 0);
      }
    } else {
      for (let i = 0; i < rowLen; i++) {
        let s = HALF;
        for (let t = 0; t < n; t++) s = (s + Math.imul(src[offs[t]! + i]!, ks[t]!)) | 0;
        out[ob + i] = clip8(s);
      }
    }
  }
  return out;
}

/** Pillow's NEAREST resize (ImagingScaleAffine): positions accumulated in double precision. */
function resizeNearest(
  src: Uint8Array,
  srcW: number,
  srcH: number,
  ch: number,
  outW: number,
  outH: number,
  box: readonly [number, number, number, number],
): Uint8Array {
  const b0 = Math.fround(box[0]);
  const b1 = Math.fround(box[1]);
  const b2 = Math.fround(box[2]);
  const b3 = Math.fround(box[3]);
  const a0 = Math.fround(b2 - b0) / outW;
  const a4 = Math.fround(b3 - b1) / outH;
  const a2 = b0;
  const a5 = b1;
  const coord = (v: number): number => (v < 0.0 ? -1 : Math.trunc(v));
  const xintab = new Int32Array(outW).fill(-1);
  let xo = a2 + a0 * 0.5;
  for (let x = 0; x < outW; x++) {
    const xin = coord(xo);
    if (xin >= 0 && xin < srcW) xintab[x] = xin;
    xo += a0;
  }
  const out = new Uint8Array(outW * outH * ch);
  let yo = a5 + a4 * 0.5;
  for (let y = 0; y < outH; y++) {
    const yi = coord(yo);
    yo += a4;
    if (yi < 0 || yi >= srcH) continue; // stays 0 (Pillow fills with 0)
    const rb = yi * srcW * ch;
    let o = y * outW * ch;
    for (let x = 0; x < outW; x++) {
      const xi = xintab[x]!;
      if (xi < 0) {
        o += ch;
        continue;
      }
      const p = rb + xi * ch;
      for (let cc = 0; cc < ch; cc++) out[o++] = src[p + cc]!;
    }
  }
  return out;
}

function checkImage(img: Image8, what: string): number {
  const ch = img.channels ?? 3;
  if (!Number.isInteger(ch) || ch < 1 || ch > 4) throw invalidOption(`${what}.channels`, 'an integer between 1 and 4', ch);
  if (!Number.isInteger(img.width) || img.width < 1) throw invalidOption(`${what}.width`, 'a positive integer', img.width);
  if (!Number.isInteger(img.height) || img.height < 1) throw invalidOption(`${what}.height`, 'a positive integer', img.height);
  if (!(img.data instanceof Uint8Array) || img.data.length !== img.width * img.height * ch) {
    throw new XpsrError(
      ERR_INVALID_ARGUMENT,
      `${what}: expected ${img.width}x${img.height}x${ch} = ${img.width * img.height * ch} bytes of pixel data, got ${
        img.data instanceof Uint8Array ? img.data.length : typeof img.data
      }`,
    );
  }
  return ch;
}

/**
 * Resize like `PIL.Image.resize((newW, newH), filter, box)` for an 8-bit image (mode RGB when
 * channels = 3, L when 1). Returns a new buffer (a copy when nothing changes, like Pillow).
 * Note: 4-channel input is resampled channel by channel (Pillow's "RGBX"/"CMYK" behaviour, not its
 * premultiplied RGBA path).
 */
export function resize(img: Image8, newW: number, newH: number, filter: ResampleFilter = 'bicubic', options: ResizeOptions = {}): ResizedImage8 {
  const ch = checkImage(img, 'image');
  if (!Number.isInteger(newW) || newW < 1) throw invalidOption('width', 'a positive integer', newW);
  if (!Number.isInteger(newH) || newH < 1) throw invalidOption('height', 'a positive integer', newH);
  if (!RESAMPLE_FILTERS.includes(filter)) throw invalidOption('filter', `one of ${RESAMPLE_FILTERS.join(', ')}`, filter);
  const { width: w, height: h } = img;
  const box = options.box ?? ([0, 0, w, h] as const);
  if (box.length !== 4 || box.some((v) => typeof v !== 'number' || !Number.isFinite(v))) {
    throw invalidOption('box', 'four finite numbers [x0, y0, x1, y1]', box);
  }
  if (box[0] < 0 || box[1] < 0 || box[2] > w || box[3] > h) {
    throw invalidOption('box', `a region inside the ${w}x${h} image`, `[${box.join(', ')}]`);
  }
  if (box[2] - box[0] < 0 || box[3] - box[1] < 0) {
    throw invalidOption('box', 'a region with x1 >= x0 and y1 >= y0', `[${box.join(', ')}]`);
  }

  const fullBox = box[0] === 0 && box[1] === 0 && box[2] === w && box[3] === h;
  if (newW === w && newH === h && fullBox) {
    return { data: img.data.slice(), width: w, height: h, channels: ch };
  }
  if (filter === 'nearest') {
    return { data: resizeNearest(img.data, w, h, ch, newW, newH, box), width: newW, height: newH, channels: ch };
  }

  const fb = box.map((v) => Math.fround(v));
  const needH = newW !== w || fb[0] !== 0 || fb[2] !== newW;
  const needV = newH !== h || fb[1] !== 0 || fb[3] !== newH;
  const cH = precomputeCoefficients(w, box[0], box[2], newW, filter);
  const cV = precomputeCoefficients(h, box[1], box[3], newH, filter);

  const yFirst = cV.bounds[0]!;
  const yLast = cV.bounds[newH * 2 - 2]! + cV.bounds[newH * 2 - 1]!;

  let cur = img.data;
  let curW = w;
  let shift = 0;
  if (needH) {
    cur = resampleHorizontal(cur, w, ch, yFirst, newW, yLast - yFirst, cH);
    curW = newW;
    shift = yFirst;
  }
  if (needV) {
    cur = resampleVertical(cur, curW, ch, newH, cV, shift);
  } else if (!needH) {
    cur = cur.slice();
  }
  return { data: cur, width: curW, height: needV ? newH : cur.length / (curW * ch), channels: ch };
}

/** Convenience: resize an RGB HWC buffer. */
export function resizeRgb(
  rgb: Uint8Array,
  width: number,
  height: number,
  newW: number,
  newH: number,
  filter: ResampleFilter = 'bicubic',
): Uint8Array {
  return resize({ data: rgb, width, height, channels: 3 }, newW, newH, filter).data;
}
