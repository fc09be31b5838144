// attention against a float64 softmax(QKᵀ·scale)V reference: 4096-token self-attention with 8 heads x 40
// (a sample of query rows), cross-attention to 77 tokens with head dims 80 / 160 and packed q|k|v rows
// (row strides), the VAE's single 512-wide head, CLIP's causal mask, key counts that straddle the 256-key
// blocks, large logits, and tiny sizes. Tolerance: max|err| <= 2e-5 * max|ref| (f32 softmax and sums).
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

TEST(cpu_attention_sd_shapes) {
  auto be = make_cpu_backend();
  run_attention(*be, {1, 4096, 4096, 8, 40, false, 0, 0, 0, 0, 331}, 1);           // level-0 self-attention
  run_attention(*be, {2, 1024, 77, 8, 80, false, 3 * 640, 1280, 1280, 0, 37}, 2);  // level-1 cross, packed q|kv
  run_attention(*be, {2, 256, 77, 8, 160, false, 0, 0, 0, 0, 7}, 3);               // level-2 cross
  run_attention(*be, {2, 64, 64, 8, 160, false, 3 * 1280, 3 * 1280, 3 * 1280, 1280, 1}, 4);  // mid self, packed qkv
  run_attention(*be, {1, 256, 256, 1, 512, false, 0, 0, 0, 0, 5}, 5);                        // VAE mid (single head)
  run_attention(*be, {2, 77, 77, 12, 64, true, 0, 0, 0, 0, 1}, 6);                           // CLIP causal
  run_attention(*be, {1, 1024, 1024, 8, 80, false, 0, 0, 0, 0, 101, 4.0}, 7);                // sharp softmax
}

TEST(cpu_attention_odd_sizes) {
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
  };
  uint64_t seed = 30;
  for (const AttnCase& c : cases) run_attention(*be, c, seed++);
}
