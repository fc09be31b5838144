// The bf16 compute mode (cpu_backend.h): linear and conv2d with bf16 operands and f32 accumulation.
// Two references per case, both float64:
//  * the exact bf16 math (operands rounded to bf16 first, then multiplied and summed exactly): the
//    kernel must match it like the f32 GEMM matches f32 math, max|err| <= 3e-6 * max|ref|;
//  * the f32 math: the numeric cost of the mode, printed and bounded by 1e-2 * max|ref| (measured
//    ~2e-3 to 4e-3 on these uniform inputs: bf16 keeps 8 significant bits).
// Covers the SD-1.5 shapes, odd K (a zero pad half of the last pair), M / N tails, bias + residual
// (also in place), the panel / row work split under several thread counts, 3x3 convs with 3 and 320
// channels, and the errors when the mode is not available. Skipped (with a message) without AVX512_BF16.
#include <cstdlib>

#include "cpu_backend.h"
#include "gemm.h"
#include "test_util.h"

using namespace xpsr;
using namespace xpsr::cpu::testing;

namespace {

float bf(float x) { return cpu::from_bf16(cpu::to_bf16(x)); }

void require_bf16() {
  if (!cpu_bf16_available()) SKIP("this CPU has no AVX512_BF16 (or XPSR_CPU_ISA disables AVX-512): bf16 mode untested");
}

std::unique_ptr<Backend> bf16_backend(int threads) {
  return make_cpu_backend(CpuBackendOptions{threads, CpuPrecision::BF16});
}

struct Case {
  int M, K, N;
  bool bias = false, residual = false, in_place = false;
  int row_step = 1;
};

void run_linear_bf16(Backend& be, const Case& c, uint64_t seed) {
  Rng rng(seed);
  auto x = rng.vec((size_t)c.M * c.K), w = rng.vec((size_t)c.N * c.K), b = rng.vec(c.N), r = rng.vec((size_t)c.M * c.N);
  auto W = be.upload("w", WeightKind::Linear, {c.N, c.K}, w.data());
  auto B = be.upload("b", WeightKind::Vector, {c.N}, b.data());
  Buf bx(be, x), by(be, r), br(be, r);
  LinearArgs a;
  a.x = bx.p(), a.M = c.M, a.K = c.K, a.ldx = c.K, a.w = W.get(), a.b = c.bias ? B.get() : nullptr;
  a.y = by.p(), a.N = c.N, a.ldy = c.N;
  if (c.residual) a.residual = c.in_place ? by.p() : br.p(), a.ldr = c.N;
  be.linear(a);
  auto y = by.get();
  std::vector<float> got;
  std::vector<double> exact, f32;
  for (int m = 0; m < c.M; m = (m + c.row_step < c.M || m == c.M - 1) ? m + c.row_step : c.M - 1) {
    for (int n = 0; n < c.N; ++n) {
      double e = 0, f = 0;
      for (int k = 0; k < c.K; ++k) {
        e += (double)bf(x[(size_t)m * c.K + k]) * bf(w[(size_t)n * c.K + k]);
        f += (double)x[(size_t)m * c.K + k] * w[(size_t)n * c.K + k];
      }
      const double add = (c.bias ? b[n] : 0.0) + (c.residual ? r[(size_t)m * c.N + n] : 0.0);
      exact.push_back(e + add);
      f32.push_back(f + add);
      got.push_back(y[(size_t)m * c.N + n]);
    }
    if (m == c.M - 1) break;
  }
  char name[120];
  std::snprintf(name, sizeof name, "bf16 linear M=%d K=%d N=%d%s%s", c.M, c.K, c.N, c.bias ? " +bias" : "",
                c.residual ? (c.in_place ? " +res(y)" : " +res") : "");
  expect_close(std::string(name) + " vs bf16 math", got, exact, 3e-6);
  expect_close(std::string(name) + " vs f32 math", got, f32, 1e-2);
}

void run_conv_bf16(Backend& be, int N, int H, int C, int K, int stride, int pixel_step, uint64_t seed) {
  Rng rng(seed);
  const int P = (H + 2 - 3) / stride + 1;
  auto x = rng.vec((size_t)N * H * H * C), w = rng.vec((size_t)K * C * 9), b = rng.vec(K);
  auto W = be.upload("cw", WeightKind::Conv, {K, C, 3, 3}, w.data());
  auto B = be.upload("cb", WeightKind::Vector, {K}, b.data());
  Buf bx(be, x), by(be, (size_t)N * P * P * K);
  Conv2dArgs a;
  a.x = bx.p(), a.N = N, a.H = H, a.W = H, a.C = C, a.w = W.get(), a.b = B.get(), a.K = K, a.stride = stride;
  a.y = by.p(), a.P = P, a.Q = P;
  be.conv2d(a);
  auto y = by.get();
  std::vector<float> got;
  std::vector<double> exact, f32;
  const int64_t pixels = (int64_t)N * P * P;
  for (int64_t m = 0; m < pixels; m += pixel_step) {
    const int64_t mm = m + pixel_step >= pixels ? pixels - 1 : m;
    const int64_t n = mm / (P * P), p = mm / P % P, q = mm % P;
    for (int k = 0; k < K; ++k) {
      double e = b[k], f = b[k];
      for (int ci = 0; ci < C; ++ci)
        for (int r = 0; r < 3; ++r)
          for (int s = 0; s < 3; ++s) {
            const int64_t ih = p * stride - 1 + r, iw = q * stride - 1 + s;
            if (ih < 0 || ih >= H || iw < 0 || iw >= H) continue;
            const float xv = x[((n * H + ih) * H + iw) * C + ci], wv = w[(((size_t)k * C + ci) * 3 + r) * 3 + s];
            e += (double)bf(xv) * bf(wv);
            f += (double)xv * wv;
          }
      exact.push_back(e);
      f32.push_back(f);
      got.push_back(y[mm * K + k]);
    }
    if (mm == pixels - 1) break;
  }
  char name[120];
  std::snprintf(name, sizeof name, "bf16 conv3x3 s%d %dx%dx%dx%d -> %d", stride, N, H, H, C, K);
  expect_close(std::string(name) + " vs bf16 math", got, exact, 3e-6);
  expect_close(std::string(name) + " vs f32 math", got, f32, 1e-2);
}

}  // namespace

TEST(cpu_bf16_linear) {
  require_bf16();
  auto be = bf16_backend(0);
  CHECK(be->description().find("bf16") != std::string::npos);
  run_linear_bf16(*be, {4096, 320, 320, true, false, false, 97}, 1);    // level-0 q/k/v/out
  run_linear_bf16(*be, {512, 1280, 10240, true, false, false, 61}, 2);  // level-2 GEGLU proj (panel split)
  run_linear_bf16(*be, {128, 5120, 1280, true, true, false, 9}, 3);     // level-3 FF out + residual
  run_linear_bf16(*be, {154, 768, 640, false, false, false, 1}, 4);     // cross-attention K/V
  run_linear_bf16(*be, {2, 320, 1280, true, false, false, 1}, 5);       // time embedding
  const int odd[][3] = {{1, 1, 1}, {5, 3, 17}, {13, 5, 33}, {9, 31, 15}, {97, 257, 65}, {193, 601, 48}};
  uint64_t seed = 10;
  for (auto& d : odd) run_linear_bf16(*be, {d[0], d[1], d[2], true, true, (seed & 1) != 0, 1}, seed++);
}

TEST(cpu_bf16_work_split) {
  require_bf16();
  uint64_t seed = 40;
  for (int threads : {1, 2, 3}) {
    auto be = bf16_backend(threads);
    run_linear_bf16(*be, {767, 700, 300, true, true, false, 13}, seed++);
    run_linear_bf16(*be, {1203, 451, 530, true, true, true, 31}, seed++);
  }
}

TEST(cpu_bf16_conv) {
  require_bf16();
  auto be = bf16_backend(0);
  run_conv_bf16(*be, 2, 64, 320, 320, 1, 517, 1);   // level-0 resnet conv
  run_conv_bf16(*be, 2, 16, 1280, 1280, 1, 37, 2);  // level-2 (panel split, K = 11520)
  run_conv_bf16(*be, 1, 64, 3, 16, 1, 7, 3);        // 3-channel input conv (K = 27, odd)
  run_conv_bf16(*be, 2, 13, 33, 40, 2, 1, 4);       // odd size, stride 2, edge tiles
}

TEST(cpu_bf16_errors) {
  // unknown precision names are refused with a coded error
  setenv("XPSR_CPU_PRECISION", "fp8", 1);
  CHECK_THROWS_WITH(make_cpu_backend(1), "XPSR_CPU_PRECISION must be fp32 or bf16");
  setenv("XPSR_CPU_PRECISION", "fp32", 1);
  CHECK(make_cpu_backend(1)->description().find("bf16") == std::string::npos);
  unsetenv("XPSR_CPU_PRECISION");
  // with the AVX-512 set disallowed the mode is unavailable and creating it fails clearly
  const char* cap = std::getenv("XPSR_CPU_ISA");
  const std::string saved = cap ? cap : "";
  setenv("XPSR_CPU_ISA", "avx2", 1);
  CHECK(!cpu_bf16_available());
  CHECK_THROWS_WITH(bf16_backend(1), "bf16 compute needs a CPU with AVX512_BF16");
  if (cap) setenv("XPSR_CPU_ISA", saved.c_str(), 1);
  else unsetenv("XPSR_CPU_ISA");
}
