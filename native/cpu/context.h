// Shared state of one CpuBackend that every op function receives: the thread pool, a grow-on-demand
// scratch arena (packing buffers, attention tiles, norm statistics) and 64-byte aligned host memory.
// Scratch is reused across ops; it is only safe because a backend runs one op at a time.
#pragma once
#include <cstddef>
#include <cstdint>

#include "threadpool.h"

namespace xpsr::cpu {

constexpr size_t kAlign = 64;

void* aligned_alloc_bytes(size_t bytes, const char* what);  // throws Error(OutOfMemory)
void aligned_free(void* p);

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

class Scratch {
 public:
  Scratch() = default;
  ~Scratch() { aligned_free(p_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  // At least `bytes` of 64-byte aligned memory; contents are not preserved when it grows.
  void* get(size_t bytes);
  size_t capacity() const { return cap_; }

 private:
  void* p_ = nullptr;
  size_t cap_ = 0;
};

struct Context {
  explicit Context(int threads) : pool(threads) {}
  ThreadPool pool;
  Scratch scratch;
};

}  // namespace xpsr::cpu
