// resolve_component and the single-file configs (see sources.h).
#include "sources.h"

#include <sys/stat.h>

#include <cstdio>
#include <sstream>

#include "config.h"
#include "io/checkpoint_map.h"
#include "json.h"
#include "weights.h"

namespace xpsr {

namespace {

bool is_file(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
bool is_dir(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string parent_dir(const std::string& p) {
  size_t s = p.find_last_of('/');
  return s == std::string::npos ? "." : s == 0 ? "/" : p.substr(0, s);
}

std::string read_text(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail(ErrorCode::WeightsMissing, "config not found: ", path);
  std::string s;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
    s.append(buf, n);
    if (s.size() > (8u << 20)) {
      std::fclose(f);
      fail(ErrorCode::WeightsInvalid, path, ": config file larger than 8 MB");
    }
  }
  std::fclose(f);
  return s;
}

// ---- sizes a single file's tensors decide -------------------------------------------------------------

// A size read from the shapes: name as in config.json, the value (-1: the file does not say), SD-1.5's.
struct Size {
  const char* key;
  int64_t value, sd15;
};

const std::vector<int64_t>* shape_of(const TensorFile& v, const std::string& name) {
  const TensorView* t = v.find(name);
  return t ? &t->shape : nullptr;
}
int64_t dim(const TensorFile& v, const std::string& name, size_t i) {
  auto* s = shape_of(v, name);
  return s && s->size() > i ? (*s)[i] : -1;
}
int64_t count(const TensorFile& v, const std::string& before, const std::string& after) {
  int64_t n = 0;
  while (v.find(before + std::to_string(n) + after)) ++n;
  return n;
}

std::vector<Size> text_sizes(const TensorFile& v) {
  const std::string tok = "text_model.embeddings.token_embedding.weight";
  return {
      {"vocab_size", dim(v, tok, 0), 49408},
      {"hidden_size", dim(v, tok, 1), 768},
      {"max_position_embeddings", dim(v, "text_model.embeddings.position_embedding.weight", 0), 77},
      {"num_hidden_layers", count(v, "text_model.encoder.layers.", ".self_attn.q_proj.weight"), 12},
      {"intermediate_size", dim(v, "text_model.encoder.layers.0.mlp.fc1.weight", 0), 3072},
  };
}

// block_out_channels are reported as block_out_channels.N (one size each) plus their count.
std::vector<Size> vae_sizes(const TensorFile& v) {
  const int64_t blocks = count(v, "encoder.down_blocks.", ".resnets.0.conv1.weight");
  std::vector<Size> s = {
      {"in_channels", dim(v, "encoder.conv_in.weight", 1), 3},
      {"out_channels", dim(v, "decoder.conv_out.weight", 0), 3},
      {"latent_channels", dim(v, "post_quant_conv.weight", 0), 4},
      {"layers_per_block", count(v, "encoder.down_blocks.0.resnets.", ".conv1.weight"), 2},
      {"len(block_out_channels)", blocks, 4},
  };
  static const char* kCh[] = {"block_out_channels[0]", "block_out_channels[1]", "block_out_channels[2]",
                              "block_out_channels[3]"};
  static const int64_t kSd[] = {128, 256, 512, 512};
  for (int64_t i = 0; i < blocks && i < 4; ++i)
    s.push_back({kCh[i], dim(v, "encoder.down_blocks." + std::to_string(i) + ".resnets.0.conv1.weight", 0), kSd[i]});
  return s;
}

const char* kSd15TextConfig = R"({"architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
 "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
 "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05,
 "projection_dim": 768, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1})";
const char* kSd15VaeConfig = R"({"_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3,
 "latent_channels": 4, "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
 "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
 "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
 "act_fn": "silu", "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.18215})";

// The same sizes as a given config says them.
std::vector<int64_t> config_values(const Json& cfg, const std::string& component, const std::string& where) {
  if (component == "text_encoder") {
    ClipTextEncoderConfig c = parse_clip_text_encoder_config(cfg, where);
    return {c.vocab_size, c.hidden_size, c.max_position_embeddings, c.num_layers, c.intermediate_size};
  }
  VaeConfig c = parse_vae_config(cfg, where);
  std::vector<int64_t> r = {c.in_channels, c.out_channels, c.latent_channels, c.layers_per_block,
                            (int64_t)c.block_out_channels.size()};
  for (size_t i = 0; i < c.block_out_channels.size() && i < 4; ++i) r.push_back(c.block_out_channels[i]);
  return r;
}

// A given config must agree with the tensors on every size they decide.
void check_given_config(const TensorFile& view, const std::string& component, const std::string& config_json) {
  const std::string where = "config.json (given)";
  Json cfg = Json::parse(config_json, where);
  auto sizes = component == "text_encoder" ? text_sizes(view) : vae_sizes(view);
  auto vals = config_values(cfg, component, where);
  std::ostringstream diffs;
  int n = 0;
  for (size_t i = 0; i < sizes.size() && i < vals.size(); ++i)
    if (sizes[i].value >= 0 && sizes[i].value != vals[i])
      diffs << (n++ ? ", " : "") << sizes[i].key << " " << vals[i] << " in the config, " << sizes[i].value
            << " in the tensors";
  if (n)
    fail(ErrorCode::ShapeMismatch, view.path(), ": the given ", component, " config does not match the file's ",
         component == "text_encoder" ? "text encoder" : "VAE", ": ", diffs.str());
}

}  // namespace

std::vector<std::unique_ptr<TensorFile>> ComponentSource::take_files() {
  std::vector<std::unique_ptr<TensorFile>> out = std::move(files);
  for (auto& p : weight_paths) out.push_back(TensorFile::open(p));
  weight_paths.clear();
  return out;
}

std::vector<std::string> weight_file_stems(const std::string& component) {
  if (component == "text_encoder") return {"model", "pytorch_model"};
  return {"diffusion_pytorch_model", "model"};
}

std::string derive_single_file_config(const TensorFile& view, const std::string& component) {
  const bool text = component == "text_encoder";
  const char* what = text ? "text encoder" : "VAE";
  const char* probe = text ? "text_model.embeddings.token_embedding.weight" : "encoder.conv_in.weight";
  if (!view.find(probe)) {
    std::string orig = view.original_name(probe);
    if (orig.empty()) orig = sd_original_name(text ? SdPart::TextEncoder : SdPart::Vae, probe, 4);
    fail(ErrorCode::WeightsMissing, view.path(), ": this single-file checkpoint has no ", what, " (",
         text ? "cond_stage_model.transformer.*" : "first_stage_model.*", "; looked for '", orig, "')");
  }
  std::ostringstream diffs;
  int n = 0;
  for (const Size& s : text ? text_sizes(view) : vae_sizes(view))
    if (s.value != s.sd15) diffs << (n++ ? ", " : "") << s.key << " " << s.value << " where SD-1.5 has " << s.sd15;
  if (n)
    fail(ErrorCode::Unsupported, view.path(), ": the ", what, " of this single file is not Stable Diffusion 1.5's (",
         diffs.str(), "); its ", text ? "number of attention heads" : "number of norm groups",
         " cannot be read from the tensors: give its config (sdConfig / --sd-config DIR holding ", component,
         "/config.json)");
  return text ? kSd15TextConfig : kSd15VaeConfig;
}

ComponentSource resolve_component(const std::string& component, const std::string& path, const std::string& config_json,
                                  const std::string& variant) {
  ComponentSource s;
  const bool text = component == "text_encoder";
  if (is_dir(path)) {
    s.layout = "diffusers folder";
    s.config_where = config_json.empty() ? path + "/config.json" : "config.json (given)";
    s.config_json = config_json.empty() ? read_text(s.config_where) : config_json;
    s.weight_paths = find_weight_files(path, weight_file_stems(component), variant);
    return s;
  }
  if (!is_file(path)) fail(ErrorCode::WeightsMissing, "weights folder or file not found: ", path);
  std::unique_ptr<TensorFile> file = TensorFile::open(path);
  SdFileLayout lay = inspect_sd_file(*file);
  if (!lay.foreign.empty()) fail(ErrorCode::Unsupported, path, ": ", lay.foreign);
  if (!lay.single_file) {
    s.layout = "weights file";
    s.config_where = config_json.empty() ? parent_dir(path) + "/config.json" : "config.json (given)";
    s.config_json = config_json.empty() ? read_text(s.config_where) : config_json;
    s.files.push_back(std::move(file));
    return s;
  }
  if (component != "text_encoder" && component != "vae")
    fail(ErrorCode::Unsupported, path,
         ": this is a Stable Diffusion single-file checkpoint; its UNet is SD-1.5's, "
         "not XPSR's: the ",
         component, " comes from the XPSR checkpoint (unet/, controlnet/)");
  s.layout = "SD single file";
  std::shared_ptr<const TensorFile> shared(std::move(file));
  std::unique_ptr<TensorFile> view = sd_part_view(shared, text ? SdPart::TextEncoder : SdPart::Vae);
  if (config_json.empty()) {
    s.config_json = derive_single_file_config(*view, component);
    s.config_where = path + " (" + component + " config derived from the tensor shapes)";
  } else {
    check_given_config(*view, component, config_json);
    s.config_json = config_json;
    s.config_where = "config.json (given)";
  }
  s.files.push_back(std::move(view));
  return s;
}

}  // namespace xpsr
