// Full-size Stable Diffusion 1.5 + XPSR configs and a Gaussian input helper (config.json values of the released model per
// docs/architecture.md §2), for benchmarks and full-size CUDA-vs-CPU tests with synthetic weights.
#pragma once
#include <random>
#include <vector>

#include "engine/engine.h"

namespace xpsr {

inline const char* kUNet = R"({"_class_name":"UNet2DConditionModel","in_channels":4,"out_channels":4,
 "block_out_channels":[320,640,1280,1280],"down_block_types":["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],
 "up_block_types":["UpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"],"layers_per_block":2,
 "attention_head_dim":8,"cross_attention_dim":768,"norm_num_groups":32,"norm_eps":1e-5,"flip_sin_to_cos":true,"freq_shift":0,
 "up_use_lowlevel_prompt":[false,false,false,false],"mid_use_lowlevel_prompt":false,"down_use_lowlevel_prompt":false})";
inline const char* kControlNet =
    R"({"_class_name":"ControlNetModel","in_channels":4,"block_out_channels":[320,640,1280,1280],
 "down_block_types":["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],"layers_per_block":2,
 "attention_head_dim":8,"cross_attention_dim":768,"norm_num_groups":32,"norm_eps":1e-5,"conditioning_embedding_out_channels":[16,32,96,256],
 "use_lowlevel_prompt":true,"use_rrdb":false,"return_rgbs":true,"use_latent_pred":true})";
inline const char* kVAE = R"({"_class_name":"AutoencoderKL","in_channels":3,"out_channels":3,"latent_channels":4,
 "block_out_channels":[128,256,512,512],"layers_per_block":2,"norm_num_groups":32,"scaling_factor":0.18215})";
inline const char* kCLIP = R"({"vocab_size":49408,"hidden_size":768,"intermediate_size":3072,"num_hidden_layers":12,
 "num_attention_heads":12,"max_position_embeddings":77,"hidden_act":"quick_gelu","layer_norm_eps":1e-5})";

// Gaussian test input of a shape (deterministic per seed).
inline HostTensor randn(std::vector<int64_t> shape, uint32_t seed, float scale = 1.f) {
  HostTensor t;
  t.shape = shape;
  size_t n = 1;
  for (auto d : shape) n *= (size_t)d;
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.f, scale);
  t.data.resize(n);
  for (auto& x : t.data) x = nd(g);
  return t;
}

}  // namespace xpsr
