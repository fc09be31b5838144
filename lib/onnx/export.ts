/**
 * ONNX export of the XPSR networks from the engine's own graphs (native/engine/onnx): the text encoder,
 * the VAE encoder and decoder, and one "step" graph = ControlNet (with SFA) + UNet, per image size.
 * Writes `<part>.onnx` / `<part>_<W>x<H>.onnx` (+ `<part>.onnx_data` external weights when a network is
 * over 2 GB, or always with `external: 'always'`) and `manifest.json` into `out`. See docs/onnx.md.
 */
import { loadNative, nativeError } from '../native.js';
import { XpsrError } from '../errors.js';

/** Where a component comes from: a diffusers folder, or random weights of a config (tests, benchmarks). */
/** A component as XPSR.load reads it (folder, weights file or SD single file; `configJson` / `variant` as there), or synthetic. */
export type ComponentSource = { path: string; configJson?: string; variant?: string } | { config: object; synthetic: true; seed?: number };

export type OnnxPart = 'text_encoder' | 'vae_encoder' | 'vae_decoder' | 'step' | 'controlnet' | 'unet';

export interface OnnxExportOptions {
  components: { textEncoder?: ComponentSource; vae?: ComponentSource; unet?: ComponentSource; controlnet?: ComponentSource };
  /** Output folder (created if missing). */
  out: string;
  /** Default: text_encoder, vae_encoder, vae_decoder, step (those whose components are given). */
  parts?: OnnxPart[];
  /** Image sizes [width, height] in pixels (multiples of 8); one file per size for the sized parts. Default [[512, 512]]. */
  sizes?: [number, number][];
  /** Batch of step / controlnet / unet (default 2: the two CFG rows). */
  batch?: number;
  /** Batch of the text encoder and the VAE (default 1, as the pipeline calls them). */
  textBatch?: number;
  vaeBatch?: number;
  /** Text length of the encoder and of the contexts (default 77). */
  seqLen?: number;
  /** Symbolic batch dimension ("batch") instead of the static one. */
  dynamicBatch?: boolean;
  /** float16 weights and activations (norms and softmax in float32); inputs/outputs stay float32. */
  fp16?: boolean;
  /** Internal layout of feature maps: 'nchw' (default; faster in onnxruntime in 2 of 3 runs, docs/benchmarks.md) or 'nhwc'. */
  layout?: 'nchw' | 'nhwc';
  /** External weight file: 'auto' (when a network is over ~1.8 GB), 'always', 'never'. */
  external?: 'auto' | 'always' | 'never';
  /** Also output the parity intermediates of single networks (inter.*, hidden_states.*). */
  intermediates?: boolean;
  /** step: also output the scaled ControlNet residuals (controlnet.*). */
  residualOutputs?: boolean;
}

export interface OnnxValueInfo {
  name: string;
  type: 'float32' | 'float16' | 'int64';
  shape: (number | string)[];
}

export interface OnnxExportedFile {
  part: OnnxPart;
  file: string;
  width?: number;
  height?: number;
  batch: number;
  externalData: string | null;
  bytes: number;
  weightBytes: number;
  nodes: number;
  inputs: OnnxValueInfo[];
  outputs: OnnxValueInfo[];
}

export interface OnnxManifest {
  format: 'xpsr-onnx-export/1';
  opset: number;
  layout: 'nchw' | 'nhwc';
  dtype: 'float32' | 'float16';
  dynamicBatch: boolean;
  vaeScalingFactor?: number;
  files: OnnxExportedFile[];
}

interface NativeSource {
  path?: string;
  configJson?: string;
  variant?: string;
  synthetic?: boolean;
  seed?: number;
}

type ExportAddon = { exportOnnx(options: object): Promise<string> };

const PARTS = new Set<OnnxPart>(['text_encoder', 'vae_encoder', 'vae_decoder', 'step', 'controlnet', 'unet']);

function source(name: string, s: ComponentSource | undefined): NativeSource | undefined {
  if (s === undefined) return undefined;
  if ('path' in s && typeof s.path === 'string') return { path: s.path, configJson: s.configJson, variant: s.variant };
  if ('synthetic' in s && s.synthetic && typeof s.config === 'object')
    return { configJson: JSON.stringify(s.config), synthetic: true, seed: s.seed ?? 1 };
  throw new XpsrError('ERR_INVALID_OPTION', `components.${name} must be { path } or { config, synthetic: true }`);
}

function positiveInt(name: string, v: number | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isInteger(v) || v < 1) throw new XpsrError('ERR_INVALID_OPTION', `'${name}' must be an integer >= 1, got ${String(v)}`);
  return v;
}

/** Exports the networks; resolves with the manifest (also written to `out/manifest.json`). */
export async function exportOnnx(options: OnnxExportOptions): Promise<OnnxManifest> {
  if (!options || typeof options.out !== 'string' || options.out === '')
    throw new XpsrError('ERR_INVALID_OPTION', "'out' (output folder) is required");
  const c = options.components ?? {};
  for (const p of options.parts ?? [])
    if (!PARTS.has(p)) throw new XpsrError('ERR_INVALID_OPTION', `unknown part '${String(p)}' (${[...PARTS].join(', ')})`);
  for (const s of options.sizes ?? [])
    if (!Array.isArray(s) || s.length !== 2 || !s.every((v) => Number.isInteger(v) && v > 0 && v % 8 === 0))
      throw new XpsrError('ERR_INVALID_OPTION', `sizes must be [width, height] pairs of positive multiples of 8, got ${JSON.stringify(s)}`);
  if (options.layout !== undefined && options.layout !== 'nchw' && options.layout !== 'nhwc')
    throw new XpsrError('ERR_INVALID_OPTION', `'layout' must be 'nchw' or 'nhwc'`);
  if (options.external !== undefined && !['auto', 'always', 'never'].includes(options.external))
    throw new XpsrError('ERR_INVALID_OPTION', `'external' must be 'auto', 'always' or 'never'`);
  const native = {
    components: {
      textEncoder: source('textEncoder', c.textEncoder),
      vae: source('vae', c.vae),
      unet: source('unet', c.unet),
      controlnet: source('controlnet', c.controlnet),
    },
    out: options.out,
    parts: options.parts,
    sizes: options.sizes,
    batch: positiveInt('batch', options.batch),
    textBatch: positiveInt('textBatch', options.textBatch),
    vaeBatch: positiveInt('vaeBatch', options.vaeBatch),
    seqLen: positiveInt('seqLen', options.seqLen),
    dynamicBatch: options.dynamicBatch ?? false,
    fp16: options.fp16 ?? false,
    layout: options.layout ?? 'nchw',
    external: options.external ?? 'auto',
    intermediates: options.intermediates ?? false,
    residualOutputs: options.residualOutputs ?? false,
  };
  const addon = loadNative() as unknown as ExportAddon;
  if (typeof addon.exportOnnx !== 'function')
    throw new XpsrError('ERR_UNSUPPORTED', 'this build of the native addon has no ONNX exporter; rebuild it (npm run build:native)');
  const stack = new Error();
  try {
    return JSON.parse(await addon.exportOnnx(native)) as OnnxManifest;
  } catch (e) {
    throw nativeError(e, stack);
  }
}
