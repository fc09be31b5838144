/**
 * `xpsr bench --synthetic`: the released Stable Diffusion 1.5 + XPSR network configs (docs/architecture.md
 * §2, the same values as native/bench/sd15_configs.h) with seeded random weights made by the engine, the
 * bundled CLIP tokenizer and SD-1.5's scheduler. Every network has its real size and cost, so speed and
 * memory are those of the real model; the images are meaningless.
 */
import type { Engine } from '../engine/engine.js';
import { SD15_SCHEDULER_CONFIG } from '../schedulers/index.js';
import { bundledTokenizer } from '../weights/index.js';
import type { LoadedComponents } from '../xpsr.js';

const trunk = {
  in_channels: 4,
  block_out_channels: [320, 640, 1280, 1280],
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  layers_per_block: 2,
  attention_head_dim: 8,
  cross_attention_dim: 768,
  norm_num_groups: 32,
  norm_eps: 1e-5,
  flip_sin_to_cos: true,
  freq_shift: 0,
};

export const SD15_XPSR_CONFIGS = {
  text_encoder: {
    vocab_size: 49408,
    hidden_size: 768,
    intermediate_size: 3072,
    num_hidden_layers: 12,
    num_attention_heads: 12,
    max_position_embeddings: 77,
    hidden_act: 'quick_gelu',
    layer_norm_eps: 1e-5,
  },
  vae: {
    _class_name: 'AutoencoderKL',
    in_channels: 3,
    out_channels: 3,
    latent_channels: 4,
    block_out_channels: [128, 256, 512, 512],
    layers_per_block: 2,
    norm_num_groups: 32,
    scaling_factor: 0.18215,
  },
  unet: {
    _class_name: 'UNet2DConditionModel',
    ...trunk,
    out_channels: 4,
    up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
    up_use_lowlevel_prompt: [false, false, false, false],
    mid_use_lowlevel_prompt: false,
    down_use_lowlevel_prompt: false,
  },
  controlnet: {
    _class_name: 'ControlNetModel',
    ...trunk,
    conditioning_embedding_out_channels: [16, 32, 96, 256],
    use_lowlevel_prompt: true,
    use_rrdb: false,
    return_rgbs: true,
    use_latent_pred: true,
  },
};

/** The synthetic SD-1.5 + XPSR components on `engine` (for XPSR.loadFrom). */
export async function makeSyntheticComponents(engine: Engine, seed = 1): Promise<LoadedComponents> {
  const c = SD15_XPSR_CONFIGS;
  // one network at a time: the weights are generated on the host before they move to the device
  const textEncoder = await engine.loadSynthetic('text_encoder', c.text_encoder, seed);
  const vae = await engine.loadSynthetic('vae', c.vae, seed + 1);
  const unet = await engine.loadSynthetic('unet', c.unet, seed + 2);
  const controlnet = await engine.loadSynthetic('controlnet', c.controlnet, seed + 3);
  return { tokenizer: bundledTokenizer(), textEncoder, vae, unet, controlnet, schedulerConfig: { ...SD15_SCHEDULER_CONFIG } };
}
