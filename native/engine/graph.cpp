// Graph builder (shape checks + op recording) and Plan (liveness-based arena assignment + execution).
#include "graph.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <sstream>

namespace xpsr {

std::string Dims::str() const {
  std::ostringstream o;
  if (h == 1 && c > 0 && n > 0 && w > 1) o << "[B,L,D] = [" << n << ", " << w << ", " << c << "]";
  else o << "[N,C,H,W] = [" << n << ", " << c << ", " << h << ", " << w << "]";
  return o.str();
}

static void shape_fail(const char* op, const std::string& what) { fail(ErrorCode::ShapeMismatch, op, ": ", what); }

Val Graph::new_val(Dims d) {
  if (d.n <= 0 || d.h <= 0 || d.w <= 0 || d.c <= 0) fail(ErrorCode::InvalidArgument, "empty tensor ", d.str());
  // Row counts are ints in the ops (n*h*w); element counts stay far below what size_t arithmetic allows.
  if ((int64_t)d.n * d.h * d.w > INT32_MAX || (int64_t)d.n * d.h * d.w * d.c > (int64_t(1) << 40))
    fail(ErrorCode::ShapeMismatch, "tensor ", d.str(), " is too large");
  ValInfo vi;
  vi.d = d;
  vi.ld = d.c;
  vals_.push_back(vi);
  return Val{(int)vals_.size() - 1};
}

int Graph::root(int id) const {
  while (vals_[id].base >= 0) id = vals_[id].base;
  return id;
}

const Dims& Graph::dims(Val v) const {
  if (v.id < 0 || v.id >= (int)vals_.size()) fail(ErrorCode::Internal, "graph: invalid value handle");
  return vals_[v.id].d;
}

void Graph::need_dense(Val v, const char* op) const {
  if (!vals_[v.id].dense()) fail(ErrorCode::Internal, op, ": input must be a dense tensor, not a column view");
}

Val Graph::push(const char* op, std::vector<Val> reads, Dims out, std::function<void(const Exec&, Val)> fn,
                double flops) {
  Val y = new_val(out);
  Node n;
  n.op = op;
  for (auto r : reads) {
    if (r) n.reads.push_back(r.id);
    n.args.push_back(r ? r.id : -1);
  }
  n.writes = y.id;
  n.flops = flops;
  n.run = [fn, y](const Exec& e) { fn(e, y); };
  nodes_.push_back(std::move(n));
  return y;
}

Val Graph::input(const std::string& name, Dims d) {
  Val v = new_val(d);
  inputs_.push_back({name, v.id});
  return v;
}

Val Graph::input_ids(const std::string& name, int n) {
  Val v = new_val(Dims{1, 1, n, 1});
  vals_[v.id].is_ids = true;
  inputs_.push_back({name, v.id});
  return v;
}

void Graph::output(const std::string& name, Val v) {
  dims(v);
  outputs_.push_back({name, v.id});
}

void Graph::tap(const std::string& name, Val v) {
  if (keep_taps_) output(name, v);
}

Val Graph::reshape(Val x, Dims d) {
  dims(x);
  const ValInfo xi = vals_[x.id];
  if (!xi.dense()) fail(ErrorCode::Internal, "reshape of a column view");
  if (d.numel() != xi.d.numel()) shape_fail("reshape", xi.d.str() + " to " + d.str());
  ValInfo vi;
  vi.d = d;
  vi.view = View::Reshape;
  vi.base = x.id;
  vi.ld = d.c;
  vals_.push_back(vi);
  return Val{(int)vals_.size() - 1};
}

Val Graph::cols(Val x, int c0, int width) {
  dims(x);
  const ValInfo xi = vals_[x.id];
  if (c0 < 0 || width <= 0 || c0 + width > xi.d.c) shape_fail("cols", "columns out of range");
  ValInfo vi;
  vi.d = xi.d;
  vi.d.c = width;
  vi.view = View::Cols;
  vi.base = x.id;
  vi.col0 = c0;
  vi.ld = xi.ld;
  vals_.push_back(vi);
  return Val{(int)vals_.size() - 1};
}

Val Graph::rows(Val x, int n0, int count) {
  dims(x);
  const ValInfo xi = vals_[x.id];
  if (!xi.dense()) fail(ErrorCode::Internal, "rows of a column view");
  if (n0 < 0 || count <= 0 || n0 + count > xi.d.n) shape_fail("rows", "batch range out of range");
  ValInfo vi;
  vi.d = xi.d;
  vi.d.n = count;
  vi.view = View::Rows;
  vi.n0 = n0;
  vi.base = x.id;
  vi.row0 = (size_t)n0 * xi.d.h * xi.d.w;
  vi.ld = xi.ld;
  vals_.push_back(vi);
  return Val{(int)vals_.size() - 1};
}

static void check_weight(const char* op, const Weight* w, WeightKind kind) {
  if (!w) fail(ErrorCode::Internal, op, ": missing weight");
  if (w->kind != kind) fail(ErrorCode::Internal, op, ": weight '", w->name, "' has the wrong kind");
}

Val Graph::conv2d(Val x, const Weight* w, const Weight* b, int stride, Pad pad, Val residual) {
  check_weight("conv2d", w, WeightKind::Conv);
  need_dense(x, "conv2d");
  Dims xd = dims(x);
  int K = (int)w->shape[0], C = (int)w->shape[1], R = (int)w->shape[2], S = (int)w->shape[3];
  if (C != xd.c)
    shape_fail("conv2d", "weight '" + w->name + "' " + shape_str(w->shape) + " expects " + std::to_string(C) +
                             " input channels, input is " + xd.str());
  int P = (xd.h + pad.top + pad.bottom - R) / stride + 1, Q = (xd.w + pad.left + pad.right - S) / stride + 1;
  Dims yd{xd.n, P, Q, K};
  if (residual) {
    need_dense(residual, "conv2d residual");
    if (!(dims(residual) == yd)) shape_fail("conv2d", "residual " + dims(residual).str() + " vs output " + yd.str());
  }
  Val out = push(
      "conv2d", {x, residual}, yd,
      [=](const Exec& e, Val y) {
        Conv2dArgs a;
        a.x = e.ptr(x);
        a.N = xd.n, a.H = xd.h, a.W = xd.w, a.C = xd.c;
        a.w = w, a.b = b, a.K = K, a.R = R, a.S = S, a.stride = stride;
        a.pad_top = pad.top, a.pad_left = pad.left, a.pad_bottom = pad.bottom, a.pad_right = pad.right;
        a.residual = residual ? e.ptr(residual) : nullptr;
        a.y = e.ptr(y), a.P = P, a.Q = Q;
        e.backend().conv2d(a);
      },
      2.0 * xd.n * P * Q * (double)K * C * R * S);
  OpAttrs& A = attrs_of_last();
  A.w = w, A.b = b, A.stride = stride, A.pad = pad;
  return out;
}

Val Graph::linear(Val x, const Weight* w, const Weight* b, Val residual) {
  check_weight("linear", w, WeightKind::Linear);
  Dims xd = dims(x);
  int N = (int)w->shape[0], K = (int)w->shape[1];
  if (K != xd.c)
    shape_fail("linear", "weight '" + w->name + "' " + shape_str(w->shape) + " expects " + std::to_string(K) +
                             " input features, input has " + std::to_string(xd.c));
  Dims yd = xd;
  yd.c = N;
  if (residual && (dims(residual).rows() != yd.rows() || dims(residual).c != N))
    shape_fail("linear", "residual " + dims(residual).str() + " vs output " + yd.str());
  Val out = push(
      "linear", {x, residual}, yd,
      [=](const Exec& e, Val y) {
        LinearArgs a;
        a.x = e.ptr(x), a.M = xd.rows(), a.K = K, a.ldx = e.ld(x);
        a.w = w, a.b = b;
        a.residual = residual ? e.ptr(residual) : nullptr;
        a.ldr = residual ? e.ld(residual) : 0;
        a.y = e.ptr(y), a.N = N, a.ldy = e.ld(y);
        e.backend().linear(a);
      },
      2.0 * xd.rows() * (double)N * K);
  OpAttrs& A = attrs_of_last();
  A.w = w, A.b = b;
  return out;
}

Val Graph::group_norm(Val x, const Weight* gamma, const Weight* beta, int groups, float eps, bool silu) {
  need_dense(x, "group_norm");
  Dims xd = dims(x);
  if (groups <= 0 || xd.c % groups)
    shape_fail("group_norm", std::to_string(xd.c) + " channels in " + std::to_string(groups) + " groups");
  if (gamma->shape[0] != xd.c)
    shape_fail("group_norm",
               "weight '" + gamma->name + "' " + shape_str(gamma->shape) + " vs " + std::to_string(xd.c) + " channels");
  Val out = push("group_norm", {x}, xd, [=](const Exec& e, Val y) {
    GroupNormArgs a;
    a.x = e.ptr(x), a.y = e.ptr(y), a.N = xd.n, a.HW = xd.h * xd.w, a.C = xd.c, a.groups = groups, a.eps = eps;
    a.gamma = gamma, a.beta = beta, a.silu = silu;
    e.backend().group_norm(a);
  });
  OpAttrs& A = attrs_of_last();
  A.w = gamma, A.b = beta, A.groups = groups, A.eps = eps, A.silu = silu;
  return out;
}

Val Graph::layer_norm(Val x, const Weight* gamma, const Weight* beta, float eps) {
  need_dense(x, "layer_norm");
  Dims xd = dims(x);
  if (gamma->shape[0] != xd.c)
    shape_fail("layer_norm",
               "weight '" + gamma->name + "' " + shape_str(gamma->shape) + " vs " + std::to_string(xd.c) + " features");
  Val out = push("layer_norm", {x}, xd, [=](const Exec& e, Val y) {
    LayerNormArgs a;
    a.x = e.ptr(x), a.y = e.ptr(y), a.rows = xd.rows(), a.C = xd.c, a.eps = eps, a.gamma = gamma, a.beta = beta;
    e.backend().layer_norm(a);
  });
  OpAttrs& A = attrs_of_last();
  A.w = gamma, A.b = beta, A.eps = eps;
  return out;
}

Val Graph::attention(Val q, Val k, Val v, int heads, float scale, bool causal) {
  Dims qd = dims(q), kd = dims(k), vd = dims(v);
  if (qd.h != 1 || kd.h != 1 || vd.h != 1) fail(ErrorCode::Internal, "attention expects token sequences");
  if (qd.n != kd.n || kd.n != vd.n || kd.w != vd.w || qd.c != kd.c || kd.c != vd.c || qd.c % heads)
    shape_fail("attention",
               "q " + qd.str() + ", k " + kd.str() + ", v " + vd.str() + ", heads " + std::to_string(heads));
  Dims yd = qd;
  Val out = push(
      "attention", {q, k, v}, yd,
      [=](const Exec& e, Val y) {
        AttentionArgs a;
        a.q = e.ptr(q), a.ldq = e.ld(q), a.k = e.ptr(k), a.ldk = e.ld(k), a.v = e.ptr(v), a.ldv = e.ld(v);
        a.o = e.ptr(y), a.ldo = e.ld(y);
        a.B = qd.n, a.Lq = qd.w, a.Lk = kd.w, a.heads = heads, a.head_dim = qd.c / heads, a.scale = scale,
        a.causal = causal;
        e.backend().attention(a);
      },
      4.0 * qd.n * (double)qd.w * kd.w * qd.c);
  OpAttrs& A = attrs_of_last();
  A.heads = heads, A.scale = scale, A.causal = causal;
  return out;
}

Val Graph::attention_pair(Val q0, Val k0, Val v0, Val q1, Val k1, Val v1, int heads, float scale) {
  Dims qd[2] = {dims(q0), dims(q1)}, kd[2] = {dims(k0), dims(k1)}, vd[2] = {dims(v0), dims(v1)};
  for (int i = 0; i < 2; ++i)
    if (qd[i].h != 1 || kd[i].h != 1 || qd[i].n != kd[i].n || kd[i].n != vd[i].n || kd[i].w != vd[i].w ||
        qd[i].c != kd[i].c || kd[i].c != vd[i].c || qd[i].c % heads)
      shape_fail("attention_pair", "q " + qd[i].str() + ", k " + kd[i].str() + ", v " + vd[i].str());
  if (!(qd[0] == qd[1])) shape_fail("attention_pair", "the two queries differ: " + qd[0].str() + " vs " + qd[1].str());
  Dims yd = qd[0];
  yd.n *= 2;
  const Val q[2] = {q0, q1}, k[2] = {k0, k1}, v[2] = {v0, v1};
  double flops = 4.0 * qd[0].n * (double)qd[0].w * (kd[0].w + kd[1].w) * qd[0].c;
  Val out = push(
      "attention_pair", {q0, k0, v0, q1, k1, v1}, yd,
      [=](const Exec& e, Val y) {
        AttentionArgs a[2];
        const size_t elt = dtype_size(e.backend().act_dtype());
        for (int i = 0; i < 2; ++i) {
          a[i].q = e.ptr(q[i]), a[i].ldq = e.ld(q[i]), a[i].k = e.ptr(k[i]), a[i].ldk = e.ld(k[i]);
          a[i].v = e.ptr(v[i]), a[i].ldv = e.ld(v[i]);
          a[i].o = (char*)e.ptr(y) + (size_t)i * qd[0].n * qd[0].w * qd[0].c * elt, a[i].ldo = e.ld(y);
          a[i].B = qd[0].n, a[i].Lq = qd[0].w, a[i].Lk = kd[i].w, a[i].heads = heads, a[i].head_dim = qd[0].c / heads;
          a[i].scale = scale, a[i].causal = false;
        }
        e.backend().attention_batched(a, 2);
      },
      flops);
  OpAttrs& A = attrs_of_last();
  A.heads = heads, A.scale = scale;
  return out;
}

Val Graph::geglu(Val x) {
  need_dense(x, "geglu");
  Dims xd = dims(x);
  if (xd.c % 2) shape_fail("geglu", "odd width " + std::to_string(xd.c));
  Dims yd = xd;
  yd.c = xd.c / 2;
  Val out = push("geglu", {x}, yd, [=](const Exec& e, Val y) {
    GegluArgs a;
    a.x = e.ptr(x), a.y = e.ptr(y), a.rows = xd.rows(), a.inner = yd.c;
    e.backend().geglu(a);
  });
  return out;
}

Val Graph::unary(Val x, UnaryOp op) {
  need_dense(x, "unary");
  Dims xd = dims(x);
  Val out = push("unary", {x}, xd, [=](const Exec& e, Val y) {
    UnaryArgs a;
    a.x = e.ptr(x), a.y = e.ptr(y), a.n = xd.numel(), a.op = op;
    e.backend().unary(a);
  });
  OpAttrs& A = attrs_of_last();
  A.unary = op;
  return out;
}

Val Graph::axpby(Val a_, Val b_, float alpha, float beta) {
  need_dense(a_, "add");
  Dims ad = dims(a_);
  if (b_) {
    need_dense(b_, "add");
    if (dims(b_).numel() != ad.numel()) shape_fail("add", dims(a_).str() + " + " + dims(b_).str());
  }
  Val out = push("axpby", {a_, b_}, ad, [=](const Exec& e, Val y) {
    AxpbyArgs a;
    a.a = e.ptr(a_), a.b = b_ ? e.ptr(b_) : nullptr, a.y = e.ptr(y), a.n = ad.numel(), a.alpha = alpha, a.beta = beta;
    e.backend().axpby(a);
  });
  OpAttrs& A = attrs_of_last();
  A.alpha = alpha, A.beta = beta;
  return out;
}

Val Graph::add(Val a, Val b) { return axpby(a, b, 1.f, 1.f); }
Val Graph::scale(Val a, float s) { return axpby(a, Val{}, s, 0.f); }

Val Graph::channel_add(Val x, Val v) {
  need_dense(x, "channel_add");
  need_dense(v, "channel_add");
  Dims xd = dims(x), vd = dims(v);
  if (vd.n != xd.n || vd.c != xd.c || vd.h * vd.w != 1) shape_fail("channel_add", xd.str() + " + " + vd.str());
  Val out = push("channel_add", {x, v}, xd, [=](const Exec& e, Val y) {
    ChannelAddArgs a;
    a.x = e.ptr(x), a.v = e.ptr(v), a.y = e.ptr(y), a.N = xd.n, a.HW = xd.h * xd.w, a.C = xd.c;
    e.backend().channel_add(a);
  });
  return out;
}

Val Graph::concat(Val a_, Val b_) {
  need_dense(a_, "concat");
  need_dense(b_, "concat");
  Dims ad = dims(a_), bd = dims(b_);
  if (ad.n != bd.n || ad.h != bd.h || ad.w != bd.w) shape_fail("concat", ad.str() + " with " + bd.str());
  Dims yd = ad;
  yd.c = ad.c + bd.c;
  Val out = push("concat", {a_, b_}, yd, [=](const Exec& e, Val y) {
    ConcatArgs a;
    a.a = e.ptr(a_), a.Ca = ad.c, a.b = e.ptr(b_), a.Cb = bd.c, a.y = e.ptr(y), a.rows = ad.rows();
    e.backend().concat(a);
  });
  return out;
}

Val Graph::slice(Val x, int c0, int ncols) {
  Dims xd = dims(x);
  if (c0 < 0 || ncols <= 0 || c0 + ncols > xd.c) shape_fail("slice", "columns out of range");
  Dims yd = xd;
  yd.c = ncols;
  Val out = push("slice", {x}, yd, [=](const Exec& e, Val y) {
    SliceArgs a;
    a.x = e.ptr(x), a.ldx = e.ld(x), a.c0 = c0, a.y = e.ptr(y), a.rows = xd.rows(), a.cols = ncols;
    e.backend().slice(a);
  });
  OpAttrs& A = attrs_of_last();
  A.c0 = c0, A.cols = ncols;
  return out;
}

Val Graph::upsample(Val x, int P, int Q) {
  need_dense(x, "upsample");
  Dims xd = dims(x);
  Dims yd{xd.n, P, Q, xd.c};
  Val out = push("upsample", {x}, yd, [=](const Exec& e, Val y) {
    UpsampleArgs a;
    a.x = e.ptr(x), a.N = xd.n, a.H = xd.h, a.W = xd.w, a.C = xd.c, a.y = e.ptr(y), a.P = P, a.Q = Q;
    e.backend().upsample_nearest(a);
  });
  OpAttrs& A = attrs_of_last();
  A.P = P, A.Q = Q;
  return out;
}

Val Graph::embedding(const Weight* table, Val ids) {
  check_weight("embedding", table, WeightKind::Embedding);
  if (!vals_[ids.id].is_ids) fail(ErrorCode::Internal, "embedding: ids must be an input_ids value");
  int n = dims(ids).w;
  Dims yd{1, 1, n, (int)table->shape[1]};
  Val out = push("embedding", {ids}, yd, [=](const Exec& e, Val y) {
    EmbeddingArgs a;
    a.table = table, a.ids = e.ids(ids), a.n = n, a.y = e.ptr(y);
    e.backend().embedding(a);
  });
  OpAttrs& A = attrs_of_last();
  A.w = table;
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Plan

class Plan::PlanExec : public Exec {
 public:
  PlanExec(Plan& p) : p_(p) {}
  void* ptr(Val v) const override { return ptrs[v.id]; }
  int ld(Val v) const override { return p_.graph_->values()[v.id].ld; }
  const int32_t* ids(Val v) const override {
    auto it = p_.host_ids_.find(v.id);
    if (it == p_.host_ids_.end()) fail(ErrorCode::Internal, "plan: ids input not set");
    return it->second.data();
  }
  Backend& backend() const override { return p_.graph_->backend(); }
  std::vector<void*> ptrs;

 private:
  Plan& p_;
};

static size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

namespace {

// Where every value of a graph lives in its plan's arena.
struct Layout {
  std::vector<int> live_nodes;                // indices of the nodes that reach an output, in order
  std::vector<std::pair<int, size_t>> slots;  // (storage root, byte offset)
  size_t arena_bytes = 0, naive_bytes = 0;
};

Layout lay_out(const Graph& graph) {
  Layout L;
  const auto& vals = graph.values();
  const auto& all_nodes = graph.nodes();
  const size_t elt = dtype_size(graph.backend().act_dtype());
  const int nv = (int)vals.size();

  // Dead-code elimination: keep only nodes whose result (or a view of it) reaches an output.
  std::vector<char> live(nv, 0);
  for (auto& out : graph.outputs()) live[graph.root(out.second)] = 1;
  std::vector<int> keep;
  for (int i = (int)all_nodes.size() - 1; i >= 0; --i) {
    if (!live[graph.root(all_nodes[i].writes)]) continue;
    keep.push_back(i);
    for (int r : all_nodes[i].reads) live[graph.root(r)] = 1;
  }
  std::reverse(keep.begin(), keep.end());
  L.live_nodes = keep;
  const int nn = (int)keep.size();

  // Lifetime of each storage root: [first op that writes it, last op that reads it or a view of it].
  std::vector<int> first(nv, nn), last(nv, -1);
  for (auto& in : graph.inputs()) first[graph.root(in.second)] = -1;
  for (int i = 0; i < nn; ++i) {
    const auto& node = all_nodes[keep[i]];
    int w = graph.root(node.writes);
    first[w] = std::min(first[w], i);
    last[w] = std::max(last[w], i);
    for (int r : node.reads) last[graph.root(r)] = std::max(last[graph.root(r)], i);
  }
  for (auto& out : graph.outputs()) last[graph.root(out.second)] = nn;
  // Inputs live for the whole run and between runs: a caller may keep an input (e.g. the text contexts)
  // on the device across steps, so no intermediate may take its slot.
  for (auto& in : graph.inputs()) last[graph.root(in.second)] = nn;

  // Greedy placement, largest first: each buffer goes to the lowest offset that does not overlap any
  // already placed buffer alive at the same time.
  struct Slot {
    int id;
    size_t size, off;
  };
  std::vector<Slot> slots;
  for (int v = 0; v < nv; ++v) {
    if (vals[v].base >= 0 || vals[v].is_ids || last[v] < 0) continue;
    size_t bytes = align_up(vals[v].d.numel() * elt, 256);
    slots.push_back({v, bytes, 0});
    L.naive_bytes += bytes;
  }
  std::sort(slots.begin(), slots.end(), [](const Slot& a, const Slot& b) { return a.size > b.size; });
  std::vector<Slot> placed;
  for (auto& s : slots) {
    std::vector<std::pair<size_t, size_t>> busy;
    for (auto& p : placed)
      if (!(last[p.id] < first[s.id] || last[s.id] < first[p.id])) busy.push_back({p.off, p.off + p.size});
    std::sort(busy.begin(), busy.end());
    size_t off = 0;
    for (auto& b : busy) {
      if (off + s.size <= b.first) break;
      off = std::max(off, b.second);
    }
    s.off = off;
    L.arena_bytes = std::max(L.arena_bytes, off + s.size);
    placed.push_back(s);
  }
  for (auto& s : placed) L.slots.push_back({s.id, s.off});
  return L;
}

}  // namespace

PlanSize plan_size(const Graph& g) {
  Layout L = lay_out(g);
  PlanSize s;
  s.arena_bytes = L.arena_bytes, s.naive_bytes = L.naive_bytes, s.ops = L.live_nodes.size();
  for (int i : L.live_nodes) s.flops += g.nodes()[i].flops;
  return s;
}

Plan::Plan(std::unique_ptr<Graph> g) : graph_(std::move(g)) {
  const auto& vals = graph_->values();
  Backend& be = graph_->backend();
  const size_t elt = dtype_size(be.act_dtype());
  const int nv = (int)vals.size();
  Layout L = lay_out(*graph_);
  live_nodes_ = std::move(L.live_nodes);
  arena_bytes_ = L.arena_bytes, naive_bytes_ = L.naive_bytes;
  arena_ = arena_bytes_ ? be.alloc(arena_bytes_) : nullptr;

  exec_ = std::make_unique<PlanExec>(*this);
  exec_->ptrs.assign(nv, nullptr);
  for (auto& s : L.slots) exec_->ptrs[s.first] = (char*)arena_ + s.second;
  for (int v = 0; v < nv; ++v) {
    if (vals[v].base < 0) continue;
    int r = graph_->root(v);
    // Column and row offsets accumulate along view chains (elements; row0 counts rows of the view's stride).
    size_t off = 0;
    for (int u = v; vals[u].base >= 0; u = vals[u].base) off += vals[u].col0 + vals[u].row0 * vals[u].ld;
    exec_->ptrs[v] = exec_->ptrs[r] ? (char*)exec_->ptrs[r] + off * elt : nullptr;
  }
  for (auto& in : graph_->inputs()) input_ids_[in.first] = in.second;
  for (auto& out : graph_->outputs()) output_ids_[out.first] = out.second;
}

Plan::~Plan() {
  Backend& be = graph_->backend();
  be.forget_plan(this);
  if (arena_) be.free(arena_);
}

void Plan::set_input(const std::string& name, const float* nhwc, size_t n) {
  auto it = input_ids_.find(name);
  if (it == input_ids_.end()) fail(ErrorCode::Internal, "plan has no input '", name, "'");
  const auto& vi = graph_->values()[it->second];
  if (vi.is_ids || vi.d.numel() != n)
    fail(ErrorCode::ShapeMismatch, "input '", name, "' expects ", vi.d.numel(), " values ", vi.d.str(), ", got ", n);
  graph_->backend().upload_act(exec_->ptrs[it->second], nhwc, n);
  inputs_set_.insert(name);
}

Dims Plan::input_dims(const std::string& name) const {
  auto it = input_ids_.find(name);
  if (it == input_ids_.end()) fail(ErrorCode::Internal, "plan has no input '", name, "'");
  return graph_->values()[it->second].d;
}

void Plan::set_ids(const std::string& name, const std::vector<int32_t>& ids) {
  auto it = input_ids_.find(name);
  if (it == input_ids_.end()) fail(ErrorCode::Internal, "plan has no input '", name, "'");
  const auto& vi = graph_->values()[it->second];
  if (!vi.is_ids || (size_t)vi.d.w != ids.size())
    fail(ErrorCode::ShapeMismatch, "ids input '", name, "' expects ", vi.d.w, " ids, got ", ids.size());
  host_ids_[it->second] = ids;
}

void Plan::run(const std::atomic<bool>* cancel) {
  const auto& nodes = graph_->nodes();
  PlanExec& ex = *exec_;
  graph_->backend().execute(this, [&]() {
    for (int i : live_nodes_) {
      if (cancel && cancel->load(std::memory_order_relaxed)) fail(ErrorCode::Cancelled, "cancelled");
      nodes[i].run(ex);
    }
  });
}

void Plan::run_profiled(std::map<std::string, double>& ms_by_op) {
  const auto& nodes = graph_->nodes();
  PlanExec& ex = *exec_;
  Backend& be = graph_->backend();
  be.execute(this, [&]() {
    for (int i : live_nodes_) {
      auto t0 = std::chrono::steady_clock::now();
      nodes[i].run(ex);
      be.synchronize();
      ms_by_op[nodes[i].op] += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }
  });
}

double Plan::flops() const {
  double f = 0;
  for (int i : live_nodes_) f += graph_->nodes()[i].flops;
  return f;
}

std::vector<float> Plan::get_output(const std::string& name) const {
  auto it = output_ids_.find(name);
  if (it == output_ids_.end()) fail(ErrorCode::Internal, "plan has no output '", name, "'");
  const auto& vi = graph_->values()[it->second];
  std::vector<float> out(vi.d.numel());
  if (vi.dense()) {
    graph_->backend().download_act(out.data(), exec_->ptrs[it->second], out.size());
  } else {
    fail(ErrorCode::Internal, "output '", name, "' is a column view");
  }
  return out;
}

Dims Plan::output_dims(const std::string& name) const {
  auto it = output_ids_.find(name);
  if (it == output_ids_.end()) fail(ErrorCode::Internal, "plan has no output '", name, "'");
  return graph_->values()[it->second].d;
}

std::vector<std::string> Plan::output_names() const {
  std::vector<std::string> r;
  for (auto& o : graph_->outputs()) r.push_back(o.first);
  return r;
}

std::vector<float> nchw_to_nhwc(const float* src, int n, int c, int h, int w) {
  std::vector<float> out((size_t)n * c * h * w);
  for (int b = 0; b < n; ++b)
    for (int ch = 0; ch < c; ++ch)
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
          out[(((size_t)b * h + y) * w + x) * c + ch] = src[(((size_t)b * c + ch) * h + y) * w + x];
  return out;
}

std::vector<float> nhwc_to_nchw(const float* src, int n, int c, int h, int w) {
  std::vector<float> out((size_t)n * c * h * w);
  for (int b = 0; b < n; ++b)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int ch = 0; ch < c; ++ch)
          out[(((size_t)b * c + ch) * h + y) * w + x] = src[(((size_t)b * h + y) * w + x) * c + ch];
  return out;
}

}  // namespace xpsr
