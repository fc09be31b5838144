// Pipeline networks (lib/pipeline/core PipelineModels) for tests: the fixture model's, or networks built
// from other configs with seeded synthetic weights (shapes only; no golden output, so tests compare runs
// of the same networks with each other).
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { Engine } from '../../dist/lib/engine/engine.js';
import { ClipTokenizer } from '../../dist/lib/tokenizer/index.js';
import { TextConditioner } from '../../dist/lib/pipeline/text.js';
import { clipTokenizerFromGzippedMerges } from '../../dist/lib/demo/tokenizer.js';
import { demoDataDir } from '../../dist/lib/demo/model.js';
import { model } from './fixtures.mjs';

const schedulerConfig = () => JSON.parse(readFileSync(path.join(model, 'scheduler', 'scheduler_config.json'), 'utf8'));

/** The fixture model's networks on a new CPU engine. */
export async function fixturePipeline() {
  const engine = await Engine.create({ device: 'cpu' });
  const m = (sub) => path.join(model, sub);
  const tokenizer = await ClipTokenizer.fromDirectory(m('tokenizer'));
  return {
    engine,
    text: new TextConditioner(tokenizer, await engine.loadTextEncoder(m('text_encoder'))),
    vae: await engine.loadVae(m('vae')),
    unet: await engine.loadUNet(m('unet')),
    controlnet: await engine.loadControlNet(m('controlnet')),
    schedulerConfig: schedulerConfig(),
  };
}

// A three-level trunk unlike the fixtures' (per-block head counts, two layers per block, 24-wide contexts),
// as in native/test/configs_test.cpp.
const trunk = {
  in_channels: 4,
  block_out_channels: [32, 64, 64],
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  layers_per_block: 2,
  attention_head_dim: [1, 2, 4],
  cross_attention_dim: 24,
  norm_num_groups: 8,
  norm_eps: 1e-5,
  flip_sin_to_cos: true,
  freq_shift: 0,
};

/** Configs of networks other than the fixtures': `rrdb` ControlNet preprocessor, `lowlevel` UNet SFA blocks. */
export function otherConfigs({ rrdb = false, lowlevel = false } = {}) {
  return {
    text_encoder: {
      vocab_size: 49408,
      hidden_size: 24,
      intermediate_size: 48,
      num_hidden_layers: 2,
      num_attention_heads: 2,
      max_position_embeddings: 77,
      hidden_act: 'quick_gelu',
      layer_norm_eps: 1e-5,
    },
    vae: {
      _class_name: 'AutoencoderKL',
      in_channels: 3,
      out_channels: 3,
      latent_channels: 4,
      block_out_channels: [16, 32, 32, 32],
      down_block_types: Array(4).fill('DownEncoderBlock2D'),
      up_block_types: Array(4).fill('UpDecoderBlock2D'),
      layers_per_block: 1,
      norm_num_groups: 8,
      scaling_factor: 0.18215,
    },
    unet: {
      ...trunk,
      out_channels: 4,
      up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
      up_use_lowlevel_prompt: [false, lowlevel, lowlevel],
      mid_use_lowlevel_prompt: lowlevel,
      down_use_lowlevel_prompt: lowlevel,
    },
    controlnet: { ...trunk, conditioning_embedding_out_channels: [8, 16, 16, 32], use_lowlevel_prompt: true, use_rrdb: rrdb },
  };
}

/** Networks of `configs` with seeded synthetic weights on a new CPU engine (the CLIP tokenizer of the demo). */
export async function syntheticPipeline(configs, seed = 5) {
  const engine = await Engine.create({ device: 'cpu' });
  const tokenizer = clipTokenizerFromGzippedMerges(path.join(demoDataDir, 'clip-merges.txt.gz'), {
    model_max_length: 77,
    bos_token: '<|startoftext|>',
    eos_token: '<|endoftext|>',
    pad_token: '<|endoftext|>',
    unk_token: '<|endoftext|>',
  });
  return {
    engine,
    text: new TextConditioner(tokenizer, await engine.loadSynthetic('text_encoder', configs.text_encoder, seed)),
    vae: await engine.loadSynthetic('vae', configs.vae, seed + 1),
    unet: await engine.loadSynthetic('unet', configs.unet, seed + 2),
    controlnet: await engine.loadSynthetic('controlnet', configs.controlnet, seed + 3),
    schedulerConfig: schedulerConfig(),
  };
}
