// Device discovery and the public entry points of cuda_backend.h. cudart is linked statically, so this
// runs (and explains itself) on machines without libcudart, without a driver or without a GPU.
// Test: native/cuda/backend_test.cu.
#include <cuda_runtime.h>

#include <sstream>

#include "backend_impl.h"
#include "check.h"

namespace xpsr {

namespace {

std::string version_str(int v) {  // 13000 -> "13.0"
  std::ostringstream o;
  o << v / 1000 << "." << (v % 1000) / 10;
  return o.str();
}

}  // namespace

std::vector<CudaDeviceInfo> list_cuda_devices(std::string* why_none) {
  std::vector<CudaDeviceInfo> out;
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    if (why_none) {
      if (driver == 0) *why_none = "no NVIDIA driver found (libcuda is not installed or not loadable)";
      else if (e == cudaErrorInsufficientDriver || driver < runtime)
        *why_none = "the NVIDIA driver supports CUDA " + version_str(driver) + " but this build needs CUDA " +
                    version_str(runtime) + "; update the driver";
      else if (e == cudaErrorNoDevice || count == 0)
        *why_none = "no CUDA device is visible (driver CUDA " + version_str(driver) + "; check CUDA_VISIBLE_DEVICES)";
      else
        *why_none =
            std::string("CUDA initialisation failed: ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
    }
    return out;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
      (void)cudaGetLastError();
      continue;
    }
    CudaDeviceInfo d;
    d.index = i;
    d.name = prop.name;
    d.cc_major = prop.major;
    d.cc_minor = prop.minor;
    d.total_mem = prop.totalGlobalMem;
    // free memory needs a context on that device; ask without disturbing the caller's current device
    int prev = 0;
    cudaGetDevice(&prev);
    size_t fr = 0, tot = 0;
    if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&fr, &tot) == cudaSuccess) d.free_mem = fr;
    (void)cudaGetLastError();
    cudaSetDevice(prev);
    out.push_back(d);
  }
  if (out.empty() && why_none) *why_none = "the driver reports CUDA devices but none could be queried";
  return out;
}

std::unique_ptr<Backend> make_cuda_backend(int device) {
  std::string why;
  const auto devs = list_cuda_devices(&why);
  if (devs.empty()) throw Error(ErrorCode::DeviceUnavailable, "CUDA backend unavailable: " + why);
  if (device < 0 || device >= (int)devs.size()) {
    std::ostringstream o;
    o << "CUDA device " << device << " does not exist; available:";
    for (const auto& d : devs) o << " cuda:" << d.index << " (" << d.name << ")";
    throw Error(ErrorCode::DeviceUnavailable, o.str());
  }
  const CudaDeviceInfo& d = devs[device];
  if (d.cc_major < 8) {
    std::ostringstream o;
    o << "cuda:" << device << " (" << d.name << ") has compute capability " << d.cc_major << "." << d.cc_minor
      << "; the CUDA backend needs 8.0 or newer (A100/A800, A10, RTX 30xx/40xx, H100...). Use device: 'cpu'.";
    throw Error(ErrorCode::DeviceUnavailable, o.str());
  }
  return std::make_unique<cuda::CudaBackend>(device);
}

CudaBackendStats cuda_backend_stats(const Backend& b) {
  if (auto* c = dynamic_cast<const cuda::CudaBackend*>(&b)) return c->stats();
  return {};
}

void* cuda_backend_stream(const Backend& b) {
  if (auto* c = dynamic_cast<const cuda::CudaBackend*>(&b)) return c->stream();
  return nullptr;
}

void attention_multi(Backend& b, const AttentionArgs* problems, int count) {
  if (auto* c = dynamic_cast<cuda::CudaBackend*>(&b)) {
    c->attention_multi(problems, count);
    return;
  }
  for (int i = 0; i < count; ++i) b.attention(problems[i]);
}

}  // namespace xpsr
