// Engine: model loading, request validation, the plan cache, layout conversion at the boundary, and the
// locking that lets unload / clear_plans return at once while a call runs. The graphs of the entries are
// built in entries.cpp.
#include "engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <set>
#include <sstream>

#include "config.h"
#include "entries.h"
#include "io/tensor_file.h"
#include "json.h"
#include "models/clip_text_encoder.h"
#include "models/controlnet.h"
#include "models/unet.h"
#include "models/vae.h"
#include "models/vae_tiled.h"
#include "sources.h"
#include "weights.h"

namespace xpsr {

ModelKind parse_model_kind(const std::string& s) {
  if (s == "text_encoder") return ModelKind::TextEncoder;
  if (s == "vae") return ModelKind::Vae;
  if (s == "unet") return ModelKind::UNet;
  if (s == "controlnet") return ModelKind::ControlNet;
  fail(ErrorCode::InvalidArgument, "unknown model kind '", s, "' (text_encoder, vae, unet, controlnet)");
}

const char* model_kind_name(ModelKind k) {
  switch (k) {
    case ModelKind::TextEncoder: return "text_encoder";
    case ModelKind::Vae: return "vae";
    case ModelKind::UNet: return "unet";
    case ModelKind::ControlNet: return "controlnet";
  }
  return "?";
}

struct Engine::Model {
  ModelKind kind;
  ModelInfo info;
  bool unloading = false;  // unload() was called while a call ran: refused to new calls, freed at its end
  std::unique_ptr<ClipTextEncoder> text;
  std::unique_ptr<Vae> vae;
  std::unique_ptr<UNet> unet;
  std::unique_ptr<ControlNet> controlnet;
};

struct Engine::CachedPlan {
  PlanInfo info;
  std::vector<int> models;  // the models whose weights the plan reads
  std::unique_ptr<Plan> plan;
};

Engine::Engine(std::unique_ptr<Backend> backend, size_t max_plans)
    : backend_(std::move(backend)), max_plans_(max_plans) {}
Engine::~Engine() {
  plans_.clear();   // plans free their arenas on the backend first
  models_.clear();  // then weights
}

// ---- loading --------------------------------------------------------------------------------------

ModelInfo Engine::load(ModelKind kind, const LoadOptions& o) {
  // The config first: every value is range-checked (config.cpp) before a weights folder's files are opened or
  // a byte allocated. Where it comes from (sources.h): the folder's config.json, the caller, or the header of
  // an SD single file (derived from its shapes; no tensor data is read).
  ComponentSource src;
  if (!o.synthetic) src = resolve_component(model_kind_name(kind), o.path, o.config_json, o.variant);
  else if (o.config_json.empty()) fail(ErrorCode::InvalidArgument, "synthetic weights need a config");
  const std::string cfg_text = o.synthetic ? o.config_json : src.config_json;
  const std::string cfg_where = o.synthetic ? "config.json (given)" : src.config_where;
  Json cfg;
  try {
    cfg = Json::parse(cfg_text, cfg_where);
  } catch (const Error& e) {
    throw Error(ErrorCode::WeightsInvalid, e.what());
  }
  auto m = std::make_shared<Model>();
  m->kind = kind;
  std::ostringstream desc;
  switch (kind) {
    case ModelKind::TextEncoder: {
      m->text = std::make_unique<ClipTextEncoder>();
      m->text->config = parse_clip_text_encoder_config(cfg, cfg_where);
      auto& c = m->text->config;
      desc << "CLIP text encoder: " << c.num_layers << " layers, width " << c.hidden_size << ", " << c.num_heads
           << " heads";
      break;
    }
    case ModelKind::Vae: {
      m->vae = std::make_unique<Vae>();
      m->vae->config = parse_vae_config(cfg, cfg_where);
      desc << "VAE: channels " << shape_str(m->vae->config.block_out_channels) << ", latent "
           << m->vae->config.latent_channels;
      break;
    }
    case ModelKind::UNet: {
      m->unet = std::make_unique<UNet>();
      m->unet->config = parse_unet_config(cfg, cfg_where);
      desc << "XPSR UNet: channels " << shape_str(m->unet->config.block_out_channels) << ", "
           << m->unet->config.layers_per_block << " layers per block";
      break;
    }
    case ModelKind::ControlNet: {
      m->controlnet = std::make_unique<ControlNet>();
      m->controlnet->config = parse_controlnet_config(cfg, cfg_where);
      desc << "XPSR ControlNet: channels " << shape_str(m->controlnet->config.trunk.block_out_channels)
           << (m->controlnet->config.use_lowlevel_prompt ? ", SFA on" : ", SFA off");
      break;
    }
  }

  const char* what = kind == ModelKind::TextEncoder ? "text encoder"
                     : kind == ModelKind::Vae       ? "VAE"
                     : kind == ModelKind::UNet      ? "UNet"
                                                    : "ControlNet";
  std::unique_ptr<WeightLoader> ld;
  if (o.synthetic) {
    ld = std::make_unique<WeightLoader>(*backend_, what, o.seed);
  } else {
    ld = std::make_unique<WeightLoader>(*backend_, what, src.take_files());
  }
  ld->set_check_only(o.check_only);
  switch (kind) {
    case ModelKind::TextEncoder: m->text->load(*ld, m->text->config); break;
    case ModelKind::Vae: m->vae->load(*ld, m->vae->config, o.vae_encoder, o.vae_decoder); break;
    case ModelKind::UNet: m->unet->load(*ld, m->unet->config); break;
    case ModelKind::ControlNet: m->controlnet->load(*ld, m->controlnet->config); break;
  }
  ld->finish();
  ModelInfo info;
  info.kind = model_kind_name(kind), info.path = o.path, info.config_json = cfg_text, info.description = desc.str();
  info.tensors = ld->tensors_checked();
  if (o.check_only) return info;
  info.weight_bytes = ld->uploaded_bytes();
  info.parameters = (int64_t)(ld->uploaded_bytes() / 4);
  std::lock_guard<std::mutex> lock(state_mu_);
  info.id = next_id_++;
  m->info = info;
  models_[info.id] = std::move(m);
  return info;
}

// ---- unload / clear: never wait for a running call --------------------------------------------------

void Engine::unload_now(int id) {
  for (auto it = plans_.begin(); it != plans_.end();) {
    const auto& ms = (*it)->models;
    it = std::find(ms.begin(), ms.end(), id) != ms.end() ? plans_.erase(it) : std::next(it);
  }
  models_.erase(id);
}

void Engine::clear_now() { plans_.clear(); }

void Engine::unload(int id) {
  std::lock_guard<std::mutex> lock(state_mu_);
  auto it = models_.find(id);
  if (it == models_.end() || it->second->unloading) return;  // idempotent
  if (!busy_) return unload_now(id);
  it->second->unloading = true;
  deferred_unloads_.push_back(id);
}

void Engine::clear_plans() {
  std::lock_guard<std::mutex> lock(state_mu_);
  if (!busy_) return clear_now();
  deferred_clear_ = true;
}

std::vector<PlanInfo> Engine::plans() const {
  std::lock_guard<std::mutex> lock(state_mu_);
  std::vector<PlanInfo> r;
  for (auto& p : plans_) r.push_back(p->info);
  return r;
}

// ---- one call on the backend ------------------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// Largest dimension of a tensor at the boundary (a larger one is a caller's mistake, not an image).
constexpr int64_t kMaxDim = 1 << 20;

void check_values(const char* entry, const char* name, const HostTensor& t, int64_t numel, bool data_optional) {
  if (t.data.empty() && data_optional) return;
  if ((int64_t)t.data.size() != numel)
    fail(ErrorCode::ShapeMismatch, entry, ": '", name, "' has ", t.data.size(), " values but shape ",
         shape_str(t.shape));
  for (float v : t.data)
    if (!std::isfinite(v)) fail(ErrorCode::InvalidArgument, entry, ": '", name, "' contains NaN or Inf");
}

int64_t checked_numel(const char* entry, const char* name, const std::vector<int64_t>& shape, const char* layout) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d <= 0 || d > kMaxDim)
      fail(ErrorCode::ShapeMismatch, entry, ": '", name, "' must be ", layout, " with sizes in [1, ", kMaxDim,
           "], got ", shape_str(shape));
    n *= d;
    if (n > (int64_t(1) << 40)) fail(ErrorCode::ShapeMismatch, entry, ": '", name, "' is too large ", shape_str(shape));
  }
  return n;
}

// A feature map [N, C, H, W] with `channels` channels (-1: any) -> channels-last Dims.
Dims map_dims(const char* entry, const char* name, const HostTensor& t, int channels, bool data_optional = false) {
  if (t.shape.size() != 4)
    fail(ErrorCode::ShapeMismatch, entry, ": '", name, "' must be [N, C, H, W], got ", shape_str(t.shape));
  int64_t n = checked_numel(entry, name, t.shape, "[N, C, H, W]");
  if (channels >= 0 && t.shape[1] != channels)
    fail(ErrorCode::ShapeMismatch, entry, ": '", name, "' must have ", channels, " channels, got ", shape_str(t.shape));
  check_values(entry, name, t, n, data_optional);
  return Dims{(int)t.shape[0], (int)t.shape[2], (int)t.shape[3], (int)t.shape[1]};
}

// A token sequence [N, L, width] -> L.
int seq_len(const char* entry, const char* name, const HostTensor& t, int rows, int width, bool data_optional = false) {
  if (t.shape.size() != 3 || t.shape[2] != width)
    fail(ErrorCode::ShapeMismatch, entry, ": '", name, "' must be [N, L, ", width, "], got ", shape_str(t.shape));
  int64_t n = checked_numel(entry, name, t.shape, "[N, L, D]");
  if (t.shape[0] != rows)
    fail(ErrorCode::ShapeMismatch, entry, ": '", name, "' has ", t.shape[0], " rows, the sample has ", rows);
  check_values(entry, name, t, n, data_optional);
  return (int)t.shape[1];
}

float checked_float(const char* entry, const char* name, double v) {
  float f = (float)v;
  if (!std::isfinite(f)) fail(ErrorCode::InvalidArgument, entry, ": '", name, "' must be a finite number, got ", v);
  return f;
}

// Exact text of a float for plan keys (hexadecimal: two values share a key only if they are equal).
std::string exact(float v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%a", (double)v);
  return buf;
}

std::string dims_key(const Dims& d) {
  return std::to_string(d.n) + "x" + std::to_string(d.c) + "x" + std::to_string(d.h) + "x" + std::to_string(d.w);
}

void upload_map(Plan& plan, const char* name, const HostTensor& t) {
  const Dims d = plan.input_dims(name);
  auto nhwc = nchw_to_nhwc(t.data.data(), d.n, d.c, d.h, d.w);
  plan.set_input(name, nhwc.data(), nhwc.size());
}

void upload_seq(Plan& plan, const char* name, const HostTensor& t) {
  plan.set_input(name, t.data.data(), t.data.size());
}

// Sinusoidal timestep features of `c` (host, float32 like diffusers), one row per batch entry.
void upload_time_features(Plan& plan, const char* name, float t, const UNetConfig& c) {
  const Dims d = plan.input_dims(name);
  auto f = timestep_features(t, d.c, c.flip_sin_to_cos, c.freq_shift);
  std::vector<float> rows;
  for (int i = 0; i < d.n; ++i) rows.insert(rows.end(), f.begin(), f.end());
  plan.set_input(name, rows.data(), rows.size());
}

enum class Layout { Map, Seq };

HostTensor download(const Plan& plan, const std::string& name, Layout layout) {
  const Dims d = plan.output_dims(name);
  std::vector<float> v = plan.get_output(name);
  HostTensor t;
  if (layout == Layout::Seq) {
    t.shape = {d.n, (int64_t)d.h * d.w, d.c};
    t.data = std::move(v);
  } else if (d.h == 1 && d.w == 1 && name.find("time_embedding") != std::string::npos) {
    t.shape = {d.n, d.c};  // a vector per row
    t.data = std::move(v);
  } else {
    t.shape = {d.n, d.c, d.h, d.w};
    t.data = nhwc_to_nchw(v.data(), d.n, d.c, d.h, d.w);
  }
  return t;
}

// Every plan output that is not one of the entry's results.
Intermediates download_taps(const Plan& plan, const std::set<std::string>& results, Layout layout) {
  Intermediates r;
  for (auto& name : plan.output_names())
    if (!results.count(name)) r[name] = download(plan, name, layout);
  return r;
}

}  // namespace

// Holds the backend for one call (waits for the previous call) and records the call's timings. Deferred
// unloads and plan drops run when it ends.
class Engine::Call {
 public:
  Call(Engine& e, const std::atomic<bool>* cancel, RunStats* stats)
      : e_(e), exec_(e.exec_mu_), cancel_(cancel), stats_(stats), t0_(Clock::now()) {
    if (cancel && cancel->load()) fail(ErrorCode::Cancelled, "cancelled before it started");
    std::lock_guard<std::mutex> lock(e.state_mu_);
    e.busy_ = true;
  }
  ~Call() {
    std::lock_guard<std::mutex> lock(e_.state_mu_);
    e_.busy_ = false;
    for (int id : e_.deferred_unloads_) e_.unload_now(id);
    e_.deferred_unloads_.clear();
    if (e_.deferred_clear_) e_.clear_now();
    e_.deferred_clear_ = false;
  }
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  template <class T>
  const T& model(int id, ModelKind kind, std::unique_ptr<T> Model::*member) {
    auto m = e_.find_model(id, kind);
    held_.push_back(m);
    return *((*m).*member);
  }

  // The cached plan of `key`, or a new one built by `build`.
  Plan& plan(const char* entry, const std::string& key, std::vector<int> models,
             const std::function<std::unique_ptr<Graph>()>& build) {
    {
      std::lock_guard<std::mutex> lock(e_.state_mu_);
      for (auto it = e_.plans_.begin(); it != e_.plans_.end(); ++it)
        if ((*it)->info.key == key) {
          e_.plans_.splice(e_.plans_.begin(), e_.plans_, it);
          cp_ = e_.plans_.front().get();
          reused_ = true;
          break;
        }
    }
    if (!cp_) {
      auto np = std::make_unique<CachedPlan>();
      np->models = std::move(models);
      np->plan = std::make_unique<Plan>(build());
      np->info.entry = entry, np->info.key = key, np->info.cached = true;
      np->info.arena_bytes = np->plan->arena_bytes(), np->info.naive_bytes = np->plan->naive_bytes();
      np->info.ops = np->plan->op_count(), np->info.flops = np->plan->flops();
      std::lock_guard<std::mutex> lock(e_.state_mu_);
      while (!e_.plans_.empty() && e_.plans_.size() >= e_.max_plans_) e_.plans_.pop_back();
      e_.plans_.push_front(std::move(np));
      cp_ = e_.plans_.front().get();
    }
    st_.plan_ms = ms_since(t0_);
    t_upload_ = Clock::now();
    return *cp_->plan;
  }

  void run(Plan& plan) {
    st_.upload_ms = ms_since(t_upload_);
    auto t = Clock::now();
    plan.run(cancel_);
    st_.compute_ms = ms_since(t);
    t_download_ = Clock::now();
  }

  // After the results are downloaded.
  void finish() {
    st_.download_ms = ms_since(t_download_);
    st_.plan_reused = reused_;
    const PlanInfo& p = cp_->info;
    st_.arena_bytes = p.arena_bytes, st_.naive_bytes = p.naive_bytes, st_.ops = p.ops, st_.flops = p.flops;
    if (stats_) *stats_ = st_;
  }

 private:
  Engine& e_;
  std::lock_guard<std::mutex> exec_;
  const std::atomic<bool>* cancel_;
  RunStats* stats_;
  RunStats st_;
  Clock::time_point t0_, t_upload_, t_download_;
  CachedPlan* cp_ = nullptr;
  bool reused_ = false;
  std::vector<std::shared_ptr<Model>> held_;
};

std::shared_ptr<Engine::Model> Engine::find_model(int id, ModelKind kind) const {
  std::lock_guard<std::mutex> lock(state_mu_);
  auto it = models_.find(id);
  if (it == models_.end() || it->second->unloading)
    fail(ErrorCode::InvalidArgument, "no loaded model with id ", id, " (unloaded or disposed?)");
  if (it->second->kind != kind)
    fail(ErrorCode::InvalidArgument, "model ", id, " is a ", model_kind_name(it->second->kind), ", not a ",
         model_kind_name(kind));
  return it->second;
}

// ---- the entries ------------------------------------------------------------------------------------

TextEncodeResult Engine::text_encode(const TextEncodeRequest& r, const std::atomic<bool>* cancel, RunStats* stats) {
  const char* entry = "text_encode";
  const TokenIds& ids = r.input_ids;
  if (ids.batch <= 0 || ids.length <= 0 || ids.batch > kMaxDim || ids.length > kMaxDim ||
      ids.batch * ids.length > kMaxDim)
    fail(ErrorCode::ShapeMismatch, entry, ": input_ids must be [B, L] with B, L >= 1 and at most ", kMaxDim,
         " tokens in all, got [", ids.batch, ", ", ids.length, "]");
  if ((int64_t)ids.ids.size() != ids.batch * ids.length)
    fail(ErrorCode::ShapeMismatch, entry, ": input_ids has ", ids.ids.size(), " values but shape [", ids.batch, ", ",
         ids.length, "]");
  Call call(*this, cancel, stats);
  const ClipTextEncoder& te = call.model(r.model, ModelKind::TextEncoder, &Model::text);
  const ClipTextEncoderConfig& c = te.config;
  if (ids.length > c.max_position_embeddings)
    fail(ErrorCode::ShapeMismatch, entry, ": input_ids has ", ids.length, " tokens; the text encoder takes at most ",
         c.max_position_embeddings);
  std::vector<int32_t> tok(ids.ids.size()), pos(ids.ids.size());
  for (size_t i = 0; i < tok.size(); ++i) {
    int64_t id = ids.ids[i];
    if (id < 0 || id >= c.vocab_size)
      fail(ErrorCode::InvalidArgument, entry, ": token id ", id, " is outside the vocabulary (", c.vocab_size, ")");
    tok[i] = (int32_t)id, pos[i] = (int32_t)(i % ids.length);
  }
  const int B = (int)ids.batch, L = (int)ids.length;
  std::string key = std::string(entry) + "|m" + std::to_string(r.model) + "|" + std::to_string(B) + "x" +
                    std::to_string(L) + "|taps" + std::to_string(r.intermediates);
  Plan& plan =
      call.plan(entry, key, {r.model}, [&] { return build_text_encode(*backend_, te, B, L, r.intermediates); });
  plan.set_ids(names::kInputIds, tok);
  plan.set_ids(names::kPositionIds, pos);
  call.run(plan);
  TextEncodeResult out;
  out.last_hidden_state = download(plan, names::kLastHiddenState, Layout::Seq);
  out.intermediates = download_taps(plan, {names::kLastHiddenState}, Layout::Seq);
  call.finish();
  return out;
}

VaeEncodeResult Engine::vae_encode(const VaeEncodeRequest& r, const std::atomic<bool>* cancel, RunStats* stats) {
  const char* entry = "vae_encode";
  Call call(*this, cancel, stats);
  const Vae& vae = call.model(r.model, ModelKind::Vae, &Model::vae);
  const Dims x = map_dims(entry, "x", r.x, vae.config.in_channels);
  std::string key = std::string(entry) + "|m" + std::to_string(r.model) + "|" + dims_key(x) + "|taps" +
                    std::to_string(r.intermediates);
  Plan& plan = call.plan(entry, key, {r.model}, [&] { return build_vae_encode(*backend_, vae, x, r.intermediates); });
  upload_map(plan, names::kX, r.x);
  call.run(plan);
  VaeEncodeResult out;
  out.moments = download(plan, names::kMoments, Layout::Map);
  out.intermediates = download_taps(plan, {names::kMoments}, Layout::Map);
  call.finish();
  return out;
}

VaeDecodeResult Engine::vae_decode(const VaeDecodeRequest& r, const std::atomic<bool>* cancel, RunStats* stats) {
  const char* entry = "vae_decode";
  Call call(*this, cancel, stats);
  const Vae& vae = call.model(r.model, ModelKind::Vae, &Model::vae);
  const Dims z = map_dims(entry, "z", r.z, vae.config.latent_channels);
  std::string key = std::string(entry) + "|m" + std::to_string(r.model) + "|" + dims_key(z) + "|taps" +
                    std::to_string(r.intermediates);
  Plan& plan = call.plan(entry, key, {r.model}, [&] { return build_vae_decode(*backend_, vae, z, r.intermediates); });
  upload_map(plan, names::kZ, r.z);
  call.run(plan);
  VaeDecodeResult out;
  out.image = download(plan, names::kImage, Layout::Map);
  out.intermediates = download_taps(plan, {names::kImage}, Layout::Map);
  call.finish();
  return out;
}

// The tiled VAE builds and frees one small plan per network segment (vae_tiled.cpp): no cached plan.
static TiledVaeOptions tiled_options(const char* entry, const VaeTiledRequest& r) {
  TiledVaeOptions o;
  if (r.tile) {
    if (*r.tile < 1 || *r.tile > kMaxDim)
      fail(ErrorCode::InvalidArgument, entry, ": 'tile' must be an integer in [1, ", kMaxDim, "], got ", *r.tile);
    o.tile = *r.tile;
  }
  if (r.pad) {
    if (*r.pad < 0 || *r.pad > kMaxDim)
      fail(ErrorCode::InvalidArgument, entry, ": 'pad' must be an integer in [0, ", kMaxDim, "], got ", *r.pad);
    o.pad = *r.pad;
  }
  return o;
}

static void tiled_stats(const TiledVaeStats& ts, RunStats* stats) {
  if (!stats) return;
  *stats = RunStats{};
  stats->plan_ms = ts.plan_ms, stats->upload_ms = ts.host_ms, stats->compute_ms = ts.compute_ms;
  stats->arena_bytes = ts.max_arena_bytes, stats->naive_bytes = ts.max_naive_bytes, stats->ops = ts.ops;
}

VaeEncodeResult Engine::vae_encode_tiled(const VaeTiledRequest& r, const std::atomic<bool>* cancel, RunStats* stats) {
  const char* entry = "vae_encode_tiled";
  TiledVaeOptions o = tiled_options(entry, r);
  Call call(*this, cancel, stats);
  const Vae& vae = call.model(r.model, ModelKind::Vae, &Model::vae);
  map_dims(entry, "x", r.input, vae.config.in_channels);
  TiledVaeStats ts;
  VaeEncodeResult out;
  out.moments =
      TiledVae(*backend_, vae).encode(r.input.shape, r.input.data.data(), r.input.data.size(), o, cancel, &ts);
  tiled_stats(ts, stats);
  return out;
}

VaeDecodeResult Engine::vae_decode_tiled(const VaeTiledRequest& r, const std::atomic<bool>* cancel, RunStats* stats) {
  const char* entry = "vae_decode_tiled";
  TiledVaeOptions o = tiled_options(entry, r);
  Call call(*this, cancel, stats);
  const Vae& vae = call.model(r.model, ModelKind::Vae, &Model::vae);
  map_dims(entry, "z", r.input, vae.config.latent_channels);
  TiledVaeStats ts;
  VaeDecodeResult out;
  out.image = TiledVae(*backend_, vae).decode(r.input.shape, r.input.data.data(), r.input.data.size(), o, cancel, &ts);
  tiled_stats(ts, stats);
  return out;
}

CondEmbeddingResult Engine::cond_embedding(const CondEmbeddingRequest& r, const std::atomic<bool>* cancel,
                                           RunStats* stats) {
  const char* entry = "cond_embedding";
  Call call(*this, cancel, stats);
  const ControlNet& cn = call.model(r.model, ModelKind::ControlNet, &Model::controlnet);
  const Dims image = map_dims(entry, "image", r.image, cn.config.conditioning_channels);
  std::string key = std::string(entry) + "|m" + std::to_string(r.model) + "|" + dims_key(image) + "|taps" +
                    std::to_string(r.intermediates);
  Plan& plan =
      call.plan(entry, key, {r.model}, [&] { return build_cond_embedding(*backend_, cn, image, r.intermediates); });
  upload_map(plan, names::kImage, r.image);
  call.run(plan);
  CondEmbeddingResult out;
  out.cond = download(plan, names::kCond, Layout::Map);
  out.intermediates = download_taps(plan, {names::kCond}, Layout::Map);
  call.finish();
  return out;
}

// ---- the denoising entries --------------------------------------------------------------------------

namespace {

// Validated shapes and scalars of ControlNetInputs (the data of the constants may be absent with
// `reuse_constants`).
struct CheckedInputs {
  DenoiseShape shape;
  float timestep = 0, scale = 1;
};

CheckedInputs check_denoise_inputs(const char* entry, const ControlNetInputs& in, const ControlNetConfig& c,
                                   bool reuse_constants) {
  CheckedInputs r;
  const UNetConfig& t = c.trunk;
  r.shape.sample = map_dims(entry, "sample", in.sample, t.in_channels);
  const int n = r.shape.sample.n;
  r.timestep = checked_float(entry, "timestep", in.timestep);
  r.scale = checked_float(entry, "conditioning_scale", in.conditioning_scale);
  r.shape.ctx_len = seq_len(entry, "ctx_high", in.ctx_high, n, t.cross_attention_dim, reuse_constants);
  if (in.ctx_low) r.shape.low_len = seq_len(entry, "ctx_low", *in.ctx_low, n, t.cross_attention_dim, reuse_constants);
  if (!!in.cond == !!in.image)
    fail(ErrorCode::InvalidArgument, entry, ": give exactly one of 'cond' (the condition embedding) and 'image'");
  r.shape.image_condition = !!in.image;
  r.shape.condition = in.image ? map_dims(entry, "image", *in.image, c.conditioning_channels, reuse_constants)
                               : map_dims(entry, "cond", *in.cond, t.block_out_channels[0], reuse_constants);
  if (r.shape.condition.n != n)
    fail(ErrorCode::ShapeMismatch, entry, ": the condition has ", r.shape.condition.n, " rows, the sample has ", n);
  return r;
}

std::string denoise_key(const char* entry, const std::vector<int>& models, const DenoiseShape& s, float scale,
                        bool taps) {
  std::string k = entry;
  for (int m : models) k += "|m" + std::to_string(m);
  k += "|sample" + dims_key(s.sample) + "|ctx" + std::to_string(s.ctx_len) + "|low" + std::to_string(s.low_len) +
       (s.image_condition ? "|image" : "|cond") + dims_key(s.condition) + "|scale" + exact(scale) + "|taps" +
       std::to_string(taps);
  return k;
}

// Uploads the contexts and the condition (the per-image constants of a denoising loop).
void upload_constants(Plan& plan, const ControlNetInputs& in) {
  upload_seq(plan, names::kCtxHigh, in.ctx_high);
  if (in.ctx_low) upload_seq(plan, names::kCtxLow, *in.ctx_low);
  if (in.image) upload_map(plan, names::kImage, *in.image);
  else upload_map(plan, names::kCond, *in.cond);
}

void check_step_pair(const ControlNet& cn, const UNet& un) {
  const UNetConfig &a = cn.trunk.config, &b = un.config;
  if (a.in_channels != b.in_channels || a.cross_attention_dim != b.cross_attention_dim)
    fail(ErrorCode::ShapeMismatch, "step: the ControlNet (in_channels ", a.in_channels, ", cross_attention_dim ",
         a.cross_attention_dim, ") and the UNet (", b.in_channels, ", ", b.cross_attention_dim,
         ") do not fit together");
}

}  // namespace

ControlNetResult Engine::controlnet_forward(const ControlNetRequest& r, const std::atomic<bool>* cancel,
                                            RunStats* stats) {
  const char* entry = "controlnet_forward";
  Call call(*this, cancel, stats);
  const ControlNet& cn = call.model(r.model, ModelKind::ControlNet, &Model::controlnet);
  const CheckedInputs ci = check_denoise_inputs(entry, r.in, cn.config, false);
  std::string key = denoise_key(entry, {r.model}, ci.shape, ci.scale, r.intermediates);
  Plan& plan = call.plan(entry, key, {r.model},
                         [&] { return build_controlnet(*backend_, cn, ci.shape, ci.scale, r.intermediates); });
  upload_map(plan, names::kSample, r.in.sample);
  upload_time_features(plan, names::kTimeFeatures, ci.timestep, cn.trunk.config);
  upload_constants(plan, r.in);
  call.run(plan);
  ControlNetResult out;
  std::set<std::string> results{names::kMidResidual};
  for (int k = 0; k < cn.num_down_residuals(); ++k) {
    results.insert(names::down_residual(k));
    out.down.push_back(download(plan, names::down_residual(k), Layout::Map));
  }
  out.mid = download(plan, names::kMidResidual, Layout::Map);
  out.intermediates = download_taps(plan, results, Layout::Map);
  call.finish();
  return out;
}

UNetResult Engine::unet_forward(const UNetRequest& r, const std::atomic<bool>* cancel, RunStats* stats) {
  const char* entry = "unet_forward";
  Call call(*this, cancel, stats);
  const UNet& un = call.model(r.model, ModelKind::UNet, &Model::unet);
  const UNetConfig& c = un.config;
  DenoiseShape s;
  s.sample = map_dims(entry, "sample", r.sample, c.in_channels);
  const float t = checked_float(entry, "timestep", r.timestep);
  s.ctx_len = seq_len(entry, "ctx_high", r.ctx_high, s.sample.n, c.cross_attention_dim);
  if (r.ctx_low) s.low_len = seq_len(entry, "ctx_low", *r.ctx_low, s.sample.n, c.cross_attention_dim);
  const std::vector<int> widths = un.residual_channels();
  if (r.down.size() + 1 != widths.size())
    fail(ErrorCode::ShapeMismatch, entry, ": expected ", widths.size() - 1, " down residuals, got ", r.down.size());
  std::vector<Dims> res;
  std::string key = std::string(entry) + "|m" + std::to_string(r.model) + "|sample" + dims_key(s.sample) + "|ctx" +
                    std::to_string(s.ctx_len) + "|low" + std::to_string(s.low_len);
  for (size_t k = 0; k < widths.size(); ++k) {
    const bool mid = k + 1 == widths.size();
    const std::string name = mid ? std::string("mid") : "down[" + std::to_string(k) + "]";
    res.push_back(map_dims(entry, name.c_str(), mid ? r.mid : r.down[k], widths[k]));
    if (res.back().n != s.sample.n)
      fail(ErrorCode::ShapeMismatch, entry, ": '", name, "' has ", res.back().n, " rows, the sample has ", s.sample.n);
    key += "|r" + dims_key(res.back());
  }
  key += "|taps" + std::to_string(r.intermediates);
  Plan& plan = call.plan(entry, key, {r.model}, [&] { return build_unet(*backend_, un, s, res, r.intermediates); });
  upload_map(plan, names::kSample, r.sample);
  upload_time_features(plan, names::kTimeFeatures, t, c);
  upload_seq(plan, names::kCtxHigh, r.ctx_high);
  if (r.ctx_low) upload_seq(plan, names::kCtxLow, *r.ctx_low);
  for (size_t k = 0; k < r.down.size(); ++k) upload_map(plan, names::down_residual_in(k).c_str(), r.down[k]);
  upload_map(plan, names::kMidResidualIn, r.mid);
  call.run(plan);
  UNetResult out;
  out.sample = download(plan, names::kSampleOut, Layout::Map);
  out.intermediates = download_taps(plan, {names::kSampleOut}, Layout::Map);
  call.finish();
  return out;
}

StepResult Engine::step(const StepRequest& r, const std::atomic<bool>* cancel, RunStats* stats) {
  const char* entry = "step";
  Call call(*this, cancel, stats);
  const ControlNet& cn = call.model(r.controlnet, ModelKind::ControlNet, &Model::controlnet);
  const UNet& un = call.model(r.unet, ModelKind::UNet, &Model::unet);
  check_step_pair(cn, un);
  const CheckedInputs ci = check_denoise_inputs(entry, r.in, cn.config, r.reuse_constants);
  std::string key = denoise_key(entry, {r.controlnet, r.unet}, ci.shape, ci.scale, r.intermediates);
  Plan& plan = call.plan(entry, key, {r.controlnet, r.unet},
                         [&] { return build_step(*backend_, cn, un, ci.shape, ci.scale, r.intermediates); });
  upload_map(plan, names::kSample, r.in.sample);
  upload_time_features(plan, names::kTimeFeatures, ci.timestep, cn.trunk.config);
  upload_time_features(plan, names::kTimeFeaturesUNet, ci.timestep, un.config);
  if (!r.reuse_constants) {
    upload_constants(plan, r.in);
  } else {
    // The per-image constants stay on the device across steps: the plan must hold them already.
    for (const char* name : {names::kCtxHigh, names::kCtxLow, names::kImage, names::kCond})
      if (plan.has_input_slot(name) && !plan.has_input(name))
        fail(ErrorCode::InvalidArgument, entry, ": reuse_constants, but '", name,
             "' was never sent for these shapes (send the constants in the first step)");
  }
  call.run(plan);
  StepResult out;
  out.noise_pred = download(plan, names::kNoisePred, Layout::Map);
  std::set<std::string> results{names::kNoisePred};
  if (r.intermediates) {
    const std::string p = names::kStepResidualPrefix;
    for (int k = 0; k < cn.num_down_residuals(); ++k) {
      results.insert(p + names::down_residual(k));
      out.residuals.push_back(download(plan, p + names::down_residual(k), Layout::Map));
    }
    results.insert(p + names::kMidResidual);
    out.residuals.push_back(download(plan, p + names::kMidResidual, Layout::Map));
  }
  out.intermediates = download_taps(plan, results, Layout::Map);
  call.finish();
  return out;
}

PlanInfo Engine::plan_step(const StepShape& s) {
  const char* entry = "step";
  auto dim = [&](const char* what, int v, int lo, int hi) {
    if (v < lo || v > hi)
      fail(ErrorCode::InvalidArgument, "plan_step: '", what, "' must be in [", lo, ", ", hi, "], got ", v);
    return v;
  };
  dim("batch", s.batch, 1, 1 << 16);
  dim("height", s.height, 1, 1 << 16);
  dim("width", s.width, 1, 1 << 16);
  dim("context_length", s.context_length, 1, 1 << 16);
  dim("low_context_length", s.low_context_length, 0, 1 << 16);
  const float scale = checked_float("plan_step", "conditioning_scale", s.conditioning_scale);
  Call call(*this, nullptr, nullptr);
  const ControlNet& cn = call.model(s.controlnet, ModelKind::ControlNet, &Model::controlnet);
  const UNet& un = call.model(s.unet, ModelKind::UNet, &Model::unet);
  check_step_pair(cn, un);
  DenoiseShape ds;
  ds.sample = Dims{s.batch, s.height, s.width, cn.trunk.config.in_channels};
  ds.ctx_len = s.context_length, ds.low_len = s.low_context_length, ds.image_condition = s.image_condition;
  ds.condition = s.image_condition ? Dims{s.batch, 8 * s.height, 8 * s.width, cn.config.conditioning_channels}
                                   : Dims{s.batch, s.height, s.width, cn.trunk.config.block_out_channels[0]};
  std::string key = denoise_key(entry, {s.controlnet, s.unet}, ds, scale, s.intermediates);
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    for (auto& p : plans_)
      if (p->info.key == key) return p->info;
  }
  std::unique_ptr<Graph> g = build_step(*backend_, cn, un, ds, scale, s.intermediates);
  PlanSize size = plan_size(*g);
  PlanInfo info;
  info.entry = entry, info.key = key, info.cached = false;
  info.arena_bytes = size.arena_bytes, info.naive_bytes = size.naive_bytes, info.ops = size.ops,
  info.flops = size.flops;
  return info;
}

}  // namespace xpsr
