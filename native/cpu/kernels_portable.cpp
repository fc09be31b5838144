// Portable kernel set (any CPU): a 4x16 GEMM micro-kernel written with GCC/Clang vector extensions
// (SSE2 / NEON code without intrinsics; plain loops elsewhere) and scalar row kernels using std::exp /
// std::erf. It is also the reference the SIMD sets are checked against (dispatch_test.cpp).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "dispatch.h"

namespace xpsr::cpu {
namespace {

constexpr int kMr = 4;

#if defined(__GNUC__) || defined(__clang__)
typedef float v4 __attribute__((vector_size(16)));
inline v4 load4(const float* p) {
  v4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store4(float* p, v4 v) { std::memcpy(p, &v, sizeof v); }

// One 4x8 half of the 4x16 tile: 8 accumulators, fits 16 SSE registers with room for A and B.
void ukr_half(const UkrArgs& p, const float* b, float* c, const float* bias, const float* res, const float* cs) {
  v4 acc[kMr][2] = {};
  for (int64_t k = 0; k < p.kc; ++k) {
    const v4 b0 = load4(b + 16 * k), b1 = load4(b + 16 * k + 4);
    for (int i = 0; i < kMr; ++i) {
      const float a = p.a[i * p.lda + k];
      acc[i][0] += a * b0;
      acc[i][1] += a * b1;
    }
  }
  for (int i = 0; i < kMr; ++i) {
    float* ci = c + i * p.ldc;
    for (int h = 0; h < 2; ++h) {
      v4 v = acc[i][h];
      if (p.accumulate) {
        v += cs ? load4(ci + 4 * h) * load4(cs + 4 * h) : load4(ci + 4 * h);
      } else {
        if (bias) v += load4(bias + 4 * h);
        if (res) v += load4(res + i * p.ldr + 4 * h);
      }
      store4(ci + 4 * h, v);
    }
  }
}
#else
void ukr_half(const UkrArgs& p, const float* b, float* c, const float* bias, const float* res, const float* cs) {
  float acc[kMr][8] = {};
  for (int64_t k = 0; k < p.kc; ++k)
    for (int i = 0; i < kMr; ++i)
      for (int j = 0; j < 8; ++j) acc[i][j] += p.a[i * p.lda + k] * b[16 * k + j];
  for (int i = 0; i < kMr; ++i)
    for (int j = 0; j < 8; ++j) {
      float v = acc[i][j];
      if (p.accumulate) v += c[i * p.ldc + j] * (cs ? cs[j] : 1.0f);
      else v += (bias ? bias[j] : 0.0f) + (res ? res[i * p.ldr + j] : 0.0f);
      c[i * p.ldc + j] = v;
    }
}
#endif

void ukr(const UkrArgs& p) {
  for (int pn = 0; pn < p.np; ++pn) {
    for (int h = 0; h < 2; ++h) {
      const int64_t col = 16 * pn + 8 * h;
      ukr_half(p, p.b + pn * p.ldb + 8 * h, p.c + pn * p.cpan + 8 * h, p.bias ? p.bias + col : nullptr,
               p.res ? p.res + col : nullptr, p.cscale ? p.cscale + col : nullptr);
    }
  }
}

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }
inline float gelu_erf(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); }

void unary(const float* x, float* y, size_t n, Unary op) {
  switch (op) {
    case Unary::Silu:
      for (size_t i = 0; i < n; ++i) y[i] = silu(x[i]);
      break;
    case Unary::QuickGelu:
      for (size_t i = 0; i < n; ++i) y[i] = x[i] / (1.0f + std::exp(-1.702f * x[i]));
      break;
    case Unary::GeluErf:
      for (size_t i = 0; i < n; ++i) y[i] = gelu_erf(x[i]);
      break;
    case Unary::LeakyRelu:
      for (size_t i = 0; i < n; ++i) y[i] = x[i] >= 0.0f ? x[i] : 0.2f * x[i];
      break;
  }
}

void axpby(const float* a, const float* b, float* y, size_t n, float alpha, float beta) {
  if (b) {
    for (size_t i = 0; i < n; ++i) y[i] = alpha * a[i] + beta * b[i];
  } else {
    for (size_t i = 0; i < n; ++i) y[i] = alpha * a[i];
  }
}

void norm_apply(const float* x, float* y, size_t n, const float* sub, const float* scale, const float* shift,
                bool act) {
  for (size_t i = 0; i < n; ++i) {
    const float v = (x[i] - sub[i]) * scale[i] + shift[i];
    y[i] = act ? silu(v) : v;
  }
}

void geglu(const float* x, float* y, size_t inner) {
  for (size_t i = 0; i < inner; ++i) y[i] = x[i] * gelu_erf(x[inner + i]);
}

void channel_stats(const float* x, size_t n, const double* shift, double* s, double* ss) {
  for (size_t i = 0; i < n; ++i) {
    const double d = (double)x[i] - shift[i];
    s[i] += d;
    ss[i] += d * d;
  }
}

void layer_norm_row(const float* x, float* y, size_t n, const float* g, const float* b, float eps) {
  const double sh = x[0];
  double s = 0, ss = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = (double)x[i] - sh;
    s += d;
    ss += d * d;
  }
  const double md = s / (double)n, var = std::max(ss / (double)n - md * md, 0.0);
  const double rstd = 1.0 / std::sqrt(var + (double)eps);
  for (size_t i = 0; i < n; ++i) y[i] = (float)(((double)x[i] - sh - md) * rstd * g[i] + b[i]);
}

void softmax_panel(float* s, int64_t nk, int64_t delta, float* m, float* l, float* corr) {
  for (int64_t q = 0; q < 16; ++q) {
    const int64_t vis = std::min(nk, std::max<int64_t>(0, delta + q + 1));  // keys r <= delta + q
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t r = 0; r < vis; ++r) mx = std::max(mx, s[r * 16 + q]);
    const float mnew = std::max({m[q], mx, -std::numeric_limits<float>::max()});
    float sum = 0.0f;
    for (int64_t r = 0; r < vis; ++r) sum += (s[r * 16 + q] = std::exp2(s[r * 16 + q] - mnew));
    for (int64_t r = vis; r < nk; ++r) s[r * 16 + q] = 0.0f;
    corr[q] = std::exp2(m[q] - mnew);
    l[q] = l[q] * corr[q] + sum;
    m[q] = mnew;
  }
}

const Kernels kPortable = {
    Isa::Portable, "portable",     kMr,          1, 256, 64, ukr, unary, axpby, norm_apply, geglu,
    channel_stats, layer_norm_row, softmax_panel};

}  // namespace

const Kernels* kernels_portable() { return &kPortable; }

}  // namespace xpsr::cpu
