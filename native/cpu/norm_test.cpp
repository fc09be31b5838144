// group_norm (+SiLU) and layer_norm against float64 references: UNet shapes (2 x 64x64 x 320, 1280 at
// 8x8), the VAE's 512 channels with eps 1e-6, in-place use, data with a large mean (|mean| / std = 1e3,
// the case a one-pass f32 variance or an x * scale + shift apply gets wrong), and tiny sizes.
// Tolerance: max|err| <= 2e-6 * max|ref| for group_norm (measured ~2e-7), 1e-6 for layer_norm (~1.4e-7 for
// the SIMD sets, whose apply pass is f32; ~3e-8 portable). Every kernel set is checked.
#include <cmath>

#include "test_util.h"

using namespace xpsr;
using namespace xpsr::cpu::testing;

namespace {

struct GnCase {
  int N, HW, C, groups;
  float eps;
  bool silu, in_place;
  double mean = 0.0, spread = 1.0;  // input = mean + uniform(-spread, spread)
  double tol = 2e-6;
};

void run_group_norm(Backend& be, const GnCase& c, uint64_t seed) {
  Rng rng(seed);
  const size_t n = (size_t)c.N * c.HW * c.C;
  auto x = rng.vec(n, c.mean - c.spread, c.mean + c.spread);
  auto g = rng.vec(c.C, 0.5, 1.5), b = rng.vec(c.C);
  auto G = be.upload("norm.weight", WeightKind::Vector, {c.C}, g.data());
  auto Bt = be.upload("norm.bias", WeightKind::Vector, {c.C}, b.data());
  Buf bx(be, x), by(be, n);
  GroupNormArgs a;
  a.x = bx.p(), a.y = c.in_place ? bx.p() : by.p(), a.N = c.N, a.HW = c.HW, a.C = c.C, a.groups = c.groups;
  a.eps = c.eps, a.gamma = G.get(), a.beta = Bt.get(), a.silu = c.silu;
  be.group_norm(a);
  auto y = c.in_place ? bx.get() : by.get();
  std::vector<double> ref(n);
  const int cg = c.C / c.groups;
  for (int s = 0; s < c.N; ++s)
    for (int gi = 0; gi < c.groups; ++gi) {
      double sum = 0, sq = 0;
      for (int i = 0; i < c.HW; ++i)
        for (int ch = gi * cg; ch < (gi + 1) * cg; ++ch) sum += x[((size_t)s * c.HW + i) * c.C + ch];
      const double mean = sum / ((double)c.HW * cg);
      for (int i = 0; i < c.HW; ++i)
        for (int ch = gi * cg; ch < (gi + 1) * cg; ++ch) {
          const double d = x[((size_t)s * c.HW + i) * c.C + ch] - mean;
          sq += d * d;
        }
      const double rstd = 1.0 / std::sqrt(sq / ((double)c.HW * cg) + (double)c.eps);
      for (int i = 0; i < c.HW; ++i)
        for (int ch = gi * cg; ch < (gi + 1) * cg; ++ch) {
          const size_t idx = ((size_t)s * c.HW + i) * c.C + ch;
          double v = (x[idx] - mean) * rstd * g[ch] + b[ch];
          if (c.silu) v = v / (1.0 + std::exp(-v));
          ref[idx] = v;
        }
    }
  char name[160];
  std::snprintf(name, sizeof name, "group_norm %dx%dx%d g%d eps%.0e%s%s mean=%g", c.N, c.HW, c.C, c.groups,
                (double)c.eps, c.silu ? " +silu" : "", c.in_place ? " in-place" : "", c.mean);
  expect_close(name, y, ref, c.tol);
}

void run_layer_norm(Backend& be, int rows, int C, bool in_place, double mean, double spread, uint64_t seed) {
  Rng rng(seed);
  auto x = rng.vec((size_t)rows * C, mean - spread, mean + spread);
  auto g = rng.vec(C, 0.5, 1.5), b = rng.vec(C);
  auto G = be.upload("ln.weight", WeightKind::Vector, {C}, g.data());
  auto Bt = be.upload("ln.bias", WeightKind::Vector, {C}, b.data());
  Buf bx(be, x), by(be, (size_t)rows * C);
  LayerNormArgs a;
  a.x = bx.p(), a.y = in_place ? bx.p() : by.p(), a.rows = rows, a.C = C, a.gamma = G.get(), a.beta = Bt.get();
  be.layer_norm(a);
  auto y = in_place ? bx.get() : by.get();
  std::vector<double> ref((size_t)rows * C);
  for (int r = 0; r < rows; ++r) {
    const float* xr = &x[(size_t)r * C];
    double s = 0, sq = 0;
    for (int c = 0; c < C; ++c) s += xr[c];
    const double m = s / C;
    for (int c = 0; c < C; ++c) sq += (xr[c] - m) * (xr[c] - m);
    const double rstd = 1.0 / std::sqrt(sq / C + 1e-5);
    for (int c = 0; c < C; ++c) ref[(size_t)r * C + c] = (xr[c] - m) * rstd * g[c] + b[c];
  }
  char name[128];
  std::snprintf(name, sizeof name, "layer_norm %dx%d%s mean=%g", rows, C, in_place ? " in-place" : "", mean);
  expect_close(name, y, ref, 1e-6);
}

}  // namespace

// Every kernel set this machine has (AVX-512, AVX2, portable) against the float64 reference.
TEST(cpu_group_norm_shapes) {
  IsaGuard guard;
  for (cpu::Isa isa : available_isas()) {
    cpu::set_isa(isa);
    std::printf("    kernel set %s\n", cpu::isa_name(isa));
    auto be = make_cpu_backend();
    run_group_norm(*be, {2, 4096, 320, 32, 1e-5f, true, false}, 1);               // resnet norm1 + SiLU, level 0
    run_group_norm(*be, {2, 4096, 320, 32, 1e-6f, false, true}, 2);               // Transformer2D input norm, in place
    run_group_norm(*be, {2, 64, 1280, 32, 1e-5f, true, false}, 3);                // level 3
    run_group_norm(*be, {2, 1024, 960, 32, 1e-5f, true, true}, 4);                // up-block concat width
    run_group_norm(*be, {1, 1024, 512, 32, 1e-6f, true, false}, 5);               // VAE
    run_group_norm(*be, {1, 4096, 128, 32, 1e-6f, true, false, 1000.0, 1.0}, 6);  // large mean
    run_group_norm(*be, {2, 256, 64, 32, 1e-5f, false, false, -300.0, 0.01}, 7);
    run_group_norm(*be, {1, 1, 32, 32, 1e-5f, false, false}, 8);  // one value per group: y = beta
    run_group_norm(*be, {3, 7, 6, 3, 1e-5f, true, false}, 9);
    run_group_norm(*be, {1, 13, 5, 1, 1e-5f, false, true}, 10);
  }
}

TEST(cpu_layer_norm_shapes) {
  IsaGuard guard;
  for (cpu::Isa isa : available_isas()) {
    cpu::set_isa(isa);
    std::printf("    kernel set %s\n", cpu::isa_name(isa));
    auto be = make_cpu_backend();
    run_layer_norm(*be, 4096, 320, false, 0.0, 1.0, 1);
    run_layer_norm(*be, 154, 768, true, 0.0, 3.0, 2);
    run_layer_norm(*be, 64, 1280, false, 500.0, 0.5, 3);
    run_layer_norm(*be, 77, 1279, false, -40.0, 2.0, 7);  // odd width: masked tails
    run_layer_norm(*be, 3, 5, false, 0.0, 1.0, 4);
    run_layer_norm(*be, 1, 1, true, 2.0, 1.0, 5);
    run_layer_norm(*be, 2, 7, false, 0.0, 0.0, 6);  // constant rows: y = beta
  }
}

TEST(cpu_norm_argument_errors) {
  auto be = make_cpu_backend(1);
  std::vector<float> g(30, 1.0f);
  auto G = be->upload("gn.weight", WeightKind::Vector, {30}, g.data());
  Buf x(*be, 60);
  GroupNormArgs a;
  a.x = x.p(), a.y = x.p(), a.N = 1, a.HW = 2, a.C = 30, a.groups = 32, a.gamma = G.get(), a.beta = G.get();
  CHECK_THROWS_WITH(be->group_norm(a), "C = 30 is not a multiple of groups = 32");
  a.groups = 5, a.C = 20;
  CHECK_THROWS_WITH(be->group_norm(a), "'gn.weight' has shape [30], expected [20]");
}
