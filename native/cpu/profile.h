// Opt-in per-op time profile of the CPU backend (diagnostics for benchmarks, never asserted by tests).
// With env XPSR_CPU_PROFILE=1 every CpuBackend op adds its wall time, the process CPU time it used (all
// threads; unlike wall time this barely moves when other processes share the cores) and, for conv /
// linear / attention, its FLOPs to a process-wide table keyed by an op label ("conv3x3 C=320 K=320",
// "attention d=40 Lq=4096 Lk=4096", "group_norm+silu" ...); profile_report() prints the table to
// stderr, sorted by CPU time, and clears it. Off (the default) it costs one cached flag test per op.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace xpsr::cpu {

bool profile_enabled();
void profile_add(const std::string& label, double seconds, double cpu_seconds, double flops);
double process_cpu_seconds();  // CPU time of the whole process (all threads)
// Prints the table ("title" as its heading) to stderr and clears it. Nothing when disabled or empty.
void profile_report(const char* title);

// Times one op when profiling is on.
class ProfileScope {
 public:
  ProfileScope(const char* label, double flops = 0) : on_(profile_enabled()) {
    if (on_) label_ = label, start(flops);
  }
  ProfileScope(std::string label, double flops) : on_(profile_enabled()) {
    if (on_) label_ = std::move(label), start(flops);
  }
  ~ProfileScope() {
    if (on_)
      profile_add(label_, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(),
                  process_cpu_seconds() - cpu0_, flops_);
  }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  bool on_;
  std::string label_;
  double flops_ = 0, cpu0_ = 0;
  void start(double flops) {
    flops_ = flops;
    cpu0_ = process_cpu_seconds();
    t0_ = std::chrono::steady_clock::now();
  }
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace xpsr::cpu
