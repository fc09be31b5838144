// Aligned host allocation and the scratch arena of context.h.
#include "context.h"

#include <cstdlib>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "../common/error.h"

namespace xpsr::cpu {

namespace {
constexpr size_t kHugeMin = 4u << 20;    // blocks from this size get huge-page alignment
constexpr size_t kHugeAlign = 2u << 20;  // x86-64 transparent huge page
}  // namespace

void* aligned_alloc_bytes(size_t bytes, const char* what) {
  // Large blocks (weights, the activation arena, scratch) start on a 2 MB boundary and ask for
  // transparent huge pages: the GEMMs stream GBs of packed weights, and with 4 KB pages nearly every
  // panel row of a cold weight costs a TLB miss whose page-table walk itself misses the caches.
  const bool huge = bytes >= kHugeMin;
  const size_t align = huge ? kHugeAlign : kAlign;
  const size_t n = bytes ? (bytes + kAlign - 1) / kAlign * kAlign : kAlign;
  void* p = nullptr;
  if (posix_memalign(&p, align, n) != 0 || !p)
    fail(ErrorCode::OutOfMemory, "CPU backend: cannot allocate ", bytes, " bytes for ", what);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (huge) madvise(p, n / kHugeAlign * kHugeAlign, MADV_HUGEPAGE);  // a hint: failure is harmless
#endif
  return p;
}

void aligned_free(void* p) { std::free(p); }

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
