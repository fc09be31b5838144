/**
 * Colour correction of the super-resolved image, as XPSR's test.py (myutils/wavelet_color_fix.py) does it
 * (docs/architecture.md §7.10). Images are RGB uint8, interleaved H×W×3 ({@link RgbImage}).
 *
 * Reference semantics, reproduced in float32 (each element-wise op rounded to float32 like torch):
 * - ToTensor: `x = f32(u8 / 255)`, planar (3, H, W).
 * - AdaIN: per channel, μ = mean, σ = √(f32(unbiased variance) + 1e-5) (torch computes the variance with a
 *   float64 Welford accumulator and rounds it; the mean is a float32 sum / N); result
 *   `y = f(f(f(x − μ_t)/σ_t)·σ_s) + μ_s`.
 * - Wavelet: 5 levels; level i blurs with [[1,2,1],[2,4,2],[1,2,1]]/16 at dilation 2^i with replicate padding
 *   2^i; high += image − low; result = high(target) + low(source) (sizes must match).
 * - To uint8 (torchvision ToPILImage): clamp to [0, 1], `u8 = trunc(f32(y·255))` (truncation, not rounding).
 *
 * AdaIN accepts a source of a different size (only its statistics are used); wavelet needs equal sizes.
 */

import { ERR_INVALID_ARGUMENT, ERR_SHAPE_MISMATCH, XpsrError } from './errors.js';

/** An interleaved RGB uint8 image (row-major, `data.length = width·height·3`). */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

export type ColorFixKind = 'adain' | 'wavelet' | 'none';

const f = Math.fround;
const EPS = f(1e-5);

function checkImage(img: RgbImage, what: string): void {
  if (
    !img ||
    !(img.data instanceof Uint8Array) ||
    !Number.isSafeInteger(img.width) ||
    !Number.isSafeInteger(img.height) ||
    img.width < 1 ||
    img.height < 1
  ) {
    throw new XpsrError(ERR_INVALID_ARGUMENT, `colorFix: ${what} must be {data: Uint8Array, width, height} with positive integer sizes`);
  }
  if (img.data.length !== img.width * img.height * 3) {
    throw new XpsrError(
      ERR_SHAPE_MISMATCH,
      `colorFix: ${what} has ${img.data.length} bytes, expected ${img.width}×${img.height}×3 = ${img.width * img.height * 3}`,
    );
  }
}

/** ToTensor: interleaved uint8 HWC → planar float32 CHW in [0, 1] (`f32(v / 255)`). */
export function toTensorCHW(img: RgbImage): Float32Array {
  checkImage(img, 'image');
  const hw = img.width * img.height;
  const out = new Float32Array(3 * hw);
  const d = img.data;
  for (let p = 0; p < hw; p++) {
    out[p] = d[3 * p]! / 255;
    out[hw + p] = d[3 * p + 1]! / 255;
    out[2 * hw + p] = d[3 * p + 2]! / 255;
  }
  return out;
}

/** ToPILImage on a float CHW tensor: clamp to [0, 1], then `trunc(f32(x·255))`, interleaved HWC uint8. */
export function chwToU8Truncate(chw: Float32Array, width: number, height: number): Uint8Array {
  const hw = width * height;
  if (chw.length !== 3 * hw) throw new XpsrError(ERR_SHAPE_MISMATCH, `chwToU8Truncate: ${chw.length} values, expected 3×${height}×${width}`);
  const out = new Uint8Array(3 * hw);
  for (let c = 0; c < 3; c++) {
    for (let p = 0; p < hw; p++) {
      let v = chw[c * hw + p]!;
      v = v < 0 ? 0 : v > 1 ? 1 : v; // NaN stays NaN → 0 below
      out[3 * p + c] = Math.trunc(f(v * 255)) || 0;
    }
  }
  return out;
}

/**
 * `torch.sum` of a contiguous float32 row on an x86-64 CPU build (ATen `cascade_sum`, float accumulators):
 * 8-lane vectors summed with 4-way ILP in a 4-level cascade (level step 2^max(4, ⌈log2 m⌉/4) rows, m = number
 * of 4-vector rows), lanes then combined sequentially; rows shorter than 8 use the scalar version of the same
 * cascade. Every addition is a float32 rounding, so the result is torch's bit for bit.
 */
export function torchSumF32(x: Float32Array, offset: number, n: number): number {
  const LANES = 8;
  if (n >= LANES) {
    const nvec = Math.floor(n / LANES);
    const partial = rowSum(nvec, LANES, (v, lane) => x[offset + v * LANES + lane]!);
    let acc = 0;
    for (let k = nvec * LANES; k < n; k++) acc = f(acc + x[offset + k]!);
    for (let l = 0; l < LANES; l++) acc = f(acc + partial[l]!);
    return acc;
  }
  return rowSum(n, 1, (v) => x[offset + v]!)[0]!;
}

/** ATen `row_sum` over `size` elements, each a vector of `lanes` floats read by `load(index, lane)`. */
function rowSum(size: number, lanes: number, load: (i: number, lane: number) => number): Float32Array {
  const ILP = 4;
  const LEVELS = 4;
  const sizeIlp = Math.floor(size / ILP);
  const ceilLog2 = sizeIlp <= 2 ? 1 : 32 - Math.clz32(sizeIlp - 1); // c10 CeilLog2
  const levelPower = Math.max(4, Math.floor(ceilLog2 / LEVELS));
  const levelStep = 2 ** levelPower;
  const levelMask = levelStep - 1;
  // acc[level][k][lane]
  const acc = Array.from({ length: LEVELS }, () => Array.from({ length: ILP }, () => new Float32Array(lanes)));
  const addRow = (i: number): void => {
    for (let k = 0; k < ILP; k++) {
      const a = acc[0]![k]!;
      for (let l = 0; l < lanes; l++) a[l] = a[l]! + load(i * ILP + k, l);
    }
  };
  let i = 0;
  while (i + levelStep <= sizeIlp) {
    for (let j = 0; j < levelStep; j++, i++) addRow(i);
    for (let j = 1; j < LEVELS; j++) {
      for (let k = 0; k < ILP; k++) {
        const dst = acc[j]![k]!,
          src = acc[j - 1]![k]!;
        for (let l = 0; l < lanes; l++) {
          dst[l] = dst[l]! + src[l]!;
          src[l] = 0;
        }
      }
      if ((i & (levelMask * 2 ** (j * levelPower))) !== 0) break;
    }
  }
  for (; i < sizeIlp; i++) addRow(i);
  for (let j = 1; j < LEVELS; j++) {
    for (let k = 0; k < ILP; k++) {
      const dst = acc[0]![k]!,
        src = acc[j]![k]!;
      for (let l = 0; l < lanes; l++) dst[l] = dst[l]! + src[l]!;
    }
  }
  const p = acc[0]!;
  for (let r = sizeIlp * ILP; r < size; r++) {
    for (let l = 0; l < lanes; l++) p[0]![l] = p[0]![l]! + load(r, l);
  }
  for (let k = 1; k < ILP; k++) {
    for (let l = 0; l < lanes; l++) p[0]![l] = p[0]![l]! + p[k]![l]!;
  }
  return p[0]!;
}

/**
 * Per-channel float32 mean (torch: float32 cascade sum / N) and std = √(f32(unbiased var) + 1e-5) (torch: float64
 * Welford, rounded) of a planar (3, H, W) tensor.
 */
function channelStats(chw: Float32Array, hw: number): Array<[number, number]> {
  const stats: Array<[number, number]> = [];
  for (let c = 0; c < 3; c++) {
    let mean = 0;
    let m2 = 0;
    for (let p = 0; p < hw; p++) {
      const x = chw[c * hw + p]!;
      const delta = x - mean;
      mean += delta / (p + 1);
      m2 += delta * (x - mean);
    }
    const mu = f(torchSumF32(chw, c * hw, hw) / hw);
    const variance = hw > 1 ? f(m2 / (hw - 1)) : NaN;
    const sd = f(Math.sqrt(f(variance + EPS)));
    stats.push([mu, sd]);
  }
  return stats;
}
/** AdaIN colour fix on planar float32 tensors; returns the unclamped float32 result (3, H, W) of `target`'s size. */
export function adainColorFixFloat(target: RgbImage, source: RgbImage): Float32Array {
  checkImage(target, 'target');
  checkImage(source, 'source');
  const t = toTensorCHW(target);
  const s = toTensorCHW(source);
  const hw = target.width * target.height;
  const st = channelStats(t, hw);
  const ss = channelStats(s, source.width * source.height);
  const out = new Float32Array(3 * hw);
  for (let c = 0; c < 3; c++) {
    const [mt, sdt] = st[c]!;
    const [ms, sds] = ss[c]!;
    for (let p = 0; p < hw; p++) {
      const i = c * hw + p;
      const norm = f(f(t[i]! - mt) / sdt);
      out[i] = f(norm * sds) + ms;
    }
  }
  return out;
}

/** One wavelet blur level: 3×3 [1,2,1]⊗[1,2,1]/16 kernel, dilation r, replicate padding r; planar (3, H, W). */
function waveletBlur(img: Float32Array, w: number, h: number, r: number): Float32Array {
  const out = new Float32Array(img.length);
  const K = [0.0625, 0.125, 0.0625, 0.125, 0.25, 0.125, 0.0625, 0.125, 0.0625];
  const hw = w * h;
  const cx = (x: number) => (x < 0 ? 0 : x >= w ? w - 1 : x);
  const cy = (y: number) => (y < 0 ? 0 : y >= h ? h - 1 : y);
  for (let c = 0; c < 3; c++) {
    const base = c * hw;
    for (let y = 0; y < h; y++) {
      const rows = [cy(y - r) * w, y * w, cy(y + r) * w];
      for (let x = 0; x < w; x++) {
        const cols = [cx(x - r), x, cx(x + r)];
        let acc = 0;
        for (let ky = 0; ky < 3; ky++) {
          for (let kx = 0; kx < 3; kx++) acc = f(acc + K[ky * 3 + kx]! * img[base + rows[ky]! + cols[kx]!]!);
        }
        out[base + y * w + x] = acc;
      }
    }
  }
  return out;
}

/** Wavelet decomposition (5 levels by default): returns [high, low] planar float32. */
export function waveletDecomposition(img: Float32Array, w: number, h: number, levels = 5): [Float32Array, Float32Array] {
  const high = new Float32Array(img.length);
  let cur = img;
  let low = img;
  for (let i = 0; i < levels; i++) {
    low = waveletBlur(cur, w, h, 2 ** i);
    for (let j = 0; j < high.length; j++) high[j] = high[j]! + f(cur[j]! - low[j]!);
    cur = low;
  }
  return [high, low];
}

/** Wavelet colour fix; returns the unclamped float32 result (3, H, W). Target and source sizes must match. */
export function waveletColorFixFloat(target: RgbImage, source: RgbImage): Float32Array {
  checkImage(target, 'target');
  checkImage(source, 'source');
  if (target.width !== source.width || target.height !== source.height) {
    throw new XpsrError(
      ERR_SHAPE_MISMATCH,
      `colorFix('wavelet'): target is ${target.width}×${target.height} but source is ${source.width}×${source.height}; sizes must match`,
    );
  }
  const w = target.width,
    h = target.height;
  const [high] = waveletDecomposition(toTensorCHW(target), w, h);
  const [, low] = waveletDecomposition(toTensorCHW(source), w, h);
  const out = new Float32Array(high.length);
  for (let i = 0; i < out.length; i++) out[i] = high[i]! + low[i]!;
  return out;
}

/**
 * Applies a colour fix and returns the interleaved RGB uint8 result (target's size).
 * `'none'` returns a copy of the target's pixels.
 */
export function colorFix(kind: ColorFixKind, target: RgbImage, source: RgbImage): Uint8Array {
  if (kind === 'none') {
    checkImage(target, 'target');
    return target.data.slice();
  }
  if (kind === 'adain') return chwToU8Truncate(adainColorFixFloat(target, source), target.width, target.height);
  if (kind === 'wavelet') return chwToU8Truncate(waveletColorFixFloat(target, source), target.width, target.height);
  throw new XpsrError(ERR_INVALID_ARGUMENT, `colorFix: unknown kind ${JSON.stringify(kind)} (adain, wavelet, none)`);
}
