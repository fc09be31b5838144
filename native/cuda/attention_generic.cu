// Attention for any head dim <= 512 and any alignment (column slices at odd offsets, odd strides), plus the
// dispatcher that sends each call to the tensor-core kernel of its head dim when it can (attention.cuh).
// The generic kernel is f32 SIMT: a CTA of 4 warps owns 4*R query rows of one (b, h); K/V tiles of 32 keys
// are staged in shared memory (f16) and reused by all its rows. Per row and tile, lane j ends up with the
// score of key j (each lane accumulates 32 partial dots over its head-dim slice, then a 31-shuffle
// transpose-reduction), the online softmax runs across the warp, and P V is accumulated with lanes owning
// head-dim slices (d = lane + 32 k). Used for: the VAE's single 512-wide head, unusual tiny dims, and
// unaligned slices. Expected speed: LDS-bound, ~5-10% of the tensor-core path (fine for once-per-image use).
// Test: native/cuda/attention_test.cu.
#include "attention.cuh"

namespace xpsr::cuda {

namespace {

constexpr int kGenWarps = 4, kGenTK = 32;

template <int NPL>
__host__ __device__ constexpr int gen_rows() {
  return NPL >= 16 ? 2 : 4;
}

// One round of the transpose-reduction: lanes exchange the half of part[0, 2S) they do not keep.
template <int S>
__device__ __forceinline__ void transpose_reduce_step(float* part, int lane) {
  const bool upper = (lane & S) != 0;
#pragma unroll
  for (int i = 0; i < S; ++i) {
    const float send = upper ? part[i] : part[i + S];
    const float keep = upper ? part[i + S] : part[i];
    part[i] = keep + __shfl_xor_sync(0xffffffffu, send, S);
  }
}

template <int NPL>
__global__ void __launch_bounds__(kGenWarps * 32) attention_generic_kernel(const AttnProblemDev P, int D, int causal) {
  constexpr int R = gen_rows<NPL>();
  extern __shared__ __align__(16) unsigned char gsm_raw[];
  __half* sK = reinterpret_cast<__half*>(gsm_raw);
  __half* sV = sK + kGenTK * D;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int rows_per_cta = kGenWarps * R;
  const int local = blockIdx.x;
  const int qt = local % P.qtiles, bh = local / P.qtiles;
  const int h = bh % P.heads, b = bh / P.heads;
  const int row0 = qt * rows_per_cta + warp * R;

  float q[R][NPL], o[R][NPL], m[R], l[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int qi = row0 + r;
    m[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int k = 0; k < NPL; ++k) {
      const int d = lane + 32 * k;
      o[r][k] = 0.f;
      q[r][k] = (qi < P.Lq && d < D)
                    ? __half2float(P.q[((size_t)b * P.Lq + qi) * P.ldq + (size_t)h * D + d]) * P.scale_log2
                    : 0.f;
    }
  }
  const int last_row = min(qt * rows_per_cta + rows_per_cta, P.Lq) - 1;
  const int kend = causal ? min(P.Lk, last_row + 1) : P.Lk;
  for (int k0 = 0; k0 < kend; k0 += kGenTK) {
    __syncthreads();
    for (int i = tid; i < kGenTK * D; i += kGenWarps * 32) {
      const int r = i / D, d = i - r * D, key = k0 + r;
      const bool ok = key < P.Lk;
      sK[i] = ok ? P.k[((size_t)b * P.Lk + key) * P.ldk + (size_t)h * D + d] : __float2half(0.f);
      sV[i] = ok ? P.v[((size_t)b * P.Lk + key) * P.ldv + (size_t)h * D + d] : __float2half(0.f);
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int qi = row0 + r;
      float part[32];
#pragma unroll
      for (int j = 0; j < 32; ++j) {
        float acc = 0.f;
#pragma unroll
        for (int k = 0; k < NPL; ++k) {
          const int d = lane + 32 * k;
          if (d < D) acc += q[r][k] * __half2float(sK[j * D + d]);
        }
        part[j] = acc;
      }
      // transpose-reduce: afterwards part[0] on lane j = sum over lanes of the partials of key j
      transpose_reduce_step<16>(part, lane);
      transpose_reduce_step<8>(part, lane);
      transpose_reduce_step<4>(part, lane);
      transpose_reduce_step<2>(part, lane);
      transpose_reduce_step<1>(part, lane);
      const int key = k0 + lane;
      const bool valid = key < P.Lk && !(causal && key > qi);
      const float sc = valid ? part[0] : -INFINITY;
      const float m_new = fmaxf(m[r], warp_max(sc));
      const float base = m_new == -INFINITY ? 0.f : m_new;
      const float alpha = fast_exp2(m[r] - base);
      const float p = fast_exp2(sc - base);
      m[r] = m_new;
      l[r] = l[r] * alpha + p;
#pragma unroll
      for (int k = 0; k < NPL; ++k) o[r][k] *= alpha;
#pragma unroll 8
      for (int j = 0; j < 32; ++j) {
        const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
        for (int k = 0; k < NPL; ++k) {
          const int d = lane + 32 * k;
          if (d < D) o[r][k] += pj * __half2float(sV[j * D + d]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int qi = row0 + r;
    const float tot = warp_sum(l[r]);
    const float inv = tot > 0.f ? 1.f / tot : 0.f;
    if (qi >= P.Lq) continue;
#pragma unroll
    for (int k = 0; k < NPL; ++k) {
      const int d = lane + 32 * k;
      if (d < D) P.o[((size_t)b * P.Lq + qi) * P.ldo + (size_t)h * D + d] = __float2half(o[r][k] * inv);
    }
  }
}

template <int NPL>
cudaError_t generic_launch(const AttentionArgs& a, cudaStream_t s) {
  const int rows = kGenWarps * gen_rows<NPL>();
  AttnProblemDev P = to_dev(a, rows);
  const long long ctas = (long long)P.qtiles * a.heads * a.B;
  if (ctas == 0) return cudaSuccess;
  if (ctas > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  const size_t smem = (size_t)2 * kGenTK * a.head_dim * sizeof(__half);
  attention_generic_kernel<NPL><<<(unsigned)ctas, kGenWarps * 32, smem, s>>>(P, a.head_dim, a.causal ? 1 : 0);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_attention_generic(const AttentionArgs& a, const DeviceCaps& caps, cudaStream_t s) {
  const int d = a.head_dim;
  if (d <= 32) return generic_launch<1>(a, s);
  if (d <= 64) return generic_launch<2>(a, s);
  if (d <= 128) return generic_launch<4>(a, s);
  if (d <= 256) return generic_launch<8>(a, s);
  if (d <= 512) return generic_launch<16>(a, s);
  return cudaErrorNotSupported;
}

cudaError_t init_attention_attributes(DeviceCaps& caps) {
  caps.attn_dims = 0;
  init_attention_small(caps);
  init_attention_d40(caps);
  init_attention_d64(caps);
  init_attention_d80(caps);
  init_attention_d160(caps);
  const int gen_smem = 2 * kGenTK * kGenericAttnMaxHeadDim * (int)sizeof(__half);
  cudaError_t e = cudaFuncSetAttribute(attention_generic_kernel<16>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       std::min(gen_smem, caps.smem_optin));
  return e;
}

static cudaError_t launch_fast_group(const AttentionArgs* p, int n, const DeviceCaps& caps, cudaStream_t s) {
  switch (p[0].head_dim) {
    case 8:
    case 16:
    case 32: return launch_attention_small(p, n, caps, s);
    case 40: return launch_attention_d40(p, n, caps, s);
    case 64: return launch_attention_d64(p, n, caps, s);
    case 80: return launch_attention_d80(p, n, caps, s);
    case 160: return launch_attention_d160(p, n, caps, s);
    default: return cudaErrorNotSupported;
  }
}

cudaError_t launch_attention(const AttentionArgs* problems, int count, const DeviceCaps& caps, cudaStream_t s) {
  for (int i = 0; i < count; i += kMaxAttnProblems) {
    const int n = std::min(kMaxAttnProblems, count - i);
    cudaError_t e = launch_fast_group(problems + i, n, caps, s);
    if (e == cudaErrorNotSupported) {
      (void)cudaGetLastError();
      e = cudaSuccess;
      for (int j = 0; j < n && e == cudaSuccess; ++j) e = launch_attention_generic(problems[i + j], caps, s);
    }
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace xpsr::cuda
