// GEMM driver (see gemm.h). Each thread gets one contiguous share of the work: a range of rows (all
// panels) when M is large, or a range of B panels (all rows) when M is small and the weight dominates
// (so every weight byte is read from memory once, by one thread). Loop nest of a share, GotoBLAS-like:
//   for each super-block of rows (<= kSuperRows, so its C block stays in L2/L3 across the K blocks):
//     for each NC column block (kNcPanels panels): for each KC block (the KC x NC block of B is read
//       from memory once per super-block and then served from L2):
//         for each MC row block: pack A[MC x KC] (row-major, MR-padded), then
//           for each panel group (1 or 2 panels = the micro-kernel's NR): for each MR rows: micro-kernel.
// The B micro-panel (KC x NR) stays in L1 across the MC/MR calls. bias + residual are added by the
// first K block (so y may alias the residual); later blocks accumulate. Edge tiles (M or N tails) go
// through a small tile buffer.
// Lab notes (2 vCPUs of a shared AMD EPYC VM, g++ 12 -O2; rates per CPU-second of the process, which
// other tenants barely move, see docs/benchmarks.md):
//   The previous driver (one task per 96-row M block, every task streaming all of B) was fine for the
//   level-0 GEMMs but read a 1280-channel weight once per 96 rows: inside a real CFG step, where every
//   weight is cold, the 16x16 / 8x8 levels ran at 35-80 GFLOP/CPU-s against ~160 for the same shapes
//   with a warm weight. Reading each weight once (panel split) and huge pages for weights (context.cpp)
//   brought them to ~the GEMM rate. Tried before: no NC blocking (KC loop outermost per M block):
//   2048x640x2560 fell to 123-143 GFLOP/s because the C block no longer stayed in L2 across K blocks.
#include "gemm.h"

#include <algorithm>
#include <cstring>

#include "../common/error.h"

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

uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

float from_bf16(uint16_t h) {
  const uint32_t u = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

namespace {

// Packs B given as a reduction-index accessor w(n, k) into the bf16 pair layout of PackedB.
template <typename W>
void pack_b_bf16(int64_t N, int64_t K, uint32_t* dst, W w) {
  const int64_t K2 = ceil_div(K, 2);
  std::memset(dst, 0, sizeof(uint32_t) * (size_t)packed_b_words_bf16(K, N));
  for (int64_t n = 0; n < N; ++n) {
    uint32_t* d = dst + (n / kPanel) * K2 * kPanel + n % kPanel;
    for (int64_t k = 0; k < K; k += 2) {
      const uint32_t lo = to_bf16(w(n, k)), hi = k + 1 < K ? to_bf16(w(n, k + 1)) : 0u;
      d[(k / 2) * kPanel] = lo | hi << 16;
    }
  }
}

}  // namespace

void pack_b_linear_bf16(const float* w, int64_t N, int64_t K, uint32_t* dst) {
  pack_b_bf16(N, K, dst, [&](int64_t n, int64_t k) { return w[n * K + k]; });
}

void pack_b_conv_bf16(const float* w, int64_t Ko, int64_t C, int64_t R, int64_t S, uint32_t* dst) {
  // reduction index k = (r * S + s) * C + c, as in pack_b_conv
  pack_b_bf16(Ko, R * S * C, dst, [&](int64_t o, int64_t k) {
    const int64_t tap = k / C, c = k % C;
    return w[((o * C + c) * R + tap / S) * S + tap % S];
  });
}

namespace {

constexpr int64_t kNcPanels = 16;    // 256 columns per NC block: the KC x NC block of B is 192-256 KB
constexpr int64_t kSuperRows = 384;  // rows per super-block: its C block (384 x 256 floats) is 384 KB

// Copies columns [k0, k0+kc) of the im2col row of output pixel (n, p, q) into dst. No divisions in
// the tap loop: for the 3- and 4-channel input convs (9 taps of 3-4 floats per row) integer divides and
// a memcpy call per tap cost more than the GEMM itself.
void im2col_row(const ConvGeom& g, int64_t n, int64_t p, int64_t q, int64_t k0, int64_t kc, float* dst) {
  const int64_t ih0 = p * g.stride - g.pad_top, iw0 = q * g.stride - g.pad_left;
  const int64_t tap = k0 / g.C;
  int64_t c = k0 - tap * g.C, r = tap / g.S, s = tap - r * g.S;
  for (int64_t k = k0, end = k0 + kc; k < end;) {
    const int64_t len = std::min(g.C - c, end - k), ih = ih0 + r, iw = iw0 + s;
    const bool inside = ih >= 0 && ih < g.H && iw >= 0 && iw < g.W;
    const float* src = inside ? g.x + ((n * g.H + ih) * g.W + iw) * g.C + c : nullptr;
    if (len < 16) {
      for (int64_t i = 0; i < len; ++i) dst[i] = inside ? src[i] : 0.0f;
    } else if (inside) {
      std::memcpy(dst, src, sizeof(float) * (size_t)len);
    } else {
      std::memset(dst, 0, sizeof(float) * (size_t)len);
    }
    dst += len;
    k += len;
    c = 0;
    if (++s == g.S) s = 0, ++r;
  }
}

// Packs rows [m0, m0+rows) x columns [k0, k0+kc) of A into dst (row stride kc), zero rows up to `padded`.
void pack_a(const GemmA& a, int64_t m0, int64_t rows, int64_t padded, int64_t k0, int64_t kc, float* dst) {
  if (a.conv) {
    const ConvGeom& g = *a.conv;
    const int64_t pq = g.P * g.Q, rem = m0 % pq;
    int64_t n = m0 / pq, p = rem / g.Q, q = rem % g.Q;  // output pixel of row m0, then stepped
    for (int64_t r = 0; r < rows; ++r) {
      im2col_row(g, n, p, q, k0, kc, dst + r * kc);
      if (++q == g.Q) {
        q = 0;
        if (++p == g.P) p = 0, ++n;
      }
    }
  } else {
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(dst + r * kc, a.x + (m0 + r) * a.lda + k0, sizeof(float) * (size_t)kc);
  }
  if (padded > rows) std::memset(dst + rows * kc, 0, sizeof(float) * (size_t)((padded - rows) * kc));
}

struct Job {
  const Kernels* kr;
  int64_t M, N, K, kc, mc;
  bool bf16;  // B is bf16-packed: A blocks are rounded to bf16 pairs, Kernels::ukr_bf16 multiplies
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
// apack: the packed A block (f32 rows of kc floats, or bf16 pair rows of ceil(kc / 2) words).
void run_panels(const Job& j, int64_t m0, int64_t rows, int64_t p, int64_t np, int64_t k0, int64_t kc,
                const void* apack, float* tmp) {
  const Kernels& kr = *j.kr;
  const int64_t mr = kr.mr, n0 = p * kPanel, cols = std::min(np * kPanel, j.N - n0);
  const bool first = k0 == 0;
  void (*ukr)(const UkrArgs&) = j.bf16 ? kr.ukr_bf16 : kr.ukr;
  UkrArgs u;
  const int64_t lda = j.bf16 ? ceil_div(kc, 2) : kc;  // in elements of A: floats or bf16 pairs
  u.kc = lda;
  u.lda = lda;
  if (j.bf16) {
    const int64_t K2 = ceil_div(j.K, 2);
    u.b2 = j.b->bf16 + p * K2 * kPanel + (k0 / 2) * kPanel;
    u.ldb = K2 * kPanel;
  } else {
    u.b = j.b->data + p * j.K * kPanel + k0 * kPanel;
    u.ldb = j.K * kPanel;
  }
  u.np = (int)np;
  for (int64_t i = 0; i < rows; i += mr) {
    const int64_t m = m0 + i, rr = std::min(mr, rows - i);
    if (j.bf16) u.a2 = static_cast<const uint32_t*>(apack) + i * lda;
    else u.a = static_cast<const float*>(apack) + i * lda;
    if (rr == mr && cols == np * kPanel) {
      u.c = j.y + m * j.ldy + n0;
      u.ldc = j.ldy;
      u.accumulate = !first;
      u.bias = (first && j.ep->bias) ? j.ep->bias + n0 : nullptr;
      u.res = (first && j.ep->res) ? j.ep->res + m * j.ep->ldr + n0 : nullptr;
      u.ldr = j.ep->ldr;
      ukr(u);
    } else {
      u.c = tmp;
      u.ldc = np * kPanel;
      u.accumulate = false;
      u.bias = u.res = nullptr;
      ukr(u);
      merge_tile(j, first, m, n0, rr, cols, tmp, np * kPanel);
    }
  }
}

// Rows [r0, r1) x panels [p0, p1) of the product (one thread's share), in the loop nest above.
void run_share(const Job& j, int64_t r0, int64_t r1, int64_t p0, int64_t p1, float* apack, uint32_t* apack2,
               float* tmp) {
  const Kernels& kr = *j.kr;
  const int64_t mr = kr.mr;
  const int64_t nsb = ceil_div(r1 - r0, kSuperRows), sbrows = round_up(ceil_div(r1 - r0, nsb), mr);
  for (int64_t sb = r0; sb < r1; sb += sbrows) {
    const int64_t se = std::min(r1, sb + sbrows);
    const int64_t nmb = ceil_div(se - sb, j.mc), mbrows = round_up(ceil_div(se - sb, nmb), mr);
    for (int64_t pb = p0; pb < p1; pb += kNcPanels) {
      const int64_t pe = std::min(p1, pb + kNcPanels);
      for (int64_t k0 = 0; k0 < j.K; k0 += j.kc) {
        const int64_t kc = std::min(j.kc, j.K - k0);
        for (int64_t m0 = sb; m0 < se; m0 += mbrows) {
          const int64_t rows = std::min(mbrows, se - m0);
          const int64_t padded = round_up(rows, mr);
          pack_a(*j.a, m0, rows, padded, k0, kc, apack);
          const void* ablock = apack;
          if (j.bf16) {  // round the block to bf16 pair rows (a zero pad half-word when kc is odd)
            const int64_t kc2 = ceil_div(kc, 2);
            uint16_t* h = reinterpret_cast<uint16_t*>(apack2);
            if (kc % 2 == 0) {
              kr.to_bf16(apack, h, (size_t)(padded * kc));
            } else {
              for (int64_t r = 0; r < padded; ++r) {
                kr.to_bf16(apack + r * kc, h + r * 2 * kc2, (size_t)kc);
                h[r * 2 * kc2 + kc] = 0;
              }
            }
            ablock = apack2;
          }
          for (int64_t p = pb; p < pe; p += kr.max_panels)
            run_panels(j, m0, rows, p, std::min<int64_t>(kr.max_panels, pe - p), k0, kc, ablock, tmp);
        }
      }
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
  const bool bf16 = b.bf16 != nullptr;
  XPSR_CHECK(!bf16 || kr.ukr_bf16, ErrorCode::Unsupported, "bf16 GEMM needs the AVX-512 kernel set (active: ", kr.name,
             ")");
  // K blocks of equal size (at most kr.kc, even so bf16 pairs never straddle a block): K = 640 runs as
  // 4 x 160, not 3 x 192 + a 64-deep pass that pays the C tile loads / stores for a third of the work.
  const int64_t kc = std::min(K, round_up(ceil_div(K, ceil_div(K, (int64_t)kr.kc)), 2));
  Job j{&kr, M, N, K, kc, kr.mc, bf16, &a, &b, &ep, y, ldy};
  // Shares: with fewer than kSuperRows rows per thread the weight dominates the memory traffic, so the
  // threads split the panels (each reads its half of B once); otherwise they split the rows.
  const int64_t T = ctx.pool.size();
  const int64_t npanels = ceil_div(N, kPanel), units = ceil_div(npanels, kr.max_panels);
  const int64_t mr = kr.mr, mrows = ceil_div(M, mr);
  const bool split_panels = M < T * kSuperRows;
  const int64_t shares = std::max<int64_t>(1, std::min(T, split_panels ? units : mrows));
  // per thread: f32 A block, bf16 A block (bf16 mode), edge tile
  const int64_t a2_words = bf16 ? round_up(j.mc * ceil_div(j.kc, 2), 16) : 0;
  const int64_t per_thread = round_up(j.mc * j.kc, 16) + a2_words + (int64_t)kr.mr * kPanel * kr.max_panels;
  float* base = static_cast<float*>(ctx.scratch.get(sizeof(float) * (size_t)(per_thread * T)));
  ctx.pool.parallel_for(shares, [&](int64_t t0, int64_t t1, int tid) {
    float* apack = base + tid * per_thread;
    uint32_t* apack2 = reinterpret_cast<uint32_t*>(apack + round_up(j.mc * j.kc, 16));
    float* tmp = apack + round_up(j.mc * j.kc, 16) + a2_words;
    for (int64_t t = t0; t < t1; ++t) {
      if (split_panels) {
        const int64_t u0 = units * t / shares, u1 = units * (t + 1) / shares;
        run_share(j, 0, M, u0 * kr.max_panels, std::min(npanels, u1 * kr.max_panels), apack, apack2, tmp);
      } else {
        const int64_t r0 = mr * (mrows * t / shares), r1 = std::min(M, mr * (mrows * (t + 1) / shares));
        run_share(j, r0, r1, 0, npanels, apack, apack2, tmp);
      }
    }
  });
}

}  // namespace xpsr::cpu
