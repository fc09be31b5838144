// A tiny test harness for the native code (no dependencies, runs on a GPU host without Node).
//   TEST(group_norm_matches_reference) { ... CHECK(cond); CHECK_CLOSE(a, b, tol); }
// `xpsr_tests [substring]` runs every registered test whose name contains the substring and ends
// with the line "N passed, M failed, K skipped". SKIP("reason") marks a test skipped (e.g. no GPU).
#pragma once
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace xpsr_test {

struct Case {
  const char* name;
  const char* file;
  std::function<void()> fn;
};
std::vector<Case>& registry();

struct Failure {
  std::string message;
};
struct Skip {
  std::string reason;
};

struct Registrar {
  Registrar(const char* name, const char* file, std::function<void()> fn) { registry().push_back({name, file, fn}); }
};

// Directory holding test data (XPSR_TEST_DATA env or the build-time default); "" if unknown.
std::string data_dir();
// Directory of the shared/golden fixtures copied into the repo (test/fixtures).
std::string fixtures_dir();

}  // namespace xpsr_test

#define XPSR_TEST_CAT2(a, b) a##b
#define XPSR_TEST_CAT(a, b) XPSR_TEST_CAT2(a, b)
#define TEST(name)                                                                     \
  static void name();                                                                  \
  static ::xpsr_test::Registrar XPSR_TEST_CAT(xpsr_reg_, name)(#name, __FILE__, name); \
  static void name()

#define CHECK(cond)                                                                       \
  do {                                                                                    \
    if (!(cond))                                                                          \
      throw ::xpsr_test::Failure{std::string(__FILE__) + ":" + std::to_string(__LINE__) + \
                                 ": CHECK(" #cond ") failed"};                            \
  } while (0)

#define CHECK_MSG(cond, msg)                                                                                        \
  do {                                                                                                              \
    if (!(cond))                                                                                                    \
      throw ::xpsr_test::Failure{std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " + std::string(msg)}; \
  } while (0)

#define CHECK_CLOSE(a, b, tol)                                                                            \
  do {                                                                                                    \
    double xa_ = (double)(a), xb_ = (double)(b);                                                          \
    if (!(std::fabs(xa_ - xb_) <= (double)(tol)))                                                         \
      throw ::xpsr_test::Failure{std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " #a " = " + \
                                 std::to_string(xa_) + " vs " #b " = " + std::to_string(xb_)};            \
  } while (0)

// Expects `stmt` to throw xpsr::Error whose message contains `needle`.
#define CHECK_THROWS_WITH(stmt, needle)                                                                     \
  do {                                                                                                      \
    bool thrown_ = false;                                                                                   \
    try {                                                                                                   \
      stmt;                                                                                                 \
    } catch (const ::xpsr::Error& e_) {                                                                     \
      thrown_ = true;                                                                                       \
      if (std::string(e_.what()).find(needle) == std::string::npos)                                         \
        throw ::xpsr_test::Failure{std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": message '" + \
                                   e_.what() + "' lacks '" + needle + "'"};                                 \
    }                                                                                                       \
    if (!thrown_)                                                                                           \
      throw ::xpsr_test::Failure{std::string(__FILE__) + ":" + std::to_string(__LINE__) +                   \
                                 ": " #stmt " did not throw"};                                              \
  } while (0)

#define SKIP(reason) \
  throw ::xpsr_test::Skip { reason }
