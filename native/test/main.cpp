// Runner for the native tests: every *_test.cpp / *_test.cu registers its TESTs; this prints one line
// per test and the summary line "N passed, M failed, K skipped" (exit code 1 on any failure).
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "../common/error.h"
#include "test.h"

namespace xpsr_test {
std::vector<Case>& registry() {
  static std::vector<Case> r;
  return r;
}
std::string data_dir() {
  const char* e = std::getenv("XPSR_TEST_DATA");
  if (e && *e) return e;
#ifdef XPSR_TEST_DATA_DEFAULT
  return XPSR_TEST_DATA_DEFAULT;
#else
  return "";
#endif
}
std::string fixtures_dir() {
  const char* e = std::getenv("XPSR_FIXTURES");
  if (e && *e) return e;
#ifdef XPSR_FIXTURES_DEFAULT
  return XPSR_FIXTURES_DEFAULT;
#else
  return "test/fixtures";
#endif
}
}  // namespace xpsr_test

int main(int argc, char** argv) {
  const char* filter = argc > 1 ? argv[1] : "";
  int passed = 0, failed = 0, skipped = 0;
  for (auto& c : xpsr_test::registry()) {
    if (*filter && !std::strstr(c.name, filter)) continue;
    auto t0 = std::chrono::steady_clock::now();
    std::string status, detail;
    try {
      c.fn();
      status = "PASS";
      ++passed;
    } catch (const xpsr_test::Failure& f) {
      status = "FAIL";
      detail = f.message;
      ++failed;
    } catch (const xpsr_test::Skip& s) {
      status = "SKIP";
      detail = s.reason;
      ++skipped;
    } catch (const xpsr::Error& e) {
      status = "FAIL";
      detail = std::string("uncaught xpsr::Error ") + e.code_name() + ": " + e.what();
      ++failed;
    } catch (const std::exception& e) {
      status = "FAIL";
      detail = std::string("uncaught exception: ") + e.what();
      ++failed;
    }
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s %s (%.0f ms)%s%s\n", status.c_str(), c.name, ms, detail.empty() ? "" : "\n    ", detail.c_str());
    std::fflush(stdout);
  }
  std::printf("native: %d passed, %d failed, %d skipped\n", passed, failed, skipped);
  return failed ? 1 : 0;
}
