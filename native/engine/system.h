// What this build and this machine offer: backends by device name, the CUDA devices, facts about the
// build. The one engine file that knows the CUDA backend exists (the N-API layer asks here); CMakeLists.txt
// compiles it into its own library, with XPSR_HAVE_CUDA when the CUDA backend is built.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"

namespace xpsr {

struct BackendChoice {
  std::unique_ptr<Backend> backend;
  std::string device;  // the resolved name: "cpu" or "cuda:N"
};
// device: "cpu", "cuda" (= "cuda:0") or "cuda:N"; threads: CPU backend threads (0: all).
// Error(InvalidArgument) for another string; Error(DeviceUnavailable) when this build has no CUDA backend
// or the device cannot be used.
BackendChoice make_backend(const std::string& device, int threads);

struct DeviceInfo {
  int index = 0;
  std::string name, compute_capability;  // "8.0"
  size_t total_memory = 0, free_memory = 0;
};
struct DeviceList {
  std::vector<DeviceInfo> cuda;
  std::string reason;  // why the list is empty, in words ("" when it is not)
};
DeviceList list_devices();  // never throws

struct SystemInfo {
  int hardware_threads = 0;
  std::vector<std::string> cpu_features;  // "avx2", "fma", "avx512f", ...
  std::vector<std::string> backends;      // "cpu" and, when built, "cuda"
  bool cuda_built = false;
  std::string cpu_backend;                      // the CPU backend's description, or "unavailable: why"
  std::vector<std::string> cuda_architectures;  // compiled in: "sm_80", "sm_90", "PTX compute_80"
  std::string compiler;                         // the compiler this was built with: "g++ 12.2.0"
  std::string glibc;                            // the glibc it was built against: "2.36" ("" if none)
};
SystemInfo system_info();

// "80-real;90-real;80-virtual" (CMake's CUDA_ARCHITECTURES, ',' or ';' separated) -> "sm_80", "sm_90",
// "PTX compute_80". A bare "86" is both sm_86 and PTX compute_86.
std::vector<std::string> describe_cuda_architectures(const std::string& cmake_list);

}  // namespace xpsr
