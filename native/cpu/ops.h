// The CPU op implementations behind CpuBackend (backend.cpp validates the arguments and resolves weights
// to their packed host data before calling these). All activations are f32, channels-last.
// Files: gemm.cpp (linear), conv2d.cpp, attention.cpp, norm.cpp, elementwise.cpp.
#pragma once
#include <cstdint>

#include "../engine/backend.h"
#include "context.h"

namespace xpsr::cpu {

// w / w_bf16: packed B (gemm.h) of the Linear [N, K] / Conv [Ko, C, R, S] weight, f32 or bf16 pairs
// (exactly one is set; bf16 runs the bf16 GEMM); bias: [N] or null.
void linear_op(Context& ctx, const LinearArgs& a, const float* w, const uint32_t* w_bf16, const float* bias);
void conv2d_op(Context& ctx, const Conv2dArgs& a, const float* w, const uint32_t* w_bf16, const float* bias);
void attention_op(Context& ctx, const AttentionArgs& a);
void group_norm_op(Context& ctx, const GroupNormArgs& a, const float* gamma, const float* beta);
void layer_norm_op(Context& ctx, const LayerNormArgs& a, const float* gamma, const float* beta);
void geglu_op(Context& ctx, const GegluArgs& a);
void unary_op(Context& ctx, const UnaryArgs& a);
void axpby_op(Context& ctx, const AxpbyArgs& a);
void channel_add_op(Context& ctx, const ChannelAddArgs& a);
void concat_op(Context& ctx, const ConcatArgs& a);
void slice_op(Context& ctx, const SliceArgs& a);
void upsample_nearest_op(Context& ctx, const UpsampleArgs& a);
void embedding_op(Context& ctx, const EmbeddingArgs& a, const float* table, int64_t rows, int64_t dim);

// Runs fn(begin, end) over [0, n) on the pool, or inline when n * cost_per_item is too small to be
// worth waking the workers (cost in rough "float ops").
template <typename F>
void for_range(Context& ctx, int64_t n, int64_t cost_per_item, F&& fn) {
  if (n <= 0) return;
  if (ctx.pool.size() == 1 || n == 1 || n * cost_per_item < (int64_t)1 << 15) {
    fn((int64_t)0, n);
    return;
  }
  ctx.pool.parallel_for(n, [&](int64_t b, int64_t e, int) { fn(b, e); });
}

}  // namespace xpsr::cpu
