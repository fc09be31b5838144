// Row kernels written once over a SIMD wrapper V and compiled per instruction set: include ONLY from
// kernels_avx2.cpp / kernels_avx512.cpp (everything here has internal linkage so the AVX builds of these
// functions can never be merged with, or picked instead of, code that runs on any CPU).
// V provides: R (register type), W (lanes), load/store (unaligned), load_n/store_n (first n < W lanes,
// masked: no access past n, zero fill), keep_n (zero lanes >= n), set1, add, sub, mul, rcp (1/a to ~1
// ulp for finite a: the hardware estimate plus one Newton step, a fraction of a divide's cost), fma
// (a*b+c), max, min, abs, round (to nearest), pow2n (2^n for integral n in [-126, 127]), scale2n
// (p * 2^n for integral n >= kExp2Min, exactly 0 at kExp2Min), ge0_select, hsum, hmax. Tails use the masked forms
// (a stack buffer costs a store-forwarding stall per call, which dominated short rows). Accuracy: vexp
// and vexp2 <= 2 ulp (degree-6 minimax polynomials); vgelu's erfc uses Abramowitz & Stegun 7.1.26,
// absolute error <= 1.5e-7. Tests: dispatch_test.cpp and the per-element bounds of elementwise_test.cpp.
#pragma once
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>

namespace {

alignas(64) const float kLaneIndex[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

// e^x: Cody-Waite reduction x = n ln2 + r (|r| <= ln2 / 2), a degree-6 minimax polynomial for e^r
// (relative error 2e-9 in exact arithmetic, ~1.2 ulp evaluated in f32) and p * 2^n. Inputs are clamped
// to [-87.34, 88.38] (results stay normal and finite). Bound tested in elementwise_test.cpp.
template <class V>
inline typename V::R vexp(typename V::R x) {
  using R = typename V::R;
  x = V::max(V::min(x, V::set1(88.3762626647949f)), V::set1(-87.3365478515625f));
  const R n = V::round(V::mul(x, V::set1(1.44269504088896341f)));
  R r = V::fma(n, V::set1(-0.693359375f), x);
  r = V::fma(n, V::set1(2.12194440e-4f), r);
  R p = V::set1(0.00138436537f);
  p = V::fma(p, r, V::set1(0.0083741555f));
  p = V::fma(p, r, V::set1(0.0416680016f));
  p = V::fma(p, r, V::set1(0.166664317f));
  p = V::fma(p, r, V::set1(0.49999994f));
  p = V::fma(p, r, V::set1(1.0f));
  p = V::fma(p, r, V::set1(1.0f));
  return V::scale2n(p, n);
}

// 2^x for x <= 127 (the softmax calls it with x <= 0). Inputs below V::kExp2Min (and -inf) are clamped
// to it, where p * 2^n is exactly 0 (AVX-512's scalef underflows 2^-150 to 0; AVX2's pow2n(-127) is the
// bit pattern 0), so masked scores give exact zeros. x = n + r, |r| <= 1/2, degree-6 minimax polynomial
// for 2^r (relative error 2e-9 exact, ~1.3 ulp in f32), p * 2^n: 10 vector ops. Bound tested in
// attention_test.cpp (cpu_softmax_panel_kernel).
template <class V>
inline typename V::R vexp2(typename V::R x) {
  using R = typename V::R;
  x = V::max(x, V::set1(V::kExp2Min));
  const R n = V::round(x);
  const R r = V::sub(x, n);
  R p = V::set1(0.00015353362f);
  p = V::fma(p, r, V::set1(0.0013398875f));
  p = V::fma(p, r, V::set1(0.00961843692f));
  p = V::fma(p, r, V::set1(0.0555033237f));
  p = V::fma(p, r, V::set1(0.240226477f));
  p = V::fma(p, r, V::set1(0.693147182f));
  p = V::fma(p, r, V::set1(1.0f));
  return V::scale2n(p, n);
}

// x * sigmoid(k x) = x / (1 + exp(-k x))
template <class V>
inline typename V::R vsilu(typename V::R x, float k) {
  const typename V::R e = vexp<V>(V::mul(x, V::set1(-k)));
  return V::mul(x, V::rcp(V::add(V::set1(1.0f), e)));
}

// 0.5 x (1 + erf(x / sqrt2)) computed as 0.5 x (2 - erfc(z)) for x >= 0 and 0.5 x erfc(z) for x < 0,
// z = |x| / sqrt2, so the negative tail keeps its relative accuracy (no 1 - erf cancellation).
template <class V>
inline typename V::R vgelu(typename V::R x) {
  using R = typename V::R;
  const R z = V::mul(V::abs(x), V::set1(0.70710678118654752f));
  const R t = V::rcp(V::fma(z, V::set1(0.3275911f), V::set1(1.0f)));
  R p = V::set1(1.061405429f);
  p = V::fma(p, t, V::set1(-1.453152027f));
  p = V::fma(p, t, V::set1(1.421413741f));
  p = V::fma(p, t, V::set1(-0.284496736f));
  p = V::fma(p, t, V::set1(0.254829592f));
  p = V::mul(p, t);
  const R erfc = V::mul(p, vexp<V>(V::mul(V::sub(V::set1(0.0f), z), z)));
  const R f = V::ge0_select(x, V::sub(V::set1(2.0f), erfc), erfc);
  return V::mul(V::mul(V::set1(0.5f), x), f);
}

// Applies f to full vectors of x and, with masked loads / stores, to the tail.
template <class V, class F>
inline void map1(const float* x, float* y, size_t n, F f) {
  size_t i = 0;
  for (; i + V::W <= n; i += V::W) V::store(y + i, f(V::load(x + i), i));
  if (i < n) V::store_n(y + i, f(V::load_n(x + i, (int)(n - i)), i), (int)(n - i));
}

template <class V>
void unary_impl(const float* x, float* y, size_t n, xpsr::cpu::Unary op) {
  using R = typename V::R;
  switch (op) {
    case xpsr::cpu::Unary::Silu: map1<V>(x, y, n, [](R v, size_t) { return vsilu<V>(v, 1.0f); }); break;
    case xpsr::cpu::Unary::QuickGelu: map1<V>(x, y, n, [](R v, size_t) { return vsilu<V>(v, 1.702f); }); break;
    case xpsr::cpu::Unary::GeluErf: map1<V>(x, y, n, [](R v, size_t) { return vgelu<V>(v); }); break;
    case xpsr::cpu::Unary::LeakyRelu:
      map1<V>(x, y, n, [](R v, size_t) { return V::ge0_select(v, v, V::mul(v, V::set1(0.2f))); });
      break;
  }
}

// Loads lanes [i, i+W) of p, or the zero-padded tail when fewer than W remain.
template <class V>
inline typename V::R load_part(const float* p, size_t i, size_t n) {
  return i + V::W <= n ? V::load(p + i) : V::load_n(p + i, (int)(n - i));
}

template <class V>
void axpby_impl(const float* a, const float* b, float* y, size_t n, float alpha, float beta) {
  using R = typename V::R;
  const R va = V::set1(alpha), vb = V::set1(beta);
  if (b) {
    map1<V>(a, y, n, [&](R x, size_t i) { return V::fma(va, x, V::mul(vb, load_part<V>(b, i, n))); });
  } else {
    map1<V>(a, y, n, [&](R x, size_t) { return V::mul(va, x); });
  }
}

template <class V>
void norm_apply_impl(const float* x, float* y, size_t n, const float* sub, const float* sc, const float* sh, bool act) {
  using R = typename V::R;
  auto lin = [&](R v, size_t i) {
    return V::fma(V::sub(v, load_part<V>(sub, i, n)), load_part<V>(sc, i, n), load_part<V>(sh, i, n));
  };
  if (act) map1<V>(x, y, n, [&](R v, size_t i) { return vsilu<V>(lin(v, i), 1.0f); });
  else map1<V>(x, y, n, lin);
}

template <class V>
void geglu_impl(const float* x, float* y, size_t inner) {
  using R = typename V::R;
  const float* g = x + inner;
  map1<V>(x, y, inner, [&](R a, size_t i) { return V::mul(a, vgelu<V>(load_part<V>(g, i, inner))); });
}

// Kernels::softmax_panel (dispatch.h): one 16-query panel, rows of 16 lanes, 16 / W vectors per row.
template <class V>
void softmax_panel_impl(float* s, int64_t nk, int64_t delta, float* m, float* l, float* corr) {
  using R = typename V::R;
  const R ninf = V::set1(-INFINITY);
  // rows r <= delta are visible in every lane; row r > delta only in lanes q >= r - delta (causal)
  const int64_t full = std::min(nk, std::max<int64_t>(0, delta + 1));
  for (int h = 0; h < 16; h += V::W) {
    float* sh = s + h;
    R mx0 = ninf, mx1 = ninf;
    int64_t r = 0;
    for (; r + 2 <= full; r += 2) {
      mx0 = V::max(mx0, V::load(sh + r * 16));
      mx1 = V::max(mx1, V::load(sh + r * 16 + 16));
    }
    if (r < full) mx0 = V::max(mx0, V::load(sh + r * 16));
    if (full < nk) {
      const R lane = V::load(kLaneIndex + h);
      for (r = full; r < nk; ++r) {
        const R v = V::ge0_select(V::sub(lane, V::set1((float)(r - delta))), V::load(sh + r * 16), ninf);
        V::store(sh + r * 16, v);
        mx0 = V::max(mx0, v);
      }
    }
    const R mold = V::load(m + h);
    const R mnew = V::max(V::max(mold, V::max(mx0, mx1)), V::set1(-FLT_MAX));
    const R c = vexp2<V>(V::sub(mold, mnew));
    R s0 = V::set1(0.0f), s1 = s0;
    for (r = 0; r + 2 <= nk; r += 2) {
      const R e0 = vexp2<V>(V::sub(V::load(sh + r * 16), mnew));
      const R e1 = vexp2<V>(V::sub(V::load(sh + r * 16 + 16), mnew));
      V::store(sh + r * 16, e0);
      V::store(sh + r * 16 + 16, e1);
      s0 = V::add(s0, e0);
      s1 = V::add(s1, e1);
    }
    if (r < nk) {
      const R e0 = vexp2<V>(V::sub(V::load(sh + r * 16), mnew));
      V::store(sh + r * 16, e0);
      s0 = V::add(s0, e0);
    }
    V::store(m + h, mnew);
    V::store(corr + h, c);
    V::store(l + h, V::fma(V::load(l + h), c, V::add(s0, s1)));
  }
}

}  // namespace
