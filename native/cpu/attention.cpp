// Flash-style multi-head attention on the CPU: memory is O(block), never O(Lq x Lk).
// The products run TRANSPOSED, with keys and head dims as GEMM rows and queries in the SIMD lanes:
//   Sᵀ[keys x queries] = K · Qᵀ           (rows = keys, reduction over d)
//   Oᵀ[d x queries]   = Oᵀ * corr + Vᵀ · P  (rows = d, reduction over keys; P = softmaxed Sᵀ)
// so the softmax over keys is a VERTICAL reduction (no horizontal max / sum per row), the running
// rescale of O by exp(m_old - m_new) happens in the micro-kernel's accumulate step (UkrArgs::cscale),
// and a head dim of 40 is 5 rows of 8 instead of 40 columns padded to 48.
// Per (batch, head) group, phase 1 packs K as rows [key][d] and V as Vᵀ tiles [d][key]; phase 2 runs one
// task per (batch, head, 64-query block): pack (scale·log2e)·Qᵀ into 16-query panels, then per key
// block of ~128 keys: Sᵀ (one GEMM micro-kernel pass, panel-major so each 16-query panel of Sᵀ is
// also the B panel of the P·V product), online softmax in base 2 per 16-query panel (Kernels::
// softmax_panel: running max m, sum l, corr = 2^(m_old - m_new)), Oᵀ += Vᵀ·P with the column rescale;
// at the end O = Oᵀᵀ / l. Causal rows stop at key i (j <= i). Packed K/V of many heads are bounded by
// kPackBudget (groups of heads). Test: attention_test.cpp (and dispatch_test.cpp across kernel sets).
// Lab notes: see docs/benchmarks.md (CPU section) for the rates before / after this layout.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "gemm.h"
#include "ops.h"

namespace xpsr::cpu {
namespace {

constexpr int64_t kKeyBlock = 128;        // keys per block, rounded down to a multiple of the kernel's rows
constexpr int64_t kQueryBlock = 64;       // queries per task (a multiple of 16)
constexpr int64_t kPackBudget = 8 << 20;  // floats of packed K/V kept at once (32 MB)
constexpr float kLog2e = 1.44269504088896341f;

struct Geo {
  const AttentionArgs* a;
  int64_t d, mr, dpad, lkpad, bk, bq, qpan, k_floats, pair_floats, qblocks;
};

// Packs key block [j0, j1) of (b, h) (j0 a multiple of bk): K rows into kp ([lkpad][d], zero rows past
// Lk) and V into the block's Vᵀ tile ([dpad][bk] at vt + (j0 / bk) * dpad * bk, zero rows past d).
// Vᵀ is tiled per key block so the P·V micro-kernel's 8 A rows are 1 KB apart: rows one Lk apart
// (16 KB for 4096 keys) all fall into the same L1 set.
void pack_kv(const Geo& g, int64_t b, int64_t h, int64_t j0, int64_t j1, float* kp, float* vt) {
  const AttentionArgs& a = *g.a;
  const float* K = static_cast<const float*>(a.k);
  const float* V = static_cast<const float*>(a.v);
  for (int64_t j = j0; j < j1; ++j) {
    float* kd = kp + j * g.d;
    if (j >= a.Lk) {
      std::memset(kd, 0, sizeof(float) * (size_t)g.d);
      continue;
    }
    std::memcpy(kd, K + (b * a.Lk + j) * a.ldk + h * g.d, sizeof(float) * (size_t)g.d);
  }
  const int64_t v1 = std::min(j1, (int64_t)a.Lk);
  float* tile = vt + (j0 / g.bk) * g.dpad * g.bk;
  for (int64_t j = j0; j < v1; ++j) {
    const float* vr = V + (b * a.Lk + j) * a.ldv + h * g.d;
    for (int64_t t = 0; t < g.d; ++t) tile[t * g.bk + j - j0] = vr[t];
  }
  for (int64_t t = g.d; t < g.dpad; ++t)
    if (v1 > j0) std::memset(tile + t * g.bk, 0, sizeof(float) * (size_t)(v1 - j0));
}

// One query block of one (b, h): queries [q0, q0+rows).
void query_block(const Kernels& kr, const Geo& g, int64_t b, int64_t h, int64_t q0, const float* kp, const float* vt,
                 float* work) {
  const AttentionArgs& a = *g.a;
  const int64_t rows = std::min(g.bq, (int64_t)a.Lq - q0), d = g.d;
  float* Qt = work;                        // [qpan][d][16], scaled by scale * log2(e)
  float* S = Qt + g.qpan * d * kPanel;     // [qpan][bk][16]
  float* Ot = S + g.qpan * g.bk * kPanel;  // [dpad][bq]
  float* m = Ot + g.dpad * g.bq;           // [bq] running max (base-2 logits)
  float* l = m + g.bq;                     // [bq] running sum
  float* corr = l + g.bq;                  // [bq] rescale of the current key block
  const float* Q = static_cast<const float*>(a.q);
  const float qs = a.scale * kLog2e;
  std::memset(Qt, 0, sizeof(float) * (size_t)(g.qpan * d * kPanel));
  for (int64_t r = 0; r < rows; ++r) {
    const float* qr = Q + (b * a.Lq + q0 + r) * a.ldq + h * d;
    float* dst = Qt + (r / kPanel) * d * kPanel + r % kPanel;
    for (int64_t t = 0; t < d; ++t) dst[t * kPanel] = qr[t] * qs;
  }
  std::memset(Ot, 0, sizeof(float) * (size_t)(g.dpad * g.bq));
  std::fill(m, m + g.bq, -std::numeric_limits<float>::infinity());
  std::fill(l, l + g.bq, 0.0f);
  const int64_t npan = ceil_div(rows, kPanel);  // panels holding real queries
  const int64_t kend = a.causal ? std::min<int64_t>(a.Lk, q0 + rows) : a.Lk;
  UkrArgs u;
  for (int64_t j0 = 0; j0 < kend; j0 += g.bk) {
    const int64_t nk = std::min(g.bk, kend - j0), nkp = round_up(nk, g.mr);
    // Sᵀ = K[j0 : j0+nkp] · Qᵀ, written panel-major: panel p of Sᵀ at S + p * bk * 16, row = key.
    u = UkrArgs();
    u.kc = d;
    u.lda = d;
    u.ldb = d * kPanel;
    u.ldc = kPanel;
    u.cpan = g.bk * kPanel;
    for (int64_t p = 0; p < npan; p += kr.max_panels) {
      u.np = (int)std::min<int64_t>(kr.max_panels, npan - p);
      u.b = Qt + p * d * kPanel;
      for (int64_t i = 0; i < nkp; i += g.mr) {
        u.a = kp + (j0 + i) * d;
        u.c = S + p * g.bk * kPanel + i * kPanel;
        kr.ukr(u);
      }
    }
    for (int64_t p = 0; p < npan; ++p) {
      const int64_t delta = a.causal ? q0 + p * kPanel - j0 : std::numeric_limits<int64_t>::max() / 2;
      kr.softmax_panel(S + p * g.bk * kPanel, nk, delta, m + p * kPanel, l + p * kPanel, corr + p * kPanel);
    }
    // Oᵀ = Oᵀ * corr + Vᵀ[:, j0 : j0+nk] · P (the nk x 32 B panel pair of P stays in L1).
    u = UkrArgs();
    u.kc = nk;
    u.lda = g.bk;
    u.ldb = g.bk * kPanel;
    u.ldc = g.bq;
    u.accumulate = true;
    const float* vtile = vt + (j0 / g.bk) * g.dpad * g.bk;
    for (int64_t p = 0; p < npan; p += kr.max_panels) {
      u.np = (int)std::min<int64_t>(kr.max_panels, npan - p);
      u.b = S + p * g.bk * kPanel;
      u.cscale = corr + p * kPanel;
      for (int64_t i = 0; i < g.dpad; i += g.mr) {
        u.a = vtile + i * g.bk;
        u.c = Ot + i * g.bq + p * kPanel;
        kr.ukr(u);
      }
    }
  }
  float* out = static_cast<float*>(a.o);
  for (int64_t r = 0; r < rows; ++r) l[r] = 1.0f / l[r];
  for (int64_t r = 0; r < rows; ++r) {
    float* orow = out + (b * a.Lq + q0 + r) * a.ldo + h * d;
    for (int64_t t = 0; t < d; ++t) orow[t] = Ot[t * g.bq + r] * l[r];
  }
}

}  // namespace

void attention_op(Context& ctx, const AttentionArgs& a) {
  if (a.B <= 0 || a.Lq <= 0 || a.heads <= 0) return;
  const Kernels& kr = kernels();
  Geo g;
  g.a = &a;
  g.d = a.head_dim;
  g.mr = kr.mr;
  g.dpad = round_up(g.d, g.mr);
  g.lkpad = round_up(a.Lk, g.mr);
  g.bk = std::max<int64_t>(g.mr, kKeyBlock / g.mr * g.mr);
  g.bq = kQueryBlock;
  g.qpan = g.bq / kPanel;
  g.k_floats = round_up(g.lkpad * g.d, 16);
  g.pair_floats = g.k_floats + ceil_div(g.lkpad, g.bk) * g.dpad * g.bk;
  g.qblocks = ceil_div(a.Lq, g.bq);
  const int64_t pairs = (int64_t)a.B * a.heads;
  const int64_t group = std::clamp<int64_t>(kPackBudget / g.pair_floats, 1, pairs);
  const int64_t T = ctx.pool.size();
  const int64_t work_floats = round_up(g.qpan * kPanel * (g.d + g.bk) + g.dpad * g.bq + 3 * g.bq, 16);
  float* packed =
      static_cast<float*>(ctx.scratch.get(sizeof(float) * (size_t)(group * g.pair_floats + T * work_floats)));
  float* work = packed + group * g.pair_floats;
  const int64_t kchunks = ceil_div(g.lkpad, g.bk);
  for (int64_t p0 = 0; p0 < pairs; p0 += group) {
    const int64_t gn = std::min(group, pairs - p0);
    ctx.pool.parallel_for(gn * kchunks, [&](int64_t t0, int64_t t1, int) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t pair = p0 + t / kchunks, j0 = (t % kchunks) * g.bk;
        float* kp = packed + (t / kchunks) * g.pair_floats;
        pack_kv(g, pair / a.heads, pair % a.heads, j0, std::min(g.lkpad, j0 + g.bk), kp, kp + g.k_floats);
      }
    });
    // Query blocks vary fastest: consecutive tasks of a thread stream the same head's packed K / V,
    // which then stays in L2 (heads-fastest order re-read them from L3: 0.7x the rate at 4096 keys).
    ctx.pool.parallel_for(gn * g.qblocks, [&](int64_t t0, int64_t t1, int tid) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t pair = p0 + t / g.qblocks, q0 = (t % g.qblocks) * g.bq;
        const float* kp = packed + (t / g.qblocks) * g.pair_floats;
        query_block(kr, g, pair / a.heads, pair % a.heads, q0, kp, kp + g.k_floats, work + tid * work_floats);
      }
    });
  }
}

}  // namespace xpsr::cpu
