// Shared pieces of the weight readers (native/engine/io). Not part of the public interface.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "mmap_file.h"
#include "tensor_file.h"

namespace xpsr {

// A TensorFile whose views point into a MappedFile it keeps alive.
class BasicTensorFile : public TensorFile {
 public:
  explicit BasicTensorFile(std::shared_ptr<const MappedFile> file) : file_(std::move(file)) {}
  const std::string& path() const override { return file_->path(); }
  const std::vector<std::string>& names() const override { return names_; }
  const TensorView* find(const std::string& name) const override {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &views_[it->second];
  }
  const std::map<std::string, std::string>& metadata() const override { return metadata_; }
  void release(const TensorView& t) const override { file_->release_pages(t.data, t.nbytes); }

  // Returns false if the name is already present.
  bool add(TensorView v) {
    if (!index_.emplace(v.name, views_.size()).second) return false;
    names_.push_back(v.name);
    views_.push_back(std::move(v));
    return true;
  }
  std::map<std::string, std::string>& mutable_metadata() { return metadata_; }
  const MappedFile& file() const { return *file_; }

 private:
  std::shared_ptr<const MappedFile> file_;
  std::vector<std::string> names_;
  std::vector<TensorView> views_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Format readers over an already opened file (also used by tests on in-memory bytes).
std::unique_ptr<TensorFile> open_safetensors(std::shared_ptr<const MappedFile> file);
std::unique_ptr<TensorFile> open_torch_zip(std::shared_ptr<const MappedFile> file);
// Content sniffing + dispatch (what TensorFile::open does after mapping the file).
std::unique_ptr<TensorFile> open_tensor_file(std::shared_ptr<const MappedFile> file);

// Parses a safetensors dtype string ("F32", "BF16", "BOOL", ...); false if unknown.
bool parse_safetensors_dtype(const std::string& s, DType* out);

// *out = a * b; false on overflow.
inline bool checked_mul_u64(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > UINT64_MAX / a) return false;
  *out = a * b;
  return true;
}

}  // namespace xpsr
