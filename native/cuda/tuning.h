// Tile sizes and launch shapes of the CUDA kernels, as pure functions of the problem shape and the device.
// Everything a later tuning pass may change lives here, each choice with the reasoning behind it.
// STATUS: chosen from first principles (register/shared-memory budgets, wave quantisation); NOT yet
// measured. scripts/gpu-check.sh produces the per-op numbers (ours vs cuBLAS/cuDNN/SDPA) to tune them.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

#ifdef __CUDACC__
#define XPSR_HD __host__ __device__
#else
#define XPSR_HD
#endif

namespace xpsr::cuda {

// ---- GEMM and implicit-GEMM conv (gemm_core.cuh) ------------------------------------------------------
// All tiles use BK = 32 (two m16n8k16 steps per stage, 64-byte smem rows, XOR-swizzled for conflict-free
// ldmatrix) and a 4-stage cp.async pipeline: enough bytes in flight to cover ~1 us of DRAM latency at
// these tile sizes on A100 and H100.
//   T128x128: 8 warps as 2x4, warp tile 64x32 (4x4 mma tiles, 64 f32 accumulators/thread), 64 KiB smem.
//             Best operand reuse: the default for big M and N (UNet 64x64 level convs, transformer GEMMs).
//   T128x64 : 4 warps as 2x2, warp tile 64x32, 48 KiB smem. For N = 320-ish (320 = 5 x 64, where
//             128-wide tiles waste 17%) and as a middle ground.
//   T64x64  : 4 warps as 2x2, warp tile 32x32, 32 KiB smem. Small problems (8x8 and 16x16 levels,
//             M = 128..512) and the split-K partner: many CTAs, each less efficient.
enum class GemmTile : int { T128x128 = 0, T128x64 = 1, T64x64 = 2 };
constexpr int kGemmBK = 32;
constexpr int kGemmStages = 4;

struct GemmTileInfo {
  int bm, bn, warps_m, warps_n;
  double efficiency;  // relative per-CTA throughput (operand reuse per smem byte); guessed, to be measured
};
XPSR_HD constexpr GemmTileInfo gemm_tile_info(GemmTile t) {
  return t == GemmTile::T128x128 ? GemmTileInfo{128, 128, 2, 4, 1.0}
       : t == GemmTile::T128x64  ? GemmTileInfo{128, 64, 2, 2, 0.9}
                                 : GemmTileInfo{64, 64, 2, 2, 0.72};
}
XPSR_HD constexpr size_t gemm_smem_bytes(GemmTile t) {
  return (size_t)(gemm_tile_info(t).bm + gemm_tile_info(t).bn) * kGemmBK * 2 * kGemmStages;
}

struct GemmPlan {
  GemmTile tile = GemmTile::T128x128;
  int splits = 1;           // split-K factor: >1 writes f32 partials to the workspace + a reduce kernel
  int ktiles_per_split = 0;  // BK-tiles of the reduction per split
};

// Cost model (units: multiply-adds per SM, lower is better):
//   compute = ceil(ctas / sms) * bm * bn * (K per split) / efficiency     (wave quantisation included)
//   split-K = partial bytes (written + read, f32) * 100 / sms + a fixed cost of one extra launch
// where 100 MAC/byte is the chip-wide ratio of mma.sync f16 rate (~300 TMAC/s on H100) to DRAM bandwidth
// (~3 TB/s) and the fixed cost ~3 us of the reduce kernel. Splits keep >= 8 k-tiles each and must fit
// in the workspace (it is fixed in size: the choice adapts to it, never grows it inside a capture).
inline GemmPlan choose_gemm(int M, int N, int K, int sms, size_t ws_bytes) {
  const int ktiles = std::max(1, (K + kGemmBK - 1) / kGemmBK);
  GemmPlan best;
  double best_cost = 1e300;
  for (int t = 0; t < 3; ++t) {
    const GemmTileInfo ti = gemm_tile_info((GemmTile)t);
    const int64_t ctas = (int64_t)((M + ti.bm - 1) / ti.bm) * ((N + ti.bn - 1) / ti.bn);
    const int max_splits = std::max(1, std::min(16, ktiles / 8));
    for (int s = 1; s <= max_splits; ++s) {
      const int kps = (ktiles + s - 1) / s;
      const int used = (ktiles + kps - 1) / kps;  // splits actually non-empty
      if (used != s) continue;
      if (s > 1 && (size_t)s * M * N * sizeof(float) > ws_bytes) break;
      const double waves = (double)((ctas * s + sms - 1) / sms);
      double cost = waves * ti.bm * ti.bn * (double)kps * kGemmBK / ti.efficiency;
      if (s > 1) cost += (double)s * M * N * 8.0 * 100.0 / sms + 3e-6 * 300e12 / sms;
      if (cost < best_cost * 0.999) {
        best_cost = cost;
        best = GemmPlan{(GemmTile)t, s, kps};
      }
    }
  }
  return best;
}

// ---- fused attention (attention.cuh) ----------------------------------------------------------------
// FA2-style: a CTA owns BR = warps * 16 * mt query rows of one (problem, batch, head); K/V tiles of BC keys
// stream through double-buffered shared memory; S = QK^T and O += PV with m16n8k16 (+ m16n8k8 for the
// last 8 of a head dim that is 8 mod 16). Q fragments stay in registers. Registers per thread roughly
// O: mt*D/2, S: mt*BC/4, Q: mt*ceil(D/16)*4 (all 32-bit) - kept <= ~190 so 2+ CTAs fit per SM.
//   D <= 48  : 4 warps, mt 2 (BR 128), BC 64.   D=40: O 40 + S 64 + Q 24 regs.
//   D <= 96  : 4 warps, mt 2 (BR 128), BC 32.   D=80: O 80 + S 32 + Q 40 -> 234-244 registers, 2 CTAs/SM.
//              (D=64 with BC 64 spilled 72 bytes under ptxas 13.0, so CLIP's 64 uses BC 32: 180 registers.)
//   D = 160  : 4 warps, mt 1 (BR 64),  BC 64.   O 80 + S 32 + Q 40; smem 107 KiB (opt-in).
// Shared-memory rows are D/8 16-byte chunks, padded to an odd count (D=40: 5, 64: 9, 80: 11, 160: 21) so
// the 8 rows an ldmatrix phase touches fall in 8 different bank groups.
struct AttnTile {
  int warps, mt, bc;
};
XPSR_HD constexpr AttnTile attn_tile(int D) {
  return D <= 48 ? AttnTile{4, 2, 64} : D <= 96 ? AttnTile{4, 2, 32} : AttnTile{4, 1, 64};
}
XPSR_HD constexpr int attn_row_chunks(int D) { return (D / 8) % 2 ? D / 8 : D / 8 + 1; }
XPSR_HD constexpr size_t attn_smem_bytes(int D) {
  return (size_t)(attn_tile(D).warps * 16 * attn_tile(D).mt + 4 * attn_tile(D).bc) * attn_row_chunks(D) * 16;
}

// ---- GroupNorm (norm.cu) --------------------------------------------------------------------------------
// Pass 1 splits the HW positions of each sample into `chunks` so that about two CTAs per SM run (the
// whole tensor is read once at full bandwidth); each CTA writes per-channel shifted sums. Pass 2 (one warp
// per (n, group)) merges them exactly (Chan's formula) into per-channel scale/shift; pass 3 applies them.
inline int group_norm_chunks(int N, int HW, int csplit, int rows_per_step, int sms, size_t ws_bytes,
                             size_t bytes_per_chunk) {
  int want = std::max(1, (2 * sms + N * csplit - 1) / (N * csplit));
  want = std::min(want, std::max(1, HW / std::max(1, 4 * rows_per_step)));  // >= 4 rows per thread
  while (want > 1 && (size_t)want * bytes_per_chunk > ws_bytes) want /= 2;
  return want;
}

// ---- elementwise ------------------------------------------------------------------------------------------
// Grid-stride loops, 256 threads, 16-byte accesses where aligned; a grid of at most 16 CTAs per SM keeps the
// tail short and the launch cheap.
inline int elementwise_blocks(size_t work_items, int sms) {
  const size_t b = (work_items + 255) / 256;
  return (int)std::max<size_t>(1, std::min<size_t>(b, (size_t)sms * 16));
}

}  // namespace xpsr::cuda
