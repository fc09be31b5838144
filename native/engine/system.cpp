// Backends by name, device listing and build facts (system.h).
#include "system.h"

#include <cstdlib>
#include <thread>

#include "../common/error.h"
#ifdef XPSR_HAVE_CUDA
#include "../cuda/cuda_backend.h"
#endif

namespace xpsr {

BackendChoice make_backend(const std::string& device, int threads) {
  BackendChoice r;
  if (device == "cpu") {
    r.backend = make_cpu_backend(threads);
    r.device = "cpu";
    return r;
  }
  if (device.rfind("cuda", 0) != 0)
    fail(ErrorCode::InvalidArgument, "device '", device, "': expected 'cpu', 'cuda' or 'cuda:N'");
  int index = 0;
  if (device != "cuda") {
    const std::string n = device.size() > 5 && device[4] == ':' ? device.substr(5) : "";
    bool digits = !n.empty() && n.size() <= 4 && n.find_first_not_of("0123456789") == std::string::npos;
    if (!digits) fail(ErrorCode::InvalidArgument, "device '", device, "': expected cuda or cuda:N");
    index = std::atoi(n.c_str());
  }
#ifdef XPSR_HAVE_CUDA
  r.backend = make_cuda_backend(index);
  r.device = "cuda:" + std::to_string(index);
  return r;
#else
  (void)index;
  fail(ErrorCode::DeviceUnavailable, "device '", device,
       "': this build of xpsr-native has no CUDA backend (nvcc was not found when it was built, or XPSR_CUDA=off); ",
       "rebuild with CUDA (npm run build:native) or use device 'cpu'");
#endif
}

DeviceList list_devices() {
  DeviceList r;
#ifdef XPSR_HAVE_CUDA
  for (const CudaDeviceInfo& d : list_cuda_devices(&r.reason)) {
    DeviceInfo i;
    i.index = d.index, i.name = d.name;
    i.compute_capability = std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor);
    i.total_memory = d.total_mem, i.free_memory = d.free_mem;
    r.cuda.push_back(i);
  }
#else
  r.reason = "built without the CUDA backend";
#endif
  return r;
}

std::vector<std::string> describe_cuda_architectures(const std::string& list) {
  std::vector<std::string> sass, ptx;
  size_t i = 0;
  while (i <= list.size()) {
    size_t j = list.find_first_of(",;", i);
    if (j == std::string::npos) j = list.size();
    std::string a = list.substr(i, j - i);
    i = j + 1;
    if (a.empty()) continue;
    size_t dash = a.find('-');
    std::string num = a.substr(0, dash), kind = dash == std::string::npos ? "" : a.substr(dash + 1);
    if (kind != "virtual") sass.push_back("sm_" + num);
    if (kind != "real") ptx.push_back("PTX compute_" + num);
  }
  sass.insert(sass.end(), ptx.begin(), ptx.end());
  return sass;
}

SystemInfo system_info() {
  SystemInfo s;
  s.hardware_threads = (int)std::thread::hardware_concurrency();
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("sse4.2")) s.cpu_features.push_back("sse4.2");
  if (__builtin_cpu_supports("avx")) s.cpu_features.push_back("avx");
  if (__builtin_cpu_supports("avx2")) s.cpu_features.push_back("avx2");
  if (__builtin_cpu_supports("fma")) s.cpu_features.push_back("fma");
  if (__builtin_cpu_supports("avx512f")) s.cpu_features.push_back("avx512f");
#endif
  s.backends.push_back("cpu");
#ifdef XPSR_HAVE_CUDA
  s.backends.push_back("cuda");
  s.cuda_built = true;
#ifdef XPSR_CUDA_ARCHS
  s.cuda_architectures = describe_cuda_architectures(XPSR_CUDA_ARCHS);
#endif
#endif
  try {
    s.cpu_backend = make_cpu_backend(0)->description();
  } catch (const Error& e) {
    s.cpu_backend = std::string("unavailable: ") + e.what();
  }
#if defined(__clang__)
  s.compiler = "clang++ " __clang_version__;
#elif defined(__GNUC__)
  s.compiler = "g++ " __VERSION__;
#elif defined(_MSC_VER)
  s.compiler = "MSVC " + std::to_string(_MSC_VER);
#endif
#if defined(__GLIBC__)
  s.glibc = std::to_string(__GLIBC__) + "." + std::to_string(__GLIBC_MINOR__);
#endif
  return s;
}

}  // namespace xpsr
