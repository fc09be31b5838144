// Internal launcher interface of the CUDA backend: backend.cpp validates the op arguments, turns Weight
// objects into device pointers and calls these. Launchers only enqueue work on `stream` (never allocate,
// never synchronise, so they may run inside a CUDA-graph capture) and return the launch status
// (cudaGetLastError) for the caller to turn into an xpsr::Error naming the op and shapes.
// Element types: "f16" = IEEE half activations/weights, "f32" = float (biases, norm affine, staging).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../engine/backend.h"
#include "tuning.h"

namespace xpsr::cuda {

struct DeviceCaps {
  int sms = 1;  // multiprocessors
  int cc_major = 8, cc_minor = 0;
  int smem_optin = 48 * 1024;         // max dynamic shared memory per block after opt-in
  unsigned attn_dims = 0;             // bit i set: the tensor-core attention for head dim 8*i is usable here
  GpuModel model;                     // tuning.h: this device's limits (from its attributes) for the tile policy
  int gemm_regs[4][kGemmTiles] = {};  // registers per thread of gemm_kernel per A mode (AMode order) and tile
  unsigned d160_fits = 0;             // bit v: d=160 attention variant v is configured (fits the shared memory)
  int d160_regs[kAttnD160Variants] = {};
};

// ---- tile policy and test hooks (process-wide; ops read them at launch, captured graphs keep what they saw)
// XPSR_CUDA_TILES=legacy selects the first version's choices (tuning.h); anything else the model.
TilePolicy tile_policy();
void set_tile_policy(TilePolicy p);
const char* tile_policy_name(TilePolicy p);
// Tests/benchmarks: force a GEMM tile (and split count) for every following GEMM/conv; tile -1 = off.
void set_forced_gemm_plan(int tile, int splits);
int forced_gemm_tile();
int forced_gemm_splits();
// The plan of the most recent GEMM/conv launch (tests check that a forced plan was honoured).
void note_gemm_plan(const GemmPlan& p);
GemmPlan last_gemm_plan();
// Tests/benchmarks: force the d=160 attention variant (-1 = policy); the last variant launched (-1 = SIMT).
void set_forced_attn_d160_variant(int v);
int forced_attn_d160_variant();
void note_attn_d160_variant(int v);
int last_attn_d160_variant();
// Tests/benchmarks: GroupNorm finalize as in the first version (one warp per (n, group)) regardless of the
// policy; -1 = follow the policy, 0 = parallel, 1 = legacy.
void set_forced_gn_finalize(int legacy);
bool gn_finalize_legacy();

// Scratch memory owned by the backend, shared by the ops that need it (split-K partials, GroupNorm
// statistics). Ops run one after another on one stream, so one buffer serves all of them.
struct Workspace {
  void* ptr = nullptr;
  size_t bytes = 0;
};

// ---- GEMM / linear: Y[m, n] = sum_k A[m, k] * B[n, k] + bias[n] + R[m, n] ------------------------------
struct GemmArgs {
  int M = 0, N = 0, K = 0;  // K: reduction length; A is read for k < K only
  const void* A = nullptr;  // f16, row stride lda
  int lda = 0;
  const void* B = nullptr;  // f16 [N][Kp], Kp = round_up(K, 8), zeros in k >= K (upload layout)
  int Kp = 0;
  const float* bias = nullptr;  // [N] or null
  const void* R = nullptr;      // f16 residual, row stride ldr, or null
  int ldr = 0;
  void* Y = nullptr;  // f16, row stride ldy
  int ldy = 0;
};
cudaError_t launch_gemm(const GemmArgs& a, const DeviceCaps& caps, const Workspace& ws, cudaStream_t s);

// ---- conv2d (implicit GEMM over k = (r, s, c)) -------------------------------------------------------
struct ConvArgs {
  const void* x = nullptr;  // f16 NHWC [N, H, W, C]
  int N = 0, H = 0, W = 0, C = 0;
  const void* w = nullptr;  // f16 [K][R][S][Cp], Cp = round_up(C, 8), zeros in c >= C
  int Cp = 0;
  const float* bias = nullptr;  // [K] or null
  int K = 0, R = 3, S = 3, stride = 1, pad_top = 1, pad_left = 1;
  const void* residual = nullptr;  // f16 [N, P, Q, K] or null
  void* y = nullptr;               // f16 [N, P, Q, K]
  int P = 0, Q = 0;
};
cudaError_t launch_conv2d(const ConvArgs& a, const DeviceCaps& caps, const Workspace& ws, cudaStream_t s);

// ---- normalisation ------------------------------------------------------------------------------------
struct GroupNormLaunch {
  const void* x = nullptr;  // f16 [N, HW, C]
  void* y = nullptr;        // f16, may equal x
  int N = 0, HW = 0, C = 0, groups = 32;
  float eps = 1e-5f;
  const float* gamma = nullptr;  // [C]
  const float* beta = nullptr;   // [C]
  bool silu = false;
};
// Bytes of workspace group norm needs for this shape with the chunking tuning.h picks.
size_t group_norm_workspace_bytes(const GroupNormLaunch& a, const DeviceCaps& caps, size_t ws_bytes);
cudaError_t launch_group_norm(const GroupNormLaunch& a, const DeviceCaps& caps, const Workspace& ws, cudaStream_t s);

struct LayerNormLaunch {
  const void* x = nullptr;  // f16 [rows, C]
  void* y = nullptr;        // may equal x
  int rows = 0, C = 0;
  float eps = 1e-5f;
  const float* gamma = nullptr;
  const float* beta = nullptr;
};
cudaError_t launch_layer_norm(const LayerNormLaunch& a, cudaStream_t s);

// ---- attention -----------------------------------------------------------------------------------------
// `problems` are AttentionArgs with f16 device pointers; all must share head_dim and causal. Up to
// kMaxAttnProblems run in one launch on the fast path.
constexpr int kMaxAttnProblems = 4;
cudaError_t launch_attention(const AttentionArgs* problems, int count, const DeviceCaps& caps, cudaStream_t s);
// Per-head-dim entry points (one .cu file each, so they compile in parallel): they return
// cudaErrorNotSupported when they do not handle head_dim, the alignment, or the device's shared memory.
#define XPSR_ATTN_FILE(name)                                                                                  \
  cudaError_t launch_attention_##name(const AttentionArgs* p, int n, const DeviceCaps& caps, cudaStream_t s); \
  cudaError_t init_attention_##name(DeviceCaps& caps);
XPSR_ATTN_FILE(small)  // head dims 8, 16, 32 (tiny test models, CLIP-tiny)
XPSR_ATTN_FILE(d40)
XPSR_ATTN_FILE(d64)  // CLIP ViT-L (12 x 64)
XPSR_ATTN_FILE(d80)
XPSR_ATTN_FILE(d160)  // three variants (tuning.h); attention_d160_variant() = the one a launch uses now
#undef XPSR_ATTN_FILE
int attention_d160_variant(const DeviceCaps& caps);  // -1: none fits / legacy policy without v0 -> SIMT
// Any head dim <= kGenericAttnMaxHeadDim, any alignment (f32 SIMT; the VAE's single 512-wide head).
cudaError_t launch_attention_generic(const AttentionArgs& p, const DeviceCaps& caps, cudaStream_t s);
constexpr int kGenericAttnMaxHeadDim = 512;

// ---- elementwise and data movement (f16 unless stated) ------------------------------------------------
cudaError_t launch_unary(const void* x, void* y, size_t n, UnaryOp op, cudaStream_t s);
cudaError_t launch_axpby(const void* a, const void* b, void* y, size_t n, float alpha, float beta, cudaStream_t s);
cudaError_t launch_geglu(const void* x, void* y, int rows, int inner, cudaStream_t s);
cudaError_t launch_channel_add(const void* x, const void* v, void* y, int N, int HW, int C, cudaStream_t s);
// y[r, 0:ca] = a[r, :] (row stride lda), y[r, y_c0 : ...]: generic strided row copy used by concat and slice:
// dst[r * ldd + j] = src[r * lds + j] for j < cols.
cudaError_t launch_copy_rows(const void* src, int lds, void* dst, int ldd, int rows, int cols, cudaStream_t s);
cudaError_t launch_upsample_nearest(const void* x, int N, int H, int W, int C, void* y, int P, int Q, cudaStream_t s);
// ids: device-readable int32 (mapped pinned host memory is fine); table f16 [V][D]; ids are clamped to
// [0, V) on the device (the host checks them too, but a replayed graph cannot).
cudaError_t launch_embedding(const void* table, int V, int D, const int32_t* ids, int n, void* y, cudaStream_t s);

// Index width of the structured elementwise ops and GroupNorm's apply pass: 32-bit below 2^31 elements,
// 64-bit above (VAE decoder at 2048x2048, batch 2). Testing hook: set_force_index64(true) makes every such
// launch take the 64-bit instantiation, so small tests cover it (native/cuda/elementwise_test.cu).
void set_force_index64(bool on);
bool force_index64();

// Conversions for upload/download (src/dst device memory).
cudaError_t launch_f32_to_f16(const float* src, void* dst, size_t n, cudaStream_t s);
cudaError_t launch_f16_to_f32(const void* src, float* dst, size_t n, cudaStream_t s);
// Weight re-layout: `rows` rows of `inner` f32 each -> f16 rows of `inner_pad`, zero padded.
// Conv: rows = K (per output channel), src row = [C][R][S], dst row = [R][S][Cp].
cudaError_t launch_conv_weight_f16(const float* src, void* dst, int rows, int C, int R, int S, int Cp, cudaStream_t s);
// Linear/embedding: src row = [K] -> dst row = [Kp].
cudaError_t launch_rows_f16(const float* src, void* dst, int rows, int K, int Kp, cudaStream_t s);

// Raise the dynamic shared-memory limits of the kernels that need more than 48 KiB and read each
// instantiation's register count into caps. Called once per device by the backend constructor (function
// attributes are per device context).
cudaError_t init_gemm_attributes(DeviceCaps& caps);
cudaError_t init_conv_attributes(DeviceCaps& caps);
cudaError_t init_attention_attributes(DeviceCaps& caps);  // also fills caps.attn_dims / d160_*

inline int round_up(int x, int m) { return (x + m - 1) / m * m; }
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace xpsr::cuda
