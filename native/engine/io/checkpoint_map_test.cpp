// Single-file SD checkpoints (checkpoint_map.h, engine/sources.h): names both ways, the tensors that are
// ignored are never touched (their pages are made unreadable before loading), position_ids, configs,
// messages with both names, diffusers variants. The diffusers-written fixture files are checked against
// the golden outputs in the ava suite (test/single-file.test.mjs).
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "../../test/test.h"
#include "../config.h"
#include "../json.h"
#include "../models/clip_text_encoder.h"
#include "../models/vae.h"
#include "../sources.h"
#include "../weights.h"
#include "checkpoint_map.h"
#include "io_internal.h"
#include "io_test_util.h"

using namespace xpsr;
using namespace xpsr_io_test;

namespace {

std::string model_file(const char* rel) { return xpsr_test::fixtures_dir() + "/model/" + rel; }

bool fixture_model_present() {
  FILE* f = std::fopen(model_file("vae/diffusion_pytorch_model.safetensors").c_str(), "rb");
  if (f) std::fclose(f);
  return f != nullptr;
}

Bytes bytes_of(const TensorView& t) { return Bytes(t.data, t.data + t.nbytes); }

// The fixture's text encoder and VAE under original single-file names (the VAE mid attention weights as
// 1x1 convs, as LDM stores them), plus `extra` tensors.
std::vector<TensorToWrite> single_file_tensors(bool text_model_level, const std::vector<TensorToWrite>& extra = {}) {
  std::vector<TensorToWrite> out;
  auto te = TensorFile::open(model_file("text_encoder/model.safetensors"));
  for (auto& n : te->names()) {
    const TensorView* t = te->find(n);
    out.push_back({sd_original_name(SdPart::TextEncoder, n, 0, text_model_level), t->dtype, t->shape, bytes_of(*t)});
  }
  auto vae = TensorFile::open(model_file("vae/diffusion_pytorch_model.safetensors"));
  for (auto& n : vae->names()) {
    const TensorView* t = vae->find(n);
    std::vector<int64_t> shape = t->shape;
    if (shape.size() == 2 && n.find(".attentions.0.to_") != std::string::npos) shape = {shape[0], shape[1], 1, 1};
    out.push_back({sd_original_name(SdPart::Vae, n, 4), t->dtype, shape, bytes_of(*t)});
  }
  for (auto& e : extra) out.push_back(e);
  return out;
}

Bytes nan_bytes(size_t n) {
  Bytes b(n);
  for (size_t i = 0; i + 4 <= n; i += 4) {
    uint32_t nan = 0x7fc00001u;
    std::memcpy(&b[i], &nan, 4);
  }
  return b;
}

ClipTextEncoderConfig fixture_text_config() {
  return parse_clip_text_encoder_config(Json::parse_file(model_file("text_encoder/config.json")),
                                        "text_encoder/config.json");
}
VaeConfig fixture_vae_config() {
  return parse_vae_config(Json::parse_file(model_file("vae/config.json")), "vae/config.json");
}

// Loads both networks from `file` the way the engine does (views + WeightLoader), on the CPU backend.
size_t load_both(const std::shared_ptr<const TensorFile>& file) {
  auto be = make_cpu_backend(1);
  size_t tensors = 0;
  {
    std::vector<std::unique_ptr<TensorFile>> fs;
    fs.push_back(sd_part_view(file, SdPart::TextEncoder));
    WeightLoader ld(*be, "text encoder", std::move(fs));
    ClipTextEncoder clip;
    clip.load(ld, fixture_text_config());
    ld.finish();
    tensors += ld.tensors_checked();
  }
  {
    std::vector<std::unique_ptr<TensorFile>> fs;
    fs.push_back(sd_part_view(file, SdPart::Vae));
    WeightLoader ld(*be, "VAE", std::move(fs));
    Vae vae;
    vae.load(ld, fixture_vae_config(), true, true);
    ld.finish();
    tensors += ld.tensors_checked();
  }
  return tensors;
}

// Makes every page lying wholly inside [p, p + n) unreadable: touching one crashes the test run.
void protect(const uint8_t* p, size_t n) {
  const uintptr_t page = (uintptr_t)::sysconf(_SC_PAGESIZE);
  uintptr_t b = ((uintptr_t)p + page - 1) / page * page, e = ((uintptr_t)p + n) / page * page;
  CHECK(e > b);
  CHECK(::mprotect((void*)b, e - b, PROT_NONE) == 0);
}

size_t part_tensors(const std::shared_ptr<const TensorFile>& f) {
  return sd_part_view(f, SdPart::TextEncoder)->names().size() + sd_part_view(f, SdPart::Vae)->names().size();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return std::string(e.code_name()) + ": " + e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(checkpoint_map_names_known_pairs) {
  // Pairs as diffusers' conversion script writes them (independent of the table's wording).
  CHECK(sd_original_name(SdPart::Vae, "decoder.up_blocks.0.resnets.0.conv1.weight", 4) ==
        "first_stage_model.decoder.up.3.block.0.conv1.weight");
  CHECK(sd_original_name(SdPart::Vae, "decoder.up_blocks.2.upsamplers.0.conv.bias", 4) ==
        "first_stage_model.decoder.up.1.upsample.conv.bias");
  CHECK(sd_original_name(SdPart::Vae, "encoder.down_blocks.1.resnets.0.conv_shortcut.weight", 4) ==
        "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight");
  CHECK(sd_original_name(SdPart::Vae, "encoder.mid_block.attentions.0.to_out.0.weight", 4) ==
        "first_stage_model.encoder.mid.attn_1.proj_out.weight");
  CHECK(sd_original_name(SdPart::Vae, "decoder.mid_block.resnets.1.norm2.bias", 4) ==
        "first_stage_model.decoder.mid.block_2.norm2.bias");
  CHECK(sd_original_name(SdPart::Vae, "encoder.conv_norm_out.weight", 4) ==
        "first_stage_model.encoder.norm_out.weight");
  CHECK(sd_original_name(SdPart::TextEncoder, "text_model.encoder.layers.11.mlp.fc2.bias", 0) ==
        "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.bias");
  CHECK(sd_original_name(SdPart::TextEncoder, "text_model.final_layer_norm.weight", 0, false) ==
        "cond_stage_model.transformer.final_layer_norm.weight");
  CHECK(sd_original_name(SdPart::Vae, "decoder.up_blocks.4.resnets.0.conv1.weight", 4).empty());  // no 5th block
  CHECK(sd_original_name(SdPart::Vae, "encoder.something_else.weight", 4).empty());
}

TEST(checkpoint_map_round_trips_the_fixture_text_encoder_and_vae) {
  if (!fixture_model_present()) SKIP("fixture model not found in " + xpsr_test::fixtures_dir());
  for (bool level : {true, false}) {
    TempDir tmp;
    std::string p = tmp.path("single.safetensors");
    write_safetensors(p, single_file_tensors(level));
    std::shared_ptr<const TensorFile> file(TensorFile::open(p));
    SdFileLayout lay = inspect_sd_file(*file);
    CHECK(lay.single_file && lay.foreign.empty() && lay.text_model_level == level && lay.vae_up_blocks == 4);
    for (auto [part, rel] : {std::pair{SdPart::TextEncoder, "text_encoder/model.safetensors"},
                             std::pair{SdPart::Vae, "vae/diffusion_pytorch_model.safetensors"}}) {
      auto orig = TensorFile::open(model_file(rel));
      auto view = sd_part_view(file, part);
      std::set<std::string> a(orig->names().begin(), orig->names().end()),
          b(view->names().begin(), view->names().end());
      CHECK_MSG(a == b, std::string(sd_part_name(part)) + ": the view's names differ from the diffusers file's");
      for (auto& n : orig->names()) {
        const TensorView* x = orig->find(n);
        const TensorView* y = view->find(n);
        CHECK_MSG(x->shape == y->shape, n + ": " + shape_str(x->shape) + " vs " + shape_str(y->shape));
        CHECK(bytes_of(*x) == bytes_of(*y));
        CHECK(view->original_name(n) == sd_original_name(part, n, 4, level));
      }
    }
  }
}

TEST(single_file_ignored_tensors_are_never_read_safetensors) {
  if (!fixture_model_present()) SKIP("fixture model not found in " + xpsr_test::fixtures_dir());
  // The ignored tensors are the file's largest (F64: laid out first in the data section), full of garbage.
  const size_t big = 1 << 18;
  auto ts = single_file_tensors(
      true, {{"model.diffusion_model.input_blocks.0.0.weight", DType::F64, {(int64_t)big / 8}, nan_bytes(big)},
             {"model_ema.diffusion_modelout2weight", DType::F64, {(int64_t)big / 8}, nan_bytes(big)},
             {"first_stage_model.loss.discriminator.main.0.weight", DType::F64, {(int64_t)big / 8}, nan_bytes(big)},
             {"alphas_cumprod", DType::F32, {1000}, nan_bytes(4000)}});
  TempDir tmp;
  std::string p = tmp.path("single.safetensors");
  write_safetensors(p, ts);
  auto mapped = MappedFile::open(p);
  CHECK(mapped->mapped());
  std::shared_ptr<const TensorFile> file(open_tensor_file(mapped));
  for (const char* n : {"model.diffusion_model.input_blocks.0.0.weight", "model_ema.diffusion_modelout2weight",
                        "first_stage_model.loss.discriminator.main.0.weight"}) {
    const TensorView* t = file->find(n);
    CHECK(t && t->nbytes == big);
    protect(t->data, t->nbytes);
  }
  CHECK(load_both(file) == part_tensors(file));
}

TEST(single_file_ignored_tensors_are_never_read_ckpt) {
  if (!fixture_model_present()) SKIP("fixture model not found in " + xpsr_test::fixtures_dir());
  // torch.save({"state_dict": {...}, "global_step": 470000, "epoch": 5}) with a big NaN UNet storage and
  // an "optimizer state" tensor outside the state dict, both made unreadable (their interior pages).
  auto ts = single_file_tensors(true);
  const size_t big = 1 << 18;
  ts.insert(ts.begin(), {"model.diffusion_model.out.2.weight", DType::F32, {(int64_t)big / 4}, nan_bytes(big)});
  PickleWriter pk;
  pk.proto(2).op('}').mark();
  pk.unicode("state_dict").op('}').mark();
  ZipWriter zip;
  for (size_t i = 0; i < ts.size(); ++i) {
    const auto& t = ts[i];
    std::vector<int64_t> stride(t.shape.size(), 1);
    for (size_t d = t.shape.size(); d-- > 1;) stride[d - 1] = stride[d] * t.shape[d];
    int64_t numel = 1;
    for (auto d : t.shape) numel *= d;
    pk.unicode(t.name).tensor("FloatStorage", std::to_string(i), numel, 0, t.shape, stride);
  }
  pk.op('u');  // state_dict items
  pk.unicode("global_step").integer(470000).unicode("epoch").integer(5);
  pk.unicode("optimizer_states")
      .op(']')
      .mark()
      .op('}')
      .unicode("exp_avg")
      .tensor("FloatStorage", std::to_string(ts.size()), (int64_t)big / 4, 0, {(int64_t)big / 4}, {1})
      .op('s')
      .op('e');
  pk.op('u').stop();
  zip.add("sd/data.pkl", pk.b);
  zip.add("sd/byteorder", Bytes{'l', 'i', 't', 't', 'l', 'e'});
  for (size_t i = 0; i < ts.size(); ++i) zip.add("sd/data/" + std::to_string(i), ts[i].bytes);
  zip.add("sd/data/" + std::to_string(ts.size()), nan_bytes(big));
  zip.add("sd/version", Bytes{'3', '\n'});
  TempDir tmp;
  std::string p = tmp.write("single.ckpt", zip.finish());
  auto mapped = MappedFile::open(p);
  CHECK(mapped->mapped());
  std::shared_ptr<const TensorFile> file(open_tensor_file(mapped));
  CHECK(file->find("model.diffusion_model.out.2.weight") != nullptr);
  CHECK(file->find("exp_avg") == nullptr);  // only the state dict's tensors are listed
  protect(file->find("model.diffusion_model.out.2.weight")->data, big);
  // The optimizer tensor's storage: the zip entry after the last state-dict storage.
  ZipArchive za(*mapped);
  const ZipEntry* opt = za.find("sd/data/" + std::to_string(ts.size()));
  CHECK(opt && opt->size == big);
  protect(mapped->data() + opt->data_offset, big);
  CHECK(load_both(file) == part_tensors(file));
}

TEST(single_file_problems_name_both_names) {
  if (!fixture_model_present()) SKIP("fixture model not found in " + xpsr_test::fixtures_dir());
  auto ts = single_file_tensors(true);
  ts.erase(std::remove_if(
               ts.begin(), ts.end(),
               [](const TensorToWrite& t) { return t.name == "first_stage_model.decoder.up.3.block.1.conv2.weight"; }),
           ts.end());
  for (auto& t : ts)
    if (t.name == "first_stage_model.encoder.mid.attn_1.k.weight") {  // [64,64,1,1] -> [32,128,1,1]
      t.shape = {32, 128, 1, 1};
    }
  ts.push_back({"first_stage_model.encoder.mid.attn_1.extra.weight", DType::F32, {2}, Bytes(8)});
  TempDir tmp;
  std::string p = tmp.path("broken.safetensors");
  write_safetensors(p, ts);
  std::shared_ptr<const TensorFile> file(TensorFile::open(p));
  auto be = make_cpu_backend(1);
  std::vector<std::unique_ptr<TensorFile>> fs;
  fs.push_back(sd_part_view(file, SdPart::Vae));
  WeightLoader ld(*be, "VAE", std::move(fs));
  Vae vae;
  vae.load(ld, fixture_vae_config(), true, true);
  std::string msg = error_of([&] { ld.finish(); });
  CHECK_MSG(msg.find("ERR_SHAPE_MISMATCH") == 0, msg);
  CHECK_MSG(msg.find("'decoder.up_blocks.0.resnets.1.conv2.weight' (in the file: "
                     "'first_stage_model.decoder.up.3.block.1.conv2.weight')") != std::string::npos,
            msg);
  CHECK_MSG(msg.find("'encoder.mid_block.attentions.0.to_k.weight' (in the file: "
                     "'first_stage_model.encoder.mid.attn_1.k.weight')") != std::string::npos,
            msg);
  CHECK_MSG(msg.find("unexpected tensor 'first_stage_model.encoder.mid.attn_1.extra.weight'") != std::string::npos,
            msg);
}

TEST(single_file_position_ids_checked_never_trusted) {
  auto layout_with = [](DType dt, std::vector<int64_t> shape, const Bytes& data) {
    TempDir tmp;
    std::string p = tmp.path("pos.safetensors");
    write_safetensors(p,
                      {{"cond_stage_model.transformer.text_model.embeddings.position_ids", dt, shape, data},
                       {"cond_stage_model.transformer.text_model.final_layer_norm.weight", DType::F32, {2}, Bytes(8)}});
    return inspect_sd_file(*TensorFile::open(p)).position_ids;
  };
  std::vector<int64_t> ids(77);
  for (int i = 0; i < 77; ++i) ids[i] = i;
  CHECK(layout_with(DType::I64, {1, 77}, as_bytes(ids)) == "0..76 (checked)");
  ids[5] = 6;
  std::string bad = layout_with(DType::I64, {1, 77}, as_bytes(ids));
  CHECK_MSG(bad.find("ignored: entry 5 is 6, not 5") == 0, bad);
  std::vector<float> f(77, 0.f);
  CHECK(layout_with(DType::F32, {1, 77}, as_bytes(f)).find("ignored: stored as F32") == 0);
  // Whatever the buffer says, it is not a weight: the text view does not list it.
  TempDir tmp;
  std::string p = tmp.path("pos2.safetensors");
  write_safetensors(p, {{"cond_stage_model.transformer.embeddings.position_ids", DType::I64, {1, 77}, as_bytes(ids)}});
  std::shared_ptr<const TensorFile> file(TensorFile::open(p));
  CHECK(sd_part_view(file, SdPart::TextEncoder)->names().empty());
}

namespace {
// Header-only stand-in: SD-1.5's shapes, no data (config derivation reads shapes only).
class ShapesOnly : public TensorFile {
 public:
  void add(const std::string& n, std::vector<int64_t> shape) {
    TensorView v;
    v.name = n, v.shape = std::move(shape);
    names_.push_back(n);
    views_[n] = v;
  }
  const std::string& path() const override { return path_; }
  const std::vector<std::string>& names() const override { return names_; }
  const TensorView* find(const std::string& n) const override {
    auto it = views_.find(n);
    return it == views_.end() ? nullptr : &it->second;
  }
  const std::map<std::string, std::string>& metadata() const override { return meta_; }

 private:
  std::string path_ = "sd15.safetensors";
  std::vector<std::string> names_;
  std::map<std::string, TensorView> views_;
  std::map<std::string, std::string> meta_;
};
}  // namespace

TEST(single_file_configs_are_derived_for_sd15_sizes_only) {
  ShapesOnly te;
  te.add("text_model.embeddings.token_embedding.weight", {49408, 768});
  te.add("text_model.embeddings.position_embedding.weight", {77, 768});
  for (int i = 0; i < 12; ++i) {
    te.add("text_model.encoder.layers." + std::to_string(i) + ".self_attn.q_proj.weight", {768, 768});
    te.add("text_model.encoder.layers." + std::to_string(i) + ".mlp.fc1.weight", {3072, 768});
  }
  ClipTextEncoderConfig c =
      parse_clip_text_encoder_config(Json::parse(derive_single_file_config(te, "text_encoder")), "derived");
  CHECK(c.vocab_size == 49408 && c.hidden_size == 768 && c.num_heads == 12 && c.num_layers == 12 &&
        c.intermediate_size == 3072 && c.max_position_embeddings == 77 && c.quick_gelu);

  ShapesOnly vae;
  const int ch[] = {128, 256, 512, 512};
  vae.add("encoder.conv_in.weight", {128, 3, 3, 3});
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 2; ++j)
      vae.add("encoder.down_blocks." + std::to_string(i) + ".resnets." + std::to_string(j) + ".conv1.weight",
              {ch[i], j ? ch[i] : ch[i > 0 ? i - 1 : 0], 3, 3});
  vae.add("post_quant_conv.weight", {4, 4});
  vae.add("decoder.conv_out.weight", {3, 128, 3, 3});
  VaeConfig v = parse_vae_config(Json::parse(derive_single_file_config(vae, "vae")), "derived");
  CHECK(v.block_out_channels == std::vector<int>({128, 256, 512, 512}) && v.layers_per_block == 2 &&
        v.norm_num_groups == 32 && v.latent_channels == 4 && std::fabs(v.scaling_factor - 0.18215f) < 1e-7f);

  // Other sizes: heads / groups cannot be read from shapes, so no guess.
  ShapesOnly small;
  small.add("text_model.embeddings.token_embedding.weight", {49408, 32});
  std::string msg = error_of([&] { derive_single_file_config(small, "text_encoder"); });
  CHECK_MSG(msg.find("ERR_UNSUPPORTED") == 0 && msg.find("hidden_size 32 where SD-1.5 has 768") != std::string::npos &&
                msg.find("--sd-config") != std::string::npos,
            msg);
  ShapesOnly none;
  msg = error_of([&] { derive_single_file_config(none, "vae"); });
  CHECK_MSG(
      msg.find("ERR_WEIGHTS_MISSING") == 0 && msg.find("first_stage_model.encoder.conv_in.weight") != std::string::npos,
      msg);
}

TEST(single_file_given_config_is_checked_and_unet_refused) {
  if (!fixture_model_present()) SKIP("fixture model not found in " + xpsr_test::fixtures_dir());
  TempDir tmp;
  std::string p = tmp.path("single.safetensors");
  write_safetensors(p, single_file_tensors(true));
  Bytes raw = read_all(model_file("text_encoder/config.json"));
  const std::string cfg(raw.begin(), raw.end());
  ComponentSource ok = resolve_component("text_encoder", p, cfg, "");
  CHECK(ok.layout == "SD single file" && ok.take_files().size() == 1);
  std::string wrong = cfg;
  const std::string from = "\"intermediate_size\": 128";
  CHECK(wrong.find(from) != std::string::npos);
  wrong.replace(wrong.find(from), from.size(), "\"intermediate_size\": 256");
  std::string msg = error_of([&] { resolve_component("text_encoder", p, wrong, ""); });
  CHECK_MSG(msg.find("ERR_SHAPE_MISMATCH") == 0 &&
                msg.find("intermediate_size 256 in the config, 128 in the tensors") != std::string::npos,
            msg);
  msg = error_of([&] { resolve_component("text_encoder", p, "", ""); });  // not SD-1.5 sizes, no config
  CHECK_MSG(msg.find("ERR_UNSUPPORTED") == 0, msg);
  msg = error_of([&] { resolve_component("unet", p, "{}", ""); });
  CHECK_MSG(msg.find("ERR_UNSUPPORTED") == 0 && msg.find("XPSR checkpoint") != std::string::npos, msg);
  std::string xl = tmp.path("sdxl.safetensors");
  write_safetensors(
      xl, {{"conditioner.embedders.0.transformer.text_model.final_layer_norm.weight", DType::F32, {2}, Bytes(8)}});
  msg = error_of([&] { resolve_component("text_encoder", xl, "", ""); });
  CHECK_MSG(msg.find("ERR_UNSUPPORTED") == 0 && msg.find("SDXL") != std::string::npos, msg);
}

TEST(weight_files_follow_diffusers_variants) {
  TempDir tmp;
  const std::string d = tmp.dir();
  auto touch = [&](const std::string& n) { tmp.write(n, Bytes{1}); };
  const std::vector<std::string> stems = {"model", "pytorch_model"};
  touch("model.fp16.safetensors");
  CHECK(find_weight_files(d, stems) == std::vector<std::string>{d + "/model.fp16.safetensors"});  // only the variant
  CHECK(find_weight_files(d, stems, "fp16") == std::vector<std::string>{d + "/model.fp16.safetensors"});
  touch("model.safetensors");
  CHECK(find_weight_files(d, stems) == std::vector<std::string>{d + "/model.safetensors"});
  CHECK(find_weight_files(d, stems, "fp16") == std::vector<std::string>{d + "/model.fp16.safetensors"});
  CHECK(find_weight_files(d, stems, "bf16") == std::vector<std::string>{d + "/model.safetensors"});  // falls back
  TempDir two;
  two.write("pytorch_model.fp16.bin", Bytes{1});
  two.write("pytorch_model.ema.bin", Bytes{1});
  std::string msg = error_of([&] { find_weight_files(two.dir(), stems); });
  CHECK_MSG(msg.find("ERR_WEIGHTS_MISSING") == 0 && msg.find("several variants (ema, fp16)") != std::string::npos, msg);
  CHECK(find_weight_files(two.dir(), stems, "ema") == std::vector<std::string>{two.dir() + "/pytorch_model.ema.bin"});
  TempDir sharded;
  sharded.write("diffusion_pytorch_model.safetensors.index.fp16.json",
                std::string(R"({"weight_map": {"a": "diffusion_pytorch_model.fp16-00001-of-00002.safetensors",)"
                            R"( "b": "diffusion_pytorch_model.fp16-00002-of-00002.safetensors"}})"));
  auto shards = find_weight_files(sharded.dir(), {"diffusion_pytorch_model", "model"});
  CHECK(shards.size() == 2 && shards[1] == sharded.dir() + "/diffusion_pytorch_model.fp16-00002-of-00002.safetensors");
}
