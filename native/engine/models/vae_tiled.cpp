// Tiled VAE: segment-by-segment execution over whole-image host maps (see vae_tiled.h for the design).
#include "vae_tiled.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <thread>

namespace xpsr {

// ---- geometry ---------------------------------------------------------------------------------------

static int best_tile_size(int lower, int upper) {  // vaehook get_best_tile_size (lib/tiling.ts bestTileSize)
  for (int d = 32; d >= 2; d /= 2) {
    int rem = ((lower % d) + d) % d;
    if (rem == 0) return lower;
    int cand = lower - rem + d;
    if (cand <= upper) return cand;
  }
  return lower;
}

static int ceil_div_pos(int a, int b) { return a <= 0 ? 0 : (a + b - 1) / b; }

std::vector<int> vae_tile_bounds(int size, int tile, int pad) {
  if (size < 1 || tile < 1 || pad < 0)
    fail(ErrorCode::InvalidArgument, "vae tiling: bad size ", size, ", tile ", tile, ", pad ", pad);
  const int n = std::max(ceil_div_pos(size - 2 * pad, tile), 1);
  const int t = best_tile_size(ceil_div_pos(size - 2 * pad, n), tile);
  // Core k = [pad + k t, pad + (k+1) t); a core edge within `pad` of the border extends to the border
  // (official output_bbox), so the extended cores partition [0, size) at pad + k t, k = 1..n-1.
  std::vector<int> b{0};
  for (int k = 1; k < n; ++k)
    if (pad + k * t > b.back() && pad + k * t < size) b.push_back(pad + k * t);
  b.push_back(size);
  return b;
}

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

constexpr float kVaeEps = 1e-6f;  // GroupNorm eps of the VAE (vae.cpp)

// fn(begin, end) over [0, n) on up to hardware_concurrency threads (host-side loops: extraction,
// statistics, write-back). Small ranges run inline.
template <class F>
void host_for(int64_t n, int64_t work_per_item, F&& fn) {
  static const int hw = (int)std::max(1u, std::thread::hardware_concurrency());
  const int T = (int)std::min<int64_t>(hw, n);
  if (T <= 1 || n * work_per_item < (1 << 16)) {
    fn((int64_t)0, n);
    return;
  }
  std::vector<std::thread> th;
  th.reserve(T - 1);
  for (int t = 1; t < T; ++t) th.emplace_back([&, t] { fn(n * t / T, n * (t + 1) / T); });
  fn((int64_t)0, n / T);
  for (auto& x : th) x.join();
}

struct HostMem {
  size_t live = 0, peak = 0;
};

// A whole-image feature map in host memory, channels-last [H, W, C] f32. In a dry run it has no data.
class Map {
 public:
  Map() = default;
  Map(int H_, int W_, int C_, HostMem* mem, bool alloc) : H(H_), W(W_), C(C_), mem_(mem) {
    bytes_ = (size_t)H * W * C * sizeof(float);
    if (alloc) d.assign((size_t)H * W * C, 0.f);
    mem_->live += bytes_;
    mem_->peak = std::max(mem_->peak, mem_->live);
  }
  ~Map() { release(); }
  Map(const Map&) = delete;
  Map& operator=(const Map&) = delete;
  Map(Map&& o) noexcept { steal(o); }
  Map& operator=(Map&& o) noexcept {
    if (this != &o) release(), steal(o);
    return *this;
  }
  void release() {
    if (mem_) mem_->live -= bytes_;
    mem_ = nullptr, bytes_ = 0;
    std::vector<float>().swap(d);
  }
  int H = 0, W = 0, C = 0;
  std::vector<float> d;

 private:
  void steal(Map& o) {
    H = o.H, W = o.W, C = o.C, d = std::move(o.d), mem_ = o.mem_, bytes_ = o.bytes_;
    o.mem_ = nullptr, o.bytes_ = 0;
  }
  HostMem* mem_ = nullptr;
  size_t bytes_ = 0;
};

// GroupNorm with whole-image statistics, per channel: y = (x - mean[c]) * scale[c] + beta[c], then SiLU.
struct HostNorm {
  std::vector<float> mean, scale, beta;
  bool silu = false;
};

// Tile grid of one resolution level: core boundaries (first 0, last the size).
struct Grid {
  int H = 0, W = 0;
  std::vector<int> ys, xs;
  int max_h = 0, max_w = 0;
};

Grid make_grid(int H, int W, std::vector<int> ys, std::vector<int> xs) {
  auto fix = [](std::vector<int>& b, int size) {
    for (int& v : b) v = std::min(std::max(v, 0), size);
    b.push_back(0), b.push_back(size);
    std::sort(b.begin(), b.end());
    b.erase(std::unique(b.begin(), b.end()), b.end());
  };
  fix(ys, H), fix(xs, W);
  Grid g;
  g.H = H, g.W = W, g.ys = ys, g.xs = xs;
  for (size_t i = 0; i + 1 < ys.size(); ++i) g.max_h = std::max(g.max_h, ys[i + 1] - ys[i]);
  for (size_t i = 0; i + 1 < xs.size(); ++i) g.max_w = std::max(g.max_w, xs[i + 1] - xs[i]);
  return g;
}

// Host copies of Vector weights (GroupNorm gamma/beta): the backend keeps weights in its own memory and
// offers no download, so each vector is read back as the bias of a linear with zero weights (one plan
// for all). On fp16 backends a second pass reads the rounding remainder (bias + residual(-hi)), giving
// ~22 bits instead of 11.
std::map<const Weight*, std::vector<float>> read_vectors(Backend& be, const std::vector<const Weight*>& ws) {
  const int K = 8;
  std::map<int, std::shared_ptr<Weight>> zero;  // destroyed after the plan (declared first)
  std::map<const Weight*, std::vector<float>> out;
  auto g = std::make_unique<Graph>(be);
  Val x = g->input("x", Dims{1, 1, 1, K});
  const bool lo = be.act_dtype() != DType::F32;
  std::vector<const Weight*> uniq;
  for (const Weight* w : ws)
    if (w && !out.count(w)) out[w] = {}, uniq.push_back(w);
  for (size_t i = 0; i < uniq.size(); ++i) {
    const Weight* w = uniq[i];
    if (w->kind != WeightKind::Vector || w->shape.size() != 1)
      fail(ErrorCode::Internal, "tiled VAE: '", w->name, "' is not a vector");
    int C = (int)w->shape[0];
    if (!zero.count(C)) {
      std::vector<float> z((size_t)C * K, 0.f);
      zero[C] = be.upload("tiled_vae.zero", WeightKind::Linear, {C, K}, z.data());
    }
    g->output("hi" + std::to_string(i), g->linear(x, zero[C].get(), w));
    if (lo) {
      Val r = g->input("r" + std::to_string(i), Dims{1, 1, 1, C});
      g->output("lo" + std::to_string(i), g->linear(x, zero[C].get(), w, r));
    }
  }
  if (uniq.empty()) return out;
  Plan plan(std::move(g));
  std::vector<float> zx(K, 0.f);
  plan.set_input("x", zx.data(), zx.size());
  for (size_t i = 0; lo && i < uniq.size(); ++i) {
    std::vector<float> zr((size_t)uniq[i]->shape[0], 0.f);
    plan.set_input("r" + std::to_string(i), zr.data(), zr.size());
  }
  plan.run();
  for (size_t i = 0; i < uniq.size(); ++i) out[uniq[i]] = plan.get_output("hi" + std::to_string(i));
  if (lo) {
    for (size_t i = 0; i < uniq.size(); ++i) {
      std::vector<float> neg = out[uniq[i]];
      for (float& v : neg) v = -v;
      plan.set_input("r" + std::to_string(i), neg.data(), neg.size());
    }
    plan.run();
    for (size_t i = 0; i < uniq.size(); ++i) {
      std::vector<float> rem = plan.get_output("lo" + std::to_string(i));
      auto& v = out[uniq[i]];
      for (size_t c = 0; c < v.size(); ++c) v[c] += rem[c];
    }
  }
  return out;
}

// One input of a segment plan: a box of a host map (or the whole map as tokens).
struct SegIn {
  std::string name;
  const Map* src = nullptr;
  const HostNorm* norm = nullptr;  // applied while extracting
  int c0 = 0, nc = 0;              // channel range of src
  // Box origin at the input's level from the output core origin Y0: Y0 * mul / div + off (same for x).
  int mul = 1, div = 1, off = 0;
  int bh = 0, bw = 0;
  bool whole = false;  // [1, 1, H*W, nc], uploaded once, kept alive for every tile
};

using Builder = std::function<Val(Graph&, const std::vector<Val>&)>;

class Runner {
 public:
  Runner(Backend& be, const std::atomic<bool>* cancel, TiledVaeStats& st, bool dry)
      : be_(be), cancel_(cancel), st_(st), dry_(dry) {}
  HostMem mem;
  bool dry() const { return dry_; }

  void check_cancel() const {
    if (cancel_ && cancel_->load(std::memory_order_relaxed)) fail(ErrorCode::Cancelled, "cancelled");
  }

  Map new_map(int H, int W, int C) { return Map(H, W, C, &mem, !dry_); }

  // Runs one segment over every tile of `grid` (the output level); the plan output's crop at (oy, ox)
  // of the core size is the tile's core.
  Map run(const std::string& name, const Grid& grid, const std::vector<SegIn>& ins, const Builder& build, int oy = 0,
          int ox = 0) {
    check_cancel();
    auto t0 = Clock::now();
    auto g = std::make_unique<Graph>(be_);
    std::vector<Val> vals;
    for (const SegIn& in : ins) {
      Val v;
      if (in.whole) {
        v = g->input(in.name, Dims{1, 1, in.src->H * in.src->W, in.nc});
        g->output(in.name + ".keep", v);  // lives through every run: uploaded once
      } else {
        v = g->input(in.name, Dims{1, in.bh, in.bw, in.nc});
      }
      vals.push_back(v);
    }
    Val y = build(*g, vals);
    g->output("y", y);
    const Dims yd = g->dims(y);
    if (oy + grid.max_h > yd.h || ox + grid.max_w > yd.w)
      fail(ErrorCode::Internal, "tiled VAE segment ", name, ": output ", yd.str(), " smaller than the core ",
           grid.max_h, "x", grid.max_w, " at ", oy, ",", ox);
    Plan plan(std::move(g));
    st_.plan_ms += ms_since(t0);
    st_.segments++;
    if (plan.arena_bytes() > st_.max_arena_bytes)
      st_.max_arena_bytes = plan.arena_bytes(), st_.max_arena_segment = name;
    st_.max_naive_bytes = std::max(st_.max_naive_bytes, plan.naive_bytes());
    Map out = new_map(grid.H, grid.W, yd.c);
    if (dry_) return out;

    std::vector<float> buf;
    for (const SegIn& in : ins)
      if (in.whole) {
        auto th = Clock::now();
        extract(*in.src, in.c0, in.nc, nullptr, 0, 0, in.src->H, in.src->W, buf);
        st_.host_ms += ms_since(th);
        plan.set_input(in.name, buf.data(), buf.size());
      }
    for (size_t i = 0; i + 1 < grid.ys.size(); ++i)
      for (size_t j = 0; j + 1 < grid.xs.size(); ++j) {
        check_cancel();
        const int Y0 = grid.ys[i], X0 = grid.xs[j];
        const int ch = grid.ys[i + 1] - Y0, cw = grid.xs[j + 1] - X0;
        auto th = Clock::now();
        for (const SegIn& in : ins) {
          if (in.whole) continue;
          extract(*in.src, in.c0, in.nc, in.norm, Y0 * in.mul / in.div + in.off, X0 * in.mul / in.div + in.off, in.bh,
                  in.bw, buf);
          plan.set_input(in.name, buf.data(), buf.size());
        }
        st_.host_ms += ms_since(th);
        auto tc = Clock::now();
        plan.run(cancel_);
        std::vector<float> r = plan.get_output("y");
        st_.compute_ms += ms_since(tc);
        st_.ops += plan.op_count();
        th = Clock::now();
        const int C = yd.c;
        host_for(ch, (int64_t)cw * C, [&](int64_t a, int64_t b) {
          for (int64_t yy = a; yy < b; ++yy)
            std::memcpy(&out.d[(((size_t)(Y0 + yy)) * out.W + X0) * C], &r[(((size_t)(oy + yy)) * yd.w + ox) * C],
                        sizeof(float) * (size_t)cw * C);
        });
        st_.host_ms += ms_since(th);
      }
    return out;
  }

  // Box [y0, y0+bh) x [x0, x0+bw) of channels [c0, c0+nc) of m, zero outside the map, normalised by `n`.
  static void extract(const Map& m, int c0, int nc, const HostNorm* n, int y0, int x0, int bh, int bw,
                      std::vector<float>& out) {
    out.assign((size_t)bh * bw * nc, 0.f);
    const int xa = std::max(x0, 0), xb = std::min(x0 + bw, m.W);
    if (xa >= xb) return;
    host_for(bh, (int64_t)bw * nc, [&](int64_t a, int64_t b) {
      for (int64_t r = a; r < b; ++r) {
        const int y = y0 + (int)r;
        if (y < 0 || y >= m.H) continue;
        for (int x = xa; x < xb; ++x) {
          const float* s = &m.d[((size_t)y * m.W + x) * m.C + c0];
          float* d = &out[((size_t)r * bw + (x - x0)) * nc];
          if (!n) {
            std::memcpy(d, s, sizeof(float) * nc);
            continue;
          }
          const float *mu = n->mean.data() + c0, *sc = n->scale.data() + c0, *be = n->beta.data() + c0;
          if (n->silu) {
            for (int c = 0; c < nc; ++c) {
              float v = (s[c] - mu[c]) * sc[c] + be[c];
              d[c] = v / (1.f + std::exp(-v));
            }
          } else {
            for (int c = 0; c < nc; ++c) d[c] = (s[c] - mu[c]) * sc[c] + be[c];
          }
        }
      }
    });
  }

 private:
  Backend& be_;
  const std::atomic<bool>* cancel_;
  TiledVaeStats& st_;
  bool dry_;
};

// The segment programs of the encoder and the decoder.
class Tiler {
 public:
  Tiler(Runner& run, TiledVaeStats& st, std::map<const Weight*, std::vector<float>> vecs)
      : st_(st), run_(run), vecs_(std::move(vecs)) {}

  // GroupNorm statistics of the whole map (two passes in double), folded with gamma/beta.
  HostNorm norm(const Map& m, const Norm& nw, int groups, float eps, bool silu) {
    HostNorm n;
    n.silu = silu;
    const int C = m.C;
    if (groups <= 0 || C % groups) fail(ErrorCode::ShapeMismatch, "tiled VAE: ", C, " channels in ", groups, " groups");
    const auto& gamma = vecs_.at(nw.gamma.get());
    const auto& beta = vecs_.at(nw.beta.get());
    n.mean.assign(C, 0.f), n.scale.assign(C, 1.f), n.beta = beta;
    if (run_.dry()) return n;
    auto t0 = Clock::now();
    const int cg = C / groups;
    const int64_t rows = (int64_t)m.H;
    const size_t rowlen = (size_t)m.W * C;
    std::vector<double> part((size_t)rows * groups);
    auto pass = [&](const std::vector<double>* mean) {
      std::fill(part.begin(), part.end(), 0.0);
      std::vector<double> mc(C, 0.0);  // per-channel group mean (pass 2)
      if (mean)
        for (int c = 0; c < C; ++c) mc[c] = (*mean)[c / cg];
      host_for(rows, (int64_t)rowlen, [&](int64_t a, int64_t b) {
        std::vector<double> acc(C);
        for (int64_t y = a; y < b; ++y) {
          std::fill(acc.begin(), acc.end(), 0.0);
          const float* p = &m.d[(size_t)y * rowlen];
          for (int x = 0; x < m.W; ++x, p += C) {
            if (!mean) {
              for (int c = 0; c < C; ++c) acc[c] += p[c];
            } else {
              for (int c = 0; c < C; ++c) {
                const double dv = p[c] - mc[c];
                acc[c] += dv * dv;
              }
            }
          }
          for (int c = 0; c < C; ++c) part[(size_t)y * groups + c / cg] += acc[c];
        }
      });
      std::vector<double> tot(groups, 0.0);
      for (int64_t y = 0; y < rows; ++y)
        for (int gi = 0; gi < groups; ++gi) tot[gi] += part[(size_t)y * groups + gi];
      return tot;
    };
    const double count = (double)m.H * m.W * cg;
    std::vector<double> mean = pass(nullptr);
    for (double& v : mean) v /= count;
    std::vector<double> var = pass(&mean);
    for (int c = 0; c < C; ++c) {
      const int gi = c / cg;
      n.mean[c] = (float)mean[gi];
      n.scale[c] = (float)(gamma[c] / std::sqrt(var[gi] / count + (double)eps));
    }
    st_.host_ms += ms_since(t0);
    return n;
  }

  // 3x3 conv (stride 1, pad 1) as a valid conv on the core grown by 1; optional residual = x or
  // shortcut(x) at the core, optional 1x1 after (quant_conv).
  Map conv3(const std::string& name, const Grid& G, const Map& x, const HostNorm* n, const Conv& conv,
            const Map* res = nullptr, const Linear* shortcut = nullptr, const Linear* post = nullptr) {
    if (conv.w->shape[2] != 3 || conv.w->shape[3] != 3 || conv.stride != 1)
      fail(ErrorCode::Internal, "tiled VAE: ", name, " is not a 3x3 stride-1 conv");
    std::vector<SegIn> ins;
    SegIn a;
    a.name = "x", a.src = &x, a.norm = n, a.nc = x.C, a.off = -1, a.bh = G.max_h + 2, a.bw = G.max_w + 2;
    ins.push_back(a);
    if (res) {
      SegIn r;
      r.name = "r", r.src = res, r.nc = res->C, r.bh = G.max_h, r.bw = G.max_w;
      ins.push_back(r);
    }
    return run_.run(name, G, ins, [&](Graph& g, const std::vector<Val>& v) {
      Val s;
      if (res) s = shortcut ? g.linear(v[1], shortcut->w.get(), shortcut->b.get()) : v[1];
      Val y = g.conv2d(v[0], conv.w.get(), conv.b.get(), 1, Pad::same(0), s);
      if (post) y = g.linear(y, post->w.get(), post->b.get());
      return y;
    });
  }

  Map pointwise(const std::string& name, const Grid& G, const Map& x, const Linear& l) {
    SegIn a;
    a.name = "x", a.src = &x, a.nc = x.C, a.bh = G.max_h, a.bw = G.max_w;
    return run_.run(name, G, {a},
                    [&](Graph& g, const std::vector<Val>& v) { return g.linear(v[0], l.w.get(), l.b.get()); });
  }

  // Encoder downsampler: F.pad(x, (0,1,0,1)) then 3x3 stride 2, as a valid conv on [2Y0, 2Y0 + 2h + 1)
  // (rows past the map read the pad's zeros). Gout: the half-resolution grid.
  Map down(const std::string& name, const Grid& Gout, const Map& x, const Conv& conv) {
    SegIn a;
    a.name = "x", a.src = &x, a.nc = x.C, a.mul = 2, a.bh = 2 * Gout.max_h + 1, a.bw = 2 * Gout.max_w + 1;
    return run_.run(name, Gout, {a}, [&](Graph& g, const std::vector<Val>& v) {
      return g.conv2d(v[0], conv.w.get(), conv.b.get(), 2, Pad::same(0));
    });
  }

  // Decoder upsampler: nearest x2 then 3x3 conv. The low-res box [Y0/2 - 1, Y0/2 + h/2 + 1) upsampled is
  // [Y0 - 2, Y0 + h + 2); the valid conv gives [Y0 - 1, Y0 + h + 1): the core starts at offset 1.
  Map up(const std::string& name, const Grid& Gout, const Map& x, const Conv& conv) {
    SegIn a;
    a.name = "x", a.src = &x, a.nc = x.C, a.div = 2, a.off = -1, a.bh = Gout.max_h / 2 + 2, a.bw = Gout.max_w / 2 + 2;
    return run_.run(
        name, Gout, {a},
        [&](Graph& g, const std::vector<Val>& v) {
          const Dims d = g.dims(v[0]);
          return g.conv2d(g.upsample(v[0], 2 * d.h, 2 * d.w), conv.w.get(), conv.b.get(), 1, Pad::same(0));
        },
        1, 1);
  }

  Map resnet(const std::string& name, const Grid& G, Map x, const ResnetBlock& r) {
    HostNorm n1 = norm(x, r.norm1, r.groups, r.eps, true);
    Map t = conv3(name + ".conv1", G, x, &n1, r.conv1);
    HostNorm n2 = norm(t, r.norm2, r.groups, r.eps, true);
    return conv3(name + ".conv2", G, t, &n2, r.conv2, &x, r.has_shortcut ? &r.shortcut : nullptr);
  }

  // Mid-block attention over ALL positions (the untiled function): q|k|v tile by tile into a host map,
  // then every tile of queries attends to the whole-image keys/values.
  Map attention(const std::string& name, const Grid& G, Map x, const VaeAttention& a) {
    HostNorm n = norm(x, a.group_norm, a.groups, kVaeEps, false);
    const int C = a.attn.C, heads = a.attn.heads;
    SegIn xi;
    xi.name = "x", xi.src = &x, xi.norm = &n, xi.nc = x.C, xi.bh = G.max_h, xi.bw = G.max_w;
    Map qkv = run_.run(name + ".qkv", G, {xi}, [&](Graph& g, const std::vector<Val>& v) {
      return g.linear(v[0], a.attn.qkv.w.get(), a.attn.qkv.b.get());
    });
    SegIn q, kv, r;
    q.name = "q", q.src = &qkv, q.c0 = 0, q.nc = C, q.bh = G.max_h, q.bw = G.max_w;
    kv.name = "kv", kv.src = &qkv, kv.c0 = C, kv.nc = 2 * C, kv.whole = true;
    r.name = "r", r.src = &x, r.nc = x.C, r.bh = G.max_h, r.bw = G.max_w;
    const float scale = 1.0f / std::sqrt((float)(C / heads));
    return run_.run(name, G, {q, kv, r}, [&](Graph& g, const std::vector<Val>& v) {
      const Dims d = g.dims(v[0]);
      Val o = g.attention(tokens(g, v[0]), g.cols(v[1], 0, C), g.cols(v[1], C, C), heads, scale);
      return g.reshape(g.linear(o, a.attn.out.w.get(), a.attn.out.b.get(), tokens(g, v[2])), d);
    });
  }

  Map mid(const std::string& name, const Grid& G, Map h, const VaeMid& m) {
    h = resnet(name + ".resnets.0", G, std::move(h), m.resnet0);
    h = attention(name + ".attentions.0", G, std::move(h), m.attention);
    return resnet(name + ".resnets.1", G, std::move(h), m.resnet1);
  }

 private:
  TiledVaeStats& st_;
  Runner& run_;
  std::map<const Weight*, std::vector<float>> vecs_;
};

void collect_norms(const ResnetBlock& r, std::vector<const Weight*>& w) {
  for (const Norm* n : {&r.norm1, &r.norm2}) w.push_back(n->gamma.get()), w.push_back(n->beta.get());
}
void collect_norms(const VaeMid& m, std::vector<const Weight*>& w) {
  collect_norms(m.resnet0, w), collect_norms(m.resnet1, w);
  w.push_back(m.attention.group_norm.gamma.get()), w.push_back(m.attention.group_norm.beta.get());
}

struct Input {
  int N, C, H, W;
};

Input check_input(const std::vector<int64_t>& shape, size_t n, int channels, const char* what) {
  if (shape.size() != 4 || shape[1] != channels)
    fail(ErrorCode::ShapeMismatch, what, " must be [N, ", channels, ", H, W], got ", shape_str(shape));
  for (auto d : shape)
    if (d <= 0 || d > (1 << 20)) fail(ErrorCode::ShapeMismatch, what, " has a bad shape ", shape_str(shape));
  if ((size_t)(shape[0] * shape[1] * shape[2] * shape[3]) != n)
    fail(ErrorCode::ShapeMismatch, what, " has ", n, " values but shape ", shape_str(shape));
  return {(int)shape[0], (int)shape[1], (int)shape[2], (int)shape[3]};
}

void check_opts(int tile, int pad) {
  if (tile < 1) fail(ErrorCode::InvalidArgument, "tiled VAE: tile must be a positive integer, got ", tile);
  if (pad < 0) fail(ErrorCode::InvalidArgument, "tiled VAE: pad must be a non-negative integer, got ", pad);
}

// NCHW sample n -> channels-last map; and back.
Map to_map(Runner& run, const float* x, const Input& in, int n) {
  Map m = run.new_map(in.H, in.W, in.C);
  if (run.dry()) return m;
  const size_t hw = (size_t)in.H * in.W;
  const float* s = x + (size_t)n * in.C * hw;
  for (int c = 0; c < in.C; ++c)
    for (size_t p = 0; p < hw; ++p) m.d[p * in.C + c] = s[c * hw + p];
  return m;
}

void from_map(const Map& m, std::vector<float>& out, int n) {
  if (m.d.empty()) return;
  const size_t hw = (size_t)m.H * m.W;
  float* d = out.data() + (size_t)n * m.C * hw;
  for (int c = 0; c < m.C; ++c)
    for (size_t p = 0; p < hw; ++p) d[c * hw + p] = m.d[p * m.C + c];
}

}  // namespace

// ---- encoder ------------------------------------------------------------------------------------------

HostTensor TiledVae::encode(const std::vector<int64_t>& shape, const float* data, size_t n, const TiledVaeOptions& o,
                            const std::atomic<bool>* cancel, TiledVaeStats* stats) {
  if (!vae_.has_encoder) fail(ErrorCode::InvalidArgument, "this VAE was loaded without its encoder");
  const VaeConfig& cfg = vae_.config;
  const Input in = check_input(shape, n, cfg.in_channels, "encode_tiled: x");
  const int tile = o.tile > 0 ? o.tile : 1024, pad = o.pad >= 0 ? o.pad : 32;
  check_opts(tile, pad);
  const int levels = (int)vae_.enc_blocks.size(), f = 1 << (levels - 1);
  if (in.H < f || in.W < f)
    fail(ErrorCode::ShapeMismatch, "encode_tiled: the image must be at least ", f, "x", f, " px");
  TiledVaeStats local;
  TiledVaeStats& st = stats ? *stats : local;
  st = TiledVaeStats{};

  // Level sizes (the stride-2 convs after F.pad(0,1,0,1): floor(H/2)) and the per-level grids: the
  // official split at the input resolution with boundaries rounded to multiples of f (so that each level's
  // tiles partition it exactly), then halved per level.
  std::vector<int> Hs{in.H}, Ws{in.W};
  for (int k = 1; k < levels; ++k) Hs.push_back((Hs.back() - 2) / 2 + 1), Ws.push_back((Ws.back() - 2) / 2 + 1);
  auto round_f = [&](std::vector<int> b) {
    for (int& v : b) v = (v + f / 2) / f * f;
    return b;
  };
  const std::vector<int> by = round_f(vae_tile_bounds(in.H, tile, pad)), bx = round_f(vae_tile_bounds(in.W, tile, pad));
  std::vector<Grid> grids;
  for (int k = 0; k < levels; ++k) {
    std::vector<int> ys, xs;
    for (int v : by) ys.push_back(v >> k);
    for (int v : bx) xs.push_back(v >> k);
    // the last boundary of each list is the full size (possibly not a multiple of f): the level's size
    ys.back() = Hs[k], xs.back() = Ws[k];
    grids.push_back(make_grid(Hs[k], Ws[k], ys, xs));
  }
  st.tiles_y = (int)grids[0].ys.size() - 1, st.tiles_x = (int)grids[0].xs.size() - 1;

  std::vector<const Weight*> vw;
  for (auto& blk : vae_.enc_blocks)
    for (auto& r : blk) collect_norms(r, vw);
  collect_norms(vae_.enc_mid, vw);
  vw.push_back(vae_.enc_norm_out.gamma.get()), vw.push_back(vae_.enc_norm_out.beta.get());

  Runner run(be_, cancel, st, o.dry_run);
  Tiler t(run, st, read_vectors(be_, vw));
  const int G = cfg.norm_num_groups;
  const int lat2 = 2 * cfg.latent_channels;
  HostTensor out;
  out.shape = {in.N, lat2, Hs.back(), Ws.back()};
  out.data.assign((size_t)in.N * lat2 * Hs.back() * Ws.back(), 0.f);
  for (int s = 0; s < in.N; ++s) {
    Map x = to_map(run, data, in, s);
    Map h = t.conv3("encoder.conv_in", grids[0], x, nullptr, vae_.enc_conv_in);
    x.release();
    for (int i = 0; i < levels; ++i) {
      const std::string p = "encoder.down_blocks." + std::to_string(i);
      for (size_t j = 0; j < vae_.enc_blocks[i].size(); ++j)
        h = t.resnet(p + ".resnets." + std::to_string(j), grids[i], std::move(h), vae_.enc_blocks[i][j]);
      if (i < (int)vae_.enc_down.size()) h = t.down(p + ".downsamplers.0", grids[i + 1], h, vae_.enc_down[i]);
    }
    const Grid& Gl = grids.back();
    h = t.mid("encoder.mid_block", Gl, std::move(h), vae_.enc_mid);
    HostNorm n = t.norm(h, vae_.enc_norm_out, G, kVaeEps, true);
    Map m = t.conv3("encoder.conv_out", Gl, h, &n, vae_.enc_conv_out, nullptr, nullptr, &vae_.quant_conv);
    from_map(m, out.data, s);
  }
  st.host_peak_bytes = run.mem.peak;
  return out;
}

// ---- decoder ------------------------------------------------------------------------------------------

HostTensor TiledVae::decode(const std::vector<int64_t>& shape, const float* data, size_t n, const TiledVaeOptions& o,
                            const std::atomic<bool>* cancel, TiledVaeStats* stats) {
  if (!vae_.has_decoder) fail(ErrorCode::InvalidArgument, "this VAE was loaded without its decoder");
  const VaeConfig& cfg = vae_.config;
  const Input in = check_input(shape, n, cfg.latent_channels, "decode_tiled: z");
  const int tile = o.tile > 0 ? o.tile : 224, pad = o.pad >= 0 ? o.pad : 11;
  check_opts(tile, pad);
  const int levels = (int)vae_.dec_blocks.size();
  TiledVaeStats local;
  TiledVaeStats& st = stats ? *stats : local;
  st = TiledVaeStats{};

  // Grids: the official split of the latent, doubled per level.
  const std::vector<int> by = vae_tile_bounds(in.H, tile, pad), bx = vae_tile_bounds(in.W, tile, pad);
  std::vector<Grid> grids;
  for (int k = 0; k < levels; ++k) {
    std::vector<int> ys, xs;
    for (int v : by) ys.push_back(v << k);
    for (int v : bx) xs.push_back(v << k);
    grids.push_back(make_grid(in.H << k, in.W << k, ys, xs));
  }
  st.tiles_y = (int)grids[0].ys.size() - 1, st.tiles_x = (int)grids[0].xs.size() - 1;

  std::vector<const Weight*> vw;
  collect_norms(vae_.dec_mid, vw);
  for (auto& blk : vae_.dec_blocks)
    for (auto& r : blk) collect_norms(r, vw);
  vw.push_back(vae_.dec_norm_out.gamma.get()), vw.push_back(vae_.dec_norm_out.beta.get());

  Runner run(be_, cancel, st, o.dry_run);
  Tiler t(run, st, read_vectors(be_, vw));
  const int G = cfg.norm_num_groups;
  const Grid& Gt = grids.back();
  HostTensor out;
  out.shape = {in.N, cfg.out_channels, Gt.H, Gt.W};
  out.data.assign((size_t)in.N * cfg.out_channels * Gt.H * Gt.W, 0.f);
  for (int s = 0; s < in.N; ++s) {
    Map z = to_map(run, data, in, s);
    Map h = t.pointwise("post_quant_conv", grids[0], z, vae_.post_quant_conv);
    z.release();
    h = t.conv3("decoder.conv_in", grids[0], h, nullptr, vae_.dec_conv_in);
    h = t.mid("decoder.mid_block", grids[0], std::move(h), vae_.dec_mid);
    for (int i = 0; i < levels; ++i) {
      const std::string p = "decoder.up_blocks." + std::to_string(i);
      for (size_t j = 0; j < vae_.dec_blocks[i].size(); ++j)
        h = t.resnet(p + ".resnets." + std::to_string(j), grids[i], std::move(h), vae_.dec_blocks[i][j]);
      if (i < (int)vae_.dec_up.size()) h = t.up(p + ".upsamplers.0", grids[i + 1], h, vae_.dec_up[i]);
    }
    HostNorm n = t.norm(h, vae_.dec_norm_out, G, kVaeEps, true);
    Map img = t.conv3("decoder.conv_out", Gt, h, &n, vae_.dec_conv_out);
    from_map(img, out.data, s);
  }
  st.host_peak_bytes = run.mem.peak;
  return out;
}

}  // namespace xpsr
