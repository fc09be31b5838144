// Graph and Plan: the model code (native/engine/models) describes a forward pass once per input shape
// by calling the builder methods below; each call checks shapes, records one backend op and returns a
// handle to its result. A Plan then assigns every intermediate a slot in ONE arena by liveness (buffers
// are reused as soon as their last reader has run), resolves all pointers once, and executes the op
// list on the backend — the same addresses every run, which is what lets the CUDA backend capture the
// whole list as a CUDA graph and replay it.
//
// Shapes: every value is channels-last, Dims{n, h, w, c}; a token sequence [B, L, D] is Dims{B, 1, L, D}
// (so "feature map -> tokens" is a free reshape). Shape comments elsewhere use PyTorch order [N,C,H,W].
// Test: native/engine/graph_test.cpp.
#pragma once
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "backend.h"

namespace xpsr {

struct Dims {
  int n = 0, h = 1, w = 1, c = 0;
  size_t numel() const { return (size_t)n * h * w * c; }
  int rows() const { return n * h * w; }
  bool operator==(const Dims& o) const { return n == o.n && h == o.h && w == o.w && c == o.c; }
  std::string str() const;  // "[N,C,H,W] = [2, 320, 64, 64]"
};

struct Val {
  int id = -1;
  explicit operator bool() const { return id >= 0; }
};

struct Pad {
  int top = 1, left = 1, bottom = 1, right = 1;
  static Pad same(int p) { return {p, p, p, p}; }
};

class Graph;

// What a node sees when it runs: resolved pointers of its values.
class Exec {
 public:
  virtual ~Exec() = default;
  virtual void* ptr(Val v) const = 0;           // start of the value (its column offset applied)
  virtual int ld(Val v) const = 0;              // row stride in elements
  virtual const int32_t* ids(Val v) const = 0;  // host ids of an input_ids value
  virtual Backend& backend() const = 0;
};

class Graph {
 public:
  explicit Graph(Backend& be) : be_(be) {}
  Backend& backend() const { return be_; }

  // ---- inputs / outputs ----
  Val input(const std::string& name, Dims d);
  Val input_ids(const std::string& name, int n);  // host int32 token ids
  void output(const std::string& name, Val v);
  // Debug outputs (parity intermediates). Kept only when `keep_taps(true)` was called before building.
  void tap(const std::string& name, Val v);
  void keep_taps(bool on) { keep_taps_ = on; }
  bool keeps_taps() const { return keep_taps_; }

  const Dims& dims(Val v) const;

  // ---- ops (see backend.h for the exact math) ----
  Val conv2d(Val x, const Weight* w, const Weight* b, int stride = 1, Pad pad = Pad::same(1), Val residual = {});
  // x: any value whose last dim is K (rows = n*h*w); result has the same n,h,w and c = N.
  Val linear(Val x, const Weight* w, const Weight* b = nullptr, Val residual = {});
  Val group_norm(Val x, const Weight* gamma, const Weight* beta, int groups, float eps, bool silu);
  Val layer_norm(Val x, const Weight* gamma, const Weight* beta, float eps);
  // q: [B,1,Lq,*], k/v: [B,1,Lk,*] (may be column views); result [B,1,Lq,heads*head_dim].
  Val attention(Val q, Val k, Val v, int heads, float scale, bool causal = false);
  // Two independent attention problems with equal q shapes in one op (backend.attention_batched: one
  // launch on CUDA). Result [2B,1,Lq,C]: problem 0 in batch rows [0,B), problem 1 in [B,2B) (see rows()).
  Val attention_pair(Val q0, Val k0, Val v0, Val q1, Val k1, Val v1, int heads, float scale);
  Val geglu(Val x);
  Val unary(Val x, UnaryOp op);
  Val silu(Val x) { return unary(x, UnaryOp::Silu); }
  Val add(Val a, Val b);
  Val axpby(Val a, Val b, float alpha, float beta);
  Val scale(Val a, float s);
  Val channel_add(Val x, Val v);       // v: [N, C] as Dims{N,1,1,C}
  Val concat(Val a, Val b);            // along channels
  Val slice(Val x, int c0, int cols);  // dense copy of a column range
  Val upsample(Val x, int P, int Q);
  Val embedding(const Weight* table, Val ids);
  // Views: same memory, no op.
  Val reshape(Val x, Dims d);
  Val cols(Val x, int c0, int width);  // column view (row stride stays x's); only linear/attention read it
  Val rows(Val x, int n0, int count);  // batch entries [n0, n0+count) of a dense value (a dense view)

  // ---- internals used by Plan ----
  enum class View { None, Reshape, Cols, Rows };  // how a view value was made (exporters read it)
  struct ValInfo {
    Dims d;
    View view = View::None;
    int n0 = 0;       // Rows: first batch entry of the view
    int base = -1;    // -1: owns storage; else the value whose storage it views
    int col0 = 0;     // column offset into the base's rows
    size_t row0 = 0;  // row offset into the base (rows of the base's width; from rows())
    int ld = 0;       // row stride in elements
    bool is_ids = false;
    bool dense() const { return col0 == 0 && ld == d.c; }
  };
  // The parameters of an op, recorded for exporters (native/engine/onnx walks the node list and emits one
  // ONNX subgraph per node). Which fields an op sets: see each builder method in graph.cpp.
  struct OpAttrs {
    const Weight* w = nullptr;  // conv / linear weight, norm gamma, embedding table
    const Weight* b = nullptr;  // conv / linear bias, norm beta (may be null)
    int stride = 1;
    Pad pad;
    int groups = 0;
    float eps = 0.f;
    bool silu = false;  // group_norm followed by SiLU
    int heads = 0;
    float scale = 1.f;  // attention logit scale
    bool causal = false;
    UnaryOp unary = UnaryOp::Silu;
    float alpha = 1.f, beta = 1.f;  // axpby
    int c0 = 0, cols = 0;           // slice
    int P = 0, Q = 0;               // upsample output size
  };
  struct Node {
    std::string op;
    std::vector<int> reads;
    int writes = -1;
    double flops = 0;  // multiply-adds x 2 of GEMM-like work (conv, linear, attention), for benchmarks
    std::function<void(const Exec&)> run;
    std::vector<int> args;  // operands in the builder's argument order; -1 for an absent optional one
    OpAttrs attrs;
  };
  const std::vector<ValInfo>& values() const { return vals_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<std::pair<std::string, int>>& inputs() const { return inputs_; }
  const std::vector<std::pair<std::string, int>>& outputs() const { return outputs_; }
  int root(int id) const;

 private:
  Val new_val(Dims d);
  Val push(const char* op, std::vector<Val> reads, Dims out, std::function<void(const Exec&, Val)> fn,
           double flops = 0);
  OpAttrs& attrs_of_last() { return nodes_.back().attrs; }
  void need_dense(Val v, const char* op) const;
  Backend& be_;
  bool keep_taps_ = false;
  std::vector<ValInfo> vals_;
  std::vector<Node> nodes_;
  std::vector<std::pair<std::string, int>> inputs_, outputs_;
};

// Host-side tensor used at the engine boundary: f32 data in PyTorch layout (NCHW / [B, L, D]).
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// What a Plan of a graph would use, computed without allocating anything.
struct PlanSize {
  size_t arena_bytes = 0, naive_bytes = 0, ops = 0;
  double flops = 0;
};
PlanSize plan_size(const Graph& g);

class Plan {
 public:
  // Assigns arena slots and allocates the arena on the graph's backend.
  explicit Plan(std::unique_ptr<Graph> g);
  ~Plan();
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;

  // Inputs by name: activations in channels-last f32 (already converted), ids as int32.
  // Returns outputs (and taps) by name in channels-last f32. Throws Error(Cancelled) if `cancel` is
  // raised between ops.
  void set_input(const std::string& name, const float* nhwc, size_t n);
  void set_ids(const std::string& name, const std::vector<int32_t>& ids);
  bool has_input(const std::string& name) const { return inputs_set_.count(name) > 0; }  // uploaded at least once
  bool has_input_slot(const std::string& name) const { return input_ids_.count(name) > 0; }
  Dims input_dims(const std::string& name) const;
  void run(const std::atomic<bool>* cancel = nullptr);
  // run() timing every op (backend synchronised after each; benchmarks): adds each node's wall time in ms
  // to `ms_by_op` under its op name ("conv2d", "attention", ...).
  void run_profiled(std::map<std::string, double>& ms_by_op);
  std::vector<float> get_output(const std::string& name) const;
  Dims output_dims(const std::string& name) const;
  std::vector<std::string> output_names() const;

  size_t arena_bytes() const { return arena_bytes_; }
  size_t naive_bytes() const { return naive_bytes_; }  // sum of all value sizes (no reuse), for reporting
  size_t op_count() const { return live_nodes_.size(); }
  double flops() const;  // GEMM-like FLOPs of one run (conv, linear, attention)
  const Graph& graph() const { return *graph_; }

 private:
  class PlanExec;
  std::unique_ptr<Graph> graph_;
  std::unique_ptr<PlanExec> exec_;
  void* arena_ = nullptr;
  size_t arena_bytes_ = 0, naive_bytes_ = 0;
  std::map<std::string, int> input_ids_, output_ids_;
  std::map<int, std::vector<int32_t>> host_ids_;
  std::vector<int> live_nodes_;       // indices of the nodes that reach an output, in order
  std::set<std::string> inputs_set_;  // inputs uploaded at least once (their arena slots are never reused)
};

// NCHW <-> NHWC conversion for the engine boundary.
std::vector<float> nchw_to_nhwc(const float* src, int n, int c, int h, int w);
std::vector<float> nhwc_to_nchw(const float* src, int n, int c, int h, int w);

}  // namespace xpsr
