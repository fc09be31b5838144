// ThreadPool: a fixed set of std::thread workers for the CPU backend's ops. parallel_for splits [0, n)
// into one contiguous chunk per thread (static chunking, no work stealing); the calling thread runs
// chunk 0. One parallel region at a time (a mutex serialises callers); regions must not nest.
// The first exception thrown by any chunk is rethrown on the caller. Tested by threadpool_test.cpp.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace xpsr::cpu {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);  // threads <= 0: std::thread::hardware_concurrency()
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return size_; }

  // Runs fn(tid) once on each of the first `active` threads (1 <= active <= size()), tid = 0..active-1.
  void run(int active, const std::function<void(int tid)>& fn);

  // fn(begin, end, tid) over contiguous chunks of [0, n); chunk tid = [n*tid/T, n*(tid+1)/T) with
  // T = min(n, size()). Does nothing for n <= 0.
  template <typename F>
  void parallel_for(int64_t n, F&& fn) {
    if (n <= 0) return;
    const int t = (int)(n < size_ ? n : size_);
    if (t == 1) {
      fn((int64_t)0, n, 0);
      return;
    }
    run(t, [&](int tid) { fn(n * tid / t, n * (tid + 1) / t, tid); });
  }

 private:
  void worker(int tid);

  int size_ = 1;
  std::vector<std::thread> threads_;
  std::mutex region_mutex_;  // one parallel region at a time
  std::mutex m_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int)>* job_ = nullptr;
  int active_ = 0;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace xpsr::cpu
