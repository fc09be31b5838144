// Engine: the C++ surface the N-API binding (and the native tests/benchmarks) call. It owns a backend,
// the loaded networks, and a cache of execution plans keyed by (entry, models, input shapes, params):
// a plan is built the first time a shape is seen and reused (same buffers, same CUDA graph) after.
// Tensors cross this boundary in PyTorch layout: NCHW feature maps, [B, L, D] token sequences, [N, T]
// vectors, int64 token ids. No N-API here.
#pragma once
#include <atomic>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend.h"
#include "graph.h"

namespace xpsr {

enum class ModelKind { TextEncoder, VAE, UNet, ControlNet };
ModelKind parse_model_kind(const std::string& s);  // "text_encoder" | "vae" | "unet" | "controlnet"

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

struct TensorIn {
  std::vector<int64_t> shape;
  std::vector<float> f32;    // float inputs
  std::vector<int64_t> i64;  // token ids
};
using TensorMap = std::map<std::string, TensorIn>;

struct TensorOut {
  std::vector<int64_t> shape;
  std::vector<float> data;
};
using OutputMap = std::map<std::string, TensorOut>;

struct RunRequest {
  std::string entry;         // see engine.cpp: "encode", "decode", "cond_embedding", "forward", "step"
  std::vector<int> models;   // one model, or {controlnet, unet} for "step"
  TensorMap inputs;
  std::map<std::string, double> params;  // e.g. timestep, conditioning_scale
  bool intermediates = false;            // also return the parity taps ("inter.*", "hidden_states.*")
};

struct RunStats {
  double plan_ms = 0, upload_ms = 0, compute_ms = 0, download_ms = 0;
  bool plan_reused = false;
  size_t arena_bytes = 0, naive_bytes = 0, ops = 0;
  double flops = 0;
};

class Engine {
 public:
  explicit Engine(std::unique_ptr<Backend> backend, size_t max_plans = 12);
  ~Engine();
  Backend& backend() { return *backend_; }

  ModelInfo load(ModelKind kind, const LoadOptions& opts);
  void unload(int id);
  std::vector<ModelInfo> models() const;

  // Thread-safe with respect to other run() calls (they are serialised). `cancel` is polled between ops.
  OutputMap run(const RunRequest& req, const std::atomic<bool>* cancel = nullptr, RunStats* stats = nullptr);
  void clear_plans();

 private:
  struct Model;
  struct CachedPlan;
  Model& model(int id, ModelKind kind);
  std::unique_ptr<Graph> build(const RunRequest& req, std::vector<std::pair<std::string, bool>>& out_layout);

  std::unique_ptr<Backend> backend_;
  size_t max_plans_;
  std::map<int, std::unique_ptr<Model>> models_;
  int next_id_ = 1;
  std::list<std::unique_ptr<CachedPlan>> plans_;  // most recently used first
  mutable std::mutex mu_;
};

}  // namespace xpsr
