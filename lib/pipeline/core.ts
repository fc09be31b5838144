/**
 * The XPSR pipeline on an already preprocessed image X (docs/architecture.md §1, §7.4–§7.10), top-down:
 *   texts -> CFG contexts; X -> ControlNet condition (once) and VAE latent (once);
 *   latent init (posterior sample, noised at timesteps[0] and again at 800, or pure noise);
 *   for each timestep: CFG step (ControlNet + UNet, tiled when large), guidance, scheduler step;
 *   VAE decode -> uint8 (round half to even) -> colour fix against X.
 * All randomness comes from one NoiseProvider, drawn in the official order (VAE sample, two add_noise
 * draws, one per scheduler step), so recorded noise replays the official run exactly.
 */
import type { ControlNet, Engine, RunOptions, Tensor, UNet, Vae, VaeTileRunOptions } from '../engine/engine.js';
import { XpsrError } from '../errors.js';
import type { NoiseProvider } from '../noise.js';
import { createScheduler, type Scheduler } from '../schedulers/index.js';
import { applyGuidance } from '../guidance.js';
import { colorFix, type ColorFixKind } from '../colorfix.js';
import { fromDecoded, toControlImage, toVaeInput } from '../image/preprocess.js';
import { TileBlender, VAE_DECODER_TILING, VAE_ENCODER_TILING, chooseTiling, latentTiles, vaeTilingNeeded } from '../tiling.js';
import { cfgTexts, type LowLevelGuidance, type Prompts } from './prompts.js';
import type { LongPromptMode, TextConditioner } from './text.js';
import { cropNCHW, divF32, repeatBatch, scaleF32, assertFinite } from './tensor-ops.js';
import { stepBytesPerLatentPixel, vaeActivationBytes } from './memory.js';

/**
 * What the core calls on the networks. The native engine's objects satisfy it (PipelineModels); so do
 * lib/onnx's onnxruntime-backed ones (the step's ControlNet and UNet are opaque to the core).
 */
export interface PipelineNetworks<C = ControlNet, U = UNet> {
  engine: {
    readonly device: string;
    clearPlans(): void;
    step(controlnet: C, unet: U, args: Parameters<Engine['step']>[2], options?: RunOptions): Promise<{ noisePred: Tensor; residuals?: Tensor[] }>;
  };
  text: TextConditioner;
  vae: {
    readonly scalingFactor: number;
    encode(x: Tensor, options?: RunOptions): Promise<{ moments: Tensor }>;
    decode(z: Tensor, options?: RunOptions): Promise<{ image: Tensor }>;
    encodeTiled(x: Tensor, options?: VaeTileRunOptions): Promise<{ moments: Tensor }>;
    decodeTiled(z: Tensor, options?: VaeTileRunOptions): Promise<{ image: Tensor }>;
  };
  unet: U;
  controlnet: C & { condEmbedding(image: Tensor, options?: RunOptions): Promise<Tensor> };
  schedulerConfig: Record<string, unknown>;
}

export interface PipelineModels extends PipelineNetworks {
  engine: Engine;
  vae: Vae;
}

export type Stage = 'text' | 'encode' | 'denoise' | 'decode' | 'colorfix';

export interface ProgressEvent {
  stage: Stage;
  /** Denoising step (1-based) within `total`; for other stages 0/1 and 1/1. */
  step: number;
  total: number;
  /** Milliseconds since the call started. */
  elapsedMs: number;
  /** Tile index and count when the step is tiled. */
  tile?: number;
  tiles?: number;
}

export interface TilingOptions {
  /** 'auto': tile when the latent area exceeds `maxLatentPixels`; 'on': always; 'off': never. */
  mode: 'auto' | 'on' | 'off';
  /** Latent tile side (official 320) and overlap (official 8). */
  tileSize: number;
  overlap: number;
  /** Largest untiled latent area (h*w) in 'auto' mode. Official: 320*320 = 102400. */
  maxLatentPixels: number;
  /**
   * Activation memory the denoiser may use, in bytes ('auto' mode). When set, the latent is also tiled
   * when a whole-latent step would not fit, with the largest tile that fits (lib/tiling.ts chooseTiling).
   */
  memoryBudgetBytes?: number;
}

export interface CoreOptions {
  steps: number;
  guidanceScale: number;
  conditioningScale: number;
  scheduler: string;
  addedPrompt: string;
  negativePrompt: string;
  lowLevelGuidance: LowLevelGuidance;
  longPrompts: LongPromptMode;
  /** 'lr': official VAE-latent initialisation; 'noise': start from pure Gaussian noise. */
  init: 'lr' | 'noise';
  /**
   * Tiled VAE (whole-image GroupNorm statistics, exact up to float rounding): 'auto' tiles above the
   * official sizes (encoder input > 1088 px, decoder latent > 246 px) or when `tiling.memoryBudgetBytes`
   * would be exceeded; 'on' always; 'off' never.
   */
  vaeTiling: 'auto' | 'on' | 'off';
  /** Explicit initial latents [1, 4, h, w] (replaces the initialisation; parity tests). */
  latents?: Float32Array;
  addedNoiseLevel: number;
  colorFix: ColorFixKind;
  tiling: TilingOptions;
  noise: NoiseProvider;
  signal?: AbortSignal;
  onProgress?: (e: ProgressEvent) => void;
  /** Receives named intermediate tensors (official fixture names) for parity and debugging. */
  record?: (name: string, t: Tensor) => void;
}

export interface CoreResult {
  /** Decoded image before colour fix, HxWx3 uint8 (the pipeline's own PIL output). */
  decoded: Uint8Array;
  /** Final image after the colour fix, HxWx3 uint8. */
  image: Uint8Array;
  width: number;
  height: number;
  timesteps: number[];
  timingsMs: Record<Stage, number>;
  tiled: { tiles: number; tileSize: number } | null;
}

function checkAbort(signal?: AbortSignal) {
  if (signal?.aborted) throw new XpsrError('ERR_CANCELLED', 'cancelled');
}

const f = Math.fround;

/** DiagonalGaussianDistribution(moments).sample(noise) * scaling, all in float32 like torch. */
export function posteriorSample(moments: Tensor, noise: Float32Array, scaling: number, record?: CoreOptions['record']): Tensor {
  const [N, C2, h, w] = moments.shape;
  const C = C2 / 2;
  const plane = C * h * w;
  if (noise.length !== N * plane) throw new XpsrError('ERR_SHAPE_MISMATCH', 'posterior noise has the wrong size');
  const out = new Float32Array(N * plane);
  const s = f(scaling);
  for (let n = 0; n < N; n++) {
    const base = n * 2 * plane;
    for (let i = 0; i < plane; i++) {
      const mean = moments.data[base + i];
      const logvar = Math.min(20, Math.max(-30, moments.data[base + plane + i]));
      const std = f(Math.exp(f(0.5 * logvar)));
      out[n * plane + i] = f(f(mean + f(std * noise[n * plane + i])) * s);
    }
  }
  const t = { shape: [N, C, h, w], data: out };
  record?.('init_latents', t);
  return t;
}

/** Runs the pipeline on X (HxWx3 uint8, sides multiples of 8). */
export async function runCore<C, U>(
  models: PipelineNetworks<C, U>,
  image: { rgb: Uint8Array; width: number; height: number },
  prompts: Prompts,
  o: CoreOptions,
): Promise<CoreResult> {
  const t0 = performance.now();
  const timings: Record<Stage, number> = { text: 0, encode: 0, denoise: 0, decode: 0, colorfix: 0 };
  const progress = (stage: Stage, step: number, total: number, extra: Partial<ProgressEvent> = {}) =>
    o.onProgress?.({ stage, step, total, elapsedMs: performance.now() - t0, ...extra });
  const { width: W, height: H } = image;
  if (W % 8 || H % 8) throw new XpsrError('ERR_INVALID_ARGUMENT', `image sides must be multiples of 8, got ${W}x${H}`);
  const h = H / 8;
  const w = W / 8;
  const rec = o.record;
  const cfg = o.guidanceScale > 1;
  const rows = cfg ? 2 : 1;

  // 1. Text contexts of the CFG rows.
  let ts = performance.now();
  progress('text', 0, 1);
  const texts = cfgTexts(prompts, {
    addedPrompt: o.addedPrompt,
    negativePrompt: o.negativePrompt,
    guidance: cfg,
    lowLevelGuidance: o.lowLevelGuidance,
  });
  const ctxHigh = await models.text.encodeRows(texts.high, o.longPrompts, o.signal);
  const ctxLow = await models.text.encodeRows(texts.low, o.longPrompts, o.signal);
  rec?.('prompt_embeds', ctxHigh);
  rec?.('lowlevel_prompt_embeds', ctxLow);
  timings.text = performance.now() - ts;
  progress('text', 1, 1);

  // 2. Scheduler and timesteps.
  const scheduler: Scheduler = createScheduler(o.scheduler, models.schedulerConfig);
  const timesteps = scheduler.setTimesteps(o.steps);

  // 3. Image-only work, once: the ControlNet condition and (official init) the VAE latent.
  ts = performance.now();
  progress('encode', 0, 1);
  checkAbort(o.signal);
  const control = { shape: [1, 3, H, W], data: toControlImage(image.rgb, W, H) };
  rec?.('control_image', repeatBatch(control, rows));
  let latents: Float32Array;
  if (o.latents) {
    if (o.latents.length !== 4 * h * w) throw new XpsrError('ERR_SHAPE_MISMATCH', `latents must be [1, 4, ${h}, ${w}]`);
    latents = scaleF32(o.latents, scheduler.initNoiseSigma);
  } else if (o.init === 'noise') {
    latents = scaleF32(o.noise.normal(4 * h * w), scheduler.initNoiseSigma);
  } else {
    const x = { shape: [1, 3, H, W], data: toVaeInput(image.rgb, W, H) };
    rec?.('vae_encode.x', x);
    const { moments } = useTiledVae(o, H, W, false, models.engine.device)
      ? await models.vae.encodeTiled(x, { tile: VAE_ENCODER_TILING.tile, pad: VAE_ENCODER_TILING.pad, signal: o.signal })
      : await models.vae.encode(x, { signal: o.signal });
    rec?.('vae_encode.moments', moments);
    const z = posteriorSample(moments, o.noise.normal(4 * h * w), models.vae.scalingFactor, rec);
    const x1 = scheduler.addNoise(z.data, o.noise.normal(z.data.length), timesteps[0]);
    rec?.('latents_after_add_noise.0', { shape: z.shape, data: x1 });
    const x2 = scheduler.addNoise(x1, o.noise.normal(z.data.length), o.addedNoiseLevel);
    rec?.('latents_after_add_noise.1', { shape: z.shape, data: x2 });
    latents = scaleF32(x2, scheduler.initNoiseSigma);
  }
  rec?.('latents.initial', { shape: [1, 4, h, w], data: latents });
  timings.encode = performance.now() - ts;
  progress('encode', 1, 1);

  // 4. Denoising loop.
  ts = performance.now();
  const tiling = planTiling(h, w, o.tiling, models.engine.device);
  const condCache = new Map<string, Tensor>();
  const condFor = async (y: number, x: number, th: number, tw: number) => {
    const key = `${y},${x},${th},${tw}`;
    let c = condCache.get(key);
    if (!c) {
      const crop = tiling ? cropNCHW(control, y * 8, x * 8, th * 8, tw * 8) : control;
      c = await models.controlnet.condEmbedding(crop, { signal: o.signal });
      condCache.set(key, c);
    }
    return repeatBatch(c, rows);
  };
  for (let i = 0; i < timesteps.length; i++) {
    checkAbort(o.signal);
    const t = timesteps[i];
    const input = repeatBatch({ shape: [1, 4, h, w], data: scheduler.scaleModelInput(latents, t) }, rows);
    rec?.(`step.${i}.latent_model_input`, input);
    let eps: Tensor;
    if (!tiling) {
      const r = await models.engine.step(
        models.controlnet,
        models.unet,
        {
          sample: input,
          timestep: t,
          ctxHigh,
          ctxLow,
          cond: await condFor(0, 0, h, w),
          conditioningScale: o.conditioningScale,
          reuseConstants: i > 0,
        },
        { signal: o.signal, intermediates: !!rec },
      );
      eps = r.noisePred;
      if (rec && r.residuals) {
        const n = r.residuals.length - 1;
        rec(`step.${i}.controlnet.mid_block_res_sample`, r.residuals[n]);
        r.residuals.slice(0, n).forEach((res, k) => rec(`step.${i}.controlnet.down_block_res_samples.${String(k).padStart(2, '0')}`, res));
      }
    } else {
      const blender = new TileBlender({ batch: rows, channels: 4, height: h, width: w, tileHeight: tiling.tileSize, tileWidth: tiling.tileSize });
      let k = 0;
      for (const tile of tiling.tiles) {
        checkAbort(o.signal);
        const ts2 = tiling.tileSize;
        const r = await models.engine.step(
          models.controlnet,
          models.unet,
          {
            sample: cropNCHW(input, tile.y, tile.x, ts2, ts2),
            timestep: t,
            ctxHigh,
            ctxLow,
            cond: await condFor(tile.y, tile.x, ts2, ts2),
            conditioningScale: o.conditioningScale,
          },
          { signal: o.signal },
        );
        blender.add(r.noisePred.data, tile.x, tile.y);
        progress('denoise', i, timesteps.length, { tile: ++k, tiles: tiling.tiles.length });
      }
      eps = { shape: [rows, 4, h, w], data: blender.result() };
    }
    assertFinite(eps.data, `noise prediction at step ${i + 1} (t=${t})`);
    rec?.(`step.${i}.noise_pred_uncond_text`, eps);
    const guided = cfg ? applyGuidance(eps.data, o.guidanceScale) : eps.data;
    rec?.(`step.${i}.noise_pred_guided`, { shape: [1, 4, h, w], data: guided });
    latents = scheduler.step(guided, t, latents, o.noise).prevSample;
    rec?.(`step.${i}.latents_out`, { shape: [1, 4, h, w], data: latents });
    progress('denoise', i + 1, timesteps.length);
  }
  timings.denoise = performance.now() - ts;

  // 5. Decode and post-process.
  ts = performance.now();
  progress('decode', 0, 1);
  const z = { shape: [1, 4, h, w], data: divF32(latents, models.vae.scalingFactor) };
  rec?.('vae_decode.z', z);
  // (Host memory of this decode was checked before the image was decoded: lib/pipeline/memory.ts.)
  const tiledDecode = useTiledVae(o, h, w, true, models.engine.device);
  if (tiledDecode) models.engine.clearPlans(); // the cached step plans would hold their activation memory
  const { image: decodedPt } = tiledDecode
    ? await models.vae.decodeTiled(z, { tile: VAE_DECODER_TILING.tile, pad: VAE_DECODER_TILING.pad, signal: o.signal })
    : await models.vae.decode(z, { signal: o.signal });
  rec?.('vae_decode.image', decodedPt);
  if (rec) {
    const pt = new Float32Array(decodedPt.data.length);
    for (let i = 0; i < pt.length; i++) pt[i] = Math.min(1, Math.max(0, f(decodedPt.data[i] / 2 + 0.5)));
    rec('image_pt', { shape: decodedPt.shape, data: pt });
  }
  const decoded = fromDecoded(decodedPt.data, W, H);
  timings.decode = performance.now() - ts;
  progress('decode', 1, 1);
  ts = performance.now();
  const out = colorFix(o.colorFix, { data: decoded, width: W, height: H }, { data: image.rgb, width: W, height: H });
  timings.colorfix = performance.now() - ts;
  progress('colorfix', 1, 1);
  return {
    decoded,
    image: out,
    width: W,
    height: H,
    timesteps,
    timingsMs: timings,
    tiled: tiling ? { tiles: tiling.tiles.length, tileSize: tiling.tileSize } : null,
  };
}

/**
 * Whether the VAE runs tiled. Sizes: encoder input H x W pixels, decoder latent h x w. 'auto' tiles above
 * the official sizes, or when the untiled activations (lib/pipeline/memory.ts) exceed the memory budget.
 */
export function useTiledVae(o: Pick<CoreOptions, 'vaeTiling' | 'tiling'>, h: number, w: number, decoder: boolean, device = 'cpu'): boolean {
  if (o.vaeTiling !== 'auto') return o.vaeTiling === 'on';
  if (vaeTilingNeeded(h, w, decoder ? VAE_DECODER_TILING : VAE_ENCODER_TILING)) return true;
  if (o.tiling.memoryBudgetBytes === undefined) return false;
  return vaeActivationBytes(decoder ? 64 * h * w : h * w, decoder, device) > o.tiling.memoryBudgetBytes;
}

/** Latent tiling plan, or null when the whole latent is processed at once. */
export function planTiling(h: number, w: number, t: TilingOptions, device = 'cpu') {
  if (t.mode === 'auto' && t.memoryBudgetBytes !== undefined) {
    const choice = chooseTiling(h, w, {
      memoryBudgetBytes: t.memoryBudgetBytes,
      bytesPerLatentPixel: stepBytesPerLatentPixel(device),
      maxTileSize: t.tileSize,
      overlap: t.overlap,
    });
    if (choice.tiled && choice.tiling && choice.tiling.tiles.length > 1) return choice.tiling;
    if (!choice.tiled) return null;
  }
  const needed = t.mode === 'on' || (t.mode === 'auto' && h * w > t.maxLatentPixels);
  if (!needed) return null;
  const tiling = latentTiles(h, w, { tileSize: t.tileSize, overlap: t.overlap });
  if (tiling.tiles.length <= 1) return null;
  return tiling;
}
