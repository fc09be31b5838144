// Fused multi-head attention, FA2-style, on tensor cores (sm_80+ mma.sync):
//   O = softmax(scale * Q K^T [+ causal mask]) V     per (problem, batch, head), f16 in/out, f32 softmax.
// One CTA owns BR = WARPS*16*MT query rows of one (problem, b, h); each warp owns MT m16 row tiles and keeps
// their Q fragments in registers for the whole pass. K/V tiles of BC keys are double-buffered in shared
// memory through cp.async (the next tile loads while this one computes). S = QK^T uses m16n8k16 over the
// head dim (plus one m16n8k8 when D = 8 mod 16: D=40 is 2 k16 + 1 k8 steps, no padding to 48/64); the
// online softmax runs on the raw S accumulators in registers (running row max of the raw scores; then
// p = exp2(s * scale*log2e - max * scale*log2e): ONE FFMA + EX2 per score, the scale folded into the
// exponent as FlashAttention-2 does; running row sum in f32, rows of the quad combined with two
// shuffles); P is repacked in registers as the
// f16 A operand of O += PV (the m16n8 accumulator layout equals the m16k16 A layout), V through
// ldmatrix.trans. Head dims are exact template parameters (8/16/32/40/64/80/160 instantiated); other
// dims and unaligned slices use attention_generic.cu.
// Several independent problems (same D) run in ONE launch: the grid is the concatenation of their CTAs
// (used for SFA's high/low-level branches: backend attention_multi()).
// With ALIAS_Q (tuning.h: the d=160 variants that fit 99 KiB) Q's shared memory is the second K/V buffer:
// Q is read into registers once, a barrier, then the first prefetch overwrites it.
// Fast-path requirements (checked by the dispatcher): q/k/v/o 16-byte aligned, ld* % 8 == 0, D % 8 == 0,
// scale > 0 (the running max is taken over raw scores, which only commutes with a positive scale).
// Tiles: tuning.h attn_tile(). Test: native/cuda/attention_test.cu.
#pragma once
#include <cmath>

#include "common.cuh"
#include "kernels.h"
#include "tuning.h"

namespace xpsr::cuda {

struct AttnProblemDev {
  const __half* q = nullptr;
  const __half* k = nullptr;
  const __half* v = nullptr;
  __half* o = nullptr;
  int ldq = 0, ldk = 0, ldv = 0, ldo = 0;
  int B = 0, Lq = 0, Lk = 0, heads = 0;
  float scale_log2 = 0.f;  // scale * log2(e)
  int qtiles = 0;          // ceil(Lq / BR)
  int cta_begin = 0;       // first CTA index of this problem in the launch
};
struct AttnBatch {
  AttnProblemDev p[kMaxAttnProblems];
  int count = 0;
  int causal = 0;
};

inline AttnProblemDev to_dev(const AttentionArgs& a, int br) {
  AttnProblemDev d;
  d.q = static_cast<const __half*>(a.q);
  d.k = static_cast<const __half*>(a.k);
  d.v = static_cast<const __half*>(a.v);
  d.o = static_cast<__half*>(a.o);
  d.ldq = a.ldq;
  d.ldk = a.ldk;
  d.ldv = a.ldv;
  d.ldo = a.ldo;
  d.B = a.B;
  d.Lq = a.Lq;
  d.Lk = a.Lk;
  d.heads = a.heads;
  d.scale_log2 = a.scale * 1.4426950408889634f;
  d.qtiles = (a.Lq + br - 1) / br;
  return d;
}

template <int D, int WARPS, int MT, int BC, bool ALIAS_Q>
__global__ void __launch_bounds__(WARPS * 32) attention_fa_kernel(const __grid_constant__ AttnBatch batch) {
  constexpr int THREADS = WARPS * 32;
  constexpr int BR = WARPS * 16 * MT;
  constexpr int RC = attn_row_chunks(D);  // 16-byte chunks per smem row (odd: conflict-free ldmatrix)
  constexpr int DC = D / 8;               // chunks holding data
  constexpr int KS16 = D / 16;            // k16 steps of QK^T
  constexpr bool K8 = (D % 16) != 0;      // one trailing k8 step
  constexpr int NTD = D / 8;              // n8 tiles of O
  constexpr int NTS = BC / 8;             // n8 tiles of S
  static_assert(D % 8 == 0 && BC % 32 == 0, "attention tile");
  constexpr uint32_t ROWB = RC * 16;

  // K/V buffer b (b = 0, 1): K rows at sK + b*KV_STRIDE, V rows at sV + b*KV_STRIDE (rows of ROWB bytes):
  //   separate Q: [Q: BR][K0][K1][V0][V1]                        (BR + 4*BC rows)
  //   ALIAS_Q   : [K0][V0][K1][V1], Q over rows 2*BC.. 2*BC+BR   (2*BC + max(2*BC, BR) rows)
  // (tuning.h attn_smem_rows() is the same count; the launcher passes attn_smem_bytes().)
  constexpr uint32_t KV_STRIDE = ALIAS_Q ? 2 * BC * ROWB : BC * ROWB;
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t smem_base = smem_addr(smem);
  const uint32_t sQ = ALIAS_Q ? smem_base + 2 * BC * ROWB : smem_base;
  const uint32_t sK = ALIAS_Q ? smem_base : smem_base + BR * ROWB;
  const uint32_t sV = ALIAS_Q ? smem_base + BC * ROWB : smem_base + (BR + 2 * BC) * ROWB;

  // which problem / (b, h, q-tile)
  int pi = 0;
#pragma unroll
  for (int i = 1; i < kMaxAttnProblems; ++i)
    if (i < batch.count && (int)blockIdx.x >= batch.p[i].cta_begin) pi = i;
  const AttnProblemDev& P = batch.p[pi];
  const int local = blockIdx.x - P.cta_begin;
  const int qt = local % P.qtiles;
  const int bh = local / P.qtiles;
  const int h = bh % P.heads, b = bh / P.heads;
  const int q0 = qt * BR;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t4 = lane & 3;

  const __half* qbase = P.q + (size_t)b * P.Lq * P.ldq + (size_t)h * D;
  const __half* kbase = P.k + (size_t)b * P.Lk * P.ldk + (size_t)h * D;
  const __half* vbase = P.v + (size_t)b * P.Lk * P.ldv + (size_t)h * D;

  auto load_rows = [&](uint32_t dst, const __half* base, int ld, int row0, int nrows_valid, int rows) {
    for (int i = tid; i < rows * DC; i += THREADS) {
      const int r = i / DC, c = i - r * DC;
      const bool ok = r < nrows_valid;
      const __half* src = ok ? base + (size_t)(row0 + r) * ld + c * 8 : base;
      cp_async16(dst + r * ROWB + c * 16, src, ok);
    }
  };
  const int nkv_all = (P.Lk + BC - 1) / BC;
  const int nkv = batch.causal ? min(nkv_all, (min(q0 + BR, P.Lq) + BC - 1) / BC) : nkv_all;

  load_rows(sQ, qbase, P.ldq, q0, P.Lq - q0, BR);
  load_rows(sK, kbase, P.ldk, 0, P.Lk, BC);
  load_rows(sV, vbase, P.ldv, 0, P.Lk, BC);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  // Q fragments (A operand) for this warp's MT row tiles
  uint32_t qf[MT][KS16 > 0 ? KS16 : 1][4];
  uint32_t qk8[MT][2];
#pragma unroll
  for (int i = 0; i < MT; ++i) {
    const int row = warp * 16 * MT + i * 16 + (lane & 15);
#pragma unroll
    for (int ks = 0; ks < KS16; ++ks)
      ldsm_x4(sQ + row * ROWB + (ks * 2 + (lane >> 4)) * 16, qf[i][ks][0], qf[i][ks][1], qf[i][ks][2], qf[i][ks][3]);
    if constexpr (K8) ldsm_x2(sQ + row * ROWB + KS16 * 2 * 16, qk8[i][0], qk8[i][1]);
  }
  // ALIAS_Q: every warp must have its Q fragments before the first prefetch (into buffer 1) overwrites Q
  if constexpr (ALIAS_Q) __syncthreads();

  float oacc[MT][NTD][4];
  float row_max[MT][2], row_sum[MT][2];
#pragma unroll
  for (int i = 0; i < MT; ++i) {
#pragma unroll
    for (int j = 0; j < NTD; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) oacc[i][j][e] = 0.f;
    row_max[i][0] = row_max[i][1] = -INFINITY;
    row_sum[i][0] = row_sum[i][1] = 0.f;
  }

  for (int j = 0; j < nkv; ++j) {
    const int buf = j & 1;
    if (j + 1 < nkv) {
      const int k0n = (j + 1) * BC;
      load_rows(sK + (buf ^ 1) * KV_STRIDE, kbase, P.ldk, k0n, P.Lk - k0n, BC);
      load_rows(sV + (buf ^ 1) * KV_STRIDE, vbase, P.ldv, k0n, P.Lk - k0n, BC);
    }
    cp_async_commit();
    const uint32_t kS = sK + buf * KV_STRIDE, vS = sV + buf * KV_STRIDE;
    const int k0 = j * BC;

    // ---- S = Q K^T
    float s[MT][NTS][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int t = 0; t < NTS; ++t)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[i][t][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS16; ++ks) {
#pragma unroll
      for (int nj = 0; nj < NTS / 2; ++nj) {
        uint32_t b0, b1, b2, b3;
        const int row = nj * 16 + (lane & 7) + ((lane >> 4) << 3);
        ldsm_x4(kS + row * ROWB + (ks * 2 + ((lane >> 3) & 1)) * 16, b0, b1, b2, b3);
#pragma unroll
        for (int i = 0; i < MT; ++i) {
          mma16816(s[i][2 * nj], qf[i][ks], b0, b1);
          mma16816(s[i][2 * nj + 1], qf[i][ks], b2, b3);
        }
      }
    }
    if constexpr (K8) {
#pragma unroll
      for (int nj = 0; nj < NTS / 4; ++nj) {
        uint32_t b[4];
        const int row = nj * 32 + lane;  // matrix lane/8 = key tile 4nj + lane/8, row lane%8
        ldsm_x4(kS + row * ROWB + KS16 * 2 * 16, b[0], b[1], b[2], b[3]);
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
          for (int q = 0; q < 4; ++q) mma1688(s[i][4 * nj + q], qk8[i][0], qk8[i][1], b[q]);
      }
    }

    // ---- mask, online softmax over raw scores, P (f16) as A fragments
    // row_max is in raw-score units; with sl = scale*log2(e) > 0, exp(scale*(s - max)) = exp2(s*sl - max*sl)
    // = exp2(fma(s, sl, nb)) with nb = -max*sl: one FFMA + EX2 per score (was FMUL, FADD, EX2).
    const bool need_mask = k0 + BC > P.Lk || batch.causal;
    const float sl = P.scale_log2;
#pragma unroll
    for (int i = 0; i < MT; ++i) {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int qi = q0 + warp * 16 * MT + i * 16 + g + hh * 8;
        float mx = -INFINITY;
#pragma unroll
        for (int t = 0; t < NTS; ++t)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int kj = k0 + t * 8 + t4 * 2 + e;
            float v = s[i][t][2 * hh + e];
            if (need_mask && (kj >= P.Lk || (batch.causal && kj > qi))) v = -INFINITY;
            s[i][t][2 * hh + e] = v;
            mx = fmaxf(mx, v);
          }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(row_max[i][hh], mx);
        // every score so far masked: nb = 0 makes p = exp2(-inf) = 0 and alpha = exp2(-inf) = 0 (no NaN)
        const float nb = m_new == -INFINITY ? 0.f : -m_new * sl;
        const float alpha = fast_exp2(fmaf(row_max[i][hh], sl, nb));
        row_max[i][hh] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int t = 0; t < NTS; ++t)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float p = fast_exp2(fmaf(s[i][t][2 * hh + e], sl, nb));
            s[i][t][2 * hh + e] = p;
            sum += p;
          }
        row_sum[i][hh] = row_sum[i][hh] * alpha + sum;
#pragma unroll
        for (int d = 0; d < NTD; ++d) {
          oacc[i][d][2 * hh] *= alpha;
          oacc[i][d][2 * hh + 1] *= alpha;
        }
      }
    }

    // ---- O += P V
#pragma unroll
    for (int u = 0; u < BC / 16; ++u) {
      uint32_t pa[MT][4];
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        pa[i][0] = pack_half2(s[i][2 * u][0], s[i][2 * u][1]);
        pa[i][1] = pack_half2(s[i][2 * u][2], s[i][2 * u][3]);
        pa[i][2] = pack_half2(s[i][2 * u + 1][0], s[i][2 * u + 1][1]);
        pa[i][3] = pack_half2(s[i][2 * u + 1][2], s[i][2 * u + 1][3]);
      }
      const int vrow = u * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
#pragma unroll
      for (int dj = 0; dj < NTD / 2; ++dj) {
        uint32_t b0, b1, b2, b3;
        ldsm_x4_t(vS + vrow * ROWB + (dj * 2 + (lane >> 4)) * 16, b0, b1, b2, b3);
#pragma unroll
        for (int i = 0; i < MT; ++i) {
          mma16816(oacc[i][2 * dj], pa[i], b0, b1);
          mma16816(oacc[i][2 * dj + 1], pa[i], b2, b3);
        }
      }
      if constexpr (NTD % 2) {
        uint32_t b0, b1;
        ldsm_x2_t(vS + vrow * ROWB + (NTD - 1) * 16, b0, b1);
#pragma unroll
        for (int i = 0; i < MT; ++i) mma16816(oacc[i][NTD - 1], pa[i], b0, b1);
      }
    }

    cp_async_wait<0>();
    __syncthreads();
  }

  // ---- normalise and store
  __half* obase = P.o + (size_t)b * P.Lq * P.ldo + (size_t)h * D;
#pragma unroll
  for (int i = 0; i < MT; ++i) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      float l = row_sum[i][hh];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      const int qi = q0 + warp * 16 * MT + i * 16 + g + hh * 8;
      if (qi >= P.Lq) continue;
      __half* orow = obase + (size_t)qi * P.ldo;
#pragma unroll
      for (int d = 0; d < NTD; ++d)
        *reinterpret_cast<__half2*>(orow + d * 8 + t4 * 2) =
            __floats2half2_rn(oacc[i][d][2 * hh] * inv, oacc[i][d][2 * hh + 1] * inv);
    }
  }
}

// True when every problem can use the tensor-core path (alignment of slices and strides, positive scale).
inline bool attention_fast_ok(const AttentionArgs* p, int n) {
  for (int i = 0; i < n; ++i) {
    const AttentionArgs& a = p[i];
    if (a.head_dim % 8 || a.ldq % 8 || a.ldk % 8 || a.ldv % 8 || a.ldo % 8) return false;
    if (!aligned16(a.q) || !aligned16(a.k) || !aligned16(a.v) || !aligned16(a.o)) return false;
    if (!(a.scale > 0.f && a.scale < 3.0e38f)) return false;  // the SIMT kernel takes any scale
  }
  return true;
}

template <int D, int V>
inline auto attention_kernel_of() {
  constexpr AttnTile t = attn_tile(D, V);
  return attention_fa_kernel<D, t.warps, t.mt, t.bc, t.alias_q>;
}

// Configures variant V of head dim D on this device; regs = its registers per thread. cudaErrorInvalidValue
// when its shared memory exceeds the device's opt-in limit (the variant is then not used).
template <int D, int V = 0>
inline cudaError_t attention_set_attributes(const DeviceCaps& caps, int* regs = nullptr) {
  const size_t smem = attn_smem_bytes(D, V);
  if (smem > (size_t)caps.smem_optin) return cudaErrorInvalidValue;
  auto* k = attention_kernel_of<D, V>();
  cudaError_t e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (e == cudaSuccess)
    e = cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, (int)cudaSharedmemCarveoutMaxShared);
  if (e == cudaSuccess && regs) {
    cudaFuncAttributes fa{};
    e = cudaFuncGetAttributes(&fa, k);
    *regs = fa.numRegs;
  }
  return e;
}

// Launches `n` problems of head dim D (n <= kMaxAttnProblems) as one grid with variant V.
template <int D, int V = 0>
inline cudaError_t attention_launch(const AttentionArgs* probs, int n, const DeviceCaps& caps, cudaStream_t s) {
  constexpr AttnTile t = attn_tile(D, V);
  constexpr int BR = attn_br(t);
  if (n < 1 || n > kMaxAttnProblems || !attention_fast_ok(probs, n)) return cudaErrorNotSupported;
  AttnBatch batch;
  batch.count = n;
  batch.causal = probs[0].causal ? 1 : 0;
  long long ctas = 0;
  for (int i = 0; i < n; ++i) {
    batch.p[i] = to_dev(probs[i], BR);
    batch.p[i].cta_begin = (int)ctas;
    ctas += (long long)batch.p[i].qtiles * probs[i].heads * probs[i].B;
  }
  if (ctas == 0) return cudaSuccess;
  if (ctas > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  attention_kernel_of<D, V>()<<<(unsigned)ctas, t.warps * 32, attn_smem_bytes(D, V), s>>>(batch);
  return cudaGetLastError();
}

}  // namespace xpsr::cuda
