// Kernel-set agreement: every SIMD set the machine supports (AVX-512, AVX2) must match the portable set
// on the same inputs and weights (weights are uploaded once: the packed layout is shared by all sets).
// Covers the GEMM micro-kernels (linear, strided conv with edge tiles), attention (exp / max / scale row
// kernels), group_norm + SiLU, layer_norm and the unary / geglu / axpby kernels.
// Tolerance vs portable: max|diff| <= 2e-6 * max|portable| (summation order and ~1-ulp exp differ).
#include <functional>

#include "test_util.h"

using namespace xpsr;
using namespace xpsr::cpu::testing;

namespace {

// One op run under the active kernel set; returns its output.
using OpRun = std::function<std::vector<float>()>;

void compare_sets(const char* what, const OpRun& run, double tol = 2e-6) {
  IsaGuard guard;
  cpu::set_isa(cpu::Isa::Portable);
  const auto base = run();
  std::vector<double> ref(base.begin(), base.end());
  for (cpu::Isa isa : available_isas()) {
    if (isa == cpu::Isa::Portable) continue;
    cpu::set_isa(isa);
    expect_close(std::string(what) + " " + cpu::isa_name(isa) + " vs portable", run(), ref, tol);
  }
}

}  // namespace

TEST(cpu_isa_selection) {
  auto sets = available_isas();
  CHECK(!sets.empty() && sets.back() == cpu::Isa::Portable);
  auto be = make_cpu_backend(2);
  std::printf("    best set: %s; available:", cpu::isa_name(cpu::best_isa()));
  for (auto s : sets) std::printf(" %s", cpu::isa_name(s));
  std::printf("; %s\n", be->description().c_str());
  IsaGuard guard;
  for (auto s : sets) {
    cpu::set_isa(s);
    CHECK(cpu::kernels().isa == s);
    CHECK(be->description().find(cpu::isa_name(s)) != std::string::npos);
  }
#if !defined(XPSR_X86)
  CHECK_THROWS_WITH(cpu::set_isa(cpu::Isa::Avx2), "not available");
#endif
}

TEST(cpu_isa_sets_agree) {
  if (available_isas().size() < 2) SKIP("only the portable kernel set exists on this machine");
  auto be = make_cpu_backend(2);
  Rng rng(42);
  // linear with M/N tails and a bias + residual epilogue
  const int M = 203, K = 300, N = 77;
  auto w = rng.vec((size_t)N * K), bias = rng.vec(N);
  auto W = be->upload("w", WeightKind::Linear, {N, K}, w.data());
  auto Bv = be->upload("b", WeightKind::Vector, {N}, bias.data());
  Buf x(*be, rng.vec((size_t)M * K)), r(*be, rng.vec((size_t)M * N)), y(*be, (size_t)M * N);
  compare_sets("linear 203x300x77", [&] {
    LinearArgs a;
    a.x = x.p(), a.M = M, a.K = K, a.ldx = K, a.w = W.get(), a.b = Bv.get(), a.residual = r.p(), a.ldr = N;
    a.y = y.p(), a.N = N, a.ldy = N;
    be->linear(a);
    return y.get();
  });
  // 3x3 stride-2 conv on an odd image (im2col packing + edge tiles)
  auto cw = rng.vec(40 * 33 * 9);
  auto CW = be->upload("cw", WeightKind::Conv, {40, 33, 3, 3}, cw.data());
  Buf cx(*be, rng.vec(2 * 13 * 11 * 33)), cy(*be, 2 * 7 * 6 * 40);
  compare_sets("conv3x3 s2 13x11x33->40", [&] {
    Conv2dArgs a;
    a.x = cx.p(), a.N = 2, a.H = 13, a.W = 11, a.C = 33, a.w = CW.get(), a.K = 40, a.stride = 2;
    a.y = cy.p(), a.P = 7, a.Q = 6;
    be->conv2d(a);
    return cy.get();
  });
  // attention with several key blocks, a causal variant and head_dim 40
  Buf q(*be, rng.vec(300 * 120, -2, 2)), k(*be, rng.vec(300 * 120, -2, 2)), v(*be, rng.vec(300 * 120));
  Buf o(*be, 300 * 120);
  for (bool causal : {false, true})
    compare_sets(causal ? "attention causal 300x300 3x40" : "attention 300x300 3x40", [&] {
      AttentionArgs a;
      a.q = q.p(), a.k = k.p(), a.v = v.p(), a.o = o.p(), a.ldq = a.ldk = a.ldv = a.ldo = 120;
      a.B = 1, a.Lq = 300, a.Lk = 300, a.heads = 3, a.head_dim = 40, a.scale = 0.158f, a.causal = causal;
      be->attention(a);
      return o.get();
    });
  // group_norm + SiLU
  auto gam = rng.vec(96, 0.5, 1.5);
  auto G = be->upload("g", WeightKind::Vector, {96}, gam.data());
  Buf gx(*be, rng.vec(2 * 50 * 96, -3, 3)), gy(*be, 2 * 50 * 96);
  compare_sets("group_norm+silu 2x50x96", [&] {
    GroupNormArgs a;
    a.x = gx.p(), a.y = gy.p(), a.N = 2, a.HW = 50, a.C = 96, a.groups = 32, a.gamma = G.get(), a.beta = G.get();
    a.silu = true;
    be->group_norm(a);
    return gy.get();
  });
  // layer_norm with a masked tail (odd width) and a large mean
  auto lg = rng.vec(83, 0.5, 1.5);
  auto LG = be->upload("lg", WeightKind::Vector, {83}, lg.data());
  Buf lx(*be, rng.vec(9 * 83, 47, 53)), ly(*be, 9 * 83);
  compare_sets("layer_norm 9x83", [&] {
    LayerNormArgs a;
    a.x = lx.p(), a.y = ly.p(), a.rows = 9, a.C = 83, a.gamma = LG.get(), a.beta = LG.get();
    be->layer_norm(a);
    return ly.get();
  });
  // unary / geglu / axpby row kernels with tails
  Buf ux(*be, rng.vec(1001, -8, 8)), uy(*be, 1001);
  const std::pair<UnaryOp, const char*> ops[] = {{UnaryOp::Silu, "silu"},
                                                 {UnaryOp::QuickGelu, "quick_gelu"},
                                                 {UnaryOp::GeluErf, "gelu_erf"},
                                                 {UnaryOp::LeakyRelu, "leaky_relu"}};
  for (auto [op, name] : ops)
    compare_sets((std::string("unary ") + name + " n=1001").c_str(), [&] {
      UnaryArgs a;
      a.x = ux.p(), a.y = uy.p(), a.n = 1001, a.op = op;
      be->unary(a);
      return uy.get();
    });
  compare_sets("geglu 7 rows x 71", [&] {
    GegluArgs a;
    a.x = ux.p(), a.y = uy.p(), a.rows = 7, a.inner = 71;
    be->geglu(a);
    return uy.get();
  });
  Buf ab(*be, rng.vec(1001));
  compare_sets("axpby 1001", [&] {
    AxpbyArgs a;
    a.a = ux.p(), a.b = ab.p(), a.y = uy.p(), a.n = 1001, a.alpha = 0.3f, a.beta = 2.0f;
    be->axpby(a);
    return uy.get();
  });
}
