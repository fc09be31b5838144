// Blocked, packed SGEMM of the CPU backend: y[M,N] = A[M,K] * B[K,N] + bias[N] + residual[M,N].
// B (a weight) is packed once at upload into 16-column panels: panel p holds columns 16p..16p+15 for
// every k, 16 contiguous floats per k, zero-padded past N (layout shared by every kernel set). A is read
// either densely (rows with a stride) or as implicit im2col rows of an NHWC conv input. The driver
// packs MC x KC blocks of A per thread and runs the active micro-kernel (dispatch.h). Test: gemm_test.cpp.
#pragma once
#include <cstdint>

#include "context.h"
#include "dispatch.h"

namespace xpsr::cpu {

constexpr int kPanel = 16;  // columns per packed B panel

// A packed B operand: panel p at data + p * K * 16.
struct PackedB {
  const float* data = nullptr;
  int64_t K = 0, N = 0;
};

inline int64_t packed_b_floats(int64_t K, int64_t N) { return ceil_div(N, kPanel) * kPanel * K; }
// From a Linear weight w[N, K] (B = wᵀ).
void pack_b_linear(const float* w, int64_t N, int64_t K, float* dst);
// From a conv weight w[Ko, C, R, S]; the reduction index is (r * S + s) * C + c (NHWC im2col order).
void pack_b_conv(const float* w, int64_t Ko, int64_t C, int64_t R, int64_t S, float* dst);

// Implicit im2col source: row m = (n, p, q) of the output, column (r * S + s) * C + c reads
// x[n, p*stride - pad_top + r, q*stride - pad_left + s, c] or 0 outside the image.
struct ConvGeom {
  const float* x = nullptr;
  int64_t N = 0, H = 0, W = 0, C = 0;
  int64_t R = 1, S = 1, stride = 1, pad_top = 0, pad_left = 0;
  int64_t P = 0, Q = 0;
};

struct GemmA {
  const float* x = nullptr;  // dense rows x + m*lda (when conv is null)
  int64_t lda = 0;
  const ConvGeom* conv = nullptr;
};

struct Epilogue {
  const float* bias = nullptr;  // [N] or null
  const float* res = nullptr;   // rows res + m*ldr, or null; may be exactly y with ldr == ldy
  int64_t ldr = 0;
};

// Multi-threaded driver. y must not overlap A.
void gemm(Context& ctx, int64_t M, int64_t N, int64_t K, const GemmA& a, const PackedB& b, const Epilogue& ep, float* y,
          int64_t ldy);

// Single-threaded block product on padded operands (attention tiles): C[Mp, 16*np] (+)= A[Mp, K] * B,
// where Mp is a multiple of kr.mr, A rows are at A + i*lda, B has np panels at B + p*ldb, and C has at
// least 16*np columns (ldc). No bias / residual.
void gemm_block(const Kernels& kr, int64_t Mp, int64_t np, int64_t K, const float* A, int64_t lda, const float* B,
                int64_t ldb, float* C, int64_t ldc, bool accumulate);

}  // namespace xpsr::cpu
