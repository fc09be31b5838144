// XPSR ControlNet (xpsr-architecture.md §4): conditioning embedding of the [0,1] LR image (once per
// image), the UNet trunk with Semantic-Fusion Attention in its cross-attention blocks, and the zero
// convs whose outputs times conditioning_scale are the residuals for the UNet. Training-only heads
// (to_rgbs, conv_degradation*) are loaded (accepted) and not computed.
#pragma once
#include "unet_trunk.h"

namespace xpsr {

struct RRDB {  // BasicSR residual-in-residual dense block (only with use_rrdb)
  Conv conv[3][5];
  void load(WeightLoader& ld, const std::string& prefix, int nf, int gc);
  Val operator()(Graph& g, Val x) const;
};

struct ControlNet {
  ControlNetConfig config;
  UNetTrunk trunk;
  // controlnet_cond_embedding
  Conv cond_in, cond_out;
  std::vector<Conv> cond_blocks;
  std::vector<RRDB> rrdb;
  std::vector<Linear> zero_convs;  // controlnet_down_blocks.k (1x1)
  Linear zero_mid;                 // controlnet_mid_block (1x1)

  void load(WeightLoader& ld, const ControlNetConfig& c);
  // image [N,3,8h,8w] in [0,1] -> [N,C0,h,w]
  Val cond_embedding(Graph& g, Val image) const;
  // sample [N,4,h,w], time features [N,T0], ctx [N,L,D] (ctx_low may be {}), cond [N,C0,h,w].
  // Returns the scaled residuals (down..., mid last).
  std::vector<Val> forward(Graph& g, Val sample, Val time_features, Val ctx_high, Val ctx_low, Val cond,
                           float conditioning_scale) const;
  int num_down_residuals() const { return (int)zero_convs.size(); }
};

}  // namespace xpsr
