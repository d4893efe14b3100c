#pragma once
// Counters for /metrics (Prometheus text exposition format 0.0.4): requests by route and status,
// prompt and generated tokens, time spent, and the models loaded now.
#include <atomic>
#include <map>
#include <mutex>
#include <string>

#include "server/model_registry.h"

namespace strata::server {

class Metrics {
 public:
  void record_request(const std::string& method, const std::string& path, int status);
  void record_completion(int n_prompt, int n_generated, double prompt_seconds, double generate_seconds,
                         double total_seconds);
  void record_embedding(int n_prompt, double total_seconds);
  std::string render(const ModelRegistry& registry) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, uint64_t> requests_;  // "method path status" -> count
  uint64_t prompt_tokens_ = 0, generated_tokens_ = 0, completions_ = 0, embeddings_ = 0;
  double prompt_seconds_ = 0, generate_seconds_ = 0, completion_seconds_ = 0, embedding_seconds_ = 0;
};

// The process's one set of counters.
Metrics& metrics();

}  // namespace strata::server
