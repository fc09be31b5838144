// The CUDA backend's public entry points (native/cuda). Everything else in this folder is internal.
// make_cuda_backend() returns a Backend (native/engine/backend.h) that stores activations in fp16,
// accumulates in fp32 and runs every op on one stream it owns. It throws xpsr::Error(DeviceUnavailable)
// when there is no driver, no such device, or the device is older than compute capability 8.0.
// Tests: native/cuda/backend_test.cu.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "../engine/backend.h"

namespace xpsr {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  size_t total_mem = 0, free_mem = 0;
};

// Every CUDA device the driver reports (including ones too old to use: check cc_major >= 8). Empty when
// there is none; then *why_none (if given) says why in words ("no CUDA driver", "driver too old for this
// build (needs CUDA 13)", "no CUDA device"...). Never throws.
std::vector<CudaDeviceInfo> list_cuda_devices(std::string* why_none = nullptr);

// Creates the backend on `device` (an index into list_cuda_devices()).
std::unique_ptr<Backend> make_cuda_backend(int device = 0);

// Statistics of a CUDA backend (for benchmarks and diagnostics); zeros for other backends.
struct CudaBackendStats {
  size_t act_bytes_live = 0, act_bytes_peak = 0;  // alloc()ed bytes now / at most
  size_t workspace_bytes = 0;                     // scratch owned by the backend
  size_t device_used_peak = 0;                    // max (total - free) seen by the backend's checks
  int graphs_captured = 0, graph_replays = 0, graph_fallbacks = 0;
  std::string last_graph_failure;  // why the last capture fell back to eager ("" if none)
  int last_graph_nodes = 0;        // nodes of the most recently captured graph
  int last_graph_kernels = 0;      // of which kernel launches (= launches per run of that plan)
  std::string tile_notes;          // tile policy, the d=160 attention variant, registers per GEMM tile
};
CudaBackendStats cuda_backend_stats(const Backend& b);

// The cudaStream_t (as void*) a CUDA backend runs its ops on, for interop and benchmarks; null otherwise.
void* cuda_backend_stream(const Backend& b);

// Several independent attention problems of the same head_dim in ONE launch (e.g. the high- and
// low-level branches of a Semantic-Fusion Attention block). Same result as calling b.attention() on
// each. Works on any backend (falls back to a loop); on CUDA it is a single kernel launch for up to 4
// problems with the fast path. See native/cuda/attention.cuh.
void attention_multi(Backend& b, const AttentionArgs* problems, int count);

}  // namespace xpsr
