// xpsr_bench: full-size (SD-1.5 + XPSR) benchmark of the engine with synthetic weights, JSON on stdout.
//   xpsr_bench [--device cpu|cuda|cuda:N] [--latent 64] [--steps N] [--only step,vae_encode,vae_decode,text]
//              [--threads N] [--repeat N] [--precision fp32|bf16|both]
// On the CPU every component also reports its process CPU time and GFLOP per CPU-second against the
// baseline's (cpu_ratio_to_gemm): unlike wall time, that ratio holds when other processes share the
// cores. XPSR_CPU_PROFILE=1 adds a per-op table per component on stderr (native/cpu/profile.h).
// Components: one ControlNet + UNet classifier-free-guidance step (batch 2) on an h x w latent, VAE
// encode and decode at 8h x 8w pixels, the CLIP text encoder (1 x 77 tokens); with --steps N also a
// full N-step loop of CFG steps (the denoising part of a run). Baseline in the same run: a large GEMM
// through the same backend (achieved GFLOP/s of each component is reported as a ratio to it).
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
#ifdef XPSR_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

using namespace xpsr;

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}


struct Result {
  std::string name;
  double ms_first = 0, ms = 0, gflop = 0;
  double cpu_s = 0;  // process CPU time of the best run (all threads; CPU backend only)
  size_t arena = 0;
  int runs = 0;
};

void log(const std::string& s) {
  std::fprintf(stderr, "[xpsr_bench] %s\n", s.c_str());
  std::fflush(stderr);
}

// Runs `req` once cold (plan build + first run) and `repeat` more times; reports the best warm time.
Result measure(Engine& e, const std::string& name, const RunRequest& req, int repeat) {
  Result r;
  r.name = name;
  RunStats st;
  double t0 = now_ms(), c0 = cpu::process_cpu_seconds();
  e.run(req, nullptr, &st);
  r.ms_first = now_ms() - t0;
  r.cpu_s = cpu::process_cpu_seconds() - c0;
  r.ms = st.compute_ms;
  r.gflop = st.flops / 1e9;
  r.arena = st.arena_bytes;
  r.runs = 1;
  for (int i = 0; i < repeat; ++i) {
    c0 = cpu::process_cpu_seconds();
    e.run(req, nullptr, &st);
    const double c = cpu::process_cpu_seconds() - c0;
    r.ms = i == 0 ? st.compute_ms : std::min(r.ms, st.compute_ms);
    r.cpu_s = i == 0 ? c : std::min(r.cpu_s, c);
    ++r.runs;
  }
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s: %.1f ms compute (first call %.1f ms), %.1f GFLOP, %.1f GFLOP/s, %.1f GFLOP/CPU-s",
                name.c_str(), r.ms, r.ms_first, r.gflop, r.gflop / (r.ms / 1e3), r.gflop / r.cpu_s);
  log(buf);
  cpu::profile_report(name.c_str());  // per-op table on stderr with XPSR_CPU_PROFILE=1
  return r;
}

const char* kUsage =
    "xpsr_bench [--device cpu|cuda|cuda:N] [--latent 64] [--steps N] [--only step,vae_encode,vae_decode,text]\n"
    "           [--threads N] [--repeat N] [--precision fp32|bf16|both]\n"
    "  --precision (CPU): bf16 runs the components in the bf16 compute mode (AVX512_BF16), both runs them\n"
    "  in fp32 and then bf16 and reports the speedup; the bf16 GEMM baseline is measured whenever the CPU\n"
    "  has AVX512_BF16. Ratios are always to the f32 GEMM baseline.\n";

struct BenchOptions {
  int latent = 64, steps = 0, repeat = 0;
  std::string only;
  bool cuda = false;
};

struct Rate {
  double wall = 0, cpu = 0;  // GFLOP/s and GFLOP per CPU-second of the process
};

// The same-run baseline: y[8192 x 1280] = x[8192 x 1280] W^T through backend.linear, one warm-up call
// (first-touch page faults) and then the best of 3 (CPU) / 20 (CUDA) calls.
Rate gemm_baseline(Backend& b, bool cuda) {
  const int M = 8192, K = 1280, N = 1280;
  TensorIn wt = randn({N, K}, 11, 0.03f), xt = randn({M, K}, 12);
  auto wgt = b.upload("bench.gemm", WeightKind::Linear, {N, K}, wt.f32.data());
  size_t es = dtype_size(b.act_dtype());
  void* x = b.alloc((size_t)M * K * es);
  void* y = b.alloc((size_t)M * N * es);
  b.upload_act(x, xt.f32.data(), xt.f32.size());
  LinearArgs a;
  a.x = x, a.M = M, a.K = K, a.ldx = K, a.w = wgt.get(), a.y = y, a.N = N, a.ldy = N;
  b.linear(a);
  b.synchronize();
  double best = 1e30, best_cpu = 1e30;
  for (int i = 0; i < (cuda ? 20 : 3); ++i) {
    const double t = now_ms(), c = cpu::process_cpu_seconds();
    b.linear(a);
    b.synchronize();
    best = std::min(best, now_ms() - t);
    best_cpu = std::min(best_cpu, cpu::process_cpu_seconds() - c);
  }
  b.free(x);
  b.free(y);
  cpu::profile_report("baseline GEMM");
  const double gflop = 2.0 * M * N * K / 1e9;
  return {gflop / (best / 1e3), gflop / best_cpu};
}

// Every component selected by --only on engine `e`, in order; progress on stderr.
std::vector<Result> measure_components(Engine& e, const BenchOptions& opt) {
  std::vector<Result> results;
  const int h = opt.latent, w = opt.latent, H = 8 * h, W = 8 * w, repeat = opt.repeat, steps = opt.steps;
  const bool cuda = opt.cuda;
  auto want = [&](const char* c) { return opt.only.empty() || opt.only.find(c) != std::string::npos; };
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
    RunRequest cond;
    cond.entry = "cond_embedding";
    cond.models = {cn.id};
    cond.inputs["image"] = randn({1, 3, H, W}, 5, 0.3f);
    for (auto& v : cond.inputs["image"].f32) v = std::fabs(v);
    OutputMap c = e.run(cond);
    RunRequest req;
    req.entry = "step";
    req.models = {cn.id, un.id};
    req.inputs["sample"] = randn({2, 4, h, w}, 1);
    req.inputs["ctx_high"] = randn({2, 77, 768}, 2);
    req.inputs["ctx_low"] = randn({2, 77, 768}, 3);
    TensorIn ct;
    ct.shape = c["cond"].shape;
    ct.shape[0] = 2;
    ct.f32 = c["cond"].data;
    ct.f32.insert(ct.f32.end(), c["cond"].data.begin(), c["cond"].data.end());
    req.inputs["cond"] = ct;
    req.params["timestep"] = 951;
    results.push_back(measure(e, "cfg_step_controlnet_unet_b2_" + std::to_string(h) + "x" + std::to_string(w), req, repeat));
    if (steps > 0) {
      t0 = now_ms();
      const double c0 = cpu::process_cpu_seconds();
      for (int s = 0; s < steps; ++s) {
        req.params["timestep"] = 951 - 50 * s;
        e.run(req);
      }
      Result r;
      r.name = "denoise_loop_" + std::to_string(steps) + "_steps";
      r.ms = r.ms_first = now_ms() - t0;
      r.cpu_s = cpu::process_cpu_seconds() - c0;
      r.gflop = results.back().gflop * steps;
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
    ModelInfo vae = e.load(ModelKind::VAE, o);
    if (want("vae_encode")) {
      RunRequest req;
      req.entry = "encode";
      req.models = {vae.id};
      req.inputs["x"] = randn({1, 3, H, W}, 7, 0.5f);
      results.push_back(measure(e, "vae_encode_" + std::to_string(H) + "x" + std::to_string(W), req, repeat));
    }
    if (want("vae_decode")) {
      RunRequest req;
      req.entry = "decode";
      req.models = {vae.id};
      req.inputs["z"] = randn({1, 4, h, w}, 8);
      results.push_back(measure(e, "vae_decode_" + std::to_string(H) + "x" + std::to_string(W), req, repeat));
    }
    e.unload(vae.id);
  }
  if (want("text")) {
    LoadOptions o;
    o.synthetic = true;
    o.config_json = kCLIP;
    ModelInfo te = e.load(ModelKind::TextEncoder, o);
    RunRequest req;
    req.entry = "encode";
    req.models = {te.id};
    req.inputs["input_ids"].shape = {1, 77};
    for (int i = 0; i < 77; ++i) req.inputs["input_ids"].i64.push_back(i == 0 ? 49406 : (i < 20 ? 320 + i : 49407));
    results.push_back(measure(e, "text_encoder_1x77", req, cuda ? repeat : 2));
    e.unload(te.id);
  }

  return results;
}

// One "components" JSON object; `ref` (same names, other precision) adds speedup_vs_fp32.
void write_components(std::ostringstream& js, const char* key, const std::vector<Result>& results, const Rate& gemm,
                      bool cuda, const std::vector<Result>* ref) {
  js << ",\n  \"" << key << "\": {";
  for (size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    js << (i ? "," : "") << "\n    \"" << r.name << "\": {\"ms\": " << r.ms << ", \"first_call_ms\": " << r.ms_first
       << ", \"gflop\": " << r.gflop << ", \"gflops_per_s\": " << (r.ms > 0 ? r.gflop / (r.ms / 1e3) : 0)
       << ", \"ratio_to_gemm\": " << (r.ms > 0 && gemm.wall > 0 ? r.gflop / (r.ms / 1e3) / gemm.wall : 0)
       << ", \"arena_mib\": " << (r.arena >> 20) << ", \"runs\": " << r.runs;
    if (!cuda && r.cpu_s > 0)
      js << ", \"cpu_s\": " << r.cpu_s << ", \"gflops_per_cpu_s\": " << r.gflop / r.cpu_s
         << ", \"cpu_ratio_to_gemm\": " << r.gflop / r.cpu_s / gemm.cpu;
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
  std::string device = "cpu", precision = "fp32";
  BenchOptions opt;
  int threads = 0, repeat = -1;
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
    else if (a == "--latent") opt.latent = std::atoi(next().c_str());
    else if (a == "--steps") opt.steps = std::atoi(next().c_str());
    else if (a == "--only") opt.only = next();
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
  opt.cuda = device.rfind("cuda", 0) == 0;
  opt.repeat = repeat >= 0 ? repeat : opt.cuda ? 5 : 0;  // CPU: one run per component (minutes at full size)
  if (precision != "fp32" && precision != "bf16" && precision != "both") {
    std::fprintf(stderr, "--precision must be fp32, bf16 or both\n");
    return 2;
  }
  const bool run_fp32 = precision != "bf16", run_bf16 = precision != "fp32";
  try {
    std::unique_ptr<Backend> be;
    if (opt.cuda) {
      if (run_bf16) {
        std::fprintf(stderr, "--precision bf16 is a CPU backend mode (CUDA runs fp16)\n");
        return 2;
      }
#ifdef XPSR_HAVE_CUDA
      be = make_cuda_backend(device.size() > 5 ? std::atoi(device.c_str() + 5) : 0);
#else
      std::fprintf(stderr, "this build has no CUDA backend\n");
      return 2;
#endif
    } else {
      if (run_bf16 && !cpu_bf16_available()) {
        std::fprintf(stderr, "--precision %s: this CPU has no AVX512_BF16 (or XPSR_CPU_ISA disables AVX-512)\n",
                     precision.c_str());
        return 2;
      }
      be = make_cpu_backend(CpuBackendOptions{threads, CpuPrecision::F32});
    }
    std::string desc = be->description();
    auto e = std::make_unique<Engine>(std::move(be), 4);
    log("device: " + desc);

    // Baseline: a large GEMM through the same backend op (M x K by K x N), best of a few runs; always f32.
    const Rate gemm = gemm_baseline(e->backend(), opt.cuda);
    log("baseline GEMM 8192x1280x1280: " + std::to_string(gemm.wall) + " GFLOP/s" +
        (opt.cuda ? "" : ", " + std::to_string(gemm.cpu) + " GFLOP/CPU-s"));
    std::vector<Result> results, results_bf16;
    if (run_fp32) results = measure_components(*e, opt);
    // bf16 compute mode (CPU with AVX512_BF16): its GEMM baseline always, its components on request.
    Rate gemm_bf16;
    std::string desc_bf16;
    if (!opt.cuda && cpu_bf16_available()) {
      e.reset();  // free the f32 models first
      auto be16 = make_cpu_backend(CpuBackendOptions{threads, CpuPrecision::BF16});
      desc_bf16 = be16->description();
      gemm_bf16 = gemm_baseline(*be16, false);
      log("bf16 baseline GEMM: " + std::to_string(gemm_bf16.wall) + " GFLOP/s, " + std::to_string(gemm_bf16.cpu) +
          " GFLOP/CPU-s (" + std::to_string(gemm_bf16.cpu / gemm.cpu) + "x the f32 rate per CPU-second)");
      if (run_bf16) {
        log("device: " + desc_bf16);
        Engine e16(std::move(be16), 4);
        results_bf16 = measure_components(e16, opt);
      }
    }

    const int h = opt.latent, w = opt.latent;
    std::ostringstream js;
    js << "{\n  \"device\": \"" << device << "\",\n  \"description\": \"" << desc << "\",\n  \"latent\": [" << h << ", " << w
       << "],\n  \"hardware_threads\": " << std::thread::hardware_concurrency()
       << ",\n  \"baseline_gemm_gflops_per_s\": " << gemm.wall;
    if (!opt.cuda) js << ",\n  \"baseline_gemm_gflops_per_cpu_s\": " << gemm.cpu;
    if (gemm_bf16.cpu > 0)
      js << ",\n  \"bf16\": {\"description\": \"" << desc_bf16 << "\", \"baseline_gemm_gflops_per_s\": " << gemm_bf16.wall
         << ", \"baseline_gemm_gflops_per_cpu_s\": " << gemm_bf16.cpu << ", \"gemm_speedup_vs_fp32\": " << gemm_bf16.wall / gemm.wall
         << ", \"gemm_cpu_speedup_vs_fp32\": " << gemm_bf16.cpu / gemm.cpu << "}";
    if (run_fp32) write_components(js, "components", results, gemm, opt.cuda, nullptr);
    if (run_bf16) write_components(js, "components_bf16", results_bf16, gemm, opt.cuda, run_fp32 ? &results : nullptr);
    js << "\n}\n";
    std::printf("%s", js.str().c_str());
  } catch (const Error& e) {
    std::fprintf(stderr, "xpsr_bench: %s: %s\n", e.code_name(), e.what());
    return 1;
  }
  return 0;
}
