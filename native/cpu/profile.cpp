// Per-op profile table of profile.h.
#include "profile.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <mutex>
#include <vector>

namespace xpsr::cpu {
namespace {

struct Entry {
  int64_t calls = 0;
  double seconds = 0, cpu = 0, flops = 0;
};

std::mutex g_mutex;
std::map<std::string, Entry>& table() {
  static std::map<std::string, Entry> t;
  return t;
}

}  // namespace

bool profile_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("XPSR_CPU_PROFILE");
    return e && *e && *e != '0';
  }();
  return on;
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void profile_add(const std::string& label, double seconds, double cpu_seconds, double flops) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Entry& e = table()[label];
  ++e.calls;
  e.seconds += seconds;
  e.cpu += cpu_seconds;
  e.flops += flops;
}

void profile_report(const char* title) {
  if (!profile_enabled()) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  auto& t = table();
  if (t.empty()) return;
  std::vector<std::pair<std::string, Entry>> rows(t.begin(), t.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.cpu > b.second.cpu; });
  double total = 0, cpu = 0, flops = 0;
  for (const auto& r : rows) total += r.second.seconds, cpu += r.second.cpu, flops += r.second.flops;
  std::fprintf(stderr, "[xpsr cpu profile] %s: %.3f s wall / %.3f s CPU in ops, %.1f GFLOP\n", title, total, cpu,
               flops * 1e-9);
  std::fprintf(stderr, "  %-44s %6s %9s %9s %6s %9s %11s\n", "op", "calls", "wall ms", "CPU ms", "CPU%", "GFLOP/s",
               "GFLOP/CPU-s");
  for (const auto& [name, e] : rows) {
    std::fprintf(stderr, "  %-44s %6lld %9.1f %9.1f %5.1f%% ", name.c_str(), (long long)e.calls, e.seconds * 1e3,
                 e.cpu * 1e3, 100.0 * e.cpu / (cpu > 0 ? cpu : 1));
    if (e.flops > 0) std::fprintf(stderr, "%9.1f %11.1f\n", e.flops * 1e-9 / e.seconds, e.flops * 1e-9 / e.cpu);
    else std::fprintf(stderr, "%9s %11s\n", "-", "-");
  }
  t.clear();
}

}  // namespace xpsr::cpu
