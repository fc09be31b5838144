// Elementwise and data-movement ops: unary (silu / quick_gelu / gelu_erf / leaky_relu), geglu, axpby, channel_add,
// concat, slice, nearest upsample, embedding gather. Math goes through the active SIMD row kernels;
// copies are memcpy per row. Work is split in contiguous ranges of rows or 4096-element blocks.
// Test: elementwise_test.cpp.
#include <algorithm>
#include <cstring>

#include "dispatch.h"
#include "ops.h"

namespace xpsr::cpu {
namespace {

constexpr int64_t kBlock = 4096;  // elements per work item of flat ops

template <typename F>
void for_blocks(Context& ctx, size_t n, int64_t cost, F&& fn) {
  const int64_t blocks = ceil_div((int64_t)n, kBlock);
  for_range(ctx, blocks, kBlock * cost, [&](int64_t b0, int64_t b1) {
    const size_t s = (size_t)(b0 * kBlock), e = std::min(n, (size_t)(b1 * kBlock));
    fn(s, e - s);
  });
}

inline void copy_floats(float* dst, const float* src, int64_t n) { std::memcpy(dst, src, sizeof(float) * (size_t)n); }

}  // namespace

void unary_op(Context& ctx, const UnaryArgs& a) {
  const Kernels& kr = kernels();
  const float* x = static_cast<const float*>(a.x);
  float* y = static_cast<float*>(a.y);
  Unary op = Unary::Silu;
  switch (a.op) {
    case UnaryOp::Silu: op = Unary::Silu; break;
    case UnaryOp::QuickGelu: op = Unary::QuickGelu; break;
    case UnaryOp::GeluErf: op = Unary::GeluErf; break;
    case UnaryOp::LeakyRelu: op = Unary::LeakyRelu; break;
    default: fail(ErrorCode::Unsupported, "unary: op ", (int)a.op, " is not implemented on the CPU backend");
  }
  for_blocks(ctx, a.n, 16, [&](size_t s, size_t n) { kr.unary(x + s, y + s, n, op); });
}

void axpby_op(Context& ctx, const AxpbyArgs& a) {
  const Kernels& kr = kernels();
  const float* pa = static_cast<const float*>(a.a);
  const float* pb = static_cast<const float*>(a.b);
  float* y = static_cast<float*>(a.y);
  for_blocks(ctx, a.n, 2,
             [&](size_t s, size_t n) { kr.axpby(pa + s, pb ? pb + s : nullptr, y + s, n, a.alpha, a.beta); });
}

void geglu_op(Context& ctx, const GegluArgs& a) {
  const Kernels& kr = kernels();
  const float* x = static_cast<const float*>(a.x);
  float* y = static_cast<float*>(a.y);
  const int64_t inner = a.inner;
  for_range(ctx, a.rows, inner * 20, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) kr.geglu(x + r * 2 * inner, y + r * inner, (size_t)inner);
  });
}

void channel_add_op(Context& ctx, const ChannelAddArgs& a) {
  const Kernels& kr = kernels();
  const float* x = static_cast<const float*>(a.x);
  const float* v = static_cast<const float*>(a.v);
  float* y = static_cast<float*>(a.y);
  const int64_t HW = a.HW, C = a.C;
  for_range(ctx, (int64_t)a.N * HW, C * 2, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) kr.axpby(x + r * C, v + (r / HW) * C, y + r * C, (size_t)C, 1.0f, 1.0f);
  });
}

void concat_op(Context& ctx, const ConcatArgs& a) {
  const float* pa = static_cast<const float*>(a.a);
  const float* pb = static_cast<const float*>(a.b);
  float* y = static_cast<float*>(a.y);
  const int64_t ca = a.Ca, cb = a.Cb, cy = ca + cb;
  for_range(ctx, a.rows, cy, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      copy_floats(y + r * cy, pa + r * ca, ca);
      copy_floats(y + r * cy + ca, pb + r * cb, cb);
    }
  });
}

void slice_op(Context& ctx, const SliceArgs& a) {
  const float* x = static_cast<const float*>(a.x);
  float* y = static_cast<float*>(a.y);
  const int64_t cols = a.cols, ldx = a.ldx, c0 = a.c0;
  for_range(ctx, a.rows, cols, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) copy_floats(y + r * cols, x + r * ldx + c0, cols);
  });
}

// PyTorch 'nearest': src = floor(dst * in / out), clamped to in - 1 (exact integer arithmetic).
void upsample_nearest_op(Context& ctx, const UpsampleArgs& a) {
  const float* x = static_cast<const float*>(a.x);
  float* y = static_cast<float*>(a.y);
  const int64_t H = a.H, W = a.W, C = a.C, P = a.P, Q = a.Q;
  for_range(ctx, (int64_t)a.N * P, Q * C, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / P, p = r % P, ih = std::min(p * H / P, H - 1);
      const float* src = x + (n * H + ih) * W * C;
      float* dst = y + r * Q * C;
      for (int64_t q = 0; q < Q; ++q) copy_floats(dst + q * C, src + std::min(q * W / Q, W - 1) * C, C);
    }
  });
}

void embedding_op(Context& ctx, const EmbeddingArgs& a, const float* table, int64_t rows, int64_t dim) {
  float* y = static_cast<float*>(a.y);
  for_range(ctx, a.n, dim, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) copy_floats(y + i * dim, table + (int64_t)a.ids[i] * dim, dim);
  });
  (void)rows;
}

}  // namespace xpsr::cpu
