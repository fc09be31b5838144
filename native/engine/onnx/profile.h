// Native side of the ONNX CPU comparison (scripts/bench-onnx.mjs): the step graph the exporter builds
// (ControlNet + UNet, batch 2), planned and run on the CPU backend with the time of every op, so the
// same op classes can be compared with onnxruntime's profile of the exported file.
#pragma once
#include <string>

#include "load.h"

namespace xpsr::onnx {

// Returns JSON: {"runsMs": [...], "msByOp": {"conv2d": mean ms per run, ...}, "flops": ..., "arenaBytes": ...,
// "backend": "..."}. `reps` timed runs after one warm-up run.
std::string profile_step_cpu(const ExportSources& src, int width, int height, int batch, int seq_len, int threads,
                             int reps);

}  // namespace xpsr::onnx
