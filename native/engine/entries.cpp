// Graph builders of the engine entries (entries.h).
#include "entries.h"

#include <cstdio>

#include "models/clip_text_encoder.h"
#include "models/controlnet.h"
#include "models/unet.h"
#include "models/vae.h"

namespace xpsr {

namespace names {
static std::string numbered(const char* base, size_t k) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s.%02zu", base, k);
  return buf;
}
std::string down_residual(size_t k) { return numbered("down_block_res_samples", k); }
std::string down_residual_in(size_t k) { return numbered("down_block_additional_residuals", k); }
}  // namespace names

namespace {

std::unique_ptr<Graph> new_graph(Backend& be, bool taps) {
  auto g = std::make_unique<Graph>(be);
  g->keep_taps(taps);
  return g;
}

// Token sequence input [N, L, D] (stored as Dims{N, 1, L, D}).
Val sequence(Graph& g, const char* name, int n, int len, int width) { return g.input(name, Dims{n, 1, len, width}); }

// The denoising networks' shared inputs: sample, the timestep features of `trunk`, the contexts.
struct DenoiseInputs {
  Val sample, time_features, ctx_high, ctx_low;
};
DenoiseInputs denoise_inputs(Graph& g, const UNetConfig& trunk, const DenoiseShape& s, const char* time_name) {
  DenoiseInputs in;
  const int n = s.sample.n;
  in.sample = g.input(names::kSample, s.sample);
  in.time_features = g.input(time_name, Dims{n, 1, 1, trunk.block_out_channels[0]});
  in.ctx_high = sequence(g, names::kCtxHigh, n, s.ctx_len, trunk.cross_attention_dim);
  if (s.low_len > 0) in.ctx_low = sequence(g, names::kCtxLow, n, s.low_len, trunk.cross_attention_dim);
  return in;
}

// The ControlNet's residuals (down..., mid last) from the inputs of `s`.
std::vector<Val> controlnet_residuals(Graph& g, const ControlNet& cn, const DenoiseShape& s, const DenoiseInputs& in,
                                      float scale) {
  Val cond = s.image_condition ? cn.cond_embedding(g, g.input(names::kImage, s.condition))
                               : g.input(names::kCond, s.condition);
  const Dims &cd = g.dims(cond), &sd = s.sample;
  if (cd.h != sd.h || cd.w != sd.w)
    fail(ErrorCode::ShapeMismatch, "controlnet: the condition must match the latent (latent ", sd.str(),
         ", condition embedding ", cd.str(), "; a condition image is 8x the latent size)");
  return cn.forward(g, in.sample, in.time_features, in.ctx_high, in.ctx_low, cond, scale);
}

}  // namespace

std::unique_ptr<Graph> build_text_encode(Backend& be, const ClipTextEncoder& te, int batch, int length, bool taps) {
  auto g = new_graph(be, taps);
  Val ids = g->input_ids(names::kInputIds, batch * length), pos = g->input_ids(names::kPositionIds, batch * length);
  g->output(names::kLastHiddenState, te.forward(*g, ids, pos, batch, length));
  return g;
}

std::unique_ptr<Graph> build_vae_encode(Backend& be, const Vae& vae, Dims x, bool taps) {
  auto g = new_graph(be, taps);
  g->output(names::kMoments, vae.encode(*g, g->input(names::kX, x)));
  return g;
}

std::unique_ptr<Graph> build_vae_decode(Backend& be, const Vae& vae, Dims z, bool taps) {
  auto g = new_graph(be, taps);
  g->output(names::kImage, vae.decode(*g, g->input(names::kZ, z)));
  return g;
}

std::unique_ptr<Graph> build_cond_embedding(Backend& be, const ControlNet& cn, Dims image, bool taps) {
  auto g = new_graph(be, taps);
  g->output(names::kCond, cn.cond_embedding(*g, g->input(names::kImage, image)));
  return g;
}

std::unique_ptr<Graph> build_controlnet(Backend& be, const ControlNet& cn, const DenoiseShape& s, float scale,
                                        bool taps) {
  auto g = new_graph(be, taps);
  DenoiseInputs in = denoise_inputs(*g, cn.trunk.config, s, names::kTimeFeatures);
  std::vector<Val> res = controlnet_residuals(*g, cn, s, in, scale);
  for (size_t k = 0; k + 1 < res.size(); ++k) g->output(names::down_residual(k), res[k]);
  g->output(names::kMidResidual, res.back());
  return g;
}

std::unique_ptr<Graph> build_unet(Backend& be, const UNet& un, const DenoiseShape& s,
                                  const std::vector<Dims>& residuals, bool taps) {
  auto g = new_graph(be, taps);
  DenoiseInputs in = denoise_inputs(*g, un.config, s, names::kTimeFeatures);
  std::vector<Val> res;
  for (size_t k = 0; k + 1 < residuals.size(); ++k) res.push_back(g->input(names::down_residual_in(k), residuals[k]));
  res.push_back(g->input(names::kMidResidualIn, residuals.back()));
  g->output(names::kSampleOut, un.forward(*g, in.sample, in.time_features, in.ctx_high, in.ctx_low, res));
  return g;
}

std::unique_ptr<Graph> build_step(Backend& be, const ControlNet& cn, const UNet& un, const DenoiseShape& s, float scale,
                                  bool taps) {
  auto g = new_graph(be, taps);
  DenoiseInputs in = denoise_inputs(*g, cn.trunk.config, s, names::kTimeFeatures);
  Val tf_unet = g->input(names::kTimeFeaturesUNet, Dims{s.sample.n, 1, 1, un.config.block_out_channels[0]});
  std::vector<Val> res = controlnet_residuals(*g, cn, s, in, scale);
  if (taps) {
    const std::string p = names::kStepResidualPrefix;
    for (size_t k = 0; k + 1 < res.size(); ++k) g->output(p + names::down_residual(k), res[k]);
    g->output(p + names::kMidResidual, res.back());
  }
  g->keep_taps(false);  // the UNet's taps would collide with the ControlNet's names
  g->output(names::kNoisePred, un.forward(*g, in.sample, tf_unet, in.ctx_high, in.ctx_low, res));
  return g;
}

}  // namespace xpsr
