// Whole networks at full SD-1.5 + XPSR size with synthetic weights: the CUDA backend (fp16 storage,
// fp32 accumulation) against the CPU backend (fp32), same weights and inputs. Also checks that a
// CUDA-graph replay of a plan gives the same result as its eager run. Skips without a CUDA device.
// Tolerance: relative RMS error <= 2e-2 and max abs error <= 1e-1 * max(1, max|ref|) — the error of fp16
// storage through ~100 layers of random (not trained) weights; the op-level tests hold each kernel to
// its own, tighter bound.
#include <cmath>
#include <cstdio>
#include <random>

#include "bench/sd15_configs.h"
#include "engine/engine.h"
#include "test.h"
#ifdef XPSR_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

using namespace xpsr;

#ifdef XPSR_HAVE_CUDA
namespace {

bool have_gpu(std::string* why) { return !list_cuda_devices(why).empty(); }


void compare(const char* what, const TensorOut& gpu, const TensorOut& cpu) {
  CHECK(gpu.shape == cpu.shape);
  double se = 0, sr = 0, maxd = 0, maxr = 0;
  for (size_t i = 0; i < cpu.data.size(); ++i) {
    double d = (double)gpu.data[i] - cpu.data[i];
    se += d * d, sr += (double)cpu.data[i] * cpu.data[i];
    maxd = std::max(maxd, std::fabs(d)), maxr = std::max(maxr, (double)std::fabs(cpu.data[i]));
  }
  double rel_rms = std::sqrt(se / std::max(sr, 1e-30));
  double tol = 1e-1 * std::max(1.0, maxr);
  std::printf("    %-28s rel_rms %.3g (tol 2e-2)  max_abs %.3g (tol %.3g)\n", what, rel_rms, maxd, tol);
  CHECK(rel_rms <= 2e-2);
  CHECK(maxd <= tol);
}

// Runs `req` on both backends after loading `kind` with `config` (same synthetic seed) on each.
OutputMap run_on(Engine& e, ModelKind kind, const char* config, RunRequest req, uint64_t seed) {
  LoadOptions o;
  o.synthetic = true;
  o.config_json = config;
  o.seed = seed;
  req.models = {e.load(kind, o).id};
  return e.run(req);
}

}  // namespace

TEST(cuda_full_size_text_encoder_vae) {
  std::string why;
  if (!have_gpu(&why)) SKIP("no CUDA device: " + why);
  Engine cpu(make_cpu_backend(0)), gpu(make_cuda_backend(0));
  RunRequest t;
  t.entry = "encode";
  t.inputs["input_ids"].shape = {2, 77};
  for (int i = 0; i < 154; ++i) t.inputs["input_ids"].i64.push_back(i % 77 == 0 ? 49406 : (i % 77 < 30 ? 300 + i : 49407));
  compare("text encoder [2,77,768]", run_on(gpu, ModelKind::TextEncoder, kCLIP, t, 3).at("last_hidden_state"),
          run_on(cpu, ModelKind::TextEncoder, kCLIP, t, 3).at("last_hidden_state"));
  RunRequest enc;
  enc.entry = "encode";
  enc.inputs["x"] = randn({1, 3, 256, 200}, 4, 0.5f);  // odd latent width 25
  compare("vae encode 256x200", run_on(gpu, ModelKind::VAE, kVAE, enc, 5).at("moments"),
          run_on(cpu, ModelKind::VAE, kVAE, enc, 5).at("moments"));
  RunRequest dec;
  dec.entry = "decode";
  dec.inputs["z"] = randn({1, 4, 64, 64}, 6);
  compare("vae decode 64x64 -> 512x512", run_on(gpu, ModelKind::VAE, kVAE, dec, 5).at("image"),
          run_on(cpu, ModelKind::VAE, kVAE, dec, 5).at("image"));
}

TEST(cuda_full_size_cfg_step_and_graph_replay) {
  std::string why;
  if (!have_gpu(&why)) SKIP("no CUDA device: " + why);
  for (int lat : {64, 37}) {  // the common 512x512 case and an odd latent (upsample-size forwarding)
    OutputMap out[2];
    for (int b = 0; b < 2; ++b) {
      Engine e(b == 0 ? make_cpu_backend(0) : make_cuda_backend(0));
      LoadOptions o;
      o.synthetic = true;
      o.config_json = kControlNet;
      o.seed = 7;
      ModelInfo cn = e.load(ModelKind::ControlNet, o);
      o.config_json = kUNet;
      o.seed = 8;
      ModelInfo un = e.load(ModelKind::UNet, o);
      RunRequest req;
      req.entry = "step";
      req.models = {cn.id, un.id};
      req.inputs["sample"] = randn({2, 4, lat, lat}, 1);
      req.inputs["ctx_high"] = randn({2, 77, 768}, 2);
      req.inputs["ctx_low"] = randn({2, 77, 768}, 3);
      TensorIn img = randn({2, 3, 8 * lat, 8 * lat}, 9, 0.3f);
      for (auto& v : img.f32) v = std::fabs(v);
      req.inputs["image"] = img;
      req.params["timestep"] = 501;
      out[b] = e.run(req);
      if (b == 1) {  // second run captures a CUDA graph, third replays it: same numbers as eager
        OutputMap again = e.run(req), replay = e.run(req);
        CHECK(again.at("noise_pred").data == out[1].at("noise_pred").data);
        CHECK(replay.at("noise_pred").data == out[1].at("noise_pred").data);
      }
    }
    char what[64];
    std::snprintf(what, sizeof what, "cfg step latent %dx%d", lat, lat);
    compare(what, out[1].at("noise_pred"), out[0].at("noise_pred"));
  }
}
#else
TEST(cuda_full_size_networks) { SKIP("built without the CUDA backend (nvcc not found or XPSR_CUDA=off)"); }
#endif
