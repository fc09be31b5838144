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
  return std::string("{") + kTrunk +
         R"(,"out_channels":4,"up_block_types":["UpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"],
   "up_use_lowlevel_prompt":[false,)" +
         (lowlevel ? "true,true" : "false,false") + R"(],"mid_use_lowlevel_prompt":)" + (lowlevel ? "true" : "false") +
         R"(,"down_use_lowlevel_prompt":)" + (lowlevel ? "true" : "false") + "}";
}
std::string cn_cfg(bool rrdb) {
  return std::string("{") + kTrunk +
         R"(,"conditioning_embedding_out_channels":[8,16,16,32],"use_lowlevel_prompt":true,"use_rrdb":)" +
         (rrdb ? "true" : "false") + "}";
}

HostTensor ramp(std::vector<int64_t> shape, float scale, float phase) {
  HostTensor t;
  t.shape = shape;
  size_t n = 1;
  for (auto d : shape) n *= (size_t)d;
  t.data.resize(n);
  for (size_t i = 0; i < n; ++i) t.data[i] = scale * std::sin(0.37f * (float)i + phase);
  return t;
}

HostTensor row(const HostTensor& t, int r) {
  HostTensor o;
  o.shape = t.shape;
  o.shape[0] = 1;
  size_t per = t.data.size() / t.shape[0];
  o.data.assign(t.data.begin() + r * per, t.data.begin() + (r + 1) * per);
  return o;
}

void check_finite(const HostTensor& t) {
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
    StepRequest r;
    r.controlnet = cn.id, r.unet = un.id;
    r.in.sample = ramp({2, 4, h, w}, 1.f, 0.f);
    r.in.ctx_high = ramp({2, 77, 24}, 1.f, 1.f);
    r.in.ctx_low = ramp({2, 77, 24}, 1.f, 2.f);
    HostTensor img = ramp({2, 3, 8 * h, 8 * w}, 0.5f, 3.f);
    for (auto& v : img.data) v = v * 0.5f + 0.5f;
    r.in.image = img;
    r.in.timestep = 501;
    r.intermediates = true;
    StepResult both = e.step(r);
    CHECK(both.noise_pred.shape == (std::vector<int64_t>{2, 4, h, w}));
    check_finite(both.noise_pred);
    // 1 + 3 levels x 2 layers + 2 downsamplers = 9 down residuals + mid.
    CHECK(both.residuals.size() == 10);
    // Row 1 computed alone equals row 1 of the batch.
    StepRequest r1 = r;
    r1.intermediates = false;
    r1.in.sample = row(r.in.sample, 1), r1.in.ctx_high = row(r.in.ctx_high, 1);
    r1.in.ctx_low = row(*r.in.ctx_low, 1), r1.in.image = row(*r.in.image, 1);
    StepResult one = e.step(r1);
    const auto& b = both.noise_pred.data;
    double d = max_diff(b.data() + b.size() / 2, one.noise_pred.data.data(), b.size() / 2);
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
  UNetRequest r;
  r.model = un.id;
  r.sample = ramp({1, 4, h, w}, 1.f, 0.f);
  r.ctx_high = ramp({1, 77, 24}, 1.f, 1.f);
  r.ctx_low = ramp({1, 77, 24}, 1.f, 2.f);
  const int widths[] = {32, 32, 32, 32, 64, 64, 64, 64, 64};
  const int hs[] = {h, h, h, h / 2, h / 2, h / 2, h / 4, h / 4, h / 4};
  const int ws[] = {w, w, w, w / 2, w / 2, w / 2, (w / 2 + 1) / 2, (w / 2 + 1) / 2, (w / 2 + 1) / 2};
  for (int k = 0; k < 9; ++k) r.down.push_back(ramp({1, widths[k], hs[k], ws[k]}, 0.5f, (float)k));
  r.mid = ramp({1, 64, h / 4, ws[8]}, 0.5f, 9.f);
  r.timestep = 11;
  UNetResult with_low = e.unet_forward(r);
  check_finite(with_low.sample);
  CHECK(with_low.sample.shape == (std::vector<int64_t>{1, 4, h, w}));
  // Without a low-level context the SFA units are bypassed: a different function of the same weights.
  r.ctx_low.reset();
  UNetResult bypass = e.unet_forward(r);
  check_finite(bypass.sample);
  double d = max_diff(with_low.sample.data.data(), bypass.sample.data.data(), 4 * h * w);
  CHECK(d > 1e-3);
}

TEST(configs_vae_layers_per_block_2_and_clip_gelu) {
  Engine e(make_cpu_backend(0));
  LoadOptions o;
  o.synthetic = true;
  o.config_json =
      R"({"in_channels":3,"out_channels":3,"latent_channels":4,"block_out_channels":[32,64],"layers_per_block":2,"norm_num_groups":16})";
  ModelInfo vae = e.load(ModelKind::Vae, o);
  VaeEncodeRequest r;
  r.model = vae.id;
  r.x = ramp({1, 3, 18, 14}, 0.8f, 0.f);  // 2 levels: /2 with the VAE's (0,1,0,1) padding
  VaeEncodeResult m = e.vae_encode(r);
  CHECK(m.moments.shape == (std::vector<int64_t>{1, 8, 9, 7}));
  check_finite(m.moments);
  VaeDecodeRequest d;
  d.model = vae.id;
  d.z = ramp({1, 4, 5, 3}, 1.f, 0.f);
  VaeDecodeResult img = e.vae_decode(d);
  CHECK(img.image.shape == (std::vector<int64_t>{1, 3, 10, 6}));
  o.config_json =
      R"({"vocab_size":100,"hidden_size":16,"intermediate_size":40,"num_hidden_layers":3,"num_attention_heads":4,"max_position_embeddings":20,"hidden_act":"gelu"})";
  ModelInfo te = e.load(ModelKind::TextEncoder, o);
  TextEncodeRequest t;
  t.model = te.id;
  t.input_ids = TokenIds{2, 20, {}};
  for (int i = 0; i < 40; ++i) t.input_ids.ids.push_back((i * 7) % 100);
  TextEncodeResult th = e.text_encode(t);
  CHECK(th.last_hidden_state.shape == (std::vector<int64_t>{2, 20, 16}));
  check_finite(th.last_hidden_state);
  // Causal mask: changing the last token must not change earlier positions.
  TextEncodeRequest t2 = t;
  t2.input_ids.ids[19] = 3;
  TextEncodeResult th2 = e.text_encode(t2);
  const float* a = th.last_hidden_state.data.data();
  const float* b = th2.last_hidden_state.data.data();
  CHECK(max_diff(a, b, 19 * 16) == 0);
  CHECK(max_diff(a + 19 * 16, b + 19 * 16, 16) > 0);
}
