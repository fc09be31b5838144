// attention against a float64 softmax(QKᵀ·scale)V reference: 4096-token self-attention with 8 heads x 40
// (a sample of query rows), cross-attention to 77 tokens with head dims 80 / 160 and packed q|k|v rows
// (row strides), the VAE's single 512-wide head, CLIP's causal mask, key counts that straddle the ~128-key
// blocks, large logits, and tiny sizes, under every kernel set. Tolerance: max|err| <= 2e-5 * max|ref|
// (f32 softmax and sums).
#include <algorithm>
#include <cmath>

#include "test_util.h"

using namespace xpsr;
using namespace xpsr::cpu::testing;

namespace {

struct AttnCase {
  int B, Lq, Lk, heads, d;
  bool causal = false;
  int ldq = 0, ldk = 0, ldv = 0, ldo = 0;  // 0: heads * d
  int row_step = 1;                        // reference for every row_step-th query row (plus the last)
  double amp = 1.0;                        // input range: larger -> sharper softmax
  double tol = 2e-5;
};

void run_attention(Backend& be, const AttnCase& c, uint64_t seed) {
  Rng rng(seed);
  const int w = c.heads * c.d;
  const int ldq = c.ldq ? c.ldq : w, ldk = c.ldk ? c.ldk : w, ldv = c.ldv ? c.ldv : w, ldo = c.ldo ? c.ldo : w;
  auto q = rng.vec((size_t)c.B * c.Lq * ldq, -c.amp, c.amp);
  auto k = rng.vec((size_t)c.B * c.Lk * ldk, -c.amp, c.amp);
  auto v = rng.vec((size_t)c.B * c.Lk * ldv);
  auto o0 = rng.vec((size_t)c.B * c.Lq * ldo);
  Buf bq(be, q), bk(be, k), bv(be, v), bo(be, o0);
  AttentionArgs a;
  a.q = bq.p(), a.k = bk.p(), a.v = bv.p(), a.o = bo.p();
  a.ldq = ldq, a.ldk = ldk, a.ldv = ldv, a.ldo = ldo;
  a.B = c.B, a.Lq = c.Lq, a.Lk = c.Lk, a.heads = c.heads, a.head_dim = c.d;
  a.scale = (float)(1.0 / std::sqrt((double)c.d)), a.causal = c.causal;
  be.attention(a);
  auto o = bo.get();
  std::vector<float> got;
  std::vector<double> ref;
  std::vector<double> s(c.Lk);
  for (int b = 0; b < c.B; ++b)
    for (int i = 0; i < c.Lq; i = (i + c.row_step < c.Lq || i == c.Lq - 1) ? i + c.row_step : c.Lq - 1) {
      const size_t orow = ((size_t)b * c.Lq + i) * ldo;
      for (int h = 0; h < c.heads; ++h) {
        const int nk = c.causal ? std::min(c.Lk, i + 1) : c.Lk;
        double mx = -1e300, sum = 0;
        for (int j = 0; j < nk; ++j) {
          double dot = 0;
          for (int t = 0; t < c.d; ++t)
            dot +=
                (double)q[((size_t)b * c.Lq + i) * ldq + h * c.d + t] * k[((size_t)b * c.Lk + j) * ldk + h * c.d + t];
          s[j] = dot * (double)a.scale;
          mx = std::max(mx, s[j]);
        }
        for (int j = 0; j < nk; ++j) sum += (s[j] = std::exp(s[j] - mx));
        for (int t = 0; t < c.d; ++t) {
          double acc = 0;
          for (int j = 0; j < nk; ++j) acc += s[j] * v[((size_t)b * c.Lk + j) * ldv + h * c.d + t];
          ref.push_back(acc / sum);
          got.push_back(o[orow + h * c.d + t]);
        }
      }
      for (int t = w; t < ldo; ++t) {  // columns past heads*d must be untouched
        ref.push_back(o0[orow + t]);
        got.push_back(o[orow + t]);
      }
      if (i == c.Lq - 1) break;
    }
  char name[160];
  std::snprintf(name, sizeof name, "attention B=%d Lq=%d Lk=%d %dx%d%s%s amp=%g", c.B, c.Lq, c.Lk, c.heads, c.d,
                c.causal ? " causal" : "", c.ldq ? " strided" : "", c.amp);
  expect_close(name, got, ref, c.tol);
}

}  // namespace

// Every kernel set this machine has; the portable set skips only the 4096-token case (minutes there).
TEST(cpu_attention_sd_shapes) {
  IsaGuard guard;
  for (cpu::Isa isa : available_isas()) {
    cpu::set_isa(isa);
    std::printf("    kernel set %s\n", cpu::isa_name(isa));
    auto be = make_cpu_backend();
    if (isa != cpu::Isa::Portable)
      run_attention(*be, {1, 4096, 4096, 8, 40, false, 0, 0, 0, 0, 331}, 1);         // level-0 self-attention
    run_attention(*be, {2, 1024, 77, 8, 80, false, 3 * 640, 1280, 1280, 0, 37}, 2);  // level-1 cross, packed q|kv
    run_attention(*be, {2, 256, 77, 8, 160, false, 0, 0, 0, 0, 7}, 3);               // level-2 cross
    run_attention(*be, {2, 64, 64, 8, 160, false, 3 * 1280, 3 * 1280, 3 * 1280, 1280, 1}, 4);  // mid self, packed qkv
    run_attention(*be, {1, 256, 256, 1, 512, false, 0, 0, 0, 0, 5}, 5);                        // VAE mid (single head)
    run_attention(*be, {2, 77, 77, 12, 64, true, 0, 0, 0, 0, 1}, 6);                           // CLIP causal
    run_attention(*be, {1, 1024, 1024, 8, 80, false, 0, 0, 0, 0, 101, 4.0}, 7);                // sharp softmax
  }
}

TEST(cpu_attention_odd_sizes) {
  IsaGuard guard;
  for (cpu::Isa isa : available_isas()) {
    cpu::set_isa(isa);
    std::printf("    kernel set %s\n", cpu::isa_name(isa));
    auto be = make_cpu_backend(3);
    const AttnCase cases[] = {
        {1, 1, 1, 1, 1},
        {1, 5, 300, 3, 7},
        {2, 300, 300, 2, 9, true},
        {1, 70, 513, 1, 17},
        {3, 13, 11, 5, 33},
        {1, 2, 257, 1, 16, false, 0, 0, 0, 0, 1, 12.0},
        {1, 600, 600, 1, 24, true, 0, 0, 0, 0, 1, 3.0},
        {1, 9, 9, 4, 3, true, 20, 14, 13, 15},
        {1, 130, 131, 2, 41, true, 0, 0, 0, 0, 1, 2.0},  // key blocks of 126 / 128 split a causal block
    };
    uint64_t seed = 30;
    for (const AttnCase& c : cases) run_attention(*be, c, seed++);
  }
}

// Kernels::softmax_panel directly, on every kernel set: the base-2 exponential against exp2 in double
// over [-126, 0] (2^20 points plus integers and half-integers, where the reduction switches), the
// running max / sum / rescale bookkeeping across two blocks, causal masking (masked entries exactly 0)
// and a lane whose keys are all masked (0 and finite, never NaN). Bound: relative error <= 2.5e-7
// (about 2 ulp; measured 7.9e-8 for the degree-6 polynomial).
TEST(cpu_softmax_panel_kernel) {
  IsaGuard guard;
  for (cpu::Isa isa : available_isas()) {
    cpu::set_isa(isa);
    const cpu::Kernels& kr = cpu::kernels();
    // exp2 sweep: values <= 0 and a running max of 0, so the kernel stores exactly 2^s
    const int64_t nk = 1 << 16;
    std::vector<float> s((size_t)nk * 16);
    for (size_t i = 0; i < s.size(); ++i) s[i] = (float)(-126.0 * (double)i / (double)(s.size() - 1));
    for (int k = 0; k <= 126; ++k) s[(size_t)k * 997] = (float)-k, s[(size_t)k * 997 + 1] = (float)(-k - 0.5);
    s[5] = -0.0f, s[6] = -1e-30f, s[7] = std::nextafter(-0.5f, 0.0f);
    const std::vector<float> x = s;
    std::vector<float> m(16, 0.0f), l(16, 0.0f), corr(16);
    kr.softmax_panel(s.data(), nk, INT64_MAX / 2, m.data(), l.data(), corr.data());
    double worst = 0, sum_err = 0;
    std::vector<double> lsum(16, 0.0);
    for (size_t i = 0; i < s.size(); ++i) {
      const double ref = std::exp2((double)x[i]);
      worst = std::max(worst, std::fabs(s[i] - ref) / ref);
      lsum[i % 16] += ref;
    }
    for (int q = 0; q < 16; ++q) {
      CHECK(m[q] == 0.0f && corr[q] == 1.0f);
      sum_err = std::max(sum_err, std::fabs(l[q] - lsum[q]) / lsum[q]);
    }
    std::printf("    %-8s exp2 over [-126, 0]: max rel err %.2e (bound 2.5e-7); row sums rel err %.1e\n",
                cpu::isa_name(isa), worst, sum_err);
    CHECK(worst <= 2.5e-7);
    CHECK(sum_err <= 1e-4);  // f32 running sums of 65536 terms per lane
    // two blocks with a growing max, causal mask (delta = 3: lane q sees keys r <= 3 + q), and lane 15's
    // first block fully masked via delta = -20 for a second panel
    for (int64_t delta : {(int64_t)3, (int64_t)-20}) {
      const int64_t rows = 24;
      std::vector<float> a((size_t)rows * 16), b((size_t)rows * 16);
      for (size_t i = 0; i < a.size(); ++i) a[i] = (float)(0.37 * (double)(i % 29) - 4.0), b[i] = a[i] + 3.0f;
      std::vector<float> mm(16, -INFINITY), ll(16, 0.0f), cc(16);
      std::vector<float> pa = a, pb = b;
      kr.softmax_panel(pa.data(), rows, delta, mm.data(), ll.data(), cc.data());
      kr.softmax_panel(pb.data(), rows, delta + rows, mm.data(), ll.data(), cc.data());
      for (int q = 0; q < 16; ++q) {
        // reference: both blocks, keys r (block a) visible when r <= delta + q, block b when r <= delta + rows + q
        double mx = -INFINITY;
        for (int64_t r = 0; r < rows; ++r) {
          if (r <= delta + q) mx = std::max(mx, (double)a[r * 16 + q]);
          if (r <= delta + rows + q) mx = std::max(mx, (double)b[r * 16 + q]);
        }
        double lref = 0;
        for (int64_t r = 0; r < rows; ++r) {
          if (r <= delta + q) lref += std::exp2((double)a[r * 16 + q] - mx);
          if (r <= delta + rows + q) lref += std::exp2((double)b[r * 16 + q] - mx);
        }
        CHECK(std::isfinite(mm[q]) && std::isfinite(ll[q]) && std::isfinite(cc[q]));
        if (mx == -INFINITY) {
          CHECK(ll[q] == 0.0f);
          continue;
        }
        CHECK_MSG(std::fabs(mm[q] - mx) <= 0.0, "running max");
        CHECK_MSG(std::fabs(ll[q] - lref) <= 1e-6 * lref, "running sum");
        for (int64_t r = 0; r < rows; ++r) {
          // the kernel's argument is the f32 difference s - m (m is a data value); exp2 of it in double
          const double eb = r <= delta + rows + q ? std::exp2((double)(b[r * 16 + q] - (float)mx)) : 0.0;
          CHECK_MSG(
              std::fabs(pb[r * 16 + q] - eb) <= 3e-7 * std::max(eb, 1e-30) || (eb == 0.0 && pb[r * 16 + q] == 0.0f),
              "second block probabilities");
          if (r > delta + q) CHECK_MSG(pa[r * 16 + q] == 0.0f, "masked entries are exactly 0");
        }
      }
    }
  }
}
