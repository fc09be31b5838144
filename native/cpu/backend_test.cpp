// CpuBackend basics: identity, 64-byte aligned alloc / free / fill_zero, act round trips, weight upload
// (rank and shape checks, packed-size accounting), wrong-kind and foreign weights, out-of-memory as
// Error(OutOfMemory), and the thread pool (coverage of every index, exceptions reach the caller).
#include <atomic>
#include <cstdint>
#include <stdexcept>

#include "context.h"
#include "test_util.h"
#include "threadpool.h"

using namespace xpsr;
using namespace xpsr::cpu::testing;

TEST(cpu_backend_identity_and_memory) {
  auto be = make_cpu_backend(3);
  CHECK(be->name() == "cpu");
  CHECK(be->act_dtype() == DType::F32);
  CHECK(be->description().find("3 threads") != std::string::npos);
  for (size_t bytes : {0, 1, 4, 100, 1 << 20}) {
    void* p = be->alloc(bytes);
    CHECK(p != nullptr);
    CHECK(reinterpret_cast<uintptr_t>(p) % 64 == 0);
    be->free(p);
  }
  be->free(nullptr);
  std::vector<float> v = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f};
  Buf b(*be, v);
  CHECK(b.get() == v);
  be->fill_zero(b.p(), 3);
  auto z = b.get();
  CHECK(z[0] == 0.0f && z[2] == 0.0f && z[3] == 0.0f && z[4] == 7.0f);
  int done = 0;
  be->execute(&done, [&] { ++done; });
  be->synchronize();
  CHECK(done == 1);
#if !defined(__SANITIZE_ADDRESS__)  // ASan aborts on absurd sizes instead of returning null
  try {
    be->alloc((size_t)1 << 62);
    CHECK_MSG(false, "alloc of 4 EiB did not throw");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::OutOfMemory);
    CHECK(std::string(e.what()).find("cannot allocate 4611686018427387904 bytes") != std::string::npos);
  }
#endif
}

TEST(cpu_backend_weights) {
  auto be = make_cpu_backend(1);
  std::vector<float> d(5 * 3 * 3 * 3, 1.0f);
  CHECK(be->weight_bytes() == 0);
  auto v = be->upload("b", WeightKind::Vector, {7}, d.data());
  CHECK(be->weight_bytes() == 7 * sizeof(float));
  auto l = be->upload("w", WeightKind::Linear, {17, 3}, d.data());  // 17 outputs pad to 32 columns
  CHECK(be->weight_bytes() == (7 + 32 * 3) * sizeof(float));
  auto c = be->upload("c", WeightKind::Conv, {5, 3, 3, 3}, d.data());
  CHECK(be->weight_bytes() == (7 + 96 + 16 * 27) * sizeof(float));
  CHECK(c->name == "c" && c->kind == WeightKind::Conv && c->shape == std::vector<int64_t>({5, 3, 3, 3}));
  CHECK_THROWS_WITH(be->upload("up.conv.weight", WeightKind::Conv, {5, 3, 3}, d.data()),
                    "weight 'up.conv.weight' (Conv) must have rank 4, got shape [5, 3, 3]");
  CHECK_THROWS_WITH(be->upload("e", WeightKind::Embedding, {0, 3}, d.data()), "empty dimension");
  CHECK_THROWS_WITH(be->upload("n", WeightKind::Vector, {3}, nullptr), "data is null");
  // a weight of another backend (not a CpuWeight) is refused by name
  struct Foreign : Weight {};
  Foreign f;
  f.kind = WeightKind::Linear, f.shape = {17, 3}, f.name = "foreign.weight";
  Buf x(*be, 6), y(*be, 34);
  LinearArgs a;
  a.x = x.p(), a.M = 2, a.K = 3, a.ldx = 3, a.w = &f, a.y = y.p(), a.N = 17, a.ldy = 17;
  CHECK_THROWS_WITH(be->linear(a), "'foreign.weight' was not uploaded to the CPU backend");
  a.w = l.get(), a.b = l.get();
  CHECK_THROWS_WITH(be->linear(a), "bias weight 'w' is Linear, expected Vector");
}

TEST(cpu_threadpool) {
  for (int threads : {1, 2, 5}) {
    cpu::ThreadPool pool(threads);
    CHECK(pool.size() == threads);
    for (int64_t n : {0, 1, 3, 7, 1000}) {
      std::vector<std::atomic<int>> hits(n);
      std::atomic<int> max_tid{0};
      pool.parallel_for(n, [&](int64_t b, int64_t e, int tid) {
        for (int64_t i = b; i < e; ++i) hits[i]++;
        int m = max_tid.load();
        while (tid > m && !max_tid.compare_exchange_weak(m, tid)) {}
      });
      for (auto& h : hits) CHECK(h.load() == 1);
      CHECK(max_tid.load() < threads);
    }
    bool caught = false;
    try {
      pool.parallel_for(100, [&](int64_t b, int64_t, int) {
        if (b > 0 || threads == 1) throw std::runtime_error("chunk failed");
      });
    } catch (const std::runtime_error& e) {
      caught = std::string(e.what()) == "chunk failed";
    }
    CHECK(caught);
    std::atomic<int> count{0};
    pool.parallel_for(10, [&](int64_t b, int64_t e, int) { count += (int)(e - b); });  // usable after a throw
    CHECK(count.load() == 10);
  }
  CHECK(cpu::ThreadPool(0).size() >= 1);
}
