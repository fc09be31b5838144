// Model configs read from each component's config.json (diffusers / HF names), validated: a value this
// engine does not implement gives Error(Unsupported) naming the key, never a silently wrong model.
// Shapes of every network come from here (no version flags): tiny fixtures and full SD-1.5 sizes go
// through the same code.
#pragma once
#include <string>
#include <vector>

#include "json.h"

namespace xpsr {

struct UNetConfig {  // the XPSR UNet; its down half is also the ControlNet's trunk
  int in_channels = 4, out_channels = 4;
  std::vector<int> block_out_channels;
  std::vector<std::string> down_block_types, up_block_types;
  int layers_per_block = 2;
  std::vector<int> heads;  // per down block (attention_head_dim in diffusers = number of heads)
  int cross_attention_dim = 768;
  int norm_num_groups = 32;
  float norm_eps = 1e-5f;
  bool flip_sin_to_cos = true;
  float freq_shift = 0;
  int transformer_layers = 1;
  // XPSR low-level (SFA) switches for the UNet; all false in the released model.
  bool down_use_lowlevel = false, mid_use_lowlevel = false;
  std::vector<bool> up_use_lowlevel;
  int time_embed_dim() const { return block_out_channels[0] * 4; }
};

struct ControlNetConfig {
  UNetConfig trunk;
  int conditioning_channels = 3;
  std::vector<int> cond_embedding_channels;  // conditioning_embedding_out_channels
  bool use_lowlevel_prompt = true, use_rrdb = false, return_rgbs = true, use_latent_pred = true;
};

struct VAEConfig {
  int in_channels = 3, out_channels = 3, latent_channels = 4;
  std::vector<int> block_out_channels;
  int layers_per_block = 2;
  int norm_num_groups = 32;
  float scaling_factor = 0.18215f;
};

struct ClipTextConfig {
  int vocab_size = 49408, hidden_size = 768, intermediate_size = 3072, num_layers = 12, num_heads = 12;
  int max_position_embeddings = 77;
  float layer_norm_eps = 1e-5f;
  bool quick_gelu = true;  // hidden_act: quick_gelu | gelu
};

UNetConfig parse_unet_config(const Json& j, const std::string& where);
ControlNetConfig parse_controlnet_config(const Json& j, const std::string& where);
VAEConfig parse_vae_config(const Json& j, const std::string& where);
ClipTextConfig parse_clip_text_config(const Json& j, const std::string& where);

}  // namespace xpsr
