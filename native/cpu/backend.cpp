// CpuBackend: the fp32, channels-last CPU implementation of native/engine/backend.h. It owns the thread
// pool and scratch (context.h), keeps weights in 64-byte aligned host memory (Linear / Conv packed into
// GEMM panels at upload, see gemm.h), checks every op's arguments (Error with the op and the values) and
// hands the op to ops.h. Ops are serialised by a mutex: one op, hence one plan, runs at a time.
// Test: backend_test.cpp (memory, weights, errors); the op tests exercise the rest.
#include <cstring>
#include <mutex>
#include <sstream>

#include "../engine/backend.h"
#include "dispatch.h"
#include "gemm.h"
#include "ops.h"

namespace xpsr {
namespace cpu {
namespace {

struct CpuWeight : Weight {
  float* data = nullptr;
  size_t floats = 0;
  ~CpuWeight() override { aligned_free(data); }
};

const char* kind_name(WeightKind k) {
  switch (k) {
    case WeightKind::Conv: return "Conv";
    case WeightKind::Linear: return "Linear";
    case WeightKind::Vector: return "Vector";
    case WeightKind::Embedding: return "Embedding";
  }
  return "?";
}

// The packed data of a weight given to `op` as `role`, after checking kind and shape.
const CpuWeight& weight(const Weight* w, WeightKind kind, const std::vector<int64_t>& shape, const char* op,
                        const char* role) {
  XPSR_CHECK(w, ErrorCode::InvalidArgument, op, ": ", role, " weight is null");
  const auto* cw = dynamic_cast<const CpuWeight*>(w);
  XPSR_CHECK(cw, ErrorCode::InvalidArgument, op, ": ", role, " weight '", w->name,
             "' was not uploaded to the CPU backend");
  XPSR_CHECK(cw->kind == kind, ErrorCode::InvalidArgument, op, ": ", role, " weight '", w->name, "' is ",
             kind_name(cw->kind), ", expected ", kind_name(kind));
  XPSR_CHECK(cw->shape == shape, ErrorCode::ShapeMismatch, op, ": ", role, " weight '", w->name, "' has shape ",
             shape_str(cw->shape), ", expected ", shape_str(shape));
  return *cw;
}

const float* optional_vector(const Weight* w, int64_t n, const char* op, const char* role) {
  return w ? weight(w, WeightKind::Vector, {n}, op, role).data : nullptr;
}

void check_ptr(const void* p, const char* op, const char* what) {
  XPSR_CHECK(p, ErrorCode::InvalidArgument, op, ": ", what, " is null");
}

template <typename T>
void check_positive(T v, const char* op, const char* what) {
  XPSR_CHECK(v > 0, ErrorCode::InvalidArgument, op, ": ", what, " must be > 0, got ", v);
}

template <typename T>
void check_ld(T ld, T need, const char* op, const char* what) {
  XPSR_CHECK(ld >= need, ErrorCode::InvalidArgument, op, ": row stride ", what, " = ", ld, " is below ", need);
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads) : ctx_(threads) {}

  std::string name() const override { return "cpu"; }
  std::string description() const override {
    std::ostringstream o;
    o << "CPU (" << kernels().name << ", " << ctx_.pool.size() << (ctx_.pool.size() == 1 ? " thread)" : " threads)");
    return o.str();
  }
  DType act_dtype() const override { return DType::F32; }

  void* alloc(size_t bytes) override { return aligned_alloc_bytes(bytes, "activations"); }
  void free(void* p) override { aligned_free(p); }
  void upload_act(void* dst, const float* src, size_t n) override { copy(dst, src, n); }
  void download_act(float* dst, const void* src, size_t n) override { copy(dst, src, n); }
  void fill_zero(void* dst, size_t n) override {
    if (n) std::memset(dst, 0, n * sizeof(float));
  }

  std::shared_ptr<Weight> upload(const std::string& name, WeightKind kind, const std::vector<int64_t>& shape,
                                 const float* data) override;
  size_t weight_bytes() const override { return weight_bytes_; }

  void conv2d(const Conv2dArgs& a) override;
  void linear(const LinearArgs& a) override;
  void group_norm(const GroupNormArgs& a) override;
  void layer_norm(const LayerNormArgs& a) override;
  void attention(const AttentionArgs& a) override;
  void geglu(const GegluArgs& a) override;
  void unary(const UnaryArgs& a) override;
  void axpby(const AxpbyArgs& a) override;
  void channel_add(const ChannelAddArgs& a) override;
  void concat(const ConcatArgs& a) override;
  void slice(const SliceArgs& a) override;
  void upsample_nearest(const UpsampleArgs& a) override;
  void embedding(const EmbeddingArgs& a) override;

  void execute(const void*, const std::function<void()>& launch_all) override { launch_all(); }
  void synchronize() override {}

 private:
  static void copy(void* dst, const void* src, size_t n) {
    if (n) std::memcpy(dst, src, n * sizeof(float));
  }

  mutable Context ctx_;
  std::mutex op_mutex_;
  std::mutex weight_mutex_;
  size_t weight_bytes_ = 0;
};

std::shared_ptr<Weight> CpuBackend::upload(const std::string& name, WeightKind kind, const std::vector<int64_t>& shape,
                                           const float* data) {
  const size_t rank = kind == WeightKind::Conv ? 4 : kind == WeightKind::Vector ? 1 : 2;
  XPSR_CHECK(shape.size() == rank, ErrorCode::ShapeMismatch, "weight '", name, "' (", kind_name(kind),
             ") must have rank ", rank, ", got shape ", shape_str(shape));
  int64_t count = 1;
  for (int64_t d : shape) {
    XPSR_CHECK(d > 0, ErrorCode::ShapeMismatch, "weight '", name, "' has an empty dimension: ", shape_str(shape));
    count *= d;
  }
  XPSR_CHECK(data, ErrorCode::InvalidArgument, "weight '", name, "': data is null");
  auto w = std::make_shared<CpuWeight>();
  w->kind = kind;
  w->shape = shape;
  w->name = name;
  int64_t floats = count;
  if (kind == WeightKind::Linear) floats = packed_b_floats(shape[1], shape[0]);
  if (kind == WeightKind::Conv) floats = packed_b_floats(shape[1] * shape[2] * shape[3], shape[0]);
  w->floats = (size_t)floats;
  w->data = static_cast<float*>(aligned_alloc_bytes(w->floats * sizeof(float), name.c_str()));
  if (kind == WeightKind::Linear) pack_b_linear(data, shape[0], shape[1], w->data);
  else if (kind == WeightKind::Conv) pack_b_conv(data, shape[0], shape[1], shape[2], shape[3], w->data);
  else std::memcpy(w->data, data, w->floats * sizeof(float));
  std::lock_guard<std::mutex> lock(weight_mutex_);
  weight_bytes_ += w->floats * sizeof(float);
  return w;
}

void CpuBackend::conv2d(const Conv2dArgs& a) {
  const char* op = "conv2d";
  check_ptr(a.x, op, "x");
  check_ptr(a.y, op, "y");
  check_positive(a.N, op, "N");
  check_positive(a.H, op, "H");
  check_positive(a.W, op, "W");
  check_positive(a.C, op, "C");
  check_positive(a.K, op, "K");
  check_positive(a.R, op, "R");
  check_positive(a.S, op, "S");
  check_positive(a.stride, op, "stride");
  XPSR_CHECK(a.pad_top >= 0 && a.pad_left >= 0 && a.pad_bottom >= 0 && a.pad_right >= 0, ErrorCode::InvalidArgument, op,
             ": negative padding");
  const int P = (a.H + a.pad_top + a.pad_bottom - a.R) / a.stride + 1;
  const int Q = (a.W + a.pad_left + a.pad_right - a.S) / a.stride + 1;
  XPSR_CHECK(a.H + a.pad_top + a.pad_bottom >= a.R && a.W + a.pad_left + a.pad_right >= a.S && a.P == P && a.Q == Q,
             ErrorCode::InvalidArgument, op, ": output ", a.P, "x", a.Q, " does not match input ", a.H, "x", a.W,
             ", kernel ", a.R, "x", a.S, ", stride ", a.stride, " and padding (expected ", P, "x", Q, ")");
  const CpuWeight& w = weight(a.w, WeightKind::Conv, {a.K, a.C, a.R, a.S}, op, "w");
  const float* b = optional_vector(a.b, a.K, op, "bias");
  std::lock_guard<std::mutex> lock(op_mutex_);
  conv2d_op(ctx_, a, w.data, b);
}

void CpuBackend::linear(const LinearArgs& a) {
  const char* op = "linear";
  XPSR_CHECK(a.M >= 0, ErrorCode::InvalidArgument, op, ": M must be >= 0, got ", a.M);
  check_positive(a.K, op, "K");
  check_positive(a.N, op, "N");
  check_ld(a.ldx, a.K, op, "ldx");
  check_ld(a.ldy, a.N, op, "ldy");
  if (a.residual) check_ld(a.ldr, a.N, op, "ldr");
  const CpuWeight& w = weight(a.w, WeightKind::Linear, {a.N, a.K}, op, "w");
  const float* b = optional_vector(a.b, a.N, op, "bias");
  if (a.M == 0) return;
  check_ptr(a.x, op, "x");
  check_ptr(a.y, op, "y");
  std::lock_guard<std::mutex> lock(op_mutex_);
  linear_op(ctx_, a, w.data, b);
}

void CpuBackend::group_norm(const GroupNormArgs& a) {
  const char* op = "group_norm";
  check_ptr(a.x, op, "x");
  check_ptr(a.y, op, "y");
  check_positive(a.N, op, "N");
  check_positive(a.HW, op, "HW");
  check_positive(a.C, op, "C");
  check_positive(a.groups, op, "groups");
  XPSR_CHECK(a.C % a.groups == 0, ErrorCode::InvalidArgument, op, ": C = ", a.C,
             " is not a multiple of groups = ", a.groups);
  const float* g = weight(a.gamma, WeightKind::Vector, {a.C}, op, "gamma").data;
  const float* b = weight(a.beta, WeightKind::Vector, {a.C}, op, "beta").data;
  std::lock_guard<std::mutex> lock(op_mutex_);
  group_norm_op(ctx_, a, g, b);
}

void CpuBackend::layer_norm(const LayerNormArgs& a) {
  const char* op = "layer_norm";
  check_positive(a.C, op, "C");
  XPSR_CHECK(a.rows >= 0, ErrorCode::InvalidArgument, op, ": rows must be >= 0, got ", a.rows);
  const float* g = weight(a.gamma, WeightKind::Vector, {a.C}, op, "gamma").data;
  const float* b = weight(a.beta, WeightKind::Vector, {a.C}, op, "beta").data;
  if (a.rows == 0) return;
  check_ptr(a.x, op, "x");
  check_ptr(a.y, op, "y");
  std::lock_guard<std::mutex> lock(op_mutex_);
  layer_norm_op(ctx_, a, g, b);
}

void CpuBackend::attention(const AttentionArgs& a) {
  const char* op = "attention";
  check_ptr(a.q, op, "q");
  check_ptr(a.k, op, "k");
  check_ptr(a.v, op, "v");
  check_ptr(a.o, op, "o");
  check_positive(a.B, op, "B");
  check_positive(a.Lq, op, "Lq");
  check_positive(a.Lk, op, "Lk");
  check_positive(a.heads, op, "heads");
  check_positive(a.head_dim, op, "head_dim");
  const int width = a.heads * a.head_dim;
  check_ld(a.ldq, width, op, "ldq");
  check_ld(a.ldk, width, op, "ldk");
  check_ld(a.ldv, width, op, "ldv");
  check_ld(a.ldo, width, op, "ldo");
  std::lock_guard<std::mutex> lock(op_mutex_);
  attention_op(ctx_, a);
}

void CpuBackend::geglu(const GegluArgs& a) {
  XPSR_CHECK(a.rows >= 0 && a.inner >= 0, ErrorCode::InvalidArgument, "geglu: negative size");
  if (a.rows == 0 || a.inner == 0) return;
  check_ptr(a.x, "geglu", "x");
  check_ptr(a.y, "geglu", "y");
  std::lock_guard<std::mutex> lock(op_mutex_);
  geglu_op(ctx_, a);
}

void CpuBackend::unary(const UnaryArgs& a) {
  if (a.n == 0) return;
  check_ptr(a.x, "unary", "x");
  check_ptr(a.y, "unary", "y");
  std::lock_guard<std::mutex> lock(op_mutex_);
  unary_op(ctx_, a);
}

void CpuBackend::axpby(const AxpbyArgs& a) {
  if (a.n == 0) return;
  check_ptr(a.a, "axpby", "a");
  check_ptr(a.y, "axpby", "y");
  std::lock_guard<std::mutex> lock(op_mutex_);
  axpby_op(ctx_, a);
}

void CpuBackend::channel_add(const ChannelAddArgs& a) {
  XPSR_CHECK(a.N >= 0 && a.HW >= 0 && a.C >= 0, ErrorCode::InvalidArgument, "channel_add: negative size");
  if ((int64_t)a.N * a.HW * a.C == 0) return;
  check_ptr(a.x, "channel_add", "x");
  check_ptr(a.v, "channel_add", "v");
  check_ptr(a.y, "channel_add", "y");
  std::lock_guard<std::mutex> lock(op_mutex_);
  channel_add_op(ctx_, a);
}

void CpuBackend::concat(const ConcatArgs& a) {
  XPSR_CHECK(a.rows >= 0 && a.Ca >= 0 && a.Cb >= 0, ErrorCode::InvalidArgument, "concat: negative size");
  if (a.rows == 0 || a.Ca + a.Cb == 0) return;
  if (a.Ca) check_ptr(a.a, "concat", "a");
  if (a.Cb) check_ptr(a.b, "concat", "b");
  check_ptr(a.y, "concat", "y");
  std::lock_guard<std::mutex> lock(op_mutex_);
  concat_op(ctx_, a);
}

void CpuBackend::slice(const SliceArgs& a) {
  XPSR_CHECK(a.rows >= 0 && a.cols >= 0 && a.c0 >= 0, ErrorCode::InvalidArgument, "slice: negative size");
  if (a.rows == 0 || a.cols == 0) return;
  check_ld(a.ldx, a.c0 + a.cols, "slice", "ldx");
  check_ptr(a.x, "slice", "x");
  check_ptr(a.y, "slice", "y");
  std::lock_guard<std::mutex> lock(op_mutex_);
  slice_op(ctx_, a);
}

void CpuBackend::upsample_nearest(const UpsampleArgs& a) {
  const char* op = "upsample_nearest";
  check_positive(a.N, op, "N");
  check_positive(a.H, op, "H");
  check_positive(a.W, op, "W");
  check_positive(a.C, op, "C");
  check_positive(a.P, op, "P");
  check_positive(a.Q, op, "Q");
  check_ptr(a.x, op, "x");
  check_ptr(a.y, op, "y");
  std::lock_guard<std::mutex> lock(op_mutex_);
  upsample_nearest_op(ctx_, a);
}

void CpuBackend::embedding(const EmbeddingArgs& a) {
  const char* op = "embedding";
  XPSR_CHECK(a.table, ErrorCode::InvalidArgument, op, ": table is null");
  const auto* t = dynamic_cast<const CpuWeight*>(a.table);
  XPSR_CHECK(t && t->kind == WeightKind::Embedding, ErrorCode::InvalidArgument, op, ": table '", a.table->name,
             "' is not an Embedding weight of the CPU backend");
  XPSR_CHECK(a.n >= 0, ErrorCode::InvalidArgument, op, ": n must be >= 0, got ", a.n);
  if (a.n == 0) return;
  check_ptr(a.ids, op, "ids");
  check_ptr(a.y, op, "y");
  const int64_t rows = t->shape[0];
  for (int i = 0; i < a.n; ++i)
    XPSR_CHECK(a.ids[i] >= 0 && a.ids[i] < rows, ErrorCode::InvalidArgument, op, ": id ", a.ids[i], " at ", i,
               " is outside table '", t->name, "' with ", rows, " rows");
  std::lock_guard<std::mutex> lock(op_mutex_);
  embedding_op(ctx_, a, t->data, rows, t->shape[1]);
}

}  // namespace
}  // namespace cpu

std::unique_ptr<Backend> make_cpu_backend(int threads) { return std::make_unique<cpu::CpuBackend>(threads); }

}  // namespace xpsr
