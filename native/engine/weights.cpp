// WeightLoader implementation: lookup across files, shape checks, problem collection, synthesis.
#include "weights.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <set>
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

// 'key', or 'key' (original name 'orig') when the files are renaming views (single-file checkpoints).
std::string WeightLoader::key_name(const std::string& key) const {
  for (auto& f : files_) {
    std::string o = f->original_name(key);
    if (!o.empty() && o != key) return "'" + key + "' (in the file: '" + o + "')";
  }
  return "'" + key + "'";
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
    missing_.push_back("missing tensor " + key_name(key) + " (expected " + shape_str(shape) + ")");
    return std::vector<float>((size_t)n);
  }
  if (!shape_compatible(shape, t->shape)) {
    mismatched_.push_back("tensor " + key_name(key) + " in " + file->path() + ": expected " + shape_str(shape) +
                          ", found " + shape_str(t->shape));
    return std::vector<float>((size_t)n);
  }
  if (!dtype_is_float(t->dtype)) {
    mismatched_.push_back("tensor " + key_name(key) + " in " + file->path() + ": expected a float tensor, found " +
                          dtype_name(t->dtype));
    return std::vector<float>((size_t)n);
  }
  // One tensor at a time: converted (f16/bf16 -> f32 when needed), then its file pages are let go.
  std::vector<float> v = to_f32(*t);
  file->release(*t);
  ++tensors_checked_;
  size_t bad = 0;
  for (float x : v) bad += !std::isfinite(x);
  if (bad)
    nonfinite_.push_back("tensor " + key_name(key) + " in " + file->path() + ": " + std::to_string(bad) + " of " +
                         std::to_string(v.size()) + " values are NaN or Inf");
  return v;
}

std::shared_ptr<Weight> WeightLoader::upload(const std::string& name, WeightKind kind,
                                             const std::vector<int64_t>& shape, const std::vector<float>& data) {
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

// Shards listed by a sharded checkpoint's index file ("weight_map": key -> shard file).
static std::vector<std::string> read_shard_index(const std::string& dir, const std::string& idx) {
  Json j = Json::parse_file(idx);
  std::vector<std::string> shards;
  if (const Json* wm = j.find("weight_map"))
    for (auto& kv : wm->as_object()) {
      if (!kv.second.is_string())
        fail(ErrorCode::WeightsInvalid, idx, ": weight_map entry '", kv.first, "' is not a file name");
      std::string s = dir + "/" + kv.second.as_string();
      if (std::find(shards.begin(), shards.end(), s) == shards.end()) shards.push_back(s);
    }
  if (shards.empty()) fail(ErrorCode::WeightsInvalid, idx, ": no weight_map entries");
  return shards;
}

// Variant names (the X of <stem>.X.safetensors, <stem>.safetensors.index.X.json) present in `dir`.
static std::set<std::string> variants_in(const std::string& dir, const std::vector<std::string>& stems) {
  std::set<std::string> out;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir, ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec)) {
    const std::string f = it->path().filename().string();
    for (auto& stem : stems)
      for (const std::string ext : {".safetensors", ".bin"}) {
        std::string mid;
        if (f.size() > stem.size() + ext.size() + 1 && f.compare(0, stem.size() + 1, stem + ".") == 0 &&
            f.compare(f.size() - ext.size(), ext.size(), ext) == 0)
          mid = f.substr(stem.size() + 1, f.size() - stem.size() - 1 - ext.size());
        const std::string ip = stem + ext + ".index.";
        if (f.size() > ip.size() + 5 && f.compare(0, ip.size(), ip) == 0 && f.compare(f.size() - 5, 5, ".json") == 0)
          mid = f.substr(ip.size(), f.size() - ip.size() - 5);
        bool plain = !mid.empty() && mid.find('.') == std::string::npos;
        for (char c : mid) plain = plain && (std::isalnum((unsigned char)c) || c == '_' || c == '-');
        if (plain) out.insert(mid);
      }
  }
  return out;
}

std::vector<std::string> find_weight_files(const std::string& dir, const std::vector<std::string>& stems,
                                           const std::string& variant) {
  if (is_file(dir)) return {dir};  // a file given directly
  if (!is_dir(dir)) fail(ErrorCode::WeightsMissing, "weights folder not found: ", dir);
  std::vector<std::string> tried;
  // Names of variant `v` ("" = none), as diffusers / transformers write them.
  auto search = [&](const std::string& v, std::vector<std::string>* found) {
    for (const char* ext : {".safetensors", ".bin"})
      for (auto& stem : stems) {
        const std::string file = v.empty() ? stem + ext : stem + "." + v + ext;
        tried.push_back(file);
        if (is_file(dir + "/" + file)) {
          *found = {dir + "/" + file};
          return true;
        }
        for (const std::string idx :
             {file + ".index.json", v.empty() ? std::string() : stem + ext + ".index." + v + ".json"})
          if (!idx.empty() && is_file(dir + "/" + idx)) {
            *found = read_shard_index(dir, dir + "/" + idx);
            return true;
          }
      }
    return false;
  };
  std::vector<std::string> found;
  if (!variant.empty() && search(variant, &found)) return found;
  if (search("", &found)) return found;
  // No plain file: a folder holding only one variant (e.g. model.fp16.safetensors) uses it.
  std::set<std::string> vs = variants_in(dir, stems);
  if (vs.size() == 1 && search(*vs.begin(), &found)) return found;
  std::ostringstream o;
  for (size_t i = 0; i < tried.size(); ++i) o << (i ? ", " : "") << tried[i];
  if (vs.size() > 1) {
    std::string l;
    for (auto& v : vs) l += (l.empty() ? "" : ", ") + v;
    fail(ErrorCode::WeightsMissing, "no weights file without a variant in ", dir, " and several variants (", l,
         "): choose one with the variant option (--variant)");
  }
  fail(ErrorCode::WeightsMissing, "no weights file in ", dir, " (looked for ", o.str(), ")");
}

}  // namespace xpsr
