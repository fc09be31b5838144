// Per-op timing of the exported step graph on the CPU backend (benchmarks only).
#include "profile.h"

#include <chrono>
#include <cmath>
#include <map>
#include <sstream>

#include "../models/blocks.h"
#include "../models/controlnet.h"
#include "../models/unet.h"
#include "export.h"

namespace xpsr::onnx {

std::string profile_step_cpu(const ExportSources& src, int W, int H, int batch, int seq_len, int threads, int reps) {
  if (W % 8 || H % 8 || W <= 0 || H <= 0)
    fail(ErrorCode::InvalidArgument, "profile: size must be positive multiples of 8");
  ExportSession s(src, {"step"}, make_cpu_backend(threads));
  ExportModels m = s.models();
  if (!m.controlnet || !m.unet) fail(ErrorCode::InvalidArgument, "profile: needs a ControlNet and a UNet");
  const std::string backend = s.backend().description();
  ExportGraph eg = build_step(s.backend(), *m.controlnet, *m.unet, batch, H / 8, W / 8, seq_len, false);
  const Graph& g = *eg.graph;
  // Inputs: deterministic values in each input's range; timestep features as the engine computes them.
  std::map<std::string, Dims> in_dims;
  for (auto& in : g.inputs()) in_dims[in.first] = g.values()[in.second].d;
  Plan plan(std::move(eg.graph));
  for (auto& [name, d] : in_dims) {
    std::vector<float> v(d.numel());
    if (name == "time_features" || name == "time_features_unet") {
      const UNetConfig& c = name == "time_features" ? m.controlnet->trunk.config : m.unet->config;
      auto f = timestep_features(501.f, d.c, c.flip_sin_to_cos, c.freq_shift);
      for (int i = 0; i < d.n; ++i) std::copy(f.begin(), f.end(), v.begin() + (size_t)i * d.c);
    } else {
      for (size_t i = 0; i < v.size(); ++i) v[i] = (name == "image" ? 0.5f : 0.f) + 0.5f * std::sin(0.37f * (float)i);
    }
    plan.set_input(name, v.data(), v.size());
  }
  plan.run();  // warm-up
  std::map<std::string, double> by_op;
  std::vector<double> runs;
  for (int r = 0; r < reps; ++r) {
    std::map<std::string, double> one;
    plan.run_profiled(one);
    double total = 0;
    for (auto& kv : one) by_op[kv.first] += kv.second / reps, total += kv.second;
    runs.push_back(total);
  }
  std::ostringstream o;
  o << "{\"backend\": \"" << backend << "\", \"runsMs\": [";
  for (size_t i = 0; i < runs.size(); ++i) o << (i ? ", " : "") << runs[i];
  o << "], \"msByOp\": {";
  bool first = true;
  for (auto& kv : by_op) o << (first ? "" : ", ") << "\"" << kv.first << "\": " << kv.second, first = false;
  o << "}, \"flops\": " << plan.flops() << ", \"arenaBytes\": " << plan.arena_bytes() << "}";
  return o.str();
}

}  // namespace xpsr::onnx
