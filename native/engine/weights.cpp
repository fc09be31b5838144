// WeightLoader implementation: lookup across files, shape checks, problem collection, synthesis.
#include "weights.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "json.h"

namespace xpsr {

WeightLoader::WeightLoader(Backend& be, std::string what, std::vector<std::unique_ptr<TensorFile>> files)
    : be_(be), what_(std::move(what)), files_(std::move(files)), rng_(0) {}

WeightLoader::WeightLoader(Backend& be, std::string what, uint64_t seed)
    : be_(be), what_(std::move(what)), synthetic_(true), rng_(seed * 0x9E3779B97F4A7C15ull + 1) {}

WeightLoader::~WeightLoader() = default;

const TensorView* WeightLoader::find(const std::string& key, const TensorFile** file) const {
  for (auto& f : files_) {
    if (auto* t = f->find(key)) {
      if (file) *file = f.get();
      return t;
    }
  }
  return nullptr;
}

bool WeightLoader::has(const std::string& key) const { return synthetic_ ? false : find(key, nullptr) != nullptr; }

static int64_t numel_of(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

// A [N, K] request is satisfied by [N, K] or [N, K, 1, 1] (1x1 conv stored for a linear, or back).
static bool shape_compatible(const std::vector<int64_t>& want, const std::vector<int64_t>& have) {
  if (want == have) return true;
  auto strip = [](std::vector<int64_t> s) {
    while (s.size() > 2 && s.back() == 1) s.pop_back();
    return s;
  };
  return strip(want) == strip(have);
}

std::vector<float> WeightLoader::fetch(const std::string& key, const std::vector<int64_t>& shape, Init init) {
  const int64_t n = numel_of(shape);
  used_.insert(key);
  if (synthetic_) {
    std::vector<float> v((size_t)n);
    if (init == Init::Zero) return v;
    if (init == Init::One) {
      std::fill(v.begin(), v.end(), 1.f);
      return v;
    }
    int64_t fan_in = shape.size() >= 2 ? n / shape[0] : 1;
    float scale = init == Init::Embedding ? 0.02f : 1.f / std::sqrt((float)std::max<int64_t>(1, fan_in));
    // xorshift64* -> uniform in [-sqrt3, sqrt3) (unit variance): cheap and good enough for timing runs.
    uint64_t s = rng_;
    for (auto& x : v) {
      s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
      uint64_t r = s * 0x2545F4914F6CDD1Dull;
      x = ((float)(r >> 40) / 16777216.f * 2.f - 1.f) * 1.7320508f * scale;
    }
    rng_ = s;
    return v;
  }
  const TensorFile* file = nullptr;
  const TensorView* t = find(key, &file);
  if (!t) {
    missing_.push_back("missing tensor '" + key + "' (expected " + shape_str(shape) + ")");
    return std::vector<float>((size_t)n);
  }
  if (!shape_compatible(shape, t->shape)) {
    mismatched_.push_back("tensor '" + key + "' in " + file->path() + ": expected " + shape_str(shape) + ", found " +
                          shape_str(t->shape));
    return std::vector<float>((size_t)n);
  }
  if (!dtype_is_float(t->dtype)) {
    mismatched_.push_back("tensor '" + key + "' in " + file->path() + ": expected a float tensor, found " +
                          dtype_name(t->dtype));
    return std::vector<float>((size_t)n);
  }
  std::vector<float> v = to_f32(*t);
  ++tensors_checked_;
  size_t bad = 0;
  for (float x : v) bad += !std::isfinite(x);
  if (bad)
    nonfinite_.push_back("tensor '" + key + "' in " + file->path() + ": " + std::to_string(bad) + " of " +
                         std::to_string(v.size()) + " values are NaN or Inf");
  return v;
}

std::shared_ptr<Weight> WeightLoader::upload(const std::string& name, WeightKind kind, const std::vector<int64_t>& shape,
                                             const std::vector<float>& data) {
  if (check_only_ || !missing_.empty() || !mismatched_.empty() || !nonfinite_.empty()) {
    // This model will fail in finish(); do not spend memory on it. A placeholder keeps shapes for building.
    auto w = std::make_shared<Weight>();
    w->kind = kind, w->shape = shape, w->name = name;
    return w;
  }
  uploaded_bytes_ += data.size() * sizeof(float);
  return be_.upload(name, kind, shape, data.data());
}

std::shared_ptr<Weight> WeightLoader::get(const std::string& key, const std::vector<int64_t>& shape, WeightKind kind,
                                          Init init) {
  auto data = fetch(key, shape, init);
  return upload(key, kind, shape, data);
}

void WeightLoader::finish() {
  std::vector<std::string> unexpected;
  if (!synthetic_) {
    for (auto& f : files_)
      for (auto& name : f->names()) {
        if (used_.count(name)) continue;
        bool ign = false;
        for (auto& p : ignored_) ign = ign || name.compare(0, p.size(), p) == 0;
        for (auto& s : ignored_suffix_)
          ign = ign || (name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0);
        if (!ign) unexpected.push_back("unexpected tensor '" + name + "' " + shape_str(f->find(name)->shape));
      }
  }
  size_t total = missing_.size() + mismatched_.size() + nonfinite_.size() + unexpected.size();
  if (!total) return;
  std::ostringstream o;
  std::string where = files_.empty() ? what_ : files_[0]->path();
  o << where << ": " << total << " problem" << (total > 1 ? "s" : "") << " loading the " << what_ << " weights";
  size_t shown = 0;
  for (auto* list : {&mismatched_, &missing_, &nonfinite_, &unexpected})
    for (auto& m : *list)
      if (shown++ < 24) o << "\n  " << m;
  if (total > 24) o << "\n  ... and " << (total - 24) << " more";
  ErrorCode code = !mismatched_.empty() ? ErrorCode::ShapeMismatch
                   : !missing_.empty()  ? ErrorCode::WeightsMissing
                                        : ErrorCode::WeightsInvalid;  // NaN/Inf values or unexpected keys
  throw Error(code, o.str());
}

static bool is_file(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
static bool is_dir(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> find_weight_files(const std::string& dir, const std::vector<std::string>& stems) {
  if (is_file(dir)) return {dir};  // a file given directly
  if (!is_dir(dir)) fail(ErrorCode::WeightsMissing, "weights folder not found: ", dir);
  std::vector<std::string> tried;
  for (const char* ext : {".safetensors", ".bin"}) {
    for (auto& stem : stems) {
      std::string p = dir + "/" + stem + ext;
      tried.push_back(stem + ext);
      if (is_file(p)) return {p};
      // Sharded checkpoints: <stem><ext>.index.json lists the shard files in "weight_map".
      std::string idx = p + ".index.json";
      if (is_file(idx)) {
        Json j = Json::parse_file(idx);
        std::vector<std::string> shards;
        if (const Json* wm = j.find("weight_map"))
          for (auto& kv : wm->as_object()) {
            std::string s = dir + "/" + kv.second.as_string();
            if (std::find(shards.begin(), shards.end(), s) == shards.end()) shards.push_back(s);
          }
        if (shards.empty()) fail(ErrorCode::WeightsInvalid, idx, ": no weight_map entries");
        return shards;
      }
    }
  }
  std::ostringstream o;
  for (size_t i = 0; i < tried.size(); ++i) o << (i ? ", " : "") << tried[i];
  fail(ErrorCode::WeightsMissing, "no weights file in ", dir, " (looked for ", o.str(), ")");
}

}  // namespace xpsr
