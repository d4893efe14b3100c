#pragma once
// A fixed pool of worker threads for data-parallel loops. Workers spin briefly between jobs:
// a token touches hundreds of small matmuls, so waking sleeping threads each time would cost
// more than the work. After a short idle period they sleep on a condition variable.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace strata {

class ThreadPool {
 public:
  // n_threads counts the calling thread: a pool of 2 starts 1 worker.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int n_threads() const { return n_threads_; }
  // Calls fn(thread_index, n_threads) once on every thread (the caller is thread 0) and returns
  // when all are done. Work is split by the callee, so it can choose contiguous, cache-friendly
  // ranges.
  void run(const std::function<void(int, int)>& fn);
  // Splits [0, n) into contiguous chunks, one per thread: fn(begin, end, thread_index).
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn);

  // Physical cores of this machine (logical CPUs divided by SMT siblings), at least 1.
  static int physical_cores();

 private:
  void worker_loop(int index);

  int n_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<int> sleeping_{0};
};

}  // namespace strata
