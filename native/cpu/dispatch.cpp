// Chooses the CPU kernel set at run time (see dispatch.h). x86 feature checks use
// __builtin_cpu_supports, which also checks that the OS saves the AVX / AVX-512 register state.
#include "dispatch.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "../common/error.h"

namespace xpsr::cpu {
namespace {

bool cpu_has(Isa isa) {
  switch (isa) {
    case Isa::Portable: return true;
#if defined(XPSR_X86) && (defined(__GNUC__) || defined(__clang__))
    case Isa::Avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::Avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    default: return false;
#endif
  }
  return false;
}

// The SIMD getters are only referenced on x86, so a build that leaves the *_avx2 / *_avx512 files out
// on other CPUs (node-gyp fallback) still links.
const Kernels* table(Isa isa) {
  switch (isa) {
    case Isa::Portable: return kernels_portable();
#if defined(XPSR_X86)
    case Isa::Avx2: return kernels_avx2();
    case Isa::Avx512: return kernels_avx512();
#else
    default: return nullptr;
#endif
  }
  return nullptr;
}

// XPSR_CPU_ISA caps the automatic choice (unset: no cap).
Isa env_cap() {
  const char* e = std::getenv("XPSR_CPU_ISA");
  if (!e || !*e) return Isa::Avx512;
  if (!std::strcmp(e, "portable") || !std::strcmp(e, "scalar")) return Isa::Portable;
  if (!std::strcmp(e, "avx2")) return Isa::Avx2;
  return Isa::Avx512;
}

std::atomic<const Kernels*> g_active{nullptr};

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Portable: return "portable";
    case Isa::Avx2: return "AVX2";
    case Isa::Avx512: return "AVX-512";
  }
  return "?";
}

bool isa_available(Isa isa) { return cpu_has(isa) && table(isa) != nullptr; }

bool bf16_available() {
#if defined(XPSR_X86) && (defined(__GNUC__) || defined(__clang__))
  return best_isa() == Isa::Avx512 && __builtin_cpu_supports("avx512bf16") && kernels_avx512()->ukr_bf16;
#else
  return false;
#endif
}

Isa best_isa() {
  const Isa cap = env_cap();
  for (Isa isa : {Isa::Avx512, Isa::Avx2}) {
    if ((int)isa <= (int)cap && isa_available(isa)) return isa;
  }
  return Isa::Portable;
}

const Kernels& kernels() {
  const Kernels* k = g_active.load(std::memory_order_acquire);
  if (!k) {
    k = table(best_isa());
    g_active.store(k, std::memory_order_release);
  }
  return *k;
}

void set_isa(Isa isa) {
  XPSR_CHECK(isa_available(isa), ErrorCode::Unsupported, "CPU kernel set ", isa_name(isa),
             " is not available on this CPU/build");
  g_active.store(table(isa), std::memory_order_release);
}

}  // namespace xpsr::cpu
