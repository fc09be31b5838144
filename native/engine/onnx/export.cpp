// ONNX export: graph builders per exported part and the file-writing driver.
#include "export.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <sstream>

#include "../models/clip_text_encoder.h"
#include "../models/controlnet.h"
#include "../models/unet.h"
#include "../models/vae.h"

namespace xpsr::onnx {

namespace {

ExportGraph start(Backend& be, const std::string& name, bool taps) {
  ExportGraph e;
  e.graph = std::make_unique<Graph>(be);
  e.graph->keep_taps(taps);
  e.spec.name = name;
  return e;
}

void bind_in(LowerSpec& s, InputBinding::Kind k, const std::string& graph_name, const std::string& onnx_name) {
  InputBinding b;
  b.kind = k, b.graph_name = graph_name, b.onnx_name = onnx_name;
  s.inputs.push_back(b);
}

void bind_timestep(LowerSpec& s, const std::string& graph_name, const UNetConfig& c) {
  InputBinding b;
  b.kind = InputBinding::Timestep, b.graph_name = graph_name, b.onnx_name = "timestep";
  b.dim = c.block_out_channels[0], b.flip_sin_to_cos = c.flip_sin_to_cos, b.freq_shift = c.freq_shift;
  s.inputs.push_back(b);
}

// Every graph output: tokens as [B,L,D]; the time-embedding tap as [N,T]; feature maps as NCHW. ONNX
// names are the graph's, except `rename` entries.
void bind_all_outputs(ExportGraph& e, bool tokens, const std::map<std::string, std::string>& rename = {}) {
  for (auto& o : e.graph->outputs()) {
    OutputBinding b;
    const Dims& d = e.graph->dims(Val{o.second});
    b.kind = tokens ? OutputBinding::Seq
                    : (d.h * d.w == 1 && o.first.find("time_embedding") != std::string::npos ? OutputBinding::Vec
                                                                                             : OutputBinding::Map);
    b.graph_name = o.first;
    auto r = rename.find(o.first);
    b.onnx_name = r == rename.end() ? o.first : r->second;
    e.spec.outputs.push_back(b);
  }
}

bool unet_uses_low(const UNet& un) {
  bool any = un.config.down_use_lowlevel || un.config.mid_use_lowlevel;
  for (bool b : un.config.up_use_lowlevel) any = any || b;
  return any;
}

// Spatial size after `levels` downsamplers: ceil division by 2 per level (odd latents).
int down_size(int s, int levels) {
  for (int i = 0; i < levels; ++i) s = (s + 1) / 2;
  return s;
}

std::string residual_name(const char* prefix, size_t k) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%s%02zu", prefix, k);
  return buf;
}

}  // namespace

// ---- builders ------------------------------------------------------------------------------------------

ExportGraph build_text_encoder(Backend& be, const ClipTextEncoder& m, int B, int L, bool taps) {
  if (L > m.config.max_position_embeddings)
    fail(ErrorCode::InvalidArgument, "text length ", L, " exceeds the encoder's ", m.config.max_position_embeddings,
         " positions");
  ExportGraph e = start(be, "text_encoder", taps);
  Graph& g = *e.graph;
  Val ids = g.input_ids("input_ids", B * L), pos = g.input_ids("position_ids", B * L);
  g.output("last_hidden_state", m.forward(g, ids, pos, B, L));
  InputBinding b;
  b.kind = InputBinding::Ids, b.graph_name = "input_ids", b.onnx_name = "input_ids", b.seq_len = L;
  e.spec.inputs.push_back(b);
  b.kind = InputBinding::Positions, b.graph_name = "position_ids", b.onnx_name = "";
  e.spec.inputs.push_back(b);
  bind_all_outputs(e, true);
  return e;
}

ExportGraph build_vae_encoder(Backend& be, const Vae& m, int N, int H, int W, bool taps) {
  ExportGraph e = start(be, "vae_encoder", taps);
  Graph& g = *e.graph;
  g.output("moments", m.encode(g, g.input("x", Dims{N, H, W, m.config.in_channels})));
  bind_in(e.spec, InputBinding::Map, "x", "image");
  bind_all_outputs(e, false);
  return e;
}

ExportGraph build_vae_decoder(Backend& be, const Vae& m, int N, int h, int w, bool taps) {
  ExportGraph e = start(be, "vae_decoder", taps);
  Graph& g = *e.graph;
  g.output("image", m.decode(g, g.input("z", Dims{N, h, w, m.config.latent_channels})));
  bind_in(e.spec, InputBinding::Map, "z", "latent");
  bind_all_outputs(e, false);
  return e;
}

// The ControlNet's residuals for the UNet, scaled by the ONNX input `conditioning_scale` (the engine bakes
// the scale into its plan; here it is a graph input: one graph serves every scale).
static std::vector<Val> controlnet_residuals(ExportGraph& e, const ControlNet& cn, int N, int h, int w, int L, bool low,
                                             Val& sample, Val& ctx_high, Val& ctx_low) {
  Graph& g = *e.graph;
  const UNetConfig& c = cn.trunk.config;
  sample = g.input("sample", Dims{N, h, w, c.in_channels});
  Val tf = g.input("time_features", Dims{N, 1, 1, c.block_out_channels[0]});
  ctx_high = g.input("ctx_high", Dims{N, 1, L, c.cross_attention_dim});
  ctx_low = low ? g.input("ctx_low", Dims{N, 1, L, c.cross_attention_dim}) : Val{};
  Val image = g.input("image", Dims{N, 8 * h, 8 * w, cn.config.conditioning_channels});
  auto res = cn.forward(g, sample, tf, ctx_high, ctx_low, cn.cond_embedding(g, image), 1.0f);
  for (auto& r : res) {
    r = g.scale(r, 1.0f);
    e.spec.scalar_inputs[(int)g.nodes().size() - 1] = "conditioning_scale";
  }
  bind_in(e.spec, InputBinding::Map, "sample", "sample");
  bind_timestep(e.spec, "time_features", c);
  bind_in(e.spec, InputBinding::Seq, "ctx_high", "encoder_hidden_states");
  if (low) bind_in(e.spec, InputBinding::Seq, "ctx_low", "lowlevel_encoder_hidden_states");
  bind_in(e.spec, InputBinding::Map, "image", "controlnet_cond");
  return res;
}

ExportGraph build_step(Backend& be, const ControlNet& cn, const UNet& un, int N, int h, int w, int L,
                       bool residual_outputs) {
  ExportGraph e = start(be, "step", false);
  Graph& g = *e.graph;
  const bool low = cn.config.use_lowlevel_prompt || unet_uses_low(un);
  Val sample, ch, cl;
  auto res = controlnet_residuals(e, cn, N, h, w, L, low, sample, ch, cl);
  if (residual_outputs) {
    for (size_t k = 0; k + 1 < res.size(); ++k)
      g.output(residual_name("controlnet.down_block_res_samples.", k), res[k]);
    g.output("controlnet.mid_block_res_sample", res.back());
  }
  Val tf_un = g.input("time_features_unet", Dims{N, 1, 1, un.config.block_out_channels[0]});
  bind_timestep(e.spec, "time_features_unet", un.config);
  g.output("noise_pred", un.forward(g, sample, tf_un, ch, cl, res));
  bind_all_outputs(e, false);
  return e;
}

ExportGraph build_controlnet(Backend& be, const ControlNet& cn, int N, int h, int w, int L, bool taps) {
  ExportGraph e = start(be, "controlnet", taps);
  Graph& g = *e.graph;
  Val sample, ch, cl;
  auto res = controlnet_residuals(e, cn, N, h, w, L, cn.config.use_lowlevel_prompt, sample, ch, cl);
  for (size_t k = 0; k + 1 < res.size(); ++k) g.output(residual_name("down_block_res_samples.", k), res[k]);
  g.output("mid_block_res_sample", res.back());
  bind_all_outputs(e, false);
  return e;
}

ExportGraph build_unet(Backend& be, const UNet& un, int N, int h, int w, int L, bool with_low, bool taps) {
  ExportGraph e = start(be, "unet", taps);
  Graph& g = *e.graph;
  const UNetConfig& c = un.config;
  Val sample = g.input("sample", Dims{N, h, w, c.in_channels});
  Val tf = g.input("time_features", Dims{N, 1, 1, c.block_out_channels[0]});
  Val ch = g.input("ctx_high", Dims{N, 1, L, c.cross_attention_dim});
  Val cl = with_low ? g.input("ctx_low", Dims{N, 1, L, c.cross_attention_dim}) : Val{};
  bind_in(e.spec, InputBinding::Map, "sample", "sample");
  bind_timestep(e.spec, "time_features", c);
  bind_in(e.spec, InputBinding::Seq, "ctx_high", "encoder_hidden_states");
  if (with_low) bind_in(e.spec, InputBinding::Seq, "ctx_low", "lowlevel_encoder_hidden_states");
  // Residual shapes = the trunk's skip features: conv_in, then per level its layers and (except the last
  // level) its downsampler; sizes halve with ceil division (odd latents).
  const auto widths = un.residual_channels();
  std::vector<std::pair<int, int>> sizes{{h, w}};
  const int n = (int)c.block_out_channels.size();
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < c.layers_per_block; ++j) sizes.push_back({down_size(h, i), down_size(w, i)});
    if (i + 1 < n) sizes.push_back({down_size(h, i + 1), down_size(w, i + 1)});
  }
  std::vector<Val> res;
  for (size_t i = 0; i + 1 < widths.size(); ++i) {
    std::string name = residual_name("down_block_additional_residuals.", i);
    res.push_back(g.input(name, Dims{N, sizes[i].first, sizes[i].second, widths[i]}));
    bind_in(e.spec, InputBinding::Map, name, name);
  }
  const int levels = (int)c.block_out_channels.size() - 1;
  res.push_back(
      g.input("mid_block_additional_residual", Dims{N, down_size(h, levels), down_size(w, levels), widths.back()}));
  bind_in(e.spec, InputBinding::Map, "mid_block_additional_residual", "mid_block_additional_residual");
  g.output("noise_pred", un.forward(g, sample, tf, ch, cl, res));
  bind_all_outputs(e, false);
  return e;
}

// ---- driver --------------------------------------------------------------------------------------------

namespace {

void make_dir(const std::string& d) {
  if (d.empty()) fail(ErrorCode::InvalidArgument, "onnx export: no output folder given");
  std::string cur;
  for (size_t i = 0; i <= d.size(); ++i) {
    if (i == d.size() || d[i] == '/') {
      if (!cur.empty() && cur != "/" && mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
        fail(ErrorCode::Io, "cannot create folder ", cur, ": ", std::strerror(errno));
    }
    if (i < d.size()) cur.push_back(d[i]);
  }
}

std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += c;
    else if ((unsigned char)c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else o += c;
  }
  return o + "\"";
}

std::string json_values(const std::vector<ValueInfo>& vs) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < vs.size(); ++i) {
    const ValueInfo& v = vs[i];
    o << (i ? ", " : "") << "{\"name\": " << json_str(v.name) << ", \"type\": \""
      << (v.type == ElemType::I64   ? "int64"
          : v.type == ElemType::F16 ? "float16"
                                    : "float32")
      << "\", \"shape\": [";
    for (size_t k = 0; k < v.dims.size(); ++k) {
      o << (k ? ", " : "");
      if (k < v.dim_params.size() && !v.dim_params[k].empty()) o << json_str(v.dim_params[k]);
      else o << v.dims[k];
    }
    o << "]}";
  }
  return o.str() + "]";
}

}  // namespace

std::string export_models(Backend& be, const ExportModels& m, const ExportOptions& o) {
  std::vector<std::string> parts = o.parts;
  if (parts.empty()) {
    if (m.text) parts.push_back("text_encoder");
    if (m.vae && m.vae->has_encoder) parts.push_back("vae_encoder");
    if (m.vae && m.vae->has_decoder) parts.push_back("vae_decoder");
    if (m.controlnet && m.unet) parts.push_back("step");
  }
  if (parts.empty()) fail(ErrorCode::InvalidArgument, "onnx export: nothing to export (no models given)");
  if (o.sizes.empty()) fail(ErrorCode::InvalidArgument, "onnx export: no size given");
  for (auto& s : o.sizes)
    if (s.first <= 0 || s.second <= 0 || s.first % 8 || s.second % 8)
      fail(ErrorCode::InvalidArgument, "onnx export: image size ", s.first, "x", s.second,
           " must be positive multiples of 8");
  if (o.batch < 1 || o.text_batch < 1 || o.vae_batch < 1)
    fail(ErrorCode::InvalidArgument, "onnx export: batch must be >= 1");
  make_dir(o.out_dir);

  std::ostringstream man;
  man << "{\n  \"format\": \"xpsr-onnx-export/1\",\n  \"opset\": 17,\n  \"layout\": \""
      << (o.layout == Layout::CF ? "nchw" : "nhwc") << "\",\n  \"dtype\": \"" << (o.fp16 ? "float16" : "float32")
      << "\",\n  \"dynamicBatch\": " << (o.dynamic_batch ? "true" : "false");
  if (m.vae) man << ",\n  \"vaeScalingFactor\": " << m.vae->config.scaling_factor;
  man << ",\n  \"files\": [";
  bool first = true;

  for (const std::string& part : parts) {
    auto need = [&](bool ok, const char* what) {
      if (!ok) fail(ErrorCode::InvalidArgument, "onnx export: part '", part, "' needs ", what);
    };
    const bool sized = part != "text_encoder";
    std::unique_ptr<ExternalData> ext;
    const auto sizes = sized ? o.sizes : std::vector<std::pair<int, int>>{o.sizes[0]};
    for (auto [W, H] : sizes) {
      const int h = H / 8, w = W / 8;
      ExportGraph eg;
      if (part == "text_encoder")
        need(m.text, "a text encoder"), eg = build_text_encoder(be, *m.text, o.text_batch, o.seq_len, o.intermediates);
      else if (part == "vae_encoder")
        need(m.vae && m.vae->has_encoder, "a VAE encoder"),
            eg = build_vae_encoder(be, *m.vae, o.vae_batch, H, W, o.intermediates);
      else if (part == "vae_decoder")
        need(m.vae && m.vae->has_decoder, "a VAE decoder"),
            eg = build_vae_decoder(be, *m.vae, o.vae_batch, h, w, o.intermediates);
      else if (part == "step")
        need(m.controlnet && m.unet, "a ControlNet and a UNet"),
            eg = build_step(be, *m.controlnet, *m.unet, o.batch, h, w, o.seq_len, o.residual_outputs);
      else if (part == "controlnet")
        need(m.controlnet, "a ControlNet"),
            eg = build_controlnet(be, *m.controlnet, o.batch, h, w, o.seq_len, o.intermediates);
      else if (part == "unet")
        need(m.unet, "a UNet"),
            eg = build_unet(be, *m.unet, o.batch, h, w, o.seq_len, unet_uses_low(*m.unet), o.intermediates);
      else
        fail(ErrorCode::InvalidArgument, "onnx export: unknown part '", part,
             "' (text_encoder, vae_encoder, vae_decoder, step, controlnet, unet)");
      eg.spec.layout = o.layout, eg.spec.fp16 = o.fp16, eg.spec.dynamic_batch = o.dynamic_batch;
      Model model = lower(*eg.graph, eg.spec);
      model.producer_version = o.producer_version;
      model.metadata["xpsr.part"] = part;
      if (sized) model.metadata["xpsr.image_size"] = std::to_string(W) + "x" + std::to_string(H);
      const uint64_t wbytes = weight_bytes(model);
      const bool external = o.external == ExportOptions::External::Always ||
                            (o.external == ExportOptions::External::Auto && wbytes > (uint64_t)1800 * 1024 * 1024);
      if (external && !ext) ext = std::make_unique<ExternalData>(o.out_dir, part + ".onnx_data");
      const std::string file =
          sized ? part + "_" + std::to_string(W) + "x" + std::to_string(H) + ".onnx" : part + ".onnx";
      std::string bytes = encode_model(model, external ? ext.get() : nullptr);
      write_file(o.out_dir + "/" + file, bytes);
      man << (first ? "" : ",") << "\n    {\"part\": " << json_str(part) << ", \"file\": " << json_str(file);
      if (sized) man << ", \"width\": " << W << ", \"height\": " << H;
      man << ", \"batch\": "
          << (part == "text_encoder"      ? o.text_batch
              : part.rfind("vae", 0) == 0 ? o.vae_batch
                                          : o.batch);
      man << ", \"externalData\": " << (external ? json_str(ext->file_name()) : "null")
          << ", \"bytes\": " << bytes.size() << ", \"weightBytes\": " << wbytes << ", \"nodes\": " << model.nodes.size()
          << ",\n     \"inputs\": " << json_values(model.inputs)
          << ",\n     \"outputs\": " << json_values(model.outputs) << "}";
      first = false;
    }
  }
  man << "\n  ]\n}\n";
  write_file(o.out_dir + "/manifest.json", man.str());
  return man.str();
}

}  // namespace xpsr::onnx
