// Options of the CPU backend beyond the thread count (make_cpu_backend(int) in engine/backend.h reads
// them from the environment; this header is for callers that choose explicitly: the benchmark, tests).
//   precision F32 (default): f32 weights and f32 math everywhere.
//   precision BF16: Linear and Conv weights are stored as bf16 (half the memory) and their GEMMs run
//     on bf16 operands with f32 accumulation (AVX512_BF16 vdpbf16ps): activations are rounded to bf16
//     as each GEMM packs them; bias, residual, outputs, attention, norms and elementwise ops stay f32.
//     Needs a CPU with AVX512_BF16 and the AVX-512 kernel set (Error Unsupported otherwise). Its numeric
//     cost is measured against the fixtures by `xpsr_tests parity` (see docs/benchmarks.md).
// Environment: XPSR_CPU_PRECISION=fp32|bf16 (unset: fp32) is what make_cpu_backend(int) uses.
#pragma once
#include <memory>

#include "../engine/backend.h"

namespace xpsr {

enum class CpuPrecision { F32, BF16 };

struct CpuBackendOptions {
  int threads = 0;  // <= 0: all hardware threads
  CpuPrecision precision = CpuPrecision::F32;
};

std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions& options);
// XPSR_CPU_PRECISION; throws Error(InvalidArgument) for an unknown value.
CpuPrecision cpu_precision_from_env();
// The bf16 mode can run here (AVX512_BF16 CPU, AVX-512 set allowed by XPSR_CPU_ISA).
bool cpu_bf16_available();
const char* cpu_precision_name(CpuPrecision p);

}  // namespace xpsr
