// AVX2 + FMA kernel set (compiled with -mavx2 -mfma -mf16c; chosen at run time by dispatch.cpp).
// GEMM micro-kernel: 6x16 register tile (12 ymm accumulators, 2 B loads + 6 A broadcasts per k), the
// classic shape for 16 ymm registers. Row kernels come from simd_rows.h. Nothing here may be reached
// on a CPU without AVX2: only the kernels_avx2() getter is called before the feature check passes.
#include "dispatch.h"

#if defined(XPSR_X86)
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace {

// Lane masks for the first n lanes: 8 x -1 then 8 x 0, read at offset 8 - n.
alignas(64) const int32_t kTailMask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

struct V8 {
  using R = __m256;
  static constexpr int W = 8;
  static constexpr float kExp2Min = -127.0f;  // pow2n(-127) is the bit pattern 0
  static __m256i mask(int n) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTailMask + 8 - n)); }
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static R load_n(const float* p, int n) { return _mm256_maskload_ps(p, mask(n)); }
  static void store_n(float* p, R v, int n) { _mm256_maskstore_ps(p, mask(n), v); }
  static R keep_n(R v, int n) { return _mm256_and_ps(v, _mm256_castsi256_ps(mask(n))); }
  static R set1(float v) { return _mm256_set1_ps(v); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R rcp(R a) {
    const R r = _mm256_rcp_ps(a);
    return _mm256_fmadd_ps(r, _mm256_fnmadd_ps(a, r, _mm256_set1_ps(1.0f)), r);
  }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R max(R a, R b) { return _mm256_max_ps(a, b); }
  static R min(R a, R b) { return _mm256_min_ps(a, b); }
  static R abs(R a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static R round(R a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static R pow2n(R n) {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
  static R scale2n(R p, R n) { return _mm256_mul_ps(p, pow2n(n)); }  // p * 2^n, n integral in [-127, 127]
  static R ge0_select(R x, R a, R b) {
    return _mm256_blendv_ps(b, a, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ));
  }
  static __m128 fold(R v) { return _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); }
  static float hsum(R v) {
    __m128 s = fold(v);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float hmax(R v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

}  // namespace

#include "simd_rows.h"

namespace xpsr::cpu {
namespace {

// Writes one 16-wide row of the tile with the epilogue of UkrArgs.
inline void store_row(const UkrArgs& p, int i, __m256 lo, __m256 hi) {
  float* c = p.c + i * p.ldc;
  if (p.accumulate) {
    if (p.cscale) {
      lo = _mm256_fmadd_ps(_mm256_loadu_ps(c), _mm256_loadu_ps(p.cscale), lo);
      hi = _mm256_fmadd_ps(_mm256_loadu_ps(c + 8), _mm256_loadu_ps(p.cscale + 8), hi);
    } else {
      lo = _mm256_add_ps(lo, _mm256_loadu_ps(c));
      hi = _mm256_add_ps(hi, _mm256_loadu_ps(c + 8));
    }
  } else {
    if (p.bias) {
      lo = _mm256_add_ps(lo, _mm256_loadu_ps(p.bias));
      hi = _mm256_add_ps(hi, _mm256_loadu_ps(p.bias + 8));
    }
    if (p.res) {
      const float* r = p.res + i * p.ldr;
      lo = _mm256_add_ps(lo, _mm256_loadu_ps(r));
      hi = _mm256_add_ps(hi, _mm256_loadu_ps(r + 8));
    }
  }
  _mm256_storeu_ps(c, lo);
  _mm256_storeu_ps(c + 8, hi);
}

#define XPSR_ROW_DECL(i) __m256 c##i##0 = _mm256_setzero_ps(), c##i##1 = _mm256_setzero_ps()
#define XPSR_ROW_STEP(i)                             \
  do {                                               \
    const __m256 av = _mm256_broadcast_ss(a##i + k); \
    c##i##0 = _mm256_fmadd_ps(av, b0, c##i##0);      \
    c##i##1 = _mm256_fmadd_ps(av, b1, c##i##1);      \
  } while (0)

// One 6x16 tile over kc (the panel at p.b + pn*p.ldb, columns 16*pn ..).
void ukr_panel(const UkrArgs& p, const float* b) {
  const int64_t lda = p.lda;
  const float *a0 = p.a, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda, *a4 = a3 + lda, *a5 = a4 + lda;
  XPSR_ROW_DECL(0);
  XPSR_ROW_DECL(1);
  XPSR_ROW_DECL(2);
  XPSR_ROW_DECL(3);
  XPSR_ROW_DECL(4);
  XPSR_ROW_DECL(5);
  for (int64_t k = 0; k < p.kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + 16 * k), b1 = _mm256_loadu_ps(b + 16 * k + 8);
    XPSR_ROW_STEP(0);
    XPSR_ROW_STEP(1);
    XPSR_ROW_STEP(2);
    XPSR_ROW_STEP(3);
    XPSR_ROW_STEP(4);
    XPSR_ROW_STEP(5);
  }
  store_row(p, 0, c00, c01);
  store_row(p, 1, c10, c11);
  store_row(p, 2, c20, c21);
  store_row(p, 3, c30, c31);
  store_row(p, 4, c40, c41);
  store_row(p, 5, c50, c51);
}
#undef XPSR_ROW_DECL
#undef XPSR_ROW_STEP

void channel_stats(const float* x, size_t n, const double* shift, double* s, double* ss) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m256d d = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), _mm256_loadu_pd(shift + i));
    _mm256_storeu_pd(s + i, _mm256_add_pd(_mm256_loadu_pd(s + i), d));
    _mm256_storeu_pd(ss + i, _mm256_fmadd_pd(d, d, _mm256_loadu_pd(ss + i)));
  }
  for (; i < n; ++i) {
    const double d = (double)x[i] - shift[i];
    s[i] += d;
    ss[i] += d * d;
  }
}

void layer_norm_row(const float* x, float* y, size_t n, const float* g, const float* b, float eps) {
  const __m256 vs = _mm256_set1_ps(x[0]);
  __m256d s0 = _mm256_setzero_pd(), s1 = s0, q0 = s0, q1 = s0;
  for (size_t i = 0; i < n; i += 8) {
    const int t = i + 8 <= n ? 8 : (int)(n - i);
    const __m256 d = V8::keep_n(_mm256_sub_ps(V8::load_n(x + i, t), vs), t);
    const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(d)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(d, 1));
    s0 = _mm256_add_pd(s0, lo);
    s1 = _mm256_add_pd(s1, hi);
    q0 = _mm256_fmadd_pd(lo, lo, q0);
    q1 = _mm256_fmadd_pd(hi, hi, q1);
  }
  alignas(32) double sv[4], qv[4];
  _mm256_store_pd(sv, _mm256_add_pd(s0, s1));
  _mm256_store_pd(qv, _mm256_add_pd(q0, q1));
  const double md = (sv[0] + sv[1] + sv[2] + sv[3]) / (double)n;
  const double var = std::max((qv[0] + qv[1] + qv[2] + qv[3]) / (double)n - md * md, 0.0);
  const __m256 vmd = _mm256_set1_ps((float)md), vr = _mm256_set1_ps((float)(1.0 / std::sqrt(var + (double)eps)));
  for (size_t i = 0; i < n; i += 8) {
    const int t = i + 8 <= n ? 8 : (int)(n - i);
    const __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(V8::load_n(x + i, t), vs), vmd), vr);
    V8::store_n(y + i, _mm256_fmadd_ps(v, V8::load_n(g + i, t), V8::load_n(b + i, t)), t);
  }
}

void ukr(const UkrArgs& p) {
  if (p.np == 1) {
    ukr_panel(p, p.b);
    return;
  }
  for (int pn = 0; pn < p.np; ++pn) {
    UkrArgs q = p;
    q.c += pn * p.cpan;
    if (q.bias) q.bias += 16 * pn;
    if (q.res) q.res += 16 * pn;
    if (q.cscale) q.cscale += 16 * pn;
    ukr_panel(q, p.b + pn * p.ldb);
  }
}

const Kernels kAvx2 = {Isa::Avx2,
                       "AVX2",
                       6,
                       1,
                       256,
                       96,
                       ukr,
                       unary_impl<V8>,
                       axpby_impl<V8>,
                       norm_apply_impl<V8>,
                       geglu_impl<V8>,
                       channel_stats,
                       layer_norm_row,
                       softmax_panel_impl<V8>};

}  // namespace

const Kernels* kernels_avx2() { return &kAvx2; }

}  // namespace xpsr::cpu

#else  // not x86: no AVX2 set

namespace xpsr::cpu {
const Kernels* kernels_avx2() { return nullptr; }
}  // namespace xpsr::cpu

#endif
