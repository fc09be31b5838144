/**
 * Parity of the tokenizer (tokenizer_cases.json) and of whole pipeline runs (pipeline_*.safetensors):
 * the recorded noises are replayed in the official order and every stored per-step tensor, the decoded
 * image and the colour-fixed image are compared. Pipeline tolerance: max_abs <= 1e-3 * max(1, max|ref|)
 * for float tensors; uint8 images off by at most 1 in at most 0.1% of the values.
 */
import { XpsrError } from '../errors.js';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { toFloat32, type SafetensorsFile } from '../io/safetensors.js';
import { ClipTokenizer } from '../tokenizer/index.js';
import { ReplayNoise } from '../noise.js';
import { loadSchedulerConfig } from '../schedulers/index.js';
import type { Tensor } from '../engine/engine.js';
import { runCore, type PipelineModels, type PipelineNetworks } from '../pipeline/core.js';
import { TextConditioner } from '../pipeline/text.js';
import { LOWLEVEL_NEGATIVE_PROMPT } from '../pipeline/prompts.js';
import { compareFloat, compareU8, exactInts, type ParityLine } from './compare.js';
import type { ParityCheck, ParityContext } from './index.js';

interface TokenizerCase {
  text: string;
  input_ids: number[];
}

export const tokenizerCheck: ParityCheck = {
  component: 'tokenizer',
  files: ['tokenizer_cases.json', 'model/tokenizer/vocab.json', 'model/tokenizer/merges.txt'],
  async run(ctx) {
    const tok = await ClipTokenizer.fromDirectory(path.join(ctx.dir, 'model', 'tokenizer'));
    const cases = (JSON.parse(readFileSync(path.join(ctx.dir, 'tokenizer_cases.json'), 'utf8')) as { cases: TokenizerCase[] }).cases;
    return cases.map((c, i) => {
      const label = `case ${String(i).padStart(2, '0')} ${JSON.stringify(c.text.length > 30 ? c.text.slice(0, 27) + '...' : c.text)}`;
      return exactInts('tokenizer', label, Array.from(tok.encode(c.text).ids), c.input_ids);
    });
  },
};

async function loadModels(ctx: ParityContext): Promise<PipelineModels> {
  const engine = await ctx.engine();
  const m = (sub: string) => path.join(ctx.dir, 'model', sub);
  const tokenizer = await ClipTokenizer.fromDirectory(m('tokenizer'));
  const textEncoder = await engine.loadTextEncoder(m('text_encoder'));
  return {
    engine,
    text: new TextConditioner(tokenizer, textEncoder),
    vae: await engine.loadVae(m('vae')),
    unet: await engine.loadUNet(m('unet')),
    controlnet: await engine.loadControlNet(m('controlnet')),
    schedulerConfig: loadSchedulerConfig(path.join(m('scheduler'), 'scheduler_config.json')),
  };
}

/** Networks for a pipeline check and how to free them (the native engine's by default; lib/onnx has others). */
export type PipelineLoader = (ctx: ParityContext) => Promise<{ models: PipelineNetworks<unknown, unknown>; release(): Promise<void> }>;

const nativeLoader: PipelineLoader = async (ctx) => {
  const models = await loadModels(ctx);
  return {
    models,
    release: async () => {
      for (const m of [models.vae, models.unet, models.controlnet, models.text.encoder]) m.unload();
    },
  };
};

export function pipelineCheck(variant: string, load: PipelineLoader = nativeLoader): ParityCheck {
  const component = `pipeline_${variant}`;
  return {
    component,
    files: [
      `pipeline_${variant}.safetensors`,
      `pipeline_${variant}.json`,
      'model/unet/config.json',
      'model/controlnet/config.json',
      'model/vae/config.json',
      'model/text_encoder/config.json',
      'model/tokenizer/vocab.json',
      'model/scheduler/scheduler_config.json',
    ],
    async run(ctx) {
      const f = ctx.read(`pipeline_${variant}.safetensors`);
      const settings = JSON.parse(readFileSync(path.join(ctx.dir, `pipeline_${variant}.json`), 'utf8')) as {
        prompt: string;
        negative_prompt: string;
        lowlevel_prompt: string;
        num_inference_steps: number;
        guidance_scale: number;
        conditioning_scale: number;
        args: { init_latent_with_noise: boolean; added_noise_level: number };
      };
      const { models, release } = await load(ctx);
      const lr = f.tensors.get('input.lr_image_u8');
      if (!lr) throw new XpsrError('ERR_WEIGHTS_MISSING', "fixture tensor 'input.lr_image_u8' is missing");
      const [H, W] = lr.shape;
      const noises = [...f.tensors.keys()]
        .filter((k) => /^noise\.\d+$/.test(k))
        .sort()
        .map((k) => toFloat32(f.tensors.get(k)!));
      const recorded = new Map<string, Tensor>();
      const inputLatents = f.tensors.get('input.latents');
      const r = await runCore(
        models,
        { rgb: lr.data as Uint8Array, width: W, height: H },
        { high: settings.prompt, low: settings.lowlevel_prompt },
        {
          steps: settings.num_inference_steps,
          guidanceScale: settings.guidance_scale,
          conditioningScale: settings.conditioning_scale,
          scheduler: 'ddpm',
          addedPrompt: '', // the fixture's prompt already ends with the added prompt
          negativePrompt: settings.negative_prompt,
          lowLevelGuidance: 'official',
          longPrompts: 'truncate',
          init: settings.args.init_latent_with_noise ? 'noise' : 'lr',
          latents: inputLatents ? toFloat32(inputLatents) : undefined,
          addedNoiseLevel: settings.args.added_noise_level,
          colorFix: 'adain',
          tiling: { mode: 'off', tileSize: 320, overlap: 8, maxLatentPixels: 320 * 320 },
          vaeTiling: 'off',
          noise: new ReplayNoise(noises),
          record: (name, t) => recorded.set(name, t),
        },
      );
      const lines: ParityLine[] = [];
      // Token ids of the four texts.
      const tok = models.text.tokenizer;
      const texts: Record<string, string> = {
        prompt: settings.prompt,
        negative_prompt: settings.negative_prompt,
        lowlevel_prompt: settings.lowlevel_prompt,
        lowlevel_negative_prompt: LOWLEVEL_NEGATIVE_PROMPT,
      };
      for (const [name, text] of Object.entries(texts)) {
        const ref = f.tensors.get(`text.${name}.input_ids`);
        if (ref)
          lines.push(exactInts(component, `text.${name}.input_ids`, Array.from(tok.encode(text).ids), Array.from(ref.data as BigInt64Array, Number)));
      }
      for (const [name, t] of recorded) {
        const ref = f.tensors.get(name);
        if (!ref || ref.dtype === 'U8') continue;
        lines.push(compareFloat(component, name, t.data, toFloat32(ref), 1e-3));
      }
      lines.push(compareU8(component, 'image_u8', r.decoded, f.tensors.get('image_u8')!.data as Uint8Array));
      lines.push(compareU8(component, 'image_colorfix_u8', r.image, f.tensors.get('image_colorfix_u8')!.data as Uint8Array));
      lines.push(exactInts(component, 'timesteps', r.timesteps, Array.from(f.tensors.get('timesteps')!.data as BigInt64Array, Number)));
      await release();
      return lines;
    },
  };
}

export const pipelineRunChecks: ParityCheck[] = [pipelineCheck('default'), pipelineCheck('latents_input')];
export type { SafetensorsFile };
