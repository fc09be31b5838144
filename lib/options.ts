/**
 * Options of XPSR.load() and xpsr.upscale(), their defaults (the official run's settings,
 * docs/architecture.md §7) and their validation: every bad option gets one message naming the option, what
 * was expected and what arrived. The bounds below are the only ones; messages that advise a value stay
 * within them.
 */
import { XpsrError, invalidOption } from './errors.js';
import type { ColorFixKind } from './colorfix.js';
import type { XpsrCaptioner } from './captioners/types.js';
import type { NoiseProvider } from './noise.js';
import type { LowLevelGuidance, Prompts } from './pipeline/prompts.js';
import { OFFICIAL_ADDED_PROMPT, OFFICIAL_NEGATIVE_PROMPT } from './pipeline/prompts.js';
import type { CoreOptions, ProgressEvent, TilingOptions } from './pipeline/core.js';
import type { LongPromptMode } from './pipeline/text.js';
import { SCHEDULER_NAMES } from './schedulers/index.js';
import { resolveBatching, type BatchingOptions } from './batch/options.js';

export interface LoadOptions {
  /**
   * Stable Diffusion 1.5: a diffusers folder (text_encoder/, tokenizer/, vae/, scheduler/), one original-layout
   * checkpoint file (.safetensors fp32/fp16/bf16 or .ckpt), or a Hugging Face repo id found in the local cache.
   */
  sd?: string;
  /** XPSR checkpoint folder (or repo id in the local Hugging Face cache): unet/ and controlnet/. */
  xpsr?: string;
  /** Prefer this diffusers weights variant in every folder ('fp16': model.fp16.safetensors). */
  variant?: string;
  /**
   * For a single-file `sd`: a folder with tokenizer/ and scheduler/ to use instead of the bundled SD-1.5 ones,
   * and text_encoder/config.json, vae/config.json for files whose sizes are not SD-1.5's.
   */
  sdConfig?: string;
  /** One folder holding all six components (used for `sd` and `xpsr` when they are not given). */
  model?: string;
  /** 'auto' (default: CUDA if usable, else CPU with a notice), 'cpu', 'cuda', 'cuda:N'. */
  device?: string;
  /** CPU threads for the CPU backend. Defaults to all hardware threads. */
  threads?: number;
  /** Default captioner for upscale() calls that give no prompts: one Captioner, or `{ high, low }` (one per caption). */
  captioner?: XpsrCaptioner;
  /** Receives notices (CPU fallback, missing optional files). Defaults to console.warn. */
  onNotice?: (message: string) => void;
  /** Dynamic batching of concurrent upscale() calls (default: every call runs alone). */
  batching?: BatchingOptions;
}

export interface UpscaleOptions {
  /** Upscaling factor of the output relative to the input (integer 1..16). Defaults to 4. */
  scale?: number;
  /** Minimum short side of the processed image (official 512). Defaults to 512. */
  processSize?: number;
  /** Denoising steps (1..1000). Defaults to 20 (official). */
  steps?: number;
  /** Classifier-free guidance g (ε = ε_u + g(ε_c − ε_u)); <= 1 disables CFG (batch 1). Defaults to 4.5 (official yaml). */
  guidanceScale?: number;
  /** ControlNet residual scale. Defaults to 1. */
  conditioningScale?: number;
  /** Seed of the noise generator (integer). Defaults to a random seed, reported in the result. */
  seed?: number;
  /** 'ddpm' (official), 'dpmpp' or 'unipc'. Defaults to 'ddpm'. */
  scheduler?: string;
  /** Captions: `{ high, low }`. When absent the captioner (option or XPSR.load's) is asked; else "" each. */
  prompts?: Partial<Prompts>;
  /** Captioner for this call (wins over the load-time one): one Captioner, or `{ high, low }` (one per caption). */
  captioner?: XpsrCaptioner;
  /** Instructions for the captioner (defaults: the XPSR instructions, see docs/captioning.md). */
  instructions?: { high?: string; low?: string };
  /** Appended to the high-level caption. Defaults to the official "clean, high-resolution, 8k, high quality, clear text." */
  addedPrompt?: string;
  /** Negative high-level prompt. Defaults to the official one. */
  negativePrompt?: string;
  /** 'official' (fixed low-level negative text) or 'paper' (keeps the low-level caption). Defaults to 'official'. */
  lowLevelGuidance?: LowLevelGuidance;
  /** 'truncate' (official, 77 tokens) or 'chunks' (75-token chunks joined). Defaults to 'truncate'. */
  longPrompts?: LongPromptMode;
  /** 'lr' (official: noised VAE latent of the input) or 'noise'. Defaults to 'lr'. */
  init?: 'lr' | 'noise';
  /** Timestep of the second noising of the LR latent (official 800). Defaults to 800. */
  addedNoiseLevel?: number;
  /** 'adain' (official), 'wavelet' or 'none'. Defaults to 'adain'. */
  colorFix?: ColorFixKind;
  /**
   * Latent tiling: 'auto' (default: tiles of 320 with overlap 8 when the latent exceeds 320x320, as
   * official), 'on', 'off', or details; `memoryBudgetMB` also tiles (with the largest tile that fits)
   * whenever a whole-latent step would need more activation memory than that.
   */
  tiling?: 'auto' | 'on' | 'off' | (Partial<Omit<TilingOptions, 'memoryBudgetBytes'>> & { memoryBudgetMB?: number });
  /**
   * Tiled VAE encoder/decoder with whole-image GroupNorm statistics: 'auto' (default: above the official
   * sizes, 1088 px input / 1968 px output, or when `tiling.memoryBudgetMB` would be exceeded), 'on', 'off'.
   */
  vaeTiling?: 'auto' | 'on' | 'off';
  /**
   * Largest accepted input in pixels (width*height, 1..2^32). Defaults to 1048576 (1 MP, a 16 MP output at
   * x4: the tiled VAE then holds about 32 GiB of host memory; raise it on machines with the memory).
   */
  maxInputPixels?: number;
  /**
   * Largest accepted aspect ratio (long side / short side, 1..1024) of the input. Defaults to 16. A thin strip
   * is enlarged until its short side reaches `processSize`, so its processed size grows with the ratio.
   */
  maxAspectRatio?: number;
  /**
   * Cancels the call, also while it waits behind other calls on the same instance; the promise rejects with
   * code ERR_CANCELLED and everything is freed.
   */
  signal?: AbortSignal;
  /**
   * Progress of each stage (text, encode, denoise steps, decode, colorfix). An observer: if it throws or
   * returns a rejecting promise, the run still completes and the error is passed to the `onNotice` of
   * XPSR.load once per call (never an unhandled rejection).
   */
  onProgress?: (e: ProgressEvent & { image?: number; images?: number }) => unknown;
  /** Advanced: supply the Gaussian draws (e.g. ReplayNoise for parity runs). Replaces `seed` (the result's seed is then null). */
  noise?: NoiseProvider;
  /** Name of the image for sidecar captions and messages (defaults to the file stem). */
  name?: string;
}

export const DEFAULT_TILING: TilingOptions = { mode: 'auto', tileSize: 320, overlap: 8, maxLatentPixels: 320 * 320 };

/** Validator bounds that messages elsewhere refer to. */
export const LIMITS = Object.freeze({
  maxInputPixels: { min: 1, max: 2 ** 32, default: 1_048_576 },
  maxAspectRatio: { min: 1, max: 1024, default: 16 },
  processSize: { min: 64, max: 8192, default: 512 },
  scale: { min: 1, max: 16, default: 4 },
});

/** The options after defaults and checks: the pipeline's own settings plus the image-level ones. */
export type ResolvedUpscaleOptions = Pick<
  CoreOptions,
  | 'steps'
  | 'guidanceScale'
  | 'conditioningScale'
  | 'scheduler'
  | 'addedPrompt'
  | 'negativePrompt'
  | 'lowLevelGuidance'
  | 'longPrompts'
  | 'init'
  | 'addedNoiseLevel'
  | 'colorFix'
  | 'tiling'
  | 'vaeTiling'
> & {
  scale: number;
  processSize: number;
  seed: number;
  maxInputPixels: number;
  maxAspectRatio: number;
};

function int(name: string, v: unknown, min: number, max: number, def: number): number {
  if (v === undefined) return def;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw invalidOption(name, `an integer between ${min} and ${max}`, v);
  return v;
}

function num(name: string, v: unknown, min: number, max: number, def: number): number {
  if (v === undefined) return def;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw invalidOption(name, `a number between ${min} and ${max}`, v);
  return v;
}

function oneOf<T extends string>(name: string, v: unknown, allowed: readonly T[], def: T): T {
  if (v === undefined) return def;
  if (typeof v !== 'string' || !allowed.includes(v as T)) throw invalidOption(name, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`, v);
  return v as T;
}

function str(name: string, v: unknown, def: string): string {
  if (v === undefined) return def;
  if (typeof v !== 'string') throw invalidOption(name, 'a string', v);
  return v;
}

export function resolveUpscaleOptions(o: UpscaleOptions = {}): ResolvedUpscaleOptions {
  if (o === null || typeof o !== 'object') throw invalidOption('options', 'an object', o);
  let tiling: TilingOptions;
  if (o.tiling === undefined || typeof o.tiling === 'string') {
    tiling = { ...DEFAULT_TILING, mode: oneOf('tiling', o.tiling, ['auto', 'on', 'off'] as const, 'auto') };
  } else if (typeof o.tiling === 'object' && o.tiling !== null) {
    tiling = {
      mode: oneOf('tiling.mode', o.tiling.mode, ['auto', 'on', 'off'] as const, 'auto'),
      tileSize: int('tiling.tileSize', o.tiling.tileSize, 8, 4096, DEFAULT_TILING.tileSize),
      overlap: int('tiling.overlap', o.tiling.overlap, 0, 2048, DEFAULT_TILING.overlap),
      maxLatentPixels: int('tiling.maxLatentPixels', o.tiling.maxLatentPixels, 64, 1 << 30, DEFAULT_TILING.maxLatentPixels),
      memoryBudgetBytes:
        o.tiling.memoryBudgetMB === undefined ? undefined : num('tiling.memoryBudgetMB', o.tiling.memoryBudgetMB, 1, 1 << 24, 0) * 2 ** 20,
    };
    if (tiling.overlap >= tiling.tileSize)
      throw invalidOption('tiling.overlap', `an integer smaller than tileSize (${tiling.tileSize})`, tiling.overlap);
  } else {
    throw invalidOption('tiling', "'auto', 'on', 'off' or an object", o.tiling);
  }
  if (o.prompts !== undefined) {
    if (typeof o.prompts !== 'object' || o.prompts === null) throw invalidOption('prompts', 'an object { high, low }', o.prompts);
    str('prompts.high', o.prompts.high, '');
    str('prompts.low', o.prompts.low, '');
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw invalidOption('signal', 'an AbortSignal', o.signal);
  if (o.noise !== undefined && (o.noise === null || typeof (o.noise as { normal?: unknown }).normal !== 'function'))
    throw invalidOption('noise', 'an object with a normal(n) method (NoiseSource, ReplayNoise)', o.noise);
  if (o.name !== undefined) str('name', o.name, '');
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw invalidOption('onProgress', 'a function', o.onProgress);
  const scheduler = str('scheduler', o.scheduler, 'ddpm');
  if (!SCHEDULER_NAMES.includes(scheduler)) throw invalidOption('scheduler', `one of ${SCHEDULER_NAMES.join(', ')}`, scheduler);
  return {
    scale: int('scale', o.scale, LIMITS.scale.min, LIMITS.scale.max, LIMITS.scale.default),
    processSize: int('processSize', o.processSize, LIMITS.processSize.min, LIMITS.processSize.max, LIMITS.processSize.default),
    steps: int('steps', o.steps, 1, 1000, 20),
    guidanceScale: num('guidanceScale', o.guidanceScale, 0, 100, 4.5),
    conditioningScale: num('conditioningScale', o.conditioningScale, 0, 10, 1),
    seed: int('seed', o.seed, 0, Number.MAX_SAFE_INTEGER, Math.floor(Math.random() * 2 ** 31)),
    scheduler,
    addedPrompt: str('addedPrompt', o.addedPrompt, OFFICIAL_ADDED_PROMPT),
    negativePrompt: str('negativePrompt', o.negativePrompt, OFFICIAL_NEGATIVE_PROMPT),
    lowLevelGuidance: oneOf('lowLevelGuidance', o.lowLevelGuidance, ['official', 'paper'] as const, 'official'),
    longPrompts: oneOf('longPrompts', o.longPrompts, ['truncate', 'chunks'] as const, 'truncate'),
    init: oneOf('init', o.init, ['lr', 'noise'] as const, 'lr'),
    addedNoiseLevel: int('addedNoiseLevel', o.addedNoiseLevel, 0, 999, 800),
    colorFix: oneOf('colorFix', o.colorFix, ['adain', 'wavelet', 'none'] as const, 'adain'),
    tiling,
    vaeTiling: oneOf('vaeTiling', o.vaeTiling, ['auto', 'on', 'off'] as const, 'auto'),
    maxInputPixels: int('maxInputPixels', o.maxInputPixels, LIMITS.maxInputPixels.min, LIMITS.maxInputPixels.max, LIMITS.maxInputPixels.default),
    maxAspectRatio: num('maxAspectRatio', o.maxAspectRatio, LIMITS.maxAspectRatio.min, LIMITS.maxAspectRatio.max, LIMITS.maxAspectRatio.default),
  };
}

/** Accepted `device` values. */
export const DEVICE_PATTERN = /^(auto|cpu|cuda(:\d{1,3})?)$/;

export function checkLoadOptions(o: LoadOptions): void {
  if (o === null || typeof o !== 'object') throw invalidOption('options', 'an object', o);
  for (const k of ['sd', 'xpsr', 'model', 'device', 'sdConfig'] as const)
    if (o[k] !== undefined && typeof o[k] !== 'string') throw invalidOption(k, 'a string', o[k]);
  if (o.device !== undefined && !DEVICE_PATTERN.test(o.device)) throw invalidOption('device', "'auto', 'cpu', 'cuda' or 'cuda:N'", o.device);
  if (o.onNotice !== undefined && typeof o.onNotice !== 'function') throw invalidOption('onNotice', 'a function', o.onNotice);
  if (o.variant !== undefined && (typeof o.variant !== 'string' || !/^[A-Za-z0-9_-]+$/.test(o.variant)))
    throw invalidOption('variant', "a variant name such as 'fp16'", o.variant);
  if (!o.model && !(o.sd && o.xpsr)) throw new XpsrError('ERR_INVALID_OPTION', 'XPSR.load needs { sd, xpsr } (or { model } holding all components)');
  if (o.threads !== undefined) int('threads', o.threads, 0, 1024, 0);
  resolveBatching(o.batching);
}
