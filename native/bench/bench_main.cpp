// xpsr_bench: full-size (SD-1.5 + XPSR) benchmark of the engine with synthetic weights, JSON on stdout.
//   xpsr_bench [--device cpu|cuda|cuda:N] [--latent 64] [--steps N] [--only step,vae_encode,vae_decode,text]
//              [--threads N] [--repeat N]
// Components: one ControlNet + UNet classifier-free-guidance step (batch 2) on an h x w latent, VAE
// encode and decode at 8h x 8w pixels, the CLIP text encoder (1 x 77 tokens); with --steps N also a
// full N-step loop of CFG steps (the denoising part of a run). Baseline in the same run: a large GEMM
// through the same backend (achieved GFLOP/s of each component is reported as a ratio to it).
// On CUDA the JSON also has "cuda": kernel launches per CFG step (kernel nodes of the step's captured
// graph), graph fallbacks, peak device memory and the tile policy notes.
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

struct Result {
  std::string name;
  double ms_first = 0, ms = 0, gflop = 0;
  size_t arena = 0;
  int runs = 0;
};

void log(const std::string& s) {
  std::fprintf(stderr, "[xpsr_bench] %s\n", s.c_str());
  std::fflush(stderr);
}

// Runs `call` once cold (plan build + first run) and `repeat` more times; reports the best warm time.
Result measure(const std::string& name, const std::function<void(RunStats*)>& call, int repeat) {
  Result r;
  r.name = name;
  RunStats st;
  double t0 = now_ms();
  call(&st);
  r.ms_first = now_ms() - t0;
  r.ms = st.compute_ms;
  r.gflop = st.flops / 1e9;
  r.arena = st.arena_bytes;
  r.runs = 1;
  for (int i = 0; i < repeat; ++i) {
    call(&st);
    r.ms = i == 0 ? st.compute_ms : std::min(r.ms, st.compute_ms);
    ++r.runs;
  }
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s: %.1f ms compute (first call %.1f ms), %.1f GFLOP, %.1f GFLOP/s", name.c_str(),
                r.ms, r.ms_first, r.gflop, r.gflop / (r.ms / 1e3));
  log(buf);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string device = "cpu", only;
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
    else if (a == "--help" || a == "-h") {
      std::printf(
          "xpsr_bench [--device cpu|cuda|cuda:N] [--latent 64] [--steps N] [--only step,vae_encode,vae_decode,text] "
          "[--threads N] [--repeat N]\n");
      return 0;
    } else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  auto want = [&](const char* c) { return only.empty() || only.find(c) != std::string::npos; };
  const bool cuda = device.rfind("cuda", 0) == 0;
  if (repeat < 0) repeat = cuda ? 5 : 0;  // CPU: one run per component (minutes at full size)
  try {
    std::unique_ptr<Backend> be = make_backend(device, threads).backend;
    std::string desc = be->description();
    Engine e(std::move(be), 4);
    log("device: " + desc);
    std::vector<Result> results;
    int launches_per_step = -1, graph_nodes_per_step = -1;

    // Baseline: a large GEMM through the same backend op (M x K by K x N), best of a few runs.
    double gemm_gflops = 0;
    {
      const int M = 8192, K = 1280, N = 1280;
      Backend& b = e.backend();
      HostTensor wt = randn({N, K}, 11, 0.03f), xt = randn({M, K}, 12);
      auto wgt = b.upload("bench.gemm", WeightKind::Linear, {N, K}, wt.data.data());
      size_t es = dtype_size(b.act_dtype());
      void* x = b.alloc((size_t)M * K * es);
      void* y = b.alloc((size_t)M * N * es);
      b.upload_act(x, xt.data.data(), xt.data.size());
      LinearArgs a;
      a.x = x, a.M = M, a.K = K, a.ldx = K, a.w = wgt.get(), a.y = y, a.N = N, a.ldy = N;
      double best = 1e30;
      for (int i = 0; i < (cuda ? 20 : 3); ++i) {
        double t = now_ms();
        b.linear(a);
        b.synchronize();
        best = std::min(best, now_ms() - t);
      }
      b.free(x);
      b.free(y);
      gemm_gflops = 2.0 * M * N * K / 1e9 / (best / 1e3);
      log("baseline GEMM 8192x1280x1280: " + std::to_string(gemm_gflops) + " GFLOP/s");
    }
    const int h = latent, w = latent, H = 8 * h, W = 8 * w;
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
          [&](RunStats* st) { e.step(req, nullptr, st); }, repeat));
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
        for (int s = 0; s < steps; ++s) {
          req.in.timestep = 951 - 50 * s;
          req.reuse_constants = s > 0;
          e.step(req);
        }
        Result r;
        r.name = "denoise_loop_" + std::to_string(steps) + "_steps";
        r.ms = r.ms_first = now_ms() - t0;
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
      ModelInfo vae = e.load(ModelKind::Vae, o);
      if (want("vae_encode")) {
        VaeEncodeRequest req{vae.id, randn({1, 3, H, W}, 7, 0.5f), false};
        results.push_back(measure(
            "vae_encode_" + std::to_string(H) + "x" + std::to_string(W),
            [&](RunStats* st) { e.vae_encode(req, nullptr, st); }, repeat));
      }
      if (want("vae_decode")) {
        VaeDecodeRequest req{vae.id, randn({1, 4, h, w}, 8), false};
        results.push_back(measure(
            "vae_decode_" + std::to_string(H) + "x" + std::to_string(W),
            [&](RunStats* st) { e.vae_decode(req, nullptr, st); }, repeat));
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
          "text_encoder_1x77", [&](RunStats* st) { e.text_encode(req, nullptr, st); }, cuda ? repeat : 2));
      e.unload(te.id);
    }

    std::ostringstream js;
    js << "{\n  \"device\": \"" << device << "\",\n  \"description\": \"" << desc << "\",\n  \"latent\": [" << h << ", "
       << w << "],\n  \"hardware_threads\": " << std::thread::hardware_concurrency()
       << ",\n  \"baseline_gemm_gflops_per_s\": " << gemm_gflops << ",\n  \"components\": {";
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      js << (i ? "," : "") << "\n    \"" << r.name << "\": {\"ms\": " << r.ms << ", \"first_call_ms\": " << r.ms_first
         << ", \"gflop\": " << r.gflop << ", \"gflops_per_s\": " << (r.ms > 0 ? r.gflop / (r.ms / 1e3) : 0)
         << ", \"ratio_to_gemm\": " << (r.ms > 0 && gemm_gflops > 0 ? r.gflop / (r.ms / 1e3) / gemm_gflops : 0)
         << ", \"arena_mib\": " << (r.arena >> 20) << ", \"runs\": " << r.runs << "}";
    }
    js << "\n  }";
#ifdef XPSR_HAVE_CUDA
    if (cuda) {
      const CudaBackendStats st = cuda_backend_stats(e.backend());
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
