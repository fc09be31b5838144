// VAE encoder/decoder forward.
#include "vae.h"

namespace xpsr {

static constexpr float kVaeEps = 1e-6f;

void VaeAttention::load(WeightLoader& ld, const std::string& p, int C, int groups_) {
  groups = groups_;
  group_norm.load(ld, p + ".group_norm", C);
  bool legacy = !ld.synthetic() && !ld.has(p + ".to_q.weight") && ld.has(p + ".query.weight");
  attn.load(ld, p, C, C, 1, true, /*qkv_bias=*/true, legacy);
}

Val VaeAttention::operator()(Graph& g, Val x) const {
  Dims d = g.dims(x);
  Val h = g.group_norm(x, group_norm.gamma.get(), group_norm.beta.get(), groups, kVaeEps, false);
  Val t = attn(g, tokens(g, h), Val{}, tokens(g, x));  // single head, d = C; + residual x
  return g.reshape(t, d);
}

static void load_mid(WeightLoader& ld, VaeMid& m, const std::string& p, int C, int G) {
  m.resnet0.load(ld, p + ".resnets.0", C, C, 0, G, kVaeEps);
  m.attention.load(ld, p + ".attentions.0", C, G);
  m.resnet1.load(ld, p + ".resnets.1", C, C, 0, G, kVaeEps);
}

static Val run_mid(Graph& g, const VaeMid& m, Val h) {
  h = m.resnet0(g, h, Val{});
  h = m.attention(g, h);
  return m.resnet1(g, h, Val{});
}

void Vae::load(WeightLoader& ld, const VaeConfig& c, bool encoder, bool decoder) {
  config = c;
  has_encoder = encoder, has_decoder = decoder;
  const auto& ch = c.block_out_channels;
  const int n = (int)ch.size(), G = c.norm_num_groups, lat = c.latent_channels;
  if (encoder) {
    enc_conv_in.load(ld, "encoder.conv_in", ch[0], c.in_channels, 3);
    int out = ch[0];
    enc_blocks.resize(n);
    for (int i = 0; i < n; ++i) {
      int in = out;
      out = ch[i];
      std::string p = "encoder.down_blocks." + std::to_string(i);
      for (int j = 0; j < c.layers_per_block; ++j) {
        enc_blocks[i].emplace_back();
        enc_blocks[i].back().load(ld, p + ".resnets." + std::to_string(j), j == 0 ? in : out, out, 0, G, kVaeEps);
      }
      if (i < n - 1) {
        enc_down.emplace_back();
        enc_down.back().load(ld, p + ".downsamplers.0.conv", out, out, 3, 2);
        enc_down.back().pad = Pad{0, 0, 1, 1};  // F.pad(x, (0, 1, 0, 1)), then padding 0
      }
    }
    load_mid(ld, enc_mid, "encoder.mid_block", ch.back(), G);
    enc_norm_out.load(ld, "encoder.conv_norm_out", ch.back());
    enc_conv_out.load(ld, "encoder.conv_out", 2 * lat, ch.back(), 3);
    quant_conv.load(ld, "quant_conv", 2 * lat, 2 * lat);
  } else {
    ld.ignore_prefix("encoder.");
    ld.ignore_prefix("quant_conv.");
  }
  if (decoder) {
    post_quant_conv.load(ld, "post_quant_conv", lat, lat);
    dec_conv_in.load(ld, "decoder.conv_in", ch.back(), lat, 3);
    load_mid(ld, dec_mid, "decoder.mid_block", ch.back(), G);
    std::vector<int> rch(ch.rbegin(), ch.rend());
    int out = rch[0];
    dec_blocks.resize(n);
    for (int i = 0; i < n; ++i) {
      int prev = out;
      out = rch[i];
      std::string p = "decoder.up_blocks." + std::to_string(i);
      for (int j = 0; j < c.layers_per_block + 1; ++j) {
        dec_blocks[i].emplace_back();
        dec_blocks[i].back().load(ld, p + ".resnets." + std::to_string(j), j == 0 ? prev : out, out, 0, G, kVaeEps);
      }
      if (i < n - 1) {
        dec_up.emplace_back();
        dec_up.back().load(ld, p + ".upsamplers.0.conv", out, out, 3);
      }
    }
    dec_norm_out.load(ld, "decoder.conv_norm_out", ch[0]);
    dec_conv_out.load(ld, "decoder.conv_out", c.out_channels, ch[0], 3);
  } else {
    ld.ignore_prefix("decoder.");
    ld.ignore_prefix("post_quant_conv.");
  }
}

Val Vae::encode(Graph& g, Val x) const {
  if (!has_encoder) fail(ErrorCode::InvalidArgument, "this VAE was loaded without its encoder");
  const int G = config.norm_num_groups;
  Val h = enc_conv_in(g, x);
  for (size_t i = 0; i < enc_blocks.size(); ++i) {
    for (auto& r : enc_blocks[i]) h = r(g, h, Val{});
    if (i < enc_down.size()) h = enc_down[i](g, h);
    g.tap("inter.encoder.down_blocks." + std::to_string(i), h);
  }
  h = run_mid(g, enc_mid, h);
  g.tap("inter.encoder.mid_block", h);
  h = g.group_norm(h, enc_norm_out.gamma.get(), enc_norm_out.beta.get(), G, kVaeEps, true);
  h = enc_conv_out(g, h);
  g.tap("inter.encoder.conv_out", h);
  h = quant_conv(g, h);
  g.tap("inter.quant_conv", h);
  return h;
}

Val Vae::decode(Graph& g, Val z) const {
  if (!has_decoder) fail(ErrorCode::InvalidArgument, "this VAE was loaded without its decoder");
  const int G = config.norm_num_groups;
  Val h = post_quant_conv(g, z);
  g.tap("inter.post_quant_conv", h);
  h = dec_conv_in(g, h);
  g.tap("inter.decoder.conv_in", h);
  h = run_mid(g, dec_mid, h);
  g.tap("inter.decoder.mid_block", h);
  for (size_t i = 0; i < dec_blocks.size(); ++i) {
    for (auto& r : dec_blocks[i]) h = r(g, h, Val{});
    if (i < dec_up.size()) {
      const Dims& d = g.dims(h);
      h = dec_up[i](g, g.upsample(h, 2 * d.h, 2 * d.w));
    }
    g.tap("inter.decoder.up_blocks." + std::to_string(i), h);
  }
  h = g.group_norm(h, dec_norm_out.gamma.get(), dec_norm_out.beta.get(), G, kVaeEps, true);
  return dec_conv_out(g, h);
}

}  // namespace xpsr
