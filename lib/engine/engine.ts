/**
 * The typed, Promise-based engine API: load each network of XPSR (CLIP text encoder, VAE, XPSR UNet,
 * XPSR ControlNet) on a device and run it on Float32Array tensors in PyTorch layout (NCHW, [B, L, D]).
 * Every method maps to one typed native entry (lib/native.ts, native/engine/engine.h); all work runs off
 * the main thread in the native addon, which validates every request; every call accepts an AbortSignal.
 * The pipeline (lib/pipeline) is built on this; it is also public for users who want the parts.
 */
import {
  loadNative,
  nativeError,
  type NativeCancelFlag,
  type NativeEngineHandle,
  type NativeLoadOptions,
  type NativeModelInfo,
  type NativeModelKind,
  type NativePlanInfo,
  type NativeRunStats,
  type NativeTensor,
} from '../native.js';
import { XpsrError } from '../errors.js';

/** A dense float32 tensor in PyTorch layout. */
export interface Tensor {
  shape: number[];
  data: Float32Array;
}

export interface EngineOptions {
  /** 'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when available, else CPU with a notice). Defaults to 'auto'. */
  device?: string;
  /** CPU threads (CPU backend). Defaults to all hardware threads. */
  threads?: number;
  /** Called once with a notice when 'auto' falls back to the CPU. */
  onNotice?: (message: string) => void;
}

export interface RunOptions {
  /** Stops the computation between ops; the promise rejects with code ERR_CANCELLED. */
  signal?: AbortSignal;
  /** Also return the parity intermediates (`inter.*`, `hidden_states.*`). Defaults to false. */
  intermediates?: boolean;
}

export type ModelKind = NativeModelKind;
export type ModelInfo = NativeModelInfo;

/** Where a network's files come from, beyond the path (lib/weights resolves these for XPSR.load). */
export interface WeightSourceOptions {
  /** Prefer this diffusers variant in a folder ('fp16': model.fp16.safetensors). */
  variant?: string;
  /** The config (JSON text or object) instead of the folder's config.json or a single file's derived one. */
  config?: string | object;
}

function source(o: WeightSourceOptions): { variant?: string; configJson?: string } {
  const r: { variant?: string; configJson?: string } = {};
  if (o.variant !== undefined) r.variant = o.variant;
  if (o.config !== undefined) r.configJson = typeof o.config === 'string' ? o.config : JSON.stringify(o.config);
  return r;
}
export type RunStats = NativeRunStats;
/** A cached plan, or the sizes a step plan would have ({@link Engine.planStep}). */
export type PlanInfo = NativePlanInfo;
/** Intermediate tensors by the reference implementation's module names (empty unless asked for). */
export type Intermediates = Record<string, Tensor>;

/** What the ControlNet reads ({@link ControlNet.forward} and {@link Engine.step}); every tensor has N rows. */
export interface ControlNetInputs {
  /** Latent model input [N, 4, h, w]. */
  sample: Tensor;
  timestep: number;
  /** High-level text context [N, L, D]. */
  ctxHigh: Tensor;
  /** Low-level text context [N, L', D]; omitted = the SFA bypass (§4.3 meaning 2). */
  ctxLow?: Tensor;
  /** The condition embedding [N, C0, h, w] ({@link ControlNet.condEmbedding}), or `image` to compute it here. */
  cond?: Tensor;
  /** The condition image [N, 3, 8h, 8w] in [0, 1]. */
  image?: Tensor;
  /** ControlNet residual scale; defaults to the engine's (1, the official value). */
  conditioningScale?: number;
}

export interface StepArgs extends ControlNetInputs {
  /**
   * The contexts and the condition are the same tensors as in the previous step call of the same shapes:
   * they are not sent again (they stay on the device). The pipeline sets it from the second step on.
   */
  reuseConstants?: boolean;
}

export interface StepResult {
  /** ε for every row [N, 4, h, w]. */
  noisePred: Tensor;
  /** With `intermediates`: the ControlNet residuals (down..., mid last). */
  residuals?: Tensor[];
  intermediates: Intermediates;
  stats: RunStats;
}

/** The shapes of a step, for {@link Engine.planStep}. */
export interface StepShape {
  /** Rows: 2 per image with classifier-free guidance. */
  batch: number;
  /** Latent height and width. */
  height: number;
  width: number;
  /** Tokens of the high-level context (default 77). */
  contextLength?: number;
  /** Tokens of the low-level context (default 77); 0 = no low-level context. */
  lowContextLength?: number;
  /** The condition is given as the image (default: as the embedding, as the pipeline does). */
  imageCondition?: boolean;
  conditioningScale?: number;
}

/** Shape-only copy of a tensor (a constant the plan already holds). */
function shapeOnly(t: Tensor | undefined): NativeTensor | undefined {
  return t && { shape: t.shape, data: new Float32Array(0) };
}

export class Engine {
  #native: NativeEngineHandle | undefined;
  readonly device: string;
  readonly description: string;

  private constructor(native: NativeEngineHandle) {
    this.#native = native;
    this.device = native.device;
    this.description = native.description;
  }

  /** Creates an engine on a device. 'auto' tries CUDA then falls back to the CPU with a notice. */
  static async create(options: EngineOptions = {}): Promise<Engine> {
    const addon = loadNative();
    const device = options.device ?? 'auto';
    const threads = options.threads ?? 0;
    if (device === 'auto') {
      const devices = addon.listDevices();
      if (devices.cuda.length > 0) {
        try {
          return new Engine(new addon.NativeEngine({ device: 'cuda:0', threads }));
        } catch (e) {
          options.onNotice?.(`xpsr: CUDA device unusable (${(e as Error).message}); using the CPU`);
        }
      } else {
        options.onNotice?.(`xpsr: no CUDA device (${devices.reason}); using the CPU, which is much slower`);
      }
      return new Engine(new addon.NativeEngine({ device: 'cpu', threads }));
    }
    try {
      return new Engine(new addon.NativeEngine({ device, threads }));
    } catch (e) {
      throw nativeError(e, new Error());
    }
  }

  get disposed(): boolean {
    return this.#native === undefined;
  }

  /** @internal */
  handle(): NativeEngineHandle {
    if (!this.#native) throw new XpsrError('ERR_DISPOSED', 'this engine has been disposed');
    return this.#native;
  }

  /** @internal Runs one native call with the AbortSignal wired to a cancel flag; errors become XpsrErrors. */
  async call<T>(options: { signal?: AbortSignal }, fn: (native: NativeEngineHandle, cancel: NativeCancelFlag) => Promise<T>): Promise<T> {
    const stack = new Error();
    const native = this.handle();
    if (options.signal?.aborted) throw new XpsrError('ERR_CANCELLED', 'cancelled');
    const flag = new (loadNative().CancelFlag)();
    const onAbort = () => flag.cancel();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await fn(native, flag);
    } catch (e) {
      throw nativeError(e, stack);
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  async #load(kind: ModelKind, options: NativeLoadOptions): Promise<ModelInfo> {
    return this.call({}, (native) => native.load(kind, options));
  }

  /**
   * CLIP text encoder from a folder with config.json + model.safetensors (or pytorch_model.bin), or from an
   * original-layout SD-1.5 single file (see {@link WeightSourceOptions}).
   */
  async loadTextEncoder(path: string, options: WeightSourceOptions = {}): Promise<ClipTextEncoder> {
    return new ClipTextEncoder(this, await this.#load('text_encoder', { path, ...source(options) }));
  }
  /** AutoencoderKL from a folder or an SD-1.5 single file; `encoder`/`decoder` false skips loading that half. */
  async loadVae(path: string, options: { encoder?: boolean; decoder?: boolean } & WeightSourceOptions = {}): Promise<Vae> {
    return new Vae(
      this,
      await this.#load('vae', { path, vaeEncoder: options.encoder ?? true, vaeDecoder: options.decoder ?? true, ...source(options) }),
    );
  }
  /** XPSR UNet (config.json + diffusion_pytorch_model.safetensors / .bin). */
  async loadUNet(path: string, options: WeightSourceOptions = {}): Promise<UNet> {
    return new UNet(this, await this.#load('unet', { path, ...source(options) }));
  }
  /** XPSR ControlNet (config.json + diffusion_pytorch_model.safetensors / .bin). */
  async loadControlNet(path: string, options: WeightSourceOptions = {}): Promise<ControlNet> {
    return new ControlNet(this, await this.#load('controlnet', { path, ...source(options) }));
  }
  /**
   * Reads and validates every tensor of a component folder (config, key names, shapes, dtypes, NaN/Inf)
   * without uploading or running anything. Rejects with one error listing every problem.
   */
  async checkWeights(kind: ModelKind, path: string, options: WeightSourceOptions = {}): Promise<ModelInfo> {
    return this.#load(kind, { path, checkOnly: true, ...source(options) });
  }

  /** A network with random weights sized from `config` (benchmarks and tests; no files read). */
  async loadSynthetic(kind: 'text_encoder', config: object, seed?: number): Promise<ClipTextEncoder>;
  async loadSynthetic(kind: 'vae', config: object, seed?: number): Promise<Vae>;
  async loadSynthetic(kind: 'unet', config: object, seed?: number): Promise<UNet>;
  async loadSynthetic(kind: 'controlnet', config: object, seed?: number): Promise<ControlNet>;
  async loadSynthetic(kind: ModelKind, config: object, seed?: number): Promise<Model>;
  async loadSynthetic(kind: ModelKind, config: object, seed = 1): Promise<Model> {
    const info = await this.#load(kind, { synthetic: true, configJson: JSON.stringify(config), seed });
    switch (kind) {
      case 'text_encoder':
        return new ClipTextEncoder(this, info);
      case 'vae':
        return new Vae(this, info);
      case 'unet':
        return new UNet(this, info);
      default:
        return new ControlNet(this, info);
    }
  }

  /**
   * One denoising network evaluation: ControlNet then UNet on the same rows (one native plan, one CUDA
   * graph on GPU). N is any number of rows (2 per image with classifier-free guidance). Returns ε
   * [N, 4, h, w]; with `intermediates` also the ControlNet residuals.
   */
  async step(controlnet: ControlNet, unet: UNet, args: StepArgs, options: RunOptions = {}): Promise<StepResult> {
    const keep = args.reuseConstants ? shapeOnly : (t: Tensor | undefined) => t;
    const r = await this.call(options, (native, cancel) =>
      native.step(
        {
          controlnet: controlnet.id,
          unet: unet.id,
          sample: args.sample,
          timestep: args.timestep,
          ctxHigh: keep(args.ctxHigh)!,
          ctxLow: keep(args.ctxLow),
          cond: keep(args.cond),
          image: keep(args.image),
          conditioningScale: args.conditioningScale,
          reuseConstants: args.reuseConstants ?? false,
          intermediates: options.intermediates ?? false,
        },
        cancel,
      ),
    );
    return { noisePred: r.noisePred, residuals: options.intermediates ? r.residuals : undefined, intermediates: r.intermediates, stats: r.stats };
  }

  /**
   * Builds the plan of a step of these shapes and returns its sizes (activation arena bytes, ops, FLOPs)
   * without allocating or running anything; the cached plan's numbers when it exists.
   */
  async planStep(controlnet: ControlNet, unet: UNet, shape: StepShape): Promise<PlanInfo> {
    return this.call({}, (native) => native.planStep({ controlnet: controlnet.id, unet: unet.id, ...shape }));
  }

  /** The cached plans, most recently used first. */
  plans(): PlanInfo[] {
    return this.handle().plans();
  }

  /**
   * Drops compiled plans (their activation memory); they are rebuilt on next use. Returns at once; while a
   * call runs, the plans are dropped when it ends.
   */
  clearPlans(): void {
    this.handle().clearPlans();
  }

  /** Frees weights, plans and device memory once in-flight calls finish. Idempotent. */
  dispose(): void {
    this.#native?.dispose();
    this.#native = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }
}

/** Base of the loaded networks. */
export class Model {
  constructor(
    protected readonly engine: Engine,
    readonly info: ModelInfo,
  ) {}
  get id(): number {
    return this.info.id;
  }
  get config(): Record<string, unknown> {
    return JSON.parse(this.info.config) as Record<string, unknown>;
  }
  /**
   * Frees this network's weights and the plans that use them. Returns at once; while a call runs, the
   * network is refused to new calls and freed when the call ends.
   */
  unload(): void {
    this.engine.handle().unload(this.id);
  }
}

/** The CLIP text encoder (HF CLIPTextModel). */
export class ClipTextEncoder extends Model {
  /** input ids [B, L] (L <= max_position_embeddings) -> last_hidden_state [B, L, D]; intermediates: hidden_states.k. */
  async encode(ids: Int32Array | BigInt64Array, shape: [number, number], options: RunOptions = {}) {
    const r = await this.engine.call(options, (native, cancel) =>
      native.textEncode({ model: this.id, inputIds: { shape, data: ids }, intermediates: options.intermediates ?? false }, cancel),
    );
    return { lastHiddenState: r.lastHiddenState, intermediates: r.intermediates, stats: r.stats };
  }
}

/** Options of {@link Vae.encodeTiled} / {@link Vae.decodeTiled}. */
export interface VaeTileRunOptions {
  /** Nominal tile size: image px for the encoder (default 1024), latent px for the decoder (default 224). */
  tile?: number;
  /** Official split padding (encoder 32, decoder 11); only moves the tile borders, never changes the result. */
  pad?: number;
  /** Stops the computation between ops and tiles; the promise rejects with code ERR_CANCELLED. */
  signal?: AbortSignal;
}

/** The SD AutoencoderKL. */
export class Vae extends Model {
  get scalingFactor(): number {
    return (this.config.scaling_factor as number | undefined) ?? 0.18215;
  }
  /** x [N, 3, H, W] in [-1, 1] -> moments [N, 2*latent, H/8, W/8] (mean | logvar, before clamping). */
  async encode(x: Tensor, options: RunOptions = {}) {
    const r = await this.engine.call(options, (native, cancel) =>
      native.vaeEncode({ model: this.id, x, intermediates: options.intermediates ?? false }, cancel),
    );
    return { moments: r.moments, intermediates: r.intermediates, stats: r.stats };
  }
  /** z [N, latent, h, w] (latents / scaling factor) -> image [N, 3, 8h, 8w] in about [-1, 1]. */
  async decode(z: Tensor, options: RunOptions = {}) {
    const r = await this.engine.call(options, (native, cancel) =>
      native.vaeDecode({ model: this.id, z, intermediates: options.intermediates ?? false }, cancel),
    );
    return { image: r.image, intermediates: r.intermediates, stats: r.stats };
  }
  /**
   * {@link encode} tile by tile with bounded device memory (native/engine/models/vae_tiled.h): the same
   * function as the untiled encoder (GroupNorm statistics of the whole image, attention over all positions;
   * max difference about 1e-6 relative, docs/tiling.md), unlike the official vaehook. `tile` / `pad` are in
   * image pixels and shape the official split (defaults 1024 / 32); device memory grows with `tile`.
   */
  async encodeTiled(x: Tensor, options: VaeTileRunOptions = {}) {
    const r = await this.engine.call(options, (native, cancel) =>
      native.vaeEncodeTiled({ model: this.id, x, tile: options.tile, pad: options.pad }, cancel),
    );
    return { moments: r.moments, stats: r.stats };
  }
  /**
   * {@link decode} tile by tile with bounded device memory; same function as the untiled decoder (see
   * {@link encodeTiled}). `tile` / `pad` are in latent pixels (defaults 224 / 11, the official split).
   */
  async decodeTiled(z: Tensor, options: VaeTileRunOptions = {}) {
    const r = await this.engine.call(options, (native, cancel) =>
      native.vaeDecodeTiled({ model: this.id, z, tile: options.tile, pad: options.pad }, cancel),
    );
    return { image: r.image, stats: r.stats };
  }
}

/** The XPSR ControlNet (with Semantic-Fusion Attention). */
export class ControlNet extends Model {
  /** image [N, 3, H, W] in [0, 1] -> conditioning embedding [N, C0, H/8, W/8] (once per image). */
  async condEmbedding(image: Tensor, options: RunOptions = {}): Promise<Tensor> {
    const r = await this.engine.call(options, (native, cancel) =>
      native.condEmbedding({ model: this.id, image, intermediates: options.intermediates ?? false }, cancel),
    );
    return r.cond;
  }
  /** Residuals (already times conditioningScale): `down` in skip order and `mid`. */
  async forward(args: ControlNetInputs, options: RunOptions = {}) {
    const r = await this.engine.call(options, (native, cancel) =>
      native.controlnetForward({ model: this.id, ...args, intermediates: options.intermediates ?? false }, cancel),
    );
    return { down: r.down, mid: r.mid, intermediates: r.intermediates, stats: r.stats };
  }
}

/** The XPSR UNet. */
export class UNet extends Model {
  /** ε prediction [N, 4, h, w] given the ControlNet residuals. */
  async forward(args: { sample: Tensor; timestep: number; ctxHigh: Tensor; ctxLow?: Tensor; down: Tensor[]; mid: Tensor }, options: RunOptions = {}) {
    const r = await this.engine.call(options, (native, cancel) =>
      native.unetForward({ model: this.id, ...args, intermediates: options.intermediates ?? false }, cancel),
    );
    return { sample: r.sample, intermediates: r.intermediates, stats: r.stats };
  }
}
