// Model configs read from each component's config.json (diffusers / HF names), validated before anything
// is built or allocated:
//   * a value of the wrong type, not an integer where one is needed, or outside ConfigLimits, and sizes
//     that do not fit together (heads not dividing a width, groups not dividing channels): Error
//     (WeightsInvalid) naming the file and the key;
//   * a valid value this engine does not implement: Error(Unsupported) naming the key.
// Shapes of every network come from here (no version flags): tiny fixtures and full SD-1.5 sizes go
// through the same code. Synthetic configs (benchmarks, tests) are checked the same way.
#pragma once
#include <string>
#include <vector>

#include "json.h"

namespace xpsr {

// Bounds on config.json values, the one place they are written. They are far above any published
// SD-family network (SD-1.5 values in brackets) and far below sizes that would overflow an index or
// exhaust memory: a value outside them is a corrupt or hostile file.
struct ConfigLimits {
  static constexpr int kMaxBlocks = 8;              // entries of block_out_channels [4]
  static constexpr int kMaxWidth = 8192;            // channels of a block, text hidden width, context width [1280, 768]
  static constexpr int kMaxIoChannels = 64;         // in / out / latent / conditioning channels [3, 4]
  static constexpr int kMaxLayersPerBlock = 16;     // layers_per_block [2]
  static constexpr int kMaxTransformerLayers = 16;  // transformer_layers_per_block [1]
  static constexpr int kMaxHeads = 256;             // attention heads [8, 12]
  static constexpr int kMaxGroups = 1024;           // norm_num_groups [32]
  static constexpr int kMaxCondBlocks = 8;          // entries of conditioning_embedding_out_channels [4]
  static constexpr int kMaxTextLayers = 128;        // num_hidden_layers [12]
  static constexpr int kMaxTextFfWidth = 65536;     // intermediate_size [3072]
  static constexpr int kMaxVocab = 1 << 20;         // vocab_size [49408]
  static constexpr int kMaxPositions = 8192;        // max_position_embeddings [77]
  static constexpr double kMaxEps = 1.0;            // norm epsilons are in (0, kMaxEps] [1e-5]
  static constexpr double kMaxScalingFactor = 1e3;  // VAE scaling_factor in (0, this] [0.18215]
  static constexpr double kMaxFreqShift = 1e3;      // |freq_shift| [0]
  // Weights of one network, estimated from the config (UNet [0.9e9]): beyond it the sizes are each in
  // range but together absurd.
  static constexpr double kMaxParameters = 4e9;
};

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

// Channels of the skip features of the trunk's down half, in order: conv_in, every resnet layer of every
// block, every downsampler. The ControlNet has one zero conv per skip; the UNet adds one residual to each.
std::vector<int> skip_channels(const UNetConfig& c);

struct ControlNetConfig {
  UNetConfig trunk;
  int conditioning_channels = 3;
  std::vector<int> cond_embedding_channels;  // conditioning_embedding_out_channels
  bool use_lowlevel_prompt = true, use_rrdb = false;
};

struct VaeConfig {
  int in_channels = 3, out_channels = 3, latent_channels = 4;
  std::vector<int> block_out_channels;
  int layers_per_block = 2;
  int norm_num_groups = 32;
  float scaling_factor = 0.18215f;
};

struct ClipTextEncoderConfig {
  int vocab_size = 49408, hidden_size = 768, intermediate_size = 3072, num_layers = 12, num_heads = 12;
  int max_position_embeddings = 77;
  float layer_norm_eps = 1e-5f;
  bool quick_gelu = true;  // hidden_act: quick_gelu | gelu
};

// `where` names the file in messages ("/models/sd/unet/config.json").
UNetConfig parse_unet_config(const Json& j, const std::string& where);
ControlNetConfig parse_controlnet_config(const Json& j, const std::string& where);
VaeConfig parse_vae_config(const Json& j, const std::string& where);
ClipTextEncoderConfig parse_clip_text_encoder_config(const Json& j, const std::string& where);

}  // namespace xpsr
