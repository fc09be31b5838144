// Run-time choice of the CPU kernel set (internal to native/cpu). Three sets share one table type:
// portable C++ (any CPU), AVX2+FMA (kernels_avx2.cpp) and AVX-512F (kernels_avx512.cpp). The best set
// the CPU supports is chosen once; env XPSR_CPU_ISA=portable|avx2|avx512 caps it, and tests switch sets
// with set_isa() to check that every set agrees (dispatch_test.cpp). Packed weights do not depend on
// the set (B panels are always 16 columns wide), so switching is safe at any time between ops.
#pragma once
#include <cstddef>
#include <cstdint>

namespace xpsr::cpu {

enum class Isa { Portable = 0, Avx2 = 1, Avx512 = 2 };

// Arguments of one GEMM micro-kernel call: C[MR x 16*np] (=|+=) A[MR x kc] * B[kc x 16*np].
//  A: MR rows at a + i*lda (all MR rows readable). B: np panels, panel p at b + p*ldb, row k of a panel
//  at +16*k (16 contiguous floats). C rows at c + i*ldc, all MR x 16*np entries valid.
//  accumulate=false: C = A*B + bias[j] + res[i*ldr + j] (bias/res may be null); true: C += A*B.
struct UkrArgs {
  int64_t kc = 0;
  const float* a = nullptr;
  int64_t lda = 0;
  const float* b = nullptr;
  int64_t ldb = 0;
  int np = 1;  // 1 .. Kernels::max_panels
  float* c = nullptr;
  int64_t ldc = 0;
  bool accumulate = false;
  const float* bias = nullptr;
  const float* res = nullptr;
  int64_t ldr = 0;
};

enum class Unary { Silu = 0, QuickGelu = 1, GeluErf = 2, LeakyRelu = 3 };  // LeakyRelu slope 0.2

struct Kernels {
  Isa isa = Isa::Portable;
  const char* name = "portable";
  int mr = 4;          // rows of the micro-kernel
  int max_panels = 1;  // 16-column panels per micro-kernel call (NR = 16 * max_panels)
  int kc = 256;        // K block of the GEMM driver
  int mc = 64;         // M block of the GEMM driver (multiple of mr)
  void (*ukr)(const UkrArgs&) = nullptr;
  // Row kernels (n any size, pointers unaligned; y may equal x unless noted).
  void (*unary)(const float* x, float* y, size_t n, Unary op) = nullptr;
  // y = alpha*a + beta*b (b may be null: y = alpha*a).
  void (*axpby)(const float* a, const float* b, float* y, size_t n, float alpha, float beta) = nullptr;
  // y[c] = (x[c] - sub[c]) * scale[c] + shift[c], then silu if asked (GroupNorm apply; `sub` is a data
  // value near the mean, so x - sub is exact and large means do not cost precision).
  void (*norm_apply)(const float* x, float* y, size_t n, const float* sub, const float* scale, const float* shift,
                     bool silu) = nullptr;
  // y[i] = x[i] * gelu_erf(x[inner + i]), i < inner (y must not overlap x).
  void (*geglu)(const float* x, float* y, size_t inner) = nullptr;
  // s[c] += x[c] - shift[c]; ss[c] += (x[c] - shift[c])^2, in double (GroupNorm statistics of one row).
  void (*channel_stats)(const float* x, size_t n, const double* shift, double* s, double* ss) = nullptr;
  float (*max)(const float* x, size_t n) = nullptr;         // n >= 1
  float (*exp_sum)(float* x, size_t n, float m) = nullptr;  // x = exp(x - m); returns the sum
  void (*scale)(float* x, size_t n, float s) = nullptr;     // x *= s
};

const Kernels& kernels();     // the active set
Isa best_isa();               // best set compiled in, supported by this CPU, allowed by XPSR_CPU_ISA
bool isa_available(Isa isa);  // compiled in and supported by this CPU
void set_isa(Isa isa);        // switch the active set (tests); throws Error(Unsupported) if unavailable
const char* isa_name(Isa isa);

// Per-set tables (defined in kernels_*.cpp; the SIMD ones return nullptr when built without XPSR_X86
// and are only referenced on x86).
const Kernels* kernels_portable();
const Kernels* kernels_avx2();
const Kernels* kernels_avx512();

}  // namespace xpsr::cpu
