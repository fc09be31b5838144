// Graph -> ONNX lowering (see lower.h for the layout and decomposition rules).
#include "lower.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstring>
#include <set>

#include "host_backend.h"

namespace xpsr::onnx {

namespace {

enum Form { CL = 0, CF = 1 };
using Shape = std::vector<int64_t>;

// Initializer variants of one engine weight.
enum class Variant { AsIs, Transposed, Conv1x1, PerChannel };

class Lowerer {
 public:
  Lowerer(const Graph& g, const LowerSpec& s) : g_(g), s_(s), names_(g.values().size()) {}
  Model run();

 private:
  const Graph& g_;
  const LowerSpec& s_;
  Model m_;
  std::vector<std::array<std::string, 2>> names_;    // per value: ONNX name in CL / CF form ("" = none yet)
  std::map<int, std::array<std::string, 2>> pairs_;  // attention_pair results: the two halves (CL)
  std::map<std::string, std::string> consts_, weights_;
  std::map<std::string, const void*> weight_owner_;   // initializer name -> (weight, variant) key, for collisions
  std::map<std::string, std::string> scalar_inputs_;  // ONNX input name -> value of type T
  int next_ = 0;
  std::string cls_ = "io";  // engine op being lowered: ONNX node names are "<engine op>/<onnx op>_<n>" (profiles)

  bool cf_mode() const { return s_.layout == Layout::CF; }
  ElemType T() const { return s_.fp16 ? ElemType::F16 : ElemType::F32; }
  const Dims& dims(int v) const { return g_.values()[v].d; }
  static int chan(Form f) { return f == CF ? 1 : 3; }

  // ---- emission helpers ----
  std::string fresh(const std::string& hint) { return hint + "_" + std::to_string(next_++); }
  std::string op(const std::string& type, std::vector<std::string> in, std::vector<Attr> attrs = {}) {
    Node n;
    n.op = type;
    n.inputs = std::move(in);
    n.outputs = {fresh(type)};
    n.name = cls_ + "/" + n.outputs[0];
    n.attrs = std::move(attrs);
    m_.nodes.push_back(std::move(n));
    return m_.nodes.back().outputs[0];
  }
  std::string cast(const std::string& x, ElemType to) { return op("Cast", {x}, {Attr::make_int("to", (int)to)}); }
  std::string to_f32(const std::string& x) { return s_.fp16 ? cast(x, ElemType::F32) : x; }
  std::string to_T(const std::string& x) { return s_.fp16 ? cast(x, ElemType::F16) : x; }

  std::string constant(const std::string& key, ElemType t, Shape d, std::string bytes) {
    auto it = consts_.find(key);
    if (it != consts_.end()) return it->second;
    Initializer in;
    in.name = "const_" + std::to_string(consts_.size());
    in.type = t, in.dims = std::move(d), in.bytes = std::move(bytes);
    m_.inits.push_back(std::move(in));
    return consts_[key] = m_.inits.back().name;
  }
  std::string ints(const Shape& v) {
    std::string key = "i64";
    for (auto x : v) key += "," + std::to_string(x);
    return constant(key, ElemType::I64, {(int64_t)v.size()}, std::string((const char*)v.data(), v.size() * 8));
  }
  std::string floats(const std::vector<float>& v, Shape d, ElemType t) {
    std::string key = t == ElemType::F16 ? "f16" : "f32";
    for (auto& x : d) key += "x" + std::to_string(x);
    key += ":";
    std::string bytes;
    for (float x : v) {
      if (t == ElemType::F16) {
        uint16_t h = f32_to_f16(x);
        bytes.append((const char*)&h, 2);
      } else {
        bytes.append((const char*)&x, 4);
      }
    }
    key += bytes;
    return constant(key, t, std::move(d), bytes);
  }
  std::string scalar(float v, ElemType t) { return floats({v}, {}, t); }
  std::string scalarT(float v) { return scalar(v, T()); }

  std::string weight(const Weight* w, Variant var, ElemType t) {
    const HostWeight& hw = host_weight(w);
    static const char* suffix[] = {"", "__T", "__1x1", "__C11"};
    std::string base = hw.owner + w->name;
    for (auto& ch : base)
      if (!(std::isalnum((unsigned char)ch) || ch == '_' || ch == '.' || ch == '/')) ch = '_';
    std::string key = base + suffix[(int)var] + (t == ElemType::F16 ? "@f16" : "");
    auto it = weights_.find(key);
    if (it != weights_.end()) return it->second;
    Initializer in;
    in.name = base + suffix[(int)var];
    in.type = t;
    in.f32 = hw.data.data();
    const auto& sh = w->shape;
    switch (var) {
      case Variant::AsIs: in.dims = sh; break;
      case Variant::Transposed: in.dims = {sh[1], sh[0]}, in.transpose2d = true; break;  // [N,K] -> [K,N]
      case Variant::Conv1x1: in.dims = {sh[0], sh[1], 1, 1}; break;
      case Variant::PerChannel: in.dims = {sh[0], 1, 1}; break;
    }
    m_.inits.push_back(std::move(in));
    return weights_[key] = m_.inits.back().name;
  }

  // Shape of value dims in a form; the batch entry becomes 0 ("copy from the input") or -1 for dynamic
  // batch reshapes.
  Shape shape4(const Dims& d, Form f) const { return f == CF ? Shape{d.n, d.c, d.h, d.w} : Shape{d.n, d.h, d.w, d.c}; }
  Shape reshape_target(Shape s, int src_n, int dst_n) const {
    if (s_.dynamic_batch) s[0] = src_n == dst_n ? 0 : -1;
    return s;
  }
  std::string reshape(const std::string& x, const Shape& target) { return op("Reshape", {x, ints(target)}); }

  // ---- values in forms ----
  bool has(int v, int f) const { return !names_[v][f].empty(); }
  Form avail(int v) const {
    if (has(v, CF) && (cf_mode() || !has(v, CL))) return CF;
    if (has(v, CL)) return CL;
    const auto& vi = g_.values()[v];
    if (vi.base < 0) return CL;
    switch (vi.view) {
      case Graph::View::Reshape: {
        const Dims& sd = dims(vi.base);
        return sd.n == vi.d.n && sd.c == vi.d.c ? avail(vi.base) : CL;
      }
      case Graph::View::Rows: return pairs_.count(vi.base) ? CL : avail(vi.base);
      default: return avail(vi.base);
    }
  }
  // The form a layout-agnostic op works in.
  Form flex(int v) const { return cf_mode() ? avail(v) : CL; }

  std::string convert(int v, Form from, Form to) {
    const std::string saved = cls_;
    cls_ = "layout";
    std::string r = convert_(v, from, to);
    cls_ = saved;
    return r;
  }
  std::string convert_(int v, Form from, Form to) {
    const Dims& d = dims(v);
    const std::string& x = names_[v][from];
    if (d.h * d.w == 1 || d.c == 1) return reshape(x, reshape_target(shape4(d, to), d.n, d.n));
    return op("Transpose", {x}, {Attr::make_ints("perm", to == CF ? Shape{0, 3, 1, 2} : Shape{0, 2, 3, 1})});
  }

  std::string need(int v, Form f) {
    if (has(v, f)) return names_[v][f];
    if (has(v, (Form)(1 - f))) return names_[v][f] = convert(v, (Form)(1 - f), f);
    const auto& vi = g_.values()[v];
    if (vi.base < 0)
      fail(ErrorCode::Internal, "onnx export of '", s_.name, "': value ", v, " is used before it is computed");
    Form src = f;
    switch (vi.view) {
      case Graph::View::Reshape: {
        const Dims& sd = dims(vi.base);
        bool cf_ok = sd.n == vi.d.n && sd.c == vi.d.c;
        src = cf_ok && avail(vi.base) == CF ? CF : CL;
        if (f == CF && cf_ok) src = CF;
        std::string x = need(vi.base, src);
        names_[v][src] = reshape(x, reshape_target(shape4(vi.d, src), sd.n, vi.d.n));
        break;
      }
      case Graph::View::Cols: {
        src = has(vi.base, f) ? f : avail(vi.base);
        std::string x = need(vi.base, src);
        names_[v][src] = op("Slice", {x, ints({vi.col0}), ints({vi.col0 + vi.d.c}), ints({chan(src)})});
        break;
      }
      case Graph::View::Rows: {
        auto it = pairs_.find(vi.base);
        if (it != pairs_.end()) {
          int half = vi.n0 / vi.d.n;
          if (vi.n0 % vi.d.n || half > 1) fail(ErrorCode::Unsupported, "onnx export: unexpected rows() view of a pair");
          src = CL;
          names_[v][CL] = it->second[half];
          break;
        }
        if (s_.dynamic_batch)
          fail(ErrorCode::Unsupported, "onnx export: a batch slice cannot be exported with a dynamic batch");
        src = avail(vi.base);
        std::string x = need(vi.base, src);
        names_[v][src] = op("Slice", {x, ints({vi.n0}), ints({vi.n0 + vi.d.n}), ints({0})});
        break;
      }
      case Graph::View::None: fail(ErrorCode::Internal, "onnx export: view without a kind");
    }
    return need(v, f);
  }
  // b in form f with a's dims (axpby operands may differ in dims, equal in size).
  std::string need_like(int b, Form f, int a) {
    std::string x = need(b, f);
    if (dims(a) == dims(b)) return x;
    return reshape(x, reshape_target(shape4(dims(a), f), dims(b).n, dims(a).n));
  }

  // ---- ops ----
  void lower_node(int index, const Graph::Node& n);
  std::string silu(const std::string& x) { return op("Mul", {x, op("Sigmoid", {x})}); }
  std::string gelu_erf(const std::string& x) {
    std::string e = op("Erf", {op("Div", {x, scalarT(std::sqrt(2.0f))})});
    return op("Mul", {op("Mul", {x, scalarT(0.5f)}), op("Add", {e, scalarT(1.f)})});
  }
  std::string attention(const std::string& q, const std::string& k, const std::string& v, const Dims& qd, int Lk,
                        const Graph::OpAttrs& a);
  std::string group_norm(int x, const Graph::OpAttrs& a, Form& f);
  void bind_inputs();
  void bind_outputs();
};

// ---- inputs -------------------------------------------------------------------------------------------

static std::vector<float> timestep_freqs(int dim, float shift) {
  // Same float32 arithmetic as timestep_features (native/engine/models/blocks.cpp).
  int half = dim / 2;
  std::vector<float> f(half);
  const float log_max = (float)std::log(10000.0);
  for (int k = 0; k < half; ++k) {
    float e = -log_max * (float)k;
    e = e / ((float)half - shift);
    f[k] = std::exp(e);
  }
  return f;
}

void Lowerer::bind_inputs() {
  std::map<std::string, int> gin;
  for (auto& in : g_.inputs()) gin[in.first] = in.second;
  std::set<std::string> declared;
  auto declare = [&](const std::string& name, ElemType t, Shape d) {
    if (!declared.insert(name).second) return;
    ValueInfo vi;
    vi.name = name, vi.type = t, vi.dims = d;
    if (s_.dynamic_batch) {
      vi.dim_params.assign(d.size(), "");
      vi.dim_params[0] = "batch";
    }
    m_.inputs.push_back(vi);
  };
  std::map<std::string, std::string> ts_features;
  for (const InputBinding& b : s_.inputs) {
    auto it = gin.find(b.graph_name);
    if (it == gin.end())
      fail(ErrorCode::Internal, "onnx export of '", s_.name, "': the graph has no input '", b.graph_name, "'");
    const int v = it->second;
    const Dims& d = dims(v);
    switch (b.kind) {
      case InputBinding::Map:
        declare(b.onnx_name, ElemType::F32, {d.n, d.c, d.h, d.w});
        names_[v][CF] = to_T(b.onnx_name);
        break;
      case InputBinding::Seq:
        declare(b.onnx_name, ElemType::F32, {d.n, d.w, d.c});
        names_[v][CL] = reshape(to_T(b.onnx_name), reshape_target({d.n, 1, d.w, d.c}, d.n, d.n));
        break;
      case InputBinding::Timestep: {
        if (b.dim % 2) fail(ErrorCode::Unsupported, "onnx export: odd timestep feature width ", b.dim);
        declare(b.onnx_name, ElemType::F32, {d.n});
        std::string key = b.onnx_name + "/" + std::to_string(b.dim) + "/" + std::to_string(b.flip_sin_to_cos) + "/" +
                          std::to_string(b.freq_shift);
        auto f = ts_features.find(key);
        if (f == ts_features.end()) {
          int half = b.dim / 2;
          std::string t = reshape(b.onnx_name, {-1, 1});
          std::string arg = op("Mul", {t, floats(timestep_freqs(b.dim, b.freq_shift), {1, half}, ElemType::F32)});
          std::string sn = op("Sin", {arg}), cs = op("Cos", {arg});
          std::string feat =
              op("Concat", {b.flip_sin_to_cos ? cs : sn, b.flip_sin_to_cos ? sn : cs}, {Attr::make_int("axis", 1)});
          f = ts_features.emplace(key, to_T(reshape(feat, reshape_target({d.n, 1, 1, b.dim}, d.n, d.n)))).first;
        }
        if (d.c != b.dim) fail(ErrorCode::Internal, "onnx export: timestep feature width mismatch");
        names_[v][CL] = f->second;
        break;
      }
      case InputBinding::Ids: {
        int B = d.w / b.seq_len;
        declare(b.onnx_name, ElemType::I64, {B, b.seq_len});
        names_[v][CL] = b.onnx_name;
        break;
      }
      case InputBinding::Positions: {
        Shape pos(b.seq_len);
        for (int i = 0; i < b.seq_len; ++i) pos[i] = i;
        names_[v][CL] = constant("positions" + std::to_string(b.seq_len), ElemType::I64, {1, b.seq_len},
                                 std::string((const char*)pos.data(), pos.size() * 8));
        break;
      }
    }
  }
  for (auto& kv : s_.scalar_inputs) {
    if (scalar_inputs_.count(kv.second)) continue;
    declare(kv.second, ElemType::F32, {1});
    if (s_.dynamic_batch) m_.inputs.back().dim_params.assign(1, "");
    scalar_inputs_[kv.second] = to_T(kv.second);
  }
}

void Lowerer::bind_outputs() {
  std::map<std::string, int> gout;
  for (auto& o : g_.outputs()) gout[o.first] = o.second;
  for (const OutputBinding& b : s_.outputs) {
    auto it = gout.find(b.graph_name);
    if (it == gout.end())
      fail(ErrorCode::Internal, "onnx export of '", s_.name, "': the graph has no output '", b.graph_name, "'");
    const int v = it->second;
    const Dims& d = dims(v);
    std::string x;
    Shape shape;
    switch (b.kind) {
      case OutputBinding::Map: x = need(v, CF), shape = {d.n, d.c, d.h, d.w}; break;
      case OutputBinding::Seq:
        shape = {d.n, (int64_t)d.h * d.w, d.c};
        x = reshape(need(v, CL), reshape_target(shape, d.n, d.n));
        break;
      case OutputBinding::Vec:
        shape = {d.n, (int64_t)d.h * d.w * d.c};
        x = reshape(need(v, CL), reshape_target(shape, d.n, d.n));
        break;
    }
    Node n;
    n.op = s_.fp16 ? "Cast" : "Identity";
    if (s_.fp16) n.attrs.push_back(Attr::make_int("to", (int)ElemType::F32));
    n.inputs = {x};
    n.outputs = {b.onnx_name};
    n.name = "output_" + b.onnx_name;
    m_.nodes.push_back(n);
    ValueInfo vi;
    vi.name = b.onnx_name, vi.type = ElemType::F32, vi.dims = shape;
    if (s_.dynamic_batch) {
      vi.dim_params.assign(shape.size(), "");
      vi.dim_params[0] = "batch";
    }
    m_.outputs.push_back(vi);
  }
}

// ---- ops ----------------------------------------------------------------------------------------------

std::string Lowerer::attention(const std::string& q, const std::string& k, const std::string& v, const Dims& qd, int Lk,
                               const Graph::OpAttrs& a) {
  // q [B,1,Lq,C], k/v [B,1,Lk,C] -> heads [B,h,L,d]; softmax(scale * q k^T + mask) v
  const int B = qd.n, Lq = qd.w, C = qd.c, H = a.heads, D = C / H;
  const int64_t b0 = s_.dynamic_batch ? 0 : B;
  std::string qh = op("Transpose", {reshape(q, {b0, Lq, H, D})}, {Attr::make_ints("perm", {0, 2, 1, 3})});
  std::string kh = op("Transpose", {reshape(k, {b0, Lk, H, D})}, {Attr::make_ints("perm", {0, 2, 3, 1})});
  std::string vh = op("Transpose", {reshape(v, {b0, Lk, H, D})}, {Attr::make_ints("perm", {0, 2, 1, 3})});
  std::string s = to_f32(op("MatMul", {op("Mul", {qh, scalarT(a.scale)}), kh}));  // [B,h,Lq,Lk]
  if (a.causal) {
    std::vector<float> mask((size_t)Lq * Lk, 0.f);
    for (int i = 0; i < Lq; ++i)
      for (int j = i + 1; j < Lk; ++j) mask[(size_t)i * Lk + j] = -1e30f;
    s = op("Add", {s, floats(mask, {Lq, Lk}, ElemType::F32)});
  }
  std::string p = to_T(op("Softmax", {s}, {Attr::make_int("axis", -1)}));
  std::string o = op("Transpose", {op("MatMul", {p, vh})}, {Attr::make_ints("perm", {0, 2, 1, 3})});  // [B,Lq,h,d]
  return reshape(o, {b0, 1, Lq, C});
}

std::string Lowerer::group_norm(int x, const Graph::OpAttrs& a, Form& f) {
  const Dims& d = dims(x);
  const int G = a.groups;
  const int64_t n0 = s_.dynamic_batch ? 0 : d.n;
  std::string y;
  if (cf_mode()) {
    f = CF;
    std::string r = reshape(to_f32(need(x, CF)), {n0, G, -1});
    std::string ones = floats(std::vector<float>(G, 1.f), {G}, ElemType::F32);
    std::string zeros = floats(std::vector<float>(G, 0.f), {G}, ElemType::F32);
    r = op("InstanceNormalization", {r, ones, zeros}, {Attr::make_float("epsilon", a.eps)});
    y = reshape(r, {n0, d.c, d.h, d.w});
    y = op("Mul", {y, weight(a.w, Variant::PerChannel, ElemType::F32)});
    y = op("Add", {y, weight(a.b, Variant::PerChannel, ElemType::F32)});
  } else {
    f = CL;
    std::string r = reshape(to_f32(need(x, CL)), {n0, (int64_t)d.h * d.w, G, d.c / G});
    std::vector<Attr> red{Attr::make_ints("axes", {1, 3}), Attr::make_int("keepdims", 1)};
    std::string mean = op("ReduceMean", {r}, red);
    std::string dev = op("Sub", {r, mean});
    std::string var = op("ReduceMean", {op("Mul", {dev, dev})}, red);
    std::string den = op("Sqrt", {op("Add", {var, scalar(a.eps, ElemType::F32)})});
    y = reshape(op("Div", {dev, den}), {n0, d.h, d.w, d.c});
    y = op("Mul", {y, weight(a.w, Variant::AsIs, ElemType::F32)});
    y = op("Add", {y, weight(a.b, Variant::AsIs, ElemType::F32)});
  }
  y = to_T(y);
  return a.silu ? silu(y) : y;
}

void Lowerer::lower_node(int index, const Graph::Node& n) {
  const Graph::OpAttrs& a = n.attrs;
  const int y = n.writes;
  const Dims& yd = dims(y);
  auto arg = [&](size_t i) { return i < n.args.size() ? n.args[i] : -1; };
  Form f = CL;
  std::string out;
  if (n.op == "conv2d") {
    const Weight* w = a.w;
    std::vector<std::string> in{need(arg(0), CF), weight(w, Variant::AsIs, T())};
    if (a.b) in.push_back(weight(a.b, Variant::AsIs, T()));
    out = op(
        "Conv", in,
        {Attr::make_ints("kernel_shape", {w->shape[2], w->shape[3]}), Attr::make_ints("strides", {a.stride, a.stride}),
         Attr::make_ints("pads", {a.pad.top, a.pad.left, a.pad.bottom, a.pad.right}),
         Attr::make_ints("dilations", {1, 1}), Attr::make_int("group", 1)});
    f = CF;
    if (!cf_mode()) {
      out = op("Transpose", {out}, {Attr::make_ints("perm", {0, 2, 3, 1})});
      f = CL;
    }
    if (arg(1) >= 0) out = op("Add", {out, need(arg(1), f)});
  } else if (n.op == "linear") {
    f = flex(arg(0));
    std::string x = need(arg(0), f);
    if (f == CF) {
      std::vector<std::string> in{x, weight(a.w, Variant::Conv1x1, T())};
      if (a.b) in.push_back(weight(a.b, Variant::AsIs, T()));
      out = op("Conv", in, {Attr::make_ints("kernel_shape", {1, 1})});
    } else {
      out = op("MatMul", {x, weight(a.w, Variant::Transposed, T())});
      if (a.b) out = op("Add", {out, weight(a.b, Variant::AsIs, T())});
    }
    if (arg(1) >= 0) out = op("Add", {out, need_like(arg(1), f, y)});
  } else if (n.op == "group_norm") {
    out = group_norm(arg(0), a, f);
  } else if (n.op == "layer_norm") {
    f = CL;
    out = op("LayerNormalization",
             {to_f32(need(arg(0), CL)), weight(a.w, Variant::AsIs, ElemType::F32),
              weight(a.b, Variant::AsIs, ElemType::F32)},
             {Attr::make_int("axis", -1), Attr::make_float("epsilon", a.eps)});
    out = to_T(out);
  } else if (n.op == "attention") {
    f = CL;
    out = attention(need(arg(0), CL), need(arg(1), CL), need(arg(2), CL), dims(arg(0)), dims(arg(1)).w, a);
  } else if (n.op == "attention_pair") {
    std::array<std::string, 2> halves;
    for (int i = 0; i < 2; ++i)
      halves[i] = attention(need(arg(3 * i), CL), need(arg(3 * i + 1), CL), need(arg(3 * i + 2), CL), dims(arg(3 * i)),
                            dims(arg(3 * i + 1)).w, a);
    pairs_[y] = halves;  // read through rows() views (Transformer2D pairs), never whole
    return;
  } else if (n.op == "geglu") {
    f = flex(arg(0));
    std::string x = need(arg(0), f);
    const int inner = yd.c, ax = chan(f);
    std::string lin = op("Slice", {x, ints({0}), ints({inner}), ints({ax})});
    std::string gate = op("Slice", {x, ints({inner}), ints({2 * inner}), ints({ax})});
    out = op("Mul", {lin, gelu_erf(gate)});
  } else if (n.op == "unary") {
    f = flex(arg(0));
    std::string x = need(arg(0), f);
    switch (a.unary) {
      case UnaryOp::Silu: out = silu(x); break;
      case UnaryOp::QuickGelu: out = op("Mul", {x, op("Sigmoid", {op("Mul", {x, scalarT(1.702f)})})}); break;
      case UnaryOp::GeluErf: out = gelu_erf(x); break;
      case UnaryOp::LeakyRelu: out = op("LeakyRelu", {x}, {Attr::make_float("alpha", 0.2f)}); break;
    }
  } else if (n.op == "axpby") {
    f = flex(arg(0));
    std::string x = need(arg(0), f);
    auto sc = s_.scalar_inputs.find(index);
    if (sc != s_.scalar_inputs.end()) {
      out = op("Mul", {x, scalar_inputs_.at(sc->second)});
    } else {
      std::string ta = a.alpha == 1.f ? x : op("Mul", {x, scalarT(a.alpha)});
      if (arg(1) >= 0) {
        std::string b = need_like(arg(1), f, arg(0));
        std::string tb = a.beta == 1.f ? b : op("Mul", {b, scalarT(a.beta)});
        out = op("Add", {ta, tb});
      } else {
        out = ta;
      }
    }
  } else if (n.op == "channel_add") {
    f = flex(arg(0));
    out = op("Add", {need(arg(0), f), need(arg(1), f)});
  } else if (n.op == "concat") {
    f = flex(arg(0));
    out = op("Concat", {need(arg(0), f), need(arg(1), f)}, {Attr::make_int("axis", chan(f))});
  } else if (n.op == "slice") {
    f = flex(arg(0));
    out = op("Slice", {need(arg(0), f), ints({a.c0}), ints({a.c0 + a.cols}), ints({chan(f)})});
  } else if (n.op == "upsample") {
    f = cf_mode() ? CF : CL;
    std::string x = need(arg(0), f);
    const Dims& xd = dims(arg(0));
    const int hax = f == CF ? 2 : 1, wax = hax + 1;
    if (a.P == 2 * xd.h && a.Q == 2 * xd.w) {
      std::vector<float> sc = f == CF ? std::vector<float>{1, 1, 2, 2} : std::vector<float>{1, 2, 2, 1};
      out = op("Resize", {x, "", floats(sc, {4}, ElemType::F32)},
               {Attr::make_string("mode", "nearest"), Attr::make_string("coordinate_transformation_mode", "asymmetric"),
                Attr::make_string("nearest_mode", "floor")});
    } else {  // any size: source index floor(p * H / P), as the backends
      Shape ih(a.P), iw(a.Q);
      for (int p = 0; p < a.P; ++p) ih[p] = std::min<int64_t>((int64_t)p * xd.h / a.P, xd.h - 1);
      for (int q = 0; q < a.Q; ++q) iw[q] = std::min<int64_t>((int64_t)q * xd.w / a.Q, xd.w - 1);
      out = op("Gather", {x, ints(ih)}, {Attr::make_int("axis", hax)});
      out = op("Gather", {out, ints(iw)}, {Attr::make_int("axis", wax)});
    }
  } else if (n.op == "embedding") {
    f = CL;
    out = op("Gather", {weight(a.w, Variant::AsIs, T()), need(arg(0), CL)}, {Attr::make_int("axis", 0)});
  } else {
    fail(ErrorCode::Unsupported, "onnx export: no lowering for op '", n.op, "'");
  }
  names_[y][f] = out;
}

Model Lowerer::run() {
  m_.graph_name = s_.name;
  // Nodes that reach a bound output (as Plan's dead-code elimination).
  const auto& nodes = g_.nodes();
  std::vector<char> live(g_.values().size(), 0);
  for (auto& b : s_.outputs)
    for (auto& o : g_.outputs())
      if (o.first == b.graph_name) live[g_.root(o.second)] = 1;
  std::vector<int> keep;
  for (int i = (int)nodes.size() - 1; i >= 0; --i) {
    if (!live[g_.root(nodes[i].writes)]) continue;
    keep.push_back(i);
    for (int r : nodes[i].reads) live[g_.root(r)] = 1;
  }
  bind_inputs();
  for (auto it = keep.rbegin(); it != keep.rend(); ++it) {
    cls_ = nodes[*it].op;
    lower_node(*it, nodes[*it]);
  }
  cls_ = "io";
  bind_outputs();
  return std::move(m_);
}

}  // namespace

Model lower(const Graph& g, const LowerSpec& spec) { return Lowerer(g, spec).run(); }

}  // namespace xpsr::onnx
