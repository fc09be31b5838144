// The tensor-core GEMM main loop shared by linear (gemm.cu) and the implicit-GEMM conv (conv2d.cu).
//   Y[m, n] = sum_k A[m, k] * B[n, k]  (+ bias[n] + R[m, n]),  f16 in, f32 accumulate, f16 out.
// B is always a weight in the upload layout: [N][Kdim] f16 rows, Kdim % 8 == 0, zero padded, 16-byte
// aligned. A is produced by an "A mode":
//   RowsVec    rows of a row-major matrix, 16-byte cp.async (lda % 8 == 0, K % 8 == 0, aligned base)
//   RowsScalar same, element loads (any lda / K / alignment: column slices of packed buffers)
//   ConvVec    im2col gather from NHWC, k = (r, s, c): one 16-byte cp.async = 8 channels of one tap
//              (C % 8 == 0, aligned base); zero padding comes from the cp.async zero-fill
//   ConvScalar same gather with element loads and c >= C reading zero (C = 3, 4 or any odd count)
// CTA tile BM x BN x 32 through a 4-stage cp.async pipeline; smem rows are 4 x 16-byte chunks XOR-swizzled
// by (row >> 1) & 3 so ldmatrix phases hit 8 distinct bank groups; warps own WTM x WTN sub-tiles of
// m16n8k16 mma.sync. CTAs are rastered in groups of 8 M-tiles so concurrently running CTAs share B tiles
// in L2. With split-K (gridDim.z > 1) each split writes f32 partials and gemm_splitk_reduce applies the
// epilogue. Five tile shapes (tuning.h GemmTile: 64x32, 32x32 and 64x64 warp tiles); the choice is
// tuning.h choose_gemm (occupancy and wave model, or the legacy policy), fed with this device's limits
// and each instantiation's register count (DeviceCaps).
#pragma once
#include "common.cuh"
#include "kernels.h"
#include "tuning.h"

namespace xpsr::cuda {

enum class AMode : int { RowsVec, RowsScalar, ConvVec, ConvScalar };

struct GemmKernelParams {
  int M = 0, N = 0, Kdim = 0;  // Kdim: B row length (reduction length incl. zero padding)
  int tiles_m = 0, tiles_n = 0, ktiles_total = 0, ktiles_per_split = 0;
  // Rows modes
  const __half* A = nullptr;
  int lda = 0, Kvalid = 0;  // elements k >= Kvalid of a row read as zero (RowsScalar)
  // Conv modes
  const __half* x = nullptr;
  int H = 0, W = 0, C = 0, Cp = 0, S = 1, stride = 1, pad_t = 0, pad_l = 0, P = 0, Q = 0;
  // operands and epilogue
  const __half* B = nullptr;
  const float* bias = nullptr;
  const __half* R = nullptr;
  int ldr = 0;
  __half* Y = nullptr;
  int ldy = 0;
  bool pair_store = false;   // Y/R (and their row strides) allow 4-byte half2 accesses
  float* partial = nullptr;  // split-K: [splits][M][N] f32
};

__device__ __forceinline__ uint32_t swz_offset(int row, int chunk) {
  return (uint32_t)((row * 4 + (chunk ^ ((row >> 1) & 3))) * 16);
}

template <int BM, int BN, int WARPS_M, int WARPS_N, AMode MODE>
__global__ void __launch_bounds__(WARPS_M* WARPS_N * 32) gemm_kernel(const GemmKernelParams p) {
  // Index arithmetic below is generic in the tile: every thread loads chunk (tid & 3) of rows tid/4 +
  // j*THREADS/4 of A and B; warp (wm, wn) owns rows wm*WTM.. and columns wn*WTN.. of the CTA tile as
  // MI x NI m16n8 accumulators. BM, BN must be multiples of THREADS/4, WTN a multiple of 16.
  constexpr int THREADS = WARPS_M * WARPS_N * 32;
  constexpr int BK = kGemmBK, STAGES = kGemmStages;
  constexpr int WTM = BM / WARPS_M, WTN = BN / WARPS_N;
  constexpr int MI = WTM / 16, NI = WTN / 8;
  constexpr int ROWS_PER_PASS = THREADS / 4;  // each thread loads chunk (tid & 3) of rows tid/4 + j*ROWS_PER_PASS
  constexpr int A_PER_T = BM / ROWS_PER_PASS, B_PER_T = BN / ROWS_PER_PASS;
  static_assert(A_PER_T >= 1 && B_PER_T >= 1 && NI % 2 == 0, "tile shape");
  constexpr uint32_t A_STAGE = BM * BK * 2, B_STAGE = BN * BK * 2;

  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t sA = smem_addr(smem);
  const uint32_t sB = sA + STAGES * A_STAGE;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / WARPS_N, wn = warp % WARPS_N;

  // grouped raster: 8 M-tiles share each sweep over the N-tiles
  int tm, tn;
  {
    const int t = blockIdx.x, group = 8 * p.tiles_n;
    const int first_m = (t / group) * 8;
    const int gm = min(p.tiles_m - first_m, 8);
    const int in = t % group;
    tm = first_m + in % gm;
    tn = in / gm;
  }
  const int m0 = tm * BM, n0 = tn * BN;
  const int kt_begin = blockIdx.z * p.ktiles_per_split;
  const int kt_end = min(kt_begin + p.ktiles_per_split, p.ktiles_total);
  const int nkt = max(kt_end - kt_begin, 0);

  // per-thread A row state (fixed over the k loop)
  const int lrow = tid >> 2, lchunk = tid & 3;
  const __half* a_ptr[A_PER_T];
  int a_ih0[A_PER_T], a_iw0[A_PER_T];
  bool a_ok[A_PER_T];
#pragma unroll
  for (int j = 0; j < A_PER_T; ++j) {
    const int m = m0 + lrow + j * ROWS_PER_PASS;
    a_ok[j] = m < p.M;
    const int mm = a_ok[j] ? m : 0;
    if constexpr (MODE == AMode::RowsVec || MODE == AMode::RowsScalar) {
      a_ptr[j] = p.A + (size_t)mm * p.lda;
      a_ih0[j] = a_iw0[j] = 0;
    } else {
      const int pq = p.P * p.Q;
      const int n = mm / pq, rem = mm - n * pq, pp = rem / p.Q, qq = rem - pp * p.Q;
      a_ptr[j] = p.x + (size_t)n * p.H * p.W * p.C;
      a_ih0[j] = pp * p.stride - p.pad_t;
      a_iw0[j] = qq * p.stride - p.pad_l;
    }
  }
  const __half* b_ptr[B_PER_T];
  bool b_ok[B_PER_T];
#pragma unroll
  for (int j = 0; j < B_PER_T; ++j) {
    const int n = n0 + lrow + j * ROWS_PER_PASS;
    b_ok[j] = n < p.N;
    b_ptr[j] = p.B + (size_t)(b_ok[j] ? n : 0) * p.Kdim;
  }

  auto load_stage = [&](int stage, int kt) {
    const int kk = kt * BK + lchunk * 8;
    const bool k_ok = kk < p.Kdim;
    // B (weights): always 16-byte aligned rows
#pragma unroll
    for (int j = 0; j < B_PER_T; ++j) {
      const int row = lrow + j * ROWS_PER_PASS;
      const bool ok = b_ok[j] && k_ok;
      cp_async16(sB + stage * B_STAGE + swz_offset(row, lchunk), ok ? (const void*)(b_ptr[j] + kk) : p.B, ok);
    }
    if constexpr (MODE == AMode::RowsVec) {
#pragma unroll
      for (int j = 0; j < A_PER_T; ++j) {
        const int row = lrow + j * ROWS_PER_PASS;
        const bool ok = a_ok[j] && kk < p.Kvalid;
        cp_async16(sA + stage * A_STAGE + swz_offset(row, lchunk), ok ? (const void*)(a_ptr[j] + kk) : p.A, ok);
      }
    } else if constexpr (MODE == AMode::RowsScalar) {
#pragma unroll
      for (int j = 0; j < A_PER_T; ++j) {
        const int row = lrow + j * ROWS_PER_PASS;
        __align__(16) __half v[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) v[e] = (a_ok[j] && kk + e < p.Kvalid) ? a_ptr[j][kk + e] : __float2half(0.0f);
        *reinterpret_cast<uint4*>(smem + (stage * A_STAGE + swz_offset(row, lchunk))) =
            *reinterpret_cast<const uint4*>(v);
      }
    } else {
      // k -> (r, s, c); Cp % 8 == 0 so the 8 elements of a chunk share one tap
      const int rs = kk / p.Cp, c = kk - rs * p.Cp;
      const int r = rs / p.S, s = rs - r * p.S;
#pragma unroll
      for (int j = 0; j < A_PER_T; ++j) {
        const int row = lrow + j * ROWS_PER_PASS;
        const int ih = a_ih0[j] + r, iw = a_iw0[j] + s;
        const bool ok = a_ok[j] && k_ok && (unsigned)ih < (unsigned)p.H && (unsigned)iw < (unsigned)p.W;
        const __half* src = ok ? a_ptr[j] + ((size_t)ih * p.W + iw) * p.C + c : p.x;
        if constexpr (MODE == AMode::ConvVec) {
          cp_async16(sA + stage * A_STAGE + swz_offset(row, lchunk), src, ok);
        } else {
          __align__(16) __half v[8];
#pragma unroll
          for (int e = 0; e < 8; ++e) v[e] = (ok && c + e < p.C) ? src[e] : __float2half(0.0f);
          *reinterpret_cast<uint4*>(smem + (stage * A_STAGE + swz_offset(row, lchunk))) =
              *reinterpret_cast<const uint4*>(v);
        }
      }
    }
  };

  float acc[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < nkt) load_stage(s, kt_begin + s);
    cp_async_commit();
  }

  // fragment rows/chunks this lane addresses for ldmatrix
  const int a_frag_row = wm * WTM + (lane & 15), a_frag_chunk = lane >> 4;
  const int b_frag_row = wn * WTN + (lane & 7) + ((lane >> 4) << 3), b_frag_chunk = (lane >> 3) & 1;

  for (int it = 0; it < nkt; ++it) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    {
      const int nxt = it + STAGES - 1;
      if (nxt < nkt) load_stage(nxt % STAGES, kt_begin + nxt);
      cp_async_commit();
    }
    const int stage = it % STAGES;
    const uint32_t aS = sA + stage * A_STAGE, bS = sB + stage * B_STAGE;
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) {
      uint32_t af[MI][4], bf[NI][2];
#pragma unroll
      for (int i = 0; i < MI; ++i) {
        const int row = a_frag_row + i * 16;
        ldsm_x4(aS + swz_offset(row, ks * 2 + a_frag_chunk), af[i][0], af[i][1], af[i][2], af[i][3]);
      }
#pragma unroll
      for (int j = 0; j < NI / 2; ++j) {
        const int row = b_frag_row + j * 16;
        ldsm_x4(bS + swz_offset(row, ks * 2 + b_frag_chunk), bf[2 * j][0], bf[2 * j][1], bf[2 * j + 1][0],
                bf[2 * j + 1][1]);
      }
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j) mma16816(acc[i][j], af[i], bf[j][0], bf[j][1]);
    }
  }
  cp_async_wait<0>();

  // epilogue
  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int i = 0; i < MI; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int m = m0 + wm * WTM + i * 16 + g + h * 8;
      if (m >= p.M) continue;
#pragma unroll
      for (int j = 0; j < NI; ++j) {
        const int n = n0 + wn * WTN + j * 8 + t4 * 2;
        if (n >= p.N) continue;
        float v0 = acc[i][j][2 * h], v1 = acc[i][j][2 * h + 1];
        const bool two = n + 1 < p.N;
        if (p.partial) {
          float* dst = p.partial + ((size_t)blockIdx.z * p.M + m) * p.N + n;
          dst[0] = v0;
          if (two) dst[1] = v1;
          continue;
        }
        if (p.bias) {
          v0 += p.bias[n];
          if (two) v1 += p.bias[n + 1];
        }
        __half* y = p.Y + (size_t)m * p.ldy + n;
        if (two && p.pair_store) {
          if (p.R) {
            const float2 r = __half22float2(*reinterpret_cast<const __half2*>(p.R + (size_t)m * p.ldr + n));
            v0 += r.x;
            v1 += r.y;
          }
          *reinterpret_cast<__half2*>(y) = __floats2half2_rn(v0, v1);
        } else {
          if (p.R) {
            v0 += __half2float(p.R[(size_t)m * p.ldr + n]);
            if (two) v1 += __half2float(p.R[(size_t)m * p.ldr + n + 1]);
          }
          y[0] = __float2half(v0);
          if (two) y[1] = __float2half(v1);
        }
      }
    }
  }
}

// Split-K epilogue: Y = sum_s partial[s] + bias + R (defined in gemm.cu; a host wrapper so that conv2d.cu
// can use it without relocatable device code).
cudaError_t launch_gemm_splitk_reduce(const GemmKernelParams& p, int splits, int blocks, cudaStream_t s);

template <int BM, int BN, int WM, int WN, AMode MODE>
inline cudaError_t gemm_set_attributes(int& regs) {
  auto* k = gemm_kernel<BM, BN, WM, WN, MODE>;
  const int smem = (BM + BN) * kGemmBK * 2 * kGemmStages;
  cudaError_t e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  // the largest shared-memory carve-out, so that the occupancy the model counts is the one we get
  if (e == cudaSuccess)
    e = cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, (int)cudaSharedmemCarveoutMaxShared);
  cudaFuncAttributes fa{};
  if (e == cudaSuccess) e = cudaFuncGetAttributes(&fa, k);
  if (e == cudaSuccess) regs = fa.numRegs;
  return e;
}

// Configures all five tiles of one A mode; regs[t] = registers per thread of tile t on this device.
template <AMode MODE>
inline cudaError_t gemm_set_all_attributes(int* regs) {
  cudaError_t e = gemm_set_attributes<128, 128, 2, 4, MODE>(regs[(int)GemmTile::T128x128]);
  if (e == cudaSuccess) e = gemm_set_attributes<128, 64, 2, 2, MODE>(regs[(int)GemmTile::T128x64]);
  if (e == cudaSuccess) e = gemm_set_attributes<64, 64, 2, 2, MODE>(regs[(int)GemmTile::T64x64]);
  if (e == cudaSuccess) e = gemm_set_attributes<128, 128, 2, 2, MODE>(regs[(int)GemmTile::T128x128w4]);
  if (e == cudaSuccess) e = gemm_set_attributes<128, 256, 2, 4, MODE>(regs[(int)GemmTile::T128x256]);
  return e;
}

template <int BM, int BN, int WM, int WN, AMode MODE>
inline void gemm_launch_tile(GemmKernelParams& p, int splits, cudaStream_t s) {
  p.tiles_m = (p.M + BM - 1) / BM;
  p.tiles_n = (p.N + BN - 1) / BN;
  const dim3 grid((unsigned)(p.tiles_m * p.tiles_n), 1, (unsigned)splits);
  const int smem = (BM + BN) * kGemmBK * 2 * kGemmStages;
  gemm_kernel<BM, BN, WM, WN, MODE><<<grid, WM * WN * 32, smem, s>>>(p);
}

// Picks the tile and split-K (tuning.h; a plan forced by set_forced_gemm_plan wins), launches the main
// kernel and, if split, the reduce kernel.
template <AMode MODE>
inline cudaError_t gemm_run(GemmKernelParams p, const DeviceCaps& caps, const Workspace& ws, cudaStream_t s) {
  p.ktiles_total = (p.Kdim + kGemmBK - 1) / kGemmBK;
  const size_t ws_bytes = ws.ptr ? ws.bytes : 0;
  GemmPlan plan;
  const int forced_tile = forced_gemm_tile();
  if (forced_tile >= 0)
    plan = forced_gemm_plan((GemmTile)forced_tile, forced_gemm_splits(), p.Kdim, p.M, p.N, ws_bytes);
  else plan = choose_gemm(tile_policy(), caps.model, caps.gemm_regs[(int)MODE], p.M, p.N, p.Kdim, ws_bytes);
  if (plan.splits <= 1 || !ws.ptr) {
    plan.splits = 1;
    plan.ktiles_per_split = p.ktiles_total;
  }
  note_gemm_plan(plan);
  p.ktiles_per_split = plan.ktiles_per_split;
  p.partial = plan.splits > 1 ? static_cast<float*>(ws.ptr) : nullptr;
  switch (plan.tile) {
    case GemmTile::T128x128: gemm_launch_tile<128, 128, 2, 4, MODE>(p, plan.splits, s); break;
    case GemmTile::T128x64: gemm_launch_tile<128, 64, 2, 2, MODE>(p, plan.splits, s); break;
    case GemmTile::T64x64: gemm_launch_tile<64, 64, 2, 2, MODE>(p, plan.splits, s); break;
    case GemmTile::T128x128w4: gemm_launch_tile<128, 128, 2, 2, MODE>(p, plan.splits, s); break;
    default: gemm_launch_tile<128, 256, 2, 4, MODE>(p, plan.splits, s); break;
  }
  if (plan.splits > 1) {
    const size_t total = (size_t)p.M * p.N;
    const int blocks = (int)std::min<size_t>((total + 255) / 256, (size_t)caps.sms * 16);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    return launch_gemm_splitk_reduce(p, plan.splits, blocks, s);
  }
  return cudaGetLastError();
}

}  // namespace xpsr::cuda
