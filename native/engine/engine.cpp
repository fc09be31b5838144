// Engine: model loading, graph building per entry, plan cache, layout conversion at the boundary.
//
// Entries (inputs -> outputs, PyTorch layouts):
//   text_encoder "encode":        input_ids I64 [B,L]                      -> last_hidden_state [B,L,D]
//   vae "encode":                 x [N,3,H,W] in [-1,1]                    -> moments [N,2*lat,H/8,W/8]
//   vae "decode":                 z [N,lat,h,w] (latents / scaling)        -> image [N,3,8h,8w]
//   vae "encode_tiled" / "decode_tiled": same, tile by tile (params tile, pad; models/vae_tiled.h)
//   controlnet "cond_embedding":  image [N,3,H,W] in [0,1]                 -> cond [N,C0,H/8,W/8]
//   controlnet "forward":         sample, ctx_high, [ctx_low], cond|image; params timestep,
//                                 conditioning_scale                       -> down_block_res_samples.NN, mid_block_res_sample
//   unet "forward":               sample, ctx_high, [ctx_low], down_block_additional_residuals.NN,
//                                 mid_block_additional_residual; timestep  -> sample_out
//   {controlnet, unet} "step":    sample, ctx_high, [ctx_low], cond|image; timestep, conditioning_scale
//                                 -> noise_pred (+ controlnet.* residuals with intermediates)
#include "engine.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "io/tensor_file.h"
#include "json.h"
#include "models/clip_text.h"
#include "models/controlnet.h"
#include "models/unet.h"
#include "models/vae.h"
#include "models/vae_tiled.h"  // tiled VAE (vae_tiled.cpp)
#include "sources.h"
#include "weights.h"

namespace xpsr {

ModelKind parse_model_kind(const std::string& s) {
  if (s == "text_encoder") return ModelKind::TextEncoder;
  if (s == "vae") return ModelKind::VAE;
  if (s == "unet") return ModelKind::UNet;
  if (s == "controlnet") return ModelKind::ControlNet;
  fail(ErrorCode::InvalidArgument, "unknown model kind '", s, "' (text_encoder, vae, unet, controlnet)");
}

static const char* kind_name(ModelKind k) {
  switch (k) {
    case ModelKind::TextEncoder: return "text_encoder";
    case ModelKind::VAE: return "vae";
    case ModelKind::UNet: return "unet";
    case ModelKind::ControlNet: return "controlnet";
  }
  return "?";
}

struct Engine::Model {
  ModelKind kind;
  ModelInfo info;
  std::unique_ptr<ClipText> clip;
  std::unique_ptr<VAE> vae;
  std::unique_ptr<UNet> unet;
  std::unique_ptr<ControlNet> controlnet;
};

struct Engine::CachedPlan {
  std::string key;
  std::unique_ptr<Plan> plan;
  std::vector<std::pair<std::string, bool>> layout;  // output name -> is token sequence
};

Engine::Engine(std::unique_ptr<Backend> backend, size_t max_plans) : backend_(std::move(backend)), max_plans_(max_plans) {}
Engine::~Engine() {
  plans_.clear();   // plans free their arenas on the backend first
  models_.clear();  // then weights
}

ModelInfo Engine::load(ModelKind kind, const LoadOptions& o) {
  // Folder, weights file or single-file SD checkpoint; variant; config (sources.h).
  ComponentSource src;
  if (!o.synthetic) src = resolve_component(kind_name(kind), o.path, o.config_json, o.variant);
  else if (o.config_json.empty()) fail(ErrorCode::InvalidArgument, "synthetic weights need a config");
  const std::string cfg_text = o.synthetic ? o.config_json : src.config_json;
  const std::string cfg_where = o.synthetic ? "config.json (given)" : src.config_where;
  Json cfg = Json::parse(cfg_text, cfg_where);

  auto m = std::make_unique<Model>();
  m->kind = kind;
  std::unique_ptr<WeightLoader> ld;
  static const char* names[] = {"text encoder", "VAE", "UNet", "ControlNet"};
  const char* what = names[(int)kind];
  if (o.synthetic) {
    ld = std::make_unique<WeightLoader>(*backend_, what, o.seed);
  } else {
    ld = std::make_unique<WeightLoader>(*backend_, what, std::move(src.files));
  }
  ld->set_check_only(o.check_only);
  std::ostringstream desc;
  switch (kind) {
    case ModelKind::TextEncoder: {
      m->clip = std::make_unique<ClipText>();
      m->clip->load(*ld, parse_clip_text_config(cfg, cfg_where));
      auto& c = m->clip->config;
      desc << "CLIP text encoder: " << c.num_layers << " layers, width " << c.hidden_size << ", " << c.num_heads << " heads";
      break;
    }
    case ModelKind::VAE: {
      m->vae = std::make_unique<VAE>();
      m->vae->load(*ld, parse_vae_config(cfg, cfg_where), o.vae_encoder, o.vae_decoder);
      desc << "VAE: channels " << shape_str(m->vae->config.block_out_channels) << ", latent "
           << m->vae->config.latent_channels;
      break;
    }
    case ModelKind::UNet: {
      m->unet = std::make_unique<UNet>();
      m->unet->load(*ld, parse_unet_config(cfg, cfg_where));
      desc << "XPSR UNet: channels " << shape_str(m->unet->config.block_out_channels) << ", "
           << m->unet->config.layers_per_block << " layers per block";
      break;
    }
    case ModelKind::ControlNet: {
      m->controlnet = std::make_unique<ControlNet>();
      m->controlnet->load(*ld, parse_controlnet_config(cfg, cfg_where));
      desc << "XPSR ControlNet: channels " << shape_str(m->controlnet->config.trunk.block_out_channels)
           << (m->controlnet->config.use_lowlevel_prompt ? ", SFA on" : ", SFA off");
      break;
    }
  }
  ld->finish();
  if (o.check_only) {
    ModelInfo info;
    info.kind = kind_name(kind), info.path = o.path, info.config_json = cfg_text, info.description = desc.str();
    info.tensors = ld->tensors_checked();
    return info;
  }
  std::lock_guard<std::mutex> lock(mu_);
  m->info.id = next_id_++;
  m->info.kind = kind_name(kind);
  m->info.path = o.path;
  m->info.config_json = cfg_text;
  m->info.description = desc.str();
  m->info.weight_bytes = ld->uploaded_bytes();
  m->info.parameters = (int64_t)(ld->uploaded_bytes() / 4);
  m->info.tensors = ld->tensors_checked();
  ModelInfo info = m->info;
  models_[info.id] = std::move(m);
  return info;
}

void Engine::unload(int id) {
  std::lock_guard<std::mutex> lock(mu_);
  // Plans reference the model's weights: drop those that use it (all, for simplicity).
  plans_.clear();
  models_.erase(id);
}

std::vector<ModelInfo> Engine::models() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ModelInfo> r;
  for (auto& kv : models_) r.push_back(kv.second->info);
  return r;
}

void Engine::clear_plans() {
  std::lock_guard<std::mutex> lock(mu_);
  plans_.clear();
}

Engine::Model& Engine::model(int id, ModelKind kind) {
  auto it = models_.find(id);
  if (it == models_.end()) fail(ErrorCode::InvalidArgument, "no loaded model with id ", id, " (disposed?)");
  if (it->second->kind != kind)
    fail(ErrorCode::InvalidArgument, "model ", id, " is a ", kind_name(it->second->kind), ", not a ", kind_name(kind));
  return *it->second;
}

// ---- building graphs per entry ----------------------------------------------------------------------

namespace {

struct Builder {
  Graph& g;
  const RunRequest& req;
  const TensorIn* find(const std::string& name) const {
    auto it = req.inputs.find(name);
    return it == req.inputs.end() ? nullptr : &it->second;
  }
  const TensorIn& need(const std::string& name) const {
    auto* t = find(name);
    if (!t) fail(ErrorCode::InvalidArgument, req.entry, ": missing input '", name, "'");
    return *t;
  }
  // 4-D NCHW feature map input with optional expected channels.
  Val map(const std::string& name, int channels = -1) {
    const TensorIn& t = need(name);
    if (t.shape.size() != 4)
      fail(ErrorCode::ShapeMismatch, req.entry, ": input '", name, "' must be [N, C, H, W], got ", shape_str(t.shape));
    if (channels >= 0 && t.shape[1] != channels)
      fail(ErrorCode::ShapeMismatch, req.entry, ": input '", name, "' must have ", channels, " channels, got ",
           shape_str(t.shape));
    return g.input(name, Dims{(int)t.shape[0], (int)t.shape[2], (int)t.shape[3], (int)t.shape[1]});
  }
  Val seq(const std::string& name, int width) {
    const TensorIn& t = need(name);
    if (t.shape.size() != 3 || t.shape[2] != width)
      fail(ErrorCode::ShapeMismatch, req.entry, ": input '", name, "' must be [B, L, ", width, "], got ",
           shape_str(t.shape));
    return g.input(name, Dims{(int)t.shape[0], 1, (int)t.shape[1], (int)t.shape[2]});
  }
  double param(const std::string& name, double def) const {
    auto it = req.params.find(name);
    return it == req.params.end() ? def : it->second;
  }
};

}  // namespace

std::unique_ptr<Graph> Engine::build(const RunRequest& req, std::vector<std::pair<std::string, bool>>& layout) {
  auto gp = std::make_unique<Graph>(*backend_);
  Graph& g = *gp;
  g.keep_taps(req.intermediates);
  Builder b{g, req};
  if (req.models.empty()) fail(ErrorCode::InvalidArgument, "run: no model given");
  auto check_batch = [&](Val a, Val c, const char* what) {
    if (g.dims(a).n != g.dims(c).n)
      fail(ErrorCode::ShapeMismatch, req.entry, ": batch of '", what, "' (", g.dims(c).n, ") differs from the sample's (",
           g.dims(a).n, ")");
  };
  bool tokens_out = false;

  if (req.entry == "step") {
    if (req.models.size() != 2) fail(ErrorCode::InvalidArgument, "step needs {controlnet, unet}");
    const ControlNet& cn = *model(req.models[0], ModelKind::ControlNet).controlnet;
    const UNet& un = *model(req.models[1], ModelKind::UNet).unet;
    Val sample = b.map("sample", cn.trunk.config.in_channels);
    int N = g.dims(sample).n;
    Val tf_cn = g.input("time_features", Dims{N, 1, 1, cn.trunk.config.block_out_channels[0]});
    Val tf_un = g.input("time_features_unet", Dims{N, 1, 1, un.config.block_out_channels[0]});
    Val ch = b.seq("ctx_high", cn.trunk.config.cross_attention_dim);
    check_batch(sample, ch, "ctx_high");
    Val cl = b.find("ctx_low") ? b.seq("ctx_low", cn.trunk.config.cross_attention_dim) : Val{};
    Val cond = b.find("cond") ? b.map("cond", cn.trunk.config.block_out_channels[0])
                              : cn.cond_embedding(g, b.map("image", cn.config.conditioning_channels));
    auto res = cn.forward(g, sample, tf_cn, ch, cl, cond, (float)b.param("conditioning_scale", 1.0));
    if (req.intermediates) {
      char buf[64];
      for (size_t k = 0; k + 1 < res.size(); ++k) {
        std::snprintf(buf, sizeof buf, "controlnet.down_block_res_samples.%02zu", k);
        g.output(buf, res[k]);
      }
      g.output("controlnet.mid_block_res_sample", res.back());
    }
    g.keep_taps(false);  // UNet taps would collide with the ControlNet's names
    g.output("noise_pred", un.forward(g, sample, tf_un, ch, cl, res));
  } else {
    auto mit = models_.find(req.models[0]);
    if (mit == models_.end()) fail(ErrorCode::InvalidArgument, "no loaded model with id ", req.models[0], " (disposed?)");
    Model& m = *mit->second;
    switch (m.kind) {
      case ModelKind::TextEncoder: {
        if (req.entry != "encode") fail(ErrorCode::InvalidArgument, "text_encoder has no entry '", req.entry, "'");
        const TensorIn& ids = b.need("input_ids");
        if (ids.shape.size() != 2) fail(ErrorCode::ShapeMismatch, "input_ids must be [B, L], got ", shape_str(ids.shape));
        int B = (int)ids.shape[0], L = (int)ids.shape[1];
        if (L > m.clip->config.max_position_embeddings)
          fail(ErrorCode::ShapeMismatch, "input_ids has ", L, " tokens; the text encoder takes at most ",
               m.clip->config.max_position_embeddings);
        Val vi = g.input_ids("input_ids", B * L), vp = g.input_ids("position_ids", B * L);
        g.output("last_hidden_state", m.clip->forward(g, vi, vp, B, L));
        tokens_out = true;
        break;
      }
      case ModelKind::VAE: {
        if (req.entry == "encode") g.output("moments", m.vae->encode(g, b.map("x", m.vae->config.in_channels)));
        else if (req.entry == "decode") g.output("image", m.vae->decode(g, b.map("z", m.vae->config.latent_channels)));
        else fail(ErrorCode::InvalidArgument, "vae has no entry '", req.entry, "'");
        break;
      }
      case ModelKind::ControlNet: {
        const ControlNet& cn = *m.controlnet;
        if (req.entry == "cond_embedding") {
          g.output("cond", cn.cond_embedding(g, b.map("image", cn.config.conditioning_channels)));
          break;
        }
        if (req.entry != "forward") fail(ErrorCode::InvalidArgument, "controlnet has no entry '", req.entry, "'");
        Val sample = b.map("sample", cn.trunk.config.in_channels);
        int N = g.dims(sample).n;
        Val tf = g.input("time_features", Dims{N, 1, 1, cn.trunk.config.block_out_channels[0]});
        Val ch = b.seq("ctx_high", cn.trunk.config.cross_attention_dim);
        check_batch(sample, ch, "ctx_high");
        Val cl = b.find("ctx_low") ? b.seq("ctx_low", cn.trunk.config.cross_attention_dim) : Val{};
        Val cond = b.find("cond") ? b.map("cond", cn.trunk.config.block_out_channels[0])
                                  : cn.cond_embedding(g, b.map("image", cn.config.conditioning_channels));
        if (g.dims(cond).h != g.dims(sample).h || g.dims(cond).w != g.dims(sample).w)
          fail(ErrorCode::ShapeMismatch, "controlnet: the condition image must be 8x the latent size (latent ",
               g.dims(sample).str(), ", condition embedding ", g.dims(cond).str(), ")");
        auto res = cn.forward(g, sample, tf, ch, cl, cond, (float)b.param("conditioning_scale", 1.0));
        char buf[64];
        for (size_t k = 0; k + 1 < res.size(); ++k) {
          std::snprintf(buf, sizeof buf, "down_block_res_samples.%02zu", k);
          g.output(buf, res[k]);
        }
        g.output("mid_block_res_sample", res.back());
        break;
      }
      case ModelKind::UNet: {
        const UNet& un = *m.unet;
        if (req.entry != "forward") fail(ErrorCode::InvalidArgument, "unet has no entry '", req.entry, "'");
        Val sample = b.map("sample", un.config.in_channels);
        int N = g.dims(sample).n;
        Val tf = g.input("time_features", Dims{N, 1, 1, un.config.block_out_channels[0]});
        Val ch = b.seq("ctx_high", un.config.cross_attention_dim);
        check_batch(sample, ch, "ctx_high");
        Val cl = b.find("ctx_low") ? b.seq("ctx_low", un.config.cross_attention_dim) : Val{};
        auto widths = un.residual_channels();
        std::vector<Val> res;
        char buf[64];
        for (size_t k = 0; k + 1 < widths.size(); ++k) {
          std::snprintf(buf, sizeof buf, "down_block_additional_residuals.%02zu", k);
          res.push_back(b.map(buf, widths[k]));
        }
        res.push_back(b.map("mid_block_additional_residual", widths.back()));
        g.output("sample_out", un.forward(g, sample, tf, ch, cl, res));
        break;
      }
    }
  }
  for (auto& o : g.outputs()) {
    bool tok = tokens_out;
    layout.push_back({o.first, tok});
  }
  return gp;
}

// ---- running ------------------------------------------------------------------------------------

static double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

OutputMap Engine::run(const RunRequest& req, const std::atomic<bool>* cancel, RunStats* stats) {
  std::lock_guard<std::mutex> lock(mu_);
  auto t0 = std::chrono::steady_clock::now();
  // Validate inputs early (NaN/Inf in activations would silently poison a whole run).
  for (auto& kv : req.inputs) {
    int64_t n = 1;
    for (auto d : kv.second.shape) {
      if (d <= 0) fail(ErrorCode::ShapeMismatch, "input '", kv.first, "' has an empty shape ", shape_str(kv.second.shape));
      n *= d;
    }
    size_t have = kv.second.i64.empty() ? kv.second.f32.size() : kv.second.i64.size();
    if (have == 0) continue;  // "keep": reuse the value this plan holds from its previous run (see below)
    if ((size_t)n != have)
      fail(ErrorCode::ShapeMismatch, "input '", kv.first, "' has ", have, " values but shape ", shape_str(kv.second.shape));
    for (float v : kv.second.f32)
      if (!std::isfinite(v)) fail(ErrorCode::InvalidArgument, "input '", kv.first, "' contains NaN or Inf");
  }
  // tiled VAE (vae_tiled.cpp): "encode_tiled" (x; params tile, pad) and "decode_tiled" (z; params tile,
  // pad) do not use one cached plan: TiledVAE builds and frees one small plan per network segment.
  if (req.entry == "encode_tiled" || req.entry == "decode_tiled") {
    if (req.models.size() != 1) fail(ErrorCode::InvalidArgument, req.entry, ": needs exactly one VAE");
    const VAE& vae = *model(req.models[0], ModelKind::VAE).vae;
    const bool enc = req.entry == "encode_tiled";
    const char* in_name = enc ? "x" : "z";
    auto it = req.inputs.find(in_name);
    if (it == req.inputs.end()) fail(ErrorCode::InvalidArgument, req.entry, ": missing input '", in_name, "'");
    TiledVAEOptions o;
    for (const char* k : {"tile", "pad"}) {
      auto p = req.params.find(k);
      if (p == req.params.end()) continue;
      if (!(p->second >= 0 && p->second <= 1e6) || p->second != std::floor(p->second))
        fail(ErrorCode::InvalidArgument, req.entry, ": param '", k, "' must be a non-negative integer, got ", p->second);
      (k[0] == 't' ? o.tile : o.pad) = (int)p->second;
    }
    if (req.params.count("tile") && o.tile < 1) fail(ErrorCode::InvalidArgument, req.entry, ": param 'tile' must be >= 1");
    TiledVAEStats ts;
    TiledVAE tv(*backend_, vae);
    const TensorIn& t = it->second;
    HostTensor r = enc ? tv.encode(t.shape, t.f32.data(), t.f32.size(), o, cancel, &ts)
                       : tv.decode(t.shape, t.f32.data(), t.f32.size(), o, cancel, &ts);
    OutputMap out;
    TensorOut& to = out[enc ? "moments" : "image"];
    to.shape = r.shape, to.data = std::move(r.data);
    if (stats) {
      *stats = RunStats{};
      stats->plan_ms = ts.plan_ms, stats->upload_ms = ts.host_ms, stats->compute_ms = ts.compute_ms;
      stats->arena_bytes = ts.max_arena_bytes, stats->naive_bytes = ts.max_naive_bytes, stats->ops = ts.ops;
    }
    return out;
  }
  // Plan key: entry, models, input shapes, params except the timestep (an input of the plan).
  std::ostringstream key;
  key << req.entry << "|" << req.intermediates;
  for (int m : req.models) key << "|m" << m;
  for (auto& kv : req.inputs) key << "|" << kv.first << shape_str(kv.second.shape);
  for (auto& kv : req.params)
    if (kv.first != "timestep") key << "|" << kv.first << "=" << kv.second;
  CachedPlan* cp = nullptr;
  for (auto it = plans_.begin(); it != plans_.end(); ++it)
    if ((*it)->key == key.str()) {
      plans_.splice(plans_.begin(), plans_, it);
      cp = plans_.front().get();
      break;
    }
  bool reused = cp != nullptr;
  if (!cp) {
    auto np = std::make_unique<CachedPlan>();
    np->key = key.str();
    std::unique_ptr<Graph> g = build(req, np->layout);
    while (plans_.size() >= max_plans_) plans_.pop_back();
    np->plan = std::make_unique<Plan>(std::move(g));
    plans_.push_front(std::move(np));
    cp = plans_.front().get();
  }
  Plan& plan = *cp->plan;
  double plan_ms = ms_since(t0);

  auto t1 = std::chrono::steady_clock::now();
  for (auto& in : plan.graph().inputs()) {
    const std::string& name = in.first;
    const auto& vi = plan.graph().values()[in.second];
    if (vi.is_ids) continue;
    if (name == "time_features" || name == "time_features_unet") continue;
    const TensorIn& t = req.inputs.at(name);
    if (t.f32.empty()) {
      // Per-image constants (text contexts, ControlNet condition) stay on the device across steps.
      if (!plan.has_input(name))
        fail(ErrorCode::InvalidArgument, req.entry, ": input '", name, "' has no data and no value from a previous run");
      continue;
    }
    if (t.shape.size() == 4) {
      auto nhwc = nchw_to_nhwc(t.f32.data(), (int)t.shape[0], (int)t.shape[1], (int)t.shape[2], (int)t.shape[3]);
      plan.set_input(name, nhwc.data(), nhwc.size());
    } else {
      plan.set_input(name, t.f32.data(), t.f32.size());
    }
  }
  // Timestep features (host, float32 like diffusers) and token/position ids.
  for (auto& in : plan.graph().inputs()) {
    const auto& vi = plan.graph().values()[in.second];
    if (in.first == "time_features" || in.first == "time_features_unet") {
      auto it = req.params.find("timestep");
      if (it == req.params.end()) fail(ErrorCode::InvalidArgument, req.entry, ": missing param 'timestep'");
      // "time_features" belongs to the first model, "time_features_unet" to the second (step).
      const Model& mm = *models_.at(req.models[in.first == "time_features_unet" ? 1 : 0]);
      const UNetConfig& c = mm.unet ? mm.unet->config : mm.controlnet->trunk.config;
      auto f = timestep_features((float)it->second, vi.d.c, c.flip_sin_to_cos, c.freq_shift);
      std::vector<float> rows;
      for (int i = 0; i < vi.d.n; ++i) rows.insert(rows.end(), f.begin(), f.end());
      plan.set_input(in.first, rows.data(), rows.size());
    } else if (vi.is_ids) {
      const TensorIn& ids = req.inputs.at("input_ids");
      int L = (int)ids.shape[1];
      std::vector<int32_t> v(ids.i64.size());
      const Model& m = *models_.at(req.models[0]);
      for (size_t i = 0; i < v.size(); ++i) {
        int64_t id = in.first == "position_ids" ? (int64_t)(i % L) : ids.i64[i];
        if (id < 0 || id >= m.clip->config.vocab_size)
          fail(ErrorCode::InvalidArgument, "token id ", id, " is outside the vocabulary (", m.clip->config.vocab_size, ")");
        v[i] = (int32_t)id;
      }
      plan.set_ids(in.first, v);
    }
  }
  double upload_ms = ms_since(t1);

  auto t2 = std::chrono::steady_clock::now();
  plan.run(cancel);
  double compute_ms = ms_since(t2);

  auto t3 = std::chrono::steady_clock::now();
  OutputMap out;
  for (auto& [name, tok] : cp->layout) {
    Dims d = plan.output_dims(name);
    std::vector<float> v = plan.get_output(name);
    TensorOut& o = out[name];
    if (tok) {
      o.shape = {d.n, (int64_t)d.h * d.w, d.c};
      o.data = std::move(v);
    } else if (d.h == 1 && d.w == 1 && name.find("time_embedding") != std::string::npos) {
      o.shape = {d.n, d.c};
      o.data = std::move(v);
    } else {
      o.shape = {d.n, d.c, d.h, d.w};
      o.data = nhwc_to_nchw(v.data(), d.n, d.c, d.h, d.w);
    }
  }
  if (stats) {
    stats->plan_ms = plan_ms, stats->upload_ms = upload_ms, stats->compute_ms = compute_ms;
    stats->download_ms = ms_since(t3), stats->plan_reused = reused;
    stats->arena_bytes = plan.arena_bytes(), stats->naive_bytes = plan.naive_bytes(), stats->ops = plan.op_count();
    stats->flops = plan.flops();
  }
  return out;
}

}  // namespace xpsr
