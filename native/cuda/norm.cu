// GroupNorm(+SiLU) and LayerNorm on f16 activations with f32 statistics.
// GroupNorm, channels-last x [N, HW, C], three small kernels (they stay memory-bound; ~3 launches are
// nothing inside a CUDA graph):
//   1. gn_partial: grid (chunks, N, csplit); each CTA reads a contiguous run of `per` pixels (tuning.h
//      group_norm_chunking: equal runs, none empty) for a range of channel vectors (16-byte loads when
//      C % 8 == 0), accumulating per-channel sums of (x - shift) and (x - shift)^2 where shift = the
//      chunk's first pixel (cancellation-safe for large means), and writes (shift, sum, sumsq) per
//      channel to the workspace.
//   2. gn_finalize: one CTA of 256 threads per (n, group): thread t merges the items (chunk, channel) of
//      a fixed channel lane and a strided set of chunks with Chan's formula (exact up to rounding; no
//      integer division per item: the chunk's pixel count is min(per, HW - chunk*per)), then a shuffle
//      tree per warp and one across the 8 warps; lane 0's result is broadcast (one statistic per group).
//      Writes per-channel scale a = rstd*gamma and shift b = beta - mean*a. The legacy policy runs the
//      first version's finalize instead (one warp per (n, group): 64 warps on the whole GPU at batch 2,
//      each merging cpg x chunks items in a serial chain) so the first GPU run can time both.
//   3. gn_apply: y = x*a + b (then SiLU), vectorised; y may alias x.
// Traffic: x read twice, y written once (the second read mostly hits L2 at the UNet sizes).
// LayerNorm: one warp per row, the row held in registers (C <= 2048 with 16-byte loads), two-pass
// mean/variance; a scalar warp-per-row kernel handles any other C or alignment.
// Tests: native/cuda/norm_test.cu.
#include <algorithm>

#include "common.cuh"
#include "kernels.h"
#include "tuning.h"

namespace xpsr::cuda {

namespace {

constexpr int kGnThreads = 256;

struct GnGeom {
  int N, HW, C, groups, vpr, VB, rows_per_step, csplit, chunks, per;
};

// Pixels [b, e) of a chunk: equal runs of g.per (the last one shorter; tuning.h makes none empty).
__device__ __forceinline__ void chunk_range(const GnGeom& g, int chunk, int& b, int& e) {
  b = chunk * g.per;
  e = min(g.HW, b + g.per);
}

template <int VEC>
__global__ void __launch_bounds__(kGnThreads)
    gn_partial(const __half* __restrict__ x, const GnGeom g, float* __restrict__ part) {
  __shared__ float red[kGnThreads * 2 * VEC];
  const int chunk = blockIdx.x, n = blockIdx.y, z = blockIdx.z;
  const int t = threadIdx.x;
  const int vl = t % g.VB, pr = t / g.VB;
  const int v = z * g.VB + vl;
  const bool active = pr < g.rows_per_step && v < g.vpr;
  int pb, pe;
  chunk_range(g, chunk, pb, pe);
  float shift[VEC], sum[VEC], sq[VEC];
#pragma unroll
  for (int e = 0; e < VEC; ++e) shift[e] = sum[e] = sq[e] = 0.f;
  const __half* xn = x + (size_t)n * g.HW * g.C + (size_t)v * VEC;
  if (active && pb < pe) {
    if constexpr (VEC == 8) {
      const Half8 s8 = *reinterpret_cast<const Half8*>(xn + (size_t)pb * g.C);
      half8_to_float(s8, shift);
    } else {
      shift[0] = __half2float(xn[(size_t)pb * g.C]);
    }
    for (int p = pb + pr; p < pe; p += g.rows_per_step) {
      float f[VEC];
      if constexpr (VEC == 8) {
        half8_to_float(*reinterpret_cast<const Half8*>(xn + (size_t)p * g.C), f);
      } else {
        f[0] = __half2float(xn[(size_t)p * g.C]);
      }
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const float d = f[e] - shift[e];
        sum[e] += d;
        sq[e] += d * d;
      }
    }
  }
  // combine the rows of this CTA that share channel vector v (same shift)
#pragma unroll
  for (int e = 0; e < VEC; ++e) {
    red[(t * VEC + e) * 2] = sum[e];
    red[(t * VEC + e) * 2 + 1] = sq[e];
  }
  __syncthreads();
  if (pr == 0 && v < g.vpr) {
    for (int r = 1; r < g.rows_per_step; ++r) {
      const int tt = r * g.VB + vl;
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        sum[e] += red[(tt * VEC + e) * 2];
        sq[e] += red[(tt * VEC + e) * 2 + 1];
      }
    }
    float* out = part + (((size_t)n * g.chunks + chunk) * g.C + (size_t)v * VEC) * 3;
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      out[e * 3] = shift[e];
      out[e * 3 + 1] = sum[e];
      out[e * 3 + 2] = sq[e];
    }
  }
}

struct Welford {
  float n, mean, m2;
};
__device__ __forceinline__ Welford merge(Welford a, Welford b) {
  const float n = a.n + b.n;
  if (n == 0.f) return a;
  const float d = b.mean - a.mean, f = b.n / n;
  return Welford{n, a.mean + d * f, a.m2 + b.m2 + d * d * a.n * f};
}

// Butterfly merge over the 32 lanes, then lane 0's result everywhere (lanes merge in different orders and
// could differ by an ulp: one statistic per group keeps its channels consistent and runs reproducible).
__device__ __forceinline__ Welford warp_merge(Welford acc) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Welford other{__shfl_xor_sync(0xffffffffu, acc.n, o), __shfl_xor_sync(0xffffffffu, acc.mean, o),
                  __shfl_xor_sync(0xffffffffu, acc.m2, o)};
    acc = merge(acc, other);
  }
  return Welford{__shfl_sync(0xffffffffu, acc.n, 0), __shfl_sync(0xffffffffu, acc.mean, 0),
                 __shfl_sync(0xffffffffu, acc.m2, 0)};
}

constexpr int kGnFinThreads = 256;

// One CTA per (group, n): grid (groups, N). Writes ab[(n*C + c)*2 + {0,1}] = (scale, shift).
__global__ void __launch_bounds__(kGnFinThreads)
    gn_finalize(const float* __restrict__ part, const GnGeom g, float eps, const float* __restrict__ gamma,
                const float* __restrict__ beta, float* __restrict__ ab) {
  __shared__ Welford warp_res[kGnFinThreads / 32];
  __shared__ Welford group_res;
  const int grp = blockIdx.x, n = blockIdx.y, t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const int cpg = g.C / g.groups, c0 = grp * cpg;
  // thread t: channel lane cl (channels cl, cl + lanes_c, ...), chunks ch0, ch0 + lanes_ch, ...
  const int lanes_c = min(cpg, kGnFinThreads), lanes_ch = kGnFinThreads / lanes_c;
  const int cl = t % lanes_c, ch0 = t / lanes_c;
  Welford acc{0.f, 0.f, 0.f};
  if (ch0 < lanes_ch) {
    for (int ch = ch0; ch < g.chunks; ch += lanes_ch) {
      const int pb = ch * g.per;
      const float cnt = (float)min(g.per, g.HW - pb);  // >= 1: no chunk is empty
      const float inv = 1.f / cnt;
      const float* pp = part + (((size_t)n * g.chunks + ch) * g.C + c0) * 3;
      for (int c = cl; c < cpg; c += lanes_c) {
        const float s = pp[c * 3 + 1], mean_d = s * inv;
        acc = merge(acc, Welford{cnt, pp[c * 3] + mean_d, fmaxf(pp[c * 3 + 2] - s * mean_d, 0.f)});
      }
    }
  }
  acc = warp_merge(acc);
  if (lane == 0) warp_res[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    Welford w = lane < kGnFinThreads / 32 ? warp_res[lane] : Welford{0.f, 0.f, 0.f};
    w = warp_merge(w);
    if (lane == 0) group_res = w;
  }
  __syncthreads();
  const Welford r = group_res;
  const float var = r.n > 0.f ? r.m2 / r.n : 0.f;
  const float rstd = rsqrtf(var + eps);
  for (int c = c0 + t; c < c0 + cpg; c += kGnFinThreads) {
    const float a = rstd * gamma[c];
    ab[((size_t)n * g.C + c) * 2] = a;
    ab[((size_t)n * g.C + c) * 2 + 1] = beta[c] - r.mean * a;
  }
}

// LEGACY (XPSR_CUDA_TILES=legacy, for the old-vs-new measurement): one warp per (n, group).
__global__ void gn_finalize_legacy(const float* __restrict__ part, const GnGeom g, float eps,
                                   const float* __restrict__ gamma, const float* __restrict__ beta,
                                   float* __restrict__ ab) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
  if (warp >= g.N * g.groups) return;
  const int n = warp / g.groups, grp = warp - n * g.groups;
  const int cpg = g.C / g.groups, c0 = grp * cpg;
  Welford acc{0.f, 0.f, 0.f};
  const int items = cpg * g.chunks;
  for (int i = lane; i < items; i += 32) {
    const int chunk = i / cpg, c = c0 + (i - chunk * cpg);
    int pb, pe;
    chunk_range(g, chunk, pb, pe);
    const float cnt = (float)(pe - pb);
    if (cnt == 0.f) continue;
    const float* pp = part + (((size_t)n * g.chunks + chunk) * g.C + c) * 3;
    const float s = pp[1], mean_d = s / cnt;
    acc = merge(acc, Welford{cnt, pp[0] + mean_d, fmaxf(pp[2] - s * mean_d, 0.f)});
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Welford other{__shfl_xor_sync(0xffffffffu, acc.n, o), __shfl_xor_sync(0xffffffffu, acc.mean, o),
                  __shfl_xor_sync(0xffffffffu, acc.m2, o)};
    acc = merge(acc, other);
  }
  // REVIEW FIX: after the xor butterfly every lane holds the merge of all items, but merged in a different
  // order, so mean/m2 could differ by an ulp between lanes - and each lane writes the scale/shift of its
  // own channels, i.e. channels of one group were normalised with slightly different statistics (and
  // not bit-reproducibly). Use lane 0's result everywhere.
  acc.n = __shfl_sync(0xffffffffu, acc.n, 0);
  acc.mean = __shfl_sync(0xffffffffu, acc.mean, 0);
  acc.m2 = __shfl_sync(0xffffffffu, acc.m2, 0);
  const float var = acc.n > 0.f ? acc.m2 / acc.n : 0.f;
  const float rstd = rsqrtf(var + eps);
  for (int c = c0 + lane; c < c0 + cpg; c += 32) {
    const float a = rstd * gamma[c];
    ab[((size_t)n * g.C + c) * 2] = a;
    ab[((size_t)n * g.C + c) * 2 + 1] = beta[c] - acc.mean * a;
  }
}

// I: index type. 32-bit whenever the tensor has < 2^31 elements (integer division is this kernel's main ALU
// cost); 64-bit above. REVIEW FIX: the launcher used to refuse >= 2^31 elements (cudaErrorInvalidValue),
// which the VAE decoder at 2048x2048 with batch 2 reaches (2 x 2048^2 x 256 = 2^31 exactly).
template <int VEC, typename I>
__global__ void gn_apply(const __half* x, __half* y, const GnGeom g, const float* __restrict__ ab, int silu) {
  const I per_n = (I)g.HW * g.vpr, total = per_n * g.N;
  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (I)gridDim.x * blockDim.x) {
    const int n = (int)(i / per_n);
    const int v = (int)(i % (I)g.vpr);
    const float* abn = ab + ((size_t)n * g.C + (size_t)v * VEC) * 2;
    float f[VEC];
    if constexpr (VEC == 8) {
      half8_to_float(reinterpret_cast<const Half8*>(x)[i], f);
    } else {
      f[0] = __half2float(x[i]);
    }
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      float r = f[e] * abn[2 * e] + abn[2 * e + 1];
      f[e] = silu ? silu_f(r) : r;
    }
    if constexpr (VEC == 8) {
      reinterpret_cast<Half8*>(y)[i] = float_to_half8(f);
    } else {
      y[i] = __float2half(f[0]);
    }
  }
}

GnGeom gn_geometry(const GroupNormLaunch& a, const DeviceCaps& caps, size_t ws_bytes, int vec) {
  GnGeom g;
  g.N = a.N;
  g.HW = a.HW;
  g.C = a.C;
  g.groups = a.groups;
  g.vpr = a.C / vec;
  g.VB = std::min(g.vpr, kGnThreads);
  g.rows_per_step = kGnThreads / g.VB;
  g.csplit = (g.vpr + g.VB - 1) / g.VB;
  const size_t ab_bytes = (size_t)a.N * a.C * 2 * sizeof(float);
  const size_t per_chunk = (size_t)a.N * a.C * 3 * sizeof(float);
  const GnChunking ch = group_norm_chunking(a.N, a.HW, g.csplit, g.rows_per_step, caps.sms,
                                            ws_bytes > ab_bytes ? ws_bytes - ab_bytes : 0, per_chunk);
  g.chunks = ch.chunks;
  g.per = ch.per;
  return g;
}

int gn_vec(const GroupNormLaunch& a) { return (a.C % 8 == 0 && aligned16(a.x) && aligned16(a.y)) ? 8 : 1; }

}  // namespace

size_t group_norm_workspace_bytes(const GroupNormLaunch& a, const DeviceCaps& caps, size_t ws_bytes) {
  const GnGeom g = gn_geometry(a, caps, ws_bytes, gn_vec(a));
  return (size_t)g.N * g.C * sizeof(float) * (3 * (size_t)g.chunks + 2);
}

cudaError_t launch_group_norm(const GroupNormLaunch& a, const DeviceCaps& caps, const Workspace& ws, cudaStream_t s) {
  if (a.N == 0 || a.HW == 0 || a.C == 0) return cudaSuccess;
  const int vec = gn_vec(a);
  const GnGeom g = gn_geometry(a, caps, ws.bytes, vec);
  const size_t part_floats = (size_t)g.N * g.chunks * g.C * 3;
  if ((part_floats + (size_t)g.N * g.C * 2) * sizeof(float) > ws.bytes) return cudaErrorMemoryAllocation;
  float* part = static_cast<float*>(ws.ptr);
  float* ab = part + part_floats;
  const dim3 grid1((unsigned)g.chunks, (unsigned)g.N, (unsigned)g.csplit);
  if (vec == 8) gn_partial<8><<<grid1, kGnThreads, 0, s>>>(static_cast<const __half*>(a.x), g, part);
  else gn_partial<1><<<grid1, kGnThreads, 0, s>>>(static_cast<const __half*>(a.x), g, part);
  if (gn_finalize_legacy()) {
    const int warps = g.N * g.groups;
    gn_finalize_legacy<<<(warps + 7) / 8, 256, 0, s>>>(part, g, a.eps, a.gamma, a.beta, ab);
  } else {
    gn_finalize<<<dim3((unsigned)g.groups, (unsigned)g.N), kGnFinThreads, 0, s>>>(part, g, a.eps, a.gamma, a.beta, ab);
  }
  const size_t items = (size_t)g.N * g.HW * g.vpr;
  const int blocks = elementwise_blocks(items, caps.sms);
  const __half* xs = static_cast<const __half*>(a.x);
  __half* ys = static_cast<__half*>(a.y);
  const bool idx64 = (size_t)a.N * a.HW * a.C >= ((size_t)1 << 31) || force_index64();
  if (vec == 8) {
    if (idx64) gn_apply<8, uint64_t><<<blocks, 256, 0, s>>>(xs, ys, g, ab, a.silu);
    else gn_apply<8, uint32_t><<<blocks, 256, 0, s>>>(xs, ys, g, ab, a.silu);
  } else {
    if (idx64) gn_apply<1, uint64_t><<<blocks, 256, 0, s>>>(xs, ys, g, ab, a.silu);
    else gn_apply<1, uint32_t><<<blocks, 256, 0, s>>>(xs, ys, g, ab, a.silu);
  }
  return cudaGetLastError();
}

// ---- LayerNorm ---------------------------------------------------------------------------------------------

namespace {

constexpr int kLnMaxV = 8;  // 16-byte vectors per lane: C <= 32 * 8 * 8 = 2048

__global__ void __launch_bounds__(256) ln_vec(const __half* x, __half* y, int rows, int C, float eps,
                                              const float* __restrict__ gamma, const float* __restrict__ beta) {
  const int row = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= rows) return;
  const int nv = C / 8;
  const Half8* xr = reinterpret_cast<const Half8*>(x + (size_t)row * C);
  float f[kLnMaxV][8];
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < kLnMaxV; ++i) {
    const int v = lane + 32 * i;
    if (v < nv) {
      half8_to_float(xr[v], f[i]);
#pragma unroll
      for (int e = 0; e < 8; ++e) s += f[i][e];
    }
  }
  const float mean = warp_sum(s) / C;
  float q = 0.f;
#pragma unroll
  for (int i = 0; i < kLnMaxV; ++i) {
    const int v = lane + 32 * i;
    if (v < nv) {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float d = f[i][e] - mean;
        q += d * d;
      }
    }
  }
  const float rstd = rsqrtf(warp_sum(q) / C + eps);
  Half8* yr = reinterpret_cast<Half8*>(y + (size_t)row * C);
#pragma unroll
  for (int i = 0; i < kLnMaxV; ++i) {
    const int v = lane + 32 * i;
    if (v < nv) {
      float o[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] = (f[i][e] - mean) * rstd * gamma[v * 8 + e] + beta[v * 8 + e];
      yr[v] = float_to_half8(o);
    }
  }
}

__global__ void __launch_bounds__(256) ln_scalar(const __half* x, __half* y, int rows, int C, float eps,
                                                 const float* __restrict__ gamma, const float* __restrict__ beta) {
  const int row = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= rows) return;
  const __half* xr = x + (size_t)row * C;
  float s = 0.f;
  for (int c = lane; c < C; c += 32) s += __half2float(xr[c]);
  const float mean = warp_sum(s) / C;
  float q = 0.f;
  for (int c = lane; c < C; c += 32) {
    const float d = __half2float(xr[c]) - mean;
    q += d * d;
  }
  const float rstd = rsqrtf(warp_sum(q) / C + eps);
  __half* yr = y + (size_t)row * C;
  for (int c = lane; c < C; c += 32) yr[c] = __float2half((__half2float(xr[c]) - mean) * rstd * gamma[c] + beta[c]);
}

}  // namespace

cudaError_t launch_layer_norm(const LayerNormLaunch& a, cudaStream_t s) {
  if (a.rows == 0) return cudaSuccess;
  const unsigned blocks = (unsigned)((a.rows + 7) / 8);
  const bool vec = a.C % 8 == 0 && a.C <= 32 * 8 * kLnMaxV && aligned16(a.x) && aligned16(a.y);
  if (vec)
    ln_vec<<<blocks, 256, 0, s>>>(static_cast<const __half*>(a.x), static_cast<__half*>(a.y), a.rows, a.C, a.eps,
                                  a.gamma, a.beta);
  else
    ln_scalar<<<blocks, 256, 0, s>>>(static_cast<const __half*>(a.x), static_cast<__half*>(a.y), a.rows, a.C, a.eps,
                                     a.gamma, a.beta);
  return cudaGetLastError();
}

}  // namespace xpsr::cuda
