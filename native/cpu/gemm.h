// Blocked, packed SGEMM of the CPU backend: y[M,N] = A[M,K] * B[K,N] + bias[N] + residual[M,N].
// B (a weight) is packed once at upload into 16-column panels: panel p holds columns 16p..16p+15 for
// every k, 16 contiguous floats per k, zero-padded past N (layout shared by every kernel set). A is read
// either densely (rows with a stride) or as implicit im2col rows of an NHWC conv input. The driver
// packs MC x KC blocks of A per thread and runs the active micro-kernel (dispatch.h). Test: gemm_test.cpp.
// bf16 compute mode (CpuPrecision::BF16, CPUs with AVX512_BF16): B is packed as bf16 k-pairs instead
// (see PackedB), each A block is rounded to bf16 while it is packed, and the AVX-512 BF16 micro-kernel
// (vdpbf16ps) accumulates in f32; bias, residual and the output stay f32.
#pragma once
#include <cstdint>

#include "context.h"
#include "dispatch.h"

namespace xpsr::cpu {

constexpr int kPanel = 16;  // columns per packed B panel

// A packed B operand, f32 or bf16 (exactly one of data / bf16 is set).
//  f32:  panel p at data + p * K * 16, row k of the panel at +16*k (16 floats).
//  bf16: panel p at bf16 + p * K2 * 16 with K2 = ceil(K / 2); row k2 holds 16 32-bit words, word j =
//        bf16(w[2*k2][j]) | bf16(w[2*k2+1][j]) << 16 (the pair layout vdpbf16ps multiplies), zero past K.
struct PackedB {
  const float* data = nullptr;
  const uint32_t* bf16 = nullptr;
  int64_t K = 0, N = 0;
};

inline int64_t packed_b_floats(int64_t K, int64_t N) { return ceil_div(N, kPanel) * kPanel * K; }
inline int64_t packed_b_words_bf16(int64_t K, int64_t N) { return ceil_div(N, kPanel) * kPanel * ceil_div(K, 2); }
// f32 -> bf16, round to nearest even (NaN stays NaN), as the hardware conversion does for normal values.
uint16_t to_bf16(float f);
float from_bf16(uint16_t h);
// From a Linear weight w[N, K] (B = wᵀ).
void pack_b_linear(const float* w, int64_t N, int64_t K, float* dst);
// From a conv weight w[Ko, C, R, S]; the reduction index is (r * S + s) * C + c (NHWC im2col order).
void pack_b_conv(const float* w, int64_t Ko, int64_t C, int64_t R, int64_t S, float* dst);
// The same two in the bf16 pair layout.
void pack_b_linear_bf16(const float* w, int64_t N, int64_t K, uint32_t* dst);
void pack_b_conv_bf16(const float* w, int64_t Ko, int64_t C, int64_t R, int64_t S, uint32_t* dst);

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

}  // namespace xpsr::cpu
