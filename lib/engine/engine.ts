/**
 * The typed, Promise-based engine API: load each network of XPSR (CLIP text encoder, VAE, XPSR UNet,
 * XPSR ControlNet) on a device and run it on Float32Array tensors in PyTorch layout (NCHW, [B, L, D]).
 * All work runs off the main thread in the native addon; every call accepts an AbortSignal.
 * The pipeline (lib/pipeline) is built on this; it is also public for users who want the parts.
 */
import { loadNative, nativeError, type NativeEngineHandle, type NativeModelInfo, type NativeRunStats, type NativeTensorIn } from '../native.js';
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

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function checkTensor(name: string, t: Tensor, rank?: number): NativeTensorIn {
  if (!t || !Array.isArray(t.shape) || !(t.data instanceof Float32Array))
    throw new XpsrError('ERR_INVALID_ARGUMENT', `'${name}' must be a tensor { shape: number[], data: Float32Array }`);
  if (rank !== undefined && t.shape.length !== rank)
    throw new XpsrError('ERR_SHAPE_MISMATCH', `'${name}' must have ${rank} dimensions, got [${t.shape.join(', ')}]`);
  if (numel(t.shape) !== t.data.length)
    throw new XpsrError('ERR_SHAPE_MISMATCH', `'${name}' has ${t.data.length} values but shape [${t.shape.join(', ')}]`);
  return { shape: t.shape, data: t.data };
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

  async #load(kind: string, options: Parameters<NativeEngineHandle['load']>[1]): Promise<ModelInfo> {
    const stack = new Error();
    try {
      return await this.handle().load(kind, options);
    } catch (e) {
      throw nativeError(e, stack);
    }
  }

  /** @internal Runs one entry; converts errors and wires the AbortSignal. */
  async run(
    entry: string,
    models: number[],
    inputs: Record<string, NativeTensorIn>,
    params: Record<string, number>,
    options: RunOptions = {},
  ): Promise<{ outputs: Record<string, Tensor>; stats: RunStats }> {
    const stack = new Error();
    const native = this.handle();
    if (options.signal?.aborted) throw new XpsrError('ERR_CANCELLED', 'cancelled');
    const addon = loadNative();
    const flag = new addon.CancelFlag();
    const onAbort = () => flag.cancel();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await native.run({ entry, models, inputs, params, intermediates: options.intermediates ?? false }, flag);
    } catch (e) {
      throw nativeError(e, stack);
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * CLIP text encoder from a folder with config.json + model.safetensors (or pytorch_model.bin), or from an
   * original-layout SD-1.5 single file (see {@link WeightSourceOptions}).
   */
  async loadTextEncoder(path: string, options: WeightSourceOptions = {}): Promise<TextEncoder> {
    return new TextEncoder(this, await this.#load('text_encoder', { path, ...source(options) }));
  }
  /** AutoencoderKL from a folder or an SD-1.5 single file; `encoder`/`decoder` false skips loading that half. */
  async loadVae(path: string, options: { encoder?: boolean; decoder?: boolean } & WeightSourceOptions = {}): Promise<Vae> {
    return new Vae(this, await this.#load('vae', { path, vaeEncoder: options.encoder ?? true, vaeDecoder: options.decoder ?? true, ...source(options) }));
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
  async checkWeights(kind: 'text_encoder' | 'vae' | 'unet' | 'controlnet', path: string, options: WeightSourceOptions = {}): Promise<ModelInfo> {
    return this.#load(kind, { path, checkOnly: true, ...source(options) });
  }

  /** A network with random weights sized from `config` (benchmarks and tests; no files read). */
  async loadSynthetic(kind: 'text_encoder' | 'vae' | 'unet' | 'controlnet', config: object, seed = 1): Promise<Model> {
    const info = await this.#load(kind, { synthetic: true, configJson: JSON.stringify(config), seed });
    switch (kind) {
      case 'text_encoder': return new TextEncoder(this, info);
      case 'vae': return new Vae(this, info);
      case 'unet': return new UNet(this, info);
      default: return new ControlNet(this, info);
    }
  }

  /**
   * One denoising network evaluation: ControlNet then UNet on the same batch (one native plan, one CUDA
   * graph on GPU). Returns ε [N, 4, h, w]; with `intermediates` also the ControlNet residuals.
   */
  async step(
    controlnet: ControlNet,
    unet: UNet,
    args: {
      sample: Tensor; timestep: number; ctxHigh: Tensor; ctxLow?: Tensor; cond?: Tensor; image?: Tensor; conditioningScale?: number;
      /**
       * The contexts and condition are the same tensors as in the previous step call of the same shapes:
       * they are not sent again (they stay on the device). The pipeline sets it from the second step on.
       */
      reuseConstants?: boolean;
    },
    options: RunOptions = {},
  ): Promise<{ noisePred: Tensor; residuals?: Tensor[]; stats: RunStats }> {
    const keep = (t: NativeTensorIn): NativeTensorIn => (args.reuseConstants ? { shape: t.shape, data: new Float32Array(0) } : t);
    const inputs: Record<string, NativeTensorIn> = {
      sample: checkTensor('sample', args.sample, 4),
      ctx_high: keep(checkTensor('ctxHigh', args.ctxHigh, 3)),
    };
    if (args.ctxLow) inputs.ctx_low = keep(checkTensor('ctxLow', args.ctxLow, 3));
    if (args.cond) inputs.cond = keep(checkTensor('cond', args.cond, 4));
    else if (args.image) inputs.image = keep(checkTensor('image', args.image, 4));
    else throw new XpsrError('ERR_INVALID_ARGUMENT', "step needs 'cond' (ControlNet.condEmbedding) or 'image'");
    const r = await this.run('step', [controlnet.id, unet.id], inputs,
      { timestep: args.timestep, conditioning_scale: args.conditioningScale ?? 1 }, options);
    const residuals = options.intermediates
      ? Object.keys(r.outputs).filter((k) => k.startsWith('controlnet.')).sort().map((k) => r.outputs[k])
      : undefined;
    return { noisePred: r.outputs.noise_pred, residuals, stats: r.stats };
  }

  /** Drops compiled plans (their activation memory); they are rebuilt on next use. */
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
  /** Frees this network's weights (and the engine's plans). */
  unload(): void {
    this.engine.handle().unload(this.id);
  }
}

export class TextEncoder extends Model {
  /** input ids [B, L] (L <= 77) -> last_hidden_state [B, L, D]; intermediates: hidden_states.k. */
  async encode(ids: Int32Array | BigInt64Array, shape: [number, number], options: RunOptions = {}) {
    if (ids.length !== shape[0] * shape[1])
      throw new XpsrError('ERR_SHAPE_MISMATCH', `input ids have ${ids.length} values but shape [${shape.join(', ')}]`);
    const r = await this.engine.run('encode', [this.id], { input_ids: { shape, data: ids } }, {}, options);
    return { lastHiddenState: r.outputs.last_hidden_state, outputs: r.outputs, stats: r.stats };
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

function tileParams(o: VaeTileRunOptions): Record<string, number> {
  const p: Record<string, number> = {};
  if (o.tile !== undefined) {
    if (!Number.isInteger(o.tile) || o.tile < 1) throw new XpsrError('ERR_INVALID_ARGUMENT', `'tile' must be an integer >= 1, got ${String(o.tile)}`);
    p.tile = o.tile;
  }
  if (o.pad !== undefined) {
    if (!Number.isInteger(o.pad) || o.pad < 0) throw new XpsrError('ERR_INVALID_ARGUMENT', `'pad' must be an integer >= 0, got ${String(o.pad)}`);
    p.pad = o.pad;
  }
  return p;
}

export class Vae extends Model {
  get scalingFactor(): number {
    return (this.config.scaling_factor as number | undefined) ?? 0.18215;
  }
  /** x [N, 3, H, W] in [-1, 1] -> moments [N, 2*latent, H/8, W/8] (mean | logvar, before clamping). */
  async encode(x: Tensor, options: RunOptions = {}) {
    const r = await this.engine.run('encode', [this.id], { x: checkTensor('x', x, 4) }, {}, options);
    return { moments: r.outputs.moments, outputs: r.outputs, stats: r.stats };
  }
  /** z [N, latent, h, w] (latents / scaling factor) -> image [N, 3, 8h, 8w] in about [-1, 1]. */
  async decode(z: Tensor, options: RunOptions = {}) {
    const r = await this.engine.run('decode', [this.id], { z: checkTensor('z', z, 4) }, {}, options);
    return { image: r.outputs.image, outputs: r.outputs, stats: r.stats };
  }
  /**
   * {@link encode} tile by tile with bounded device memory (native/engine/models/vae_tiled.h): the same
   * function as the untiled encoder (GroupNorm statistics of the whole image, attention over all positions;
   * max difference about 1e-6 relative, docs/tiling.md), unlike the official vaehook. `tile` / `pad` are in
   * image pixels and shape the official split (defaults 1024 / 32); device memory grows with `tile`.
   */
  async encodeTiled(x: Tensor, options: VaeTileRunOptions = {}) {
    const r = await this.engine.run('encode_tiled', [this.id], { x: checkTensor('x', x, 4) }, tileParams(options), options);
    return { moments: r.outputs.moments, stats: r.stats };
  }
  /**
   * {@link decode} tile by tile with bounded device memory; same function as the untiled decoder (see
   * {@link encodeTiled}). `tile` / `pad` are in latent pixels (defaults 224 / 11, the official split).
   */
  async decodeTiled(z: Tensor, options: VaeTileRunOptions = {}) {
    const r = await this.engine.run('decode_tiled', [this.id], { z: checkTensor('z', z, 4) }, tileParams(options), options);
    return { image: r.outputs.image, stats: r.stats };
  }
}

export interface ControlNetArgs {
  sample: Tensor;
  timestep: number;
  ctxHigh: Tensor;
  /** Low-level context; omitted = the SFA bypass (§4.3 meaning 2). */
  ctxLow?: Tensor;
  /** Precomputed conditioning embedding (condEmbedding), or `image` to compute it here. */
  cond?: Tensor;
  image?: Tensor;
  conditioningScale?: number;
}

export class ControlNet extends Model {
  /** image [N, 3, H, W] in [0, 1] -> conditioning embedding [N, C0, H/8, W/8] (once per image). */
  async condEmbedding(image: Tensor, options: RunOptions = {}) {
    const r = await this.engine.run('cond_embedding', [this.id], { image: checkTensor('image', image, 4) }, {}, options);
    return r.outputs.cond;
  }
  /** Residuals (already times conditioningScale): `down` in skip order and `mid`. */
  async forward(args: ControlNetArgs, options: RunOptions = {}) {
    const inputs: Record<string, NativeTensorIn> = {
      sample: checkTensor('sample', args.sample, 4),
      ctx_high: checkTensor('ctxHigh', args.ctxHigh, 3),
    };
    if (args.ctxLow) inputs.ctx_low = checkTensor('ctxLow', args.ctxLow, 3);
    if (args.cond) inputs.cond = checkTensor('cond', args.cond, 4);
    else if (args.image) inputs.image = checkTensor('image', args.image, 4);
    else throw new XpsrError('ERR_INVALID_ARGUMENT', "ControlNet.forward needs 'cond' or 'image'");
    const r = await this.engine.run('forward', [this.id], inputs,
      { timestep: args.timestep, conditioning_scale: args.conditioningScale ?? 1 }, options);
    const down = Object.keys(r.outputs).filter((k) => k.startsWith('down_block_res_samples.')).sort().map((k) => r.outputs[k]);
    return { down, mid: r.outputs.mid_block_res_sample, outputs: r.outputs, stats: r.stats };
  }
}

export class UNet extends Model {
  /** ε prediction [N, 4, h, w] given the ControlNet residuals. */
  async forward(
    args: { sample: Tensor; timestep: number; ctxHigh: Tensor; ctxLow?: Tensor; down: Tensor[]; mid: Tensor },
    options: RunOptions = {},
  ) {
    const inputs: Record<string, NativeTensorIn> = {
      sample: checkTensor('sample', args.sample, 4),
      ctx_high: checkTensor('ctxHigh', args.ctxHigh, 3),
      mid_block_additional_residual: checkTensor('mid', args.mid, 4),
    };
    if (args.ctxLow) inputs.ctx_low = checkTensor('ctxLow', args.ctxLow, 3);
    args.down.forEach((t, k) => {
      inputs[`down_block_additional_residuals.${String(k).padStart(2, '0')}`] = checkTensor(`down[${k}]`, t, 4);
    });
    const r = await this.engine.run('forward', [this.id], inputs, { timestep: args.timestep }, options);
    return { sample: r.outputs.sample_out, outputs: r.outputs, stats: r.stats };
  }
}
