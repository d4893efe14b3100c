#pragma once
// A fixed pool of worker threads for data-parallel loops.
//
// A token runs hundreds of small parallel loops, so waking sleeping threads each time would cost
// more than the work: workers spin briefly between loops, then sleep. Work is split into chunks
// that every thread claims from a shared counter, so the caller never waits for a worker that
// the OS has not scheduled yet (on a loaded machine it simply does the chunks itself).
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
  // Calls fn(begin, end, thread_index) over contiguous chunks covering [0, n); returns when all
  // are done. thread_index < n_threads() identifies per-thread scratch. n_chunks <= 0 picks a
  // few chunks per thread.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t n_chunks = 0);

  // Physical cores of this machine (logical CPUs divided by SMT siblings), at least 1.
  static int physical_cores();

 private:
  // Job state packed in one word so claims can't mix two jobs: generation | next chunk | chunks.
  static constexpr int kChunkBits = 20;
  static constexpr uint64_t kChunkMask = (uint64_t(1) << kChunkBits) - 1;
  void worker_loop(int index);
  void work(uint64_t generation, int thread_index);

  int n_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t, int64_t, int)>* fn_ = nullptr;
  int64_t n_ = 0;
  std::atomic<uint64_t> state_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<int> sleeping_{0};
};

}  // namespace strata
