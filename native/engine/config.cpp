// config.json parsing and validation for the four networks.
#include "config.h"

namespace xpsr {

namespace {

struct Reader {
  const Json& j;
  const std::string& where;
  const Json* get(const char* k) const {
    const Json* v = j.find(k);
    return (v && !v->is_null()) ? v : nullptr;
  }
  int i(const char* k, int def) const {
    const Json* v = get(k);
    if (!v) return def;
    if (!v->is_number()) fail(ErrorCode::InvalidArgument, where, ": '", k, "' must be a number");
    return (int)v->as_int();
  }
  float f(const char* k, float def) const {
    const Json* v = get(k);
    return v ? (float)v->as_number() : def;
  }
  bool b(const char* k, bool def) const {
    const Json* v = get(k);
    if (!v) return def;
    if (!v->is_bool()) fail(ErrorCode::InvalidArgument, where, ": '", k, "' must be true or false");
    return v->as_bool();
  }
  std::string s(const char* k, const std::string& def) const {
    const Json* v = get(k);
    return v ? v->as_string() : def;
  }
  std::vector<int> ints(const char* k, std::vector<int> def) const {
    const Json* v = get(k);
    if (!v) return def;
    if (!v->is_array()) fail(ErrorCode::InvalidArgument, where, ": '", k, "' must be a list");
    std::vector<int> r;
    for (auto& e : v->as_array()) r.push_back((int)e.as_int());
    return r;
  }
  std::vector<std::string> strs(const char* k, std::vector<std::string> def) const {
    const Json* v = get(k);
    if (!v) return def;
    std::vector<std::string> r;
    for (auto& e : v->as_array()) r.push_back(e.as_string());
    return r;
  }
  // Keys whose non-default values this engine does not implement.
  void require(const char* k, const std::string& expect) const {
    const Json* v = get(k);
    if (!v) return;
    std::string got = v->is_string() ? v->as_string() : v->is_bool() ? (v->as_bool() ? "true" : "false") : "?";
    if (got != expect) fail(ErrorCode::Unsupported, where, ": '", k, "' = ", got, " is not supported (only ", expect, ")");
  }
  void require_num(const char* k, double expect) const {
    const Json* v = get(k);
    if (v && (!v->is_number() || v->as_number() != expect))
      fail(ErrorCode::Unsupported, where, ": '", k, "' must be ", expect, " for this engine");
  }
  void require_null(const char* k) const {
    if (get(k)) fail(ErrorCode::Unsupported, where, ": '", k, "' is set; this engine supports only null");
  }
};

void parse_trunk(const Reader& r, UNetConfig& c, bool is_controlnet) {
  c.in_channels = r.i("in_channels", 4);
  c.out_channels = r.i("out_channels", 4);
  c.block_out_channels = r.ints("block_out_channels", {320, 640, 1280, 1280});
  c.down_block_types = r.strs("down_block_types", {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                                   "CrossAttnDownBlock2D", "DownBlock2D"});
  c.layers_per_block = r.i("layers_per_block", 2);
  c.cross_attention_dim = r.i("cross_attention_dim", 768);
  c.norm_num_groups = r.i("norm_num_groups", 32);
  c.norm_eps = r.f("norm_eps", 1e-5f);
  c.flip_sin_to_cos = r.b("flip_sin_to_cos", true);
  c.freq_shift = r.f("freq_shift", 0);
  size_t nb = c.block_out_channels.size();
  if (nb == 0 || c.down_block_types.size() != nb)
    fail(ErrorCode::InvalidArgument, r.where, ": block_out_channels and down_block_types must have the same length");
  for (int ch : c.block_out_channels)
    if (ch <= 0 || ch % c.norm_num_groups)
      fail(ErrorCode::InvalidArgument, r.where, ": block_out_channels ", ch, " is not a multiple of norm_num_groups ",
           c.norm_num_groups);
  // Number of heads: num_attention_heads, else (diffusers' historical naming) attention_head_dim.
  const Json* heads = r.get("num_attention_heads");
  if (!heads) heads = r.get("attention_head_dim");
  if (!heads) c.heads.assign(nb, 8);
  else if (heads->is_number()) c.heads.assign(nb, (int)heads->as_int());
  else {
    for (auto& e : heads->as_array()) c.heads.push_back((int)e.as_int());
    if (c.heads.size() != nb) fail(ErrorCode::InvalidArgument, r.where, ": one head count per block expected");
  }
  for (size_t i = 0; i < nb; ++i)
    if (c.heads[i] <= 0 || c.block_out_channels[i] % c.heads[i])
      fail(ErrorCode::InvalidArgument, r.where, ": ", c.block_out_channels[i], " channels are not divisible into ",
           c.heads[i], " heads");
  const Json* tl = r.get("transformer_layers_per_block");
  if (tl) {
    if (tl->is_number()) c.transformer_layers = (int)tl->as_int();
    else fail(ErrorCode::Unsupported, r.where, ": per-block transformer_layers_per_block lists are not supported");
  }
  for (auto& t : c.down_block_types)
    if (t != "CrossAttnDownBlock2D" && t != "DownBlock2D")
      fail(ErrorCode::Unsupported, r.where, ": down block type '", t, "' is not supported");
  r.require("act_fn", "silu");
  r.require("resnet_time_scale_shift", "default");
  r.require_num("downsample_padding", 1);
  r.require("only_cross_attention", "false");
  r.require("upcast_attention", "false");
  r.require_null("class_embed_type");
  r.require_null("addition_embed_type");
  r.require_null("encoder_hid_dim");
  r.require_null("num_class_embeds");
  r.require_null("time_cond_proj_dim");
  if (!is_controlnet) {
    r.require("center_input_sample", "false");
    r.require("dual_cross_attention", "false");
    r.require_num("conv_in_kernel", 3);
    r.require_num("conv_out_kernel", 3);
    r.require("time_embedding_type", "positional");
    r.require_null("time_embedding_dim");
    r.require_null("timestep_post_act");
    r.require("mid_block_type", "UNetMidBlock2DCrossAttn");
  }
}

}  // namespace

UNetConfig parse_unet_config(const Json& j, const std::string& where) {
  Reader r{j, where};
  UNetConfig c;
  parse_trunk(r, c, false);
  c.up_block_types = r.strs("up_block_types", {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                               "CrossAttnUpBlock2D"});
  if (c.up_block_types.size() != c.block_out_channels.size())
    fail(ErrorCode::InvalidArgument, where, ": up_block_types must have one entry per block");
  for (auto& t : c.up_block_types)
    if (t != "CrossAttnUpBlock2D" && t != "UpBlock2D")
      fail(ErrorCode::Unsupported, where, ": up block type '", t, "' is not supported");
  c.down_use_lowlevel = r.b("down_use_lowlevel_prompt", false);
  c.mid_use_lowlevel = r.b("mid_use_lowlevel_prompt", false);
  const Json* up = r.get("up_use_lowlevel_prompt");
  if (up && up->is_array())
    for (auto& e : up->as_array()) c.up_use_lowlevel.push_back(e.as_bool());
  else if (up && up->is_bool())
    c.up_use_lowlevel.assign(c.block_out_channels.size(), up->as_bool());
  c.up_use_lowlevel.resize(c.block_out_channels.size(), false);
  size_t nb = c.block_out_channels.size();
  if (nb >= 2 && c.block_out_channels[nb - 1] != c.block_out_channels[nb - 2])
    fail(ErrorCode::Unsupported, where, ": XPSR needs the last two block_out_channels equal (the UpBlock2D pixel ",
         "attention takes the block's width as context), got ", shape_str(c.block_out_channels));
  return c;
}

ControlNetConfig parse_controlnet_config(const Json& j, const std::string& where) {
  Reader r{j, where};
  ControlNetConfig c;
  parse_trunk(r, c.trunk, true);
  c.conditioning_channels = r.i("conditioning_channels", 3);
  c.cond_embedding_channels = r.ints("conditioning_embedding_out_channels", {16, 32, 96, 256});
  if (c.cond_embedding_channels.size() < 2)
    fail(ErrorCode::InvalidArgument, where, ": conditioning_embedding_out_channels needs at least 2 entries");
  c.use_lowlevel_prompt = r.b("use_lowlevel_prompt", true);
  c.use_rrdb = r.b("use_rrdb", false);
  c.return_rgbs = r.b("return_rgbs", true);
  c.use_latent_pred = r.b("use_latent_pred", true);
  r.require("controlnet_conditioning_channel_order", "rgb");
  r.require("global_pool_conditions", "false");
  return c;
}

VAEConfig parse_vae_config(const Json& j, const std::string& where) {
  Reader r{j, where};
  VAEConfig c;
  c.in_channels = r.i("in_channels", 3);
  c.out_channels = r.i("out_channels", 3);
  c.latent_channels = r.i("latent_channels", 4);
  c.block_out_channels = r.ints("block_out_channels", {128, 256, 512, 512});
  c.layers_per_block = r.i("layers_per_block", 2);
  c.norm_num_groups = r.i("norm_num_groups", 32);
  c.scaling_factor = r.f("scaling_factor", 0.18215f);
  r.require("act_fn", "silu");
  for (auto& t : r.strs("down_block_types", {}))
    if (t != "DownEncoderBlock2D") fail(ErrorCode::Unsupported, where, ": VAE down block '", t, "' is not supported");
  for (auto& t : r.strs("up_block_types", {}))
    if (t != "UpDecoderBlock2D") fail(ErrorCode::Unsupported, where, ": VAE up block '", t, "' is not supported");
  if (c.block_out_channels.empty()) fail(ErrorCode::InvalidArgument, where, ": empty block_out_channels");
  for (int ch : c.block_out_channels)
    if (ch % c.norm_num_groups) fail(ErrorCode::InvalidArgument, where, ": channels ", ch, " not divisible by groups");
  return c;
}

ClipTextConfig parse_clip_text_config(const Json& j, const std::string& where) {
  Reader r{j, where};
  ClipTextConfig c;
  c.vocab_size = r.i("vocab_size", 49408);
  c.hidden_size = r.i("hidden_size", 768);
  c.intermediate_size = r.i("intermediate_size", 3072);
  c.num_layers = r.i("num_hidden_layers", 12);
  c.num_heads = r.i("num_attention_heads", 12);
  c.max_position_embeddings = r.i("max_position_embeddings", 77);
  c.layer_norm_eps = r.f("layer_norm_eps", 1e-5f);
  std::string act = r.s("hidden_act", "quick_gelu");
  if (act == "quick_gelu") c.quick_gelu = true;
  else if (act == "gelu") c.quick_gelu = false;
  else fail(ErrorCode::Unsupported, where, ": hidden_act '", act, "' is not supported (quick_gelu, gelu)");
  if (c.hidden_size % c.num_heads) fail(ErrorCode::InvalidArgument, where, ": hidden_size not divisible by heads");
  return c;
}

}  // namespace xpsr
