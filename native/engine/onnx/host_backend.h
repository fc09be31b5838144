// The backend an ONNX export loads models into: it keeps every weight as host f32 in its PyTorch layout
// (exactly what the loader uploads) so the exporter can write it out, and it runs nothing. Models load
// through the engine's own path (Engine::load, the same loader and configs), graphs are built by the
// models' own forward functions, and the exporter walks the recorded node list instead of executing it.
#pragma once
#include <memory>

#include "../backend.h"

namespace xpsr::onnx {

struct HostWeight : Weight {
  std::vector<float> data;  // PyTorch layout, `shape`
  std::string owner;        // prefix naming the model it belongs to ("unet/"), for initializer names
};

std::unique_ptr<Backend> make_host_weight_backend();
// Prefix recorded on the weights uploaded from now on (call before loading each model).
void set_weight_owner(Backend& host_backend, const std::string& owner);

// The host data of a weight uploaded to the host-weight backend (throws Internal for any other backend).
const HostWeight& host_weight(const Weight* w);

}  // namespace xpsr::onnx
