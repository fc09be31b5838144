// GEMM driver (see gemm.h). Loop nest per task (one MC row block x a range of B panels):
//   for each NC column block (512 columns): for each KC block: pack A[MC x KC] (row-major, MR-padded)
//     for each panel group (1 or 2 panels = the micro-kernel's NR): for each MR rows: micro-kernel.
// The B micro-panel (KC x NR) stays in L1 across the MC/MR calls, the A block and the MC x NC block of
// C in L2 (A is re-packed per NC block: a memcpy, negligible next to MC*KC*NC FMAs). bias + residual
// are added by the first K block (so y may alias the residual); later blocks accumulate. Edge tiles
// (M or N tails) go through a small tile buffer. Tasks: M blocks x N splits (N is split only when there
// are fewer than 8 M blocks per thread), statically chunked.
// Lab notes (AMD EPYC Zen 4 VM, 2 threads, g++ 12 -O2, XPSR_BENCH=1 xpsr_tests bench_gemm, quiet moment):
//   8192x320x320 205 GFLOP/s AVX2 / 201 AVX-512; 2048x640x2560 196 / 191; 4096x1280x320 177 / 195;
//   154x768x640 ~175; 3x3 conv 64x64x320->320 213 / 208. About 85% of the 2-core FMA peak (2 x 32
//   flop/cycle at ~3.7 GHz); AVX-512 (double-pumped on Zen 4) is no faster here, it is for Intel.
//   Tried: no NC blocking (KC loop outermost per M block): 2048x640x2560 fell to 123-143 GFLOP/s because
//   the MC x N block of C no longer stayed in L2 across K blocks. The shared 2-core box is noisy:
//   under load the same runs read 50-100 GFLOP/s.
#include "gemm.h"

#include <algorithm>
#include <cstring>

namespace xpsr::cpu {

void pack_b_linear(const float* w, int64_t N, int64_t K, float* dst) {
  const int64_t np = ceil_div(N, kPanel);
  std::memset(dst, 0, sizeof(float) * (size_t)(np * kPanel * K));
  for (int64_t n = 0; n < N; ++n) {
    float* d = dst + (n / kPanel) * K * kPanel + n % kPanel;
    const float* s = w + n * K;
    for (int64_t k = 0; k < K; ++k) d[k * kPanel] = s[k];
  }
}

void pack_b_conv(const float* w, int64_t Ko, int64_t C, int64_t R, int64_t S, float* dst) {
  const int64_t K = R * S * C, np = ceil_div(Ko, kPanel);
  std::memset(dst, 0, sizeof(float) * (size_t)(np * kPanel * K));
  for (int64_t o = 0; o < Ko; ++o) {
    float* d = dst + (o / kPanel) * K * kPanel + o % kPanel;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t s = 0; s < S; ++s) d[((r * S + s) * C + c) * kPanel] = w[((o * C + c) * R + r) * S + s];
  }
}

namespace {

constexpr int64_t kNcPanels = 32;  // 512 columns: C block of MC x 512 floats stays in L2

// Copies columns [k0, k0+kc) of the im2col row m into dst.
void im2col_row(const ConvGeom& g, int64_t m, int64_t k0, int64_t kc, float* dst) {
  const int64_t pq = g.P * g.Q, n = m / pq, rem = m % pq, p = rem / g.Q, q = rem % g.Q;
  const int64_t ih0 = p * g.stride - g.pad_top, iw0 = q * g.stride - g.pad_left;
  for (int64_t k = k0, end = k0 + kc; k < end;) {
    const int64_t tap = k / g.C, c = k - tap * g.C, len = std::min(g.C - c, end - k);
    const int64_t ih = ih0 + tap / g.S, iw = iw0 + tap % g.S;
    if (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W)
      std::memcpy(dst, g.x + ((n * g.H + ih) * g.W + iw) * g.C + c, sizeof(float) * (size_t)len);
    else std::memset(dst, 0, sizeof(float) * (size_t)len);
    dst += len;
    k += len;
  }
}

// Packs rows [m0, m0+rows) x columns [k0, k0+kc) of A into dst (row stride kc), zero rows up to `padded`.
void pack_a(const GemmA& a, int64_t m0, int64_t rows, int64_t padded, int64_t k0, int64_t kc, float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    if (a.conv) im2col_row(*a.conv, m0 + r, k0, kc, dst + r * kc);
    else std::memcpy(dst + r * kc, a.x + (m0 + r) * a.lda + k0, sizeof(float) * (size_t)kc);
  }
  if (padded > rows) std::memset(dst + rows * kc, 0, sizeof(float) * (size_t)((padded - rows) * kc));
}

struct Job {
  const Kernels* kr;
  int64_t M, N, K, kc, mc;
  const GemmA* a;
  const PackedB* b;
  const Epilogue* ep;
  float* y;
  int64_t ldy;
};

// Adds an edge tile computed into `tmp` (ld = ldt) to y with the epilogue.
void merge_tile(const Job& j, bool first, int64_t m, int64_t n0, int64_t rows, int64_t cols, const float* tmp,
                int64_t ldt) {
  for (int64_t r = 0; r < rows; ++r) {
    float* yr = j.y + (m + r) * j.ldy + n0;
    const float* t = tmp + r * ldt;
    const float* res = (first && j.ep->res) ? j.ep->res + (m + r) * j.ep->ldr + n0 : nullptr;
    const float* bias = (first && j.ep->bias) ? j.ep->bias + n0 : nullptr;
    for (int64_t c = 0; c < cols; ++c) {
      float v = t[c];
      if (first) {
        if (bias) v += bias[c];
        if (res) v += res[c];
      } else {
        v += yr[c];
      }
      yr[c] = v;
    }
  }
}

// Panels [p, p+np) (one micro-kernel column group) for K block [k0, k0+kc) of a packed A block.
void run_panels(const Job& j, int64_t m0, int64_t rows, int64_t p, int64_t np, int64_t k0, int64_t kc,
                const float* apack, float* tmp) {
  const Kernels& kr = *j.kr;
  const int64_t mr = kr.mr, n0 = p * kPanel, cols = std::min(np * kPanel, j.N - n0);
  const bool first = k0 == 0;
  UkrArgs u;
  u.kc = kc;
  u.lda = kc;
  u.b = j.b->data + p * j.K * kPanel + k0 * kPanel;
  u.ldb = j.K * kPanel;
  u.np = (int)np;
  for (int64_t i = 0; i < rows; i += mr) {
    const int64_t m = m0 + i, rr = std::min(mr, rows - i);
    u.a = apack + i * kc;
    if (rr == mr && cols == np * kPanel) {
      u.c = j.y + m * j.ldy + n0;
      u.ldc = j.ldy;
      u.accumulate = !first;
      u.bias = (first && j.ep->bias) ? j.ep->bias + n0 : nullptr;
      u.res = (first && j.ep->res) ? j.ep->res + m * j.ep->ldr + n0 : nullptr;
      u.ldr = j.ep->ldr;
      kr.ukr(u);
    } else {
      u.c = tmp;
      u.ldc = np * kPanel;
      u.accumulate = false;
      u.bias = u.res = nullptr;
      kr.ukr(u);
      merge_tile(j, first, m, n0, rr, cols, tmp, np * kPanel);
    }
  }
}

// One task: rows [m0, m0+rows) x panels [p0, p1), in column blocks of kNcPanels panels so the C block
// (MC x NC) stays in L2 across the K blocks; A is re-packed per column block (a cheap memcpy).
void run_task(const Job& j, int64_t m0, int64_t rows, int64_t p0, int64_t p1, float* apack, float* tmp) {
  const Kernels& kr = *j.kr;
  const int64_t mr = kr.mr, padded = round_up(rows, mr);
  for (int64_t pb = p0; pb < p1; pb += kNcPanels) {
    const int64_t pe = std::min(p1, pb + kNcPanels);
    for (int64_t k0 = 0; k0 < j.K; k0 += j.kc) {
      const int64_t kc = std::min(j.kc, j.K - k0);
      pack_a(*j.a, m0, rows, padded, k0, kc, apack);
      for (int64_t p = pb; p < pe; p += kr.max_panels)
        run_panels(j, m0, rows, p, std::min<int64_t>(kr.max_panels, pe - p), k0, kc, apack, tmp);
    }
  }
}

// y = bias + residual when there is nothing to multiply (K == 0).
void epilogue_only(int64_t M, int64_t N, const Epilogue& ep, float* y, int64_t ldy) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n)
      y[m * ldy + n] = (ep.bias ? ep.bias[n] : 0.0f) + (ep.res ? ep.res[m * ep.ldr + n] : 0.0f);
}

}  // namespace

void gemm(Context& ctx, int64_t M, int64_t N, int64_t K, const GemmA& a, const PackedB& b, const Epilogue& ep, float* y,
          int64_t ldy) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) return epilogue_only(M, N, ep, y, ldy);
  const Kernels& kr = kernels();
  Job j{&kr, M, N, K, std::min<int64_t>(kr.kc, K), kr.mc, &a, &b, &ep, y, ldy};
  // Work split: M blocks first; when they are too few for the threads, also split the panels.
  const int64_t T = ctx.pool.size();
  const int64_t units = ceil_div(ceil_div(N, kPanel), kr.max_panels);  // micro-kernel column groups
  const int64_t mblocks = ceil_div(M, j.mc);
  int64_t nsplit = mblocks >= 8 * T ? 1 : std::min(units, ceil_div(8 * T, mblocks));
  const int64_t units_per = ceil_div(units, nsplit);
  nsplit = ceil_div(units, units_per);
  const int64_t panels_per = units_per * kr.max_panels, npanels = ceil_div(N, kPanel);

  const int64_t per_thread = round_up(j.mc * j.kc + (int64_t)kr.mr * kPanel * kr.max_panels, 16);
  float* base = static_cast<float*>(ctx.scratch.get(sizeof(float) * (size_t)(per_thread * T)));
  ctx.pool.parallel_for(mblocks * nsplit, [&](int64_t t0, int64_t t1, int tid) {
    float* apack = base + tid * per_thread;
    float* tmp = apack + j.mc * j.kc;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t mb = t / nsplit, nb = t % nsplit;
      const int64_t m0 = mb * j.mc, p0 = nb * panels_per;
      run_task(j, m0, std::min(j.mc, M - m0), p0, std::min(npanels, p0 + panels_per), apack, tmp);
    }
  });
}

void gemm_block(const Kernels& kr, int64_t Mp, int64_t np, int64_t K, const float* A, int64_t lda, const float* B,
                int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  // K steps of 128 keep the B micro-panel (128 x NR) in L1 while the MR-row tiles stream past it.
  constexpr int64_t kStep = 128;
  UkrArgs u;
  u.lda = lda;
  u.ldb = ldb;
  u.ldc = ldc;
  for (int64_t p = 0; p < np; p += kr.max_panels) {
    u.np = (int)std::min<int64_t>(kr.max_panels, np - p);
    for (int64_t k0 = 0; k0 < K; k0 += kStep) {
      u.kc = std::min(kStep, K - k0);
      u.b = B + p * ldb + k0 * kPanel;
      u.accumulate = accumulate || k0 > 0;
      for (int64_t i = 0; i < Mp; i += kr.mr) {
        u.a = A + i * lda + k0;
        u.c = C + i * ldc + p * kPanel;
        kr.ukr(u);
      }
    }
  }
}

}  // namespace xpsr::cpu
