// Tile sizes and launch shapes of the CUDA kernels, as PURE functions of the problem shape and a model of
// the GPU (no CUDA calls: this header is compiled into xpsr_tests even without CUDA, and the tile choice for
// the real SD-1.5 shapes is unit-tested on the CPU: native/cuda/tuning_test.cpp).
// STATUS: derived from the hardware limits below and counted traffic; NOT yet measured. The first GPU run
// (scripts/gpu-check.sh) times both policies on the same GPU: XPSR_CUDA_TILES=legacy selects the policy
// of the first version (choose_gemm_legacy, the 105 KiB d=160 attention tile, the warp-per-group GroupNorm
// finalize), anything else the model below.
//
// ======================================= the model ========================================================
// GpuModel holds the per-SM limits of one architecture (from the CUDA occupancy calculator's tables; the
// backend overwrites them with the device's own attributes) and two rates: the mma.sync f16->f32 rate and
// the DRAM bandwidth. A kernel instantiation needs per CTA: T threads (w = ceil(T/32) warps), R registers
// per thread (ptxas; build/cuda-resources.json; cudaFuncGetAttributes at run time) and S bytes of shared
// memory (static + dynamic).
//
//   occupancy (CTAs resident per SM), ctas_per_sm():
//     regs/warp   = roundup(R * 32, 256)                         (allocation unit: 256 registers per warp)
//     by_regs     = floor(4 * floor(regs_per_sm / 4 / regs/warp) / w)   (4 sub-partitions, each its own file)
//     by_smem     = floor(smem_per_sm / roundup(S + 1 KiB reserved, 128))   (0 if S > smem_per_block)
//     by_threads  = floor(max_threads_per_sm / (32 w))
//     ctas_per_sm = min(by_regs, by_smem, by_threads, max_ctas_per_sm)
//
//   waves, for a grid of G CTAs on `sms` SMs (the block scheduler fills SMs round-robin):
//     per_sm  = ceil(G / sms)            CTAs the busiest SM runs over the whole launch
//     conc    = min(per_sm, ctas_per_sm) CTAs it runs at the same time
//     rounds  = ceil(per_sm / conc)      waves it goes through
//     W       = conc * w                 warps resident on it
//
//   GEMM time of a plan (tile t, split-K s; MACs = multiply-adds), gemm_plan_ns():
//     work/CTA   = bm * bn * (k-tiles per split) * 32
//     smem B/MMA = ldmatrix bytes per m16n8k16 of one warp + the CTA's cp.async fill per MMA
//                = (MI + NI/2) * 512 / (MI * NI) + (bm + bn) * 32 / (MI * NI * warps)   (MI x NI mma tiles/warp)
//     eff_smem   = min(1, smem_bytes_per_clk * clocks per MMA / smem B/MMA)   (the SM's 128 B/clk of shared
//                  memory bandwidth caps the MMA rate: 32x32 warp tiles reach 67% of A100 peak, 64x64 100%)
//     util(W)    = min(1, 0.6 + 0.05 W)  latency hiding: 1 warp per scheduler ~80%, 2 per scheduler 100% (guess)
//     rate/SM    = mma_macs_per_clk * clock * eff_smem * util(W)
//     t_main     = per_sm * work/CTA / rate/SM + rounds * 0.8 us   (pipeline fill + epilogue per wave)
//     t_mem      = (M*K + N*K) * 2 B / DRAM bw + (s == 1 ? M*N*2 B / DRAM bw : s*M*N*4 B / partial bw)
//     t_reduce   = s > 1 ? s*M*N*4 B / partial bw + M*N*2 B / DRAM bw + 1.5 us (one more launch) : 0
//                  (partial bw = L2 bandwidth when the partials fit half the L2, else DRAM bandwidth)
//     t          = max(t_main, t_mem) + t_reduce
//   The plan with the least t wins; ties (within 0.1%) keep the earlier candidate (fewer splits, bigger tile).
//   Splits keep >= 4 k-tiles each and fit the workspace (it is fixed in size: the choice adapts to it).
//   "Prefer at least one full wave" falls out of this: a grid of 40 CTAs leaves 92 of 132 SMs idle and its
//   busiest SM does all of one CTA's work, so split-K or smaller tiles that fill every SM win whenever the
//   partial traffic costs less than the idle SMs.
//
// Everything here is to be calibrated by the first GPU run: gpu-check's bench times every SD-1.5 shape under
// both policies, and compare.md lists, per op, ours (model), ours (legacy), PyTorch and the op's floor.
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

enum class TilePolicy : int { Model = 0, Legacy = 1 };

// ---- the GPU model --------------------------------------------------------------------------------------
struct GpuModel {
  int cc = 80;  // compute capability * 10
  int sms = 108;
  int regs_per_sm = 65536;
  int smem_per_sm = 167936;          // the largest shared-memory carve-out of an SM, bytes
  int smem_per_block = 166912;       // opt-in maximum of one CTA (static + dynamic)
  int smem_reserved_per_cta = 1024;  // the runtime's per-CTA reservation (sm_80+)
  int max_threads_per_sm = 2048;
  int max_ctas_per_sm = 32;
  double mma_macs_per_clk = 1024;  // mma.sync f16 x f16 -> f32 multiply-adds per clock per SM
  double clock_ghz = 1.41;
  double smem_bytes_per_clk = 128;  // shared-memory bandwidth per SM
  double dram_bytes_per_ns = 2039;  // = GB/s
  double l2_bytes = 40e6;           // L2 size (split-K partials that fit half of it stay there)
  double l2_bytes_per_ns = 4000;    // L2 bandwidth (about twice DRAM's on these parts)
};

// Limits per architecture (CUDA occupancy calculator / tuning guides) with one representative part's rates:
//   80: A100 SXM (108 SMs, 164 KiB smem/SM, 2048 threads, 1024 MAC/clk, 2.0 TB/s)
//   86: A10 / RTX 3090 / A40 (100 KiB smem/SM, 99 KiB per CTA, 1536 threads, 16 CTAs, 512 MAC/clk f32-acc,
//       6 MiB L2)
//   89: L40S / L4 / RTX 4090 (100 KiB, 99 KiB per CTA, 1536 threads, 24 CTAs, 512 MAC/clk, 96 MiB L2)
//   90: H100 SXM (132 SMs, 228 KiB/SM, 227 KiB per CTA; mma.sync ~1365 MAC/clk = ~2/3 of wgmma, 3.35 TB/s,
//       50 MiB L2)
// Unknown newer parts get the sm_90 limits (conservative shared memory: that of the part they JIT from).
inline GpuModel gpu_model_for(int cc, int sms) {
  GpuModel g;
  g.cc = cc;
  if (cc == 86 || cc == 87 || cc == 89) {
    g.smem_per_sm = 102400;
    g.smem_per_block = 101376;
    g.max_threads_per_sm = 1536;
    g.max_ctas_per_sm = cc == 89 ? 24 : 16;
    g.mma_macs_per_clk = 512;
    g.clock_ghz = cc == 89 ? 2.5 : 1.7;
    g.dram_bytes_per_ns = cc == 89 ? 864 : 600;
    g.l2_bytes = cc == 89 ? 96e6 : 6e6;
    g.l2_bytes_per_ns = cc == 89 ? 2000 : 1200;
    g.sms = cc == 89 ? 142 : 72;
  } else if (cc >= 90) {
    g.smem_per_sm = 233472;
    g.smem_per_block = 232448;
    g.mma_macs_per_clk = 1365;
    g.clock_ghz = 1.83;
    g.dram_bytes_per_ns = 3350;
    g.l2_bytes = 50e6;
    g.l2_bytes_per_ns = 7000;
    g.sms = 132;
  } else {
    g.sms = 108;  // 80 and anything else >= 8.0
  }
  if (sms > 0) g.sms = sms;
  return g;
}

struct KernelResources {
  int threads = 128;
  int regs = 128;  // per thread
  int smem = 0;    // bytes per CTA, static + dynamic
};

inline int round_up_to(int x, int m) { return (x + m - 1) / m * m; }

// CTAs of one kernel resident per SM (formula in the header comment). 0: it cannot launch.
inline int ctas_per_sm(const GpuModel& g, const KernelResources& k) {
  if (k.threads <= 0 || k.regs > 255 || k.smem > g.smem_per_block) return 0;
  const int warps = (k.threads + 31) / 32;
  const int regs_per_warp = round_up_to(std::max(1, k.regs) * 32, 256);
  const int by_regs = 4 * ((g.regs_per_sm / 4) / regs_per_warp) / warps;
  const int by_smem = g.smem_per_sm / round_up_to(k.smem + g.smem_reserved_per_cta, 128);
  const int by_threads = g.max_threads_per_sm / (warps * 32);
  return std::max(0, std::min(std::min(by_regs, by_smem), std::min(by_threads, g.max_ctas_per_sm)));
}

struct Waves {
  int64_t ctas = 0;  // grid size
  int per_sm = 0;    // CTAs on the busiest SM over the launch
  int conc = 0;      // of those, resident at once
  int rounds = 0;    // waves on the busiest SM
  int warps = 0;     // warps resident on it
  double fill = 0;   // share of SMs that get work in the first wave
};
inline Waves waves_of(const GpuModel& g, int64_t ctas, int occupancy, int warps_per_cta) {
  Waves w;
  w.ctas = ctas;
  if (ctas <= 0 || occupancy <= 0) return w;
  w.per_sm = (int)((ctas + g.sms - 1) / g.sms);
  w.conc = std::min(w.per_sm, occupancy);
  w.rounds = (w.per_sm + w.conc - 1) / w.conc;
  w.warps = w.conc * warps_per_cta;
  w.fill = std::min(1.0, (double)ctas / g.sms);
  return w;
}

// Share of the MMA peak a resident warp count sustains (a guess to be calibrated: see the header).
inline double latency_util(int warps) { return std::min(1.0, 0.6 + 0.05 * warps); }

// ---- GEMM and implicit-GEMM conv (gemm_core.cuh) ------------------------------------------------------
// All tiles use BK = 32 (two m16n8k16 steps per stage, 64-byte smem rows, XOR-swizzled for conflict-free
// ldmatrix) and a 4-stage cp.async pipeline.
//   legacy set (first version):
//   T128x128  : 8 warps 2x4, warp tile 64x32 (64 f32 accumulators/thread), 64 KiB smem, 256 B smem per MMA.
//   T128x64   : 4 warps 2x2, warp tile 64x32, 48 KiB, 288 B/MMA. N = 320-ish (320 = 5 x 64).
//   T64x64    : 4 warps 2x2, warp tile 32x32, 32 KiB, 384 B/MMA. Many small CTAs.
//   64x64-per-warp tiles (a third less ldmatrix traffic per MMA than 64x32; the main-loop limit):
//   T128x128w4: 4 warps 2x2, warp tile 64x64 (128 accumulators/thread), 64 KiB, 192 B/MMA.
//   T128x256  : 8 warps 2x4, warp tile 64x64, 96 KiB, 176 B/MMA. Big N (GEGLU 2560..10240, 1280 convs).
enum class GemmTile : int { T128x128 = 0, T128x64 = 1, T64x64 = 2, T128x128w4 = 3, T128x256 = 4 };
constexpr int kGemmTiles = 5;
constexpr int kGemmBK = 32;
constexpr int kGemmStages = 4;
constexpr int kGemmMinKtilesPerSplit = 4;
constexpr int kGemmMaxSplits = 16;

struct GemmTileInfo {
  int bm, bn, warps_m, warps_n;
  int regs;           // registers per thread the CPU model assumes for the 16-byte A modes (RowsVec, ConvVec)
  int regs_scalar;    // ... and for the element-load modes (RowsScalar, ConvScalar). Both are the maxima
                      // ptxas 13.0 reports for sm_80 and sm_90 rounded up to the allocation unit (8); the
                      // backend uses cudaFuncGetAttributes of each instantiation instead; the CPU test
                      // cuda_policy_build_resources fails if a build exceeds them
  bool legacy;        // member of the first version's tile set
  double legacy_eff;  // the first version's guessed per-CTA efficiency (choose_gemm_legacy only)
};
XPSR_HD constexpr GemmTileInfo gemm_tile_info(GemmTile t) {
  // (ptxas 13.0 registers, vec / scalar modes: 124-128/126-128, 122-128/160-164, 70-80/72-94, 222-238/223-240,
  //  218-228/219-228)
  return t == GemmTile::T128x128     ? GemmTileInfo{128, 128, 2, 4, 128, 128, true, 1.0}
         : t == GemmTile::T128x64    ? GemmTileInfo{128, 64, 2, 2, 128, 168, true, 0.9}
         : t == GemmTile::T64x64     ? GemmTileInfo{64, 64, 2, 2, 80, 96, true, 0.72}
         : t == GemmTile::T128x128w4 ? GemmTileInfo{128, 128, 2, 2, 240, 240, false, 0}
                                     : GemmTileInfo{128, 256, 2, 4, 232, 232, false, 0};
}
inline const char* gemm_tile_name(GemmTile t) {
  switch (t) {
    case GemmTile::T128x128: return "128x128/8w(64x32)";
    case GemmTile::T128x64: return "128x64/4w(64x32)";
    case GemmTile::T64x64: return "64x64/4w(32x32)";
    case GemmTile::T128x128w4: return "128x128/4w(64x64)";
    default: return "128x256/8w(64x64)";
  }
}
XPSR_HD constexpr int gemm_threads(GemmTile t) { return gemm_tile_info(t).warps_m * gemm_tile_info(t).warps_n * 32; }
XPSR_HD constexpr size_t gemm_smem_bytes(GemmTile t) {
  return (size_t)(gemm_tile_info(t).bm + gemm_tile_info(t).bn) * kGemmBK * 2 * kGemmStages;
}

// Shared-memory bytes per m16n8k16 MMA (ldmatrix reads of a warp + the CTA's cp.async fill): see the header.
inline double gemm_smem_bytes_per_mma(GemmTile t) {
  const GemmTileInfo ti = gemm_tile_info(t);
  const int mi = ti.bm / ti.warps_m / 16, ni = ti.bn / ti.warps_n / 8;
  const double mma_warp = (double)mi * ni;
  return (mi + ni / 2) * 512.0 / mma_warp + (ti.bm + ti.bn) * 32.0 / (mma_warp * ti.warps_m * ti.warps_n);
}
inline double gemm_smem_efficiency(const GpuModel& g, GemmTile t) {
  const double clocks_per_mma = 2048.0 / g.mma_macs_per_clk;
  return std::min(1.0, g.smem_bytes_per_clk * clocks_per_mma / gemm_smem_bytes_per_mma(t));
}

struct GemmPlan {
  GemmTile tile = GemmTile::T128x128;
  int splits = 1;            // split-K factor: >1 writes f32 partials to the workspace + a reduce kernel
  int ktiles_per_split = 0;  // BK-tiles of the reduction per split
  double est_us = 0;         // the model's estimate (0 for the legacy policy)
};

// True when `splits` splits of `ktiles` k-tiles leave none empty (ceil-sized splits).
inline bool gemm_split_ok(int ktiles, int splits) {
  const int kps = (ktiles + splits - 1) / splits;
  return (ktiles + kps - 1) / kps == splits;
}

inline KernelResources gemm_resources(GemmTile t, int regs) {
  return KernelResources{gemm_threads(t), regs > 0 ? regs : gemm_tile_info(t).regs, (int)gemm_smem_bytes(t)};
}

// The model's time (microseconds) of one plan; < 0 if the tile cannot run here.
inline double gemm_plan_us(const GpuModel& g, GemmTile t, int regs, int M, int N, int K, int splits) {
  const GemmTileInfo ti = gemm_tile_info(t);
  const int ktiles = std::max(1, (K + kGemmBK - 1) / kGemmBK);
  const int kps = (ktiles + splits - 1) / splits;
  const int occ = ctas_per_sm(g, gemm_resources(t, regs));
  if (occ <= 0) return -1;
  const int64_t tiles = (int64_t)((M + ti.bm - 1) / ti.bm) * ((N + ti.bn - 1) / ti.bn);
  const Waves w = waves_of(g, tiles * splits, occ, ti.warps_m * ti.warps_n);
  const double rate = g.mma_macs_per_clk * g.clock_ghz * 1e3 * gemm_smem_efficiency(g, t) * latency_util(w.warps);
  const double work = (double)ti.bm * ti.bn * kps * kGemmBK;      // MACs per CTA
  const double t_main = w.per_sm * work / rate + w.rounds * 0.8;  // us (rate: MAC/us)
  // operands once from DRAM; the output (or the f32 partials, written during the main loop) once
  const double partial = 4.0 * splits * M * N;
  const double part_bw = (partial <= 0.5 * g.l2_bytes ? g.l2_bytes_per_ns : g.dram_bytes_per_ns) * 1e3;  // B/us
  const double t_mem = 2.0 * ((double)M * K + (double)N * K) / (g.dram_bytes_per_ns * 1e3) +
                       (splits == 1 ? 2.0 * M * N / (g.dram_bytes_per_ns * 1e3) : partial / part_bw);
  // split-K reduce: reads the partials, writes the output, one more launch
  const double t_reduce = splits > 1 ? partial / part_bw + 2.0 * M * N / (g.dram_bytes_per_ns * 1e3) + 1.5 : 0;
  return std::max(t_main, t_mem) + t_reduce;
}

// The first version's choice (tiles 0..2, one CTA per SM assumed, made-up efficiencies). Kept selectable
// (XPSR_CUDA_TILES=legacy) so the first GPU run measures both on the same GPU.
//   cost = ceil(ctas / sms) * bm * bn * (K per split) / efficiency + split-K traffic
inline GemmPlan choose_gemm_legacy(int M, int N, int K, int sms, size_t ws_bytes) {
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
      double cost = waves * ti.bm * ti.bn * (double)kps * kGemmBK / ti.legacy_eff;
      if (s > 1) cost += (double)s * M * N * 8.0 * 100.0 / sms + 3e-6 * 300e12 / sms;
      if (cost < best_cost * 0.999) {
        best_cost = cost;
        best = GemmPlan{(GemmTile)t, s, kps, 0};
      }
    }
  }
  return best;
}

// The model's choice over every tile and split. tile_regs: registers per thread of each tile's
// instantiation on this device (kGemmTiles entries), or null for the tuning.h figures.
inline GemmPlan choose_gemm_model(const GpuModel& g, const int* tile_regs, int M, int N, int K, size_t ws_bytes) {
  const int ktiles = std::max(1, (K + kGemmBK - 1) / kGemmBK);
  GemmPlan best;
  best.ktiles_per_split = ktiles;
  double best_t = 1e300;
  // candidates in preference order for ties: 64x64-per-warp tiles first, then the rest
  static constexpr GemmTile order[kGemmTiles] = {GemmTile::T128x256, GemmTile::T128x128w4, GemmTile::T128x128,
                                                 GemmTile::T128x64, GemmTile::T64x64};
  for (GemmTile t : order) {
    const int regs = tile_regs ? tile_regs[(int)t] : 0;
    const int max_splits = std::max(1, std::min(kGemmMaxSplits, ktiles / kGemmMinKtilesPerSplit));
    for (int s = 1; s <= max_splits; ++s) {
      const int kps = (ktiles + s - 1) / s;
      if (!gemm_split_ok(ktiles, s)) continue;
      if (s > 1 && (size_t)s * M * N * sizeof(float) > ws_bytes) break;
      const double us = gemm_plan_us(g, t, regs, M, N, K, s);
      if (us < 0) break;
      if (us < best_t * 0.999) {
        best_t = us;
        best = GemmPlan{t, s, kps, us};
      }
    }
  }
  return best;
}

inline GemmPlan choose_gemm(TilePolicy pol, const GpuModel& g, const int* tile_regs, int M, int N, int K,
                            size_t ws_bytes) {
  return pol == TilePolicy::Legacy ? choose_gemm_legacy(M, N, K, g.sms, ws_bytes)
                                   : choose_gemm_model(g, tile_regs, M, N, K, ws_bytes);
}

// A plan for a forced tile/split (tests, benchmarks): the split count is reduced until every split is
// non-empty and the partials fit the workspace.
inline GemmPlan forced_gemm_plan(GemmTile t, int splits, int K, int M, int N, size_t ws_bytes) {
  const int ktiles = std::max(1, (K + kGemmBK - 1) / kGemmBK);
  int s = std::max(1, std::min(splits, std::min(ktiles, kGemmMaxSplits)));
  while (s > 1 && ((size_t)s * M * N * sizeof(float) > ws_bytes || !gemm_split_ok(ktiles, s))) --s;
  return GemmPlan{t, s, (ktiles + s - 1) / s, 0};
}

// ---- fused attention (attention.cuh) ----------------------------------------------------------------
// FA2-style: a CTA owns BR = warps * 16 * mt query rows of one (problem, batch, head); K/V tiles of BC keys
// stream through double-buffered shared memory; S = QK^T and O += PV with m16n8k16 (+ m16n8k8 for the
// last 8 of a head dim that is 8 mod 16). Q fragments stay in registers. Registers per thread roughly
// O: mt*D/2, S: mt*BC/4, Q: mt*ceil(D/16)*4 (all 32-bit) - kept <= ~190 so 2+ CTAs fit per SM.
//   D <= 48  : 4 warps, mt 2 (BR 128), BC 64.   D=40: O 40 + S 64 + Q 24 regs.
//   D <= 96  : 4 warps, mt 2 (BR 128), BC 32.   D=80: O 80 + S 32 + Q 40.
//              (D=64 with BC 64 spilled 72 bytes under ptxas 13.0, so CLIP's 64 uses BC 32.)
//   D = 160  : 4 warps, mt 1 (BR 64), three variants (MT=2 would need O 160 + Q 80 registers: > 255):
//     v0 BC 64, Q separate   : 105 KiB smem. The legacy tile; does not fit the 99 KiB of sm_86/sm_89.
//     v1 BC 64, Q aliased    :  84 KiB. Q is read into registers once, then its shared memory becomes the
//                               second K/V buffer (one extra barrier): fits 99 KiB.
//     v2 BC 32, Q aliased    :  42 KiB. Twice the K/V iterations, 2-5 CTAs/SM.
// Shared-memory rows are D/8 16-byte chunks, padded to an odd count (D=40: 5, 64: 9, 80: 11, 160: 21) so
// the 8 rows an ldmatrix phase touches fall in 8 different bank groups. The scale is folded into the
// exponent (exp2(s * scale*log2e - max * scale*log2e): one FFMA per score, as FlashAttention-2 does).
struct AttnTile {
  int warps, mt, bc;
  bool alias_q;
};
constexpr int kAttnD160Variants = 3;
XPSR_HD constexpr AttnTile attn_tile(int D, int variant = 0) {
  return D <= 48   ? AttnTile{4, 2, 64, false}
         : D <= 96 ? AttnTile{4, 2, 32, false}
                   : (variant == 0   ? AttnTile{4, 1, 64, false}
                      : variant == 1 ? AttnTile{4, 1, 64, true}
                                     : AttnTile{4, 1, 32, true});
}
XPSR_HD constexpr int attn_row_chunks(int D) { return (D / 8) % 2 ? D / 8 : D / 8 + 1; }
XPSR_HD constexpr int attn_br(AttnTile t) { return t.warps * 16 * t.mt; }
// Rows of shared memory: Q (BR rows) + two K/V buffers (2 * 2 * BC rows); with alias_q, Q shares the
// second buffer: 2 * BC + max(2 * BC, BR).
XPSR_HD constexpr int attn_smem_rows(AttnTile t) {
  return t.alias_q ? 2 * t.bc + (2 * t.bc > attn_br(t) ? 2 * t.bc : attn_br(t)) : attn_br(t) + 4 * t.bc;
}
XPSR_HD constexpr size_t attn_smem_bytes(int D, int variant = 0) {
  return (size_t)attn_smem_rows(attn_tile(D, variant)) * attn_row_chunks(D) * 16;
}
// Registers per thread the model assumes for the d=160 variants (ptxas 13.0, sm_90); replaced at run time.
constexpr int kAttnD160Regs[kAttnD160Variants] = {248, 248, 176};  // ptxas 13.0: 241-246, 241-246, 168-172

// d=160 variant for this device: legacy = v0 or nothing (-1: the SIMT kernel); model = the variant with
// the most resident warps (x 0.92 for BC 32: twice the per-tile barriers and rescales) among those that
// fit. `regs`: per-variant registers on this device (null: kAttnD160Regs); `fits`: bit v = variant v
// could be configured on this device (its shared memory is within the opt-in limit).
inline int choose_attn_d160(TilePolicy pol, const GpuModel& g, const int* regs, unsigned fits) {
  if (pol == TilePolicy::Legacy) return (fits & 1u) ? 0 : -1;
  int best = -1;
  double best_score = 0;
  for (int v = 1; v < kAttnD160Variants; ++v) {
    if (!(fits & (1u << v))) continue;
    const AttnTile t = attn_tile(160, v);
    const KernelResources k{t.warps * 32, regs ? regs[v] : kAttnD160Regs[v], (int)attn_smem_bytes(160, v)};
    const int occ = ctas_per_sm(g, k);
    const double score = latency_util(occ * t.warps) * (t.bc >= 64 ? 1.0 : 0.92);
    if (occ > 0 && score > best_score * 1.001) {
      best_score = score;
      best = v;
    }
  }
  return best >= 0 ? best : ((fits & 1u) ? 0 : -1);
}

// ---- GroupNorm (norm.cu) --------------------------------------------------------------------------------
// Pass 1 splits the HW positions of each sample into `chunks` equal runs of `per` pixels so that about two
// CTAs per SM run (the whole tensor is read once at full bandwidth); each CTA writes per-channel shifted
// sums. Pass 2 merges them exactly (Chan's formula) into per-channel scale/shift: one CTA of 256 threads
// per (n, group), each thread merging a strided set of (chunk, channel) items, then a block tree (legacy:
// one warp per (n, group)). Pass 3 applies them.
struct GnChunking {
  int chunks = 1, per = 1;  // chunk c covers pixels [c * per, min(HW, (c + 1) * per)); none is empty
};
inline GnChunking group_norm_chunking(int N, int HW, int csplit, int rows_per_step, int sms, size_t ws_bytes,
                                      size_t bytes_per_chunk) {
  int want = std::max(1, (2 * sms + N * csplit - 1) / (N * csplit));
  want = std::min(want, std::max(1, HW / std::max(1, 4 * rows_per_step)));  // >= 4 rows per thread
  while (want > 1 && (size_t)want * bytes_per_chunk > ws_bytes) want /= 2;
  GnChunking c;
  c.per = std::max(1, (HW + want - 1) / want);
  c.chunks = std::max(1, (HW + c.per - 1) / c.per);
  return c;
}

// ---- elementwise ------------------------------------------------------------------------------------------
// Grid-stride loops, 256 threads, 16-byte accesses where aligned; a grid of at most 16 CTAs per SM keeps the
// tail short and the launch cheap.
inline int elementwise_blocks(size_t work_items, int sms) {
  const size_t b = (work_items + 255) / 256;
  return (int)std::max<size_t>(1, std::min<size_t>(b, (size_t)sms * 16));
}

}  // namespace xpsr::cuda
