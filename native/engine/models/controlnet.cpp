// XPSR ControlNet forward.
#include "controlnet.h"

namespace xpsr {

void RRDB::load(WeightLoader& ld, const std::string& p, int nf, int gc) {
  for (int r = 0; r < 3; ++r)
    for (int k = 0; k < 5; ++k) {
      int out = k == 4 ? nf : gc;
      conv[r][k].load(ld, p + ".rdb" + std::to_string(r + 1) + ".conv" + std::to_string(k + 1), out, nf + k * gc, 3);
    }
}

Val RRDB::operator()(Graph& g, Val x) const {
  Val h = x;
  for (int r = 0; r < 3; ++r) {  // ResidualDenseBlock: dense concat, LeakyReLU(0.2) after conv1-4
    Val cat = h;
    for (int k = 0; k < 4; ++k) {
      Val y = g.unary(conv[r][k](g, cat), UnaryOp::LeakyRelu);
      cat = g.concat(cat, y);
    }
    h = g.axpby(conv[r][4](g, cat), h, 0.2f, 1.f);  // 0.2 * conv5 + x
  }
  return g.axpby(h, x, 0.2f, 1.f);  // 0.2 * rdb3(rdb2(rdb1(x))) + x
}

void ControlNet::load(WeightLoader& ld, const ControlNetConfig& c) {
  config = c;
  trunk.load(ld, c.trunk, c.use_lowlevel_prompt, c.use_lowlevel_prompt);
  const auto& e = c.cond_embedding_channels;
  cond_in.load(ld, "controlnet_cond_embedding.conv_in", e[0], c.conditioning_channels, 3);
  if (c.use_rrdb) {
    rrdb.resize(2);
    for (int i = 0; i < 2; ++i)
      rrdb[i].load(ld, "controlnet_cond_embedding.preprocesser." + std::to_string(i), e[0], e[0]);
  }
  for (size_t k = 0; k + 1 < e.size(); ++k) {
    cond_blocks.emplace_back();
    cond_blocks.back().load(ld, "controlnet_cond_embedding.blocks." + std::to_string(2 * k), e[k], e[k], 3);
    cond_blocks.emplace_back();
    cond_blocks.back().load(ld, "controlnet_cond_embedding.blocks." + std::to_string(2 * k + 1), e[k + 1], e[k], 3, 2);
  }
  const auto& ch = c.trunk.block_out_channels;
  cond_out.load(ld, "controlnet_cond_embedding.conv_out", ch[0], e.back(), 3);
  // Zero convs: one per skip feature (conv_in, each resnet layer, each downsampler).
  const std::vector<int> widths = skip_channels(c.trunk);
  for (size_t k = 0; k < widths.size(); ++k) {
    zero_convs.emplace_back();
    zero_convs.back().load(ld, "controlnet_down_blocks." + std::to_string(k), widths[k], widths[k]);
  }
  zero_mid.load(ld, "controlnet_mid_block", ch.back(), ch.back());
  // Training-only DFC heads: present in the checkpoint, not computed at inference (§5bis).
  ld.ignore_prefix("controlnet_cond_embedding.to_rgbs.");
  ld.ignore_prefix("conv_degradation.");
  ld.ignore_prefix("conv_degradation_mid.");
}

Val ControlNet::cond_embedding(Graph& g, Val image) const {
  Val e = g.silu(cond_in(g, image));
  for (auto& r : rrdb) e = r(g, e);
  for (auto& b : cond_blocks) e = g.silu(b(g, e));  // pairs: 3x3 then 3x3 stride 2
  e = cond_out(g, e);
  g.tap("inter.controlnet_cond_embedding.0", e);
  return e;
}

std::vector<Val> ControlNet::forward(Graph& g, Val sample, Val tfeat, Val ctx_high, Val ctx_low, Val cond,
                                     float scale) const {
  Val temb_act = trunk.time_act(g, tfeat);
  Val h0 = trunk.conv_in(g, sample);
  g.tap("inter.conv_in", h0);
  Val h = g.add(h0, cond);  // conv_in(x) + CondEmbed(img)
  std::vector<Val> feats;
  h = trunk.down(g, h, temb_act, ctx_high, ctx_low, feats);
  h = trunk.middle(g, h, temb_act, ctx_high, ctx_low);
  if (feats.size() != zero_convs.size()) fail(ErrorCode::Internal, "controlnet: feature count mismatch");
  std::vector<Val> res;
  for (size_t k = 0; k < feats.size(); ++k) {
    Val z = zero_convs[k](g, feats[k]);
    g.tap("inter.controlnet_down_blocks." + std::to_string(k), z);
    res.push_back(scale == 1.f ? z : g.scale(z, scale));
  }
  Val zm = zero_mid(g, h);
  g.tap("inter.controlnet_mid_block", zm);
  res.push_back(scale == 1.f ? zm : g.scale(zm, scale));
  return res;
}

}  // namespace xpsr
