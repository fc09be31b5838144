// Process-wide tile policy (XPSR_CUDA_TILES) and the test/benchmark hooks that force a GEMM plan, a d=160
// attention variant or the GroupNorm finalize, and report what the last launch used. Atomics: ops on
// several backends/threads may read them concurrently. See kernels.h.
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels.h"

namespace xpsr::cuda {

namespace {

int policy_from_env() {
  const char* v = std::getenv("XPSR_CUDA_TILES");
  return v && std::strcmp(v, "legacy") == 0 ? (int)TilePolicy::Legacy : (int)TilePolicy::Model;
}

std::atomic<int> g_policy{-1};
std::atomic<int> g_forced_tile{-1}, g_forced_splits{1};
std::atomic<int> g_last_tile{-1}, g_last_splits{0}, g_last_kps{0};
std::atomic<int> g_forced_d160{-1}, g_last_d160{-1};
std::atomic<int> g_forced_gn{-1};

}  // namespace

TilePolicy tile_policy() {
  int p = g_policy.load(std::memory_order_relaxed);
  if (p < 0) {
    p = policy_from_env();
    g_policy.store(p, std::memory_order_relaxed);
  }
  return (TilePolicy)p;
}
void set_tile_policy(TilePolicy p) { g_policy.store((int)p, std::memory_order_relaxed); }
const char* tile_policy_name(TilePolicy p) { return p == TilePolicy::Legacy ? "legacy" : "model"; }

void set_forced_gemm_plan(int tile, int splits) {
  g_forced_splits.store(splits < 1 ? 1 : splits, std::memory_order_relaxed);
  g_forced_tile.store(tile >= 0 && tile < kGemmTiles ? tile : -1, std::memory_order_relaxed);
}
int forced_gemm_tile() { return g_forced_tile.load(std::memory_order_relaxed); }
int forced_gemm_splits() { return g_forced_splits.load(std::memory_order_relaxed); }

void note_gemm_plan(const GemmPlan& p) {
  g_last_tile.store((int)p.tile, std::memory_order_relaxed);
  g_last_splits.store(p.splits, std::memory_order_relaxed);
  g_last_kps.store(p.ktiles_per_split, std::memory_order_relaxed);
}
GemmPlan last_gemm_plan() {
  GemmPlan p;
  p.tile = (GemmTile)g_last_tile.load(std::memory_order_relaxed);
  p.splits = g_last_splits.load(std::memory_order_relaxed);
  p.ktiles_per_split = g_last_kps.load(std::memory_order_relaxed);
  return p;
}

void set_forced_attn_d160_variant(int v) {
  g_forced_d160.store(v >= 0 && v < kAttnD160Variants ? v : -1, std::memory_order_relaxed);
}
int forced_attn_d160_variant() { return g_forced_d160.load(std::memory_order_relaxed); }
void note_attn_d160_variant(int v) { g_last_d160.store(v, std::memory_order_relaxed); }
int last_attn_d160_variant() { return g_last_d160.load(std::memory_order_relaxed); }

void set_forced_gn_finalize(int legacy) {
  g_forced_gn.store(legacy < 0 ? -1 : (legacy ? 1 : 0), std::memory_order_relaxed);
}
bool gn_finalize_legacy() {
  const int f = g_forced_gn.load(std::memory_order_relaxed);
  return f >= 0 ? f == 1 : tile_policy() == TilePolicy::Legacy;
}

}  // namespace xpsr::cuda
