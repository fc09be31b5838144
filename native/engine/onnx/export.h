// ONNX export of the XPSR networks: graph builders for the exported entries (they call the model
// classes' forward functions, as engine.cpp does for its entries) and the driver that lowers them
// (lower.h) and writes the files plus a manifest.json describing them.
//
// Exported parts and their ONNX signatures (PyTorch layouts, f32 at the boundary):
//   text_encoder  input_ids I64 [B,L]                                            -> last_hidden_state [B,L,D]
//   vae_encoder   image [N,3,H,W] in [-1,1]                                      -> moments [N,2*lat,H/8,W/8]
//   vae_decoder   latent [N,lat,h,w] (latents / scaling_factor)                 -> image [N,3,8h,8w]
//   step          sample [N,4,h,w], timestep [N], encoder_hidden_states [N,L,D],
//                 lowlevel_encoder_hidden_states [N,L,D] (SFA models), controlnet_cond [N,3,8h,8w] in [0,1],
//                 conditioning_scale [1]                                          -> noise_pred [N,4,h,w]
//   controlnet    the ControlNet alone (same inputs as step)      -> down_block_res_samples.NN, mid_block_res_sample
//   unet          the UNet alone: + down_block_additional_residuals.NN, mid_block_additional_residual -> noise_pred
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../graph.h"
#include "lower.h"

namespace xpsr {
struct ClipTextEncoder;
struct Vae;
struct UNet;
struct ControlNet;
}  // namespace xpsr

namespace xpsr::onnx {

struct ExportModels {
  const ClipTextEncoder* text = nullptr;
  const Vae* vae = nullptr;
  const UNet* unet = nullptr;
  const ControlNet* controlnet = nullptr;
};

struct ExportOptions {
  std::string out_dir;
  // Parts to write; empty = text_encoder, vae_encoder, vae_decoder, step (those whose models are given).
  std::vector<std::string> parts;
  std::vector<std::pair<int, int>> sizes{{512, 512}};  // image width x height in pixels (multiples of 8)
  int batch = 2;                                       // step / controlnet / unet batch (2 = the CFG rows)
  int text_batch = 1;                                  // the pipeline encodes one text at a time
  int vae_batch = 1;
  int seq_len = 77;  // text length of the encoder and of the contexts
  bool dynamic_batch = false;
  bool fp16 = false;
  Layout layout = Layout::CF;
  enum class External { Auto, Always, Never } external = External::Auto;
  bool intermediates = false;     // also output the parity taps (inter.*, hidden_states.*) of single networks
  bool residual_outputs = false;  // step: also output the scaled ControlNet residuals (controlnet.*)
  std::string producer_version;
};

// A graph built for export and its ONNX bindings.
struct ExportGraph {
  std::unique_ptr<Graph> graph;
  LowerSpec spec;
};

ExportGraph build_text_encoder(Backend& be, const ClipTextEncoder& m, int B, int L, bool taps);
ExportGraph build_vae_encoder(Backend& be, const Vae& m, int N, int H, int W, bool taps);
ExportGraph build_vae_decoder(Backend& be, const Vae& m, int N, int h, int w, bool taps);
ExportGraph build_step(Backend& be, const ControlNet& cn, const UNet& un, int N, int h, int w, int L,
                       bool residual_outputs);
ExportGraph build_controlnet(Backend& be, const ControlNet& cn, int N, int h, int w, int L, bool taps);
ExportGraph build_unet(Backend& be, const UNet& un, int N, int h, int w, int L, bool with_low, bool taps);

// Writes the requested parts into options.out_dir (created if missing) and returns manifest.json's text
// (also written there). Weights must live on the host-weight backend (host_backend.h).
std::string export_models(Backend& be, const ExportModels& models, const ExportOptions& options);

}  // namespace xpsr::onnx
