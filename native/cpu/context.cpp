// Aligned host allocation and the scratch arena of context.h.
#include "context.h"

#include <new>

#include "../common/error.h"

namespace xpsr::cpu {

void* aligned_alloc_bytes(size_t bytes, const char* what) {
  const size_t n = bytes ? (bytes + kAlign - 1) / kAlign * kAlign : kAlign;
  void* p = ::operator new(n, std::align_val_t(kAlign), std::nothrow);
  if (!p) fail(ErrorCode::OutOfMemory, "CPU backend: cannot allocate ", bytes, " bytes for ", what);
  return p;
}

void aligned_free(void* p) {
  if (p) ::operator delete(p, std::align_val_t(kAlign));
}

void* Scratch::get(size_t bytes) {
  if (bytes > cap_) {
    aligned_free(p_);
    p_ = nullptr;
    cap_ = 0;
    const size_t grown = bytes + bytes / 4;  // some slack so slowly growing requests do not thrash
    p_ = aligned_alloc_bytes(grown, "scratch");
    cap_ = grown;
  }
  return p_;
}

}  // namespace xpsr::cpu
