// The networks are sized only from config.json: configs other than the fixtures' (per-block head counts,
// layers_per_block 2, non-square odd latents, RRDB preprocessor, linear projections, UNet without SFA)
// build and run through the same code. With random weights there is no golden output, so these tests
// check what must hold for any weights: shapes, finiteness, batch-row independence (a row computed in a
// batch of 2 equals the same row computed alone), and the SFA bypass semantics.
#include <cmath>
#include <string>

#include "engine/engine.h"
#include "test.h"

using namespace xpsr;

namespace {

const char* kTrunk = R"("in_channels":4,"block_out_channels":[32,64,64],
 "down_block_types":["CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],"layers_per_block":2,
 "attention_head_dim":[1,2,4],"cross_attention_dim":24,"norm_num_groups":8,"norm_eps":1e-5,"flip_sin_to_cos":true,"freq_shift":0)";

std::string unet_cfg(bool lowlevel) {
  return std::string("{") + kTrunk + R"(,"out_channels":4,"up_block_types":["UpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"],
   "up_use_lowlevel_prompt":[false,)" + (lowlevel ? "true,true" : "false,false") + R"(],"mid_use_lowlevel_prompt":)" +
         (lowlevel ? "true" : "false") + R"(,"down_use_lowlevel_prompt":)" + (lowlevel ? "true" : "false") + "}";
}
std::string cn_cfg(bool rrdb) {
  return std::string("{") + kTrunk + R"(,"conditioning_embedding_out_channels":[8,16,16,32],"use_lowlevel_prompt":true,"use_rrdb":)" +
         (rrdb ? "true" : "false") + "}";
}

TensorIn ramp(std::vector<int64_t> shape, float scale, float phase) {
  TensorIn t;
  t.shape = shape;
  size_t n = 1;
  for (auto d : shape) n *= (size_t)d;
  t.f32.resize(n);
  for (size_t i = 0; i < n; ++i) t.f32[i] = scale * std::sin(0.37f * (float)i + phase);
  return t;
}

TensorIn row(const TensorIn& t, int r) {
  TensorIn o;
  o.shape = t.shape;
  o.shape[0] = 1;
  size_t per = t.f32.size() / t.shape[0];
  o.f32.assign(t.f32.begin() + r * per, t.f32.begin() + (r + 1) * per);
  return o;
}

void check_finite(const TensorOut& t) {
  for (float v : t.data) CHECK(std::isfinite(v));
}

double max_diff(const float* a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, (double)std::fabs(a[i] - b[i]));
  return m;
}

}  // namespace

TEST(configs_step_per_block_heads_two_layers_odd_latent) {
  for (bool rrdb : {false, true}) {
    Engine e(make_cpu_backend(0));
    LoadOptions o;
    o.synthetic = true;
    o.config_json = cn_cfg(rrdb);
    ModelInfo cn = e.load(ModelKind::ControlNet, o);
    o.config_json = unet_cfg(false);
    ModelInfo un = e.load(ModelKind::UNet, o);
    const int h = 9, w = 7;  // odd, non-square: exercises ceil-division downsampling and sized upsampling
    RunRequest r;
    r.entry = "step";
    r.models = {cn.id, un.id};
    r.inputs["sample"] = ramp({2, 4, h, w}, 1.f, 0.f);
    r.inputs["ctx_high"] = ramp({2, 77, 24}, 1.f, 1.f);
    r.inputs["ctx_low"] = ramp({2, 77, 24}, 1.f, 2.f);
    TensorIn img = ramp({2, 3, 8 * h, 8 * w}, 0.5f, 3.f);
    for (auto& v : img.f32) v = v * 0.5f + 0.5f;
    r.inputs["image"] = img;
    r.params["timestep"] = 501;
    r.intermediates = true;
    OutputMap both = e.run(r);
    CHECK(both.at("noise_pred").shape == (std::vector<int64_t>{2, 4, h, w}));
    check_finite(both.at("noise_pred"));
    // 1 + 3 levels x 2 layers + 2 downsamplers = 9 down residuals + mid.
    int res = 0;
    for (auto& kv : both) res += kv.first.rfind("controlnet.", 0) == 0;
    CHECK(res == 10);
    // Row 1 computed alone equals row 1 of the batch.
    RunRequest r1 = r;
    r1.intermediates = false;
    for (auto* k : {"sample", "ctx_high", "ctx_low", "image"}) r1.inputs[k] = row(r.inputs[k], 1);
    OutputMap one = e.run(r1);
    const auto& b = both.at("noise_pred").data;
    double d = max_diff(b.data() + b.size() / 2, one.at("noise_pred").data.data(), b.size() / 2);
    std::printf("    rrdb=%d: row-1 batch vs alone max diff %.3g\n", (int)rrdb, d);
    CHECK(d < 1e-4);
  }
}

TEST(configs_unet_with_lowlevel_branches_and_bypass) {
  Engine e(make_cpu_backend(0));
  LoadOptions o;
  o.synthetic = true;
  o.config_json = unet_cfg(true);
  ModelInfo un = e.load(ModelKind::UNet, o);
  const int h = 8, w = 10;
  RunRequest r;
  r.entry = "forward";
  r.models = {un.id};
  r.inputs["sample"] = ramp({1, 4, h, w}, 1.f, 0.f);
  r.inputs["ctx_high"] = ramp({1, 77, 24}, 1.f, 1.f);
  r.inputs["ctx_low"] = ramp({1, 77, 24}, 1.f, 2.f);
  const int widths[] = {32, 32, 32, 32, 64, 64, 64, 64, 64};
  const int hs[] = {h, h, h, h / 2, h / 2, h / 2, h / 4, h / 4, h / 4};
  const int ws[] = {w, w, w, w / 2, w / 2, w / 2, (w / 2 + 1) / 2, (w / 2 + 1) / 2, (w / 2 + 1) / 2};
  for (int k = 0; k < 9; ++k) {
    char name[64];
    std::snprintf(name, sizeof name, "down_block_additional_residuals.%02d", k);
    r.inputs[name] = ramp({1, widths[k], hs[k], ws[k]}, 0.5f, (float)k);
  }
  r.inputs["mid_block_additional_residual"] = ramp({1, 64, h / 4, ws[8]}, 0.5f, 9.f);
  r.params["timestep"] = 11;
  OutputMap with_low = e.run(r);
  check_finite(with_low.at("sample_out"));
  CHECK(with_low.at("sample_out").shape == (std::vector<int64_t>{1, 4, h, w}));
  // Without a low-level context the SFA units are bypassed: a different function of the same weights.
  r.inputs.erase("ctx_low");
  OutputMap bypass = e.run(r);
  check_finite(bypass.at("sample_out"));
  double d = max_diff(with_low.at("sample_out").data.data(), bypass.at("sample_out").data.data(), 4 * h * w);
  CHECK(d > 1e-3);
}

TEST(configs_vae_layers_per_block_2_and_clip_gelu) {
  Engine e(make_cpu_backend(0));
  LoadOptions o;
  o.synthetic = true;
  o.config_json = R"({"in_channels":3,"out_channels":3,"latent_channels":4,"block_out_channels":[32,64],"layers_per_block":2,"norm_num_groups":16})";
  ModelInfo vae = e.load(ModelKind::VAE, o);
  RunRequest r;
  r.entry = "encode";
  r.models = {vae.id};
  r.inputs["x"] = ramp({1, 3, 18, 14}, 0.8f, 0.f);  // 2 levels: /2 with the VAE's (0,1,0,1) padding
  OutputMap m = e.run(r);
  CHECK(m.at("moments").shape == (std::vector<int64_t>{1, 8, 9, 7}));
  check_finite(m.at("moments"));
  RunRequest d;
  d.entry = "decode";
  d.models = {vae.id};
  d.inputs["z"] = ramp({1, 4, 5, 3}, 1.f, 0.f);
  OutputMap img = e.run(d);
  CHECK(img.at("image").shape == (std::vector<int64_t>{1, 3, 10, 6}));
  o.config_json = R"({"vocab_size":100,"hidden_size":16,"intermediate_size":40,"num_hidden_layers":3,"num_attention_heads":4,"max_position_embeddings":20,"hidden_act":"gelu"})";
  ModelInfo te = e.load(ModelKind::TextEncoder, o);
  RunRequest t;
  t.entry = "encode";
  t.models = {te.id};
  t.inputs["input_ids"].shape = {2, 20};
  for (int i = 0; i < 40; ++i) t.inputs["input_ids"].i64.push_back((i * 7) % 100);
  OutputMap th = e.run(t);
  CHECK(th.at("last_hidden_state").shape == (std::vector<int64_t>{2, 20, 16}));
  check_finite(th.at("last_hidden_state"));
  // Causal mask: changing the last token must not change earlier positions.
  RunRequest t2 = t;
  t2.inputs["input_ids"].i64[19] = 3;
  OutputMap th2 = e.run(t2);
  CHECK(max_diff(th.at("last_hidden_state").data.data(), th2.at("last_hidden_state").data.data(), 19 * 16) == 0);
  CHECK(max_diff(th.at("last_hidden_state").data.data() + 19 * 16, th2.at("last_hidden_state").data.data() + 19 * 16, 16) > 0);
}
