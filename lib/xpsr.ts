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
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Sharp } from 'sharp';
import { Engine, type ControlNet, type ClipTextEncoder, type UNet, type Vae } from './engine/engine.js';
import { XpsrError } from './errors.js';
import { LIMITS, checkLoadOptions, resolveUpscaleOptions, type LoadOptions, type ResolvedUpscaleOptions, type UpscaleOptions } from './options.js';
import { decodeImage, describeInput, encodeImage, toSharp, writeImage, type ImageInput, type RgbImage } from './image/io.js';
import { preprocess, preprocessGeometry, resizeToOutput, upscaleAlpha } from './image/preprocess.js';
import type { ClipTokenizer } from './tokenizer/index.js';
import { loadTokenizer, resolveWeights } from './weights/index.js';
import { NoiseSource } from './noise.js';
import { runCore, useTiledVae, type PipelineModels, type ProgressEvent, type Stage } from './pipeline/core.js';
import { checkProcessingSize, decodeHostBytes } from './pipeline/memory.js';
import { TextConditioner } from './pipeline/text.js';
import type { Prompts } from './pipeline/prompts.js';
import { SD15_SCHEDULER_CONFIG, loadSchedulerConfig } from './schedulers/index.js';
import { captionXpsr } from './captioners/factory.js';
import { packageRoot } from './native.js';

/** Whether and what to embed in a written image: `true` = the result's `metadata`, or your own fields. */
export interface WriteOptions {
  metadata?: boolean | Record<string, string>;
}

export interface UpscaleResult {
  /** Raw pixels, row-major, `channels` per pixel (3 = RGB, 4 = RGBA when the input had alpha). */
  image: Buffer;
  width: number;
  height: number;
  channels: 3 | 4;
  /** A sharp instance over the pixels (chain any sharp operation, e.g. `.webp().toBuffer()`). */
  sharp(): Sharp;
  /**
   * Encodes to a format ('png', 'jpeg', 'webp', 'tiff') or the format of a file name. `{ metadata: true }`
   * embeds `metadata` (XMP; read it back with readImageMetadata()).
   */
  toBuffer(format?: string, options?: WriteOptions): Promise<Buffer>;
  /**
   * Writes the image atomically (no partial file on failure); the format comes from the extension (.png .jpg
   * .jpeg .webp .tif .tiff). Throws XpsrError ERR_UNSUPPORTED (extension) or ERR_IO (the OS refused).
   */
  toFile(file: string, options?: WriteOptions): Promise<void>;
  /** The captions used (before the added prompt). */
  prompts: Prompts;
  /** The seed of the noise, or null when the call supplied its own `noise`. */
  seed: number | null;
  /** What produced the image (software, seed, prompts, model, device, settings), as embedded by `{ metadata: true }`. */
  metadata: Record<string, string>;
  /** Size of the processed image the networks saw. */
  processed: { width: number; height: number };
  timesteps: number[];
  /** Per-stage wall time in milliseconds (caption, preprocess, text, encode, denoise, decode, colorfix, total). */
  timingsMs: Record<Stage | 'caption' | 'preprocess' | 'postprocess' | 'total', number>;
  tiled: { tiles: number; tileSize: number } | null;
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

/** One entry of upscaleMany(): the result of an image, or the error that stopped it (input order). */
export type UpscaleOutcome = { ok: true; input: ImageInput; result: UpscaleResult } | { ok: false; input: ImageInput; error: XpsrError };

let version: string | undefined;
function softwareName(): string {
  try {
    version ??= (JSON.parse(readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    version = 'unknown';
  }
  return `xpsr-native ${version}`;
}

/** Resolves when `turn` does, or rejects with ERR_CANCELLED as soon as `signal` aborts. */
function waitTurn(turn: Promise<unknown>, signal?: AbortSignal): Promise<void> {
  if (!signal) return turn.then(() => undefined);
  return new Promise<void>((resolve, reject) => {
    const cancelled = () => reject(new XpsrError('ERR_CANCELLED', 'cancelled while waiting for the previous call'));
    if (signal.aborted) return cancelled();
    signal.addEventListener('abort', cancelled, { once: true });
    void turn.then(() => {
      signal.removeEventListener('abort', cancelled);
      resolve();
    });
  });
}

/**
 * The caller's onProgress as an observer: a throw or a rejected promise never reaches the run (or the
 * process as an unhandled rejection); the first failure of a call is reported through `report`.
 */
function observer<E>(cb: ((e: E) => unknown) | undefined, report: (e: unknown) => void): ((e: E) => void) | undefined {
  if (!cb) return undefined;
  let failed = false;
  const fail = (err: unknown) => {
    if (failed) return;
    failed = true;
    report(err);
  };
  return (e: E) => {
    try {
      const r = cb(e) as { then?: unknown } | undefined;
      if (r && typeof r.then === 'function') (r as Promise<unknown>).then(undefined, fail);
    } catch (err) {
      fail(err);
    }
  };
}

export class XPSR {
  #models: PipelineModels | undefined;
  readonly #options: LoadOptions;
  readonly #notice: (message: string) => void;
  readonly #modelName: string;
  /** Settles when every call started so far has finished (each call chains its own turn after it). */
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(models: PipelineModels, options: LoadOptions, notice: (message: string) => void) {
    this.#models = models;
    this.#options = options;
    this.#notice = notice;
    const base = (p: string | undefined) => (p ? path.basename(path.resolve(p)) : '');
    this.#modelName =
      options.sd || options.xpsr ? `${base(options.sd ?? options.model)} + ${base(options.xpsr ?? options.model)}` : base(options.model);
  }

  /** Loads every component on a device. Errors name the missing or malformed file, key and shape. */
  static async load(options: LoadOptions): Promise<XPSR> {
    checkLoadOptions(options);
    const c = resolveWeights(options); // lib/weights: folders, single files, variants, the HF cache
    const notice = options.onNotice ?? ((m: string) => console.warn(m));
    // a bad config fails before any weights load; a single file carries none: SD-1.5's, without a notice
    const schedulerConfig = loadSchedulerOrDefault(c.scheduler, c.sdLayout === 'diffusers folder' ? notice : () => undefined);
    const engine = await Engine.create({ device: options.device ?? 'auto', threads: options.threads, onNotice: notice });
    try {
      const tokenizer = await loadTokenizer(c.tokenizer);
      const source = (s: { configJson?: string }) => ({ variant: c.variant, config: s.configJson });
      const textEncoder: ClipTextEncoder = await engine.loadTextEncoder(c.textEncoder.path, source(c.textEncoder));
      const vae: Vae = await engine.loadVae(c.vae.path, source(c.vae));
      const unet: UNet = await engine.loadUNet(c.unet.path, source(c.unet));
      const controlnet: ControlNet = await engine.loadControlNet(c.controlnet.path, source(c.controlnet));
      return new XPSR({ engine, text: new TextConditioner(tokenizer, textEncoder), vae, unet, controlnet, schedulerConfig }, options, notice);
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
    const notice = options.onNotice ?? ((m: string) => console.warn(m));
    const engine = await Engine.create({ device: options.device ?? 'auto', threads: options.threads, onNotice: notice });
    try {
      const c = await make(engine);
      return new XPSR(
        {
          engine,
          text: new TextConditioner(c.tokenizer, c.textEncoder),
          vae: c.vae,
          unet: c.unet,
          controlnet: c.controlnet,
          schedulerConfig: c.schedulerConfig,
        },
        options,
        notice,
      );
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

  /**
   * Restores and upscales one image (path, Buffer or sharp instance). Calls on one instance run one at a
   * time; a call waiting for its turn rejects with ERR_CANCELLED as soon as its signal aborts.
   */
  async upscale(input: ImageInput, options: UpscaleOptions = {}): Promise<UpscaleResult> {
    const models = this.#ensure(); // a call accepted before dispose() still runs; dispose() waits for it
    const opts = resolveUpscaleOptions(options);
    const prev = this.#queue;
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    // the next call waits for this one AND every earlier one, even when this one leaves its turn early
    this.#queue = prev.then(() => mine);
    try {
      await waitTurn(prev, options.signal);
      if (options.signal?.aborted) throw new XpsrError('ERR_CANCELLED', 'cancelled');
      return await this.#upscaleOne(models, input, options, opts);
    } finally {
      release();
    }
  }

  /**
   * Upscales several images with the same options, reusing networks and plans. Resolves with one outcome
   * per input, in input order: `{ ok: true, result }` or `{ ok: false, error }`; a failed image never loses
   * the others. After the signal aborts, the remaining images are `{ ok: false }` with ERR_CANCELLED.
   * Invalid options reject at once (nothing runs).
   */
  async upscaleMany(inputs: ImageInput[], options: UpscaleOptions = {}): Promise<UpscaleOutcome[]> {
    if (!Array.isArray(inputs)) throw new XpsrError('ERR_INVALID_ARGUMENT', 'upscaleMany expects an array of inputs');
    resolveUpscaleOptions(options);
    const out: UpscaleOutcome[] = [];
    const onProgress = options.onProgress;
    for (let i = 0; i < inputs.length; i++) {
      const input = inputs[i];
      try {
        const result = await this.upscale(input, {
          ...options,
          onProgress: onProgress && ((e) => onProgress({ ...e, image: i + 1, images: inputs.length })),
        });
        out.push({ ok: true, input, result });
      } catch (e) {
        const error = e instanceof XpsrError ? e : new XpsrError('ERR_INTERNAL', (e as Error)?.message ?? String(e), undefined, { cause: e });
        out.push({ ok: false, input, error });
      }
    }
    return out;
  }

  async #upscaleOne(models: PipelineModels, input: ImageInput, options: UpscaleOptions, opts: ResolvedUpscaleOptions): Promise<UpscaleResult> {
    const t0 = performance.now();
    const name = options.name ?? (typeof input === 'string' ? path.parse(input).name : undefined);
    const what = describeInput(input, typeof input === 'string' ? input : name);
    const device = models.engine.device;
    const onProgress = observer(options.onProgress, (e) =>
      this.#notice(`xpsr: onProgress failed (the run continues): ${(e as Error)?.message ?? String(e)}`),
    );
    const decoded = await decodeImage(input, {
      maxInputPixels: opts.maxInputPixels,
      name: typeof input === 'string' ? input : name,
      // the processed size is known from the header: refuse what cannot run before decoding any pixel
      checkSize: (width, height) => {
        const geo = preprocessGeometry(width, height, { scale: opts.scale, processSize: opts.processSize });
        const tiled = useTiledVae(opts, geo.height / 8, geo.width / 8, true, device);
        checkProcessingSize({
          what,
          width,
          height,
          processedWidth: geo.width,
          processedHeight: geo.height,
          maxAspectRatio: opts.maxAspectRatio,
          maxAspectRatioLimit: LIMITS.maxAspectRatio.max,
          hostBytes: decodeHostBytes(geo.width * geo.height, tiled, device),
        });
      },
    });
    let ts = performance.now();
    const pre = preprocess({ rgb: decoded.rgb, width: decoded.width, height: decoded.height }, { scale: opts.scale, processSize: opts.processSize });
    const preprocessMs = performance.now() - ts;

    // Captions: explicit prompts win; else the captioner; else "" (as the official code with empty files).
    ts = performance.now();
    let prompts: Prompts = { high: options.prompts?.high ?? '', low: options.prompts?.low ?? '' };
    const captioner = options.captioner ?? this.#options.captioner;
    if (captioner && (options.prompts?.high === undefined || options.prompts?.low === undefined)) {
      onProgress?.({ stage: 'text', step: 0, total: 1, elapsedMs: performance.now() - t0 });
      const caps = await captionXpsr(
        captioner,
        { data: decoded.rgb, width: decoded.width, height: decoded.height, channels: 3 },
        { signal: options.signal, name, instructions: options.instructions },
      );
      prompts = { high: options.prompts?.high ?? caps.high, low: options.prompts?.low ?? caps.low };
    }
    const captionMs = performance.now() - ts;

    const { scale: _s, processSize: _p, seed, maxInputPixels: _m, maxAspectRatio: _a, ...pipelineOptions } = opts;
    const core = await runCore(models, { rgb: pre.rgb, width: pre.width, height: pre.height }, prompts, {
      ...pipelineOptions,
      noise: options.noise ?? new NoiseSource(seed),
      signal: options.signal,
      onProgress: onProgress as ((e: ProgressEvent) => void) | undefined,
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
    const img: RgbImage = { rgb: channels === 3 ? pixels : rgb, alpha: channels === 4 ? extractAlpha(pixels) : undefined, width: W, height: H };
    const reportedSeed = options.noise ? null : seed;
    const metadata: Record<string, string> = {
      software: softwareName(),
      seed: reportedSeed === null ? 'none (caller-supplied noise)' : String(reportedSeed),
      'prompt-high': prompts.high,
      'prompt-low': prompts.low,
      'added-prompt': opts.addedPrompt,
      'negative-prompt': opts.negativePrompt,
      model: this.#modelName,
      device,
      steps: String(opts.steps),
      scheduler: opts.scheduler,
      'guidance-scale': String(opts.guidanceScale),
      'conditioning-scale': String(opts.conditioningScale),
      scale: String(opts.scale),
      'process-size': String(opts.processSize),
      'color-fix': opts.colorFix,
    };
    const fields = (o?: WriteOptions) => (o?.metadata === true ? metadata : o?.metadata || undefined);
    return {
      image: pixels,
      width: W,
      height: H,
      channels,
      sharp: () => toSharp(img),
      toBuffer: (format = 'png', o?: WriteOptions) => encodeImage(img, format, { metadata: fields(o) }),
      toFile: (file: string, o?: WriteOptions) => writeImage(img, file, { metadata: fields(o) }),
      prompts,
      seed: reportedSeed,
      metadata,
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

  /**
   * Frees every network, plan and device buffer once the calls already accepted have finished; later calls
   * reject with ERR_DISPOSED. Idempotent.
   */
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

/** The scheduler config of the `scheduler/` folder (checked), else SD-1.5's with a notice. */
function loadSchedulerOrDefault(dir: string | undefined, notice: (m: string) => void): Record<string, unknown> {
  const file = dir && path.join(dir, 'scheduler_config.json');
  if (file && existsSync(file)) return loadSchedulerConfig(file);
  notice('xpsr: no scheduler/scheduler_config.json found; using the SD-1.5 DDPM settings');
  return { ...SD15_SCHEDULER_CONFIG };
}
