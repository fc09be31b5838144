// Loading the networks for ONNX export: the same config parsers, weight-file discovery and WeightLoader
// as Engine::load (so every configuration the engine reads exports the same way), onto the host-weight
// backend, without an Engine (the exporter walks graphs, it never plans or runs them).
#pragma once
#include <memory>
#include <string>

#include "../backend.h"
#include "export.h"

namespace xpsr::onnx {

struct ComponentSource {
  std::string path;         // component folder (config.json + weights); empty = absent
  std::string config_json;  // overrides <path>/config.json; with `synthetic`, the config
  bool synthetic = false;   // random weights of the config's shapes (tests, benchmarks)
  uint64_t seed = 1;
  bool given() const { return !path.empty() || synthetic; }
};

struct ExportSources {
  ComponentSource text_encoder, vae, unet, controlnet;
};

// Owns the host-weight backend and the loaded models.
class ExportSession {
 public:
  // Loads what `parts` need (all given components when parts is empty). Errors are the loader's: every
  // missing or mis-shaped tensor at once, with file and key.
  ExportSession(const ExportSources& src, const std::vector<std::string>& parts);
  // The same models on another backend (the CPU backend for the native side of benchmarks).
  ExportSession(const ExportSources& src, const std::vector<std::string>& parts, std::unique_ptr<Backend> backend);
  ~ExportSession();
  ExportModels models() const;
  Backend& backend() { return *be_; }

 private:
  struct Owned;
  void load(const ExportSources& src, const std::vector<std::string>& parts);
  std::unique_ptr<Backend> be_;
  std::unique_ptr<Owned> m_;
  bool host_ = true;
};

}  // namespace xpsr::onnx
