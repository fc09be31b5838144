// Graph builders, one per engine entry (Engine in engine.h validates the request, then records the graph
// of its exact shapes here and plans it). Every builder names its graph inputs and outputs with the names
// below; the engine uploads and downloads by these names. Taps (parity intermediates) are recorded only
// when `taps` is true.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "graph.h"

namespace xpsr {

struct ClipTextEncoder;
struct Vae;
struct ControlNet;
struct UNet;

// Graph input and output names.
namespace names {
constexpr const char* kInputIds = "input_ids";
constexpr const char* kPositionIds = "position_ids";
constexpr const char* kLastHiddenState = "last_hidden_state";
constexpr const char* kX = "x";
constexpr const char* kMoments = "moments";
constexpr const char* kZ = "z";
constexpr const char* kImage = "image";
constexpr const char* kCond = "cond";
constexpr const char* kSample = "sample";
constexpr const char* kCtxHigh = "ctx_high";
constexpr const char* kCtxLow = "ctx_low";
constexpr const char* kTimeFeatures = "time_features";                   // the (first) network's timestep features
constexpr const char* kTimeFeaturesUNet = "time_features_unet";          // the UNet's, in a step
constexpr const char* kMidResidual = "mid_block_res_sample";             // ControlNet output
constexpr const char* kMidResidualIn = "mid_block_additional_residual";  // UNet input
constexpr const char* kSampleOut = "sample_out";
constexpr const char* kNoisePred = "noise_pred";
constexpr const char* kStepResidualPrefix = "controlnet.";  // a step's ControlNet residual outputs
std::string down_residual(size_t k);                        // "down_block_res_samples.NN" (ControlNet output)
std::string down_residual_in(size_t k);                     // "down_block_additional_residuals.NN" (UNet input)
}  // namespace names

// Shapes of the inputs of a ControlNet, UNet or step graph (channels-last Dims, see graph.h).
struct DenoiseShape {
  Dims sample;                   // [N, 4, h, w]
  int ctx_len = 0;               // tokens of ctx_high
  int low_len = 0;               // tokens of ctx_low; 0: no low-level context (the SFA bypass)
  bool image_condition = false;  // the condition input is "image" [N, 3, H, W] (else "cond" [N, C0, h, w])
  Dims condition;
};

std::unique_ptr<Graph> build_text_encode(Backend& be, const ClipTextEncoder& te, int batch, int length, bool taps);
std::unique_ptr<Graph> build_vae_encode(Backend& be, const Vae& vae, Dims x, bool taps);
std::unique_ptr<Graph> build_vae_decode(Backend& be, const Vae& vae, Dims z, bool taps);
std::unique_ptr<Graph> build_cond_embedding(Backend& be, const ControlNet& cn, Dims image, bool taps);
// Outputs names::down_residual(k) and kMidResidual.
std::unique_ptr<Graph> build_controlnet(Backend& be, const ControlNet& cn, const DenoiseShape& s, float scale,
                                        bool taps);
// `residuals`: the dims of the down residual inputs (skip order) and of the mid residual (last).
std::unique_ptr<Graph> build_unet(Backend& be, const UNet& un, const DenoiseShape& s,
                                  const std::vector<Dims>& residuals, bool taps);
// Outputs kNoisePred; with taps also the ControlNet's taps and its residuals (kStepResidualPrefix + the
// ControlNet output names).
std::unique_ptr<Graph> build_step(Backend& be, const ControlNet& cn, const UNet& un, const DenoiseShape& s, float scale,
                                  bool taps);

}  // namespace xpsr
