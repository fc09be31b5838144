// Parity of every network against the golden outputs of the official implementation (test/fixtures,
// tiny models in the real checkpoint layout), through the Engine on the CPU backend — and, when built
// with CUDA and a GPU is present, through the CUDA backend with fp16 tolerances, and on CPUs with
// AVX512_BF16 also through the CPU backend's bf16 compute mode (native/cpu/cpu_backend.h).
// Tolerance (fixtures README): max_abs <= 1e-4 * max(1, max|ref|) for fp32; stated looser bounds for
// fp16 (2e-2) and bf16 (1e-1: bf16 keeps 8 significant bits; measured worst 5.6e-2, docs/benchmarks.md).
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>

#include "cpu/cpu_backend.h"
#include "engine/engine.h"
#include "engine/io/tensor_file.h"
#include "test.h"
#ifdef XPSR_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

using namespace xpsr;

namespace {

struct Fixture {
  std::unique_ptr<TensorFile> file;
  explicit Fixture(const std::string& name) {
    std::string p = xpsr_test::fixtures_dir() + "/" + name;
    file = TensorFile::open(p);
  }
  const TensorView& view(const std::string& key) const {
    const TensorView* t = file->find(key);
    if (!t) throw xpsr_test::Failure{"fixture has no tensor '" + key + "'"};
    return *t;
  }
  HostTensor in(const std::string& key) const {
    HostTensor r;
    r.shape = view(key).shape;
    r.data = to_f32(view(key));
    return r;
  }
  TokenIds ids(const std::string& key) const {
    const TensorView& t = view(key);
    if (t.shape.size() != 2) throw xpsr_test::Failure{"fixture '" + key + "' is not [B, L]"};
    return TokenIds{t.shape[0], t.shape[1], to_i64(t)};
  }
  int64_t scalar(const std::string& key) const { return to_i64(view(key)).at(0); }
};

bool fixtures_present() {
  FILE* f = std::fopen((xpsr_test::fixtures_dir() + "/unet.safetensors").c_str(), "rb");
  if (f) std::fclose(f);
  return f != nullptr;
}

// Every tensor an entry returned, by the reference name: its results and its intermediates.
using OutputMap = std::map<std::string, HostTensor>;
OutputMap with(Intermediates m, std::initializer_list<std::pair<std::string, HostTensor>> results) {
  for (auto& r : results) m[r.first] = r.second;
  return m;
}

// Compares every output present in both; returns the number of failures and prints one line each.
int compare_all(const OutputMap& got, const Fixture& fx, const std::map<std::string, std::string>& rename,
                double rel_tol, int* compared, double* worst) {
  int failures = 0;
  for (auto& kv : got) {
    std::string ref_name = rename.count(kv.first) ? rename.at(kv.first) : kv.first;
    const TensorView* t = fx.file->find(ref_name);
    if (!t) continue;
    std::vector<float> ref = to_f32(*t);
    if (ref.size() != kv.second.data.size()) {
      std::printf("    %-52s FAIL size %zu vs %zu\n", ref_name.c_str(), kv.second.data.size(), ref.size());
      ++failures;
      continue;
    }
    double max_ref = 0, max_abs = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      max_ref = std::max(max_ref, (double)std::fabs(ref[i]));
      double d = std::fabs((double)kv.second.data[i] - ref[i]);
      if (!(d <= max_abs)) max_abs = std::isnan(d) ? INFINITY : d;
    }
    double tol = rel_tol * std::max(1.0, max_ref);
    bool ok = max_abs <= tol;
    *worst = std::max(*worst, max_abs / std::max(1.0, max_ref));
    if (!ok || std::getenv("XPSR_PARITY_VERBOSE"))
      std::printf("    %-52s max_abs %.3g tol %.3g %s\n", ref_name.c_str(), max_abs, tol, ok ? "PASS" : "FAIL");
    failures += !ok;
    ++*compared;
  }
  return failures;
}

struct Backends {
  std::vector<std::pair<std::string, std::function<std::unique_ptr<Backend>()>>> list;
  Backends() {
    list.push_back({"cpu", [] { return make_cpu_backend(CpuBackendOptions{0, CpuPrecision::F32}); }});
    if (cpu_bf16_available())
      list.push_back({"cpu-bf16", [] { return make_cpu_backend(CpuBackendOptions{0, CpuPrecision::BF16}); }});
#ifdef XPSR_HAVE_CUDA
    std::string why;
    if (!list_cuda_devices(&why).empty()) list.push_back({"cuda", [] { return make_cuda_backend(0); }});
#endif
  }
};

// fp32 tolerance from the fixtures README; fp16 storage on CUDA gets a looser, stated bound.
double tol_for(const std::string& backend) { return backend == "cpu" ? 1e-4 : backend == "cpu-bf16" ? 1e-1 : 2e-2; }

// Inputs come from `fixture`, reference outputs from `ref_fixture` (default: the same file).
void run_parity(const char* fixture, const std::function<OutputMap(Engine&, const Fixture&)>& fn,
                const std::map<std::string, std::string>& rename, int min_compared, const char* ref_fixture = nullptr) {
  if (!fixtures_present()) SKIP("fixtures not found in " + xpsr_test::fixtures_dir());
  Fixture fx(fixture);
  Fixture ref(ref_fixture ? ref_fixture : fixture);
  for (auto& [name, make] : Backends().list) {
    Engine eng(make());
    OutputMap out = fn(eng, fx);
    int compared = 0;
    double worst = 0;
    int failures = compare_all(out, ref, rename, tol_for(name), &compared, &worst);
    std::printf("    %s on %s: %d tensors compared, %d failed, worst max_abs / max(1, max|ref|) %.2e\n", fixture,
                name.c_str(), compared, failures, worst);
    CHECK_MSG(compared >= min_compared, "too few tensors compared");
    CHECK(failures == 0);
  }
}

std::string model_dir(const char* sub) { return xpsr_test::fixtures_dir() + "/model/" + sub; }

}  // namespace

static int load(Engine& e, ModelKind kind, const char* dir) {
  LoadOptions o;
  o.path = model_dir(dir);
  return e.load(kind, o).id;
}

TEST(parity_text_encoder) {
  run_parity(
      "text_encoder.safetensors",
      [](Engine& e, const Fixture& fx) {
        TextEncodeRequest r;
        r.model = load(e, ModelKind::TextEncoder, "text_encoder");
        r.input_ids = fx.ids("input_ids");
        r.intermediates = true;
        TextEncodeResult out = e.text_encode(r);
        return with(out.intermediates, {{"last_hidden_state", out.last_hidden_state}});
      },
      {}, 4);
}
TEST(parity_vae_encoder) {
  run_parity(
      "vae_encoder.safetensors",
      [](Engine& e, const Fixture& fx) {
        VaeEncodeRequest r;
        r.model = load(e, ModelKind::Vae, "vae");
        r.x = fx.in("x");
        r.intermediates = true;
        VaeEncodeResult out = e.vae_encode(r);
        return with(out.intermediates, {{"moments", out.moments}});
      },
      {}, 4);
}
TEST(parity_vae_decoder) {
  run_parity(
      "vae_decoder.safetensors",
      [](Engine& e, const Fixture& fx) {
        VaeDecodeRequest r;
        r.model = load(e, ModelKind::Vae, "vae");
        r.z = fx.in("z");
        r.intermediates = true;
        VaeDecodeResult out = e.vae_decode(r);
        return with(out.intermediates, {{"image", out.image}});
      },
      {}, 4);
}

static OutputMap run_controlnet(Engine& e, const Fixture& fx) {
  ControlNetRequest r;
  r.model = load(e, ModelKind::ControlNet, "controlnet");
  r.in.sample = fx.in("input.sample");
  r.in.ctx_high = fx.in("input.encoder_hidden_states");
  r.in.ctx_low = fx.in("input.lowlevel_encoder_hidden_states");
  r.in.image = fx.in("input.controlnet_cond");
  r.in.timestep = (double)fx.scalar("input.timestep");
  auto* md = fx.file->metadata().count("conditioning_scale") ? &fx.file->metadata().at("conditioning_scale") : nullptr;
  if (md) r.in.conditioning_scale = std::stod(*md);
  r.intermediates = true;
  ControlNetResult out = e.controlnet_forward(r);
  OutputMap m = with(out.intermediates, {{"mid_block_res_sample", out.mid}});
  for (size_t k = 0; k < out.down.size(); ++k) {
    char name[64];
    std::snprintf(name, sizeof name, "down_block_res_samples.%02zu", k);
    m[name] = out.down[k];
  }
  return m;
}

TEST(parity_controlnet) { run_parity("controlnet.safetensors", run_controlnet, {}, 9); }
TEST(parity_controlnet_intermediates) {
  run_parity("controlnet.safetensors", run_controlnet, {}, 30, "controlnet_intermediates.safetensors");
}

static std::function<OutputMap(Engine&, const Fixture&)> unet_runner(const char* dir) {
  return [dir](Engine& e, const Fixture& fx) {
    UNetRequest r;
    r.model = load(e, ModelKind::UNet, dir);
    r.sample = fx.in("input.sample");
    r.ctx_high = fx.in("input.encoder_hidden_states");
    r.ctx_low = fx.in("input.lowlevel_encoder_hidden_states");
    for (int k = 0;; ++k) {
      char name[80];
      std::snprintf(name, sizeof name, "input.down_block_additional_residuals.%02d", k);
      if (!fx.file->find(name)) break;
      r.down.push_back(fx.in(name));
    }
    r.mid = fx.in("input.mid_block_additional_residual");
    r.timestep = (double)fx.scalar("input.timestep");
    r.intermediates = true;
    UNetResult out = e.unet_forward(r);
    return with(out.intermediates, {{"sample_out", out.sample}});
  };
}

TEST(parity_unet) { run_parity("unet.safetensors", unet_runner("unet"), {}, 1); }
TEST(parity_unet_intermediates) {
  run_parity("unet.safetensors", unet_runner("unet"), {}, 30, "unet_intermediates.safetensors");
}
TEST(parity_unet_lowlevel_variant) {
  run_parity("unet_lowlevel_variant.safetensors", unet_runner("unet_lowlevel_variant"), {}, 20);
}
