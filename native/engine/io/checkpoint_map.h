// Original-layout Stable Diffusion 1.x single files (CompVis/LDM names, as in v1-5-pruned-emaonly.safetensors,
// its -fp16 twin or an old .ckpt) read as the diffusers components our networks ask for:
//
//   cond_stage_model.transformer.[text_model.]<CLIP name>  ->  text encoder, "text_model.<CLIP name>"
//   first_stage_model.<LDM VAE name>                        ->  VAE, diffusers AutoencoderKL names
//   anything else (model.diffusion_model.*, model_ema.*, first_stage_model.loss.*, schedule buffers, ...)
//   is ignored: listed from the header, never read
//
// The mapping is ONE table, kSdKeyTable in checkpoint_map.cpp: one row per module, original name on the
// left, diffusers name on the right; the parameter name (weight / bias) carries over. Placeholders: {a}
// and {b} stand for block / layer numbers; {~a} on the diffusers side is the same block numbered from the
// other end (LDM numbers the decoder's up blocks from the lowest resolution: up.3 is up_blocks.0). Rows
// marked squeeze hold 1x1-conv weights [C, C, 1, 1] in the original files (the VAE mid-block attention),
// which are linear weights [C, C] in diffusers: the view drops the two unit dims, the bytes are the same.
//
// The views point into the opened file: no tensor is read or copied until a network fetches it, so the
// UNet and everything else stays untouched on disk (tested in checkpoint_map_test.cpp).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tensor_file.h"

namespace xpsr {

enum class SdPart { TextEncoder, Vae };
const char* sd_part_name(SdPart p);  // "text encoder" | "VAE"

// The tensors of a single file, grouped by what they are, from the header only.
struct SdFileGroup {
  std::string prefix;  // e.g. "first_stage_model."
  std::string role;    // e.g. "VAE", "UNet (SD-1.5's; XPSR brings its own)"
  bool used = false;   // read by XPSR
  size_t tensors = 0;
  uint64_t bytes = 0;
  std::map<std::string, size_t> dtypes;  // dtype name -> tensor count
};

struct SdFileLayout {
  bool single_file = false;      // holds cond_stage_model.transformer.* or first_stage_model.* tensors
  std::string foreign;           // non-empty: another model family's layout (SDXL, SD 2.x), why it is refused
  bool text_model_level = true;  // cond_stage_model.transformer.text_model.* (false: older files without it)
  int vae_up_blocks = 0;         // decoder.up.N count (for the reversed numbering)
  std::vector<SdFileGroup> groups;
  // The stored CLIP position_ids buffer: "" when absent, "0..N-1 (checked)" when it holds exactly that,
  // else why it is ignored. Positions are always 0..L-1 whatever the file says.
  std::string position_ids;
};

// Reads the header (names, dtypes, shapes) and, if present, the tiny position_ids buffer. Nothing else.
SdFileLayout inspect_sd_file(const TensorFile& f);

// One part of a single file under the diffusers names (see the table). Tensors of the part that match no
// row keep their original name, so the WeightLoader reports them as unexpected; other parts and the
// position_ids buffer are not listed. original_name() gives the original name of any diffusers name of
// the table (also of tensors the file lacks), for messages.
std::unique_ptr<TensorFile> sd_part_view(std::shared_ptr<const TensorFile> file, SdPart part);

// The original name of a diffusers name of the table ("" if no row has it). `vae_up_blocks` is the
// number of decoder up blocks (for the reversed numbering); `text_model_level`: "...transformer.text_model.".
std::string sd_original_name(SdPart part, const std::string& diffusers_name, int vae_up_blocks,
                             bool text_model_level = true);

}  // namespace xpsr
