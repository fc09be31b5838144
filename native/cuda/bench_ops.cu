// xpsr_cuda_bench: times every CUDA op on the real SD-1.5 / XPSR shapes (batch 2 = one CFG step) and prints
// JSON (stdout) with a readable table on stderr. Each case runs R times inside one plan executed through
// Backend::execute (so it is timed as the engine runs it: a replayed CUDA graph, no launch gaps);
// time per op = median over 15 replays of wall time / R, R chosen so one replay takes ~2 ms.
// Ops whose kernels depend on the tile policy (GEMM / conv tiles and split-K, d=160 attention variant,
// GroupNorm finalize) are timed under BOTH policies in the same run: "ms"/"plan" = the model (tuning.h),
// "ms_legacy"/"plan_legacy" = XPSR_CUDA_TILES=legacy. Each case also gets its floor, max(FLOPs / tensor
// peak, bytes / bandwidth), and the achieved fraction of it: the bandwidth is measured here (a device-to-
// device copy, bytes read + written), the tensor peak is the part's datasheet dense fp16 rate ("peaks").
// The "cases" array carries each case's parameters: scripts/bench_torch_ops.py reads it and times the same
// cases with PyTorch (cuBLAS / cuDNN / SDPA) on the same GPU; scripts/gpu_report.py compares them.
// Usage: xpsr_cuda_bench [--filter SUBSTRING] [--device N] [--help]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../common/dtype.h"
#include "cuda_backend.h"
#include "kernels.h"  // tile policy switch and the plan each launch used

using namespace xpsr;

namespace {

struct Case {
  std::string name, kind;
  std::vector<std::pair<std::string, double>> params;
  double flops = 0, bytes = 0;
  double ms = -1, ms_legacy = -1;
  std::string plan, plan_legacy;
  int reps = 0;
  std::string error;
};

// What the last launch of a policy-dependent op used (kernels.h hooks).
std::string plan_of(const std::string& kind, const Case& c) {
  using namespace xpsr::cuda;
  if (kind == "conv2d" || kind == "linear") {
    const GemmPlan p = last_gemm_plan();
    return std::string(gemm_tile_name(p.tile)) + " x" + std::to_string(p.splits);
  }
  if (kind == "attention") {
    for (const auto& kv : c.params)
      if (kv.first == "d" && kv.second == 160) {
        const int v = last_attn_d160_variant();
        return v < 0 ? "SIMT kernel" : "d160 v" + std::to_string(v);
      }
    return "";
  }
  if (kind == "group_norm") return gn_finalize_legacy() ? "legacy finalize" : "parallel finalize";
  return "";
}
bool policy_dependent(const Case& c) {
  if (c.kind == "conv2d" || c.kind == "linear" || c.kind == "group_norm") return true;
  if (c.kind == "attention")
    for (const auto& kv : c.params)
      if (kv.first == "d" && kv.second == 160) return true;
  return false;
}

// Dense fp16 tensor-core rate of the part (datasheet, TFLOP/s; leads, not measurements: the report prefers
// the cuBLAS rate bench_torch_ops.py measures on the same GPU). 0 = unknown.
double datasheet_tflops(const std::string& name, int cc) {
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  if (has("H200") || has("GH200")) return 989;
  if (has("H100")) return has("PCIe") ? 756 : 989;
  if (has("A100") || has("A800")) return 312;
  if (has("L40S")) return 362;
  if (has("L40")) return 181;
  if (has("L4")) return 121;
  if (has("A10G")) return 70;
  if (has("A10")) return 125;
  if (has("A30")) return 165;
  if (has("A40") || has("A6000")) return 150;
  if (has("4090")) return 165;
  if (has("3090")) return 71;
  return cc == 90 ? 989 : cc == 80 ? 312 : cc == 89 ? 165 : cc == 86 ? 70 : 0;
}

// Device-to-device copy bandwidth (bytes read + written per second), median of 7 copies of 512 MiB.
double measure_copy_gbps() {
  const size_t n = (size_t)512 << 20;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, n) != cudaSuccess || cudaMalloc(&b, n) != cudaSuccess) {
    (void)cudaGetLastError();
    if (a) cudaFree(a);
    return 0;
  }
  cudaMemset(a, 1, n);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<float> ts;
  for (int i = 0; i < 8; ++i) {
    cudaEventRecord(e0);
    cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    if (i) ts.push_back(ms);  // the first one warms up
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(a);
  cudaFree(b);
  (void)cudaGetLastError();
  std::sort(ts.begin(), ts.end());
  return ts.empty() || ts[ts.size() / 2] <= 0 ? 0 : 2.0 * n / (ts[ts.size() / 2] * 1e-3) / 1e9;
}

std::vector<float> rnd(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

struct Bench {
  Backend& g;
  std::vector<void*> bufs;
  explicit Bench(Backend& b) : g(b) {}
  ~Bench() {
    for (void* p : bufs) g.free(p);
  }
  void* act(size_t n, uint32_t seed) {
    void* p = g.alloc(n * 2);
    bufs.push_back(p);
    auto v = rnd(n, seed, 1.0f);
    g.upload_act(p, v.data(), n);
    return p;
  }
  std::shared_ptr<Weight> weight(WeightKind k, std::vector<int64_t> shape, float scale) {
    size_t n = 1;
    for (auto d : shape) n *= (size_t)d;
    auto v = rnd(n, 7, scale);
    return g.upload("bench", k, shape, v.data());
  }
  double time(const std::function<void()>& op, int& reps) {
    using clk = std::chrono::steady_clock;
    op();
    g.synchronize();
    auto t0 = clk::now();
    op();
    g.synchronize();
    const double once = std::chrono::duration<double>(clk::now() - t0).count();
    reps = std::clamp((int)(2e-3 / std::max(once, 1e-7)), 5, 200);
    const int R = reps;
    const int tag = 0;
    auto run = [&] {
      for (int i = 0; i < R; ++i) op();
    };
    g.execute(&tag, run);  // eager
    g.execute(&tag, run);  // capture
    std::vector<double> ts;
    for (int t = 0; t < 15; ++t) {
      t0 = clk::now();
      g.execute(&tag, run);
      ts.push_back(std::chrono::duration<double>(clk::now() - t0).count());
    }
    g.forget_plan(&tag);
    std::sort(ts.begin(), ts.end());
    return ts[ts.size() / 2] / R * 1e3;
  }
};

void add_cases(std::vector<Case>& cs, std::vector<std::function<void(Bench&, Case&)>>& runs) {
  const int B = 2;
  // ---- 3x3 convs (NHWC, fp16), batch 2
  struct CV {
    int C, K, H, W, stride;
    const char* tag;
  };
  for (CV c : {CV{320, 320, 64, 64, 1, ""}, CV{640, 640, 32, 32, 1, ""}, CV{1280, 1280, 16, 16, 1, ""},
               CV{1280, 1280, 8, 8, 1, ""}, CV{320, 640, 32, 32, 1, ""}, CV{640, 320, 64, 64, 1, " up"},
               CV{2560, 1280, 16, 16, 1, " up"}, CV{960, 320, 64, 64, 1, " up"}, CV{4, 320, 64, 64, 1, " conv_in"},
               CV{320, 320, 64, 64, 2, " down"}, CV{1280, 1280, 16, 16, 2, " down"}}) {
    Case k;
    char nm[96];
    std::snprintf(nm, sizeof nm, "conv3x3 %d->%d %dx%d s%d%s", c.C, c.K, c.H, c.W, c.stride, c.tag);
    k.name = nm;
    k.kind = "conv2d";
    const int P = (c.H + 2 - 3) / c.stride + 1, Q = (c.W + 2 - 3) / c.stride + 1;
    k.params = {{"N", B}, {"C", c.C}, {"K", c.K},           {"H", c.H}, {"W", c.W},
                {"R", 3}, {"S", 3},   {"stride", c.stride}, {"pad", 1}};
    k.flops = 2.0 * B * P * Q * c.K * c.C * 9;
    k.bytes = 2.0 * (B * c.H * c.W * c.C + B * P * Q * c.K + c.K * c.C * 9);
    cs.push_back(k);
    runs.push_back([c, P, Q, B](Bench& b, Case& k) {
      Conv2dArgs a;
      a.x = b.act((size_t)B * c.H * c.W * c.C, 1);
      a.N = B;
      a.H = c.H;
      a.W = c.W;
      a.C = c.C;
      auto w = b.weight(WeightKind::Conv, {c.K, c.C, 3, 3}, 0.02f);
      auto bias = b.weight(WeightKind::Vector, {c.K}, 0.1f);
      a.w = w.get();
      a.b = bias.get();
      a.K = c.K;
      a.stride = c.stride;
      a.y = b.act((size_t)B * P * Q * c.K, 2);
      a.P = P;
      a.Q = Q;
      k.ms = b.time([&] { b.g.conv2d(a); }, k.reps);
    });
  }
  // ---- linears (transformer blocks): M = B * tokens
  struct LN {
    int M, K, N;
    const char* tag;
  };
  for (LN l : {LN{8192, 320, 320, " qkv/out l0"}, LN{8192, 320, 2560, " geglu-in l0"},
               LN{8192, 1280, 320, " ff-out l0"}, LN{2048, 640, 640, " l1"}, LN{2048, 640, 5120, " geglu-in l1"},
               LN{2048, 2560, 640, " ff-out l1"}, LN{512, 1280, 1280, " l2"}, LN{512, 1280, 10240, " geglu-in l2"},
               LN{512, 5120, 1280, " ff-out l2"}, LN{128, 1280, 1280, " mid"}, LN{154, 768, 320, " text-kv"},
               LN{154, 768, 1280, " text-kv"}, LN{2, 1280, 1280, " time-emb"}}) {
    Case k;
    char nm[96];
    std::snprintf(nm, sizeof nm, "linear %dx%d->%d%s", l.M, l.K, l.N, l.tag);
    k.name = nm;
    k.kind = "linear";
    k.params = {{"M", l.M}, {"K", l.K}, {"N", l.N}};
    k.flops = 2.0 * l.M * l.N * l.K;
    k.bytes = 2.0 * ((double)l.M * l.K + (double)l.M * l.N + (double)l.N * l.K);
    cs.push_back(k);
    runs.push_back([l](Bench& b, Case& k) {
      LinearArgs a;
      a.x = b.act((size_t)l.M * l.K, 3);
      a.M = l.M;
      a.K = l.K;
      a.ldx = l.K;
      auto w = b.weight(WeightKind::Linear, {l.N, l.K}, 0.03f);
      auto bias = b.weight(WeightKind::Vector, {l.N}, 0.1f);
      a.w = w.get();
      a.b = bias.get();
      a.y = b.act((size_t)l.M * l.N, 4);
      a.N = l.N;
      a.ldy = l.N;
      k.ms = b.time([&] { b.g.linear(a); }, k.reps);
    });
  }
  // ---- attention, heads 8
  struct AT {
    int Lq, Lk, d;
    const char* tag;
  };
  for (AT t : {AT{4096, 4096, 40, " self/SFA l0"}, AT{1024, 1024, 80, " self l1"}, AT{256, 256, 160, " self l2"},
               AT{64, 64, 160, " self mid"}, AT{4096, 77, 40, " text l0"}, AT{1024, 77, 80, " text l1"},
               AT{256, 77, 160, " text l2"}}) {
    Case k;
    char nm[96];
    std::snprintf(nm, sizeof nm, "attention %dx%d h8 d%d%s", t.Lq, t.Lk, t.d, t.tag);
    k.name = nm;
    k.kind = "attention";
    k.params = {{"B", B}, {"Lq", t.Lq}, {"Lk", t.Lk}, {"heads", 8}, {"d", t.d}};
    k.flops = 4.0 * B * 8 * t.Lq * t.Lk * t.d;
    k.bytes = 2.0 * B * 8 * t.d * (2.0 * t.Lq + 2.0 * t.Lk);
    cs.push_back(k);
    runs.push_back([t, B](Bench& b, Case& k) {
      const int C = 8 * t.d;
      AttentionArgs a;
      a.q = b.act((size_t)B * t.Lq * C, 5);
      a.k = b.act((size_t)B * t.Lk * C, 6);
      a.v = b.act((size_t)B * t.Lk * C, 7);
      a.o = b.act((size_t)B * t.Lq * C, 8);
      a.ldq = a.ldk = a.ldv = a.ldo = C;
      a.B = B;
      a.Lq = t.Lq;
      a.Lk = t.Lk;
      a.heads = 8;
      a.head_dim = t.d;
      a.scale = 1.0f / std::sqrt((float)t.d);
      k.ms = b.time([&] { b.g.attention(a); }, k.reps);
    });
  }
  // ---- group norm (+SiLU), 32 groups
  struct GN {
    int HW, C;
  };
  for (GN n : {GN{4096, 320}, GN{1024, 640}, GN{256, 1280}, GN{64, 2560}, GN{4096, 960}}) {
    Case k;
    k.name = "group_norm+silu " + std::to_string(n.HW) + "x" + std::to_string(n.C);
    k.kind = "group_norm";
    k.params = {{"N", B}, {"HW", n.HW}, {"C", n.C}, {"groups", 32}, {"silu", 1}};
    k.bytes = 2.0 * 2 * B * n.HW * n.C;
    cs.push_back(k);
    runs.push_back([n, B](Bench& b, Case& k) {
      GroupNormArgs a;
      a.x = b.act((size_t)B * n.HW * n.C, 9);
      a.y = b.act((size_t)B * n.HW * n.C, 10);
      a.N = B;
      a.HW = n.HW;
      a.C = n.C;
      a.groups = 32;
      a.silu = true;
      auto gm = b.weight(WeightKind::Vector, {n.C}, 1.0f), bt = b.weight(WeightKind::Vector, {n.C}, 0.1f);
      a.gamma = gm.get();
      a.beta = bt.get();
      k.ms = b.time([&] { b.g.group_norm(a); }, k.reps);
    });
  }
  // ---- layer norm, GEGLU, elementwise
  for (GN n : {GN{8192, 320}, GN{2048, 640}, GN{512, 1280}}) {
    Case k;
    k.name = "layer_norm " + std::to_string(n.HW) + "x" + std::to_string(n.C);
    k.kind = "layer_norm";
    k.params = {{"rows", n.HW}, {"C", n.C}};
    k.bytes = 2.0 * 2 * n.HW * n.C;
    cs.push_back(k);
    runs.push_back([n](Bench& b, Case& k) {
      LayerNormArgs a;
      a.x = b.act((size_t)n.HW * n.C, 11);
      a.y = b.act((size_t)n.HW * n.C, 12);
      a.rows = n.HW;
      a.C = n.C;
      auto gm = b.weight(WeightKind::Vector, {n.C}, 1.0f), bt = b.weight(WeightKind::Vector, {n.C}, 0.1f);
      a.gamma = gm.get();
      a.beta = bt.get();
      k.ms = b.time([&] { b.g.layer_norm(a); }, k.reps);
    });
  }
  for (GN n : {GN{8192, 1280}, GN{2048, 2560}, GN{512, 5120}}) {
    Case k;
    k.name = "geglu " + std::to_string(n.HW) + "x" + std::to_string(n.C);
    k.kind = "geglu";
    k.params = {{"rows", n.HW}, {"inner", n.C}};
    k.bytes = 2.0 * 3 * n.HW * n.C;
    cs.push_back(k);
    runs.push_back([n](Bench& b, Case& k) {
      GegluArgs a{b.act((size_t)n.HW * 2 * n.C, 13), b.act((size_t)n.HW * n.C, 14), n.HW, n.C};
      k.ms = b.time([&] { b.g.geglu(a); }, k.reps);
    });
  }
  {
    const size_t n = (size_t)B * 4096 * 320;
    Case k;
    k.name = "add 2x4096x320";
    k.kind = "add";
    k.params = {{"n", (double)n}};
    k.bytes = 2.0 * 3 * n;
    cs.push_back(k);
    runs.push_back([n](Bench& b, Case& k) {
      AxpbyArgs a{b.act(n, 15), b.act(n, 16), b.act(n, 17), n, 1.0f, 1.0f};
      k.ms = b.time([&] { b.g.axpby(a); }, k.reps);
    });
  }
}

void json_str(const std::string& s) {
  std::putchar('"');
  for (char c : s) {
    if (c == '"' || c == '\\') std::putchar('\\');
    std::putchar(c);
  }
  std::putchar('"');
}

}  // namespace

int main(int argc, char** argv) {
  std::string filter;
  int device = 0;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) filter = argv[++i];
    else if (!std::strcmp(argv[i], "--device") && i + 1 < argc) device = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      std::printf(
          "xpsr_cuda_bench [--filter SUBSTRING] [--device N]: every CUDA op on the SD-1.5 shapes, JSON on stdout\n");
      return 0;
    } else {
      std::fprintf(stderr, "xpsr_cuda_bench: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  std::unique_ptr<Backend> g;
  try {
    g = make_cuda_backend(device);
  } catch (const Error& e) {
    std::printf("{\"error\": ");
    json_str(e.what());
    std::printf("}\n");
    std::fprintf(stderr, "xpsr_cuda_bench: %s\n", e.what());
    return 2;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, device);
  const int cc = prop.major * 10 + prop.minor;
  const double peak_tflops = datasheet_tflops(prop.name, cc);
  const double copy_gbps = measure_copy_gbps();
  std::fprintf(stderr, "%s: %d SMs; floors from %.0f TFLOP/s (datasheet dense fp16) and %.0f GB/s (measured copy)\n",
               prop.name, prop.multiProcessorCount, peak_tflops, copy_gbps);
  auto floor_ms = [&](const Case& c) {
    const double f = peak_tflops > 0 && c.flops > 0 ? c.flops / (peak_tflops * 1e9) : 0.0;
    const double m = copy_gbps > 0 && c.bytes > 0 ? c.bytes / (copy_gbps * 1e6) : 0.0;
    return std::max(f, m);
  };

  std::vector<Case> cases;
  std::vector<std::function<void(Bench&, Case&)>> runs;
  add_cases(cases, runs);
  std::fprintf(stderr, "%-44s %10s %-22s %10s %-22s %8s %9s %7s %5s\n", "op", "ms", "plan", "legacy ms", "legacy plan",
               "TFLOP/s", "GB/s", "floor%", "reps");
  for (size_t i = 0; i < cases.size(); ++i) {
    Case& c = cases[i];
    if (!filter.empty() && c.name.find(filter) == std::string::npos) continue;
    try {
      Bench b(*g);
      cuda::set_tile_policy(cuda::TilePolicy::Model);
      runs[i](b, c);
      c.plan = plan_of(c.kind, c);
      if (policy_dependent(c)) {  // the same case again under the legacy policy (same buffers and weights)
        Case lc = c;
        cuda::set_tile_policy(cuda::TilePolicy::Legacy);
        runs[i](b, lc);
        c.ms_legacy = lc.ms;
        c.plan_legacy = plan_of(c.kind, lc);
        cuda::set_tile_policy(cuda::TilePolicy::Model);
      }
    } catch (const Error& e) {
      c.error = e.what();
      cuda::set_tile_policy(cuda::TilePolicy::Model);
    }
    const double fl = floor_ms(c);
    if (c.error.empty())
      std::fprintf(stderr, "%-44s %10.4f %-22s %10s %-22s %8.1f %9.0f %6.0f%% %5d\n", c.name.c_str(), c.ms,
                   c.plan.c_str(), c.ms_legacy > 0 ? std::to_string(c.ms_legacy).substr(0, 8).c_str() : "-",
                   c.plan_legacy.c_str(), c.flops > 0 ? c.flops / (c.ms * 1e9) : 0.0, c.bytes / (c.ms * 1e6),
                   fl > 0 ? 100.0 * fl / c.ms : 0.0, c.reps);
    else std::fprintf(stderr, "%-44s ERROR %s\n", c.name.c_str(), c.error.c_str());
  }
  const CudaBackendStats st = cuda_backend_stats(*g);
  std::printf("{\n  \"device\": ");
  json_str(g->description());
  std::printf(
      ",\n  \"backend\": \"xpsr-cuda\",\n  \"method\": \"median of 15 graph replays of R back-to-back launches, ms per "
      "op; ms = model tile policy, ms_legacy = legacy\",\n");
  std::printf("  \"sms\": %d, \"cc\": %d,\n", prop.multiProcessorCount, cc);
  std::printf(
      "  \"peaks\": {\"tensor_tflops\": %.1f, \"tensor_source\": \"datasheet dense fp16\", \"copy_gbps\": %.1f},\n",
      peak_tflops, copy_gbps);
  std::printf("  \"tile_notes\": ");
  json_str(st.tile_notes);
  std::printf(",\n");
  std::printf("  \"memory\": {\"device_used_peak_bytes\": %zu, \"act_bytes_peak\": %zu, \"workspace_bytes\": %zu},\n",
              st.device_used_peak, st.act_bytes_peak, st.workspace_bytes);
  std::printf("  \"graph_fallbacks\": %d,\n  \"cases\": [\n", st.graph_fallbacks);
  bool first = true;
  for (const Case& c : cases) {
    if (!filter.empty() && c.name.find(filter) == std::string::npos) continue;
    std::printf("%s    {\"name\": ", first ? "" : ",\n");
    first = false;
    json_str(c.name);
    std::printf(", \"kind\": ");
    json_str(c.kind);
    std::printf(", \"params\": {");
    for (size_t j = 0; j < c.params.size(); ++j)
      std::printf("%s\"%s\": %.0f", j ? ", " : "", c.params[j].first.c_str(), c.params[j].second);
    const double fl = floor_ms(c);
    std::printf("}, \"flops\": %.0f, \"bytes\": %.0f, \"ms\": %.6f, \"reps\": %d, \"plan\": ", c.flops, c.bytes, c.ms,
                c.reps);
    json_str(c.plan);
    std::printf(", \"ms_legacy\": %.6f, \"plan_legacy\": ", c.ms_legacy);
    json_str(c.plan_legacy);
    std::printf(", \"floor_ms\": %.6f, \"floor_fraction\": %.4f", fl, fl > 0 && c.ms > 0 ? fl / c.ms : 0.0);
    if (!c.error.empty()) {
      std::printf(", \"error\": ");
      json_str(c.error);
    }
    std::printf("}");
  }
  std::printf("\n  ]\n}\n");
  return 0;
}
