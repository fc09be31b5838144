/**
 * Pure tiling geometry and blend weights (docs/architecture.md §7.8 latent tiling, §7.9 tiled VAE), plus a
 * memory-budget helper. No pixels, no I/O: everything here is deterministic integer / float64 math that
 * the engine (TS or native) can follow.
 */

import { XpsrError, ERR_INVALID_ARGUMENT, ERR_OUT_OF_MEMORY, invalidOption } from './errors.js';

// ------------------------------------------------------------------------------------------------
// (a) Tiled latent diffusion (§7.8)
// ------------------------------------------------------------------------------------------------

/** Official defaults (test.py argparse): latent tile 320, overlap 8 (latent pixels). */
export const LATENT_TILE_SIZE = 320;
export const LATENT_TILE_OVERLAP = 8;

export interface LatentTileOptions {
  /** Nominal tile size in latent pixels (default 320). The used size is min(tileSize, h, w). */
  tileSize?: number;
  /** Overlap in latent pixels (default 8). */
  overlap?: number;
}

export interface LatentTile {
  /** Left / top offset in latent pixels. */
  x: number;
  y: number;
  /** Index along x (the official code's `row`) and along y (`col`). */
  ix: number;
  iy: number;
}

export interface LatentTiling {
  height: number;
  width: number;
  /** Square tile side actually used: min(tileSize, h, w). */
  tileSize: number;
  overlap: number;
  nx: number;
  ny: number;
  /** Offsets along x (length nx) and y (length ny); the last one is aligned to the end. */
  xs: number[];
  ys: number[];
  /**
   * Tiles in the official order: x index outer, y index inner (for ix: for iy:). The order matters
   * for bit-level parity of the float32 blend accumulation.
   */
  tiles: LatentTile[];
}

function posInt(name: string, v: unknown, min = 1): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw invalidOption(name, `an integer >= ${min}`, v);
  }
  return v;
}

/** The official pipeline tiles the latent only when h·w > tileSize² (area rule, not side length). */
export function latentTilingNeeded(h: number, w: number, tileSize: number = LATENT_TILE_SIZE): boolean {
  return h * w > tileSize * tileSize;
}

/** Smallest n ≥ 1 with (n−1)(ts−ov) + ts ≥ size (the official while-loop). */
function tileCount(size: number, ts: number, ov: number): number {
  let n = 0;
  let cur = 0;
  while (cur < size) {
    cur = Math.max(n * ts - ov * n, 0) + ts;
    n++;
  }
  return n;
}

function tileOffsets(size: number, ts: number, ov: number, n: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < n; r++) out.push(r === n - 1 ? size - ts : Math.max(r * ts - ov * r, 0));
  return out;
}

/** Latent tile grid of the official pipeline for a latent of h×w. */
export function latentTiles(h: number, w: number, options: LatentTileOptions = {}): LatentTiling {
  posInt('height', h);
  posInt('width', w);
  const nominal = posInt('tileSize', options.tileSize ?? LATENT_TILE_SIZE);
  const overlap = posInt('overlap', options.overlap ?? LATENT_TILE_OVERLAP, 0);
  const ts = Math.min(nominal, Math.min(h, w));
  if (overlap >= ts && Math.max(h, w) > ts) {
    // the official loop would never end here (tiles do not advance)
    throw invalidOption('overlap', `an integer smaller than the tile size ${ts}`, overlap);
  }
  const nx = tileCount(w, ts, overlap);
  const ny = tileCount(h, ts, overlap);
  const xs = tileOffsets(w, ts, overlap, nx);
  const ys = tileOffsets(h, ts, overlap, ny);
  const tiles: LatentTile[] = [];
  for (let ix = 0; ix < nx; ix++) for (let iy = 0; iy < ny; iy++) tiles.push({ x: xs[ix]!, y: ys[iy]!, ix, iy });
  return { height: h, width: w, tileSize: ts, overlap, nx, ny, xs, ys, tiles };
}

/**
 * The official Gaussian tile weights (`_gaussian_weights`), float64, row-major [tileHeight][tileWidth]:
 *   wx(x) = exp(−(x − (W−1)/2)² / W² / (2·0.01)) / √(2π·0.01)
 *   wy(y) = exp(−(y − H/2)² / H² / (2·0.01)) / √(2π·0.01)      ← y centre H/2, not (H−1)/2 [SURPRISE]
 *   weight(y, x) = wy(y)·wx(x)
 */
export function gaussianWeights(tileWidth: number, tileHeight: number = tileWidth): Float64Array {
  posInt('tileWidth', tileWidth);
  posInt('tileHeight', tileHeight);
  const variance = 0.01;
  const norm = Math.sqrt(2 * Math.PI * variance);
  const xp = new Float64Array(tileWidth);
  let mid = (tileWidth - 1) / 2;
  for (let x = 0; x < tileWidth; x++) xp[x] = Math.exp((-(x - mid) * (x - mid)) / (tileWidth * tileWidth) / (2 * variance)) / norm;
  const yp = new Float64Array(tileHeight);
  mid = tileHeight / 2;
  for (let y = 0; y < tileHeight; y++) yp[y] = Math.exp((-(y - mid) * (y - mid)) / (tileHeight * tileHeight) / (2 * variance)) / norm;
  const w = new Float64Array(tileWidth * tileHeight);
  for (let y = 0; y < tileHeight; y++) for (let x = 0; x < tileWidth; x++) w[y * tileWidth + x] = yp[y]! * xp[x]!;
  return w;
}

export interface BlendShape {
  batch: number;
  channels: number;
  height: number;
  width: number;
  tileHeight: number;
  tileWidth: number;
  /** Per-tile weights [tileHeight*tileWidth] (default: gaussianWeights(tileWidth, tileHeight)). */
  weights?: Float64Array;
}

/**
 * Accumulates tile outputs ([B,C,th,tw] float32, NCHW) into a full [B,C,H,W] map, like the official code:
 *   acc  (float32) += tile · weight   (product and sum in float64, stored as float32)
 *   cont (float32) += weight
 *   result = acc / cont (float32)
 * Pixels no tile covered come out as 0.
 */
export class TileBlender {
  readonly batch: number;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  readonly tileHeight: number;
  readonly tileWidth: number;
  private readonly weights: Float64Array;
  private readonly acc: Float32Array;
  private readonly cont: Float32Array;
  private count = 0;

  constructor(shape: BlendShape) {
    this.batch = posInt('batch', shape.batch);
    this.channels = posInt('channels', shape.channels);
    this.height = posInt('height', shape.height);
    this.width = posInt('width', shape.width);
    this.tileHeight = posInt('tileHeight', shape.tileHeight);
    this.tileWidth = posInt('tileWidth', shape.tileWidth);
    if (this.tileHeight > this.height || this.tileWidth > this.width) {
      throw new XpsrError(ERR_INVALID_ARGUMENT, `Tile ${this.tileWidth}x${this.tileHeight} is larger than the ${this.width}x${this.height} map`);
    }
    this.weights = shape.weights ?? gaussianWeights(this.tileWidth, this.tileHeight);
    if (this.weights.length !== this.tileHeight * this.tileWidth) {
      throw new XpsrError(ERR_INVALID_ARGUMENT, `Tile weights: expected ${this.tileHeight * this.tileWidth} values, got ${this.weights.length}`);
    }
    this.acc = new Float32Array(this.batch * this.channels * this.height * this.width);
    this.cont = new Float32Array(this.height * this.width);
  }

  /** Number of tiles added so far. */
  get tiles(): number {
    return this.count;
  }

  /** Add one tile output [B,C,th,tw] whose top-left corner is at (x, y). */
  add(tile: Float32Array, x: number, y: number): void {
    const { batch: B, channels: C, height: H, width: W, tileHeight: th, tileWidth: tw } = this;
    if (!(tile instanceof Float32Array) || tile.length !== B * C * th * tw) {
      throw new XpsrError(
        ERR_INVALID_ARGUMENT,
        `Tile: expected a Float32Array [${B},${C},${th},${tw}] (${B * C * th * tw} values), got ${
          tile instanceof Float32Array ? tile.length : typeof tile
        }`,
      );
    }
    if (!Number.isInteger(x) || !Number.isInteger(y) || x < 0 || y < 0 || x + tw > W || y + th > H) {
      throw new XpsrError(ERR_INVALID_ARGUMENT, `Tile at (${x}, ${y}) of size ${tw}x${th} does not fit in ${W}x${H}`);
    }
    const wts = this.weights;
    const acc = this.acc;
    for (let p = 0; p < B * C; p++) {
      const tb = p * th * tw;
      const ab = p * H * W;
      for (let ty = 0; ty < th; ty++) {
        const ar = ab + (y + ty) * W + x;
        const tr = tb + ty * tw;
        const wr = ty * tw;
        for (let tx = 0; tx < tw; tx++) acc[ar + tx] = acc[ar + tx]! + tile[tr + tx]! * wts[wr + tx]!;
      }
    }
    const cont = this.cont;
    for (let ty = 0; ty < th; ty++) {
      const cr = (y + ty) * W + x;
      const wr = ty * tw;
      for (let tx = 0; tx < tw; tx++) cont[cr + tx] = cont[cr + tx]! + wts[wr + tx]!;
    }
    this.count++;
  }

  /** The normalised result [B,C,H,W] (float32). */
  result(): Float32Array {
    const { acc, cont } = this;
    const HW = this.height * this.width;
    const out = new Float32Array(acc.length);
    for (let p = 0; p < this.batch * this.channels; p++) {
      const b = p * HW;
      for (let i = 0; i < HW; i++) {
        const c = cont[i]!;
        out[b + i] = c === 0 ? 0 : acc[b + i]! / c;
      }
    }
    return out;
  }
}

// ------------------------------------------------------------------------------------------------
// (b) Tiled VAE (§7.9): when to tile and the official split parameters. The split itself (core boxes,
// padding, tile size rounding) lives in one place, the engine: native/engine/models/vae_tiled.cpp.
// ------------------------------------------------------------------------------------------------

/** The official split of the tiled VAE: nominal tile size and padding. */
export interface VaeTileOptions {
  /** Nominal tile size: 1024 (encoder, image px) / 224 (decoder, latent px). */
  tile: number;
  /** Padding: 32 (encoder) / 11 (decoder). */
  pad: number;
}

export const VAE_ENCODER_TILING: Readonly<VaeTileOptions> = Object.freeze({ tile: 1024, pad: 32 });
export const VAE_DECODER_TILING: Readonly<VaeTileOptions> = Object.freeze({ tile: 224, pad: 11 });

/** Whether the official VAE hook tiles an input of H×W (image px for the encoder, latent px for the decoder). */
export function vaeTilingNeeded(h: number, w: number, options: VaeTileOptions): boolean {
  return Math.max(h, w) > options.pad * 2 + options.tile;
}

// ------------------------------------------------------------------------------------------------
// (c) Memory budget
// ------------------------------------------------------------------------------------------------

export interface ChooseTilingOptions {
  /** Bytes the denoiser (ControlNet + UNet, CFG batch) may use for activations. */
  memoryBudgetBytes: number;
  /** Activation bytes per latent pixel of a tile (linear term; measure it per engine/precision). */
  bytesPerLatentPixel: number;
  /** Extra bytes per (latent pixel)² for attention that materialises the score matrix (0 with flash attention). */
  bytesPerLatentPixelSquared?: number;
  /** Fixed bytes per denoiser call independent of the tile size (default 0). */
  fixedBytes?: number;
  /** Largest tile side (default 320 = the official tile size). */
  maxTileSize?: number;
  /** Overlap between tiles (default 8, the official value). */
  overlap?: number;
  /** Smallest acceptable tile side before giving up (default 32). */
  minTileSize?: number;
}

export interface TilingChoice {
  /** false: run the whole latent at once. */
  tiled: boolean;
  /** 'official' = the pipeline's own rule (h·w > 320²) with its geometry; 'budget' = smaller tiles to fit memory. */
  reason: 'fits' | 'official' | 'budget';
  /** Tile side (= min(h, w, tile) when tiled; the latent size otherwise). */
  tileSize: number;
  overlap: number;
  /** Estimated peak activation bytes of one denoiser call with this choice. */
  estimatedBytes: number;
  /** Grid when tiled. */
  tiling?: LatentTiling;
}

/**
 * Decide whether and how to tile the latent for the denoiser.
 *
 * Memory model (per denoiser call, i.e. per tile): estimate(p) = fixedBytes + bytesPerLatentPixel·p +
 * bytesPerLatentPixelSquared·p², with p = tile height × tile width in latent pixels. The caller
 * measures the coefficients for its engine (precision, attention kernel, CFG batch of 2).
 *
 * Rules, in order:
 *  1. h·w > maxTileSize² → the official tiling (tile min(maxTileSize, h, w), overlap 8): required for
 *     parity with the official pipeline, also used whenever it fits the budget.
 *  2. otherwise, if the whole latent fits → no tiling (the official behaviour).
 *  3. otherwise (or if the official tile does not fit) → the largest square tile, a multiple of 8 when
 *     possible, with estimate ≤ budget; same offsets/weights rules as the official tiling. Results then
 *     differ slightly from an untiled run (documented trade-off).
 *  4. nothing ≥ minTileSize fits → XpsrError(ERR_OUT_OF_MEMORY).
 */
export function chooseTiling(latentH: number, latentW: number, options: ChooseTilingOptions): TilingChoice {
  posInt('latentHeight', latentH);
  posInt('latentWidth', latentW);
  const { memoryBudgetBytes, bytesPerLatentPixel } = options;
  if (typeof memoryBudgetBytes !== 'number' || !(memoryBudgetBytes > 0)) {
    throw invalidOption('memoryBudgetBytes', 'a positive number of bytes', memoryBudgetBytes);
  }
  if (typeof bytesPerLatentPixel !== 'number' || !(bytesPerLatentPixel >= 0) || !Number.isFinite(bytesPerLatentPixel)) {
    throw invalidOption('bytesPerLatentPixel', 'a non-negative number', bytesPerLatentPixel);
  }
  const quad = options.bytesPerLatentPixelSquared ?? 0;
  if (typeof quad !== 'number' || !(quad >= 0) || !Number.isFinite(quad)) {
    throw invalidOption('bytesPerLatentPixelSquared', 'a non-negative number', quad);
  }
  const fixed = options.fixedBytes ?? 0;
  if (typeof fixed !== 'number' || !(fixed >= 0) || !Number.isFinite(fixed)) throw invalidOption('fixedBytes', 'a non-negative number', fixed);
  const maxTile = posInt('maxTileSize', options.maxTileSize ?? LATENT_TILE_SIZE);
  const overlap = posInt('overlap', options.overlap ?? LATENT_TILE_OVERLAP, 0);
  const minTile = posInt('minTileSize', options.minTileSize ?? 32);

  const estimate = (th: number, tw: number): number => {
    const p = th * tw;
    return fixed + bytesPerLatentPixel * p + quad * p * p;
  };

  const whole = estimate(latentH, latentW);
  if (!latentTilingNeeded(latentH, latentW, maxTile)) {
    if (whole <= memoryBudgetBytes) {
      return { tiled: false, reason: 'fits', tileSize: Math.max(latentH, latentW), overlap, estimatedBytes: whole };
    }
  } else {
    const tiling = latentTiles(latentH, latentW, { tileSize: maxTile, overlap });
    const est = estimate(tiling.tileSize, tiling.tileSize);
    if (est <= memoryBudgetBytes) return { tiled: true, reason: 'official', tileSize: tiling.tileSize, overlap, estimatedBytes: est, tiling };
  }

  // shrink: largest side s ≤ min(h, w, maxTile) with estimate(s, s) ≤ budget; multiples of 8 first
  const cap = Math.min(maxTile, latentH, latentW);
  const fits = (s: number): boolean => estimate(s, s) <= memoryBudgetBytes;
  let best = 0;
  for (let s = cap - (cap % 8); s >= 8 && best === 0; s -= 8) if (fits(s)) best = s;
  for (let s = cap; s >= 1 && best === 0; s--) if (fits(s)) best = s;
  const floor = Math.min(minTile, cap);
  if (best === 0 || best < floor || (best <= overlap && best < Math.max(latentH, latentW))) {
    const need = estimate(floor, floor);
    throw new XpsrError(
      ERR_OUT_OF_MEMORY,
      `The memory budget of ${memoryBudgetBytes} bytes does not fit even a ${floor}x${floor} latent tile ` +
        `(estimated ${Math.ceil(need)} bytes); raise the budget or lower the precision`,
      { memoryBudgetBytes, estimatedBytes: need, latentHeight: latentH, latentWidth: latentW },
    );
  }
  const tiling = latentTiles(latentH, latentW, { tileSize: best, overlap });
  return { tiled: true, reason: 'budget', tileSize: tiling.tileSize, overlap, estimatedBytes: estimate(best, best), tiling };
}
