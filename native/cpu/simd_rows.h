// Row kernels written once over a SIMD wrapper V and compiled per instruction set: include ONLY from
// kernels_avx2.cpp / kernels_avx512.cpp (everything here has internal linkage so the AVX builds of these
// functions can never be merged with, or picked instead of, code that runs on any CPU).
// V provides: R (register type), W (lanes), load/store (unaligned), load_n/store_n (first n < W lanes,
// masked: no access past n, zero fill), keep_n (zero lanes >= n), set1, add, sub, mul, div, fma
// (a*b+c), max, min, abs, round (to nearest), pow2n (2^n for integral n in [-126, 127]), ge0_select,
// hsum, hmax. Tails use the masked forms (a stack buffer costs a store-forwarding stall per call, which
// dominated short rows). Accuracy: vexp ~1 ulp (Cody-Waite reduction, degree-7 polynomial); vgelu's
// erfc uses Abramowitz & Stegun 7.1.26, absolute error <= 1.5e-7. Tests: dispatch_test.cpp and the
// per-element bounds of elementwise_test.cpp.
#pragma once

namespace {

template <class V>
inline typename V::R vexp(typename V::R x) {
  using R = typename V::R;
  x = V::max(V::min(x, V::set1(88.3762626647949f)), V::set1(-87.3365478515625f));
  const R n = V::round(V::mul(x, V::set1(1.44269504088896341f)));
  R r = V::fma(n, V::set1(-0.693359375f), x);
  r = V::fma(n, V::set1(2.12194440e-4f), r);
  R p = V::set1(1.0f / 5040.0f);
  p = V::fma(p, r, V::set1(1.0f / 720.0f));
  p = V::fma(p, r, V::set1(1.0f / 120.0f));
  p = V::fma(p, r, V::set1(1.0f / 24.0f));
  p = V::fma(p, r, V::set1(1.0f / 6.0f));
  p = V::fma(p, r, V::set1(0.5f));
  p = V::fma(p, r, V::set1(1.0f));
  p = V::fma(p, r, V::set1(1.0f));
  return V::mul(p, V::pow2n(n));
}

// x * sigmoid(k x) = x / (1 + exp(-k x))
template <class V>
inline typename V::R vsilu(typename V::R x, float k) {
  const typename V::R e = vexp<V>(V::mul(x, V::set1(-k)));
  return V::div(x, V::add(V::set1(1.0f), e));
}

// 0.5 x (1 + erf(x / sqrt2)) computed as 0.5 x (2 - erfc(z)) for x >= 0 and 0.5 x erfc(z) for x < 0,
// z = |x| / sqrt2, so the negative tail keeps its relative accuracy (no 1 - erf cancellation).
template <class V>
inline typename V::R vgelu(typename V::R x) {
  using R = typename V::R;
  const R z = V::mul(V::abs(x), V::set1(0.70710678118654752f));
  const R t = V::div(V::set1(1.0f), V::fma(z, V::set1(0.3275911f), V::set1(1.0f)));
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

template <class V>
float max_impl(const float* x, size_t n) {
  typename V::R m = V::set1(x[0]);
  size_t i = 0;
  for (; i + V::W <= n; i += V::W) m = V::max(m, V::load(x + i));
  float r = V::hmax(m);
  for (; i < n; ++i) r = x[i] > r ? x[i] : r;
  return r;
}

template <class V>
float exp_sum_impl(float* x, size_t n, float mx) {
  using R = typename V::R;
  const R vm = V::set1(mx);
  R s = V::set1(0.0f);
  size_t i = 0;
  for (; i + V::W <= n; i += V::W) {
    const R e = vexp<V>(V::sub(V::load(x + i), vm));
    V::store(x + i, e);
    s = V::add(s, e);
  }
  if (i < n) {
    const int t = (int)(n - i);
    // padded lanes hold exp(0 - m) (even inf); keep_n zeroes them before the sum
    const R e = vexp<V>(V::sub(V::load_n(x + i, t), vm));
    V::store_n(x + i, e, t);
    s = V::add(s, V::keep_n(e, t));
  }
  return V::hsum(s);
}

template <class V>
void scale_impl(float* x, size_t n, float s) {
  const typename V::R vs = V::set1(s);
  map1<V>(x, x, n, [&](typename V::R v, size_t) { return V::mul(v, vs); });
}

}  // namespace
