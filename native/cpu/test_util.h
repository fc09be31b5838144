// Helpers shared by the CPU op tests (native/cpu/*_test.cpp): seeded random data, a device buffer that
// round-trips through the Backend interface, and `expect_close`, which compares a result with a float64
// reference and reports max abs error, error relative to max|ref| and the share of the tolerance used.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "../engine/backend.h"
#include "../test/test.h"
#include "dispatch.h"

namespace xpsr::cpu::testing {

// Deterministic uniform [lo, hi) values (xorshift64*), independent of the standard library.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  double uniform(double lo = -1.0, double hi = 1.0) {
    s_ ^= s_ >> 12;
    s_ ^= s_ << 25;
    s_ ^= s_ >> 27;
    return lo + (hi - lo) * (double)((s_ * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
  }
  std::vector<float> vec(size_t n, double lo = -1.0, double hi = 1.0) {
    std::vector<float> v(n);
    for (auto& x : v) x = (float)uniform(lo, hi);
    return v;
  }

 private:
  uint64_t s_;
};

// Activation buffer of the backend under test.
class Buf {
 public:
  Buf(Backend& be, size_t n) : be_(be), n_(n), p_(be.alloc(n * sizeof(float))) { be.fill_zero(p_, n); }
  Buf(Backend& be, const std::vector<float>& v) : Buf(be, v.size()) { be.upload_act(p_, v.data(), v.size()); }
  ~Buf() { be_.free(p_); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  float* f() const { return static_cast<float*>(p_); }
  void* p() const { return p_; }
  std::vector<float> get() const {
    std::vector<float> v(n_);
    be_.download_act(v.data(), p_, n_);
    return v;
  }

 private:
  Backend& be_;
  size_t n_;
  void* p_;
};

struct CloseReport {
  double max_abs = 0, max_ref = 0, rel = 0;
};

// Checks |got[i] - ref[i]| <= tol * max(max_j |ref[j]|, floor) for every i (and no NaN); prints one line.
inline CloseReport expect_close(const std::string& what, const std::vector<float>& got, const std::vector<double>& ref,
                                double tol, double floor = 1e-30) {
  CHECK_MSG(got.size() == ref.size(), what + ": size mismatch");
  CloseReport r;
  size_t worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) r.max_ref = std::fmax(r.max_ref, std::fabs(ref[i]));
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = std::fabs((double)got[i] - ref[i]);
    CHECK_MSG(std::isfinite(got[i]), what + ": non-finite value at " + std::to_string(i));
    if (e > r.max_abs) r.max_abs = e, worst = i;
  }
  const double scale = std::fmax(r.max_ref, floor);
  r.rel = r.max_abs / scale;
  std::printf("    %-58s max|err| %.2e  rel %.2e  (%3.0f%% of tol %.0e)\n", what.c_str(), r.max_abs, r.rel,
              100.0 * r.rel / tol, tol);
  if (!(r.rel <= tol)) {
    char buf[256];
    std::snprintf(buf, sizeof buf, ": element %zu got %.9g ref %.9g (rel err %.3e > tol %.1e)", worst,
                  (double)got[worst], ref[worst], r.rel, tol);
    throw ::xpsr_test::Failure{what + buf};
  }
  return r;
}

// Restores the kernel set chosen at start-up when a test that switched sets ends (or fails).
struct IsaGuard {
  ~IsaGuard() { set_isa(best_isa()); }
};

// Kernel sets usable on this machine, best first.
inline std::vector<Isa> available_isas() {
  std::vector<Isa> v;
  for (Isa i : {Isa::Avx512, Isa::Avx2, Isa::Portable})
    if (isa_available(i)) v.push_back(i);
  return v;
}

}  // namespace xpsr::cpu::testing
