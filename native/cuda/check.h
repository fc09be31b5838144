// CUDA status -> xpsr::Error (never abort/exit). Host-only; used by backend.cpp, devices.cpp and the
// launchers. Out-of-memory becomes ErrorCode::OutOfMemory (the error is cleared, the backend stays usable);
// a missing driver/device DeviceUnavailable; a sticky kernel fault Internal with a note that the process
// must restart to use the GPU again; anything else Internal. Every message names what was being done.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "../common/error.h"

namespace xpsr::cuda {

inline bool is_sticky(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorECCUncorrectable:
    case cudaErrorLaunchTimeout:  // REVIEW FIX: a watchdog-killed kernel also leaves the context unusable
      return true;
    default: return false;
  }
}

[[noreturn]] inline void throw_cuda(cudaError_t e, const std::string& what) {
  (void)cudaGetLastError();  // clear a non-sticky error so the next call starts clean
  std::string msg = "CUDA: " + what + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
  switch (e) {
    case cudaErrorMemoryAllocation: throw Error(ErrorCode::OutOfMemory, msg);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice: throw Error(ErrorCode::DeviceUnavailable, msg);
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorInvalidPtx:
      throw Error(ErrorCode::DeviceUnavailable,
                  msg + " - this build has no code for this GPU; rebuild with XPSR_CUDA_ARCHS including it");
    default:
      if (is_sticky(e))
        throw Error(ErrorCode::Internal,
                    msg + " - the CUDA context is unusable now; restart the process to use the GPU again");
      throw Error(ErrorCode::Internal, msg);
  }
}

// check(cudaMemcpy(...), "download_act of 4096 elements")
inline void check(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw_cuda(e, what);
}
// Same, with the message built only on failure: check_f(e, [&]{ return describe(args); }).
template <typename F>
inline void check_f(cudaError_t e, F&& what) {
  if (e != cudaSuccess) throw_cuda(e, what());
}

}  // namespace xpsr::cuda
