// config.json parsing and validation for the four networks (config.h).
#include "config.h"

#include <cmath>
#include <cstdio>

namespace xpsr {

using L = ConfigLimits;

std::vector<int> skip_channels(const UNetConfig& c) {
  const auto& ch = c.block_out_channels;
  std::vector<int> w{ch[0]};
  for (size_t i = 0; i < ch.size(); ++i) {
    for (int j = 0; j < c.layers_per_block; ++j) w.push_back(ch[i]);
    if (i + 1 < ch.size()) w.push_back(ch[i]);
  }
  return w;
}

namespace {

// A JSON value in a message: numbers as written, other types by name.
std::string describe(const Json& v) {
  switch (v.type()) {
    case Json::Type::Null: return "null";
    case Json::Type::Bool: return v.as_bool() ? "true" : "false";
    case Json::Type::Number: {
      char buf[40];
      std::snprintf(buf, sizeof buf, "%.17g", v.as_number());
      return buf;
    }
    case Json::Type::String: return "the string \"" + v.as_string().substr(0, 40) + "\"";
    case Json::Type::Array: return "a list";
    case Json::Type::Object: return "an object";
  }
  return "?";
}

// Typed, range-checked access to one config object. Absent (or null) keys take the default.
struct Reader {
  const Json& j;
  const std::string& where;

  Reader(const Json& j_, const std::string& where_) : j(j_), where(where_) {
    if (!j.is_object()) fail(ErrorCode::WeightsInvalid, where, ": the config must be a JSON object, got ", describe(j));
  }

  [[noreturn]] void bad(const std::string& key, const std::string& what) const {
    fail(ErrorCode::WeightsInvalid, where, ": '", key, "' ", what);
  }
  const Json* get(const char* k) const {
    const Json* v = j.find(k);
    return (v && !v->is_null()) ? v : nullptr;
  }

  int to_int(const std::string& key, const Json& v, int lo, int hi) const {
    const std::string range = "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
    if (!v.is_number()) bad(key, "must be " + range + ", got " + describe(v));
    double d = v.as_number();
    if (!(d >= lo && d <= hi) || d != std::floor(d)) bad(key, "must be " + range + ", got " + describe(v));
    return (int)d;
  }
  int integer(const char* k, int def, int lo, int hi) const {
    const Json* v = get(k);
    return v ? to_int(k, *v, lo, hi) : def;
  }
  std::vector<int> integers(const char* k, std::vector<int> def, size_t min_n, size_t max_n, int lo, int hi) const {
    const Json* v = get(k);
    if (!v) return def;
    if (!v->is_array()) bad(k, "must be a list of integers, got " + describe(*v));
    const auto& a = v->as_array();
    if (a.size() < min_n || a.size() > max_n)
      bad(k, "must have " + std::to_string(min_n) + " to " + std::to_string(max_n) + " entries, got " +
                 std::to_string(a.size()));
    std::vector<int> r;
    for (size_t i = 0; i < a.size(); ++i)
      r.push_back(to_int(std::string(k) + "[" + std::to_string(i) + "]", a[i], lo, hi));
    return r;
  }
  // A finite number in [lo, hi] (or (lo, hi] when lo_open).
  float real(const char* k, float def, double lo, double hi, bool lo_open = false) const {
    const Json* v = get(k);
    if (!v) return def;
    if (!v->is_number()) bad(k, "must be a number, got " + describe(*v));
    double d = v->as_number();
    if (!(lo_open ? d > lo : d >= lo) || !(d <= hi))
      bad(k, std::string("must be in ") + (lo_open ? "(" : "[") + describe_num(lo) + ", " + describe_num(hi) +
                 "], got " + describe(*v));
    return (float)d;
  }
  static std::string describe_num(double d) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%g", d);
    return buf;
  }
  bool boolean(const char* k, bool def) const {
    const Json* v = get(k);
    if (!v) return def;
    if (!v->is_bool()) bad(k, "must be true or false, got " + describe(*v));
    return v->as_bool();
  }
  std::string str(const char* k, const std::string& def) const {
    const Json* v = get(k);
    if (!v) return def;
    if (!v->is_string()) bad(k, "must be a string, got " + describe(*v));
    return v->as_string();
  }
  std::vector<std::string> strs(const char* k, std::vector<std::string> def) const {
    const Json* v = get(k);
    if (!v) return def;
    if (!v->is_array()) bad(k, "must be a list of strings, got " + describe(*v));
    std::vector<std::string> r;
    for (auto& e : v->as_array()) {
      if (!e.is_string()) bad(k, "must be a list of strings, got an entry " + describe(e));
      r.push_back(e.as_string());
    }
    return r;
  }
  // Keys whose non-default values this engine does not implement.
  void require(const char* k, const std::string& expect) const {
    const Json* v = get(k);
    if (!v) return;
    if (!v->is_string() && !v->is_bool()) bad(k, "must be a string or a bool, got " + describe(*v));
    std::string got = v->is_string() ? v->as_string() : (v->as_bool() ? "true" : "false");
    if (got != expect)
      fail(ErrorCode::Unsupported, where, ": '", k, "' = ", got, " is not supported (only ", expect, ")");
  }
  void require_num(const char* k, double expect) const {
    const Json* v = get(k);
    if (!v) return;
    if (!v->is_number()) bad(k, "must be a number, got " + describe(*v));
    if (v->as_number() != expect)
      fail(ErrorCode::Unsupported, where, ": '", k, "' = ", describe(*v), " is not supported (only ", expect, ")");
  }
  void require_null(const char* k) const {
    if (get(k)) fail(ErrorCode::Unsupported, where, ": '", k, "' is set; this engine supports only null");
  }
  void multiple_of(const std::string& key, int value, int divisor, const std::string& divisor_key) const {
    if (value % divisor)
      bad(key, "= " + std::to_string(value) + " is not divisible by " + divisor_key + " = " + std::to_string(divisor));
  }
  void within_budget(double params) const {
    if (params > L::kMaxParameters) {
      char buf[160];
      std::snprintf(buf, sizeof buf, ": the sizes describe about %.3g parameters, more than the %.3g accepted", params,
                    L::kMaxParameters);
      fail(ErrorCode::WeightsInvalid, where, buf,
           " (check block_out_channels, layers_per_block, hidden_size, vocab_size and the layer counts)");
    }
  }
};

// ---- parameter estimates (upper bounds of the dominant terms, for the kMaxParameters check) -------------

double transformer_params(double C, double D, int layers) { return layers * (18 * C * C + 2 * C * D) + 2 * C * C; }
double resnet_params(double Cin, double C, double T) { return 9 * Cin * C + 9 * C * C + Cin * C + C * T; }

double trunk_params(const UNetConfig& c, bool sfa) {
  const double T = c.time_embed_dim(), D = c.cross_attention_dim;
  const int L = c.layers_per_block, tl = c.transformer_layers, branches = sfa ? 3 : 1;
  double p = T * T + T * c.block_out_channels[0] + 9.0 * c.in_channels * c.block_out_channels[0];
  for (size_t i = 0; i < c.block_out_channels.size(); ++i) {
    double C = c.block_out_channels[i];
    p += L * resnet_params(C, C, T) + 9 * C * C;
    if (c.down_block_types[i] == "CrossAttnDownBlock2D") p += L * branches * transformer_params(C, D, tl);
  }
  double C = c.block_out_channels.back();
  return p + 2 * resnet_params(C, C, T) + 3 * transformer_params(C, D, tl);
}

double unet_params(const UNetConfig& c) {
  const double T = c.time_embed_dim(), D = c.cross_attention_dim;
  const int L = c.layers_per_block + 1, tl = c.transformer_layers;
  double p = trunk_params(c, true);
  for (int C_ : c.block_out_channels) {
    double C = C_;
    p += L * (resnet_params(2 * C, C, T) + 3 * transformer_params(C, D, tl) + transformer_params(C, C, tl)) + 9 * C * C;
  }
  return p;
}

double vae_params(const VaeConfig& c) {
  const int L = c.layers_per_block;
  double p = 0;
  for (int C_ : c.block_out_channels) {
    double C = C_;
    p += (2 * L + 1) * resnet_params(C, C, 0) + 2 * 9 * C * C;
  }
  double C = c.block_out_channels.back();
  return p + 2 * (2 * resnet_params(C, C, 0) + 4 * C * C);
}

// ---- the UNet trunk -----------------------------------------------------------------------------------

void parse_trunk(const Reader& r, UNetConfig& c, bool is_controlnet) {
  c.in_channels = r.integer("in_channels", 4, 1, L::kMaxIoChannels);
  c.out_channels = r.integer("out_channels", 4, 1, L::kMaxIoChannels);
  c.block_out_channels = r.integers("block_out_channels", {320, 640, 1280, 1280}, 1, L::kMaxBlocks, 1, L::kMaxWidth);
  c.down_block_types = r.strs("down_block_types",
                              {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"});
  c.layers_per_block = r.integer("layers_per_block", 2, 1, L::kMaxLayersPerBlock);
  c.cross_attention_dim = r.integer("cross_attention_dim", 768, 1, L::kMaxWidth);
  c.norm_num_groups = r.integer("norm_num_groups", 32, 1, L::kMaxGroups);
  c.norm_eps = r.real("norm_eps", 1e-5f, 0, L::kMaxEps, true);
  c.flip_sin_to_cos = r.boolean("flip_sin_to_cos", true);
  c.freq_shift = r.real("freq_shift", 0, -L::kMaxFreqShift, L::kMaxFreqShift);
  const size_t nb = c.block_out_channels.size();
  if (c.down_block_types.size() != nb)
    r.bad("down_block_types", "must have one entry per block_out_channels entry (" + std::to_string(nb) + "), got " +
                                  std::to_string(c.down_block_types.size()));
  for (size_t i = 0; i < nb; ++i)
    r.multiple_of("block_out_channels[" + std::to_string(i) + "]", c.block_out_channels[i], c.norm_num_groups,
                  "norm_num_groups");
  // The sinusoid of the timestep divides by (block_out_channels[0] / 2 - freq_shift).
  if (!(c.block_out_channels[0] / 2 - c.freq_shift > 0))
    r.bad("freq_shift", "must be smaller than block_out_channels[0] / 2");
  // Number of heads: num_attention_heads, else (diffusers' historical naming) attention_head_dim.
  const char* hk = r.get("num_attention_heads") ? "num_attention_heads" : "attention_head_dim";
  const Json* heads = r.get(hk);
  if (!heads) c.heads.assign(nb, 8);
  else if (heads->is_number()) c.heads.assign(nb, r.to_int(hk, *heads, 1, L::kMaxHeads));
  else if (heads->is_array()) c.heads = r.integers(hk, {}, nb, nb, 1, L::kMaxHeads);
  else r.bad(hk, "must be an integer or a list of integers, got " + describe(*heads));
  for (size_t i = 0; i < nb; ++i)
    r.multiple_of("block_out_channels[" + std::to_string(i) + "]", c.block_out_channels[i], c.heads[i],
                  std::string(hk) + (heads && heads->is_array() ? "[" + std::to_string(i) + "]" : ""));
  const Json* tl = r.get("transformer_layers_per_block");
  if (tl && tl->is_array())
    fail(ErrorCode::Unsupported, r.where, ": per-block transformer_layers_per_block lists are not supported");
  c.transformer_layers = r.integer("transformer_layers_per_block", 1, 1, L::kMaxTransformerLayers);
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
  const size_t nb = c.block_out_channels.size();
  c.up_block_types =
      r.strs("up_block_types", {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"});
  if (c.up_block_types.size() != nb)
    r.bad("up_block_types",
          "must have one entry per block (" + std::to_string(nb) + "), got " + std::to_string(c.up_block_types.size()));
  for (auto& t : c.up_block_types)
    if (t != "CrossAttnUpBlock2D" && t != "UpBlock2D")
      fail(ErrorCode::Unsupported, where, ": up block type '", t, "' is not supported");
  c.down_use_lowlevel = r.boolean("down_use_lowlevel_prompt", false);
  c.mid_use_lowlevel = r.boolean("mid_use_lowlevel_prompt", false);
  const Json* up = r.get("up_use_lowlevel_prompt");
  if (up && up->is_array()) {
    if (up->as_array().size() > nb) r.bad("up_use_lowlevel_prompt", "has more entries than blocks");
    for (auto& e : up->as_array()) {
      if (!e.is_bool()) r.bad("up_use_lowlevel_prompt", "must be a list of true/false, got an entry " + describe(e));
      c.up_use_lowlevel.push_back(e.as_bool());
    }
  } else if (up) {
    c.up_use_lowlevel.assign(nb, r.boolean("up_use_lowlevel_prompt", false));
  }
  c.up_use_lowlevel.resize(nb, false);
  if (nb >= 2 && c.block_out_channels[nb - 1] != c.block_out_channels[nb - 2])
    fail(ErrorCode::Unsupported, where, ": XPSR needs the last two block_out_channels equal (the UpBlock2D pixel ",
         "attention takes the block's width as context), got ", shape_str(c.block_out_channels));
  r.within_budget(unet_params(c));
  return c;
}

ControlNetConfig parse_controlnet_config(const Json& j, const std::string& where) {
  Reader r{j, where};
  ControlNetConfig c;
  parse_trunk(r, c.trunk, true);
  c.conditioning_channels = r.integer("conditioning_channels", 3, 1, L::kMaxIoChannels);
  c.cond_embedding_channels =
      r.integers("conditioning_embedding_out_channels", {16, 32, 96, 256}, 2, L::kMaxCondBlocks, 1, L::kMaxWidth);
  c.use_lowlevel_prompt = r.boolean("use_lowlevel_prompt", true);
  c.use_rrdb = r.boolean("use_rrdb", false);
  r.boolean("return_rgbs", true);  // training-only switches (the DFC heads): type-checked, not used
  r.boolean("use_latent_pred", true);
  r.require("controlnet_conditioning_channel_order", "rgb");
  r.require("global_pool_conditions", "false");
  double p = trunk_params(c.trunk, c.use_lowlevel_prompt);
  const auto& e = c.cond_embedding_channels;
  for (size_t k = 0; k + 1 < e.size(); ++k) p += 9.0 * e[k] * (e[k] + e[k + 1]);
  p += 9.0 * e.back() * c.trunk.block_out_channels[0] + (c.use_rrdb ? 2 * 15 * 9.0 * 5 * e[0] * e[0] : 0);
  for (int w : skip_channels(c.trunk)) p += (double)w * w;
  r.within_budget(p);
  return c;
}

VaeConfig parse_vae_config(const Json& j, const std::string& where) {
  Reader r{j, where};
  VaeConfig c;
  c.in_channels = r.integer("in_channels", 3, 1, L::kMaxIoChannels);
  c.out_channels = r.integer("out_channels", 3, 1, L::kMaxIoChannels);
  c.latent_channels = r.integer("latent_channels", 4, 1, L::kMaxIoChannels);
  c.block_out_channels = r.integers("block_out_channels", {128, 256, 512, 512}, 1, L::kMaxBlocks, 1, L::kMaxWidth);
  c.layers_per_block = r.integer("layers_per_block", 2, 1, L::kMaxLayersPerBlock);
  c.norm_num_groups = r.integer("norm_num_groups", 32, 1, L::kMaxGroups);
  c.scaling_factor = r.real("scaling_factor", 0.18215f, 0, L::kMaxScalingFactor, true);
  r.require("act_fn", "silu");
  for (auto& t : r.strs("down_block_types", {}))
    if (t != "DownEncoderBlock2D") fail(ErrorCode::Unsupported, where, ": VAE down block '", t, "' is not supported");
  for (auto& t : r.strs("up_block_types", {}))
    if (t != "UpDecoderBlock2D") fail(ErrorCode::Unsupported, where, ": VAE up block '", t, "' is not supported");
  for (size_t i = 0; i < c.block_out_channels.size(); ++i)
    r.multiple_of("block_out_channels[" + std::to_string(i) + "]", c.block_out_channels[i], c.norm_num_groups,
                  "norm_num_groups");
  r.within_budget(vae_params(c));
  return c;
}

ClipTextEncoderConfig parse_clip_text_encoder_config(const Json& j, const std::string& where) {
  Reader r{j, where};
  ClipTextEncoderConfig c;
  c.vocab_size = r.integer("vocab_size", 49408, 1, L::kMaxVocab);
  c.hidden_size = r.integer("hidden_size", 768, 1, L::kMaxWidth);
  c.intermediate_size = r.integer("intermediate_size", 3072, 1, L::kMaxTextFfWidth);
  c.num_layers = r.integer("num_hidden_layers", 12, 1, L::kMaxTextLayers);
  c.num_heads = r.integer("num_attention_heads", 12, 1, L::kMaxHeads);
  c.max_position_embeddings = r.integer("max_position_embeddings", 77, 1, L::kMaxPositions);
  c.layer_norm_eps = r.real("layer_norm_eps", 1e-5f, 0, L::kMaxEps, true);
  std::string act = r.str("hidden_act", "quick_gelu");
  if (act == "quick_gelu") c.quick_gelu = true;
  else if (act == "gelu") c.quick_gelu = false;
  else fail(ErrorCode::Unsupported, where, ": hidden_act '", act, "' is not supported (quick_gelu, gelu)");
  r.multiple_of("hidden_size", c.hidden_size, c.num_heads, "num_attention_heads");
  const double D = c.hidden_size;
  r.within_budget((double)c.vocab_size * D + (double)c.max_position_embeddings * D +
                  c.num_layers * (4 * D * D + 2 * D * c.intermediate_size));
  return c;
}

}  // namespace xpsr
