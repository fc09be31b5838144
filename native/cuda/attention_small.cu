// Tensor-core attention instantiated for head dim(s) 8 16 32 (kernel: attention.cuh). One file per head
// dim so the instantiations compile in parallel. Test: native/cuda/attention_test.cu.
#include "attention.cuh"

namespace xpsr::cuda {

cudaError_t init_attention_small(DeviceCaps& caps) {
  if (attention_set_attributes<8>(caps) == cudaSuccess) caps.attn_dims |= 1u << (8 / 8);
  if (attention_set_attributes<16>(caps) == cudaSuccess) caps.attn_dims |= 1u << (16 / 8);
  if (attention_set_attributes<32>(caps) == cudaSuccess) caps.attn_dims |= 1u << (32 / 8);
  (void)cudaGetLastError();  // a kernel that does not fit this device's shared memory is simply not used
  return cudaSuccess;
}

cudaError_t launch_attention_small(const AttentionArgs* p, int n, const DeviceCaps& caps, cudaStream_t s) {
  const int d = p[0].head_dim;
  if (d % 8 || !(caps.attn_dims & (1u << (d / 8)))) return cudaErrorNotSupported;
  switch (d) {
    case 8: return attention_launch<8>(p, n, caps, s);
    case 16: return attention_launch<16>(p, n, caps, s);
    case 32: return attention_launch<32>(p, n, caps, s);
    default: return cudaErrorNotSupported;
  }
}

}  // namespace xpsr::cuda
