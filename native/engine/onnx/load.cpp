// ExportSession: loads models for export onto the host-weight backend.
#include "load.h"

#include <algorithm>
#include <cstdio>

#include "../io/tensor_file.h"
#include "../json.h"
#include "../models/clip_text_encoder.h"
#include "../models/controlnet.h"
#include "../models/unet.h"
#include "../models/vae.h"
#include "../sources.h"
#include "../weights.h"
#include "host_backend.h"

namespace xpsr::onnx {

struct ExportSession::Owned {
  std::unique_ptr<ClipTextEncoder> text;
  std::unique_ptr<Vae> vae;
  std::unique_ptr<UNet> unet;
  std::unique_ptr<ControlNet> controlnet;
};

namespace {

// Config and loader of one component, as Engine::load builds them.
struct Source {
  Json cfg;
  std::string where;
  std::unique_ptr<WeightLoader> ld;
};

Source open_source(Backend& be, const ComponentSource& c, const char* component, const char* what) {
  Source s;
  std::string text;
  std::vector<std::unique_ptr<TensorFile>> files;
  if (c.synthetic) {
    if (c.config_json.empty()) fail(ErrorCode::InvalidArgument, "synthetic weights need a config");
    text = c.config_json, s.where = "config.json (given)";
  } else {
    xpsr::ComponentSource src = resolve_component(component, c.path, c.config_json, c.variant);
    text = src.config_json, s.where = src.config_where;
    files = src.take_files();
  }
  try {
    s.cfg = Json::parse(text, s.where);
  } catch (const Error& e) {
    throw Error(ErrorCode::WeightsInvalid, e.what());
  }
  s.ld = c.synthetic ? std::make_unique<WeightLoader>(be, what, c.seed)
                     : std::make_unique<WeightLoader>(be, what, std::move(files));
  return s;
}

bool wants(const std::vector<std::string>& parts, std::initializer_list<const char*> any) {
  if (parts.empty()) return true;
  for (auto* p : any)
    if (std::find(parts.begin(), parts.end(), p) != parts.end()) return true;
  return false;
}

}  // namespace

ExportSession::ExportSession(const ExportSources& src, const std::vector<std::string>& parts)
    : be_(make_host_weight_backend()), m_(std::make_unique<Owned>()) {
  load(src, parts);
}

ExportSession::ExportSession(const ExportSources& src, const std::vector<std::string>& parts,
                             std::unique_ptr<Backend> backend)
    : be_(std::move(backend)), m_(std::make_unique<Owned>()), host_(false) {
  load(src, parts);
}

void ExportSession::load(const ExportSources& src, const std::vector<std::string>& parts) {
  auto set_owner = [&](const char* owner) {
    if (host_) set_weight_owner(*be_, owner);
  };
  if (src.text_encoder.given() && wants(parts, {"text_encoder"})) {
    set_owner("text_encoder/");
    Source s = open_source(*be_, src.text_encoder, "text_encoder", "text encoder");
    m_->text = std::make_unique<ClipTextEncoder>();
    m_->text->load(*s.ld, parse_clip_text_encoder_config(s.cfg, s.where));
    s.ld->finish();
  }
  const bool enc = wants(parts, {"vae_encoder"}), dec = wants(parts, {"vae_decoder"});
  if (src.vae.given() && (enc || dec)) {
    set_owner("vae/");
    Source s = open_source(*be_, src.vae, "vae", "VAE");
    m_->vae = std::make_unique<Vae>();
    m_->vae->load(*s.ld, parse_vae_config(s.cfg, s.where), enc, dec);
    s.ld->finish();
  }
  if (src.unet.given() && wants(parts, {"step", "unet"})) {
    set_owner("unet/");
    Source s = open_source(*be_, src.unet, "unet", "UNet");
    m_->unet = std::make_unique<UNet>();
    m_->unet->load(*s.ld, parse_unet_config(s.cfg, s.where));
    s.ld->finish();
  }
  if (src.controlnet.given() && wants(parts, {"step", "controlnet"})) {
    set_owner("controlnet/");
    Source s = open_source(*be_, src.controlnet, "controlnet", "ControlNet");
    m_->controlnet = std::make_unique<ControlNet>();
    m_->controlnet->load(*s.ld, parse_controlnet_config(s.cfg, s.where));
    s.ld->finish();
  }
}

ExportSession::~ExportSession() {
  m_.reset();  // weights before the backend
}

ExportModels ExportSession::models() const {
  return ExportModels{m_->text.get(), m_->vae.get(), m_->unet.get(), m_->controlnet.get()};
}

}  // namespace xpsr::onnx
