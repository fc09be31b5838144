// system.h: backends by device name, the description of compiled CUDA architectures, build facts.
#include "system.h"

#include "../test/test.h"

using namespace xpsr;

TEST(system_cuda_architectures_are_described_from_the_cmake_list) {
  CHECK((describe_cuda_architectures("80-real,90-real,80-virtual") ==
         std::vector<std::string>{"sm_80", "sm_90", "PTX compute_80"}));
  CHECK((describe_cuda_architectures("80-real;90-real;80-virtual") ==
         std::vector<std::string>{"sm_80", "sm_90", "PTX compute_80"}));
  CHECK((describe_cuda_architectures("86") == std::vector<std::string>{"sm_86", "PTX compute_86"}));
  CHECK(describe_cuda_architectures("").empty());
}

TEST(system_make_backend_by_device_name) {
  BackendChoice cpu = make_backend("cpu", 1);
  CHECK(cpu.device == "cpu");
  CHECK(cpu.backend != nullptr);
  CHECK_THROWS_WITH(make_backend("tpu", 0), "expected 'cpu', 'cuda' or 'cuda:N'");
  CHECK_THROWS_WITH(make_backend("cuda:x", 0), "expected cuda or cuda:N");
  CHECK_THROWS_WITH(make_backend("cuda:123456", 0), "expected cuda or cuda:N");
  SystemInfo s = system_info();
  CHECK(!s.compiler.empty());
  CHECK(s.backends.at(0) == "cpu");
  CHECK(s.cuda_built == (s.backends.size() == 2));
  if (!s.cuda_built) {
    CHECK(s.cuda_architectures.empty());
    CHECK_THROWS_WITH(make_backend("cuda", 0), "no CUDA backend");
    CHECK(!list_devices().reason.empty());
  }
#if defined(__GLIBC__)
  CHECK(s.glibc == std::to_string(__GLIBC__) + "." + std::to_string(__GLIBC_MINOR__));
#endif
}
