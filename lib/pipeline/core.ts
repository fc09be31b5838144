/**
 * The XPSR pipeline on already preprocessed images X (docs/architecture.md §1, §7.4–§7.10), top-down:
 *   texts -> CFG contexts; X -> ControlNet condition (once) and VAE latent (once);
 *   latent init (posterior sample, noised at timesteps[0] and again at 800, or pure noise);
 *   for each timestep: CFG step (ControlNet + UNet, tiled when large), guidance, scheduler step;
 *   VAE decode -> uint8 (round half to even) -> colour fix against X.
 * It runs a batch of images of one size together (runCoreBatch); one image is the batch of one (runCore).
 * All randomness of an image comes from its own NoiseProvider, drawn in the official order (VAE sample,
 * two add_noise draws, one per scheduler step), so recorded noise replays the official run exactly.
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
import { assertFinite, catBatch, cropNCHW, divF32, repeatBatch, scaleF32 } from './tensor-ops.js';
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
  /**
   * Memory a batch's untiled VAE calls may use, in bytes: the images of a batch are encoded and decoded
   * together in chunks that fit (at least one image). Default: `tiling.memoryBudgetBytes`, else unlimited.
   */
  batchMemoryBudgetBytes?: number;
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
  /** Wall time of each stage of the batch the image ran in. */
  timingsMs: Record<Stage, number>;
  tiled: { tiles: number; tileSize: number } | null;
  /** Images run together (1 when alone). */
  batchSize: number;
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

/** One image of a batch: what may differ between the images run together. */
export interface CoreItem {
  /** X: HxWx3 uint8, sides multiples of 8; every item of a batch has the same size. */
  image: { rgb: Uint8Array; width: number; height: number };
  prompts: Prompts;
  /** This image's own noise stream, drawn in the official order whatever the batch. */
  noise: NoiseProvider;
  /** Cancels this image only: it is dropped at once (onDropped) and leaves the batch at the next step. */
  signal?: AbortSignal;
  onProgress?: (e: ProgressEvent) => void;
  record?: (name: string, t: Tensor) => void;
  /** Explicit initial latents [1, 4, h, w]. */
  latents?: Float32Array;
  /** Called once when this image fails or is cancelled, with what stopped it, before the batch ends. */
  onDropped?: (error: unknown) => void;
}

/** The settings every image of a batch shares (the scheduler, the step count and the step's shapes). */
export type CoreBatchOptions = Omit<CoreOptions, 'noise' | 'signal' | 'onProgress' | 'record' | 'latents'>;

/** The outcome of one image of a batch, in item order; `error` is what stopped it (as thrown). */
export type CoreOutcome = { ok: true; result: CoreResult } | { ok: false; error: unknown };

/** Runs the pipeline on X (HxWx3 uint8, sides multiples of 8): the batch of one image. */
export async function runCore<C, U>(
  models: PipelineNetworks<C, U>,
  image: { rgb: Uint8Array; width: number; height: number },
  prompts: Prompts,
  o: CoreOptions,
): Promise<CoreResult> {
  const { noise, signal, onProgress, record, latents, ...shared } = o;
  const [r] = await runCoreBatch(models, [{ image, prompts, noise, signal, onProgress, record, latents }], shared);
  if (!r.ok) throw r.error;
  return r.result;
}

/** One image while its batch runs. */
interface Slot {
  item: CoreItem;
  /** Set once the image is dropped (failed or cancelled); it then takes no further part. */
  dropped?: { error: unknown };
  scheduler: Scheduler;
  ctxHigh?: Tensor;
  ctxLow?: Tensor;
  control?: Tensor;
  moments?: Tensor;
  latents?: Float32Array;
  /** ControlNet conditions of this image per latent window ('y,x,h,w'). */
  conds: Map<string, Tensor>;
  /** The current step's model input [rows, 4, h, w] and noise prediction. */
  input?: Tensor;
  eps?: Float32Array;
  decoded?: Uint8Array;
  image?: Uint8Array;
}

const cancelled = () => new XpsrError('ERR_CANCELLED', 'cancelled');

/**
 * Runs the pipeline on several images of the same size at once: one ControlNet + UNet step for all of
 * them per timestep (2 rows per image with CFG: [uncond, cond] of image 1, then of image 2, ...), the VAE
 * batched, text encoding per text (cached). Each image keeps its own captions, noise stream (drawn in the
 * official order), scheduler state, signal and progress, so its result equals running it alone: the
 * engine computes rows independently. An image that fails or is cancelled is dropped (its rows leave the
 * next step); the others go on. Resolves with one outcome per item, in item order; rejects only for
 * settings that no image could run with.
 */
export async function runCoreBatch<C, U>(models: PipelineNetworks<C, U>, items: CoreItem[], o: CoreBatchOptions): Promise<CoreOutcome[]> {
  if (items.length === 0) return [];
  const t0 = performance.now();
  const timings: Record<Stage, number> = { text: 0, encode: 0, denoise: 0, decode: 0, colorfix: 0 };
  const { width: W, height: H } = items[0].image;
  if (W % 8 || H % 8) throw new XpsrError('ERR_INVALID_ARGUMENT', `image sides must be multiples of 8, got ${W}x${H}`);
  for (const it of items)
    if (it.image.width !== W || it.image.height !== H)
      throw new XpsrError('ERR_INVALID_ARGUMENT', `the images of a batch must have one size: ${W}x${H} and ${it.image.width}x${it.image.height}`);
  const h = H / 8;
  const w = W / 8;
  const cfg = o.guidanceScale > 1;
  const rows = cfg ? 2 : 1;
  const plane = rows * 4 * h * w; // one image's rows of a latent-sized tensor
  const device = models.engine.device;

  // One scheduler per image: the multistep solvers keep a per-sample history.
  const slots: Slot[] = items.map((item) => ({ item, scheduler: createScheduler(o.scheduler, models.schedulerConfig), conds: new Map() }));
  const timesteps = slots.map((s) => s.scheduler.setTimesteps(o.steps))[0];

  const progress = (s: Slot, stage: Stage, step: number, total: number, extra: Partial<ProgressEvent> = {}) =>
    s.item.onProgress?.({ stage, step, total, elapsedMs: performance.now() - t0, ...extra });
  const live = () => slots.filter((s) => !s.dropped);
  const drop = (s: Slot, e: unknown) => {
    if (s.dropped || s.image) return; // an image whose result is complete is kept, whatever comes after
    s.dropped = { error: s.item.signal?.aborted ? cancelled() : e };
    s.item.onDropped?.(s.dropped.error);
  };
  // A cancelled image is dropped as soon as its signal aborts (its rows finish the running call unused).
  const unlisten = slots.map((s) => {
    const onAbort = () => drop(s, cancelled());
    s.item.signal?.addEventListener('abort', onAbort, { once: true });
    if (s.item.signal?.aborted) onAbort();
    return () => s.item.signal?.removeEventListener('abort', onAbort);
  });
  /** Runs `fn` for every live image in turn; an image whose work throws is dropped, the others go on. */
  const eachImage = async (fn: (s: Slot) => Promise<void> | void) => {
    for (const s of live()) {
      if (s.dropped) continue; // cancelled while an earlier image was being worked on
      try {
        await fn(s);
      } catch (e) {
        drop(s, e);
      }
    }
  };
  /**
   * One engine call for a group of images. It is cancelled only when every image of the group is; if it
   * fails, each image of the group is dropped with that error. Undefined when no image of the group is left.
   */
  const together = async <T>(group: Slot[], fn: (signal: AbortSignal | undefined) => Promise<T>): Promise<T | undefined> => {
    if (group.every((s) => s.dropped)) return undefined;
    const all = whenAllAbort(group.map((s) => s.item.signal));
    try {
      return await fn(all.signal);
    } catch (e) {
      for (const s of group) drop(s, e);
      return undefined;
    } finally {
      all.dispose();
    }
  };

  try {
    // 1. Text contexts of each image's CFG rows (each text encoded once and cached: negatives are shared).
    let ts = performance.now();
    await eachImage(async (s) => {
      progress(s, 'text', 0, 1);
      const texts = cfgTexts(s.item.prompts, {
        addedPrompt: o.addedPrompt,
        negativePrompt: o.negativePrompt,
        guidance: cfg,
        lowLevelGuidance: o.lowLevelGuidance,
      });
      s.ctxHigh = await models.text.encodeRows(texts.high, o.longPrompts, s.item.signal);
      s.ctxLow = await models.text.encodeRows(texts.low, o.longPrompts, s.item.signal);
      s.item.record?.('prompt_embeds', s.ctxHigh);
      s.item.record?.('lowlevel_prompt_embeds', s.ctxLow);
      progress(s, 'text', 1, 1);
    });
    timings.text = performance.now() - ts;

    // 2. Image-only work, once per image: the ControlNet condition and (official init) the VAE latent.
    ts = performance.now();
    await eachImage((s) => {
      progress(s, 'encode', 0, 1);
      if (s.item.latents && s.item.latents.length !== 4 * h * w) throw new XpsrError('ERR_SHAPE_MISMATCH', `latents must be [1, 4, ${h}, ${w}]`);
      s.control = { shape: [1, 3, H, W], data: toControlImage(s.item.image.rgb, W, H) };
      s.item.record?.('control_image', repeatBatch(s.control, rows));
    });
    const tiledEncode = useTiledVae(o, H, W, false, device);
    const toEncode = live().filter((s) => !s.item.latents && o.init !== 'noise');
    for (const group of tiledEncode ? toEncode.map((s) => [s]) : chunks(toEncode, vaeBatchLimit(o, H * W, false, device))) {
      const x = catBatch(group.map((s) => ({ shape: [1, 3, H, W], data: toVaeInput(s.item.image.rgb, W, H) })));
      const moments = await together(
        group,
        async (signal) =>
          (tiledEncode
            ? await models.vae.encodeTiled(x, { tile: VAE_ENCODER_TILING.tile, pad: VAE_ENCODER_TILING.pad, signal })
            : await models.vae.encode(x, { signal })
          ).moments,
      );
      if (!moments) continue;
      group.forEach((s, k) => {
        s.moments = sliceBatch(moments, k, 1);
        s.item.record?.('vae_encode.x', sliceBatch(x, k, 1));
        s.item.record?.('vae_encode.moments', s.moments);
      });
    }
    await eachImage((s) => {
      const { record: rec, noise } = s.item;
      const sch = s.scheduler;
      if (s.item.latents) {
        s.latents = scaleF32(s.item.latents, sch.initNoiseSigma);
      } else if (o.init === 'noise') {
        s.latents = scaleF32(noise.normal(4 * h * w), sch.initNoiseSigma);
      } else {
        // the official draw order: the posterior sample, then the two add_noise draws
        const z = posteriorSample(s.moments!, noise.normal(4 * h * w), models.vae.scalingFactor, rec);
        const x1 = sch.addNoise(z.data, noise.normal(z.data.length), timesteps[0]);
        rec?.('latents_after_add_noise.0', { shape: z.shape, data: x1 });
        const x2 = sch.addNoise(x1, noise.normal(z.data.length), o.addedNoiseLevel);
        rec?.('latents_after_add_noise.1', { shape: z.shape, data: x2 });
        s.latents = scaleF32(x2, sch.initNoiseSigma);
        s.moments = undefined;
      }
      rec?.('latents.initial', { shape: [1, 4, h, w], data: s.latents });
      progress(s, 'encode', 1, 1);
    });
    timings.encode = performance.now() - ts;

    // 3. Denoising loop: per timestep one step call for the images whose text contexts have the same
    // shapes (all of them, unless 'chunks' prompts of different lengths), tile by tile when large.
    ts = performance.now();
    const tiling = planTiling(h, w, o.tiling, device, live().length);
    /** The ControlNet condition of an image's latent window, computed once per window. */
    const condFor = async (s: Slot, y: number, x: number, th: number, tw: number, signal?: AbortSignal) => {
      const key = `${y},${x},${th},${tw}`;
      let c = s.conds.get(key);
      if (!c) {
        const crop = tiling ? cropNCHW(s.control!, y * 8, x * 8, th * 8, tw * 8) : s.control!;
        c = await models.controlnet.condEmbedding(crop, { signal });
        s.conds.set(key, c);
      }
      return repeatBatch(c, rows);
    };
    /** Per context shape, the images of the last step call: its constants are still on the device. */
    const lastCall = new Map<string, string>();
    for (let i = 0; i < timesteps.length; i++) {
      const t = timesteps[i];
      await eachImage(async (s) => {
        s.input = repeatBatch({ shape: [1, 4, h, w], data: s.scheduler.scaleModelInput(s.latents!, t) }, rows);
        s.item.record?.(`step.${i}.latent_model_input`, s.input);
        if (!tiling) await condFor(s, 0, 0, h, w, s.item.signal);
      });
      for (const group of contextGroups(live())) {
        const shapeKey = `${group[0].ctxHigh!.shape[1]},${group[0].ctxLow!.shape[1]}`;
        const members = group.map((s) => slots.indexOf(s)).join(',');
        const sample = catBatch(group.map((s) => s.input!));
        const ctxHigh = catBatch(group.map((s) => s.ctxHigh!));
        const ctxLow = catBatch(group.map((s) => s.ctxLow!));
        let eps: Float32Array | undefined;
        if (!tiling) {
          const cond = catBatch(await Promise.all(group.map((s) => condFor(s, 0, 0, h, w))));
          const reuseConstants = i > 0 && lastCall.get(shapeKey) === members;
          lastCall.delete(shapeKey);
          const r = await together(group, (signal) =>
            models.engine.step(
              models.controlnet,
              models.unet,
              { sample, timestep: t, ctxHigh, ctxLow, cond, conditioningScale: o.conditioningScale, reuseConstants },
              { signal, intermediates: group.some((s) => s.item.record) },
            ),
          );
          if (!r) continue;
          lastCall.set(shapeKey, members);
          eps = r.noisePred.data;
          group.forEach((s, k) => {
            const rec = s.item.record;
            if (!rec || !r.residuals) return;
            const n = r.residuals.length - 1;
            rec(`step.${i}.controlnet.mid_block_res_sample`, sliceBatch(r.residuals[n], k * rows, rows));
            r.residuals
              .slice(0, n)
              .forEach((res, j) => rec(`step.${i}.controlnet.down_block_res_samples.${String(j).padStart(2, '0')}`, sliceBatch(res, k * rows, rows)));
          });
        } else {
          const ts2 = tiling.tileSize;
          const blender = new TileBlender({ batch: rows * group.length, channels: 4, height: h, width: w, tileHeight: ts2, tileWidth: ts2 });
          let k = 0;
          for (const tile of tiling.tiles) {
            const cond = await together(group, (signal) => Promise.all(group.map((s) => condFor(s, tile.y, tile.x, ts2, ts2, signal))));
            const r =
              cond &&
              (await together(group, (signal) =>
                models.engine.step(
                  models.controlnet,
                  models.unet,
                  {
                    sample: cropNCHW(sample, tile.y, tile.x, ts2, ts2),
                    timestep: t,
                    ctxHigh,
                    ctxLow,
                    cond: catBatch(cond),
                    conditioningScale: o.conditioningScale,
                  },
                  { signal },
                ),
              ));
            if (!r) break;
            blender.add(r.noisePred.data, tile.x, tile.y);
            k++;
            for (const s of group) if (!s.dropped) progress(s, 'denoise', i, timesteps.length, { tile: k, tiles: tiling.tiles.length });
          }
          if (k === tiling.tiles.length) eps = blender.result();
        }
        if (eps) group.forEach((s, k) => (s.eps = eps.subarray(k * plane, (k + 1) * plane)));
      }
      await eachImage((s) => {
        const rec = s.item.record;
        const eps = s.eps!;
        s.eps = undefined;
        assertFinite(eps, `noise prediction at step ${i + 1} (t=${t})`);
        rec?.(`step.${i}.noise_pred_uncond_text`, { shape: [rows, 4, h, w], data: eps });
        const guided = cfg ? applyGuidance(eps, o.guidanceScale) : eps;
        rec?.(`step.${i}.noise_pred_guided`, { shape: [1, 4, h, w], data: guided });
        s.latents = s.scheduler.step(guided, t, s.latents!, s.item.noise).prevSample;
        rec?.(`step.${i}.latents_out`, { shape: [1, 4, h, w], data: s.latents });
        progress(s, 'denoise', i + 1, timesteps.length);
      });
    }
    timings.denoise = performance.now() - ts;

    // 4. Decode (batched) and post-process.
    ts = performance.now();
    // (Host memory of this decode was checked before the image was decoded: lib/pipeline/memory.ts.)
    const tiledDecode = useTiledVae(o, h, w, true, device);
    if (tiledDecode) models.engine.clearPlans(); // the cached step plans would hold their activation memory
    for (const group of tiledDecode ? live().map((s) => [s]) : chunks(live(), vaeBatchLimit(o, H * W, true, device))) {
      for (const s of group) progress(s, 'decode', 0, 1);
      const z = catBatch(group.map((s) => ({ shape: [1, 4, h, w], data: divF32(s.latents!, models.vae.scalingFactor) })));
      const image = await together(
        group,
        async (signal) =>
          (tiledDecode
            ? await models.vae.decodeTiled(z, { tile: VAE_DECODER_TILING.tile, pad: VAE_DECODER_TILING.pad, signal })
            : await models.vae.decode(z, { signal })
          ).image,
      );
      if (!image) continue;
      group.forEach((s, k) => {
        const rec = s.item.record;
        const one = sliceBatch(image, k, 1);
        rec?.('vae_decode.z', sliceBatch(z, k, 1));
        rec?.('vae_decode.image', one);
        if (rec) {
          const pt = new Float32Array(one.data.length);
          for (let j = 0; j < pt.length; j++) pt[j] = Math.min(1, Math.max(0, f(one.data[j] / 2 + 0.5)));
          rec('image_pt', { shape: one.shape, data: pt });
        }
        s.decoded = fromDecoded(one.data, W, H);
        progress(s, 'decode', 1, 1);
      });
    }
    timings.decode = performance.now() - ts;
    ts = performance.now();
    await eachImage((s) => {
      s.image = colorFix(o.colorFix, { data: s.decoded!, width: W, height: H }, { data: s.item.image.rgb, width: W, height: H });
      progress(s, 'colorfix', 1, 1);
    });
    timings.colorfix = performance.now() - ts;
    const tiled = tiling ? { tiles: tiling.tiles.length, tileSize: tiling.tileSize } : null;
    return slots.map((s) =>
      s.dropped
        ? { ok: false, error: s.dropped.error }
        : {
            ok: true,
            result: {
              decoded: s.decoded!,
              image: s.image!,
              width: W,
              height: H,
              timesteps,
              timingsMs: { ...timings },
              tiled,
              batchSize: items.length,
            },
          },
    );
  } finally {
    for (const off of unlisten) off();
  }
}

/** The images grouped by the shapes of their text contexts (one group unless 'chunks' lengths differ). */
function contextGroups(slots: Slot[]): Slot[][] {
  const groups = new Map<string, Slot[]>();
  for (const s of slots) {
    const key = `${s.ctxHigh!.shape[1]},${s.ctxLow!.shape[1]}`;
    groups.set(key, [...(groups.get(key) ?? []), s]);
  }
  return [...groups.values()];
}

/** `xs` in consecutive chunks of at most `n`. */
function chunks<T>(xs: T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

/** Rows [start, start + n) of a tensor. */
function sliceBatch(t: Tensor, start: number, n: number): Tensor {
  const per = t.data.length / t.shape[0];
  return { shape: [n, ...t.shape.slice(1)], data: t.data.slice(start * per, (start + n) * per) };
}

/**
 * A signal that aborts when every one of `signals` has; none when some image cannot be cancelled.
 * `dispose` removes the listeners.
 */
function whenAllAbort(signals: (AbortSignal | undefined)[]): { signal?: AbortSignal; dispose(): void } {
  if (signals.some((s) => !s)) return { dispose() {} };
  const ctl = new AbortController();
  const check = () => {
    if (signals.every((s) => s!.aborted)) ctl.abort();
  };
  for (const s of signals) s!.addEventListener('abort', check);
  check();
  return { signal: ctl.signal, dispose: () => signals.forEach((s) => s!.removeEventListener('abort', check)) };
}

/**
 * How many images one untiled VAE call may take: all of them, unless a memory budget is set and the
 * batched activations would exceed it (then as many as fit, at least one).
 */
function vaeBatchLimit(o: Pick<CoreOptions, 'tiling' | 'batchMemoryBudgetBytes'>, pixels: number, decoder: boolean, device: string): number {
  const budget = o.batchMemoryBudgetBytes ?? o.tiling.memoryBudgetBytes;
  if (budget === undefined) return Number.MAX_SAFE_INTEGER;
  return Math.max(1, Math.floor(budget / vaeActivationBytes(pixels, decoder, device)));
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

/** Latent tiling plan, or null when the whole latent is processed at once; `images` share each step. */
export function planTiling(h: number, w: number, t: TilingOptions, device = 'cpu', images = 1) {
  if (t.mode === 'auto' && t.memoryBudgetBytes !== undefined) {
    const choice = chooseTiling(h, w, {
      memoryBudgetBytes: t.memoryBudgetBytes,
      bytesPerLatentPixel: stepBytesPerLatentPixel(device) * Math.max(1, images),
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
