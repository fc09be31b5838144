// AVX-512F kernel set (compiled with the AVX-512 flags; chosen at run time by dispatch.cpp).
// GEMM micro-kernel: 8x32 register tile (16 zmm accumulators over two 16-column B panels; 8x16 when
// only one panel is left). Row kernels come from simd_rows.h with 16 lanes. Nothing here may be reached
// on a CPU without AVX-512F: only the kernels_avx512() getter is called before the feature check.
#include "dispatch.h"

#if defined(XPSR_X86)
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's AVX-512 headers build "undefined" pass-through vectors as self-initialised locals, which
// trips -W(maybe-)uninitialized once inlined here (GCC bug 105593); nothing is actually uninitialised.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>

namespace {

struct V16 {
  using R = __m512;
  static constexpr int W = 16;
  static constexpr float kExp2Min = -150.0f;  // scalef(p, -150) underflows to exactly 0
  static __mmask16 mask(int n) { return (__mmask16)((1u << n) - 1u); }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, R v) { _mm512_storeu_ps(p, v); }
  static R load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void store_n(float* p, R v, int n) { _mm512_mask_storeu_ps(p, mask(n), v); }
  static R keep_n(R v, int n) { return _mm512_maskz_mov_ps(mask(n), v); }
  static R set1(float v) { return _mm512_set1_ps(v); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R rcp(R a) {
    const R r = _mm512_rcp14_ps(a);
    return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(a, r, _mm512_set1_ps(1.0f)), r);
  }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R max(R a, R b) { return _mm512_max_ps(a, b); }
  static R min(R a, R b) { return _mm512_min_ps(a, b); }
  static R abs(R a) {
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(0x7fffffff)));
  }
  static R round(R a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static R pow2n(R n) {
    const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
  static R scale2n(R p, R n) { return _mm512_scalef_ps(p, n); }  // p * 2^n, n integral
  static R ge0_select(R x, R a, R b) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ), b, a);
  }
  static float hsum(R v) { return _mm512_reduce_add_ps(v); }
  static float hmax(R v) { return _mm512_reduce_max_ps(v); }
};

}  // namespace

#include "simd_rows.h"

namespace xpsr::cpu {
namespace {

inline __m512 epilogue(const UkrArgs& p, int i, int col, __m512 v) {
  const float* c = p.c + i * p.ldc + (col ? p.cpan : 0);
  if (p.accumulate) {
    if (p.cscale) return _mm512_fmadd_ps(_mm512_loadu_ps(c), _mm512_loadu_ps(p.cscale + col), v);
    return _mm512_add_ps(v, _mm512_loadu_ps(c));
  }
  if (p.bias) v = _mm512_add_ps(v, _mm512_loadu_ps(p.bias + col));
  if (p.res) v = _mm512_add_ps(v, _mm512_loadu_ps(p.res + i * p.ldr + col));
  return v;
}

#define XPSR_ROW_DECL(i) __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = _mm512_setzero_ps()
#define XPSR_ROW_STEP(i)                                               \
  do {                                                                 \
    const __m512 av = _mm512_set1_ps(a[i * lda + k]);                  \
    c##i##0 = _mm512_fmadd_ps(av, b0, c##i##0);                        \
    if constexpr (NP == 2) c##i##1 = _mm512_fmadd_ps(av, b1, c##i##1); \
  } while (0)
#define XPSR_ROW_STORE(i)                                                                           \
  do {                                                                                              \
    _mm512_storeu_ps(p.c + i * p.ldc, epilogue(p, i, 0, c##i##0));                                  \
    if constexpr (NP == 2) _mm512_storeu_ps(p.c + i * p.ldc + p.cpan, epilogue(p, i, 16, c##i##1)); \
  } while (0)

template <int NP>
void ukr_t(const UkrArgs& p) {
  const int64_t lda = p.lda;
  const float* a = p.a;
  const float *bp0 = p.b, *bp1 = p.b + p.ldb;
  XPSR_ROW_DECL(0);
  XPSR_ROW_DECL(1);
  XPSR_ROW_DECL(2);
  XPSR_ROW_DECL(3);
  XPSR_ROW_DECL(4);
  XPSR_ROW_DECL(5);
  XPSR_ROW_DECL(6);
  XPSR_ROW_DECL(7);
  for (int64_t k = 0; k < p.kc; ++k) {
    const __m512 b0 = _mm512_loadu_ps(bp0 + 16 * k);
    __m512 b1 = b0;
    if constexpr (NP == 2) b1 = _mm512_loadu_ps(bp1 + 16 * k);
    (void)b1;
    XPSR_ROW_STEP(0);
    XPSR_ROW_STEP(1);
    XPSR_ROW_STEP(2);
    XPSR_ROW_STEP(3);
    XPSR_ROW_STEP(4);
    XPSR_ROW_STEP(5);
    XPSR_ROW_STEP(6);
    XPSR_ROW_STEP(7);
  }
  XPSR_ROW_STORE(0);
  XPSR_ROW_STORE(1);
  XPSR_ROW_STORE(2);
  XPSR_ROW_STORE(3);
  XPSR_ROW_STORE(4);
  XPSR_ROW_STORE(5);
  XPSR_ROW_STORE(6);
  XPSR_ROW_STORE(7);
}
#undef XPSR_ROW_DECL
#undef XPSR_ROW_STEP
#undef XPSR_ROW_STORE

void channel_stats(const float* x, size_t n, const double* shift, double* s, double* ss) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m512d d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), _mm512_loadu_pd(shift + i));
    _mm512_storeu_pd(s + i, _mm512_add_pd(_mm512_loadu_pd(s + i), d));
    _mm512_storeu_pd(ss + i, _mm512_fmadd_pd(d, d, _mm512_loadu_pd(ss + i)));
  }
  for (; i < n; ++i) {
    const double d = (double)x[i] - shift[i];
    s[i] += d;
    ss[i] += d * d;
  }
}

void layer_norm_row(const float* x, float* y, size_t n, const float* g, const float* b, float eps) {
  const __m512 vs = _mm512_set1_ps(x[0]);
  __m512d s0 = _mm512_setzero_pd(), s1 = s0, q0 = s0, q1 = s0;
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 k = i + 16 <= n ? (__mmask16)0xffff : V16::mask((int)(n - i));
    const __m512 d = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, x + i), vs);
    const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(d)), hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(d, 1));
    s0 = _mm512_add_pd(s0, lo);
    s1 = _mm512_add_pd(s1, hi);
    q0 = _mm512_fmadd_pd(lo, lo, q0);
    q1 = _mm512_fmadd_pd(hi, hi, q1);
  }
  const double md = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1)) / (double)n;
  const double var = std::max(_mm512_reduce_add_pd(_mm512_add_pd(q0, q1)) / (double)n - md * md, 0.0);
  const __m512 vmd = _mm512_set1_ps((float)md), vr = _mm512_set1_ps((float)(1.0 / std::sqrt(var + (double)eps)));
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 k = i + 16 <= n ? (__mmask16)0xffff : V16::mask((int)(n - i));
    const __m512 t = _mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vs), vmd), vr);
    _mm512_mask_storeu_ps(y + i, k,
                          _mm512_fmadd_ps(t, _mm512_maskz_loadu_ps(k, g + i), _mm512_maskz_loadu_ps(k, b + i)));
  }
}

void ukr(const UkrArgs& p) {
  if (p.np == 2) ukr_t<2>(p);
  else ukr_t<1>(p);
}

// ---- bf16 compute mode: compiled for AVX512_BF16 with a target attribute (no extra build flags), so
// these functions may only run where bf16_available() (dispatch.cpp) said yes.
#define XPSR_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

// 8x32 tile like ukr_t, on k-pairs: per pair, 2 B loads (16 columns x 2 k each), 8 32-bit broadcasts of
// an A pair and 16 vdpbf16ps (2 multiply-adds per lane each, f32 accumulation).
#define XPSR_ROW_DECL(i) __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = _mm512_setzero_ps()
#define XPSR_ROW_STEP(i)                                                  \
  do {                                                                    \
    const __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[i * lda + k]); \
    c##i##0 = _mm512_dpbf16_ps(c##i##0, av, b0);                          \
    if constexpr (NP == 2) c##i##1 = _mm512_dpbf16_ps(c##i##1, av, b1);   \
  } while (0)
#define XPSR_ROW_STORE(i)                                                                           \
  do {                                                                                              \
    _mm512_storeu_ps(p.c + i * p.ldc, epilogue(p, i, 0, c##i##0));                                  \
    if constexpr (NP == 2) _mm512_storeu_ps(p.c + i * p.ldc + p.cpan, epilogue(p, i, 16, c##i##1)); \
  } while (0)

template <int NP>
XPSR_BF16_TARGET void ukr_bf16_t(const UkrArgs& p) {
  const int64_t lda = p.lda;
  const uint32_t* a = p.a2;
  const uint32_t *bp0 = p.b2, *bp1 = p.b2 + p.ldb;
  XPSR_ROW_DECL(0);
  XPSR_ROW_DECL(1);
  XPSR_ROW_DECL(2);
  XPSR_ROW_DECL(3);
  XPSR_ROW_DECL(4);
  XPSR_ROW_DECL(5);
  XPSR_ROW_DECL(6);
  XPSR_ROW_DECL(7);
  for (int64_t k = 0; k < p.kc; ++k) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp0 + 16 * k);
    __m512bh b1 = b0;
    if constexpr (NP == 2) b1 = (__m512bh)_mm512_loadu_si512(bp1 + 16 * k);
    (void)b1;
    XPSR_ROW_STEP(0);
    XPSR_ROW_STEP(1);
    XPSR_ROW_STEP(2);
    XPSR_ROW_STEP(3);
    XPSR_ROW_STEP(4);
    XPSR_ROW_STEP(5);
    XPSR_ROW_STEP(6);
    XPSR_ROW_STEP(7);
  }
  XPSR_ROW_STORE(0);
  XPSR_ROW_STORE(1);
  XPSR_ROW_STORE(2);
  XPSR_ROW_STORE(3);
  XPSR_ROW_STORE(4);
  XPSR_ROW_STORE(5);
  XPSR_ROW_STORE(6);
  XPSR_ROW_STORE(7);
}
#undef XPSR_ROW_DECL
#undef XPSR_ROW_STEP
#undef XPSR_ROW_STORE

XPSR_BF16_TARGET void ukr_bf16(const UkrArgs& p) {
  if (p.np == 2) ukr_bf16_t<2>(p);
  else ukr_bf16_t<1>(p);
}

// y = bf16(x), round to nearest even (vcvtne2ps2bf16), 32 values per step, masked tail.
XPSR_BF16_TARGET void to_bf16(const float* x, uint16_t* y, size_t n) {
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
    _mm512_storeu_si512(y + i, (__m512i)h);
  }
  if (i < n) {
    const int t = (int)(n - i);
    const __m512 lo = _mm512_maskz_loadu_ps(V16::mask(std::min(t, 16)), x + i);
    const __m512 hi = t > 16 ? _mm512_maskz_loadu_ps(V16::mask(t - 16), x + i + 16) : _mm512_setzero_ps();
    const __m512bh h = _mm512_cvtne2ps_pbh(hi, lo);
    _mm512_mask_storeu_epi16(y + i, (__mmask32)((1ull << t) - 1), (__m512i)h);
  }
}

const Kernels kAvx512 = {Isa::Avx512,
                         "AVX-512",
                         8,
                         2,
                         192,
                         96,
                         ukr,
                         unary_impl<V16>,
                         axpby_impl<V16>,
                         norm_apply_impl<V16>,
                         geglu_impl<V16>,
                         channel_stats,
                         layer_norm_row,
                         softmax_panel_impl<V16>,
                         ukr_bf16,
                         to_bf16};

}  // namespace

const Kernels* kernels_avx512() { return &kAvx512; }

}  // namespace xpsr::cpu

#else  // not x86: no AVX-512 set

namespace xpsr::cpu {
const Kernels* kernels_avx512() { return nullptr; }
}  // namespace xpsr::cpu

#endif
