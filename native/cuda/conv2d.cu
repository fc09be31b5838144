// conv2d as an implicit GEMM on tensor cores (main loop: gemm_core.cuh):
//   M = N*P*Q output pixels, N = K output channels, reduction k = (r, s, c) over R*S*Cp.
// Activations NHWC, weights re-laid at upload to [K][R][S][Cp] (Cp = C rounded up to 8, zero padded), so
// one 16-byte cp.async fetches 8 channels of one filter tap and padding/out-of-range taps are cp.async
// zero-fills. C % 8 != 0 (the 3- and 4-channel input convs) takes the element-load gather. 1x1 stride-1
// unpadded convs are plain GEMMs over the pixels and go through the linear path's A modes.
// Bias and residual (the resnet shortcut) are fused into the epilogue.
// Test: native/cuda/conv2d_test.cu. Benchmark: native/cuda/bench_ops.cu.
#include "gemm_core.cuh"

namespace xpsr::cuda {

cudaError_t init_conv_attributes(DeviceCaps& caps) {
  cudaError_t e = gemm_set_all_attributes<AMode::ConvVec>(caps.gemm_regs[(int)AMode::ConvVec]);
  if (e == cudaSuccess) e = gemm_set_all_attributes<AMode::ConvScalar>(caps.gemm_regs[(int)AMode::ConvScalar]);
  return e;
}

cudaError_t launch_conv2d(const ConvArgs& a, const DeviceCaps& caps, const Workspace& ws, cudaStream_t s) {
  const bool pointwise =
      a.R == 1 && a.S == 1 && a.stride == 1 && a.pad_top == 0 && a.pad_left == 0 && a.P == a.H && a.Q == a.W;
  if (pointwise) {
    GemmArgs g;
    g.M = a.N * a.H * a.W;
    g.N = a.K;
    g.K = a.C;
    g.A = a.x;
    g.lda = a.C;
    g.B = a.w;
    g.Kp = a.Cp;
    g.bias = a.bias;
    g.R = a.residual;
    g.ldr = a.K;
    g.Y = a.y;
    g.ldy = a.K;
    return launch_gemm(g, caps, ws, s);
  }
  GemmKernelParams p;
  p.M = a.N * a.P * a.Q;
  p.N = a.K;
  p.Kdim = a.R * a.S * a.Cp;
  p.x = static_cast<const __half*>(a.x);
  p.H = a.H;
  p.W = a.W;
  p.C = a.C;
  p.Cp = a.Cp;
  p.S = a.S;
  p.stride = a.stride;
  p.pad_t = a.pad_top;
  p.pad_l = a.pad_left;
  p.P = a.P;
  p.Q = a.Q;
  p.B = static_cast<const __half*>(a.w);
  p.bias = a.bias;
  p.R = static_cast<const __half*>(a.residual);
  p.ldr = a.K;
  p.Y = static_cast<__half*>(a.y);
  p.ldy = a.K;
  p.pair_store = a.K % 2 == 0;  // y/residual are whole allocations' offsets the caller keeps 4-byte aligned
  p.pair_store = p.pair_store && (reinterpret_cast<uintptr_t>(a.y) & 3) == 0 &&
                 (!a.residual || (reinterpret_cast<uintptr_t>(a.residual) & 3) == 0);
  const bool vec = a.C % 8 == 0 && aligned16(a.x);
  return vec ? gemm_run<AMode::ConvVec>(p, caps, ws, s) : gemm_run<AMode::ConvScalar>(p, caps, ws, s);
}

}  // namespace xpsr::cuda
