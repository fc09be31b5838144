// ThreadPool implementation: workers sleep on a condition variable between regions; a region bumps a
// generation counter, wakes them, runs chunk 0 itself and waits until every active worker is done.
#include "threadpool.h"

namespace xpsr::cpu {

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = (int)std::thread::hardware_concurrency();
  size_ = threads > 0 ? threads : 1;
  threads_.reserve(size_ - 1);
  for (int t = 1; t < size_; ++t) threads_.emplace_back([this, t] { worker(t); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(m_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& th : threads_) th.join();
}

void ThreadPool::worker(int tid) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int)>* job = nullptr;
    {
      std::unique_lock<std::mutex> lock(m_);
      start_cv_.wait(lock, [&] { return stop_ || (generation_ != seen && tid < active_); });
      if (stop_) return;
      seen = generation_;
      job = job_;
    }
    std::exception_ptr err;
    try {
      (*job)(tid);
    } catch (...) {
      err = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(m_);
    if (err && !error_) error_ = err;
    if (--pending_ == 0) done_cv_.notify_one();
  }
}

void ThreadPool::run(int active, const std::function<void(int tid)>& fn) {
  if (active > size_) active = size_;
  if (active <= 1) {
    fn(0);
    return;
  }
  std::lock_guard<std::mutex> region(region_mutex_);
  {
    std::lock_guard<std::mutex> lock(m_);
    job_ = &fn;
    active_ = active;
    pending_ = active - 1;
    error_ = nullptr;
    ++generation_;
  }
  start_cv_.notify_all();
  std::exception_ptr err;
  try {
    fn(0);
  } catch (...) {
    err = std::current_exception();
  }
  std::unique_lock<std::mutex> lock(m_);
  done_cv_.wait(lock, [&] { return pending_ == 0; });
  job_ = nullptr;
  if (!err) err = error_;
  error_ = nullptr;
  lock.unlock();
  if (err) std::rethrow_exception(err);
}

}  // namespace xpsr::cpu
