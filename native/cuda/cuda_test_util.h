// Shared helpers of the CUDA op tests (native/cuda/*_test.cu): the two backends (CUDA under test, CPU as
// the reference; both created once per process), tensors mirrored on both, fp16-rounded random data (so
// both backends see bit-identical inputs and weights), and the comparison that prints max abs/rel error
// and the share of the tolerance used. Tolerance model (each test states its own values):
//   |gpu - cpu| <= rtol * |cpu| + atol, atol usually a fraction of rms(cpu).
// The CPU backend computes in f32 from the same fp16-representable inputs, so the difference is the GPU's
// fp16 storage of the output (<= 2^-11 relative) plus fp16 intermediates (attention's P) plus summation
// order - never the input rounding.
#pragma once
#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../common/dtype.h"
#include "../engine/backend.h"
#include "../test/test.h"
#include "cuda_backend.h"
#include "kernels.h"  // tile-policy hooks (set_forced_gemm_plan, last_gemm_plan, ...)

namespace xpsr_cuda_test {

using namespace xpsr;

inline std::unique_ptr<Backend>& gpu_slot() {
  static std::unique_ptr<Backend> b;
  return b;
}

// The CUDA backend under test; SKIPs the calling test when there is no usable device.
inline Backend& gpu() {
  static std::string why;
  static bool tried = false;
  auto& b = gpu_slot();
  if (!b && !tried) {
    tried = true;
    const auto devs = list_cuda_devices(&why);
    if (devs.empty()) {
      why = "no CUDA device: " + why;
    } else {
      try {
        b = make_cuda_backend(0);
      } catch (const Error& e) {
        why = std::string("no usable CUDA device: ") + e.what();
      }
    }
  }
  if (!b) SKIP(why);
  return *b;
}

inline Backend& cpu() {
  static std::unique_ptr<Backend> b = make_cpu_backend(0);
  return *b;
}

inline float round_f16(float x) { return f16_to_f32(f32_to_f16(x)); }

// Normal(mean, scale) values rounded to fp16.
inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f, float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(mean, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = round_f16(d(rng));
  return v;
}

// The same logical activation tensor on both backends.
struct Tensor2 {
  size_t n = 0;
  void* g = nullptr;
  void* c = nullptr;
  explicit Tensor2(size_t count) : n(count) {
    g = gpu().alloc(std::max<size_t>(1, n) * dtype_size(gpu().act_dtype()));
    c = cpu().alloc(std::max<size_t>(1, n) * dtype_size(cpu().act_dtype()));
  }
  Tensor2(const Tensor2&) = delete;
  Tensor2& operator=(const Tensor2&) = delete;
  ~Tensor2() {
    if (g) gpu().free(g);
    if (c) cpu().free(c);
  }
  void set(const std::vector<float>& v) {
    gpu().upload_act(g, v.data(), n);
    cpu().upload_act(c, v.data(), n);
  }
  void poison() {  // NaN everywhere: an element the op forgets to write fails the comparison
    std::vector<float> v(n, std::nanf(""));
    gpu().upload_act(g, v.data(), n);
    cpu().upload_act(c, v.data(), n);
  }
  std::vector<float> get_g() const {
    std::vector<float> v(n);
    gpu().download_act(v.data(), g, n);
    return v;
  }
  std::vector<float> get_c() const {
    std::vector<float> v(n);
    cpu().download_act(v.data(), c, n);
    return v;
  }
  // element offsets into the buffers
  void* gp(size_t off = 0) const { return static_cast<char*>(g) + off * dtype_size(gpu().act_dtype()); }
  void* cp(size_t off = 0) const { return static_cast<char*>(c) + off * dtype_size(cpu().act_dtype()); }
};

struct Weight2 {
  std::shared_ptr<Weight> g, c;
};
inline Weight2 upload2(const std::string& name, WeightKind kind, const std::vector<int64_t>& shape,
                       const std::vector<float>& data) {
  return {gpu().upload(name, kind, shape, data.data()), cpu().upload(name, kind, shape, data.data())};
}
inline Weight2 rand_weight(const std::string& name, WeightKind kind, const std::vector<int64_t>& shape, uint32_t seed,
                           float scale) {
  size_t n = 1;
  for (auto d : shape) n *= (size_t)d;
  return upload2(name, kind, shape, randn(n, seed, scale));
}

inline double rms(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += (double)x * x;
  return v.empty() ? 0.0 : std::sqrt(s / v.size());
}

struct Tol {
  double rtol, atol;
};

// Compares and prints "    <what>: max_abs .. max_rel .. tol used ..%". Fails on NaN or a violation.
inline void expect_close(const std::string& what, const std::vector<float>& got, const std::vector<float>& ref,
                         Tol tol) {
  CHECK_MSG(got.size() == ref.size(), what + ": size mismatch");
  double max_abs = 0, max_rel = 0, worst = 0;
  size_t worst_i = 0, bad = 0;
  const double floor_rel = 1e-3 * rms(ref) + 1e-30;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], r = ref[i];
    const double d = std::fabs(g - r);
    const double allowed = tol.rtol * std::fabs(r) + tol.atol;
    double used = std::isnan(g) || std::isnan(r) ? INFINITY : (allowed > 0 ? d / allowed : (d > 0 ? INFINITY : 0));
    if (std::isnan(g) != std::isnan(r)) used = INFINITY;
    if (used > 1.0) ++bad;
    if (used > worst || (std::isinf(used) && !std::isinf(worst))) {
      worst = used;
      worst_i = i;
    }
    if (!std::isnan(d)) {
      max_abs = std::max(max_abs, d);
      max_rel = std::max(max_rel, d / std::max(std::fabs(r), floor_rel));
    }
  }
  std::printf("    %s: n %zu, rms(ref) %.3g, max_abs %.3g, max_rel %.3g, tol used %.1f%% (rtol %.2g, atol %.3g)\n",
              what.c_str(), got.size(), rms(ref), max_abs, max_rel, worst * 100.0, tol.rtol, tol.atol);
  if (bad) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s: %zu of %zu elements out of tolerance; worst [%zu] gpu %.6g vs cpu %.6g",
                  what.c_str(), bad, got.size(), worst_i, (double)got[worst_i], (double)ref[worst_i]);
    CHECK_MSG(false, std::string(buf));
  }
}

// Standard tolerance for ops whose only GPU-specific error is the fp16 rounding of the output (and f32
// summation order): 1 fp16 ulp relative (2x the rounding bound) plus 2^-12 of the output's rms.
inline Tol out_rounding_tol(const std::vector<float>& ref) { return {1.0 / 1024, rms(ref) / 4096 + 1e-7}; }

// ---- forcing kernel variants (tuning.h) -------------------------------------------------------------------
// GEMM plans to run a case with: (tile, splits); tile -1 = the active policy's own choice.
using GemmPlans = std::vector<std::pair<int, int>>;
inline GemmPlans policy_plan() { return {{-1, 1}}; }
// The policy's choice, then every tile with each split count in `splits`.
inline GemmPlans every_plan(std::initializer_list<int> splits) {
  GemmPlans p = policy_plan();
  for (int t = 0; t < cuda::kGemmTiles; ++t)
    for (int s : splits) p.push_back({t, s});
  return p;
}
// Clears every forced variant when a test ends (also when a check throws).
struct ForcedPlanReset {
  ~ForcedPlanReset() {
    cuda::set_forced_gemm_plan(-1, 1);
    cuda::set_forced_attn_d160_variant(-1);
    cuda::set_forced_gn_finalize(-1);
  }
};
// "[128x256/8w(64x64) x3]" for the plan the last GEMM/conv launch used; fails if a forced tile was not used.
inline std::string last_plan_label(int forced_tile) {
  const cuda::GemmPlan p = cuda::last_gemm_plan();
  CHECK_MSG(forced_tile < 0 || (int)p.tile == forced_tile,
            std::string("forced tile ") + cuda::gemm_tile_name((cuda::GemmTile)forced_tile) + " was not used");
  return std::string("[") + (forced_tile < 0 ? "policy " : "") + cuda::gemm_tile_name(p.tile) + " x" +
         std::to_string(p.splits) + "]";
}

}  // namespace xpsr_cuda_test
