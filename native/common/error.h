// xpsr::Error — the one exception type of the native code. Every failure (bad weights, shape mismatch,
// I/O, CUDA, out of memory, cancellation) becomes an Error with a code and a message a user can act on.
// It is caught at the N-API boundary (native/napi) and rejected as a JS error with `.code`; nothing aborts.
#pragma once
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace xpsr {

enum class ErrorCode {
  InvalidArgument,    // a caller passed something malformed (wrong shape, NaN, bad option)
  WeightsMissing,     // a file or tensor that must exist does not
  WeightsInvalid,     // a weights file is corrupt, truncated, hostile or has the wrong dtype
  ShapeMismatch,      // a tensor exists but has the wrong shape
  Io,                 // the OS refused (open, mmap, read)
  OutOfMemory,        // host or device allocation failed; the engine stays usable
  Cancelled,          // the cancel flag was raised
  DeviceUnavailable,  // no CUDA driver / device / compute capability too low
  Unsupported,        // a config value or feature this engine does not implement
  Internal,           // a bug in xpsr-native
};

inline const char* error_code_name(ErrorCode c) {
  switch (c) {
    case ErrorCode::InvalidArgument: return "ERR_INVALID_ARGUMENT";
    case ErrorCode::WeightsMissing: return "ERR_WEIGHTS_MISSING";
    case ErrorCode::WeightsInvalid: return "ERR_WEIGHTS_INVALID";
    case ErrorCode::ShapeMismatch: return "ERR_SHAPE_MISMATCH";
    case ErrorCode::Io: return "ERR_IO";
    case ErrorCode::OutOfMemory: return "ERR_OUT_OF_MEMORY";
    case ErrorCode::Cancelled: return "ERR_CANCELLED";
    case ErrorCode::DeviceUnavailable: return "ERR_DEVICE_UNAVAILABLE";
    case ErrorCode::Unsupported: return "ERR_UNSUPPORTED";
    case ErrorCode::Internal: return "ERR_INTERNAL";
  }
  return "ERR_INTERNAL";
}

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }
  const char* code_name() const { return error_code_name(code_); }

 private:
  ErrorCode code_;
};

// "[320, 4, 3, 3]" — the one way shapes are printed in messages.
template <typename T>
inline std::string shape_str(const std::vector<T>& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

// Builds a message from pieces: fail(ErrorCode::Io, "cannot open ", path).
template <typename... Args>
[[noreturn]] inline void fail(ErrorCode code, const Args&... parts) {
  std::ostringstream o;
  (o << ... << parts);
  throw Error(code, o.str());
}

#define XPSR_CHECK(cond, code, ...)                 \
  do {                                              \
    if (!(cond)) ::xpsr::fail((code), __VA_ARGS__); \
  } while (0)

}  // namespace xpsr
