#pragma once
// Re-solving the plan and saving routing statistics off the forward thread. The forward thread
// hands over a snapshot (the plan as it stands, with the predictor's measured recall, and a copy
// of the routing statistics) and goes on computing; a worker thread re-solves (revise) and
// writes the statistics file; the forward thread takes the new plan at its next token boundary,
// so that one forward pass never runs under two plans. At most one revision is in flight: a
// request while one runs is declined, and the caller asks again later.
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "tier/plan/plan.h"
#include "tier/stream/routing_stats.h"

namespace strata::tier {

class Replanner {
 public:
  Replanner();
  ~Replanner();  // finishes the revision in flight (its statistics file included), then stops
  Replanner(const Replanner&) = delete;
  Replanner& operator=(const Replanner&) = delete;

  // From the forward thread: revise `base` with `routing`'s frequencies and save `routing` to
  // stats_path (none when empty). False, and nothing queued, while a revision is in flight.
  bool submit(Plan base, RoutingStats routing, std::string stats_path);
  // At a token boundary: the revised plan, if one finished since the last call.
  std::optional<Plan> take();
  // Until no revision is in flight (tests; shutdown).
  void wait_idle();
  uint64_t n_revisions() const;  // finished, whether taken or not

 private:
  struct Job {
    Plan base;
    RoutingStats routing;
    std::string stats_path;
  };
  void run();

  mutable std::mutex mutex_;
  std::condition_variable wake_, idle_;
  std::optional<Job> job_;     // queued, not yet started
  std::optional<Plan> ready_;  // finished, not yet taken
  bool busy_ = false;          // a job queued or running
  bool stop_ = false;
  uint64_t n_revisions_ = 0;
  std::thread worker_;  // last: starts once the members above exist
};

}  // namespace strata::tier
