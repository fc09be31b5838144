/**
 * Parity of the EXPORTED networks: `xpsr parity --engine onnxruntime --fixtures DIR` exports the fixture
 * model (DIR/model/*) to ONNX with the parity intermediates as extra outputs, runs every file with
 * onnxruntime on the CPU and compares with the golden tensors of the official code, with the same
 * tolerances and line format as the native engine's checks. `step` is the ControlNet + UNet graph as
 * shipped (control image and conditioning scale as inputs); it is checked against the UNet's golden
 * output because the fixtures chain (the UNet fixture's inputs are the ControlNet fixture's outputs),
 * which the check verifies first.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { toFloat32, type SafetensorsFile, type Tensor as StTensor } from '../io/safetensors.js';
import type { Tensor } from '../engine/engine.js';
import { compareFloat, type ParityLine } from '../parity/compare.js';
import type { ParityCheck, ParityContext } from '../parity/index.js';
import { pipelineCheck, type PipelineLoader } from '../parity/pipeline-run.js';
import { ClipTokenizer } from '../tokenizer/index.js';
import { exportOnnx, type OnnxExportOptions, type OnnxPart } from './export.js';
import { createOnnxPipeline } from './models.js';
import { OnnxSession, type IdsTensor } from './runtime.js';

/** Export settings of the checks (default: the default export). */
export type OnnxVariant = Pick<OnnxExportOptions, 'layout' | 'fp16' | 'dynamicBatch' | 'external'>;

function get(f: SafetensorsFile, key: string): StTensor {
  const t = f.tensors.get(key);
  if (!t) throw new Error(`fixture tensor '${key}' is missing`);
  return t;
}
const tensor = (f: SafetensorsFile, key: string): Tensor => ({ shape: get(f, key).shape, data: toFloat32(get(f, key)) });
const scalar = (v: number): Tensor => ({ shape: [1], data: Float32Array.of(v) });
const timesteps = (f: SafetensorsFile, n: number): Tensor => ({
  shape: [n],
  data: new Float32Array(n).fill(Number(toFloat32(get(f, 'input.timestep'))[0])),
});

/** Exports `parts` of the fixture model into a temporary folder, runs `fn` on the sessions, cleans up. */
async function withExport<T>(
  variant: OnnxVariant,
  ctx: ParityContext,
  components: OnnxExportOptions['components'],
  options: Omit<OnnxExportOptions, 'components' | 'out'>,
  fn: (open: (part: OnnxPart) => Promise<OnnxSession>) => Promise<T>,
): Promise<T> {
  const out = mkdtempSync(path.join(tmpdir(), 'xpsr-onnx-parity-'));
  const sessions: OnnxSession[] = [];
  try {
    const manifest = await exportOnnx({ components, out, intermediates: true, ...variant, ...options });
    return await fn(async (part) => {
      const file = manifest.files.find((x) => x.part === part);
      if (!file) throw new Error(`export wrote no '${part}'`);
      const s = await OnnxSession.open(path.join(out, file.file));
      sessions.push(s);
      return s;
    });
  } finally {
    for (const s of sessions) await s.release();
    rmSync(out, { recursive: true, force: true });
  }
}

const model = (ctx: ParityContext, sub: string) => ({ path: path.join(ctx.dir, 'model', sub) });

/** Every output with a same-named golden tensor (optionally renamed), sorted like the engine's checks. */
function compare(
  component: string,
  outputs: Record<string, Tensor>,
  ref: SafetensorsFile,
  tol: number,
  rename: Record<string, string> = {},
): ParityLine[] {
  const lines: ParityLine[] = [];
  for (const [name, t] of Object.entries(outputs).sort(([a], [b]) => a.localeCompare(b))) {
    const key = rename[name] ?? name;
    const r = ref.tensors.get(key);
    if (r) lines.push(compareFloat(component, key, t.data, toFloat32(r), tol));
  }
  return lines;
}

/** ControlNet-style inputs of a fixture (controlnet.safetensors layout). */
function stepFeeds(f: SafetensorsFile): Record<string, Tensor> {
  const sample = tensor(f, 'input.sample');
  const cs = Number(f.metadata.conditioning_scale ?? '1');
  return {
    sample,
    timestep: timesteps(f, sample.shape[0]),
    encoder_hidden_states: tensor(f, 'input.encoder_hidden_states'),
    lowlevel_encoder_hidden_states: tensor(f, 'input.lowlevel_encoder_hidden_states'),
    controlnet_cond: tensor(f, 'input.controlnet_cond'),
    conditioning_scale: scalar(Number.isFinite(cs) ? cs : 1),
  };
}

/** Image size [W, H] of a latent [N, C, h, w]. */
const sizeOf = (latent: Tensor): [number, number] => [8 * latent.shape[3], 8 * latent.shape[2]];

function unetCheck(variant: OnnxVariant, component: string, modelDir: string, file: string, intermediates?: string): ParityCheck {
  return {
    component,
    files: [file, `model/${modelDir}/config.json`],
    async run(ctx) {
      const f = ctx.read(file);
      const sample = tensor(f, 'input.sample');
      const feeds: Record<string, Tensor> = {
        sample,
        timestep: timesteps(f, sample.shape[0]),
        encoder_hidden_states: tensor(f, 'input.encoder_hidden_states'),
        mid_block_additional_residual: tensor(f, 'input.mid_block_additional_residual'),
      };
      if (f.tensors.has('input.lowlevel_encoder_hidden_states'))
        feeds.lowlevel_encoder_hidden_states = tensor(f, 'input.lowlevel_encoder_hidden_states');
      for (const k of f.tensors.keys()) if (k.startsWith('input.down_block_additional_residuals.')) feeds[k.slice('input.'.length)] = tensor(f, k);
      return withExport(
        variant,
        ctx,
        { unet: model(ctx, modelDir) },
        { parts: ['unet'], sizes: [sizeOf(sample)], batch: sample.shape[0] },
        async (open) => {
          const out = await (await open('unet')).run(feeds);
          const lines = compare(component, out, f, ctx.tol, { noise_pred: 'sample_out' });
          if (intermediates && existsSync(path.join(ctx.dir, intermediates)))
            lines.push(...compare(component, out, ctx.read(intermediates), ctx.tol));
          return lines;
        },
      );
    },
  };
}

/**
 * The pipeline checks (lib/parity/pipeline-run.ts) with the networks exported to ONNX and run by
 * onnxruntime: text encoder, VAE and step graphs of the fixture image's size.
 */
function onnxPipelineLoader(variant: OnnxVariant, name: string): PipelineLoader {
  return async (ctx) => {
    const f = ctx.read(`pipeline_${name}.safetensors`);
    const settings = JSON.parse(readFileSync(path.join(ctx.dir, `pipeline_${name}.json`), 'utf8')) as { guidance_scale: number };
    const [H, W] = get(f, 'input.lr_image_u8').shape;
    const out = mkdtempSync(path.join(tmpdir(), 'xpsr-onnx-pipeline-'));
    try {
      await exportOnnx({
        components: {
          textEncoder: model(ctx, 'text_encoder'),
          vae: model(ctx, 'vae'),
          unet: model(ctx, 'unet'),
          controlnet: model(ctx, 'controlnet'),
        },
        out,
        sizes: [[W, H]],
        batch: settings.guidance_scale > 1 ? 2 : 1,
        residualOutputs: true,
        ...variant,
      });
      const models = createOnnxPipeline({
        dir: out,
        tokenizer: await ClipTokenizer.fromDirectory(path.join(ctx.dir, 'model', 'tokenizer')),
        schedulerConfig: JSON.parse(readFileSync(path.join(ctx.dir, 'model', 'scheduler', 'scheduler_config.json'), 'utf8')) as Record<
          string,
          unknown
        >,
      });
      return {
        models,
        release: async () => {
          await models.onnx.release();
          rmSync(out, { recursive: true, force: true });
        },
      };
    } catch (e) {
      rmSync(out, { recursive: true, force: true });
      throw e;
    }
  };
}

/** The checks, with the networks exported with `variant` (layout, fp16, dynamic batch, external data). */
export function onnxParityChecks(variant: OnnxVariant = {}): ParityCheck[] {
  return [
    {
      component: 'text_encoder',
      files: ['text_encoder.safetensors', 'model/text_encoder/config.json'],
      async run(ctx) {
        const f = ctx.read('text_encoder.safetensors');
        const ids = get(f, 'input_ids');
        return withExport(
          variant,
          ctx,
          { textEncoder: model(ctx, 'text_encoder') },
          { parts: ['text_encoder'], textBatch: ids.shape[0], seqLen: ids.shape[1] },
          async (open) => {
            const feeds: Record<string, IdsTensor> = { input_ids: { shape: ids.shape, ids: ids.data as BigInt64Array } };
            return compare('text_encoder', await (await open('text_encoder')).run(feeds), f, ctx.tol);
          },
        );
      },
    },
    {
      component: 'vae_encoder',
      files: ['vae_encoder.safetensors', 'model/vae/config.json'],
      async run(ctx) {
        const f = ctx.read('vae_encoder.safetensors');
        const x = tensor(f, 'x');
        return withExport(
          variant,
          ctx,
          { vae: model(ctx, 'vae') },
          { parts: ['vae_encoder'], sizes: [[x.shape[3], x.shape[2]]], vaeBatch: x.shape[0] },
          async (open) => compare('vae_encoder', await (await open('vae_encoder')).run({ image: x }), f, ctx.tol),
        );
      },
    },
    {
      component: 'vae_decoder',
      files: ['vae_decoder.safetensors', 'model/vae/config.json'],
      async run(ctx) {
        const f = ctx.read('vae_decoder.safetensors');
        const z = tensor(f, 'z');
        return withExport(
          variant,
          ctx,
          { vae: model(ctx, 'vae') },
          { parts: ['vae_decoder'], sizes: [sizeOf(z)], vaeBatch: z.shape[0] },
          async (open) => compare('vae_decoder', await (await open('vae_decoder')).run({ latent: z }), f, ctx.tol),
        );
      },
    },
    {
      component: 'controlnet',
      files: ['controlnet.safetensors', 'model/controlnet/config.json'],
      async run(ctx) {
        const f = ctx.read('controlnet.safetensors');
        const feeds = stepFeeds(f);
        return withExport(
          variant,
          ctx,
          { controlnet: model(ctx, 'controlnet') },
          { parts: ['controlnet'], sizes: [sizeOf(feeds.sample)], batch: feeds.sample.shape[0] },
          async (open) => {
            const out = await (await open('controlnet')).run(feeds);
            const lines = compare('controlnet', out, f, ctx.tol);
            if (existsSync(path.join(ctx.dir, 'controlnet_intermediates.safetensors')))
              lines.push(...compare('controlnet', out, ctx.read('controlnet_intermediates.safetensors'), ctx.tol));
            return lines;
          },
        );
      },
    },
    unetCheck(variant, 'unet', 'unet', 'unet.safetensors', 'unet_intermediates.safetensors'),
    unetCheck(variant, 'unet_lowlevel_variant', 'unet_lowlevel_variant', 'unet_lowlevel_variant.safetensors'),
    {
      component: 'step',
      files: ['controlnet.safetensors', 'unet.safetensors', 'model/controlnet/config.json', 'model/unet/config.json'],
      async run(ctx) {
        const cn = ctx.read('controlnet.safetensors');
        const un = ctx.read('unet.safetensors');
        const chained = chainProblem(cn, un);
        if (chained) return [{ component: 'step', tensor: '(fixtures)', maxAbs: NaN, maxRel: NaN, tol: 0, pass: false, note: chained }];
        const feeds = stepFeeds(cn);
        return withExport(
          variant,
          ctx,
          { controlnet: model(ctx, 'controlnet'), unet: model(ctx, 'unet') },
          { parts: ['step'], sizes: [sizeOf(feeds.sample)], batch: feeds.sample.shape[0], residualOutputs: true },
          async (open) => {
            const out = await (await open('step')).run(feeds);
            const renamed: Record<string, string> = { noise_pred: 'sample_out' };
            const residuals: Record<string, Tensor> = {};
            for (const [k, t] of Object.entries(out)) if (k.startsWith('controlnet.')) residuals[k.slice('controlnet.'.length)] = t;
            return [...compare('step', residuals, cn, ctx.tol), ...compare('step', { noise_pred: out.noise_pred }, un, ctx.tol, renamed)];
          },
        );
      },
    },
    pipelineCheck('default', onnxPipelineLoader(variant, 'default')),
    pipelineCheck('latents_input', onnxPipelineLoader(variant, 'latents_input')),
  ];
}

export const onnxChecks: ParityCheck[] = onnxParityChecks();

/** Why the UNet fixture is not the continuation of the ControlNet fixture, or '' when it is. */
function chainProblem(cn: SafetensorsFile, un: SafetensorsFile): string {
  const same = (a: string, b: string, fa = cn, fb = un) => {
    const x = fa.tensors.get(a);
    const y = fb.tensors.get(b);
    if (!x || !y) return false;
    const p = toFloat32(x);
    const q = toFloat32(y);
    return p.length === q.length && p.every((v, i) => v === q[i]);
  };
  const pairs: [string, string][] = [
    ['input.sample', 'input.sample'],
    ['input.timestep', 'input.timestep'],
    ['input.encoder_hidden_states', 'input.encoder_hidden_states'],
    ['mid_block_res_sample', 'input.mid_block_additional_residual'],
  ];
  for (const k of cn.tensors.keys())
    if (k.startsWith('down_block_res_samples.')) pairs.push([k, `input.down_block_additional_residuals.${k.split('.').pop()}`]);
  const bad = pairs.filter(([a, b]) => !same(a, b)).map(([a]) => a);
  return bad.length ? `unet.safetensors does not continue controlnet.safetensors (${bad.join(', ')} differ)` : '';
}
