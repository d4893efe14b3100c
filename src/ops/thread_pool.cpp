#include "ops/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <set>
#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define STRATA_PAUSE() _mm_pause()
#else
#define STRATA_PAUSE() ((void)0)
#endif

namespace strata {

namespace {
uint64_t generation_of(uint64_t s) { return s >> 40; }
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
    state_.fetch_add(uint64_t(1) << 40);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

// Claims and runs chunks of the job of `generation` until none are left.
void ThreadPool::work(uint64_t generation, int thread_index) {
  uint64_t s = state_.load(std::memory_order_acquire);
  for (;;) {
    const uint64_t next = (s >> kChunkBits) & kChunkMask;
    const uint64_t total = s & kChunkMask;
    if (generation_of(s) != generation || next >= total) return;
    if (!state_.compare_exchange_weak(s, s + (uint64_t(1) << kChunkBits), std::memory_order_acq_rel)) continue;
    // The claim succeeded for the current job, which cannot end before this chunk is done.
    const int64_t begin = n_ * int64_t(next) / int64_t(total);
    const int64_t end = n_ * int64_t(next + 1) / int64_t(total);
    if (begin < end) (*fn_)(begin, end, thread_index);
    done_.fetch_add(1, std::memory_order_acq_rel);
    s = state_.load(std::memory_order_acquire);
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t n_chunks) {
  if (n <= 0) return;
  if (n_chunks <= 0) n_chunks = int64_t(n_threads_) * 4;
  n_chunks = std::clamp<int64_t>(n_chunks, 1, std::min<int64_t>(n, int64_t(kChunkMask)));
  if (n_threads_ == 1 || n_chunks == 1) {
    fn(0, n, 0);
    return;
  }
  fn_ = &fn;
  n_ = n;
  done_.store(0, std::memory_order_relaxed);
  const uint64_t generation = generation_of(state_.load(std::memory_order_relaxed)) + 1;
  {
    // The lock orders publishing the job against a worker deciding to sleep.
    std::lock_guard<std::mutex> lock(mutex_);
    state_.store((generation << 40) | uint64_t(n_chunks), std::memory_order_release);
  }
  if (sleeping_.load(std::memory_order_acquire) > 0) wake_.notify_all();
  work(generation, 0);
  // Only chunks a running worker has claimed are left: wait for them.
  for (uint32_t spins = 0; done_.load(std::memory_order_acquire) != n_chunks; ++spins) {
    if (spins < 4096) STRATA_PAUSE();
    else std::this_thread::yield();
  }
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    // Spin for a while (a token's next loop comes within microseconds), then sleep.
    auto spin_start = std::chrono::steady_clock::now();
    uint32_t spins = 0;
    uint64_t generation;
    while ((generation = generation_of(state_.load(std::memory_order_acquire))) == seen) {
      STRATA_PAUSE();
      if (++spins % 256 == 0) {
        std::this_thread::yield();  // let a descheduled thread of ours (or anyone) run
        if (std::chrono::steady_clock::now() - spin_start > std::chrono::milliseconds(3)) {
          std::unique_lock<std::mutex> lock(mutex_);
          sleeping_.fetch_add(1);
          wake_.wait(lock, [&] { return generation_of(state_.load()) != seen; });
          sleeping_.fetch_sub(1);
        }
      }
    }
    seen = generation;
    if (stop_.load()) return;
    work(generation, index);
  }
}

int ThreadPool::physical_cores() {
  // Count distinct (physical id, core id) pairs; fall back to the logical count.
  std::ifstream in("/proc/cpuinfo");
  std::set<std::pair<std::string, std::string>> cores;
  std::string line, phys = "0";
  while (std::getline(in, line)) {
    if (line.rfind("physical id", 0) == 0) phys = line.substr(line.find(':') + 1);
    if (line.rfind("core id", 0) == 0) cores.insert({phys, line.substr(line.find(':') + 1)});
  }
  if (!cores.empty()) return int(cores.size());
  unsigned n = std::thread::hardware_concurrency();
  return n ? int(n) : 1;
}

}  // namespace strata
