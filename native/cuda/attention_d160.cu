// Tensor-core attention for head dim 160 (kernel: attention.cuh) in its three tuning.h variants: v0 the
// legacy BC 64 tile (105 KiB of shared memory: too much for the 99 KiB of sm_86/sm_89), v1 BC 64 with Q
// aliased onto the second K/V buffer (84 KiB), v2 BC 32 aliased (42 KiB). Each variant that fits the
// device is configured at start; tuning.h choose_attn_d160 picks one per launch (legacy policy: v0 or the
// SIMT kernel). One file per head dim so the instantiations compile in parallel.
// Test: native/cuda/attention_test.cu (cuda_op_tiles_attention_d160_variants).
#include "attention.cuh"

namespace xpsr::cuda {

cudaError_t init_attention_d160(DeviceCaps& caps) {
  caps.d160_fits = 0;
  if (attention_set_attributes<160, 0>(caps, &caps.d160_regs[0]) == cudaSuccess) caps.d160_fits |= 1u;
  (void)cudaGetLastError();
  if (attention_set_attributes<160, 1>(caps, &caps.d160_regs[1]) == cudaSuccess) caps.d160_fits |= 2u;
  (void)cudaGetLastError();
  if (attention_set_attributes<160, 2>(caps, &caps.d160_regs[2]) == cudaSuccess) caps.d160_fits |= 4u;
  (void)cudaGetLastError();  // a variant that does not fit this device's shared memory is simply not used
  if (caps.d160_fits) caps.attn_dims |= 1u << (160 / 8);
  return cudaSuccess;
}

int attention_d160_variant(const DeviceCaps& caps) {
  const int forced = forced_attn_d160_variant();
  if (forced >= 0) return (caps.d160_fits >> forced) & 1u ? forced : -1;
  return choose_attn_d160(tile_policy(), caps.model, caps.d160_regs, caps.d160_fits);
}

cudaError_t launch_attention_d160(const AttentionArgs* p, int n, const DeviceCaps& caps, cudaStream_t s) {
  if (p[0].head_dim != 160 || !(caps.attn_dims & (1u << (160 / 8)))) return cudaErrorNotSupported;
  const int v = attention_d160_variant(caps);
  cudaError_t e = cudaErrorNotSupported;
  switch (v) {
    case 0: e = attention_launch<160, 0>(p, n, caps, s); break;
    case 1: e = attention_launch<160, 1>(p, n, caps, s); break;
    case 2: e = attention_launch<160, 2>(p, n, caps, s); break;
    default: break;
  }
  note_attn_d160_variant(e == cudaSuccess ? v : -1);
  return e;
}

}  // namespace xpsr::cuda
