/**
 * Memory per pixel of each stage, in one place, and the size checks made BEFORE any pixel is decoded or
 * allocated: an input whose processed size cannot run on this machine is refused at once with a coded
 * error that names the option to change (in the API's terms; the CLI swaps in its flags).
 *
 * The constants are measured planned-arena sizes of the SD-1.5 networks (RunStats.arenaBytes, float32 on
 * the CPU backend; fp16 on CUDA halves them). Attention is flash-style, so nothing grows quadratically.
 */
import { totalmem } from 'node:os';
import { XpsrError, ERR_IMAGE_TOO_LARGE } from '../errors.js';

/** Activation bytes per latent pixel of one CFG step (ControlNet + UNet, batch 2): 13 MiB at 16x16 on the CPU. */
export const STEP_BYTES_PER_LATENT_PIXEL = 56 * 1024;
/** Untiled VAE decoder activations per output pixel (10 GiB at 2048x2048). */
export const VAE_DECODER_BYTES_PER_PIXEL = 2560;
/** Untiled VAE encoder activations per input pixel (6 GiB at 2048x2048). */
export const VAE_ENCODER_BYTES_PER_PIXEL = 1536;
/** Tiled VAE decoder: the whole-image host maps kept between segments, per output pixel. */
export const TILED_VAE_HOST_BYTES_PER_PIXEL = 2048;
/** Share of the machine's RAM a run may plan to use on the host. */
export const HOST_MEMORY_SHARE = 0.85;

const precisionFactor = (device: string) => (device.startsWith('cuda') ? 0.5 : 1);

/** Activation bytes per latent pixel of one CFG step on `device`. */
export function stepBytesPerLatentPixel(device: string): number {
  return STEP_BYTES_PER_LATENT_PIXEL * precisionFactor(device);
}

/** Untiled VAE activation bytes for an image of `pixels` (decoder: output pixels; encoder: input pixels). */
export function vaeActivationBytes(pixels: number, decoder: boolean, device: string): number {
  return pixels * (decoder ? VAE_DECODER_BYTES_PER_PIXEL : VAE_ENCODER_BYTES_PER_PIXEL) * precisionFactor(device);
}

/**
 * Host bytes the VAE decode of an image of `pixels` needs: the whole-image maps when tiled; the activation
 * arena when untiled on the CPU (on CUDA the untiled arena lives on the device).
 */
export function decodeHostBytes(pixels: number, tiled: boolean, device: string): number {
  if (tiled) return pixels * TILED_VAE_HOST_BYTES_PER_PIXEL;
  return device.startsWith('cuda') ? 0 : vaeActivationBytes(pixels, true, device);
}

const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;

export interface SizeCheck {
  /** How the input is named in messages ('photo.jpg', '<buffer of 123 bytes>'). */
  what: string;
  /** Input size (after EXIF orientation). */
  width: number;
  height: number;
  /** Size the networks would see (lib/image/preprocess.ts preprocessGeometry). */
  processedWidth: number;
  processedHeight: number;
  maxAspectRatio: number;
  /** The largest value the 'maxAspectRatio' validator accepts (advice never goes above it). */
  maxAspectRatioLimit: number;
  /** Host bytes the run would need at its largest (decodeHostBytes). */
  hostBytes: number;
  /** Host memory available to plan with (default: HOST_MEMORY_SHARE of the machine's RAM). */
  hostBudget?: number;
}

/**
 * Refuses, before any allocation, an input that is too thin or whose processed size would not fit in host
 * memory: XpsrError ERR_IMAGE_TOO_LARGE naming the option to change and a value the validator accepts.
 */
export function checkProcessingSize(c: SizeCheck): void {
  const budget = c.hostBudget ?? totalmem() * HOST_MEMORY_SHARE;
  const ratio = Math.max(c.width, c.height) / Math.min(c.width, c.height);
  const fits = c.hostBytes <= budget;
  const details = {
    input: c.what,
    width: c.width,
    height: c.height,
    processedWidth: c.processedWidth,
    processedHeight: c.processedHeight,
    aspectRatio: ratio,
    maxAspectRatio: c.maxAspectRatio,
    hostBytes: c.hostBytes,
    hostBudget: budget,
  };
  const processed = `would be processed at ${c.processedWidth}x${c.processedHeight}`;
  if (ratio > c.maxAspectRatio) {
    const need = Math.ceil(ratio);
    const advice =
      fits && need <= c.maxAspectRatioLimit
        ? `raise 'maxAspectRatio' to at least ${need} to process it`
        : fits
          ? `the largest accepted 'maxAspectRatio' is ${c.maxAspectRatioLimit}; crop it`
          : `it would need about ${gib(c.hostBytes)} of host memory (this machine plans with ${gib(budget)}); crop it`;
    throw new XpsrError(
      ERR_IMAGE_TOO_LARGE,
      `Image ${c.what} is ${c.width}x${c.height}, an aspect ratio of ${ratio.toFixed(ratio < 10 ? 1 : 0)}:1, more than 'maxAspectRatio' ` +
        `(${c.maxAspectRatio}); it ${processed}. ${cap(advice)}`,
      { ...details, option: 'maxAspectRatio' },
    );
  }
  if (!fits) {
    throw new XpsrError(
      ERR_IMAGE_TOO_LARGE,
      `Image ${c.what} (${c.width}x${c.height}) ${processed}, which needs about ${gib(c.hostBytes)} of host memory, more than this ` +
        `machine plans with (${gib(budget)} of ${gib(totalmem())}); use a smaller input or a lower 'scale' or 'processSize'`,
      { ...details, option: 'scale' },
    );
  }
}

function cap(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1) + '.';
}
