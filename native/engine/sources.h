// Where one network's weights and config come from. A load path may be
//   * a diffusers component folder: config.json + weights (model / diffusion_pytorch_model .safetensors or
//     .bin, sharded or not, a variant such as fp16 preferred when asked; see find_weight_files);
//   * a weights file: its config from the caller or the config.json next to it;
//   * an original-layout Stable Diffusion 1.x single file (io/checkpoint_map.h): the text encoder or the VAE
//     part of it under diffusers names, the config derived from the tensors' shapes (which must be
//     SD-1.5's: the number of heads and of norm groups cannot be read from shapes) or given by the caller,
//     then checked against the shapes.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "io/tensor_file.h"

namespace xpsr {

struct ComponentSource {
  std::string config_json;                         // the component's config (JSON text)
  std::string config_where;                        // for messages: a file, "(given)" or "(derived from ...)"
  std::string layout;                              // "diffusers folder", "weights file", "SD single file"
  std::vector<std::string> weight_paths;           // a folder's weight files, opened by take_files()
  std::vector<std::unique_ptr<TensorFile>> files;  // files already open (a file path is opened to see what it is)
  // What the WeightLoader reads: the open files plus weight_paths, opened now.
  std::vector<std::unique_ptr<TensorFile>> take_files();
};

// component: "text_encoder" | "vae" | "unet" | "controlnet". `config_json` (may be empty) overrides the
// folder's config.json or the derived config. A folder's config is read and its weight files found, not
// opened (the engine range-checks the config first). Errors name the path and what was looked for.
ComponentSource resolve_component(const std::string& component, const std::string& path, const std::string& config_json,
                                  const std::string& variant);

// File name stems of a diffusers component's weights: model / pytorch_model for the text encoder,
// diffusion_pytorch_model / model for the others.
std::vector<std::string> weight_file_stems(const std::string& component);

// The config of a single file's text encoder / VAE derived from its shapes (JSON text); throws
// Unsupported when the sizes are not SD-1.5's, WeightsMissing when the part is absent.
std::string derive_single_file_config(const TensorFile& part_view, const std::string& component);

}  // namespace xpsr
