// Tensor-core attention instantiated for head dim(s) 80 (kernel: attention.cuh). One file per head
// dim so the instantiations compile in parallel. Test: native/cuda/attention_test.cu.
#include "attention.cuh"

namespace xpsr::cuda {

cudaError_t init_attention_d80(DeviceCaps& caps) {
  if (attention_set_attributes<80>(caps) == cudaSuccess) caps.attn_dims |= 1u << (80 / 8);
  (void)cudaGetLastError();  // a kernel that does not fit this device's shared memory is simply not used
  return cudaSuccess;
}

cudaError_t launch_attention_d80(const AttentionArgs* p, int n, const DeviceCaps& caps, cudaStream_t s) {
  const int d = p[0].head_dim;
  if (d % 8 || !(caps.attn_dims & (1u << (d / 8)))) return cudaErrorNotSupported;
  switch (d) {
    case 80: return attention_launch<80>(p, n, caps, s);
    default: return cudaErrorNotSupported;
  }
}

}  // namespace xpsr::cuda
