/**
 * The XPSR class: load the six components once (CLIP tokenizer + text encoder, VAE, XPSR UNet and
 * ControlNet, scheduler config), then upscale images:
 *
 *   const xpsr = await XPSR.load({ sd: '/models/sd15', xpsr: '/models/xpsr', device: 'auto' });
 *   const out = await xpsr.upscale('photo.jpg', { steps: 20, seed: 1, onProgress, signal });
 *   await out.toFile('photo-x4.png');
 *
 * Image in -> decode (sharp) -> official preprocessing -> captions -> pipeline (lib/pipeline/core) ->
 * output resize -> alpha recombined. One call at a time runs on the engine; concurrent calls queue.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Sharp } from 'sharp';
import { Engine, type ControlNet, type ClipTextEncoder, type UNet, type Vae } from './engine/engine.js';
import { XpsrError } from './errors.js';
import { checkLoadOptions, resolveUpscaleOptions, type LoadOptions, type UpscaleOptions } from './options.js';
import { decodeImage, encodeImage, toSharp, type ImageInput } from './image/io.js';
import { preprocess, resizeToOutput, upscaleAlpha } from './image/preprocess.js';
import { ClipTokenizer } from './tokenizer/index.js';
import { NoiseSource } from './noise.js';
import { runCore, type PipelineModels, type Stage } from './pipeline/core.js';
import { TextConditioner } from './pipeline/text.js';
import type { Prompts } from './pipeline/prompts.js';
import { captionXpsr } from './captioners/factory.js';

/** SD-1.5's scheduler_config.json (used when the SD folder has no scheduler/). */
const SD15_SCHEDULER = {
  _class_name: 'PNDMScheduler', num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012,
  beta_schedule: 'scaled_linear', trained_betas: null, clip_sample: false, set_alpha_to_one: false,
  skip_prk_steps: true, steps_offset: 1, prediction_type: 'epsilon',
};

export interface UpscaleResult {
  /** Raw pixels, row-major, `channels` per pixel (3 = RGB, 4 = RGBA when the input had alpha). */
  image: Buffer;
  width: number;
  height: number;
  channels: 3 | 4;
  /** A sharp instance over the pixels (chain any sharp operation, e.g. `.webp().toBuffer()`). */
  sharp(): Sharp;
  /** Encodes to a format ('png', 'jpeg', 'webp', 'tiff') or the format of a file name. */
  toBuffer(format?: string): Promise<Buffer>;
  /** Writes the image; the format comes from the extension (.png .jpg .jpeg .webp .tif .tiff). */
  toFile(file: string): Promise<void>;
  /** The captions used (before the added prompt) and the seed. */
  prompts: Prompts;
  seed: number;
  /** Size of the processed image the networks saw. */
  processed: { width: number; height: number };
  timesteps: number[];
  /** Per-stage wall time in milliseconds (caption, preprocess, text, encode, denoise, decode, colorfix, total). */
  timingsMs: Record<Stage | 'caption' | 'preprocess' | 'postprocess' | 'total', number>;
  tiled: { tiles: number; tileSize: number } | null;
}

interface Components {
  textEncoder: string;
  tokenizer: string;
  vae: string;
  scheduler?: string;
  unet: string;
  controlnet: string;
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Finds each component folder in the SD / XPSR roots (either root may hold any component). */
export function resolveComponents(o: LoadOptions): Components {
  const sd = o.sd ?? o.model!;
  const xp = o.xpsr ?? o.model!;
  for (const [name, root] of [['sd', sd], ['xpsr', xp]] as const)
    if (!isDir(root)) throw new XpsrError('ERR_WEIGHTS_MISSING', `${name === 'sd' && !o.sd ? 'model' : name} folder not found: ${root}`);
  const find = (sub: string, first: string, second: string): string | undefined =>
    [first, second].map((r) => path.join(r, sub)).find((p) => isDir(p));
  const missing: string[] = [];
  const need = (sub: string, first: string, second: string) => {
    const p = find(sub, first, second);
    if (!p) missing.push(`${sub}/ (looked in ${[...new Set([first, second])].join(' and ')})`);
    return p ?? '';
  };
  const c: Components = {
    textEncoder: need('text_encoder', sd, xp),
    tokenizer: need('tokenizer', sd, xp),
    vae: need('vae', sd, xp),
    scheduler: find('scheduler', sd, xp),
    unet: need('unet', xp, sd),
    controlnet: need('controlnet', xp, sd),
  };
  if (missing.length)
    throw new XpsrError('ERR_WEIGHTS_MISSING', `XPSR.load: missing component folder${missing.length > 1 ? 's' : ''}:\n  ${missing.join('\n  ')}\n` +
      'Expected Stable Diffusion 1.5 in diffusers layout (text_encoder/, tokenizer/, vae/, scheduler/) and the XPSR checkpoint (unet/, controlnet/).');
  return c;
}

/** @internal The loaded networks, tokenizer and scheduler config (XPSR.loadFrom). */
export interface LoadedComponents {
  tokenizer: ClipTokenizer;
  textEncoder: ClipTextEncoder;
  vae: Vae;
  unet: UNet;
  controlnet: ControlNet;
  schedulerConfig: Record<string, unknown>;
}

export class XPSR {
  #models: PipelineModels | undefined;
  readonly #options: LoadOptions;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(models: PipelineModels, options: LoadOptions) {
    this.#models = models;
    this.#options = options;
  }

  /** Loads every component on a device. Errors name the missing or malformed file, key and shape. */
  static async load(options: LoadOptions): Promise<XPSR> {
    checkLoadOptions(options);
    const c = resolveComponents(options);
    const notice = options.onNotice ?? ((m: string) => console.warn(m));
    const engine = await Engine.create({ device: options.device ?? 'auto', threads: options.threads, onNotice: notice });
    try {
      const tokenizer = await ClipTokenizer.fromDirectory(c.tokenizer);
      const textEncoder: ClipTextEncoder = await engine.loadTextEncoder(c.textEncoder);
      const vae: Vae = await engine.loadVae(c.vae);
      const unet: UNet = await engine.loadUNet(c.unet);
      const controlnet: ControlNet = await engine.loadControlNet(c.controlnet);
      let schedulerConfig: Record<string, unknown> = SD15_SCHEDULER;
      const sc = c.scheduler && path.join(c.scheduler, 'scheduler_config.json');
      if (sc && existsSync(sc)) {
        try {
          schedulerConfig = JSON.parse(readFileSync(sc, 'utf8')) as Record<string, unknown>;
        } catch (e) {
          throw new XpsrError('ERR_WEIGHTS_INVALID', `${sc}: not valid JSON (${(e as Error).message})`);
        }
      } else {
        notice('xpsr: no scheduler/scheduler_config.json found; using the SD-1.5 DDPM settings');
      }
      return new XPSR({ engine, text: new TextConditioner(tokenizer, textEncoder), vae, unet, controlnet, schedulerConfig }, options);
    } catch (e) {
      engine.dispose();
      throw e;
    }
  }

  /**
   * @internal Like load(), with the components made by `make` on the new engine instead of read from
   * folders (`xpsr demo`: the tiny model with seeded synthetic weights, lib/demo/model.ts).
   */
  static async loadFrom(options: Omit<LoadOptions, 'sd' | 'xpsr' | 'model'>, make: (engine: Engine) => Promise<LoadedComponents>): Promise<XPSR> {
    const engine = await Engine.create({ device: options.device ?? 'auto', threads: options.threads, onNotice: options.onNotice ?? ((m) => console.warn(m)) });
    try {
      const c = await make(engine);
      return new XPSR({ engine, text: new TextConditioner(c.tokenizer, c.textEncoder), vae: c.vae, unet: c.unet, controlnet: c.controlnet,
        schedulerConfig: c.schedulerConfig }, options);
    } catch (e) {
      engine.dispose();
      throw e;
    }
  }

  get disposed(): boolean {
    return this.#models === undefined;
  }

  /** The device the networks run on ('cpu', 'cuda:0', ...) and its description. */
  get device(): string {
    return this.#ensure().engine.device;
  }
  get deviceDescription(): string {
    return this.#ensure().engine.description;
  }

  #ensure(): PipelineModels {
    if (!this.#models) throw new XpsrError('ERR_DISPOSED', 'this XPSR instance has been disposed');
    return this.#models;
  }

  /** Restores and upscales one image (path, Buffer or sharp instance). */
  async upscale(input: ImageInput, options: UpscaleOptions = {}): Promise<UpscaleResult> {
    this.#ensure();
    const opts = resolveUpscaleOptions(options);
    // One image at a time on the engine; later calls wait their turn (or their signal).
    const prev = this.#queue;
    let release!: () => void;
    this.#queue = new Promise<void>((r) => (release = r));
    try {
      await prev;
      if (options.signal?.aborted) throw new XpsrError('ERR_CANCELLED', 'cancelled');
      return await this.#upscaleOne(input, options, opts);
    } finally {
      release();
    }
  }

  /** Upscales several images with the same options, reusing networks and plans; results in input order. */
  async upscaleMany(inputs: ImageInput[], options: UpscaleOptions = {}): Promise<UpscaleResult[]> {
    const out: UpscaleResult[] = [];
    for (let i = 0; i < inputs.length; i++) {
      const onProgress = options.onProgress;
      out.push(await this.upscale(inputs[i], { ...options, onProgress: onProgress && ((e) => onProgress({ ...e, image: i + 1, images: inputs.length })) }));
    }
    return out;
  }

  async #upscaleOne(input: ImageInput, options: UpscaleOptions, opts: ReturnType<typeof resolveUpscaleOptions>): Promise<UpscaleResult> {
    const models = this.#ensure();
    const t0 = performance.now();
    const name = options.name ?? (typeof input === 'string' ? path.parse(input).name : undefined);
    const decoded = await decodeImage(input, { maxInputPixels: opts.maxInputPixels, name: typeof input === 'string' ? input : name });
    let ts = performance.now();
    const pre = preprocess({ rgb: decoded.rgb, width: decoded.width, height: decoded.height }, { scale: opts.scale, processSize: opts.processSize });
    const preprocessMs = performance.now() - ts;

    // Captions: explicit prompts win; else the captioner; else "" (as the official code with empty files).
    ts = performance.now();
    let prompts: Prompts = { high: options.prompts?.high ?? '', low: options.prompts?.low ?? '' };
    const captioner = options.captioner ?? this.#options.captioner;
    if (captioner && (options.prompts?.high === undefined || options.prompts?.low === undefined)) {
      options.onProgress?.({ stage: 'text', step: 0, total: 1, elapsedMs: performance.now() - t0 });
      const caps = await captionXpsr(captioner, { data: decoded.rgb, width: decoded.width, height: decoded.height, channels: 3 },
        { signal: options.signal, name, instructions: options.instructions });
      prompts = { high: options.prompts?.high ?? caps.high, low: options.prompts?.low ?? caps.low };
    }
    const captionMs = performance.now() - ts;

    const { scale: _s, processSize: _p, seed, maxInputPixels: _m, ...pipelineOptions } = opts;
    const core = await runCore(models, { rgb: pre.rgb, width: pre.width, height: pre.height }, prompts, {
      ...pipelineOptions,
      noise: options.noise ?? new NoiseSource(seed),
      signal: options.signal,
      onProgress: options.onProgress,
    });

    // Back to (scale*w, scale*h) (a no-op in the common case) and the alpha channel recombined.
    ts = performance.now();
    const { outWidth: W, outHeight: H } = pre;
    const rgb = resizeToOutput(core.image, core.width, core.height, W, H);
    let pixels: Buffer;
    let channels: 3 | 4 = 3;
    if (decoded.alpha) {
      const a = upscaleAlpha(decoded.alpha, decoded.width, decoded.height, W, H);
      pixels = Buffer.alloc(W * H * 4);
      for (let i = 0; i < W * H; i++) {
        pixels[4 * i] = rgb[3 * i];
        pixels[4 * i + 1] = rgb[3 * i + 1];
        pixels[4 * i + 2] = rgb[3 * i + 2];
        pixels[4 * i + 3] = a[i];
      }
      channels = 4;
    } else {
      pixels = Buffer.from(rgb.buffer, rgb.byteOffset, rgb.byteLength);
    }
    const postMs = performance.now() - ts;
    const img = { rgb: channels === 3 ? pixels : rgb, alpha: channels === 4 ? extractAlpha(pixels) : undefined, width: W, height: H };
    return {
      image: pixels,
      width: W,
      height: H,
      channels,
      sharp: () => toSharp(img),
      toBuffer: (format = 'png') => encodeImage(img, format),
      toFile: async (file: string) => {
        const { writeFile } = await import('node:fs/promises');
        await writeFile(file, await encodeImage(img, file));
      },
      prompts,
      seed: opts.seed,
      processed: { width: pre.width, height: pre.height },
      timesteps: core.timesteps,
      timingsMs: {
        caption: captionMs,
        preprocess: preprocessMs,
        ...core.timingsMs,
        postprocess: postMs,
        total: performance.now() - t0,
      },
      tiled: core.tiled,
    };
  }

  /** Frees every network, plan and device buffer. Idempotent; a running call finishes first. */
  async dispose(): Promise<void> {
    const m = this.#models;
    if (!m) return;
    this.#models = undefined;
    await this.#queue.catch(() => undefined);
    m.engine.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

function extractAlpha(rgba: Buffer): Uint8Array {
  const n = rgba.length / 4;
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i++) a[i] = rgba[4 * i + 3];
  return a;
}
