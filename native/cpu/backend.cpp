// CpuBackend: the f32, channels-last CPU implementation of native/engine/backend.h. It owns the thread
// pool and scratch (context.h), keeps weights in 64-byte aligned host memory (Linear / Conv packed into
// GEMM panels at upload, see gemm.h; as bf16 pairs in the bf16 compute mode of cpu_backend.h), checks
// every op's arguments (Error with the op and the values) and hands the op to ops.h. Ops are serialised
// by a mutex: one op, hence one plan, runs at a time.
// Test: backend_test.cpp (memory, weights, errors); the op tests exercise the rest.
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>

#include "../engine/backend.h"
#include "cpu_backend.h"
#include "dispatch.h"
#include "gemm.h"
#include "ops.h"
#include "profile.h"

namespace xpsr {
namespace cpu {
namespace {

struct CpuWeight : Weight {
  float* data = nullptr;     // f32 storage (vectors, embeddings, f32-packed Linear / Conv)
  uint32_t* bf16 = nullptr;  // bf16-pair packed Linear / Conv (bf16 compute mode); data is null then
  size_t bytes = 0;
  ~CpuWeight() override { aligned_free(data ? static_cast<void*>(data) : static_cast<void*>(bf16)); }
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

// Profile labels (profile.h); built only when profiling is on.
std::string conv_label(const Conv2dArgs& a) {
  if (!profile_enabled()) return {};
  std::ostringstream o;
  o << "conv" << a.R << "x" << a.S << (a.stride > 1 ? " s2" : "") << " C=" << a.C << " K=" << a.K;
  return o.str();
}
std::string linear_label(const LinearArgs& a) {
  if (!profile_enabled()) return {};
  std::ostringstream o;
  o << "linear M=" << a.M << " K=" << a.K << " N=" << a.N;
  return o.str();
}
std::string attention_label(const AttentionArgs& a) {
  if (!profile_enabled()) return {};
  std::ostringstream o;
  o << "attention d=" << a.head_dim << " Lq=" << a.Lq << " Lk=" << a.Lk;
  return o.str();
}
const char* unary_label(UnaryOp op) {
  switch (op) {
    case UnaryOp::Silu: return "unary silu";
    case UnaryOp::QuickGelu: return "unary quick_gelu";
    case UnaryOp::GeluErf: return "unary gelu_erf";
    case UnaryOp::LeakyRelu: return "unary leaky_relu";
  }
  return "unary";
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(int threads, CpuPrecision precision) : ctx_(threads), precision_(precision) {
    XPSR_CHECK(precision != CpuPrecision::BF16 || bf16_available(), ErrorCode::Unsupported,
               "CPU backend: bf16 compute needs a CPU with AVX512_BF16 and the AVX-512 kernel set (this CPU/build: ",
               isa_name(best_isa()), ", AVX512_BF16 ", bf16_available() ? "yes" : "no", ")");
  }

  std::string name() const override { return "cpu"; }
  std::string description() const override {
    std::ostringstream o;
    o << "CPU (" << kernels().name << ", " << ctx_.pool.size() << (ctx_.pool.size() == 1 ? " thread" : " threads")
      << (precision_ == CpuPrecision::BF16 ? ", bf16 compute)" : ")");
    return o.str();
  }
  DType act_dtype() const override { return DType::F32; }

  // Large blocks (a plan's activation arena) are touched here, at plan creation, so the first run of a
  // plan does not pay the page faults inside its ops.
  void* alloc(size_t bytes) override {
    void* p = aligned_alloc_bytes(bytes, "activations");
    if (bytes >= (1u << 20)) std::memset(p, 0, bytes);
    return p;
  }
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
  CpuPrecision precision_;
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
  const bool gemm = kind == WeightKind::Linear || kind == WeightKind::Conv;
  const int64_t K = kind == WeightKind::Linear ? shape[1]
                    : kind == WeightKind::Conv ? shape[1] * shape[2] * shape[3]
                                               : 0;
  if (gemm && precision_ == CpuPrecision::BF16) {
    w->bytes = sizeof(uint32_t) * (size_t)packed_b_words_bf16(K, shape[0]);
    w->bf16 = static_cast<uint32_t*>(aligned_alloc_bytes(w->bytes, name.c_str()));
    if (kind == WeightKind::Linear) pack_b_linear_bf16(data, shape[0], shape[1], w->bf16);
    else pack_b_conv_bf16(data, shape[0], shape[1], shape[2], shape[3], w->bf16);
  } else {
    w->bytes = sizeof(float) * (size_t)(gemm ? packed_b_floats(K, shape[0]) : count);
    w->data = static_cast<float*>(aligned_alloc_bytes(w->bytes, name.c_str()));
    if (kind == WeightKind::Linear) pack_b_linear(data, shape[0], shape[1], w->data);
    else if (kind == WeightKind::Conv) pack_b_conv(data, shape[0], shape[1], shape[2], shape[3], w->data);
    else std::memcpy(w->data, data, w->bytes);
  }
  std::lock_guard<std::mutex> lock(weight_mutex_);
  weight_bytes_ += w->bytes;
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
  ProfileScope prof(conv_label(a), 2.0 * a.N * a.P * a.Q * (double)a.K * a.C * a.R * a.S);
  conv2d_op(ctx_, a, w.data, w.bf16, b);
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
  ProfileScope prof(linear_label(a), 2.0 * a.M * (double)a.N * a.K);
  linear_op(ctx_, a, w.data, w.bf16, b);
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
  ProfileScope prof(a.silu ? "group_norm+silu" : "group_norm");
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
  ProfileScope prof("layer_norm");
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
  ProfileScope prof(attention_label(a), 4.0 * a.B * a.Lq * (double)a.Lk * a.heads * a.head_dim);
  attention_op(ctx_, a);
}

void CpuBackend::geglu(const GegluArgs& a) {
  XPSR_CHECK(a.rows >= 0 && a.inner >= 0, ErrorCode::InvalidArgument, "geglu: negative size");
  if (a.rows == 0 || a.inner == 0) return;
  check_ptr(a.x, "geglu", "x");
  check_ptr(a.y, "geglu", "y");
  std::lock_guard<std::mutex> lock(op_mutex_);
  ProfileScope prof("geglu");
  geglu_op(ctx_, a);
}

void CpuBackend::unary(const UnaryArgs& a) {
  if (a.n == 0) return;
  check_ptr(a.x, "unary", "x");
  check_ptr(a.y, "unary", "y");
  std::lock_guard<std::mutex> lock(op_mutex_);
  ProfileScope prof(unary_label(a.op));
  unary_op(ctx_, a);
}

void CpuBackend::axpby(const AxpbyArgs& a) {
  if (a.n == 0) return;
  check_ptr(a.a, "axpby", "a");
  check_ptr(a.y, "axpby", "y");
  std::lock_guard<std::mutex> lock(op_mutex_);
  ProfileScope prof("axpby");
  axpby_op(ctx_, a);
}

void CpuBackend::channel_add(const ChannelAddArgs& a) {
  XPSR_CHECK(a.N >= 0 && a.HW >= 0 && a.C >= 0, ErrorCode::InvalidArgument, "channel_add: negative size");
  if ((int64_t)a.N * a.HW * a.C == 0) return;
  check_ptr(a.x, "channel_add", "x");
  check_ptr(a.v, "channel_add", "v");
  check_ptr(a.y, "channel_add", "y");
  std::lock_guard<std::mutex> lock(op_mutex_);
  ProfileScope prof("channel_add");
  channel_add_op(ctx_, a);
}

void CpuBackend::concat(const ConcatArgs& a) {
  XPSR_CHECK(a.rows >= 0 && a.Ca >= 0 && a.Cb >= 0, ErrorCode::InvalidArgument, "concat: negative size");
  if (a.rows == 0 || a.Ca + a.Cb == 0) return;
  if (a.Ca) check_ptr(a.a, "concat", "a");
  if (a.Cb) check_ptr(a.b, "concat", "b");
  check_ptr(a.y, "concat", "y");
  std::lock_guard<std::mutex> lock(op_mutex_);
  ProfileScope prof("concat");
  concat_op(ctx_, a);
}

void CpuBackend::slice(const SliceArgs& a) {
  XPSR_CHECK(a.rows >= 0 && a.cols >= 0 && a.c0 >= 0, ErrorCode::InvalidArgument, "slice: negative size");
  if (a.rows == 0 || a.cols == 0) return;
  check_ld(a.ldx, a.c0 + a.cols, "slice", "ldx");
  check_ptr(a.x, "slice", "x");
  check_ptr(a.y, "slice", "y");
  std::lock_guard<std::mutex> lock(op_mutex_);
  ProfileScope prof("slice");
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
  ProfileScope prof("upsample_nearest");
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
  ProfileScope prof("embedding");
  embedding_op(ctx_, a, t->data, rows, t->shape[1]);
}

}  // namespace
}  // namespace cpu

std::unique_ptr<Backend> make_cpu_backend(int threads) {
  return make_cpu_backend(CpuBackendOptions{threads, cpu_precision_from_env()});
}

std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions& o) {
  return std::make_unique<cpu::CpuBackend>(o.threads, o.precision);
}

CpuPrecision cpu_precision_from_env() {
  const char* e = std::getenv("XPSR_CPU_PRECISION");
  if (!e || !*e || !std::strcmp(e, "fp32") || !std::strcmp(e, "f32")) return CpuPrecision::F32;
  if (!std::strcmp(e, "bf16")) return CpuPrecision::BF16;
  fail(ErrorCode::InvalidArgument, "XPSR_CPU_PRECISION must be fp32 or bf16, got '", e, "'");
}

bool cpu_bf16_available() { return cpu::bf16_available(); }

const char* cpu_precision_name(CpuPrecision p) { return p == CpuPrecision::BF16 ? "bf16" : "fp32"; }

}  // namespace xpsr
