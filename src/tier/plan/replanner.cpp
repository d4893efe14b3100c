// The off-thread revision (replanner.h).
#include "tier/plan/replanner.h"

#include <cstdio>
#include <utility>

namespace strata::tier {

Replanner::Replanner() : worker_([this] { run(); }) {}

Replanner::~Replanner() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  worker_.join();
}

bool Replanner::submit(Plan base, RoutingStats routing, std::string stats_path) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (busy_ || stop_) return false;
    busy_ = true;
    job_.emplace(Job{std::move(base), std::move(routing), std::move(stats_path)});
  }
  wake_.notify_one();
  return true;
}

std::optional<Plan> Replanner::take() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::optional<Plan> plan = std::move(ready_);
  ready_.reset();
  return plan;
}

void Replanner::wait_idle() {
  std::unique_lock<std::mutex> lock(mutex_);
  idle_.wait(lock, [this] { return !busy_; });
}

uint64_t Replanner::n_revisions() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return n_revisions_;
}

void Replanner::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    // A queued job runs even after stop: its statistics are what the next start warms up from.
    wake_.wait(lock, [this] { return stop_ || job_.has_value(); });
    if (!job_) return;
    Job job = std::move(*job_);
    job_.reset();
    lock.unlock();
    std::optional<Plan> revised;
    try {
      revised = revise(job.base, job.routing.frequencies());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "warning: plan revision failed, keeping the plan: %s\n", e.what());
    }
    if (!job.stats_path.empty()) {
      try {
        job.routing.save(job.stats_path);
      } catch (const std::exception&) {
        // A read-only cache directory costs only the warm start of the next run.
      }
    }
    lock.lock();
    if (revised) ready_ = std::move(revised), ++n_revisions_;
    busy_ = false;
    idle_.notify_all();
  }
}

}  // namespace strata::tier
