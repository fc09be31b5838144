/**
 * The XPSR class: load the six components once (CLIP tokenizer + text encoder, VAE, XPSR UNet and
 * ControlNet, scheduler config), then upscale images:
 *
 *   const xpsr = await XPSR.load({ sd: '/models/sd15', xpsr: '/models/xpsr', device: 'auto' });
 *   const out = await xpsr.upscale('photo.jpg', { steps: 20, seed: 1, onProgress, signal });
 *   await out.toFile('photo-x4.png');
 *
 * Image in -> decode (sharp) -> official preprocessing -> captions -> pipeline (lib/pipeline/core) ->
 * output resize -> alpha recombined. Calls queue (lib/batch/batcher.ts) and run on the engine one batch at
 * a time: alone by default; with `batching` (or upscaleMany's `batchSize`), calls of the same processed
 * size and settings share each denoising step.
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
import { planTiling, runCoreBatch, useTiledVae, type CoreResult, type PipelineModels, type ProgressEvent, type Stage } from './pipeline/core.js';
import { checkProcessingSize, decodeHostBytes } from './pipeline/memory.js';
import { TextConditioner } from './pipeline/text.js';
import type { Prompts } from './pipeline/prompts.js';
import { SD15_SCHEDULER_CONFIG, loadSchedulerConfig } from './schedulers/index.js';
import { captionXpsr } from './captioners/factory.js';
import { packageRoot } from './native.js';
import { Batcher, type BatchMember, type Prepared } from './batch/batcher.js';
import {
  AUTO_MAX_BATCH,
  batchSizeOption,
  memoryBudgetOption,
  resolveBatching,
  type BatchingOptions,
  type ResolvedBatching,
} from './batch/options.js';
import { defaultMemoryBudget, largestFittingBatch } from './batch/auto.js';

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
  /** Images that ran in the same denoising passes as this one (1 when it ran alone). */
  batchSize: number;
}

/** Options of upscaleMany(): the upscale options of every image, and how many run together. */
export interface UpscaleManyOptions extends UpscaleOptions {
  /**
   * Images of the same processed size per denoising pass: 1 (default: one after another), up to 64, or
   * 'auto' (the largest batch, up to 16, whose planned activations fit `memoryBudgetMB`).
   */
  batchSize?: number | 'auto';
  /** Memory budget of 'auto' and of the batched VAE, in MiB (default: 80% of the device's free memory). */
  memoryBudgetMB?: number;
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

/** A call after its turn to be prepared came: the image read and preprocessed, the captions known. */
interface PreparedCall {
  models: PipelineModels;
  options: UpscaleOptions;
  opts: ResolvedUpscaleOptions;
  /** When the call's turn came (performance.now()). */
  t0: number;
  decoded: Awaited<ReturnType<typeof decodeImage>>;
  pre: ReturnType<typeof preprocess>;
  prompts: Prompts;
  captionMs: number;
  preprocessMs: number;
  onProgress?: (e: ProgressEvent) => void;
  /** Memory budget of the batch (VAE chunks), when known. */
  budgetBytes?: number;
}

export class XPSR {
  #models: PipelineModels | undefined;
  readonly #options: LoadOptions;
  readonly #notice: (message: string) => void;
  readonly #modelName: string;
  #batching: ResolvedBatching;
  /** The call queue and dynamic batcher: one batch at a time on the engine. */
  readonly #queue = new Batcher<PreparedCall, UpscaleResult>((members) => this.#runBatch(members));
  /** 'auto' batch sizes already chosen, per latent size, rows and budget. */
  readonly #autoSizes = new Map<string, number>();

  private constructor(models: PipelineModels, options: LoadOptions, notice: (message: string) => void) {
    this.#models = models;
    this.#options = options;
    this.#notice = notice;
    this.#batching = resolveBatching(options.batching);
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
    resolveBatching(options.batching);
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

  /** The instance's dynamic batching settings (see {@link setBatching}). */
  get batching(): { maxBatch: number | 'auto'; maxDelayMs: number; memoryBudgetMB?: number } {
    const b = this.#batching;
    return {
      maxBatch: b.maxBatch,
      maxDelayMs: b.maxDelayMs,
      ...(b.memoryBudgetBytes === undefined ? {} : { memoryBudgetMB: b.memoryBudgetBytes / 2 ** 20 }),
    };
  }

  /**
   * Sets dynamic batching for the calls accepted from now on: concurrent upscale() calls of the same
   * processed size and settings run as one batch of up to `maxBatch` images, the oldest waiting up to
   * `maxDelayMs` for others. `{ maxBatch: 1 }` (the default) runs every call alone.
   */
  setBatching(options: BatchingOptions): void {
    this.#batching = resolveBatching(options);
  }

  /**
   * Memory of the loaded networks and plans in bytes: the weights on the device, and the activation
   * arenas of the cached step/VAE plans (the largest is what one call needs besides the weights).
   */
  memoryStats(): { weightBytes: number; largestPlanBytes: number; planBytes: number; plans: number } {
    const m = this.#ensure();
    const plans = m.engine.plans();
    return {
      weightBytes: [m.text.encoder as { info?: { weightBytes: number } }, m.vae, m.unet, m.controlnet].reduce(
        (n, x) => n + (x.info?.weightBytes ?? 0),
        0,
      ),
      largestPlanBytes: Math.max(0, ...plans.map((p) => p.arenaBytes)),
      planBytes: plans.reduce((n, p) => n + p.arenaBytes, 0),
      plans: plans.length,
    };
  }

  /** Calls waiting in the queue, in the running batch, and the batches run so far. */
  queueStats() {
    return this.#queue.stats();
  }

  /**
   * Restores and upscales one image (path, Buffer or sharp instance). Calls on one instance queue and run
   * one batch at a time (alone unless `batching` is set); a call waiting for its turn rejects with
   * ERR_CANCELLED as soon as its signal aborts, and a call in a running batch is dropped from it.
   */
  async upscale(input: ImageInput, options: UpscaleOptions = {}): Promise<UpscaleResult> {
    return this.#submit(input, options, this.#batching);
  }

  /**
   * Upscales several images with the same options, reusing networks and plans; with `batchSize`, images
   * of the same processed size run together. Resolves with one outcome per input, in input order:
   * `{ ok: true, result }` or `{ ok: false, error }`; a failed image never loses the others. After the
   * signal aborts, the remaining images are `{ ok: false }` with ERR_CANCELLED. Invalid options reject at
   * once (nothing runs).
   */
  async upscaleMany(inputs: ImageInput[], options: UpscaleManyOptions = {}): Promise<UpscaleOutcome[]> {
    if (!Array.isArray(inputs)) throw new XpsrError('ERR_INVALID_ARGUMENT', 'upscaleMany expects an array of inputs');
    if (options === null || typeof options !== 'object') resolveUpscaleOptions(options);
    const { batchSize, memoryBudgetMB, ...each } = options;
    resolveUpscaleOptions(each);
    const batching: ResolvedBatching = {
      maxBatch: batchSizeOption('batchSize', batchSize, 1),
      maxDelayMs: 0,
      memoryBudgetBytes: memoryBudgetOption('memoryBudgetMB', memoryBudgetMB),
    };
    const onProgress = each.onProgress;
    return Promise.all(
      inputs.map((input, i) =>
        this.#submit(input, { ...each, onProgress: onProgress && ((e) => onProgress({ ...e, image: i + 1, images: inputs.length })) }, batching).then(
          (result): UpscaleOutcome => ({ ok: true, input, result }),
          (e: unknown): UpscaleOutcome => ({ ok: false, input, error: asXpsrError(e) }),
        ),
      ),
    );
  }

  #submit(input: ImageInput, options: UpscaleOptions, batching: ResolvedBatching): Promise<UpscaleResult> {
    const models = this.#ensure(); // a call accepted before dispose() still runs; dispose() waits for it
    const opts = resolveUpscaleOptions(options);
    return this.#queue.submit(() => this.#prepare(models, input, options, opts, batching), options.signal);
  }

  /** Reads, checks and preprocesses the image and finds its captions: everything before the pipeline. */
  async #prepare(
    models: PipelineModels,
    input: ImageInput,
    options: UpscaleOptions,
    opts: ResolvedUpscaleOptions,
    batching: ResolvedBatching,
  ): Promise<Prepared<PreparedCall>> {
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

    // What the call may share a batch with: the same processed size and the same pipeline settings.
    const { scale: _s, processSize: _p, seed: _seed, maxInputPixels: _m, maxAspectRatio: _a, ...shared } = opts;
    const wantsBudget = batching.maxBatch === 'auto' || batching.maxBatch > 1;
    const budgetBytes = wantsBudget ? (batching.memoryBudgetBytes ?? defaultMemoryBudget(device)) : batching.memoryBudgetBytes;
    const limit = batching.maxBatch === 'auto' ? await this.#autoBatch(models, pre.height / 8, pre.width / 8, opts, budgetBytes!) : batching.maxBatch;
    return {
      key: JSON.stringify([pre.width, pre.height, shared]),
      limit,
      delayMs: batching.maxDelayMs,
      value: {
        models,
        options,
        opts,
        t0,
        decoded,
        pre,
        prompts,
        captionMs,
        preprocessMs,
        budgetBytes,
        onProgress: onProgress as ((e: ProgressEvent) => void) | undefined,
      },
    };
  }

  /**
   * The largest batch (up to 16) whose planned CFG step fits the budget: the engine sizes the step's plan
   * (activation arena) for each candidate without running it. Per latent (or latent tile) size, cached.
   */
  async #autoBatch(models: PipelineModels, h: number, w: number, opts: ResolvedUpscaleOptions, budgetBytes: number): Promise<number> {
    const tiling = planTiling(h, w, opts.tiling, models.engine.device);
    const [th, tw] = tiling ? [tiling.tileSize, tiling.tileSize] : [h, w];
    const rows = opts.guidanceScale > 1 ? 2 : 1;
    const key = `${th}x${tw}:${rows}:${budgetBytes}`;
    let size = this.#autoSizes.get(key);
    if (size === undefined) {
      size = await chooseBatchSize(models, { height: th, width: tw, rowsPerImage: rows, budgetBytes, cap: AUTO_MAX_BATCH });
      this.#autoSizes.set(key, size);
    }
    return size;
  }

  /** Runs one batch through the pipeline and settles each call with its own result or error. */
  async #runBatch(members: BatchMember<PreparedCall, UpscaleResult>[]): Promise<void> {
    const head = members[0].value;
    const { scale: _s, processSize: _p, seed: _seed, maxInputPixels: _m, maxAspectRatio: _a, ...shared } = head.opts;
    const outcomes = await runCoreBatch(
      head.models,
      members.map((m) => ({
        image: { rgb: m.value.pre.rgb, width: m.value.pre.width, height: m.value.pre.height },
        prompts: m.value.prompts,
        noise: m.value.options.noise ?? new NoiseSource(m.value.opts.seed),
        signal: m.signal,
        onProgress: m.value.onProgress,
        onDropped: (e: unknown) => m.reject(e), // at once: the others of the batch go on
      })),
      { ...shared, batchMemoryBudgetBytes: head.budgetBytes },
    );
    outcomes.forEach((o, i) => {
      const m = members[i];
      if (!o.ok) return m.reject(o.error);
      try {
        m.resolve(this.#finish(m.value, o.result));
      } catch (e) {
        m.reject(e);
      }
    });
  }

  /** Output size, alpha and metadata of a call's pipeline result. */
  #finish(call: PreparedCall, core: CoreResult): UpscaleResult {
    const { options, opts, decoded, pre, prompts, t0 } = call;
    const seed = opts.seed;
    const device = call.models.engine.device;
    // Back to (scale*w, scale*h) (a no-op in the common case) and the alpha channel recombined.
    const ts = performance.now();
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
        caption: call.captionMs,
        preprocess: call.preprocessMs,
        ...core.timingsMs,
        postprocess: postMs,
        total: performance.now() - t0,
      },
      tiled: core.tiled,
      batchSize: core.batchSize,
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
    await this.#queue.idle();
    m.engine.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/** What upscaleMany() reports for a failed image: coded errors as they are, anything else as ERR_INTERNAL. */
function asXpsrError(e: unknown): XpsrError {
  return e instanceof XpsrError ? e : new XpsrError('ERR_INTERNAL', (e as Error)?.message ?? String(e), undefined, { cause: e });
}

/**
 * The largest batch (1..cap) whose planned step activations fit `budgetBytes`: Engine.planStep sizes the
 * CFG step's arena for 2 rows per image (1 without guidance) without allocating or running anything.
 * ERR_OUT_OF_MEMORY when even one image's step does not fit.
 */
export async function chooseBatchSize(
  models: Pick<PipelineModels, 'engine' | 'controlnet' | 'unet'>,
  s: { height: number; width: number; rowsPerImage: number; budgetBytes: number; cap: number },
): Promise<number> {
  const bytesFor = async (b: number) =>
    (await models.engine.planStep(models.controlnet, models.unet, { batch: b * s.rowsPerImage, height: s.height, width: s.width })).arenaBytes;
  const size = await largestFittingBatch(s.cap, s.budgetBytes, bytesFor);
  if (size === 0) {
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    throw new XpsrError(
      'ERR_OUT_OF_MEMORY',
      `batchSize 'auto': one image's denoising step (latent ${s.height}x${s.width}) plans ${mib(await bytesFor(1))} of activations, ` +
        `over the memory budget of ${mib(s.budgetBytes)}; raise memoryBudgetMB or use a smaller image or tile size`,
    );
  }
  return size;
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
