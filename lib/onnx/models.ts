/**
 * onnxruntime-backed networks for the pipeline core (lib/pipeline/core.ts): the text encoder, the VAE
 * and the denoising step of an export folder (lib/onnx/export.ts), behind the same methods the core calls
 * on the native engine's objects. The exported graphs have static shapes: each call picks the file of its
 * image size and batch from manifest.json and opens its session once. The step graph computes the
 * ControlNet's condition embedding itself, so `condEmbedding` hands the control image through.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { XpsrError } from '../errors.js';
import type { RunOptions, Tensor } from '../engine/engine.js';
import type { PipelineNetworks } from '../pipeline/core.js';
import { TextConditioner } from '../pipeline/text.js';
import type { ClipTokenizer } from '../tokenizer/index.js';
import type { OnnxExportedFile, OnnxManifest, OnnxPart } from './export.js';
import { OnnxSession, type SessionOptions } from './runtime.js';

function checkAbort(signal?: AbortSignal) {
  if (signal?.aborted) throw new XpsrError('ERR_CANCELLED', 'cancelled');
}

/** The sessions of one export folder, opened on first use. */
export class OnnxExport {
  readonly #sessions = new Map<string, Promise<OnnxSession>>();

  private constructor(
    readonly dir: string,
    readonly manifest: OnnxManifest,
    private readonly options: SessionOptions,
  ) {}

  /** Reads `dir/manifest.json` (written by exportOnnx / `xpsr export onnx`). */
  static open(dir: string, options: SessionOptions = {}): OnnxExport {
    let manifest: OnnxManifest;
    try {
      manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as OnnxManifest;
    } catch (e) {
      throw new XpsrError('ERR_WEIGHTS_MISSING', `${dir} is not an ONNX export folder (manifest.json: ${(e as Error).message})`);
    }
    if (manifest.format !== 'xpsr-onnx-export/1')
      throw new XpsrError('ERR_WEIGHTS_INVALID', `${dir}/manifest.json: unknown format '${String(manifest.format)}'`);
    return new OnnxExport(dir, manifest, options);
  }

  /** The file of `part` for an image of W x H (any size for the text encoder) and `batch` rows. */
  file(part: OnnxPart, batch: number, width?: number, height?: number): OnnxExportedFile {
    const f = this.manifest.files.find(
      (x) =>
        x.part === part && (width === undefined || (x.width === width && x.height === height)) && (this.manifest.dynamicBatch || x.batch === batch),
    );
    if (!f) {
      const have = this.manifest.files.filter((x) => x.part === part).map((x) => `${x.width ?? '-'}x${x.height ?? '-'} batch ${x.batch}`);
      throw new XpsrError(
        'ERR_UNSUPPORTED',
        `${this.dir} has no '${part}' graph for ${width !== undefined ? `${width}x${height} ` : ''}batch ${batch} ` +
          `(it has: ${have.join(', ') || 'none'}); export that size with \`xpsr export onnx --size ${width ?? 512}x${height ?? 512}\``,
      );
    }
    return f;
  }

  session(f: OnnxExportedFile): Promise<OnnxSession> {
    let s = this.#sessions.get(f.file);
    if (!s) {
      s = OnnxSession.open(path.join(this.dir, f.file), this.options);
      this.#sessions.set(f.file, s);
      s.catch(() => this.#sessions.delete(f.file));
    }
    return s;
  }

  /** Releases every open session (idempotent). */
  async release(): Promise<void> {
    const all = [...this.#sessions.values()];
    this.#sessions.clear();
    for (const s of all) await (await s).release();
  }
}

export class OnnxTextEncoder {
  constructor(private readonly x: OnnxExport) {}
  async encode(ids: Int32Array | BigInt64Array, shape: [number, number], options: { signal?: AbortSignal } = {}) {
    checkAbort(options.signal);
    const f = this.x.file('text_encoder', shape[0]);
    const L = f.inputs[0]?.shape[1];
    if (L !== shape[1]) throw new XpsrError('ERR_UNSUPPORTED', `the exported text encoder takes ${String(L)} tokens, got ${shape[1]}`);
    const s = await this.x.session(f);
    const out = await s.run({ input_ids: { shape, ids: ids instanceof BigInt64Array ? ids : BigInt64Array.from(ids, (v) => BigInt(v)) } });
    return { lastHiddenState: out.last_hidden_state };
  }
  unload(): void {}
}

export class OnnxVae {
  constructor(private readonly x: OnnxExport) {}
  get scalingFactor(): number {
    return this.x.manifest.vaeScalingFactor ?? 0.18215;
  }
  async encode(x: Tensor, options: RunOptions = {}) {
    checkAbort(options.signal);
    const s = await this.x.session(this.x.file('vae_encoder', x.shape[0], x.shape[3], x.shape[2]));
    return { moments: (await s.run({ image: x })).moments };
  }
  async decode(z: Tensor, options: RunOptions = {}) {
    checkAbort(options.signal);
    const s = await this.x.session(this.x.file('vae_decoder', z.shape[0], 8 * z.shape[3], 8 * z.shape[2]));
    return { image: (await s.run({ latent: z })).image };
  }
  encodeTiled(): Promise<{ moments: Tensor }> {
    return Promise.reject(
      new XpsrError('ERR_UNSUPPORTED', "the onnxruntime engine has no tiled VAE: use vaeTiling 'off' and export the image's size"),
    );
  }
  decodeTiled(): Promise<{ image: Tensor }> {
    return this.encodeTiled() as unknown as Promise<{ image: Tensor }>;
  }
  unload(): void {}
}

/** The ControlNet half of the step graph: its condition is the control image itself (embedded in the graph). */
export class OnnxControlNet {
  condEmbedding(image: Tensor): Promise<Tensor> {
    return Promise.resolve(image);
  }
  unload(): void {}
}

/** The UNet half of the step graph (a token for `step`). */
export class OnnxUNet {
  unload(): void {}
}

export class OnnxStepRunner {
  readonly device = 'cpu';
  readonly description = 'onnxruntime (CPU execution provider)';
  constructor(private readonly x: OnnxExport) {}
  clearPlans(): void {}
  async step(
    _controlnet: OnnxControlNet,
    _unet: OnnxUNet,
    args: { sample: Tensor; timestep: number; ctxHigh: Tensor; ctxLow?: Tensor; cond?: Tensor; image?: Tensor; conditioningScale?: number },
    options: RunOptions = {},
  ): Promise<{ noisePred: Tensor; residuals?: Tensor[] }> {
    checkAbort(options.signal);
    const [N, , h, w] = args.sample.shape;
    const f = this.x.file('step', N, 8 * w, 8 * h);
    const control = args.cond ?? args.image;
    if (!control) throw new XpsrError('ERR_INVALID_ARGUMENT', "step needs the control image ('cond' or 'image')");
    const feeds: Record<string, Tensor> = {
      sample: args.sample,
      timestep: { shape: [N], data: new Float32Array(N).fill(args.timestep) },
      encoder_hidden_states: args.ctxHigh,
      controlnet_cond: control,
      conditioning_scale: { shape: [1], data: Float32Array.of(args.conditioningScale ?? 1) },
    };
    if (args.ctxLow) feeds.lowlevel_encoder_hidden_states = args.ctxLow;
    const out = await (await this.x.session(f)).run(feeds);
    const res = Object.keys(out)
      .filter((k) => k.startsWith('controlnet.'))
      .sort()
      .map((k) => out[k]);
    return { noisePred: out.noise_pred, residuals: options.intermediates && res.length ? res : undefined };
  }
}

export interface OnnxPipeline extends PipelineNetworks<OnnxControlNet, OnnxUNet> {
  /** The export folder's sessions; release() frees them. */
  onnx: OnnxExport;
}

/** The pipeline core's networks from an export folder, run by onnxruntime on the CPU. */
export function createOnnxPipeline(options: {
  dir: string;
  tokenizer: ClipTokenizer;
  schedulerConfig: Record<string, unknown>;
  threads?: number;
}): OnnxPipeline {
  const x = OnnxExport.open(options.dir, { threads: options.threads });
  return {
    onnx: x,
    engine: new OnnxStepRunner(x),
    text: new TextConditioner(options.tokenizer, new OnnxTextEncoder(x)),
    vae: new OnnxVae(x),
    unet: new OnnxUNet(),
    controlnet: new OnnxControlNet(),
    schedulerConfig: options.schedulerConfig,
  };
}
