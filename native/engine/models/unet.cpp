// XPSR UNet forward.
#include "unet.h"

namespace xpsr {

std::vector<int> UNet::residual_channels() const {
  std::vector<int> w = skip_channels(config);
  w.push_back(config.block_out_channels.back());
  return w;
}

void UNet::load(WeightLoader& ld, const UNetConfig& c) {
  config = c;
  trunk.load(ld, c, c.down_use_lowlevel, c.mid_use_lowlevel);
  const int n = (int)c.block_out_channels.size(), T = c.time_embed_dim(), G = c.norm_num_groups;
  std::vector<int> rch(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  std::vector<int> rheads(c.heads.rbegin(), c.heads.rend());
  ups.resize(n);
  int out_ch = rch[0];
  for (int u = 0; u < n; ++u) {
    int prev_out = out_ch;
    out_ch = rch[u];
    int in_ch = rch[std::min(u + 1, n - 1)];
    UpBlock& b = ups[u];
    std::string p = "up_blocks." + std::to_string(u) + ".";
    bool cross = c.up_block_types[u] == "CrossAttnUpBlock2D";
    int L = c.layers_per_block + 1;
    for (int j = 0; j < L; ++j) {
      int skip_ch = j == L - 1 ? in_ch : out_ch;
      int res_in = j == 0 ? prev_out : out_ch;
      b.resnets.emplace_back();
      b.resnets.back().load(ld, p + "resnets." + std::to_string(j), res_in + skip_ch, out_ch, T, G, c.norm_eps);
      if (cross) {
        b.attentions.emplace_back();
        b.attentions.back().load(ld, p, j, out_ch, c.cross_attention_dim, rheads[u], c.transformer_layers, G,
                                 c.up_use_lowlevel[u]);
      }
      // Pixel attention context width: the skip's channels in CrossAttnUpBlock2D, the block's own width in
      // UpBlock2D (equal for valid configs, §5.2).
      int D = cross ? skip_ch : out_ch;
      b.pixel_attn.emplace_back();
      b.pixel_attn.back().load(ld, p + "pixel_attentions." + std::to_string(j), out_ch, D, rheads[u],
                               c.transformer_layers, G);
    }
    b.has_upsample = u < n - 1;
    if (b.has_upsample) b.upsample.load(ld, p + "upsamplers.0.conv", out_ch, out_ch, 3);
  }
  conv_norm_out.load(ld, "conv_norm_out", c.block_out_channels[0]);
  conv_out.load(ld, "conv_out", c.out_channels, c.block_out_channels[0], 3);
}

Val UNet::forward(Graph& g, Val sample, Val tfeat, Val ctx_high, Val ctx_low, const std::vector<Val>& residuals) const {
  auto want = residual_channels();
  if (residuals.size() != want.size())
    fail(ErrorCode::ShapeMismatch, "UNet: expected ", want.size(), " ControlNet residuals, got ", residuals.size());
  Val temb_act = trunk.time_act(g, tfeat);
  Val h = trunk.conv_in(g, sample);
  g.tap("inter.conv_in", h);
  std::vector<Val> skips;
  // The UNet's own down blocks never see the low-level context unless its config turns SFA on.
  h = trunk.down(g, h, temb_act, ctx_high, ctx_low, skips);
  std::vector<Val> res(residuals.begin(), residuals.end() - 1);
  for (size_t k = 0; k < skips.size(); ++k) {
    const Dims &sd = g.dims(skips[k]), &rd = g.dims(res[k]);
    if (!(sd == rd))
      fail(ErrorCode::ShapeMismatch, "UNet: ControlNet residual ", k, " is ", rd.str(), " but the skip is ", sd.str());
    skips[k] = g.add(skips[k], res[k]);  // injection #1
  }
  h = trunk.middle(g, h, temb_act, ctx_high, ctx_low);
  h = g.add(h, residuals.back());  // injection #2
  for (size_t u = 0; u < ups.size(); ++u) {
    const UpBlock& b = ups[u];
    std::string p = "inter.up_blocks." + std::to_string(u) + ".";
    for (size_t j = 0; j < b.resnets.size(); ++j) {
      Val sk = skips.back(), r = res.back();
      skips.pop_back(), res.pop_back();
      h = g.concat(h, sk);  // [h, skip] on channels
      h = b.resnets[j](g, h, temb_act);
      g.tap(p + "resnets." + std::to_string(j), h);
      if (!b.attentions.empty()) h = b.attentions[j](g, h, ctx_high, ctx_low, p, (int)j);
      h = b.pixel_attn[j](g, h, tokens(g, r));  // injection #3: K/V = the raw scaled residual
      g.tap(p + "pixel_attentions." + std::to_string(j), h);
    }
    if (b.has_upsample) {
      // Upsample to the next skip's size (= 2x unless a side is odd somewhere down the chain).
      const Dims& nd = g.dims(skips.back());
      h = b.upsample(g, g.upsample(h, nd.h, nd.w));
      g.tap(p + "upsamplers.0", h);
    }
    g.tap("inter.up_blocks." + std::to_string(u), h);
  }
  Val o;
  if (g.keeps_taps()) {
    o = g.group_norm(h, conv_norm_out.gamma.get(), conv_norm_out.beta.get(), config.norm_num_groups, config.norm_eps,
                     false);
    g.tap("inter.conv_norm_out", o);
    o = g.silu(o);
  } else {
    o = g.group_norm(h, conv_norm_out.gamma.get(), conv_norm_out.beta.get(), config.norm_num_groups, config.norm_eps,
                     true);
  }
  o = conv_out(g, o);
  g.tap("inter.conv_out", o);
  return o;
}

}  // namespace xpsr
