// XPSR UNet (xpsr-architecture.md §5): the trunk, ControlNet residuals added to the skips and after the
// mid block, up blocks whose every resnet is followed by (text attention or SFA, then) the pixel
// ("conditional") attention whose keys/values are the raw scaled ControlNet residual of that layer,
// upsamplers resizing to the next skip's size (odd latents), and the output head.
#pragma once
#include "unet_trunk.h"

namespace xpsr {

struct UpBlock {
  std::vector<ResnetBlock> resnets;
  std::vector<SFA> attentions;            // empty for UpBlock2D
  std::vector<Transformer2D> pixel_attn;  // one per resnet
  bool has_upsample = false;
  Conv upsample;
};

struct UNet {
  UNetConfig config;
  UNetTrunk trunk;
  std::vector<UpBlock> ups;
  Norm conv_norm_out;
  Conv conv_out;

  void load(WeightLoader& ld, const UNetConfig& c);
  // residuals: the ControlNet's outputs (down..., mid last), already scaled. Returns eps [N,4,h,w].
  Val forward(Graph& g, Val sample, Val time_features, Val ctx_high, Val ctx_low,
              const std::vector<Val>& residuals) const;
  // Channel count of each ControlNet residual the UNet adds (down skips..., mid).
  std::vector<int> residual_channels() const;
};

}  // namespace xpsr
