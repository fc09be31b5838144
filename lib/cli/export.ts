/**
 * `xpsr export onnx --sd DIR --xpsr DIR --out DIR [--fp16] [--size 512] [--batch 2] ...`: writes the
 * networks as ONNX files generated from the engine's own graphs (lib/onnx/export.ts, docs/onnx.md).
 */
import { XpsrError } from '../errors.js';
import { exportOnnx, type OnnxPart } from '../onnx/export.js';
import { resolveWeights } from '../weights/index.js';
import { parseFlags } from './common.js';

export const EXPORT_HELP = `Usage: xpsr export onnx --sd DIR --xpsr DIR --out DIR [options]

Writes ONNX files (opset 17) generated from the engine's own graphs, and out/manifest.json describing them:
  text_encoder.onnx            input_ids [B,77] int64 -> last_hidden_state [B,77,768]
  vae_encoder_<W>x<H>.onnx     image [N,3,H,W] in [-1,1] -> moments [N,8,H/8,W/8]
  vae_decoder_<W>x<H>.onnx     latent [N,4,H/8,W/8] (latents / scaling factor) -> image [N,3,H,W]
  step_<W>x<H>.onnx            ControlNet (with SFA) + UNet: sample, timestep, encoder_hidden_states,
                               lowlevel_encoder_hidden_states, controlnet_cond, conditioning_scale -> noise_pred
Weights go to <part>.onnx_data beside them when a network is over ~1.8 GB (shared by all sizes).

Options
  --sd DIR|FILE|REPO_ID, --xpsr DIR|REPO_ID
                           Stable Diffusion 1.5 (diffusers folder, single checkpoint file or cached repo id) and
                           the XPSR checkpoint folder (or --model DIR: one folder), as for xpsr upscale
  --variant fp16, --sd-config DIR   as for xpsr upscale
  --out DIR                output folder (created if missing)
  --size S                 image size in pixels: 512 or 768x512 (width x height); repeat or comma-separate
                           for several (one file per size for the sized parts). Default 512
  --batch N                batch of the step graph (default 2: the two CFG rows)
  --text-batch N, --vae-batch N    batch of the text encoder / VAE graphs (default 1, as the pipeline calls them)
  --dynamic-batch          symbolic batch dimension instead of the static one
  --fp16                   float16 weights and activations (norms and softmax in float32; inputs/outputs float32)
  --parts a,b              text_encoder, vae_encoder, vae_decoder, step (default: all four), controlnet, unet
  --layout nchw|nhwc       internal layout of feature maps (default nchw; see docs/onnx.md)
  --external auto|always|never     external weight file (default auto: above ~1.8 GB, protobuf's 2 GB limit)
`;

function parseSize(s: string): [number, number] {
  const m = /^(\d+)(?:x(\d+))?$/.exec(s.trim());
  if (!m) throw new XpsrError('ERR_INVALID_OPTION', `--size must be N or WxH, got '${s}'`);
  const w = Number(m[1]);
  const h = m[2] === undefined ? w : Number(m[2]);
  if (w % 8 || h % 8 || w <= 0 || h <= 0) throw new XpsrError('ERR_INVALID_OPTION', `--size ${s}: sides must be positive multiples of 8`);
  return [w, h];
}

function int(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new XpsrError('ERR_INVALID_OPTION', `--${name} must be an integer >= 1, got '${v}'`);
  return n;
}

export async function runExportCommand(argv: string[]): Promise<number> {
  const [format, ...rest] = argv;
  if (format === undefined || format === '--help' || format === '-h') {
    process.stdout.write(EXPORT_HELP);
    return format === undefined ? 1 : 0;
  }
  if (format !== 'onnx') throw new XpsrError('ERR_INVALID_OPTION', `xpsr export: unknown format '${format}' (only 'onnx')`);
  const { values } = parseFlags('export', rest, {
    sd: { type: 'string' },
    xpsr: { type: 'string' },
    model: { type: 'string' },
    variant: { type: 'string' },
    'sd-config': { type: 'string' },
    out: { type: 'string' },
    size: { type: 'string', multiple: true },
    batch: { type: 'string' },
    'text-batch': { type: 'string' },
    'vae-batch': { type: 'string' },
    'dynamic-batch': { type: 'boolean' },
    fp16: { type: 'boolean' },
    parts: { type: 'string' },
    layout: { type: 'string' },
    external: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(EXPORT_HELP);
    return 0;
  }
  if (!values.out) throw new XpsrError('ERR_INVALID_OPTION', 'xpsr export onnx needs --out DIR');
  if (!values.model && !(values.sd && values.xpsr))
    throw new XpsrError('ERR_INVALID_OPTION', 'xpsr export onnx needs --sd DIR and --xpsr DIR (or --model DIR)');
  const c = resolveWeights({ sd: values.sd, xpsr: values.xpsr, model: values.model, variant: values.variant, sdConfig: values['sd-config'] });
  const src = (x: { path: string; configJson?: string }) => ({ path: x.path, configJson: x.configJson, variant: c.variant });
  if (values.layout !== undefined && values.layout !== 'nchw' && values.layout !== 'nhwc')
    throw new XpsrError('ERR_INVALID_OPTION', `--layout must be nchw or nhwc, got '${values.layout}'`);
  if (values.external !== undefined && !['auto', 'always', 'never'].includes(values.external))
    throw new XpsrError('ERR_INVALID_OPTION', `--external must be auto, always or never, got '${values.external}'`);
  const sizes = (values.size ?? ['512']).flatMap((s) => s.split(',')).map(parseSize);
  const t0 = performance.now();
  const manifest = await exportOnnx({
    components: { textEncoder: src(c.textEncoder), vae: src(c.vae), unet: src(c.unet), controlnet: src(c.controlnet) },
    out: values.out,
    parts: values.parts?.split(',').map((p) => p.trim()) as OnnxPart[] | undefined,
    sizes,
    batch: int('batch', values.batch),
    textBatch: int('text-batch', values['text-batch']),
    vaeBatch: int('vae-batch', values['vae-batch']),
    dynamicBatch: values['dynamic-batch'] ?? false,
    fp16: values.fp16 ?? false,
    layout: values.layout as 'nchw' | 'nhwc' | undefined,
    external: values.external as 'auto' | 'always' | 'never' | undefined,
  });
  for (const f of manifest.files)
    process.stdout.write(
      `${f.file.padEnd(32)} ${(f.bytes / 2 ** 20).toFixed(1).padStart(8)} MiB${f.externalData ? ` + weights in ${f.externalData}` : ''}  (${f.nodes} nodes)\n`,
    );
  process.stdout.write(
    `exported ${manifest.files.length} files to ${values.out} in ${((performance.now() - t0) / 1000).toFixed(1)} s (manifest.json)\n`,
  );
  return 0;
}
