// linear: Y[m, n] = X[m, :] . W[n, :] + b[n] + R[m, n] on tensor cores (the main loop is gemm_core.cuh).
// Picks RowsVec (16-byte cp.async) when X's base is 16-byte aligned and lda, K are multiples of 8, else
// RowsScalar (column slices at odd offsets, K = 3...). Also hosts the split-K reduce kernel.
// Test: native/cuda/gemm_test.cu. Benchmark: native/cuda/bench_ops.cu.
#include "gemm_core.cuh"

namespace xpsr::cuda {

__global__ void gemm_splitk_reduce_kernel(const GemmKernelParams p, int splits) {
  const size_t total = (size_t)p.M * p.N;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const int m = (int)(i / p.N), n = (int)(i - (size_t)m * p.N);
    float v = 0.0f;
    for (int s = 0; s < splits; ++s) v += p.partial[s * total + i];
    if (p.bias) v += p.bias[n];
    if (p.R) v += __half2float(p.R[(size_t)m * p.ldr + n]);
    p.Y[(size_t)m * p.ldy + n] = __float2half(v);
  }
}

cudaError_t launch_gemm_splitk_reduce(const GemmKernelParams& p, int splits, int blocks, cudaStream_t s) {
  gemm_splitk_reduce_kernel<<<blocks, 256, 0, s>>>(p, splits);
  return cudaGetLastError();
}

cudaError_t init_gemm_attributes(DeviceCaps& caps) {
  cudaError_t e = gemm_set_all_attributes<AMode::RowsVec>(caps.gemm_regs[(int)AMode::RowsVec]);
  if (e == cudaSuccess) e = gemm_set_all_attributes<AMode::RowsScalar>(caps.gemm_regs[(int)AMode::RowsScalar]);
  return e;
}

static bool pair_ok(const void* p, int ld) { return (reinterpret_cast<uintptr_t>(p) & 3) == 0 && ld % 2 == 0; }

cudaError_t launch_gemm(const GemmArgs& a, const DeviceCaps& caps, const Workspace& ws, cudaStream_t s) {
  GemmKernelParams p;
  p.M = a.M;
  p.N = a.N;
  p.Kdim = a.Kp;
  p.A = static_cast<const __half*>(a.A);
  p.lda = a.lda;
  p.Kvalid = a.K;
  p.B = static_cast<const __half*>(a.B);
  p.bias = a.bias;
  p.R = static_cast<const __half*>(a.R);
  p.ldr = a.ldr;
  p.Y = static_cast<__half*>(a.Y);
  p.ldy = a.ldy;
  p.pair_store = pair_ok(a.Y, a.ldy) && (!a.R || pair_ok(a.R, a.ldr));
  const bool vec = aligned16(a.A) && a.lda % 8 == 0 && a.K % 8 == 0 && a.K == a.Kp;
  return vec ? gemm_run<AMode::RowsVec>(p, caps, ws, s) : gemm_run<AMode::RowsScalar>(p, caps, ws, s);
}

}  // namespace xpsr::cuda
