// The down half shared by the XPSR UNet and the XPSR ControlNet (xpsr-architecture.md §4.1, §5.1):
// conv_in, time embedding, down blocks (resnets + text cross-attention or SFA, downsamplers) and the
// mid block. Built once from a UNetConfig; the ControlNet reuses it with SFA switched on.
#pragma once
#include <string>
#include <vector>

#include "../config.h"
#include "blocks.h"

namespace xpsr {

struct DownBlock {
  std::vector<ResnetBlock> resnets;
  std::vector<SFA> attentions;  // empty for DownBlock2D
  bool has_downsample = false;
  Conv downsample;  // 3x3 stride 2 pad 1
};

struct MidBlock {
  ResnetBlock resnet0, resnet1;
  SFA attention;
};

struct UNetTrunk {
  UNetConfig config;
  Conv conv_in;
  TimeEmbedding time_embedding;
  std::vector<DownBlock> downs;
  MidBlock mid;

  void load(WeightLoader& ld, const UNetConfig& c, bool lowlevel_down, bool lowlevel_mid);

  // temb: sinusoid features [N, T0] -> SiLU(TimeEmbedding(features)) [N, T] (every resnet uses SiLU(temb)).
  Val time_act(Graph& g, Val features) const;
  // Runs the down blocks from h = conv_in(x) (+ anything the caller added), appending every skip feature
  // (the input itself first) to `feats`; returns the hidden state after the last down block.
  Val down(Graph& g, Val h, Val temb_act, Val ctx_high, Val ctx_low, std::vector<Val>& feats) const;
  Val middle(Graph& g, Val h, Val temb_act, Val ctx_high, Val ctx_low) const;
};

}  // namespace xpsr
