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
//  accumulate=false: C = A*B + bias[j] + res[i*ldr + j] (bias/res may be null); true: C += A*B, or
//  C = C * cscale[j] + A*B when cscale is set (attention's running-softmax rescale, see attention.cpp).
//  Columns 16..31 of C (the second panel) start at c + i*ldc + cpan: 16 for dense rows, larger for a
//  panel-major C (attention writes Sᵀ so that each 16-column panel is itself a packed B operand).
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
  int64_t cpan = 16;
  const float* cscale = nullptr;
  // bf16 operands (Kernels::ukr_bf16 only; a / b unused): rows of k-pairs, two bf16 in each 32-bit word
  // (low half = the even k). kc counts pairs; lda and ldb are in words.
  const uint32_t* a2 = nullptr;
  const uint32_t* b2 = nullptr;
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
  // LayerNorm of one row: y = (x - mean) / sqrt(var + eps) * gamma + beta (biased variance). Sums of
  // x - x[0] and its square are accumulated in double (no cancellation when |mean| >> std); the apply
  // pass is f32. y may equal x.
  void (*layer_norm_row)(const float* x, float* y, size_t n, const float* gamma, const float* beta,
                         float eps) = nullptr;
  // Online softmax (base 2) over the keys of one 16-query panel of attention scores: s[r*16 + q] for
  // key rows r < nk holds log2-scaled logits; m, l, corr hold 16 floats (running max, running sum,
  // and the rescale this block applies to earlier sums). Keys r > delta + q are masked (causal; pass a
  // huge delta for none). On return s holds 2^(s - m_new) (0 where masked), corr = 2^(m_old - m_new),
  // l = l * corr + sum_r s, m = m_new (never -inf, so fully masked lanes give 0, not NaN).
  void (*softmax_panel)(float* s, int64_t nk, int64_t delta, float* m, float* l, float* corr) = nullptr;
  // bf16 compute mode (AVX-512 set only, and only called on CPUs with AVX512_BF16, see bf16_available):
  // the micro-kernel on bf16 pairs (vdpbf16ps, f32 accumulation) and the f32 -> bf16 rounding (nearest
  // even) used to pack A. Null in the other sets.
  void (*ukr_bf16)(const UkrArgs&) = nullptr;
  void (*to_bf16)(const float* x, uint16_t* y, size_t n) = nullptr;
};

const Kernels& kernels();     // the active set
Isa best_isa();               // best set compiled in, supported by this CPU, allowed by XPSR_CPU_ISA
bool isa_available(Isa isa);  // compiled in and supported by this CPU
void set_isa(Isa isa);        // switch the active set (tests); throws Error(Unsupported) if unavailable
const char* isa_name(Isa isa);
// bf16 compute mode usable: the CPU has AVX512_BF16 and the AVX-512 set is the best allowed
// (XPSR_CPU_ISA=avx2 turns it off).
bool bf16_available();

// Per-set tables (defined in kernels_*.cpp; the SIMD ones return nullptr when built without XPSR_X86
// and are only referenced on x86).
const Kernels* kernels_portable();
const Kernels* kernels_avx2();
const Kernels* kernels_avx512();

}  // namespace xpsr::cpu
