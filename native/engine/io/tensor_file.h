// Reading weight files without trusting them. One interface, two formats:
//  * safetensors (memory-mapped; header length bounded, JSON parsed with limits, offsets inside the
//    file, dtype x shape == byte range, no overlaps, no duplicate names);
//  * PyTorch `.bin` / `.pt` state dicts (zip archive + pickle), read with a restricted pickle VM that
//    knows only the opcodes state dicts use and only the globals torch uses for tensors
//    (torch._utils._rebuild_tensor_v2, torch.*Storage, collections.OrderedDict). Anything else is
//    refused; nothing is ever executed.
// Every problem throws xpsr::Error naming the file (and key) — never crashes, never reads out of bounds.
// Tests: native/engine/io/*_test.cpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../../common/dtype.h"
#include "../../common/error.h"

namespace xpsr {

// A tensor inside an open file. `data` points into the mapping (or an owned buffer) and stays valid
// while the TensorFile lives. Data is little-endian, C-contiguous.
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

class TensorFile {
 public:
  virtual ~TensorFile() = default;
  // Opens by content (safetensors header vs zip magic), not by extension.
  static std::unique_ptr<TensorFile> open(const std::string& path);

  virtual const std::string& path() const = 0;
  virtual const std::vector<std::string>& names() const = 0;          // in file order
  virtual const TensorView* find(const std::string& name) const = 0;  // nullptr if absent
  // Free-form metadata (safetensors "__metadata__"); empty for .bin.
  virtual const std::map<std::string, std::string>& metadata() const = 0;
  // The name `name` has in the file when this is a renaming view (io/checkpoint_map.h), for messages;
  // "" when names are the file's own.
  virtual std::string original_name(const std::string& name) const { return {}; }
  // Hint that `t`'s bytes have been consumed: their memory-mapped pages are dropped from this process
  // (they are re-read from disk if touched again), so loading holds about one tensor of the file in
  // memory at a time instead of every page it has read. No-op for files read into memory.
  virtual void release(const TensorView& t) const {}
};

// Converts any float dtype (F32, F16, BF16, F64) to f32. Integer dtypes are converted too (I64, I32,
// U8...) so fixtures with token ids can be read. Throws WeightsInvalid for Bool.
std::vector<float> to_f32(const TensorView& t);
// Integer tensors (I64/I32/I16/I8/U8) to int64.
std::vector<int64_t> to_i64(const TensorView& t);

// Writes a safetensors file (F32, I64 or U8 tensors) — for tests and fixture tools.
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace xpsr
