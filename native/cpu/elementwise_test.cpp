// Elementwise and data-movement ops against float64 / exact references: unary (silu, quick_gelu,
// gelu_erf, leaky_relu) over [-12, 12] plus extreme inputs, geglu at FF width 1280, axpby (with aliasing), channel_add,
// concat, slice, nearest upsample (2x and odd sizes, PyTorch floor rule) and embedding. Per element:
// |err| <= 1e-6 |ref| + 3e-7 max(1, |x|) for the transcendental ops (the SIMD erfc is good to 1.5e-7
// absolute); the copy ops must be exact.
#include <cmath>
#include <functional>

#include "test_util.h"

using namespace xpsr;
using namespace xpsr::cpu::testing;

namespace {

double ref_unary(UnaryOp op, double x) {
  switch (op) {
    case UnaryOp::Silu: return x / (1.0 + std::exp(-x));
    case UnaryOp::QuickGelu: return x / (1.0 + std::exp(-1.702 * x));
    case UnaryOp::GeluErf: return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case UnaryOp::LeakyRelu: return x >= 0 ? x : 0.2 * x;
  }
  return 0;
}

// Every element: |got - ref| <= rel * |ref| + abs * max(1, |x|).
void expect_each(const std::string& what, const std::vector<float>& got, const std::vector<double>& ref,
                 const std::vector<float>& x, double rel, double abs) {
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double bound = rel * std::fabs(ref[i]) + abs * std::fmax(1.0, std::fabs((double)x[i]));
    const double e = std::fabs((double)got[i] - ref[i]);
    worst = std::fmax(worst, e / bound);
    if (!(e <= bound)) {
      char buf[200];
      std::snprintf(buf, sizeof buf, ": x = %.9g got %.9g ref %.9g", (double)x[i], (double)got[i], ref[i]);
      throw ::xpsr_test::Failure{what + buf};
    }
  }
  std::printf("    %-58s worst element at %3.0f%% of its bound\n", what.c_str(), 100.0 * worst);
}

template <typename T>
void expect_exact(const std::string& what, const std::vector<float>& got, const std::vector<T>& ref) {
  CHECK_MSG(got.size() == ref.size(), what + ": size");
  for (size_t i = 0; i < ref.size(); ++i)
    CHECK_MSG(got[i] == (float)ref[i], what + ": mismatch at " + std::to_string(i));
}

std::vector<float> unary_inputs() {
  Rng rng(5);
  auto x = rng.vec(100003, -12.0, 12.0);
  const float special[] = {0.0f,  -0.0f,  1e-30f, -1e-30f, 1e-6f,  -1e-6f,  20.0f, -20.0f, 50.0f,   -50.0f,
                           87.0f, -87.0f, 88.5f,  -88.5f,  100.0f, -100.0f, 1e4f,  -1e4f,  3.0e38f, -3.0e38f};
  x.insert(x.begin(), std::begin(special), std::end(special));
  return x;
}

}  // namespace

TEST(cpu_unary_ops) {
  IsaGuard guard;  // every kernel set this machine has
  for (cpu::Isa isa : available_isas()) {
    cpu::set_isa(isa);
    std::printf("    kernel set %s\n", cpu::isa_name(isa));
    auto be = make_cpu_backend();
    auto x = unary_inputs();
    const std::pair<UnaryOp, const char*> ops[] = {{UnaryOp::Silu, "silu"},
                                                   {UnaryOp::QuickGelu, "quick_gelu"},
                                                   {UnaryOp::GeluErf, "gelu_erf"},
                                                   {UnaryOp::LeakyRelu, "leaky_relu"}};
    for (auto [op, name] : ops) {
      Buf bx(*be, x), by(*be, x.size());
      UnaryArgs a;
      a.x = bx.p(), a.y = by.p(), a.n = x.size(), a.op = op;
      be->unary(a);
      std::vector<double> ref(x.size());
      for (size_t i = 0; i < x.size(); ++i) ref[i] = ref_unary(op, x[i]);
      expect_each(std::string("unary ") + name + " n=100023", by.get(), ref, x, 1e-6, 3e-7);
      a.y = bx.p();  // in place, odd length
      a.n = 13;
      be->unary(a);
      auto y = bx.get();
      expect_each(std::string("unary ") + name + " in place n=13", std::vector<float>(y.begin(), y.begin() + 13),
                  std::vector<double>(ref.begin(), ref.begin() + 13), std::vector<float>(x.begin(), x.begin() + 13),
                  1e-6, 3e-7);
    }
  }
}

TEST(cpu_geglu) {
  IsaGuard guard;  // every kernel set this machine has
  for (cpu::Isa isa : available_isas()) {
    cpu::set_isa(isa);
    std::printf("    kernel set %s\n", cpu::isa_name(isa));
    auto be = make_cpu_backend();
    for (auto [rows, inner] : {std::pair{64, 1280}, std::pair{3, 7}, std::pair{1, 1}}) {
      Rng rng(rows);
      auto x = rng.vec((size_t)rows * 2 * inner, -6.0, 6.0);
      Buf bx(*be, x), by(*be, (size_t)rows * inner);
      GegluArgs a;
      a.x = bx.p(), a.y = by.p(), a.rows = rows, a.inner = inner;
      be->geglu(a);
      std::vector<double> ref;
      std::vector<float> mag;
      for (int r = 0; r < rows; ++r)
        for (int i = 0; i < inner; ++i) {
          const double av = x[(size_t)r * 2 * inner + i], g = x[(size_t)r * 2 * inner + inner + i];
          ref.push_back(av * ref_unary(UnaryOp::GeluErf, g));
          mag.push_back((float)(std::fabs(av) * std::fmax(1.0, std::fabs(g))));
        }
      expect_each("geglu rows=" + std::to_string(rows) + " inner=" + std::to_string(inner), by.get(), ref, mag, 2e-6,
                  3e-7);
    }
  }
}

TEST(cpu_axpby_and_channel_add) {
  auto be = make_cpu_backend();
  Rng rng(7);
  const size_t n = 100003;
  auto va = rng.vec(n), vb = rng.vec(n);
  std::vector<float> mag(n);
  std::vector<double> ref(n), ref_a(n);
  for (size_t i = 0; i < n; ++i) {
    ref[i] = 0.7 * (double)va[i] - 1.3 * (double)vb[i];
    ref_a[i] = 0.7 * (double)va[i];
    mag[i] = (float)(0.7 * std::fabs(va[i]) + 1.3 * std::fabs(vb[i]));
  }
  for (int alias = 0; alias < 3; ++alias) {  // y separate, y == a, y == b
    Buf a(*be, va), b(*be, vb), y(*be, n);
    AxpbyArgs args;
    args.a = a.p(), args.b = b.p(), args.y = alias == 0 ? y.p() : alias == 1 ? a.p() : b.p();
    args.n = n, args.alpha = 0.7f, args.beta = -1.3f;
    be->axpby(args);
    expect_each("axpby alias=" + std::to_string(alias),
                (alias == 0   ? y
                 : alias == 1 ? a
                              : b)
                    .get(),
                ref, mag, 0, 2.5e-7);
  }
  Buf a(*be, va), y(*be, n);
  AxpbyArgs args;
  args.a = a.p(), args.y = y.p(), args.n = n, args.alpha = 0.7f;
  be->axpby(args);
  expect_each("axpby b=null", y.get(), ref_a, mag, 0, 1.5e-7);

  for (auto [N, HW, C] : {std::tuple{2, 37, 320}, std::tuple{1, 5, 3}}) {
    auto x = rng.vec((size_t)N * HW * C), v = rng.vec((size_t)N * C);
    Buf bx(*be, x), bv(*be, v);
    ChannelAddArgs c;
    c.x = bx.p(), c.v = bv.p(), c.y = bx.p(), c.N = N, c.HW = HW, c.C = C;
    be->channel_add(c);
    std::vector<float> ref_c(x.size());
    for (size_t i = 0; i < x.size(); ++i) ref_c[i] = x[i] + v[(i / ((size_t)HW * C)) * C + i % C];
    expect_exact("channel_add", bx.get(), ref_c);
  }
}

TEST(cpu_concat_slice_embedding) {
  auto be = make_cpu_backend();
  Rng rng(8);
  for (auto [rows, ca, cb] : {std::tuple{100, 320, 640}, std::tuple{7, 3, 1}, std::tuple{5, 0, 4}}) {
    auto a = rng.vec((size_t)rows * ca), b = rng.vec((size_t)rows * cb);
    Buf ba(*be, a.empty() ? std::vector<float>(1) : a), bb(*be, b), by(*be, (size_t)rows * (ca + cb));
    ConcatArgs c;
    c.a = ba.p(), c.Ca = ca, c.b = bb.p(), c.Cb = cb, c.y = by.p(), c.rows = rows;
    be->concat(c);
    std::vector<float> ref;
    for (int r = 0; r < rows; ++r) {
      ref.insert(ref.end(), a.begin() + (size_t)r * ca, a.begin() + (size_t)(r + 1) * ca);
      ref.insert(ref.end(), b.begin() + (size_t)r * cb, b.begin() + (size_t)(r + 1) * cb);
    }
    expect_exact("concat", by.get(), ref);
  }
  auto x = rng.vec(77 * 960);
  Buf bx(*be, x), by(*be, 77 * 320);
  SliceArgs s;
  s.x = bx.p(), s.ldx = 960, s.c0 = 320, s.y = by.p(), s.rows = 77, s.cols = 320;
  be->slice(s);
  std::vector<float> ref;
  for (int r = 0; r < 77; ++r) ref.insert(ref.end(), x.begin() + r * 960 + 320, x.begin() + r * 960 + 640);
  expect_exact("slice", by.get(), ref);

  auto table = rng.vec(100 * 768);
  auto T = be->upload("token_embedding.weight", WeightKind::Embedding, {100, 768}, table.data());
  std::vector<int32_t> ids = {0, 99, 5, 5, 42};
  Buf be_y(*be, ids.size() * 768);
  EmbeddingArgs e;
  e.table = T.get(), e.ids = ids.data(), e.n = (int)ids.size(), e.y = be_y.p();
  be->embedding(e);
  ref.clear();
  for (int id : ids) ref.insert(ref.end(), table.begin() + id * 768, table.begin() + (id + 1) * 768);
  expect_exact("embedding", be_y.get(), ref);
  ids[3] = 100;
  CHECK_THROWS_WITH(be->embedding(e), "id 100 at 3 is outside table 'token_embedding.weight' with 100 rows");
}

TEST(cpu_upsample_nearest) {
  auto be = make_cpu_backend();
  Rng rng(9);
  const int shapes[][6] = {{2, 8, 8, 4, 16, 16}, {1, 32, 32, 320, 64, 64}, {1, 7, 5, 3, 13, 11},
                           {1, 3, 3, 2, 7, 8},   {1, 9, 9, 5, 4, 4},       {1, 1, 1, 6, 3, 2}};
  for (auto& sh : shapes) {
    const int N = sh[0], H = sh[1], W = sh[2], C = sh[3], P = sh[4], Q = sh[5];
    auto x = rng.vec((size_t)N * H * W * C);
    Buf bx(*be, x), by(*be, (size_t)N * P * Q * C);
    UpsampleArgs u;
    u.x = bx.p(), u.N = N, u.H = H, u.W = W, u.C = C, u.y = by.p(), u.P = P, u.Q = Q;
    be->upsample_nearest(u);
    std::vector<float> ref;
    for (int n = 0; n < N; ++n)
      for (int p = 0; p < P; ++p)
        for (int q = 0; q < Q; ++q) {
          const int ih = std::min((int)std::floor((double)p * H / P), H - 1);
          const int iw = std::min((int)std::floor((double)q * W / Q), W - 1);
          for (int c = 0; c < C; ++c) ref.push_back(x[(((size_t)n * H + ih) * W + iw) * C + c]);
        }
    expect_exact("upsample " + std::to_string(H) + "x" + std::to_string(W) + " -> " + std::to_string(P) + "x" +
                     std::to_string(Q),
                 by.get(), ref);
  }
}
