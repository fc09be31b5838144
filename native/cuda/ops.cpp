// CudaBackend ops: argument validation (xpsr::Error naming the op, the weight and the shapes), weight ->
// device pointer, launch on the backend stream (kernels.h), launch-status check. Nothing here allocates or
// synchronises (except embedding outside a capture, see below), so every op can be captured into a graph.
// Test: native/cuda/*_test.cu.
#include <cuda_runtime.h>

#include <cstring>
#include <sstream>

#include "backend_impl.h"
#include "check.h"

namespace xpsr::cuda {

namespace {

const CudaWeight* weight_of(const Weight* w, WeightKind kind, const char* op, const char* role) {
  XPSR_CHECK(w != nullptr, ErrorCode::InvalidArgument, op, ": ", role, " weight is null");
  const auto* cw = dynamic_cast<const CudaWeight*>(w);
  XPSR_CHECK(cw != nullptr, ErrorCode::InvalidArgument, op, ": weight ", w->name,
             " was not uploaded to this CUDA backend");
  XPSR_CHECK(cw->kind == kind, ErrorCode::InvalidArgument, op, ": weight ", w->name, " has the wrong kind for ", role);
  return cw;
}

int64_t numel(const Weight* w) {
  int64_t n = 1;
  for (auto d : w->shape) n *= d;
  return n;
}

const float* vector_of(const Weight* w, int64_t n, const char* op, const char* role) {
  if (!w) return nullptr;
  const CudaWeight* cw = weight_of(w, WeightKind::Vector, op, role);
  XPSR_CHECK(numel(w) == n, ErrorCode::ShapeMismatch, op, ": ", role, " ", w->name, " has shape ", shape_str(w->shape),
             ", expected [", n, "]");
  return static_cast<const float*>(cw->dev);
}

const uint16_t* at(const void* p, size_t off) { return static_cast<const uint16_t*>(p) + off; }
uint16_t* at(void* p, size_t off) { return static_cast<uint16_t*>(p) + off; }

std::string conv_desc(const Conv2dArgs& a) {
  std::ostringstream o;
  o << "x [" << a.N << ", " << a.H << ", " << a.W << ", " << a.C << "] (NHWC), weight " << (a.w ? a.w->name : "?")
    << " [" << a.K << ", " << a.C << ", " << a.R << ", " << a.S << "], stride " << a.stride << ", pad (t" << a.pad_top
    << " l" << a.pad_left << " b" << a.pad_bottom << " r" << a.pad_right << ") -> [" << a.N << ", " << a.P << ", "
    << a.Q << ", " << a.K << "]";
  return o.str();
}

}  // namespace

template <typename F>
void CudaBackend::after_launch(cudaError_t e, const char* op, F&& describe) {
  if (e != cudaSuccess) throw_cuda(e, std::string(op) + " " + describe());
  if (sync_each_op_ && !capturing_) {
    e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess) throw_cuda(e, std::string(op) + " " + describe() + " (fault while running)");
  }
}

void CudaBackend::conv2d(const Conv2dArgs& a) {
  make_current();
  const CudaWeight* w = weight_of(a.w, WeightKind::Conv, "conv2d", "conv");
  XPSR_CHECK(a.x && a.y, ErrorCode::InvalidArgument, "conv2d: null x or y (", conv_desc(a), ")");
  XPSR_CHECK(a.N > 0 && a.H > 0 && a.W > 0 && a.C > 0 && a.K > 0 && a.R > 0 && a.S > 0 && a.stride > 0 &&
                 a.pad_top >= 0 && a.pad_left >= 0 && a.pad_bottom >= 0 && a.pad_right >= 0,
             ErrorCode::InvalidArgument, "conv2d: bad sizes: ", conv_desc(a));
  XPSR_CHECK(w->shape == std::vector<int64_t>({a.K, a.C, a.R, a.S}), ErrorCode::ShapeMismatch, "conv2d: weight ",
             w->name, " has shape ", shape_str(w->shape), " but the call needs ", conv_desc(a));
  const int P = (a.H + a.pad_top + a.pad_bottom - a.R) / a.stride + 1;
  const int Q = (a.W + a.pad_left + a.pad_right - a.S) / a.stride + 1;
  XPSR_CHECK(a.P == P && a.Q == Q && P > 0 && Q > 0, ErrorCode::ShapeMismatch, "conv2d: output size ", a.P, "x", a.Q,
             " does not match the input and padding (expected ", P, "x", Q, "): ", conv_desc(a));
  ConvArgs c;
  c.x = a.x;
  c.N = a.N;
  c.H = a.H;
  c.W = a.W;
  c.C = a.C;
  c.w = w->dev;
  c.Cp = w->inner_pad;
  c.bias = vector_of(a.b, a.K, "conv2d", "bias");
  c.K = a.K;
  c.R = a.R;
  c.S = a.S;
  c.stride = a.stride;
  c.pad_top = a.pad_top;
  c.pad_left = a.pad_left;
  c.residual = a.residual;
  c.y = a.y;
  c.P = a.P;
  c.Q = a.Q;
  after_launch(launch_conv2d(c, caps_, ws_, stream_), "conv2d", [&] { return conv_desc(a); });
}

void CudaBackend::linear(const LinearArgs& a) {
  make_current();
  const CudaWeight* w = weight_of(a.w, WeightKind::Linear, "linear", "linear");
  auto desc = [&] {
    std::ostringstream o;
    o << "x [" << a.M << ", " << a.K << "] (ldx " << a.ldx << "), weight " << w->name << " " << shape_str(w->shape)
      << " -> y [" << a.M << ", " << a.N << "] (ldy " << a.ldy << ")" << (a.residual ? " + residual" : "");
    return o.str();
  };
  XPSR_CHECK(w->shape == std::vector<int64_t>({a.N, a.K}), ErrorCode::ShapeMismatch, "linear: weight has shape ",
             shape_str(w->shape), ", expected [", a.N, ", ", a.K, "]: ", desc());
  XPSR_CHECK(a.M >= 0 && a.K > 0 && a.N > 0 && a.ldx >= a.K && a.ldy >= a.N && (!a.residual || a.ldr >= a.N),
             ErrorCode::InvalidArgument, "linear: bad sizes or strides: ", desc());
  if (a.M == 0) return;
  XPSR_CHECK(a.x && a.y, ErrorCode::InvalidArgument, "linear: null x or y: ", desc());
  GemmArgs g;
  g.M = a.M;
  g.N = a.N;
  g.K = a.K;
  g.A = a.x;
  g.lda = a.ldx;
  g.B = w->dev;
  g.Kp = w->inner_pad;
  g.bias = vector_of(a.b, a.N, "linear", "bias");
  g.R = a.residual;
  g.ldr = a.ldr;
  g.Y = a.y;
  g.ldy = a.ldy;
  after_launch(launch_gemm(g, caps_, ws_, stream_), "linear", desc);
}

void CudaBackend::group_norm(const GroupNormArgs& a) {
  make_current();
  auto desc = [&] {
    std::ostringstream o;
    o << "x [" << a.N << ", " << a.HW << ", " << a.C << "], " << a.groups << " groups" << (a.silu ? " + SiLU" : "");
    return o.str();
  };
  XPSR_CHECK(a.N >= 0 && a.HW >= 0 && a.C > 0 && a.groups > 0 && a.C % a.groups == 0, ErrorCode::InvalidArgument,
             "group_norm: channels must be a multiple of groups: ", desc());
  GroupNormLaunch g;
  g.x = a.x;
  g.y = a.y;
  g.N = a.N;
  g.HW = a.HW;
  g.C = a.C;
  g.groups = a.groups;
  g.eps = a.eps;
  g.gamma = vector_of(a.gamma, a.C, "group_norm", "gamma");
  g.beta = vector_of(a.beta, a.C, "group_norm", "beta");
  g.silu = a.silu;
  XPSR_CHECK(g.gamma && g.beta, ErrorCode::InvalidArgument, "group_norm: gamma and beta are required: ", desc());
  if ((size_t)a.N * a.HW == 0) return;
  XPSR_CHECK(a.x && a.y, ErrorCode::InvalidArgument, "group_norm: null x or y: ", desc());
  XPSR_CHECK(group_norm_workspace_bytes(g, caps_, ws_.bytes) <= ws_.bytes, ErrorCode::Unsupported,
             "group_norm: too many channels for the workspace: ", desc());
  after_launch(launch_group_norm(g, caps_, ws_, stream_), "group_norm", desc);
}

void CudaBackend::layer_norm(const LayerNormArgs& a) {
  make_current();
  auto desc = [&] { return "x [" + std::to_string(a.rows) + ", " + std::to_string(a.C) + "]"; };
  XPSR_CHECK(a.rows >= 0 && a.C > 0, ErrorCode::InvalidArgument, "layer_norm: bad sizes: ", desc());
  LayerNormLaunch l;
  l.x = a.x;
  l.y = a.y;
  l.rows = a.rows;
  l.C = a.C;
  l.eps = a.eps;
  l.gamma = vector_of(a.gamma, a.C, "layer_norm", "gamma");
  l.beta = vector_of(a.beta, a.C, "layer_norm", "beta");
  XPSR_CHECK(l.gamma && l.beta, ErrorCode::InvalidArgument, "layer_norm: gamma and beta are required: ", desc());
  if (a.rows == 0) return;
  XPSR_CHECK(a.x && a.y, ErrorCode::InvalidArgument, "layer_norm: null x or y: ", desc());
  after_launch(launch_layer_norm(l, stream_), "layer_norm", desc);
}

static std::string attn_desc(const AttentionArgs& a) {
  std::ostringstream o;
  o << "B " << a.B << ", Lq " << a.Lq << ", Lk " << a.Lk << ", heads " << a.heads << " x " << a.head_dim
    << ", ld q/k/v/o " << a.ldq << "/" << a.ldk << "/" << a.ldv << "/" << a.ldo << (a.causal ? ", causal" : "");
  return o.str();
}

static void check_attention(const AttentionArgs& a) {
  XPSR_CHECK(a.B >= 0 && a.Lq >= 0 && a.Lk >= 1 && a.heads >= 1 && a.head_dim >= 1, ErrorCode::InvalidArgument,
             "attention: bad sizes: ", attn_desc(a));
  const int width = a.heads * a.head_dim;
  XPSR_CHECK(a.ldq >= width && a.ldk >= width && a.ldv >= width && a.ldo >= width, ErrorCode::InvalidArgument,
             "attention: row strides must be >= heads*head_dim = ", width, ": ", attn_desc(a));
  XPSR_CHECK(a.head_dim <= kGenericAttnMaxHeadDim, ErrorCode::Unsupported, "attention: head_dim ", a.head_dim,
             " is above the supported maximum ", kGenericAttnMaxHeadDim, ": ", attn_desc(a));
  XPSR_CHECK(a.q && a.k && a.v && a.o, ErrorCode::InvalidArgument, "attention: null pointer: ", attn_desc(a));
}

void CudaBackend::attention(const AttentionArgs& a) {
  make_current();
  check_attention(a);
  if ((size_t)a.B * a.Lq == 0) return;
  after_launch(launch_attention(&a, 1, caps_, stream_), "attention", [&] { return attn_desc(a); });
}

void CudaBackend::attention_multi(const AttentionArgs* problems, int count) {
  make_current();
  XPSR_CHECK(count >= 0 && (count == 0 || problems), ErrorCode::InvalidArgument, "attention_multi: bad problem list");
  bool same = true;
  for (int i = 0; i < count; ++i) {
    check_attention(problems[i]);
    same = same && problems[i].head_dim == problems[0].head_dim && problems[i].causal == problems[0].causal &&
           (size_t)problems[i].B * problems[i].Lq > 0;
  }
  if (!same) {
    for (int i = 0; i < count; ++i) attention(problems[i]);
    return;
  }
  after_launch(launch_attention(problems, count, caps_, stream_), "attention_multi", [&] {
    std::string s = std::to_string(count) + " problems, first: ";
    return count ? s + attn_desc(problems[0]) : s;
  });
}

void CudaBackend::geglu(const GegluArgs& a) {
  make_current();
  XPSR_CHECK(a.rows >= 0 && a.inner >= 0, ErrorCode::InvalidArgument, "geglu: bad sizes");
  after_launch(launch_geglu(a.x, a.y, a.rows, a.inner, stream_), "geglu",
               [&] { return "x [" + std::to_string(a.rows) + ", 2*" + std::to_string(a.inner) + "]"; });
}

void CudaBackend::unary(const UnaryArgs& a) {
  make_current();
  after_launch(launch_unary(a.x, a.y, a.n, a.op, stream_), "unary", [&] { return std::to_string(a.n) + " elements"; });
}

void CudaBackend::axpby(const AxpbyArgs& a) {
  make_current();
  after_launch(launch_axpby(a.a, a.b, a.y, a.n, a.alpha, a.beta, stream_), "axpby",
               [&] { return std::to_string(a.n) + " elements"; });
}

void CudaBackend::channel_add(const ChannelAddArgs& a) {
  make_current();
  XPSR_CHECK(a.N >= 0 && a.HW >= 0 && a.C >= 0, ErrorCode::InvalidArgument, "channel_add: bad sizes");
  after_launch(launch_channel_add(a.x, a.v, a.y, a.N, a.HW, a.C, stream_), "channel_add", [&] {
    return "x [" + std::to_string(a.N) + ", " + std::to_string(a.HW) + ", " + std::to_string(a.C) + "]";
  });
}

void CudaBackend::concat(const ConcatArgs& a) {
  make_current();
  XPSR_CHECK(a.rows >= 0 && a.Ca >= 0 && a.Cb >= 0, ErrorCode::InvalidArgument, "concat: bad sizes");
  const int ld = a.Ca + a.Cb;
  auto desc = [&] {
    return std::to_string(a.rows) + " rows of " + std::to_string(a.Ca) + " + " + std::to_string(a.Cb) + " channels";
  };
  after_launch(launch_copy_rows(a.a, a.Ca, a.y, ld, a.rows, a.Ca, stream_), "concat", desc);
  after_launch(launch_copy_rows(a.b, a.Cb, at(a.y, a.Ca), ld, a.rows, a.Cb, stream_), "concat", desc);
}

void CudaBackend::slice(const SliceArgs& a) {
  make_current();
  XPSR_CHECK(a.rows >= 0 && a.cols >= 0 && a.c0 >= 0 && a.c0 + a.cols <= a.ldx, ErrorCode::InvalidArgument,
             "slice: columns ", a.c0, "..", a.c0 + a.cols, " are outside rows of ", a.ldx);
  after_launch(launch_copy_rows(at(a.x, a.c0), a.ldx, a.y, a.cols, a.rows, a.cols, stream_), "slice", [&] {
    return std::to_string(a.rows) + " rows, columns " + std::to_string(a.c0) + "+" + std::to_string(a.cols);
  });
}

void CudaBackend::upsample_nearest(const UpsampleArgs& a) {
  make_current();
  XPSR_CHECK(a.N >= 0 && a.H > 0 && a.W > 0 && a.C >= 0 && a.P > 0 && a.Q > 0, ErrorCode::InvalidArgument,
             "upsample_nearest: bad sizes");
  after_launch(launch_upsample_nearest(a.x, a.N, a.H, a.W, a.C, a.y, a.P, a.Q, stream_), "upsample_nearest", [&] {
    std::ostringstream o;
    o << "[" << a.N << ", " << a.H << ", " << a.W << ", " << a.C << "] -> " << a.P << "x" << a.Q;
    return o.str();
  });
}

CudaBackend::IdSlot& CudaBackend::id_slot(const int32_t* ids, int n) {
  auto key = std::make_pair(ids, n);
  auto it = id_slots_.find(key);
  if (it != id_slots_.end()) return *it->second;
  auto slot = std::make_unique<IdSlot>();
  slot->src = ids;
  slot->n = n;
  void* p = nullptr;
  // REVIEW FIX: a slot is normally created by the plan's first (eager) run, but when the ids buffer moved
  // between the eager run and the capture, the slot is created while capturing; cudaHostAlloc is a
  // "potentially unsafe" call that invalidates a ThreadLocal-mode capture (-> needless eager fallback).
  // It does not touch the stream, so allow it by switching this thread to relaxed mode around it.
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  if (capturing_) (void)cudaThreadExchangeStreamCaptureMode(&mode);
  const cudaError_t ea =
      cudaHostAlloc(&p, std::max<size_t>(4, (size_t)n * 4), cudaHostAllocMapped | cudaHostAllocPortable);
  void* d = nullptr;
  const cudaError_t e = ea == cudaSuccess ? cudaHostGetDevicePointer(&d, p, 0) : cudaSuccess;
  if (e != cudaSuccess) cudaFreeHost(p);
  if (capturing_) (void)cudaThreadExchangeStreamCaptureMode(&mode);
  check(ea, "allocating pinned memory for embedding ids");
  check(e, "mapping pinned memory for embedding ids");
  slot->pinned = static_cast<int32_t*>(p);
  slot->pinned_dev = static_cast<int32_t*>(d);
  IdSlot& ref = *slot;
  id_slots_[key] = std::move(slot);
  return ref;
}

void CUDART_CB CudaBackend::copy_ids_cb(void* user) {
  const IdSlot* s = static_cast<const IdSlot*>(user);
  std::memcpy(s->pinned, s->src, (size_t)s->n * 4);
}

void CudaBackend::embedding(const EmbeddingArgs& a) {
  make_current();
  const CudaWeight* t = weight_of(a.table, WeightKind::Embedding, "embedding", "table");
  const int V = (int)t->shape[0], D = (int)t->shape[1];
  XPSR_CHECK(a.n >= 0 && (a.n == 0 || (a.ids && a.y)), ErrorCode::InvalidArgument, "embedding: bad arguments");
  if (a.n == 0) return;
  for (int i = 0; i < a.n; ++i)
    XPSR_CHECK(a.ids[i] >= 0 && a.ids[i] < V, ErrorCode::InvalidArgument, "embedding: id ", a.ids[i], " at ", i,
               " is outside table ", t->name, " ", shape_str(t->shape));
  IdSlot& slot = id_slot(a.ids, a.n);
  if (capturing_) {
    // recorded as a host node: every replay copies the caller's (fixed) ids buffer anew
    check(cudaLaunchHostFunc(stream_, &CudaBackend::copy_ids_cb, &slot), "embedding: recording the ids copy");
  } else {
    check(cudaStreamSynchronize(stream_), "embedding");  // the slot may still be read by earlier work
    std::memcpy(slot.pinned, a.ids, (size_t)a.n * 4);
  }
  after_launch(launch_embedding(t->dev, V, D, slot.pinned_dev, a.n, a.y, stream_), "embedding",
               [&] { return std::to_string(a.n) + " ids from " + t->name + " " + shape_str(t->shape); });
}

}  // namespace xpsr::cuda
