// xpsr_bench: full-size (SD-1.5 + XPSR) benchmark of the engine with synthetic weights, JSON on stdout.
//   xpsr_bench [--device cpu|cuda|cuda:N] [--latent 64] [--steps N] [--only step,vae_encode,vae_decode,text]
//              [--threads N] [--repeat N] [--precision fp32|bf16|both]
// Components: one ControlNet + UNet classifier-free-guidance step (batch 2) on an h x w latent, VAE
// encode and decode at 8h x 8w pixels, the CLIP text encoder (1 x 77 tokens); with --steps N also a
// full N-step loop of CFG steps (the denoising part of a run). Baseline in the same run: a large GEMM
// through the same backend (achieved GFLOP/s of each component is reported as a ratio to it).
// On CUDA the JSON also has "cuda": kernel launches per CFG step (kernel nodes of the step's captured
// graph), graph fallbacks, peak device memory and the tile policy notes.
// On the CPU every component also reports its process CPU time and GFLOP per CPU-second against the
// baseline's (cpu_ratio_to_gemm): unlike wall time, that ratio holds when other processes share the
// cores. --precision bf16|both runs the components in the CPU backend's bf16 compute mode (CPUs with
// AVX512_BF16; "components_bf16", with speedups over fp32 for both); the bf16 GEMM baseline ("bf16") is
// measured whenever the CPU has AVX512_BF16. XPSR_CPU_PROFILE=1 adds a per-op table per component on
// stderr (native/cpu/profile.h).
// Progress goes to stderr. Nothing here is a test: numbers are measured, not asserted.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include "bench/sd15_configs.h"
#include "cpu/cpu_backend.h"
#include "cpu/profile.h"
#include "engine/engine.h"
#include "engine/system.h"
#ifdef XPSR_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

using namespace xpsr;

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

const char* kUsage =
    "xpsr_bench [--device cpu|cuda|cuda:N] [--latent 64] [--steps N] [--only step,vae_encode,vae_decode,text]\n"
    "           [--threads N] [--repeat N] [--precision fp32|bf16|both]\n"
    "  --precision (CPU): bf16 runs the components in the bf16 compute mode (AVX512_BF16), both runs them\n"
    "  in fp32 and then bf16 and reports the speedup; the bf16 GEMM baseline is measured whenever the CPU\n"
    "  has AVX512_BF16. Ratios are always to the f32 GEMM baseline.\n";

struct Result {
  std::string name;
  double ms_first = 0, ms = 0, gflop = 0;
  double cpu_s = 0;                    // process CPU time of the best run (all threads; CPU backend only)
  double gemm_wall = 0, gemm_cpu = 0;  // the baseline GEMM re-measured right before and after (mean)
  size_t arena = 0;
  int runs = 0;
};

void log(const std::string& s) {
  std::fprintf(stderr, "[xpsr_bench] %s\n", s.c_str());
  std::fflush(stderr);
}

struct Rate {
  double wall = 0, cpu = 0;  // GFLOP/s and GFLOP per CPU-second of the process
};

// The same-run baseline: y[8192 x 1280] = x[8192 x 1280] W^T through backend.linear (uploaded once, one
// warm-up call for the first-touch page faults). measure() is the best of 3 (CPU) / 20 (CUDA) calls; it
// runs at the start and again right before and after every component, whose ratios use the mean of
// those two: on a shared machine the GEMM rate itself moves by up to 2x over the minutes a run takes.
class GemmBaseline {
 public:
  GemmBaseline(Backend& b, bool cuda) : b_(b), cuda_(cuda) {
    HostTensor wt = randn({N, K}, 11, 0.03f), xt = randn({M, K}, 12);
    w_ = b.upload("bench.gemm", WeightKind::Linear, {N, K}, wt.data.data());
    const size_t es = dtype_size(b.act_dtype());
    x_ = b.alloc((size_t)M * K * es);
    y_ = b.alloc((size_t)M * N * es);
    b.upload_act(x_, xt.data.data(), xt.data.size());
    a_.x = x_, a_.M = M, a_.K = K, a_.ldx = K, a_.w = w_.get(), a_.y = y_, a_.N = N, a_.ldy = N;
    b.linear(a_);
    b.synchronize();
  }
  ~GemmBaseline() {
    b_.free(x_);
    b_.free(y_);
  }
  GemmBaseline(const GemmBaseline&) = delete;
  GemmBaseline& operator=(const GemmBaseline&) = delete;

  Rate measure() {
    double best = 1e30, best_cpu = 1e30;
    for (int i = 0; i < (cuda_ ? 20 : 3); ++i) {
      const double t = now_ms(), c = cpu::process_cpu_seconds();
      b_.linear(a_);
      b_.synchronize();
      best = std::min(best, now_ms() - t);
      best_cpu = std::min(best_cpu, cpu::process_cpu_seconds() - c);
    }
    cpu::profile_report("baseline GEMM");
    const double gflop = 2.0 * M * N * K / 1e9;
    return {gflop / (best / 1e3), gflop / best_cpu};
  }

 private:
  static constexpr int M = 8192, K = 1280, N = 1280;
  Backend& b_;
  bool cuda_;
  std::shared_ptr<Weight> w_;
  void* x_ = nullptr;
  void* y_ = nullptr;
  LinearArgs a_;
};

// Runs `call` once cold (plan build + first run) and `repeat` more times; reports the best warm time,
// with the baseline GEMM re-measured right before and after.
Result measure(const std::string& name, const std::function<void(RunStats*)>& call, int repeat, GemmBaseline& base) {
  Result r;
  r.name = name;
  const Rate before = base.measure();
  RunStats st;
  double t0 = now_ms(), c0 = cpu::process_cpu_seconds();
  call(&st);
  r.ms_first = now_ms() - t0;
  r.cpu_s = cpu::process_cpu_seconds() - c0;
  r.ms = st.compute_ms;
  r.gflop = st.flops / 1e9;
  r.arena = st.arena_bytes;
  r.runs = 1;
  for (int i = 0; i < repeat; ++i) {
    c0 = cpu::process_cpu_seconds();
    call(&st);
    const double c = cpu::process_cpu_seconds() - c0;
    r.ms = i == 0 ? st.compute_ms : std::min(r.ms, st.compute_ms);
    r.cpu_s = i == 0 ? c : std::min(r.cpu_s, c);
    ++r.runs;
  }
  cpu::profile_report(name.c_str());  // per-op table on stderr with XPSR_CPU_PROFILE=1
  const Rate after = base.measure();
  r.gemm_wall = 0.5 * (before.wall + after.wall);
  r.gemm_cpu = 0.5 * (before.cpu + after.cpu);
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "%s: %.1f ms compute (first call %.1f ms), %.1f GFLOP, %.1f GFLOP/s (%.2fx the GEMM), %.1f GFLOP/CPU-s "
                "(%.2fx)",
                name.c_str(), r.ms, r.ms_first, r.gflop, r.gflop / (r.ms / 1e3), r.gflop / (r.ms / 1e3) / r.gemm_wall,
                r.gflop / r.cpu_s, r.gflop / r.cpu_s / r.gemm_cpu);
  log(buf);
  return r;
}

// One "components" JSON object; `ref` (same names, the fp32 run) adds speedups over it.
void write_components(std::ostringstream& js, const char* key, const std::vector<Result>& results, bool cuda,
                      const std::vector<Result>* ref) {
  js << ",\n  \"" << key << "\": {";
  for (size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    js << (i ? "," : "") << "\n    \"" << r.name << "\": {\"ms\": " << r.ms << ", \"first_call_ms\": " << r.ms_first
       << ", \"gflop\": " << r.gflop << ", \"gflops_per_s\": " << (r.ms > 0 ? r.gflop / (r.ms / 1e3) : 0)
       << ", \"gemm_gflops_per_s\": " << r.gemm_wall
       << ", \"ratio_to_gemm\": " << (r.ms > 0 && r.gemm_wall > 0 ? r.gflop / (r.ms / 1e3) / r.gemm_wall : 0)
       << ", \"arena_mib\": " << (r.arena >> 20) << ", \"runs\": " << r.runs;
    if (!cuda && r.cpu_s > 0)
      js << ", \"cpu_s\": " << r.cpu_s << ", \"gflops_per_cpu_s\": " << r.gflop / r.cpu_s
         << ", \"gemm_gflops_per_cpu_s\": " << r.gemm_cpu
         << ", \"cpu_ratio_to_gemm\": " << r.gflop / r.cpu_s / r.gemm_cpu;
    if (ref)
      for (const Result& f : *ref)
        if (f.name == r.name && r.cpu_s > 0 && r.ms > 0)
          js << ", \"speedup_vs_fp32\": " << f.ms / r.ms << ", \"cpu_speedup_vs_fp32\": " << f.cpu_s / r.cpu_s;
    js << "}";
  }
  js << "\n  }";
}

}  // namespace

int main(int argc, char** argv) {
  std::string device = "cpu", only, precision = "fp32";
  int latent = 64, steps = 0, threads = 0, repeat = -1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--device") device = next();
    else if (a == "--latent") latent = std::atoi(next().c_str());
    else if (a == "--steps") steps = std::atoi(next().c_str());
    else if (a == "--only") only = next();
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--repeat") repeat = std::atoi(next().c_str());
    else if (a == "--precision") precision = next();
    else if (a == "--help" || a == "-h") {
      std::printf("%s", kUsage);
      return 0;
    } else {
      std::fprintf(stderr, "unknown option %s\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  auto want = [&](const char* c) { return only.empty() || only.find(c) != std::string::npos; };
  const bool cuda = device.rfind("cuda", 0) == 0;
  if (repeat < 0) repeat = cuda ? 5 : 0;  // CPU: one run per component (minutes at full size)
  if (precision != "fp32" && precision != "bf16" && precision != "both") {
    std::fprintf(stderr, "--precision must be fp32, bf16 or both\n");
    return 2;
  }
  const bool run_fp32 = precision != "bf16", run_bf16 = precision != "fp32";
  if (run_bf16 && (cuda || !cpu_bf16_available())) {
    std::fprintf(stderr, "--precision %s: %s\n", precision.c_str(),
                 cuda ? "bf16 is a CPU backend mode (CUDA runs fp16)"
                      : "this CPU has no AVX512_BF16 (or XPSR_CPU_ISA disables AVX-512)");
    return 2;
  }
  try {
    // the CPU engine is f32 whatever XPSR_CPU_PRECISION says; bf16 gets its own engine below
    std::unique_ptr<Backend> be =
        cuda ? make_backend(device, threads).backend : make_cpu_backend(CpuBackendOptions{threads, CpuPrecision::F32});
    std::string desc = be->description();
    auto engine = std::make_unique<Engine>(std::move(be), 4);
    log("device: " + desc);
    int launches_per_step = -1, graph_nodes_per_step = -1;

    // Baseline: a large GEMM through the same backend op (M x K by K x N), best of a few runs; always f32 (on
    // the CPU its own f32 backend, so it also serves the bf16 engine's components).
    std::unique_ptr<Backend> base_be = cuda ? nullptr : make_cpu_backend(CpuBackendOptions{threads, CpuPrecision::F32});
    GemmBaseline base(cuda ? engine->backend() : *base_be, cuda);
    const Rate gemm = base.measure();
    log("baseline GEMM 8192x1280x1280: " + std::to_string(gemm.wall) + " GFLOP/s" +
        (cuda ? "" : ", " + std::to_string(gemm.cpu) + " GFLOP/CPU-s"));
    const int h = latent, w = latent, H = 8 * h, W = 8 * w;
    // Every component selected by --only, on engine `e`.
    auto run_components = [&](Engine& e) {
      std::vector<Result> results;
      double t0;
      if (want("step")) {
        LoadOptions o;
        o.synthetic = true;
        t0 = now_ms();
        o.config_json = kControlNet;
        ModelInfo cn = e.load(ModelKind::ControlNet, o);
        o.config_json = kUNet;
        o.seed = 2;
        ModelInfo un = e.load(ModelKind::UNet, o);
        log("synthetic ControlNet + UNet loaded in " + std::to_string((int)(now_ms() - t0)) + " ms (" +
            std::to_string((cn.weight_bytes + un.weight_bytes) >> 20) + " MiB of f32 source weights)");
        HostTensor image = randn({1, 3, H, W}, 5, 0.3f);
        for (auto& v : image.data) v = std::fabs(v);
        HostTensor c = e.cond_embedding(CondEmbeddingRequest{cn.id, image, false}).cond;
        StepRequest req;
        req.controlnet = cn.id, req.unet = un.id;
        req.in.sample = randn({2, 4, h, w}, 1);
        req.in.ctx_high = randn({2, 77, 768}, 2);
        req.in.ctx_low = randn({2, 77, 768}, 3);
        HostTensor ct = c;
        ct.shape[0] = 2;
        ct.data.insert(ct.data.end(), c.data.begin(), c.data.end());
        req.in.cond = ct;
        req.in.timestep = 951;
        results.push_back(measure(
            "cfg_step_controlnet_unet_b2_" + std::to_string(h) + "x" + std::to_string(w),
            [&](RunStats* st) { e.step(req, nullptr, st); }, repeat, base));
#ifdef XPSR_HAVE_CUDA
        if (cuda) {  // the step is one plan: its captured graph's kernel nodes are the launches per step
          const CudaBackendStats st = cuda_backend_stats(e.backend());
          if (st.graphs_captured > 0) {
            launches_per_step = st.last_graph_kernels;
            graph_nodes_per_step = st.last_graph_nodes;
            log("kernel launches per CFG step: " + std::to_string(launches_per_step) + " (" +
                std::to_string(graph_nodes_per_step) + " graph nodes)");
          } else {
            log("kernel launches per CFG step: unknown (no graph captured: " + st.last_graph_failure + ")");
          }
        }
#endif
        if (steps > 0) {
          t0 = now_ms();
          const double c0 = cpu::process_cpu_seconds();
          for (int s = 0; s < steps; ++s) {
            req.in.timestep = 951 - 50 * s;
            req.reuse_constants = s > 0;
            e.step(req);
          }
          Result r;
          r.name = "denoise_loop_" + std::to_string(steps) + "_steps";
          r.ms = r.ms_first = now_ms() - t0;
          r.cpu_s = cpu::process_cpu_seconds() - c0;
          r.gflop = results.back().gflop * steps;
          r.gemm_wall = results.back().gemm_wall, r.gemm_cpu = results.back().gemm_cpu;
          r.runs = 1;
          log(r.name + ": " + std::to_string(r.ms) + " ms");
          results.push_back(r);
        }
        e.unload(cn.id);
        e.unload(un.id);
      }
      if (want("vae")) {
        LoadOptions o;
        o.synthetic = true;
        o.config_json = kVAE;
        ModelInfo vae = e.load(ModelKind::Vae, o);
        if (want("vae_encode")) {
          VaeEncodeRequest req{vae.id, randn({1, 3, H, W}, 7, 0.5f), false};
          results.push_back(measure(
              "vae_encode_" + std::to_string(H) + "x" + std::to_string(W),
              [&](RunStats* st) { e.vae_encode(req, nullptr, st); }, repeat, base));
        }
        if (want("vae_decode")) {
          VaeDecodeRequest req{vae.id, randn({1, 4, h, w}, 8), false};
          results.push_back(measure(
              "vae_decode_" + std::to_string(H) + "x" + std::to_string(W),
              [&](RunStats* st) { e.vae_decode(req, nullptr, st); }, repeat, base));
        }
        e.unload(vae.id);
      }
      if (want("text")) {
        LoadOptions o;
        o.synthetic = true;
        o.config_json = kCLIP;
        ModelInfo te = e.load(ModelKind::TextEncoder, o);
        TextEncodeRequest req;
        req.model = te.id;
        req.input_ids = TokenIds{1, 77, {}};
        for (int i = 0; i < 77; ++i) req.input_ids.ids.push_back(i == 0 ? 49406 : (i < 20 ? 320 + i : 49407));
        results.push_back(measure(
            "text_encoder_1x77", [&](RunStats* st) { e.text_encode(req, nullptr, st); }, cuda ? repeat : 2, base));
        e.unload(te.id);
      }
      return results;
    };
    std::vector<Result> results, results_bf16;
    if (run_fp32) results = run_components(*engine);
#ifdef XPSR_HAVE_CUDA
    const CudaBackendStats cuda_stats = cuda ? cuda_backend_stats(engine->backend()) : CudaBackendStats{};
#endif
    // bf16 compute mode (CPU with AVX512_BF16): its GEMM baseline always, its components on request.
    Rate gemm_bf16;
    std::string desc_bf16;
    if (!cuda && cpu_bf16_available()) {
      engine.reset();  // free the f32 models first
      auto be16 = make_cpu_backend(CpuBackendOptions{threads, CpuPrecision::BF16});
      desc_bf16 = be16->description();
      gemm_bf16 = GemmBaseline(*be16, false).measure();
      log("bf16 baseline GEMM: " + std::to_string(gemm_bf16.wall) + " GFLOP/s, " + std::to_string(gemm_bf16.cpu) +
          " GFLOP/CPU-s (" + std::to_string(gemm_bf16.cpu / gemm.cpu) + "x the f32 rate per CPU-second)");
      if (run_bf16) {
        log("device: " + desc_bf16);
        Engine e16(std::move(be16), 4);
        results_bf16 = run_components(e16);
      }
    }

    std::ostringstream js;
    js << "{\n  \"device\": \"" << device << "\",\n  \"description\": \"" << desc << "\",\n  \"latent\": [" << h << ", "
       << w << "],\n  \"hardware_threads\": " << std::thread::hardware_concurrency()
       << ",\n  \"baseline_gemm_gflops_per_s\": " << gemm.wall;
    if (!cuda) js << ",\n  \"baseline_gemm_gflops_per_cpu_s\": " << gemm.cpu;
    if (gemm_bf16.cpu > 0)
      js << ",\n  \"bf16\": {\"description\": \"" << desc_bf16
         << "\", \"baseline_gemm_gflops_per_s\": " << gemm_bf16.wall
         << ", \"baseline_gemm_gflops_per_cpu_s\": " << gemm_bf16.cpu
         << ", \"gemm_speedup_vs_fp32\": " << gemm_bf16.wall / gemm.wall
         << ", \"gemm_cpu_speedup_vs_fp32\": " << gemm_bf16.cpu / gemm.cpu << "}";
    if (run_fp32) write_components(js, "components", results, cuda, nullptr);
    if (run_bf16) write_components(js, "components_bf16", results_bf16, cuda, run_fp32 ? &results : nullptr);
#ifdef XPSR_HAVE_CUDA
    if (cuda) {
      const CudaBackendStats& st = cuda_stats;
      auto esc = [](std::string v) {
        std::string o;
        for (char c : v) {
          if (c == '"' || c == '\\') o += '\\';
          if ((unsigned char)c >= 0x20) o += c;
        }
        return o;
      };
      js << ",\n  \"cuda\": {\"launches_per_step\": " << launches_per_step
         << ", \"graph_nodes_per_step\": " << graph_nodes_per_step << ", \"graphs_captured\": " << st.graphs_captured
         << ", \"graph_replays\": " << st.graph_replays << ", \"graph_fallbacks\": " << st.graph_fallbacks
         << ", \"last_graph_failure\": \"" << esc(st.last_graph_failure)
         << "\", \"device_used_peak_bytes\": " << st.device_used_peak << ", \"act_bytes_peak\": " << st.act_bytes_peak
         << ", \"tile_notes\": \"" << esc(st.tile_notes) << "\"}";
      log("peak device memory " + std::to_string(st.device_used_peak >> 20) + " MiB, graph fallbacks " +
          std::to_string(st.graph_fallbacks));
    }
#endif
    js << "\n}\n";
    std::printf("%s", js.str().c_str());
  } catch (const Error& e) {
    std::fprintf(stderr, "xpsr_bench: %s: %s\n", e.code_name(), e.what());
    return 1;
  }
  return 0;
}
