// SD AutoencoderKL (xpsr-architecture.md §2.2, §3.7): encoder -> quant_conv -> moments (mean | logvar),
// and post_quant_conv -> decoder. GroupNorm eps 1e-6 everywhere; single-head mid-block attention; both
// the current (to_q/to_k/to_v/to_out.0) and the legacy (query/key/value/proj_attn) key names load.
#pragma once
#include "../config.h"
#include "blocks.h"

namespace xpsr {

struct VaeAttention {  // GroupNorm -> single-head self-attention with biases -> + x
  Norm group_norm;
  Attention attn;
  int groups = 32;
  void load(WeightLoader& ld, const std::string& prefix, int C, int groups);
  Val operator()(Graph& g, Val x) const;
};

struct VaeMid {
  ResnetBlock resnet0, resnet1;
  VaeAttention attention;
};

struct Vae {
  VaeConfig config;
  // encoder
  Conv enc_conv_in, enc_conv_out;
  std::vector<std::vector<ResnetBlock>> enc_blocks;
  std::vector<Conv> enc_down;  // pad (0,1,0,1) + 3x3 stride 2
  VaeMid enc_mid;
  Norm enc_norm_out;
  Linear quant_conv;
  // decoder
  Linear post_quant_conv;
  Conv dec_conv_in, dec_conv_out;
  VaeMid dec_mid;
  std::vector<std::vector<ResnetBlock>> dec_blocks;
  std::vector<Conv> dec_up;
  Norm dec_norm_out;

  void load(WeightLoader& ld, const VaeConfig& c, bool encoder, bool decoder);
  // x [N,3,H,W] in [-1,1] -> moments [N,2*latent,H/8,W/8]
  Val encode(Graph& g, Val x) const;
  // z [N,latent,h,w] (already divided by scaling_factor) -> image [N,3,8h,8w]
  Val decode(Graph& g, Val z) const;
  bool has_encoder = false, has_decoder = false;
};

}  // namespace xpsr
