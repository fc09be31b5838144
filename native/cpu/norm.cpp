// GroupNorm (+ fused SiLU) and LayerNorm. Statistics are accumulated in double: GroupNorm sums
// (x - shift) and (x - shift)^2 per channel over row chunks in parallel, with shift = the group's first
// value of the sample (so E[d^2] - E[d]^2 does not cancel), then folds channels into groups; LayerNorm
// does the same per row with the row's first value as shift (Kernels::layer_norm_row). GroupNorm's apply pass is
// y = (x - sh) * scale[c] + shift[c] (+ SiLU) with the SIMD row kernel: x - sh is exact in f32, so a
// mean far larger than the spread costs no precision (x * scale + shift would lose |mean| / std ulps). Test: norm_test.cpp.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "dispatch.h"
#include "ops.h"

namespace xpsr::cpu {
namespace {

// Per-channel sums of (x - shift[c]) and its square over rows [r0, r1) of one sample.
void channel_sums(const Kernels& kr, const float* x, int64_t C, int64_t r0, int64_t r1, const double* shift, double* s,
                  double* ss) {
  std::fill(s, s + C, 0.0);
  std::fill(ss, ss + C, 0.0);
  for (int64_t r = r0; r < r1; ++r) kr.channel_stats(x + r * C, (size_t)C, shift, s, ss);
}

}  // namespace

void group_norm_op(Context& ctx, const GroupNormArgs& a, const float* gamma, const float* beta) {
  const int64_t N = a.N, HW = a.HW, C = a.C, G = a.groups, cg = C / G;
  if (N <= 0 || HW <= 0) return;
  const float* x = static_cast<const float*>(a.x);
  float* y = static_cast<float*>(a.y);
  const Kernels& kr = kernels();
  const int64_t T = ctx.pool.size();
  const int64_t chunks = std::clamp<int64_t>(ceil_div(4 * T, N), 1, ceil_div(HW, 16));
  const int64_t tasks = N * chunks;
  // scratch: per task [shift | s | ss] doubles, then per sample sub / scale / shift floats
  const size_t dbytes = sizeof(double) * (size_t)(tasks * 3 * C);
  char* base = static_cast<char*>(ctx.scratch.get(dbytes + sizeof(float) * (size_t)(3 * N * C)));
  double* acc = reinterpret_cast<double*>(base);
  float* sub = reinterpret_cast<float*>(base + dbytes);
  float* scale = sub + N * C;
  float* shift = scale + N * C;
  for_range(ctx, tasks, HW * C / chunks * 3, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / chunks, k = t % chunks;
      const float* xn = x + n * HW * C;
      double* sh = acc + t * 3 * C;
      for (int64_t c = 0; c < C; ++c) sh[c] = xn[(c / cg) * cg];
      channel_sums(kr, xn, C, HW * k / chunks, HW * (k + 1) / chunks, sh, sh + C, sh + 2 * C);
    }
  });
  const double cnt = (double)HW * (double)cg;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < G; ++g) {
      double s = 0.0, ss = 0.0;
      for (int64_t k = 0; k < chunks; ++k) {
        const double* t = acc + (n * chunks + k) * 3 * C;
        for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
          s += t[C + c];
          ss += t[2 * C + c];
        }
      }
      // mean = sh + md; y = (x - sh) * sc + (beta - md * sc), where sh is a float data value
      const double md = s / cnt, var = std::max(ss / cnt - md * md, 0.0);
      const double sh = acc[n * chunks * 3 * C + g * cg], rstd = 1.0 / std::sqrt(var + (double)a.eps);
      for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
        const double sc = (double)gamma[c] * rstd;
        sub[n * C + c] = (float)sh;
        scale[n * C + c] = (float)sc;
        shift[n * C + c] = (float)((double)beta[c] - md * sc);
      }
    }
  }
  for_range(ctx, N * HW, C * 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / HW;
      kr.norm_apply(x + r * C, y + r * C, (size_t)C, sub + n * C, scale + n * C, shift + n * C, a.silu);
    }
  });
}

void layer_norm_op(Context& ctx, const LayerNormArgs& a, const float* gamma, const float* beta) {
  const Kernels& kr = kernels();
  const int64_t C = a.C;
  const float* x = static_cast<const float*>(a.x);
  float* y = static_cast<float*>(a.y);
  for_range(ctx, a.rows, C * 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) kr.layer_norm_row(x + r * C, y + r * C, (size_t)C, gamma, beta, a.eps);
  });
}

}  // namespace xpsr::cpu
