// The CUDA tile policy (tuning.h) on the CPU: its decisions are pure functions of the shape and a model of
// the GPU, so they are tested here for the real SD-1.5 shapes on A100 / H100 / A10 / L40S / L4 models,
// with or without a GPU and with or without the CUDA build. Expected values come from the hardware rules
// (the CUDA occupancy calculator's register/shared-memory arithmetic, worked out by hand below) and from
// properties any good plan must have (valid splits, workspace bound, no worse than the legacy plan under
// the same cost model, most SMs busy on the compute-bound shapes the issue names). cuda_policy_build_resources checks
// the compiled kernels (build/cuda-resources.json, ptxas -v) against the figures the model assumes.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "../engine/json.h"
#include "../test/test.h"
#include "tuning.h"

using namespace xpsr::cuda;

namespace {

constexpr size_t kWs = 32u << 20;  // the backend's workspace (backend.cpp kWorkspaceBytes)

struct Shape {
  const char* name;
  int M, N, K;
};

// Every GEMM / implicit-GEMM conv of one CFG step (batch 2, 64x64 latent) with distinct (M, N, K):
// conv M = 2*P*Q, N = out channels, K = 9*C; linear M = 2*tokens.
const std::vector<Shape>& sd15_shapes() {
  static const std::vector<Shape> s = {
      {"conv 320 64x64", 8192, 320, 2880},         {"conv 640 32x32", 2048, 640, 5760},
      {"conv 1280 16x16", 512, 1280, 11520},       {"conv 1280 8x8", 128, 1280, 11520},
      {"conv 320->640 32x32", 2048, 640, 2880},    {"conv 640->320 64x64 up", 8192, 320, 5760},
      {"conv 960->320 64x64 up", 8192, 320, 8640}, {"conv 2560->1280 16x16 up", 512, 1280, 23040},
      {"conv_in 4->320", 8192, 320, 72},           {"conv 320 s2 ->32x32", 2048, 320, 2880},
      {"conv 1280 s2 ->8x8", 128, 1280, 11520},    {"1x1 640->320 64x64", 8192, 320, 640},
      {"linear 8192x320->320", 8192, 320, 320},    {"linear 8192x320->2560", 8192, 2560, 320},
      {"linear 8192x1280->320", 8192, 320, 1280},  {"linear 2048x640->640", 2048, 640, 640},
      {"linear 2048x640->5120", 2048, 5120, 640},  {"linear 2048x2560->640", 2048, 640, 2560},
      {"linear 512x1280->1280", 512, 1280, 1280},  {"linear 512x1280->10240", 512, 10240, 1280},
      {"linear 512x5120->1280", 512, 1280, 5120},  {"linear 128x1280->1280", 128, 1280, 1280},
      {"text K/V 154x768->320", 154, 320, 768},    {"text K/V 154x768->1280", 154, 1280, 768},
      {"time emb 2x1280->1280", 2, 1280, 1280}};
  return s;
}

struct Gpu {
  const char* name;
  GpuModel g;
};
std::vector<Gpu> gpus() {
  return {{"A100", gpu_model_for(80, 108)},
          {"H100", gpu_model_for(90, 132)},
          {"A10", gpu_model_for(86, 72)},
          {"L40S", gpu_model_for(89, 142)},
          {"L4", gpu_model_for(89, 58)}};
}

int64_t grid_of(GemmTile t, int M, int N, int splits) {
  const GemmTileInfo ti = gemm_tile_info(t);
  return (int64_t)((M + ti.bm - 1) / ti.bm) * ((N + ti.bn - 1) / ti.bn) * splits;
}

}  // namespace

// Occupancy against hand-worked cases of the calculator's rules (registers allocated per warp in units of
// 256, per sub-partition; 1 KiB reserved per CTA; 128-byte shared-memory granularity).
TEST(cuda_policy_occupancy_matches_the_calculator) {
  const GpuModel a100 = gpu_model_for(80, 108), h100 = gpu_model_for(90, 132), a10 = gpu_model_for(86, 72);
  // 256 threads, 128 regs: 4096 regs/warp, 4 warps per sub-partition = 16 warps = 2 CTAs; smem 64 KiB + 1 KiB
  // = 66560 B -> floor(167936 / 66560) = 2 on A100; floor(102400 / 66560) = 1 on A10.
  CHECK(ctas_per_sm(a100, {256, 128, 65536}) == 2);
  CHECK(ctas_per_sm(a10, {256, 128, 65536}) == 1);
  // 129 regs: 129*32 = 4128 -> 4352 per warp, 16384 / 4352 = 3 per sub-partition = 12 warps = 1 CTA of 8.
  CHECK(ctas_per_sm(a100, {256, 129, 65536}) == 1);
  // 128 threads, 232 regs: 7424 per warp, 2 per sub-partition = 8 warps = 2 CTAs; smem 3 on H100 -> 2.
  CHECK(ctas_per_sm(h100, {128, 232, 65536}) == 2);
  // 128 threads, 168 regs: 5376 per warp, 3 per sub-partition = 12 warps = 3 CTAs; smem 233472 / 66560 = 3.
  CHECK(ctas_per_sm(h100, {128, 168, 65536}) == 3);
  // the threads limit: 1536 threads on sm_86 = 6 CTAs of 256 threads, even with few registers and no smem
  CHECK(ctas_per_sm(a10, {256, 32, 0}) == 6);
  // the CTA limit: 16 on sm_86, 32 on sm_80 for tiny CTAs
  CHECK(ctas_per_sm(a10, {32, 16, 0}) == 16);
  CHECK(ctas_per_sm(a100, {32, 16, 0}) == 32);
  // more shared memory than the opt-in limit: cannot launch (the 105 KiB d=160 legacy tile on sm_86)
  CHECK(attn_smem_bytes(160, 0) == 107520);
  CHECK(ctas_per_sm(a10, {128, 128, 107520}) == 0);
  CHECK(ctas_per_sm(h100, {128, 128, 107520}) == 2);
  CHECK(ctas_per_sm(a100, {128, 256, 0}) == 0);  // more than 255 registers per thread
}

TEST(cuda_policy_tile_geometry) {
  // shared memory: (bm + bn) rows x 32 halves x 4 stages
  CHECK(gemm_smem_bytes(GemmTile::T128x128) == 65536);
  CHECK(gemm_smem_bytes(GemmTile::T128x64) == 49152);
  CHECK(gemm_smem_bytes(GemmTile::T64x64) == 32768);
  CHECK(gemm_smem_bytes(GemmTile::T128x128w4) == 65536);
  CHECK(gemm_smem_bytes(GemmTile::T128x256) == 98304);
  // ldmatrix + fill bytes per MMA: the issue's 384 (64x64 tile), 288 (128x64); 64x64 warp tiles 192 / 176
  CHECK_CLOSE(gemm_smem_bytes_per_mma(GemmTile::T64x64), 384.0, 1e-9);
  CHECK_CLOSE(gemm_smem_bytes_per_mma(GemmTile::T128x64), 288.0, 1e-9);
  CHECK_CLOSE(gemm_smem_bytes_per_mma(GemmTile::T128x128), 256.0, 1e-9);
  CHECK_CLOSE(gemm_smem_bytes_per_mma(GemmTile::T128x128w4), 192.0, 1e-9);
  CHECK_CLOSE(gemm_smem_bytes_per_mma(GemmTile::T128x256), 176.0, 1e-9);
  // 64x64 per warp: 4 warps for 128x128, 8 for 128x256
  CHECK(gemm_tile_info(GemmTile::T128x128w4).bm / gemm_tile_info(GemmTile::T128x128w4).warps_m == 64);
  CHECK(gemm_tile_info(GemmTile::T128x128w4).bn / gemm_tile_info(GemmTile::T128x128w4).warps_n == 64);
  CHECK(gemm_threads(GemmTile::T128x256) == 256);
  // attention d=160: 21 chunks of 16 B per row (odd), rows Q + 4 BC or 2 BC + max(2 BC, BR)
  CHECK(attn_row_chunks(160) == 21);
  CHECK(attn_smem_bytes(160, 1) == 256u * 21 * 16);  // 86016 B = 84 KiB < 99 KiB
  CHECK(attn_smem_bytes(160, 2) == 128u * 21 * 16);  // 43008 B = 42 KiB
  CHECK(attn_smem_bytes(40) == (128u + 256) * 5 * 16);
  // GroupNorm chunking: equal runs, none empty, covering HW exactly
  for (int HW : {1, 7, 64, 256, 1024, 3055, 4096, 65536})
    for (int sms : {58, 108, 132}) {
      const GnChunking c = group_norm_chunking(2, HW, 1, 6, sms, kWs, 2 * 320 * 12);
      CHECK(c.chunks >= 1 && c.per >= 1);
      CHECK((int64_t)c.chunks * c.per >= HW);
      CHECK((int64_t)(c.chunks - 1) * c.per < std::max(HW, 1));
    }
}

// For every SD-1.5 shape on every GPU model: the model's plan is valid, no worse (by the model) than the
// legacy plan or than any single-split plan, and splits stay within the workspace.
TEST(cuda_policy_gemm_plans_are_valid_and_no_worse) {
  int improved = 0, total = 0;
  for (const Gpu& gpu : gpus()) {
    for (const Shape& s : sd15_shapes()) {
      const GemmPlan p = choose_gemm(TilePolicy::Model, gpu.g, nullptr, s.M, s.N, s.K, kWs);
      const int ktiles = (s.K + kGemmBK - 1) / kGemmBK;
      CHECK_MSG(p.splits >= 1 && p.splits <= kGemmMaxSplits, std::string(gpu.name) + " " + s.name);
      CHECK_MSG((int64_t)p.splits * p.ktiles_per_split >= ktiles && (p.splits - 1) * p.ktiles_per_split < ktiles,
                std::string(gpu.name) + " " + s.name + ": a split is empty or k-tiles are lost");
      CHECK(p.splits == 1 || (size_t)p.splits * s.M * s.N * 4 <= kWs);
      CHECK(p.splits == 1 || p.ktiles_per_split >= kGemmMinKtilesPerSplit);
      CHECK(ctas_per_sm(gpu.g, gemm_resources(p.tile, 0)) >= 1);
      CHECK_CLOSE(p.est_us, gemm_plan_us(gpu.g, p.tile, 0, s.M, s.N, s.K, p.splits), 1e-9);
      const GemmPlan l = choose_gemm(TilePolicy::Legacy, gpu.g, nullptr, s.M, s.N, s.K, kWs);
      CHECK((int)l.tile <= (int)GemmTile::T64x64);  // the legacy policy never uses the new tiles
      const double legacy_us = gemm_plan_us(gpu.g, l.tile, 0, s.M, s.N, s.K, l.splits);
      CHECK_MSG(p.est_us <= legacy_us * 1.001, std::string(gpu.name) + " " + s.name + ": worse than legacy");
      for (int t = 0; t < kGemmTiles; ++t) {
        const double us = gemm_plan_us(gpu.g, (GemmTile)t, 0, s.M, s.N, s.K, 1);
        CHECK_MSG(us < 0 || p.est_us <= us * 1.001, std::string(gpu.name) + " " + s.name + ": tile " +
                                                        gemm_tile_name((GemmTile)t) + " unsplit is faster");
      }
      ++total;
      if (p.est_us < legacy_us * 0.95) ++improved;
    }
  }
  std::printf("    model plan >= 5%% faster than legacy (by the model) for %d of %d shape x GPU pairs\n", improved,
              total);
  CHECK(improved > 0);
}

// The underfilled grids the issue names (conv 640->640 at 32x32, 1280->1280 at 16x16, linear
// 512x5120->1280; compute-bound): on A100 and H100 the model's plan puts work on >= 90% of the SMs in
// its first wave and is faster (by the model) than the legacy plan, which left a quarter or more idle.
// (conv 1280->1280 at 8x8 is not among them: its 29.5 MB of weights make it memory-bound - 8.8 us at
// 3.35 TB/s against 3.8 us of MMA - so idle SMs cost nothing there.)
TEST(cuda_policy_issue_shapes_fill_the_gpu) {
  const Shape named[] = {{"conv 640 32x32", 2048, 640, 5760},
                         {"conv 1280 16x16", 512, 1280, 11520},
                         {"linear 512x5120->1280", 512, 1280, 5120}};
  for (const Gpu& gpu : {gpus()[0], gpus()[1]}) {
    for (const Shape& s : named) {
      const GemmPlan p = choose_gemm(TilePolicy::Model, gpu.g, nullptr, s.M, s.N, s.K, kWs);
      const GemmPlan l = choose_gemm(TilePolicy::Legacy, gpu.g, nullptr, s.M, s.N, s.K, kWs);
      const int64_t ctas = grid_of(p.tile, s.M, s.N, p.splits), lctas = grid_of(l.tile, s.M, s.N, l.splits);
      const double lus = gemm_plan_us(gpu.g, l.tile, 0, s.M, s.N, s.K, l.splits);
      std::printf("    %-5s %-22s model %-18s x%-2d = %4lld CTAs %6.1f us | legacy %-17s x%-2d = %4lld CTAs %6.1f us\n",
                  gpu.name, s.name, gemm_tile_name(p.tile), p.splits, (long long)ctas, p.est_us, gemm_tile_name(l.tile),
                  l.splits, (long long)lctas, lus);
      CHECK_MSG(ctas >= (int64_t)std::ceil(0.9 * gpu.g.sms),
                std::string(gpu.name) + " " + s.name + ": the plan leaves more than 10% of the SMs idle");
      CHECK_MSG(p.est_us < lus, std::string(gpu.name) + " " + s.name + ": no better than legacy");
    }
    // text K/V (M = 154, 0.08 GFLOP): too small to fill the GPU, but split over more SMs than the legacy
    // single 64x64 grid of 15 CTAs
    const GemmPlan kv = choose_gemm(TilePolicy::Model, gpu.g, nullptr, 154, 320, 768, kWs);
    CHECK(grid_of(kv.tile, 154, 320, kv.splits) > 15);
  }
}

// The first version's documented choices (gemm_test.cu, review notes) on 132 SMs.
TEST(cuda_policy_legacy_is_the_first_version) {
  const GpuModel h100 = gpu_model_for(90, 132);
  GemmPlan p = choose_gemm(TilePolicy::Legacy, h100, nullptr, 154, 320, 2560, kWs);
  CHECK(p.splits == 8);
  p = choose_gemm(TilePolicy::Legacy, h100, nullptr, 77, 77, 5120, kWs);
  CHECK(p.tile == GemmTile::T64x64 && p.splits == 16);
}

// Forced plans (the CUDA tests run every tile this way) never leave an empty split or exceed the workspace.
TEST(cuda_policy_forced_plans) {
  for (int t = 0; t < kGemmTiles; ++t)
    for (int want : {1, 2, 3, 4, 7, 16, 40})
      for (int K : {3, 32, 72, 320, 2880, 11520}) {
        const GemmPlan p = forced_gemm_plan((GemmTile)t, want, K, 2048, 1280, kWs);
        const int ktiles = (K + kGemmBK - 1) / kGemmBK;
        CHECK((int)p.tile == t);
        CHECK(p.splits >= 1 && p.splits <= want && p.splits <= ktiles);
        CHECK(gemm_split_ok(ktiles, p.splits));
        CHECK((size_t)p.splits * 2048 * 1280 * 4 <= kWs || p.splits == 1);
        CHECK((int64_t)p.splits * p.ktiles_per_split >= ktiles);
      }
}

// d=160 attention: on the 99 KiB GPUs (sm_86, sm_89) the legacy tile does not fit and the legacy policy
// reports the SIMT kernel (-1); the model picks a variant that fits. On A100/H100 every variant fits.
TEST(cuda_policy_attention_d160_variants) {
  for (const Gpu& gpu : gpus()) {
    unsigned fits = 0;
    for (int v = 0; v < kAttnD160Variants; ++v)
      if (attn_smem_bytes(160, v) <= (size_t)gpu.g.smem_per_block) fits |= 1u << v;
    const int legacy = choose_attn_d160(TilePolicy::Legacy, gpu.g, nullptr, fits);
    const int model = choose_attn_d160(TilePolicy::Model, gpu.g, nullptr, fits);
    std::printf("    %-5s fits 0x%x legacy %d model %d (%zu B, %d CTAs/SM)\n", gpu.name, fits, legacy, model,
                attn_smem_bytes(160, model),
                ctas_per_sm(gpu.g, {128, kAttnD160Regs[model], (int)attn_smem_bytes(160, model)}));
    CHECK(model >= 1);
    CHECK(attn_smem_bytes(160, model) <= (size_t)gpu.g.smem_per_block);
    if (gpu.g.smem_per_block < 107520) {
      CHECK(legacy == -1);
      CHECK(fits == 6u);
    } else {
      CHECK(legacy == 0);
      CHECK(fits == 7u);
    }
  }
  // nothing fits (a hypothetical 32 KiB device): both policies say SIMT
  GpuModel tiny = gpu_model_for(80, 10);
  tiny.smem_per_block = 32768;
  CHECK(choose_attn_d160(TilePolicy::Model, tiny, nullptr, 0) == -1);
}

// The kernels as compiled (build/cuda-resources.json, written by the build from ptxas -v): no hot kernel
// spills, and no GEMM tile or d=160 variant uses more registers than the figure the model assumes
// (otherwise the CPU-tested decisions above would not be the ones the GPU makes).
TEST(cuda_policy_build_resources) {
#ifndef XPSR_CUDA_RESOURCES_JSON
  SKIP("built without the CUDA backend: no ptxas resource report to check");
#else
  xpsr::Json j;
  try {
    j = xpsr::Json::parse_file(XPSR_CUDA_RESOURCES_JSON);
  } catch (const xpsr::Error& e) {
    CHECK_MSG(false,
              std::string("cannot read the build's resource report ") + XPSR_CUDA_RESOURCES_JSON + ": " + e.what());
  }
  const auto& ks = j["kernels"].as_array();
  CHECK_MSG(!ks.empty(), "the resource report lists no kernels (was -Xptxas=-v captured?)");
  int gemm_seen = 0, d160_seen = 0;
  for (const auto& k : ks) {
    const std::string name = k["name"].as_string(), arch = k["arch"].as_string();
    const int regs = (int)k["registers"].as_int();
    const int spills = (int)(k["spill_stores"].as_int() + k["spill_loads"].as_int());
    CHECK_MSG(!(k["hot"].as_bool() && spills > 0),
              name + " (" + arch + ") spills " + std::to_string(spills) + " bytes");
    if (name.find("gemm_kernel<") != std::string::npos) {
      ++gemm_seen;
      for (int t = 0; t < kGemmTiles; ++t) {
        const GemmTileInfo ti = gemm_tile_info((GemmTile)t);
        const std::string sig = "gemm_kernel<" + std::to_string(ti.bm) + ", " + std::to_string(ti.bn) + ", " +
                                std::to_string(ti.warps_m) + ", " + std::to_string(ti.warps_n) + ",";
        // AMode 0 RowsVec, 1 RowsScalar, 2 ConvVec, 3 ConvScalar
        const bool scalar = name.find("(xpsr::cuda::AMode)1>") != std::string::npos ||
                            name.find("(xpsr::cuda::AMode)3>") != std::string::npos;
        const int assumed = scalar ? ti.regs_scalar : ti.regs;
        if (name.find(sig) != std::string::npos)
          CHECK_MSG(regs <= assumed, name + " (" + arch + ") uses " + std::to_string(regs) +
                                         " registers; tuning.h assumes " + std::to_string(assumed));
      }
    }
    if (name.find("attention_fa_kernel<160, 4, 1,") != std::string::npos) {
      ++d160_seen;
      const int v = name.find(", 32, true>") != std::string::npos   ? 2
                    : name.find(", 64, true>") != std::string::npos ? 1
                                                                    : 0;
      CHECK_MSG(regs <= kAttnD160Regs[v], name + " (" + arch + ") uses " + std::to_string(regs) + " registers");
    }
  }
  const int archs = (int)j["architectures"].size();
  std::printf("    %zu kernel instantiations, %d architectures, %lld with spills (%lld hot)\n", ks.size(), archs,
              (long long)j["summary"]["with_spills"].as_int(), (long long)j["summary"]["hot_with_spills"].as_int());
  CHECK(gemm_seen == 20 * archs);  // 5 tiles x 4 A modes per architecture
  CHECK(d160_seen == kAttnD160Variants * archs);
#endif
}
