// UNetTrunk: the encoder half built once from a UNetConfig (UNet and ControlNet).
#include "unet_trunk.h"

namespace xpsr {

void UNetTrunk::load(WeightLoader& ld, const UNetConfig& c, bool lowlevel_down, bool lowlevel_mid) {
  config = c;
  const auto& ch = c.block_out_channels;
  const int T = c.time_embed_dim(), G = c.norm_num_groups, n = (int)ch.size();
  conv_in.load(ld, "conv_in", ch[0], c.in_channels, 3);
  time_embedding.load(ld, "time_embedding", ch[0], T);
  downs.resize(n);
  int out_ch = ch[0];
  for (int i = 0; i < n; ++i) {
    int in_ch = out_ch;
    out_ch = ch[i];
    DownBlock& d = downs[i];
    std::string p = "down_blocks." + std::to_string(i) + ".";
    bool cross = c.down_block_types[i] == "CrossAttnDownBlock2D";
    for (int j = 0; j < c.layers_per_block; ++j) {
      d.resnets.emplace_back();
      d.resnets.back().load(ld, p + "resnets." + std::to_string(j), j == 0 ? in_ch : out_ch, out_ch, T, G, c.norm_eps);
      if (cross) {
        d.attentions.emplace_back();
        d.attentions.back().load(ld, p, j, out_ch, c.cross_attention_dim, c.heads[i], c.transformer_layers, G,
                                 lowlevel_down);
      }
    }
    d.has_downsample = i < n - 1;
    if (d.has_downsample) d.downsample.load(ld, p + "downsamplers.0.conv", out_ch, out_ch, 3, 2);
  }
  const int C = ch.back();
  mid.resnet0.load(ld, "mid_block.resnets.0", C, C, T, G, c.norm_eps);
  mid.attention.load(ld, "mid_block.", 0, C, c.cross_attention_dim, c.heads.back(), c.transformer_layers, G,
                     lowlevel_mid);
  mid.resnet1.load(ld, "mid_block.resnets.1", C, C, T, G, c.norm_eps);
}

Val UNetTrunk::time_act(Graph& g, Val features) const {
  Val temb = time_embedding(g, features);  // [N, T]
  g.tap("inter.time_embedding", temb);
  return g.silu(temb);
}

Val UNetTrunk::down(Graph& g, Val h, Val temb_act, Val ctx_high, Val ctx_low, std::vector<Val>& feats) const {
  feats.push_back(h);
  for (size_t i = 0; i < downs.size(); ++i) {
    const DownBlock& d = downs[i];
    std::string p = "inter.down_blocks." + std::to_string(i) + ".";
    size_t first = feats.size();
    for (size_t j = 0; j < d.resnets.size(); ++j) {
      h = d.resnets[j](g, h, temb_act);
      g.tap(p + "resnets." + std::to_string(j), h);
      if (!d.attentions.empty()) h = d.attentions[j](g, h, ctx_high, ctx_low, p, (int)j);
      feats.push_back(h);
    }
    if (d.has_downsample) {
      h = d.downsample(g, h);  // [N,C,ceil(H/2),ceil(W/2)]
      g.tap(p + "downsamplers.0", h);
      feats.push_back(h);
    }
    g.tap(p + "0", h);
    for (size_t k = first; k < feats.size(); ++k) g.tap(p + "1." + std::to_string(k - first), feats[k]);
  }
  return h;
}

Val UNetTrunk::middle(Graph& g, Val h, Val temb_act, Val ctx_high, Val ctx_low) const {
  h = mid.resnet0(g, h, temb_act);
  g.tap("inter.mid_block.resnets.0", h);
  h = mid.attention(g, h, ctx_high, ctx_low, "inter.mid_block.", 0);
  h = mid.resnet1(g, h, temb_act);
  g.tap("inter.mid_block.resnets.1", h);
  g.tap("inter.mid_block", h);
  return h;
}

}  // namespace xpsr
