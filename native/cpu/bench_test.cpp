// Micro-benchmarks of the CPU ops on real SD-1.5 shapes, printed as GFLOP/s (or GB/s) per kernel set.
// Skipped unless XPSR_BENCH=1:  XPSR_BENCH=1 ./xpsr_tests bench_   (XPSR_BENCH_THREADS=n to pin threads)
#include <chrono>
#include <cstdlib>
#include <functional>

#include "test_util.h"

using namespace xpsr;
using namespace xpsr::cpu::testing;

namespace {

int bench_threads() {
  const char* t = std::getenv("XPSR_BENCH_THREADS");
  return t ? std::atoi(t) : 0;
}

void require_bench() {
  const char* e = std::getenv("XPSR_BENCH");
  if (!e || std::string(e) != "1") SKIP("set XPSR_BENCH=1 to run benchmarks");
}

// Best-of-`reps` seconds of fn (after one warm-up call).
double time_best(const std::function<void()>& fn, int reps = 3) {
  fn();
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

// Runs fn under every kernel set and prints GFLOP/s.
void per_isa(const char* what, double flops, const std::function<void()>& fn) {
  IsaGuard guard;
  for (cpu::Isa isa : available_isas()) {
    cpu::set_isa(isa);
    const double s = time_best(fn, isa == cpu::Isa::Portable ? 1 : 3);
    std::printf("    %-52s %-9s %8.2f ms  %7.1f GFLOP/s\n", what, cpu::isa_name(isa), s * 1e3, flops / s * 1e-9);
  }
}

void bench_linear_shape(Backend& be, int M, int K, int N) {
  Rng rng(1);
  auto w = rng.vec((size_t)N * K);
  auto W = be.upload("w", WeightKind::Linear, {N, K}, w.data());
  Buf x(be, rng.vec((size_t)M * K)), y(be, (size_t)M * N);
  LinearArgs a;
  a.x = x.p(), a.M = M, a.K = K, a.ldx = K, a.w = W.get(), a.y = y.p(), a.N = N, a.ldy = N;
  char name[96];
  std::snprintf(name, sizeof name, "linear M=%d K=%d N=%d", M, K, N);
  per_isa(name, 2.0 * M * N * K, [&] { be.linear(a); });
}

void bench_conv_shape(Backend& be, int H, int C, int K, int R, int stride) {
  Rng rng(2);
  auto w = rng.vec((size_t)K * C * R * R);
  auto W = be.upload("w", WeightKind::Conv, {K, C, R, R}, w.data());
  const int pad = R / 2, P = (H + 2 * pad - R) / stride + 1;
  Buf x(be, rng.vec((size_t)H * H * C)), y(be, (size_t)P * P * K);
  Conv2dArgs a;
  a.x = x.p(), a.N = 1, a.H = H, a.W = H, a.C = C, a.w = W.get(), a.K = K, a.R = R, a.S = R, a.stride = stride;
  a.pad_top = a.pad_left = a.pad_bottom = a.pad_right = pad, a.y = y.p(), a.P = P, a.Q = P;
  char name[96];
  std::snprintf(name, sizeof name, "conv%dx%d s%d %dx%dx%d -> %d", R, R, stride, H, H, C, K);
  per_isa(name, 2.0 * P * P * K * C * R * R, [&] { be.conv2d(a); });
}

}  // namespace

TEST(bench_gemm) {
  require_bench();
  auto be = make_cpu_backend(bench_threads());
  std::printf("    %s\n", be->description().c_str());
  bench_linear_shape(*be, 8192, 320, 320);
  bench_linear_shape(*be, 2048, 640, 2560);
  bench_linear_shape(*be, 4096, 1280, 320);
  bench_linear_shape(*be, 154, 768, 640);
}

TEST(bench_conv) {
  require_bench();
  auto be = make_cpu_backend(bench_threads());
  bench_conv_shape(*be, 64, 320, 320, 3, 1);
  bench_conv_shape(*be, 32, 640, 640, 3, 1);
  bench_conv_shape(*be, 64, 320, 320, 3, 2);
  bench_conv_shape(*be, 16, 1280, 1280, 3, 1);
  bench_conv_shape(*be, 64, 4, 320, 3, 1);
}

TEST(bench_attention) {
  require_bench();
  auto be = make_cpu_backend(bench_threads());
  Rng rng(3);
  const int heads = 8, d = 40, L = 4096, w = heads * d;
  Buf q(*be, rng.vec((size_t)L * w)), k(*be, rng.vec((size_t)L * w)), v(*be, rng.vec((size_t)L * w));
  Buf o(*be, (size_t)L * w);
  AttentionArgs a;
  a.q = q.p(), a.k = k.p(), a.v = v.p(), a.o = o.p(), a.ldq = a.ldk = a.ldv = a.ldo = w;
  a.B = 1, a.Lq = L, a.Lk = L, a.heads = heads, a.head_dim = d, a.scale = 0.158f;
  per_isa("attention 4096x4096, 8 heads x 40", 4.0 * L * L * w, [&] { be->attention(a); });
  Buf kc(*be, rng.vec((size_t)77 * w)), vc(*be, rng.vec((size_t)77 * w));
  a.k = kc.p(), a.v = vc.p(), a.Lk = 77;
  per_isa("attention 4096x77, 8 heads x 40", 4.0 * L * 77 * w, [&] { be->attention(a); });
}

TEST(bench_norm_and_elementwise) {
  require_bench();
  auto be = make_cpu_backend(bench_threads());
  Rng rng(4);
  const int HW = 4096, C = 320;
  auto g = rng.vec(C);
  auto G = be->upload("g", WeightKind::Vector, {C}, g.data());
  Buf x(*be, rng.vec((size_t)2 * HW * C)), y(*be, (size_t)2 * HW * C);
  GroupNormArgs a;
  a.x = x.p(), a.y = y.p(), a.N = 2, a.HW = HW, a.C = C, a.gamma = G.get(), a.beta = G.get(), a.silu = true;
  const double bytes = 2.0 * 2 * HW * C * 4;
  IsaGuard guard;
  for (cpu::Isa isa : available_isas()) {
    cpu::set_isa(isa);
    double s = time_best([&] { be->group_norm(a); });
    std::printf("    %-52s %-9s %8.2f ms  %7.1f GB/s\n", "group_norm+silu 2x64x64x320", cpu::isa_name(isa), s * 1e3,
                bytes / s * 1e-9);
    UnaryArgs u;
    u.x = x.p(), u.y = y.p(), u.n = (size_t)2 * HW * C, u.op = UnaryOp::GeluErf;
    s = time_best([&] { be->unary(u); });
    std::printf("    %-52s %-9s %8.2f ms  %7.1f GB/s\n", "gelu_erf 2.6M", cpu::isa_name(isa), s * 1e3,
                bytes / s * 1e-9);
  }
}
