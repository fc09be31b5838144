// WeightLoader: fetches named tensors for a model from its checkpoint file(s) (or synthesises them for
// benchmarks), checks each shape, uploads to the backend, and reports every problem at once: missing
// keys, wrong shapes and unexpected keys go into ONE error naming the file, the key, the expected and
// the found shape. Models ask for weights by their exact checkpoint key (the module tree is the
// checkpoint), so the name of a missing weight is the path of the module that wanted it.
#pragma once
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "backend.h"
#include "io/tensor_file.h"

namespace xpsr {

// How a synthetic weight is initialised (benchmarks only; real weights come from files).
enum class Init { FanIn, Zero, One, Embedding };

class WeightLoader {
 public:
  // `what` names the model in messages ("UNet"); `files` are its checkpoint files (all searched).
  WeightLoader(Backend& be, std::string what, std::vector<std::unique_ptr<TensorFile>> files);
  // Random, well-scaled weights of the requested shapes (seeded; for benchmarks).
  WeightLoader(Backend& be, std::string what, uint64_t seed);
  ~WeightLoader();

  bool synthetic() const { return synthetic_; }
  // Check-only mode: every tensor is read, shape-checked and scanned for NaN/Inf, nothing is uploaded.
  void set_check_only(bool on) { check_only_ = on; }
  size_t tensors_checked() const { return tensors_checked_; }
  bool has(const std::string& key) const;
  // Host f32 data of `key` with the expected shape (a [N,K,1,1] tensor is accepted for [N,K], so 1x1
  // convs and linears are interchangeable). Problems are recorded; zeros are returned in their place.
  std::vector<float> fetch(const std::string& key, const std::vector<int64_t>& shape, Init init);
  // fetch + upload.
  std::shared_ptr<Weight> get(const std::string& key, const std::vector<int64_t>& shape, WeightKind kind, Init init);
  std::shared_ptr<Weight> upload(const std::string& name, WeightKind kind, const std::vector<int64_t>& shape,
                                 const std::vector<float>& data);
  // Keys with this prefix are accepted but not used (training-only heads, buffers).
  void ignore_prefix(const std::string& prefix) { ignored_.push_back(prefix); }
  void ignore_suffix(const std::string& suffix) { ignored_suffix_.push_back(suffix); }
  void mark_used(const std::string& key) { used_.insert(key); }
  // Throws one Error listing every recorded problem and every unexpected key; no-op when all is well.
  void finish();
  size_t uploaded_bytes() const { return uploaded_bytes_; }

 private:
  const TensorView* find(const std::string& key, const TensorFile** file) const;
  std::string key_name(const std::string& key) const;
  Backend& be_;
  std::string what_;
  std::vector<std::unique_ptr<TensorFile>> files_;
  bool synthetic_ = false, check_only_ = false;
  size_t tensors_checked_ = 0;
  uint64_t rng_;
  std::set<std::string> used_;
  std::vector<std::string> ignored_, ignored_suffix_;
  std::vector<std::string> missing_, mismatched_, nonfinite_;
  size_t uploaded_bytes_ = 0;
};

// Lists the weight files of a diffusers component folder: safetensors before .bin; with `variant` (e.g.
// "fp16") <stem>.fp16.safetensors before <stem>.safetensors; without, <stem>.safetensors, else the one
// variant the folder holds (a folder with only model.fp16.safetensors just works). Sharded checkpoints
// (<file>.index.json, <stem>.safetensors.index.<variant>.json) are followed. A path to a file returns it.
// Throws WeightsMissing naming the folder and the names tried.
std::vector<std::string> find_weight_files(const std::string& dir, const std::vector<std::string>& stems,
                                           const std::string& variant = "");

}  // namespace xpsr
