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

void compare(const char* what, const HostTensor& gpu, const HostTensor& cpu) {
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

// Loads `kind` with `config` (synthetic weights of `seed`, so both backends get the same) and returns its id.
int load_synthetic(Engine& e, ModelKind kind, const char* config, uint64_t seed) {
  LoadOptions o;
  o.synthetic = true;
  o.config_json = config;
  o.seed = seed;
  return e.load(kind, o).id;
}

}  // namespace

TEST(cuda_full_size_text_encoder_vae) {
  std::string why;
  if (!have_gpu(&why)) SKIP("no CUDA device: " + why);
  Engine cpu(make_cpu_backend(0)), gpu(make_cuda_backend(0));
  TextEncodeRequest t;
  t.input_ids = TokenIds{2, 77, {}};
  for (int i = 0; i < 154; ++i) t.input_ids.ids.push_back(i % 77 == 0 ? 49406 : (i % 77 < 30 ? 300 + i : 49407));
  HostTensor th[2];
  for (int b = 0; b < 2; ++b) {
    Engine& e = b ? gpu : cpu;
    t.model = load_synthetic(e, ModelKind::TextEncoder, kCLIP, 3);
    th[b] = e.text_encode(t).last_hidden_state;
  }
  compare("text encoder [2,77,768]", th[1], th[0]);
  HostTensor enc[2], dec[2];
  for (int b = 0; b < 2; ++b) {
    Engine& e = b ? gpu : cpu;
    int vae = load_synthetic(e, ModelKind::Vae, kVAE, 5);
    enc[b] =
        e.vae_encode(VaeEncodeRequest{vae, randn({1, 3, 256, 200}, 4, 0.5f), false}).moments;  // odd latent width 25
    dec[b] = e.vae_decode(VaeDecodeRequest{vae, randn({1, 4, 64, 64}, 6), false}).image;
  }
  compare("vae encode 256x200", enc[1], enc[0]);
  compare("vae decode 64x64 -> 512x512", dec[1], dec[0]);
}

TEST(cuda_full_size_cfg_step_and_graph_replay) {
  std::string why;
  if (!have_gpu(&why)) SKIP("no CUDA device: " + why);
  for (int lat : {64, 37}) {  // the common 512x512 case and an odd latent (upsample-size forwarding)
    HostTensor out[2];
    for (int b = 0; b < 2; ++b) {
      Engine e(b == 0 ? make_cpu_backend(0) : make_cuda_backend(0));
      StepRequest req;
      req.controlnet = load_synthetic(e, ModelKind::ControlNet, kControlNet, 7);
      req.unet = load_synthetic(e, ModelKind::UNet, kUNet, 8);
      req.in.sample = randn({2, 4, lat, lat}, 1);
      req.in.ctx_high = randn({2, 77, 768}, 2);
      req.in.ctx_low = randn({2, 77, 768}, 3);
      HostTensor img = randn({2, 3, 8 * lat, 8 * lat}, 9, 0.3f);
      for (auto& v : img.data) v = std::fabs(v);
      req.in.image = img;
      req.in.timestep = 501;
      out[b] = e.step(req).noise_pred;
      if (b == 1) {  // second run captures a CUDA graph, third replays it: same numbers as eager
        HostTensor again = e.step(req).noise_pred, replay = e.step(req).noise_pred;
        CHECK(again.data == out[1].data);
        CHECK(replay.data == out[1].data);
      }
    }
    char what[64];
    std::snprintf(what, sizeof what, "cfg step latent %dx%d", lat, lat);
    compare(what, out[1], out[0]);
  }
}
#else
TEST(cuda_full_size_networks) { SKIP("built without the CUDA backend (nvcc not found or XPSR_CUDA=off)"); }
#endif
