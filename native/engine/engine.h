// Engine: the C++ surface the N-API binding (and the native tests and benchmark) call. It owns a backend,
// the loaded networks and a cache of execution plans. There is one typed method per entry (below); each
// builds its graph (entries.h) once per (entry, models, exact input shapes, exact parameter values) and
// reuses the plan (same buffers, same CUDA graph) after.
// Tensors cross this boundary in PyTorch layout: NCHW feature maps, [B, L, D] token sequences, [N, C]
// vectors, int64 token ids. No N-API here.
//
// Threads: calls that run on the backend (the entries, plan_step) are serialised; load() may run beside
// them. unload() and clear_plans() never wait for a running call: while one runs they are deferred to its
// end (the model is refused to new calls at once).
#pragma once
#include <atomic>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "backend.h"
#include "graph.h"

namespace xpsr {

enum class ModelKind { TextEncoder, Vae, UNet, ControlNet };
ModelKind parse_model_kind(const std::string& s);  // "text_encoder" | "vae" | "unet" | "controlnet"
const char* model_kind_name(ModelKind k);

struct LoadOptions {
  std::string path;         // component folder, weights file or SD single-file checkpoint (engine/sources.h)
  std::string config_json;  // overrides <path>/config.json (or a single file's derived config) when non-empty
  std::string variant;      // e.g. "fp16": prefer <stem>.fp16.safetensors in a folder (sources.h)
  bool synthetic = false;   // random weights of the config's shapes (benchmarks); path may be empty
  uint64_t seed = 1;
  bool vae_encoder = true, vae_decoder = true;
  bool check_only = false;  // read and validate every tensor, upload nothing, keep no model (id -1)
};

struct ModelInfo {
  int id = -1;
  std::string kind, path, config_json, description;
  size_t weight_bytes = 0;  // backend memory used by the uploaded weights
  int64_t parameters = 0;
  size_t tensors = 0;  // tensors read from the files
};

// Token ids [batch, length] (row-major).
struct TokenIds {
  int64_t batch = 0, length = 0;
  std::vector<int64_t> ids;
};

// Parity taps: intermediate tensors named as the reference implementation's modules ("inter.*",
// "hidden_states.*"). Filled only when a request asks for `intermediates`.
using Intermediates = std::map<std::string, HostTensor>;

struct RunStats {
  double plan_ms = 0, upload_ms = 0, compute_ms = 0, download_ms = 0;
  bool plan_reused = false;
  size_t arena_bytes = 0, naive_bytes = 0, ops = 0;
  double flops = 0;
};

// A cached (or sized) plan.
struct PlanInfo {
  std::string entry, key;
  size_t arena_bytes = 0, naive_bytes = 0, ops = 0;
  double flops = 0;
  bool cached = false;  // plan_step: the plan already exists in the cache (and these are its numbers)
};

// The default ControlNet residual scale (the official value), for every request that has one.
constexpr double kDefaultConditioningScale = 1.0;

// ---- requests and results, one pair per entry --------------------------------------------------------

struct TextEncodeRequest {
  int model = -1;
  TokenIds input_ids;  // [B, L], L <= max_position_embeddings
  bool intermediates = false;
};
struct TextEncodeResult {
  HostTensor last_hidden_state;  // [B, L, D]
  Intermediates intermediates;
};

struct VaeEncodeRequest {
  int model = -1;
  HostTensor x;  // [N, 3, H, W] in [-1, 1]
  bool intermediates = false;
};
struct VaeEncodeResult {
  HostTensor moments;  // [N, 2*latent, H/8, W/8]: mean | logvar (before clamping)
  Intermediates intermediates;
};

struct VaeDecodeRequest {
  int model = -1;
  HostTensor z;  // [N, latent, h, w] (latents / scaling factor)
  bool intermediates = false;
};
struct VaeDecodeResult {
  HostTensor image;  // [N, 3, 8h, 8w] in about [-1, 1]
  Intermediates intermediates;
};

// Tiled VAE (models/vae_tiled.h): `input` is x (encode) or z (decode); unset tile/pad take the official
// defaults (vae_tiled.cpp).
struct VaeTiledRequest {
  int model = -1;
  HostTensor input;
  std::optional<int> tile, pad;
};

struct CondEmbeddingRequest {
  int model = -1;
  HostTensor image;  // [N, 3, 8h, 8w] in [0, 1]
  bool intermediates = false;
};
struct CondEmbeddingResult {
  HostTensor cond;  // [N, C0, h, w]
  Intermediates intermediates;
};

// What the ControlNet reads, in the ControlNet entry and in the step. The batch N is any number of rows
// (classifier-free guidance: 2 per image); every tensor has N rows.
struct ControlNetInputs {
  HostTensor sample;  // [N, 4, h, w]
  double timestep = 0;
  HostTensor ctx_high;                // [N, L, D]
  std::optional<HostTensor> ctx_low;  // [N, L', D]; absent: the SFA bypass
  std::optional<HostTensor> cond;     // the condition embedding [N, C0, h, w] (cond_embedding), or
  std::optional<HostTensor> image;    // the condition image [N, 3, 8h, 8w] in [0, 1]: exactly one of the two
  double conditioning_scale = kDefaultConditioningScale;
};

struct ControlNetRequest {
  int model = -1;
  ControlNetInputs in;
  bool intermediates = false;
};
struct ControlNetResult {
  std::vector<HostTensor> down;  // residuals in skip order, already times conditioning_scale
  HostTensor mid;
  Intermediates intermediates;
};

struct UNetRequest {
  int model = -1;
  HostTensor sample;  // [N, 4, h, w]
  double timestep = 0;
  HostTensor ctx_high;
  std::optional<HostTensor> ctx_low;
  std::vector<HostTensor> down;  // the ControlNet residuals (skip order) and
  HostTensor mid;                // the mid residual
  bool intermediates = false;
};
struct UNetResult {
  HostTensor sample;  // ε prediction [N, 4, h, w]
  Intermediates intermediates;
};

// One denoising network evaluation: ControlNet then UNet on the same rows, one plan.
struct StepRequest {
  int controlnet = -1, unet = -1;
  ControlNetInputs in;
  // The contexts and the condition are those of the previous step call with the same shapes: only their
  // shapes are read (data may be empty); the plan still holds their values on the device.
  bool reuse_constants = false;
  bool intermediates = false;  // also the ControlNet residuals and the ControlNet's taps
};
struct StepResult {
  HostTensor noise_pred;              // [N, 4, h, w]
  std::vector<HostTensor> residuals;  // with intermediates: the ControlNet residuals (down..., mid last)
  Intermediates intermediates;
};

// The shapes of a step, for sizing its plan without running it (plan_step).
struct StepShape {
  int controlnet = -1, unet = -1;
  int batch = 0, height = 0, width = 0;  // rows (2 per image with CFG) and the latent size
  int context_length = 77;               // tokens of ctx_high
  int low_context_length = 77;           // tokens of ctx_low; 0: no low-level context (SFA bypass)
  bool image_condition = false;          // the condition is given as the image (else as the embedding)
  double conditioning_scale = kDefaultConditioningScale;
  bool intermediates = false;
};

class Engine {
 public:
  explicit Engine(std::unique_ptr<Backend> backend, size_t max_plans = 12);
  ~Engine();
  Backend& backend() { return *backend_; }

  ModelInfo load(ModelKind kind, const LoadOptions& opts);
  // Frees a model and the plans that use it; deferred to the end of a running call (see above).
  void unload(int id);
  // Drops every cached plan (their activation memory); deferred to the end of a running call.
  void clear_plans();
  std::vector<PlanInfo> plans() const;  // most recently used first

  // The entries. `cancel` is polled between ops (and tiles); `stats` receives the call's timings and sizes.
  TextEncodeResult text_encode(const TextEncodeRequest& req, const std::atomic<bool>* cancel = nullptr,
                               RunStats* stats = nullptr);
  VaeEncodeResult vae_encode(const VaeEncodeRequest& req, const std::atomic<bool>* cancel = nullptr,
                             RunStats* stats = nullptr);
  VaeDecodeResult vae_decode(const VaeDecodeRequest& req, const std::atomic<bool>* cancel = nullptr,
                             RunStats* stats = nullptr);
  // Tile by tile with bounded device memory; the same function as vae_encode / vae_decode.
  VaeEncodeResult vae_encode_tiled(const VaeTiledRequest& req, const std::atomic<bool>* cancel = nullptr,
                                   RunStats* stats = nullptr);
  VaeDecodeResult vae_decode_tiled(const VaeTiledRequest& req, const std::atomic<bool>* cancel = nullptr,
                                   RunStats* stats = nullptr);
  CondEmbeddingResult cond_embedding(const CondEmbeddingRequest& req, const std::atomic<bool>* cancel = nullptr,
                                     RunStats* stats = nullptr);
  ControlNetResult controlnet_forward(const ControlNetRequest& req, const std::atomic<bool>* cancel = nullptr,
                                      RunStats* stats = nullptr);
  UNetResult unet_forward(const UNetRequest& req, const std::atomic<bool>* cancel = nullptr, RunStats* stats = nullptr);
  StepResult step(const StepRequest& req, const std::atomic<bool>* cancel = nullptr, RunStats* stats = nullptr);

  // Builds and sizes the plan of a step of these shapes without allocating or running anything (the
  // numbers of the cached plan when it exists).
  PlanInfo plan_step(const StepShape& shape);

 private:
  struct Model;
  struct CachedPlan;
  class Call;
  std::shared_ptr<Model> find_model(int id, ModelKind kind) const;
  void unload_now(int id);  // state_mu_ held, no call running
  void clear_now();         // state_mu_ held, no call running

  std::unique_ptr<Backend> backend_;
  size_t max_plans_;
  std::map<int, std::shared_ptr<Model>> models_;
  int next_id_ = 1;
  std::list<std::unique_ptr<CachedPlan>> plans_;  // most recently used first
  // state_mu_ guards models_, plans_ and the deferred work below and is held briefly; exec_mu_ is held for
  // a whole call on the backend.
  mutable std::mutex state_mu_;
  std::mutex exec_mu_;
  bool busy_ = false;  // a call is running (state_mu_)
  std::vector<int> deferred_unloads_;
  bool deferred_clear_ = false;
};

}  // namespace xpsr
