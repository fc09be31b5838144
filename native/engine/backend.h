// The backend-neutral op set. Model graphs (native/engine/models) are written once against these ops;
// backends (native/cpu, native/cuda) implement them and never know what a UNet is.
//
// Conventions every backend follows:
//  * Activations are dense and CHANNELS-LAST: an image tensor of logical PyTorch shape [N, C, H, W]
//    is stored as [N, H, W, C]; a token sequence [B, L, D] is the same memory as [B, 1, L, D]. So the
//    "tokens" view of a feature map is free (no transpose), and 1x1 convs / linears are plain GEMMs.
//  * The element type of activations is the backend's choice (`act_dtype()`): f32 on CPU, f16 on CUDA.
//    All reductions (GEMM accumulation, softmax, norm statistics) are done in f32.
//  * Pointers passed to ops are backend memory from `alloc()` (device memory on CUDA). Element offsets
//    into such buffers are the caller's business; `ld*` are row strides in elements.
//  * Weights are uploaded once with `upload()` from host f32 in their PyTorch file layout; the backend
//    may re-layout or convert them (e.g. conv [K,C,R,S] -> [R,S,C,K], f32 -> f16).
//  * Ops never allocate; every op may be called inside a CUDA-graph capture. Failures throw xpsr::Error.
//  * Host transfers (upload_act / download_act / upload) happen outside execute(): a plan's inputs are
//    uploaded before it runs and its outputs read after, so a captured graph holds kernels only.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../common/dtype.h"
#include "../common/error.h"

namespace xpsr {

// What a weight is used for; decides the backend's storage layout.
enum class WeightKind {
  Conv,       // [K, C, R, S] (PyTorch OIHW)
  Linear,     // [N, K] (out, in): y = x · Wᵀ
  Vector,     // [n]: biases, norm gamma/beta (kept f32 on every backend)
  Embedding,  // [V, D]: rows gathered by token id
};

// A weight resident in backend memory. Backends subclass it.
struct Weight {
  virtual ~Weight() = default;
  WeightKind kind = WeightKind::Vector;
  std::vector<int64_t> shape;  // the PyTorch shape it was uploaded with
  std::string name;            // checkpoint key, for messages
};

// ----- op arguments (all sizes in elements) ----------------------------------------------------------

// y[n,p,q,k] = sum_{c,r,s} x[n, p*stride - pad_top + r, q*stride - pad_left + s, c] * w[k,c,r,s]
//              + b[k] + residual[n,p,q,k]
// Out-of-range input positions read as zero (zero padding, possibly asymmetric: the VAE's
// downsampler pads only right/bottom). Output size: P = (H + pad_top + pad_bottom - R) / stride + 1.
struct Conv2dArgs {
  const void* x = nullptr;
  int N = 0, H = 0, W = 0, C = 0;
  const Weight* w = nullptr;  // Conv [K, C, R, S]
  const Weight* b = nullptr;  // Vector [K] or null
  int K = 0, R = 3, S = 3;
  int stride = 1;
  int pad_top = 1, pad_left = 1, pad_bottom = 1, pad_right = 1;
  const void* residual = nullptr;  // optional [N, P, Q, K], added after the bias
  void* y = nullptr;
  int P = 0, Q = 0;
};

// y[m, n] = sum_k x[m, k] * w[n, k] + b[n] + residual[m, n]
// Row strides allow reading/writing column slices of wider buffers (e.g. q|k|v packed in one row).
struct LinearArgs {
  const void* x = nullptr;
  int M = 0, K = 0, ldx = 0;  // ldx >= K
  const Weight* w = nullptr;  // Linear [N, K]
  const Weight* b = nullptr;  // Vector [N] or null
  const void* residual = nullptr;
  int ldr = 0;  // row stride of residual
  void* y = nullptr;
  int N = 0, ldy = 0;  // ldy >= N
};

// GroupNorm over channels-last x [N, HW, C]: per (n, group) mean and biased variance over
// (C/groups channels x HW positions); y = (x - mean) / sqrt(var + eps) * gamma[c] + beta[c];
// then y = silu(y) if `silu`. y may equal x.
struct GroupNormArgs {
  const void* x = nullptr;
  void* y = nullptr;
  int N = 0, HW = 0, C = 0, groups = 32;
  float eps = 1e-5f;
  const Weight* gamma = nullptr;  // Vector [C]
  const Weight* beta = nullptr;   // Vector [C]
  bool silu = false;
};

// LayerNorm over the last dim of x [rows, C] (biased variance). y may equal x.
struct LayerNormArgs {
  const void* x = nullptr;
  void* y = nullptr;
  int rows = 0, C = 0;
  float eps = 1e-5f;
  const Weight* gamma = nullptr;
  const Weight* beta = nullptr;
};

// Multi-head attention. For batch b and head h (columns h*d .. h*d+d-1 of each row):
//   O[b, i, h] = sum_j softmax_j(scale * <Q[b,i,h], K[b,j,h]> + mask(i,j)) * V[b, j, h]
// mask(i,j) = -inf for j > i when causal (CLIP), else 0. Row i of batch b of Q is at
// q + (b*Lq + i)*ldq; same for K, V (ldk, ldv, Lk) and O (ldo). Softmax in f32.
struct AttentionArgs {
  const void* q = nullptr;
  int ldq = 0;
  const void* k = nullptr;
  int ldk = 0;
  const void* v = nullptr;
  int ldv = 0;
  void* o = nullptr;
  int ldo = 0;
  int B = 0, Lq = 0, Lk = 0, heads = 1, head_dim = 0;
  float scale = 1.0f;
  bool causal = false;
};

// GEGLU: x [rows, 2*inner] = [a | g] -> y [rows, inner] = a * gelu_erf(g)   (diffusers order)
struct GegluArgs {
  const void* x = nullptr;
  void* y = nullptr;
  int rows = 0, inner = 0;
};

enum class UnaryOp {
  Silu,       // x * sigmoid(x)
  QuickGelu,  // x * sigmoid(1.702 x)   (CLIP)
  GeluErf,    // 0.5 x (1 + erf(x / sqrt 2))
  LeakyRelu,  // x >= 0 ? x : 0.2 x   (BasicSR RRDB, only with use_rrdb)
};

// y[i] = op(x[i]) for i < n. y may equal x.
struct UnaryArgs {
  const void* x = nullptr;
  void* y = nullptr;
  size_t n = 0;
  UnaryOp op = UnaryOp::Silu;
};

// y[i] = alpha * a[i] + beta * b[i] for i < n (b may be null: y = alpha * a). y may alias a or b.
struct AxpbyArgs {
  const void* a = nullptr;
  const void* b = nullptr;
  void* y = nullptr;
  size_t n = 0;
  float alpha = 1.0f, beta = 1.0f;
};

// Per-(sample, channel) add: y[n, i, c] = x[n, i, c] + v[n, c] for i < HW. (Resnet time embedding.)
// v is an activation buffer [N, C]. y may equal x.
struct ChannelAddArgs {
  const void* x = nullptr;
  const void* v = nullptr;
  void* y = nullptr;
  int N = 0, HW = 0, C = 0;
};

// Channel concat: y[r, 0:Ca] = a[r, :], y[r, Ca:Ca+Cb] = b[r, :] for r < rows (NHWC rows = N*H*W).
struct ConcatArgs {
  const void* a = nullptr;
  int Ca = 0;
  const void* b = nullptr;
  int Cb = 0;
  void* y = nullptr;
  int rows = 0;
};

// Copy a column slice: y[r, 0:cols] = x[r, c0 : c0+cols], x has row stride ldx, y is dense.
struct SliceArgs {
  const void* x = nullptr;
  int ldx = 0, c0 = 0;
  void* y = nullptr;
  int rows = 0, cols = 0;
};

// Nearest upsample to an explicit size (PyTorch 'nearest'): y[n, p, q, c] = x[n, floor(p*H/P), floor(q*W/Q), c]
// (source index clamped to H-1 / W-1). P = 2H, Q = 2W in the common case; any size otherwise.
struct UpsampleArgs {
  const void* x = nullptr;
  int N = 0, H = 0, W = 0, C = 0;
  void* y = nullptr;
  int P = 0, Q = 0;
};

// Row gather: y[i, :] = table[ids[i], :] for i < n. `ids` is HOST memory (token ids, bounds-checked by
// the caller against the table's rows).
struct EmbeddingArgs {
  const Weight* table = nullptr;  // Embedding [V, D]
  const int32_t* ids = nullptr;
  int n = 0;
  void* y = nullptr;
};

// ----- the backend interface ------------------------------------------------------------------------

class Backend {
 public:
  virtual ~Backend() = default;

  // "cpu", "cuda:0" ... and a human description ("CPU (AVX2, 2 threads)", "NVIDIA H100 80GB HBM3").
  virtual std::string name() const = 0;
  virtual std::string description() const = 0;
  virtual DType act_dtype() const = 0;  // element type of activations (F32 or F16)

  // Memory. alloc throws Error(OutOfMemory) on failure; free(nullptr) is a no-op.
  virtual void* alloc(size_t bytes) = 0;
  virtual void free(void* p) = 0;
  // Host f32 <-> backend activations (converting to/from act_dtype). `dst`/`src` backend pointers.
  virtual void upload_act(void* dst, const float* src, size_t n) = 0;
  virtual void download_act(float* dst, const void* src, size_t n) = 0;
  virtual void fill_zero(void* dst, size_t n) = 0;  // n elements of act_dtype

  // Weights: `data` is host f32 in PyTorch layout with `shape`; the backend keeps its own copy.
  virtual std::shared_ptr<Weight> upload(const std::string& name, WeightKind kind, const std::vector<int64_t>& shape,
                                         const float* data) = 0;
  // Bytes of backend memory held by weights uploaded so far (for reporting).
  virtual size_t weight_bytes() const = 0;

  // Ops.
  virtual void conv2d(const Conv2dArgs& a) = 0;
  virtual void linear(const LinearArgs& a) = 0;
  virtual void group_norm(const GroupNormArgs& a) = 0;
  virtual void layer_norm(const LayerNormArgs& a) = 0;
  virtual void attention(const AttentionArgs& a) = 0;
  // Several independent attention problems (e.g. the high- and low-level branches of a Semantic-Fusion
  // Attention unit, which read the same input). Backends that can run them in one launch override this.
  virtual void attention_multi(const AttentionArgs* problems, int count) {
    for (int i = 0; i < count; ++i) attention(problems[i]);
  }
  virtual void geglu(const GegluArgs& a) = 0;
  virtual void unary(const UnaryArgs& a) = 0;
  virtual void axpby(const AxpbyArgs& a) = 0;
  virtual void channel_add(const ChannelAddArgs& a) = 0;
  virtual void concat(const ConcatArgs& a) = 0;
  virtual void slice(const SliceArgs& a) = 0;
  virtual void upsample_nearest(const UpsampleArgs& a) = 0;
  virtual void embedding(const EmbeddingArgs& a) = 0;

  // Runs `launch_all` (which issues every op of one plan, in order) and waits for completion.
  // CPU: just calls it. CUDA: the first call for a `plan_id` runs eagerly, the second captures a CUDA
  // graph, later calls replay it (pointers inside a plan are fixed by construction). The plan's
  // launcher checks the cancel flag between ops (on CUDA that only matters for eager runs).
  virtual void execute(const void* plan_id, const std::function<void()>& launch_all) = 0;
  // Forget captured state of a plan (called when a plan is destroyed). Optional.
  virtual void forget_plan(const void* /*plan_id*/) {}
  virtual void synchronize() = 0;
};

// Creates the CPU backend (native/cpu). threads <= 0: all hardware threads.
std::unique_ptr<Backend> make_cpu_backend(int threads = 0);

}  // namespace xpsr
