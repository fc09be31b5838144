// conv2d and linear: both are the packed GEMM of gemm.h. A 1x1 stride-1 unpadded conv reads the NHWC
// input as a dense [N*H*W, C] matrix; every other conv (3x3, stride 2, asymmetric padding) reads it
// through implicit im2col rows, packed per KC block inside the GEMM (no im2col buffer).
// Tests: conv2d_test.cpp, gemm_test.cpp.
#include "gemm.h"
#include "ops.h"

namespace xpsr::cpu {

void linear_op(Context& ctx, const LinearArgs& a, const float* w, const uint32_t* w_bf16, const float* bias) {
  GemmA src;
  src.x = static_cast<const float*>(a.x);
  src.lda = a.ldx;
  PackedB b{w, w_bf16, a.K, a.N};
  Epilogue ep{bias, static_cast<const float*>(a.residual), a.ldr};
  gemm(ctx, a.M, a.N, a.K, src, b, ep, static_cast<float*>(a.y), a.ldy);
}

void conv2d_op(Context& ctx, const Conv2dArgs& a, const float* w, const uint32_t* w_bf16, const float* bias) {
  const int64_t M = (int64_t)a.N * a.P * a.Q, K = (int64_t)a.R * a.S * a.C;
  PackedB b{w, w_bf16, K, a.K};
  Epilogue ep{bias, static_cast<const float*>(a.residual), a.K};
  GemmA src;
  ConvGeom g;
  const bool dense = a.R == 1 && a.S == 1 && a.stride == 1 && a.pad_top == 0 && a.pad_left == 0 && a.pad_bottom == 0 &&
                     a.pad_right == 0;
  if (dense) {
    src.x = static_cast<const float*>(a.x);
    src.lda = a.C;
  } else {
    g.x = static_cast<const float*>(a.x);
    g.N = a.N, g.H = a.H, g.W = a.W, g.C = a.C;
    g.R = a.R, g.S = a.S, g.stride = a.stride, g.pad_top = a.pad_top, g.pad_left = a.pad_left;
    g.P = a.P, g.Q = a.Q;
    src.conv = &g;
  }
  gemm(ctx, M, a.K, K, src, b, ep, static_cast<float*>(a.y), a.K);
}

}  // namespace xpsr::cpu
