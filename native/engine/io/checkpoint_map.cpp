// The key table of original-layout SD-1.x single files and the renaming view (see checkpoint_map.h).
#include "checkpoint_map.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>
#include <unordered_map>

namespace xpsr {

namespace {

constexpr const char* kTextPrefix = "cond_stage_model.transformer.";
constexpr const char* kTextLevel = "text_model.";
constexpr const char* kVaePrefix = "first_stage_model.";
constexpr const char* kVaeLossPrefix = "first_stage_model.loss.";  // training-only (LPIPS, discriminator)

// ---- THE table ----------------------------------------------------------------------------------------
// Module names below the part's prefix (text encoder: "cond_stage_model.transformer." plus "text_model."
// when the file has that level; VAE: "first_stage_model."). Every module SD-1.5's text encoder and VAE
// have is listed; a tensor matching no row is reported as unexpected.
struct Row {
  SdPart part;
  const char* original;
  const char* diffusers;
  bool squeeze = false;  // original weight is a 1x1 conv [C, C, 1, 1]; diffusers' is linear [C, C]
};

const Row kSdKeyTable[] = {
    // CLIP text encoder: same names as HF CLIPTextModel below "text_model."
    {SdPart::TextEncoder, "embeddings.token_embedding", "text_model.embeddings.token_embedding"},
    {SdPart::TextEncoder, "embeddings.position_embedding", "text_model.embeddings.position_embedding"},
    {SdPart::TextEncoder, "encoder.layers.{a}.layer_norm1", "text_model.encoder.layers.{a}.layer_norm1"},
    {SdPart::TextEncoder, "encoder.layers.{a}.self_attn.q_proj", "text_model.encoder.layers.{a}.self_attn.q_proj"},
    {SdPart::TextEncoder, "encoder.layers.{a}.self_attn.k_proj", "text_model.encoder.layers.{a}.self_attn.k_proj"},
    {SdPart::TextEncoder, "encoder.layers.{a}.self_attn.v_proj", "text_model.encoder.layers.{a}.self_attn.v_proj"},
    {SdPart::TextEncoder, "encoder.layers.{a}.self_attn.out_proj", "text_model.encoder.layers.{a}.self_attn.out_proj"},
    {SdPart::TextEncoder, "encoder.layers.{a}.layer_norm2", "text_model.encoder.layers.{a}.layer_norm2"},
    {SdPart::TextEncoder, "encoder.layers.{a}.mlp.fc1", "text_model.encoder.layers.{a}.mlp.fc1"},
    {SdPart::TextEncoder, "encoder.layers.{a}.mlp.fc2", "text_model.encoder.layers.{a}.mlp.fc2"},
    {SdPart::TextEncoder, "final_layer_norm", "text_model.final_layer_norm"},
    // (embeddings.position_ids, an int64 buffer, is not a weight: inspect_sd_file checks it, nothing uses it)

    // VAE encoder
    {SdPart::Vae, "encoder.conv_in", "encoder.conv_in"},
    {SdPart::Vae, "encoder.down.{a}.block.{b}.norm1", "encoder.down_blocks.{a}.resnets.{b}.norm1"},
    {SdPart::Vae, "encoder.down.{a}.block.{b}.conv1", "encoder.down_blocks.{a}.resnets.{b}.conv1"},
    {SdPart::Vae, "encoder.down.{a}.block.{b}.norm2", "encoder.down_blocks.{a}.resnets.{b}.norm2"},
    {SdPart::Vae, "encoder.down.{a}.block.{b}.conv2", "encoder.down_blocks.{a}.resnets.{b}.conv2"},
    {SdPart::Vae, "encoder.down.{a}.block.{b}.nin_shortcut", "encoder.down_blocks.{a}.resnets.{b}.conv_shortcut"},
    {SdPart::Vae, "encoder.down.{a}.downsample.conv", "encoder.down_blocks.{a}.downsamplers.0.conv"},
    {SdPart::Vae, "encoder.mid.block_1.norm1", "encoder.mid_block.resnets.0.norm1"},
    {SdPart::Vae, "encoder.mid.block_1.conv1", "encoder.mid_block.resnets.0.conv1"},
    {SdPart::Vae, "encoder.mid.block_1.norm2", "encoder.mid_block.resnets.0.norm2"},
    {SdPart::Vae, "encoder.mid.block_1.conv2", "encoder.mid_block.resnets.0.conv2"},
    {SdPart::Vae, "encoder.mid.attn_1.norm", "encoder.mid_block.attentions.0.group_norm"},
    {SdPart::Vae, "encoder.mid.attn_1.q", "encoder.mid_block.attentions.0.to_q", true},
    {SdPart::Vae, "encoder.mid.attn_1.k", "encoder.mid_block.attentions.0.to_k", true},
    {SdPart::Vae, "encoder.mid.attn_1.v", "encoder.mid_block.attentions.0.to_v", true},
    {SdPart::Vae, "encoder.mid.attn_1.proj_out", "encoder.mid_block.attentions.0.to_out.0", true},
    {SdPart::Vae, "encoder.mid.block_2.norm1", "encoder.mid_block.resnets.1.norm1"},
    {SdPart::Vae, "encoder.mid.block_2.conv1", "encoder.mid_block.resnets.1.conv1"},
    {SdPart::Vae, "encoder.mid.block_2.norm2", "encoder.mid_block.resnets.1.norm2"},
    {SdPart::Vae, "encoder.mid.block_2.conv2", "encoder.mid_block.resnets.1.conv2"},
    {SdPart::Vae, "encoder.norm_out", "encoder.conv_norm_out"},
    {SdPart::Vae, "encoder.conv_out", "encoder.conv_out"},
    {SdPart::Vae, "quant_conv", "quant_conv"},
    // VAE decoder (up blocks numbered from the other end)
    {SdPart::Vae, "post_quant_conv", "post_quant_conv"},
    {SdPart::Vae, "decoder.conv_in", "decoder.conv_in"},
    {SdPart::Vae, "decoder.mid.block_1.norm1", "decoder.mid_block.resnets.0.norm1"},
    {SdPart::Vae, "decoder.mid.block_1.conv1", "decoder.mid_block.resnets.0.conv1"},
    {SdPart::Vae, "decoder.mid.block_1.norm2", "decoder.mid_block.resnets.0.norm2"},
    {SdPart::Vae, "decoder.mid.block_1.conv2", "decoder.mid_block.resnets.0.conv2"},
    {SdPart::Vae, "decoder.mid.attn_1.norm", "decoder.mid_block.attentions.0.group_norm"},
    {SdPart::Vae, "decoder.mid.attn_1.q", "decoder.mid_block.attentions.0.to_q", true},
    {SdPart::Vae, "decoder.mid.attn_1.k", "decoder.mid_block.attentions.0.to_k", true},
    {SdPart::Vae, "decoder.mid.attn_1.v", "decoder.mid_block.attentions.0.to_v", true},
    {SdPart::Vae, "decoder.mid.attn_1.proj_out", "decoder.mid_block.attentions.0.to_out.0", true},
    {SdPart::Vae, "decoder.mid.block_2.norm1", "decoder.mid_block.resnets.1.norm1"},
    {SdPart::Vae, "decoder.mid.block_2.conv1", "decoder.mid_block.resnets.1.conv1"},
    {SdPart::Vae, "decoder.mid.block_2.norm2", "decoder.mid_block.resnets.1.norm2"},
    {SdPart::Vae, "decoder.mid.block_2.conv2", "decoder.mid_block.resnets.1.conv2"},
    {SdPart::Vae, "decoder.up.{a}.block.{b}.norm1", "decoder.up_blocks.{~a}.resnets.{b}.norm1"},
    {SdPart::Vae, "decoder.up.{a}.block.{b}.conv1", "decoder.up_blocks.{~a}.resnets.{b}.conv1"},
    {SdPart::Vae, "decoder.up.{a}.block.{b}.norm2", "decoder.up_blocks.{~a}.resnets.{b}.norm2"},
    {SdPart::Vae, "decoder.up.{a}.block.{b}.conv2", "decoder.up_blocks.{~a}.resnets.{b}.conv2"},
    {SdPart::Vae, "decoder.up.{a}.block.{b}.nin_shortcut", "decoder.up_blocks.{~a}.resnets.{b}.conv_shortcut"},
    {SdPart::Vae, "decoder.up.{a}.upsample.conv", "decoder.up_blocks.{~a}.upsamplers.0.conv"},
    {SdPart::Vae, "decoder.norm_out", "decoder.conv_norm_out"},
    {SdPart::Vae, "decoder.conv_out", "decoder.conv_out"},
};

// ---- matching -------------------------------------------------------------------------------------------

std::vector<std::string> split_dots(const std::string& s) {
  std::vector<std::string> out;
  size_t b = 0;
  for (;;) {
    size_t e = s.find('.', b);
    out.push_back(s.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) return out;
    b = e + 1;
  }
}

bool parse_index(const std::string& s, int* out) {
  if (s.empty() || s.size() > 6 || (s.size() > 1 && s[0] == '0')) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  *out = std::atoi(s.c_str());
  return true;
}

// Numbers bound by {a} / {b}; -1 = unbound. `reversed_count` is the number of up blocks ({~a} = n-1-a).
struct Binds {
  int a = -1, b = -1;
};

// Matches a module name against one side of a row. `reversed` says how {~a} reads (n - 1 - value).
bool match(const std::string& pattern, const std::string& module, int reversed_count, Binds* bind) {
  auto pp = split_dots(pattern), mp = split_dots(module);
  if (pp.size() != mp.size()) return false;
  Binds b;
  for (size_t i = 0; i < pp.size(); ++i) {
    const std::string& p = pp[i];
    if (p.size() < 3 || p.front() != '{') {
      if (p != mp[i]) return false;
      continue;
    }
    int v;
    if (!parse_index(mp[i], &v)) return false;
    int* slot = p == "{b}" ? &b.b : &b.a;
    if (p == "{~a}") {
      if (v >= reversed_count) return false;
      v = reversed_count - 1 - v;
    }
    if (*slot >= 0 && *slot != v) return false;
    *slot = v;
  }
  *bind = b;
  return true;
}

std::string render(const std::string& pattern, const Binds& b, int reversed_count) {
  std::string out;
  for (auto& p : split_dots(pattern)) {
    if (!out.empty()) out += '.';
    if (p == "{a}") out += std::to_string(b.a);
    else if (p == "{b}") out += std::to_string(b.b);
    else if (p == "{~a}") out += std::to_string(reversed_count - 1 - b.a);
    else out += p;
  }
  return out;
}

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

// "cond_stage_model.transformer.[text_model.]" part of a text-encoder key, or "" if not one.
std::string text_prefix_of(const std::string& name) {
  if (!starts_with(name, kTextPrefix)) return {};
  std::string p = kTextPrefix;
  if (starts_with(name.substr(p.size()), kTextLevel)) p += kTextLevel;
  return p;
}

bool is_position_ids(const std::string& name) {
  const std::string p = text_prefix_of(name);
  return !p.empty() && name.compare(p.size(), std::string::npos, "embeddings.position_ids") == 0;
}

// 1 + the largest N of "<prefix>N." among the names (0 if none).
int count_blocks(const TensorFile& f, const std::string& prefix) {
  int n = 0;
  for (auto& name : f.names()) {
    if (!starts_with(name, prefix)) continue;
    size_t e = name.find('.', prefix.size());
    int v;
    if (e != std::string::npos && parse_index(name.substr(prefix.size(), e - prefix.size()), &v))
      n = std::max(n, v + 1);
  }
  return n;
}

// Decoder up blocks (for the reversed numbering); a file without a decoder counts its encoder's blocks,
// so the names of the missing decoder tensors are still right.
int count_up_blocks(const TensorFile& f) {
  int up = count_blocks(f, std::string(kVaePrefix) + "decoder.up.");
  return up ? up : count_blocks(f, std::string(kVaePrefix) + "encoder.down.");
}

// ---- the view ----------------------------------------------------------------------------------------

class SdPartView : public TensorFile {
 public:
  SdPartView(std::shared_ptr<const TensorFile> file, SdPart part) : file_(std::move(file)), part_(part) {
    up_blocks_ = count_up_blocks(*file_);
    for (auto& name : file_->names()) {
      std::string pre = part == SdPart::Vae ? (starts_with(name, kVaePrefix) ? kVaePrefix : "") : text_prefix_of(name);
      if (pre.empty() || (part == SdPart::TextEncoder && is_position_ids(name)) || starts_with(name, kVaeLossPrefix))
        continue;
      if (part == SdPart::TextEncoder) text_level_ = pre.size() > std::strlen(kTextPrefix);  // for missing keys
      const TensorView* t = file_->find(name);
      TensorView v = *t;
      std::string rel = name.substr(pre.size());
      size_t dot = rel.rfind('.');
      std::string param = dot == std::string::npos ? "" : rel.substr(dot + 1);
      const Row* row = nullptr;
      Binds b;
      if (param == "weight" || param == "bias")
        for (const Row& r : kSdKeyTable)
          if (r.part == part && match(r.original, rel.substr(0, dot), up_blocks_, &b)) {
            row = &r;
            break;
          }
      if (row) {
        v.name = render(row->diffusers, b, up_blocks_) + "." + param;
        if (row->squeeze && param == "weight" && v.shape.size() == 4 && v.shape[2] == 1 && v.shape[3] == 1)
          v.shape.resize(2);
        original_[v.name] = name;
      }
      // else: keeps its original name and is reported as unexpected by the loader
      if (index_.emplace(v.name, views_.size()).second) {
        names_.push_back(v.name);
        views_.push_back(std::move(v));
      }
    }
  }
  const std::string& path() const override { return file_->path(); }
  const std::vector<std::string>& names() const override { return names_; }
  const TensorView* find(const std::string& name) const override {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &views_[it->second];
  }
  const std::map<std::string, std::string>& metadata() const override { return file_->metadata(); }
  void release(const TensorView& t) const override { file_->release(t); }

  std::string original_name(const std::string& name) const override {
    auto it = original_.find(name);
    return it != original_.end() ? it->second : sd_original_name(part_, name, up_blocks_, text_level_);
  }

 private:
  std::shared_ptr<const TensorFile> file_;
  SdPart part_;
  int up_blocks_ = 0;
  bool text_level_ = true;
  std::vector<std::string> names_;
  std::vector<TensorView> views_;
  std::unordered_map<std::string, size_t> index_;
  std::unordered_map<std::string, std::string> original_;  // diffusers name -> original name
};

}  // namespace

std::string sd_original_name(SdPart part, const std::string& diffusers_name, int vae_up_blocks, bool text_model_level) {
  size_t dot = diffusers_name.rfind('.');
  if (dot == std::string::npos) return {};
  const std::string module = diffusers_name.substr(0, dot), param = diffusers_name.substr(dot);
  const std::string prefix =
      part == SdPart::Vae ? std::string(kVaePrefix) : std::string(kTextPrefix) + (text_model_level ? kTextLevel : "");
  for (const Row& r : kSdKeyTable) {
    Binds b;
    // On the diffusers side {~a} reads a diffusers number and binds the original one.
    if (r.part == part && match(r.diffusers, module, vae_up_blocks, &b))
      return prefix + render(r.original, b, vae_up_blocks) + param;
  }
  return {};
}

const char* sd_part_name(SdPart p) { return p == SdPart::Vae ? "VAE" : "text encoder"; }

std::unique_ptr<TensorFile> sd_part_view(std::shared_ptr<const TensorFile> file, SdPart part) {
  return std::make_unique<SdPartView>(std::move(file), part);
}

SdFileLayout inspect_sd_file(const TensorFile& f) {
  SdFileLayout out;
  // Groups in a fixed order; the first prefix that matches a name wins.
  struct G {
    const char* prefix;
    const char* role;
    bool used;
  };
  static const G kGroups[] = {
      {"cond_stage_model.transformer.", "text encoder (CLIP)", true},
      {"first_stage_model.loss.", "VAE training loss (LPIPS, discriminator)", false},
      {"first_stage_model.", "VAE", true},
      {"model.diffusion_model.", "UNet (SD-1.5's; XPSR brings its own)", false},
      {"model_ema.", "EMA copy of the UNet", false},
      {"cond_stage_model.", "text encoder of another family", false},
      {"conditioner.", "SDXL text encoders", false},
      {"", "other (noise schedule buffers, ...)", false},
  };
  std::map<std::string, SdFileGroup> groups;
  bool has_level = false, lacks_level = false;
  for (auto& name : f.names()) {
    const G* g = nullptr;
    for (const G& c : kGroups)
      if (starts_with(name, c.prefix)) {
        g = &c;
        break;
      }
    SdFileGroup& sg = groups[g->prefix];
    sg.prefix = g->prefix, sg.role = g->role, sg.used = g->used;
    const TensorView* t = f.find(name);
    sg.tensors++;
    sg.bytes += t->nbytes;
    sg.dtypes[dtype_name(t->dtype)]++;
    if (starts_with(name, kTextPrefix))
      (starts_with(name.substr(std::strlen(kTextPrefix)), kTextLevel) ? has_level : lacks_level) = true;
  }
  for (const G& c : kGroups)
    if (groups.count(c.prefix)) out.groups.push_back(groups[c.prefix]);
  out.single_file = groups.count(kTextPrefix) || groups.count(kVaePrefix);
  out.text_model_level = has_level || !lacks_level;
  out.vae_up_blocks = count_up_blocks(f);
  if (groups.count("conditioner."))
    out.foreign = "an SDXL checkpoint (conditioner.embedders.*): XPSR needs Stable Diffusion 1.5";
  else if (groups.count("cond_stage_model.") && !groups.count(kTextPrefix))
    out.foreign =
        "a Stable Diffusion 2.x checkpoint (OpenCLIP text encoder, cond_stage_model.model.*): XPSR needs Stable "
        "Diffusion 1.5";

  for (auto& name : f.names()) {
    if (!is_position_ids(name)) continue;
    const TensorView* t = f.find(name);
    std::string why;
    int64_t n = t->numel();
    if (dtype_is_float(t->dtype) || t->dtype == DType::Bool) {
      why = std::string("stored as ") + dtype_name(t->dtype) + ", not integers";
    } else if (!(t->shape.size() == 2 && t->shape[0] == 1) && t->shape.size() != 1) {
      why = "shape " + shape_str(t->shape) + " is not [1, N]";
    } else if (n > 4096) {
      why = "has " + std::to_string(n) + " entries";
    } else {
      std::vector<int64_t> v = to_i64(*t);
      for (int64_t i = 0; i < n && why.empty(); ++i)
        if (v[(size_t)i] != i)
          why = "entry " + std::to_string(i) + " is " + std::to_string(v[(size_t)i]) + ", not " + std::to_string(i);
    }
    out.position_ids =
        why.empty() ? "0.." + std::to_string(n - 1) + " (checked)"
                    : "ignored: " + why + " (a known defect of some merged checkpoints; positions are always 0..L-1)";
  }
  return out;
}

}  // namespace xpsr
