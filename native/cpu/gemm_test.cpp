// linear (the packed GEMM) against a float64 reference on the SD-1.5 / XPSR shapes and on edge sizes.
// Big cases check a sample of rows (every row of the GEMM is computed; the reference only for some).
// Tolerance: max|err| <= 2e-6 * max|ref| for K <= 1280 (f32 accumulation, K up to 5120 at 4e-6).
#include <algorithm>

#include "test_util.h"

using namespace xpsr;
using namespace xpsr::cpu::testing;

namespace {

struct LinearCase {
  int M, K, N;
  int ldx = 0, ldy = 0, ldr = 0;  // 0: dense
  bool bias = false, residual = false, alias_residual = false;
  int row_step = 1;  // reference for rows 0, step, 2*step, ... plus the last row
  double tol = 2e-6;
};

void run_linear(Backend& be, const LinearCase& c, uint64_t seed) {
  Rng rng(seed);
  const int ldx = c.ldx ? c.ldx : c.K, ldy = c.ldy ? c.ldy : c.N, ldr = c.ldr ? c.ldr : c.N;
  auto x = rng.vec((size_t)c.M * ldx);
  auto w = rng.vec((size_t)c.N * c.K);
  auto b = rng.vec(c.N);
  auto y0 = rng.vec((size_t)c.M * ldy);  // existing y content (guard columns must survive)
  auto r = rng.vec((size_t)c.M * ldr);
  auto W = be.upload("w", WeightKind::Linear, {c.N, c.K}, w.data());
  auto B = be.upload("b", WeightKind::Vector, {c.N}, b.data());
  Buf bx(be, x), by(be, y0), br(be, r);
  LinearArgs a;
  a.x = bx.p(), a.M = c.M, a.K = c.K, a.ldx = ldx;
  a.w = W.get(), a.b = c.bias ? B.get() : nullptr;
  a.y = by.p(), a.N = c.N, a.ldy = ldy;
  if (c.alias_residual) a.residual = by.p(), a.ldr = ldy;
  else if (c.residual) a.residual = br.p(), a.ldr = ldr;
  be.linear(a);
  auto y = by.get();
  std::vector<float> got;
  std::vector<double> ref;
  for (int m = 0; m < c.M; m = (m + c.row_step < c.M || m == c.M - 1) ? m + c.row_step : c.M - 1) {
    for (int n = 0; n < ldy; ++n) {
      double v = y0[(size_t)m * ldy + n];  // columns past N must be untouched
      if (n < c.N) {
        v = 0;
        for (int k = 0; k < c.K; ++k) v += (double)x[(size_t)m * ldx + k] * w[(size_t)n * c.K + k];
        if (c.bias) v += b[n];
        if (c.alias_residual) v += y0[(size_t)m * ldy + n];
        else if (c.residual) v += r[(size_t)m * ldr + n];
      }
      ref.push_back(v);
      got.push_back(y[(size_t)m * ldy + n]);
    }
    if (m == c.M - 1) break;
  }
  char name[160];
  std::snprintf(name, sizeof name, "linear M=%d K=%d N=%d ldx=%d ldy=%d%s%s%s", c.M, c.K, c.N, ldx, ldy,
                c.bias ? " +bias" : "", c.residual ? " +res" : "", c.alias_residual ? " +res(y)" : "");
  expect_close(name, got, ref, c.tol);
}

}  // namespace

TEST(cpu_linear_sd_shapes) {
  auto be = make_cpu_backend();
  // attn q/k/v/out at level 0 (4096 tokens x 320), FF GEGLU proj (320 -> 2*1280) and FF out (1280 -> 320)
  run_linear(*be, {4096, 320, 320, 0, 0, 0, true, false, false, 97}, 1);
  run_linear(*be, {4096, 320, 2560, 0, 0, 0, true, false, false, 251}, 2);
  run_linear(*be, {4096, 1280, 320, 0, 0, 0, true, true, false, 251}, 3);
  // cross-attention K/V from the 77-token context (768 wide), level 1 and 3 widths
  run_linear(*be, {154, 768, 640, 0, 0, 0, false, false, false, 1}, 4);
  run_linear(*be, {77, 768, 1280, 0, 0, 0, false, false, false, 1}, 5);
  // level 3: 64 tokens x 1280, FF out 5120 -> 1280 with residual
  run_linear(*be, {128, 5120, 1280, 0, 0, 0, true, true, false, 9, 4e-6}, 6);
  // time embedding MLP: 2 rows, 320 -> 1280
  run_linear(*be, {2, 320, 1280, 0, 0, 0, true, false, false, 1}, 7);
}

TEST(cpu_linear_edge_sizes) {
  auto be = make_cpu_backend(3);
  const int dims[][3] = {{1, 1, 1},     {1, 1, 3},     {1, 7, 1},     {2, 4, 4},   {5, 3, 17},
                         {7, 4, 4},     {13, 5, 33},   {9, 31, 15},   {6, 16, 16}, {8, 32, 32},
                         {17, 300, 47}, {97, 257, 65}, {193, 600, 48}};
  uint64_t seed = 10;
  for (auto& d : dims) {
    run_linear(*be, {d[0], d[1], d[2], 0, 0, 0, false, false, false, 1}, seed++);
    run_linear(*be, {d[0], d[1], d[2], 0, 0, 0, true, true, false, 1}, seed++);
  }
}

TEST(cpu_linear_strides_and_aliasing) {
  auto be = make_cpu_backend(2);
  // q|k|v packed in one row: read a K-slice window (ldx > K), write a column slice (ldy > N)
  run_linear(*be, {77, 320, 320, 960, 960, 0, false, false, false, 1}, 20);
  run_linear(*be, {50, 33, 17, 40, 29, 23, true, true, false, 1}, 21);
  // in-place residual: y = x W^T + b + y
  run_linear(*be, {300, 320, 320, 0, 0, 0, true, false, true, 7}, 22);
  run_linear(*be, {11, 700, 35, 0, 40, 0, true, false, true, 1}, 23);
}

TEST(cpu_linear_m_zero_and_errors) {
  auto be = make_cpu_backend(1);
  std::vector<float> w(12, 1.0f);
  auto W = be->upload("proj.weight", WeightKind::Linear, {3, 4}, w.data());
  LinearArgs a;
  a.M = 0, a.K = 4, a.ldx = 4, a.N = 3, a.ldy = 3, a.w = W.get();
  be->linear(a);  // nothing to do, no pointers needed
  Buf x(*be, 8), y(*be, 6);
  a.M = 2, a.x = x.p(), a.y = y.p();
  a.K = 5, a.ldx = 5;
  CHECK_THROWS_WITH(be->linear(a), "proj.weight' has shape [3, 4], expected [3, 5]");
  a.K = 4, a.ldx = 3;
  CHECK_THROWS_WITH(be->linear(a), "ldx = 3 is below 4");
}

// The driver's work split (gemm.cpp): panel shares when M < threads x 384 rows, row shares with several
// super-blocks and uneven remainders otherwise, several K blocks (so later blocks accumulate onto the
// bias / in-place residual of the first) and NC blocks, under every kernel set and thread count.
TEST(cpu_linear_work_split) {
  IsaGuard guard;
  for (cpu::Isa isa : available_isas()) {
    cpu::set_isa(isa);
    std::printf("    kernel set %s\n", cpu::isa_name(isa));
    uint64_t seed = 40;
    for (int threads : {1, 2, 3, 5}) {
      auto be = make_cpu_backend(threads);
      run_linear(*be, {767, 700, 300, 0, 0, 0, true, true, false, 13}, seed++);    // panel shares (T >= 2)
      run_linear(*be, {389, 1000, 1000, 0, 0, 0, true, false, true, 29}, seed++);  // many NC blocks, y = .. + y
      run_linear(*be, {1203, 450, 530, 0, 0, 0, true, false, true, 31}, seed++);   // row shares, super-blocks
      run_linear(*be, {2000, 200, 40, 0, 0, 0, false, true, false, 37}, seed++);   // narrow N
    }
  }
}
