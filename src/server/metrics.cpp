#include "server/metrics.h"

#include "server/tier_report.h"

#include <cstdio>

namespace strata::server {

namespace {
// Routes with a free path part are counted under their pattern so the label set stays small.
std::string route_label(const std::string& path) {
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{model}";
  if (path.rfind("/api/blobs/", 0) == 0) return "/api/blobs/{digest}";
  for (const char* known :
       {"/", "/api/version", "/api/tags", "/api/show", "/api/ps", "/api/generate", "/api/chat", "/api/embed",
        "/api/embeddings", "/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete", "/v1/chat/completions",
        "/v1/completions", "/v1/models", "/v1/embeddings", "/metrics"})
    if (path == known) return path;
  return "other";
}

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void family(std::string& out, const char* name, const char* type, const char* help) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}
}  // namespace

Metrics& metrics() {
  static Metrics m;
  return m;
}

void Metrics::record_request(const std::string& method, const std::string& path, int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_["method=\"" + method + "\",route=\"" + route_label(path) + "\",status=\"" + std::to_string(status) +
              "\""];
}

void Metrics::record_completion(int n_prompt, int n_generated, double prompt_seconds, double generate_seconds,
                                double total_seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++completions_;
  prompt_tokens_ += uint64_t(std::max(0, n_prompt));
  generated_tokens_ += uint64_t(std::max(0, n_generated));
  prompt_seconds_ += prompt_seconds;
  generate_seconds_ += generate_seconds;
  completion_seconds_ += total_seconds;
}

void Metrics::record_embedding(int n_prompt, double total_seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++embeddings_;
  prompt_tokens_ += uint64_t(std::max(0, n_prompt));
  embedding_seconds_ += total_seconds;
}

std::string Metrics::render(const ModelRegistry& registry) const {
  const auto loaded = registry.loaded();
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  family(out, "strata_http_requests_total", "counter", "HTTP requests answered, by method, route and status.");
  for (const auto& [labels, n] : requests_)
    out += "strata_http_requests_total{" + labels + "} " + std::to_string(n) + "\n";
  family(out, "strata_completions_total", "counter", "Generations run (generate, chat, completions).");
  out += "strata_completions_total " + std::to_string(completions_) + "\n";
  family(out, "strata_embedding_requests_total", "counter", "Embedding requests run.");
  out += "strata_embedding_requests_total " + std::to_string(embeddings_) + "\n";
  family(out, "strata_prompt_tokens_total", "counter", "Prompt tokens of generations and embeddings.");
  out += "strata_prompt_tokens_total " + std::to_string(prompt_tokens_) + "\n";
  family(out, "strata_generated_tokens_total", "counter", "Tokens generated.");
  out += "strata_generated_tokens_total " + std::to_string(generated_tokens_) + "\n";
  family(out, "strata_prompt_eval_seconds_total", "counter", "Seconds spent evaluating prompts.");
  out += "strata_prompt_eval_seconds_total " + number(prompt_seconds_) + "\n";
  family(out, "strata_generation_seconds_total", "counter", "Seconds spent generating tokens.");
  out += "strata_generation_seconds_total " + number(generate_seconds_) + "\n";
  family(out, "strata_request_seconds_total", "counter", "Seconds from request to answer, by kind.");
  out += "strata_request_seconds_total{kind=\"completion\"} " + number(completion_seconds_) + "\n";
  out += "strata_request_seconds_total{kind=\"embedding\"} " + number(embedding_seconds_) + "\n";
  family(out, "strata_loaded_models", "gauge", "Models in memory now.");
  out += "strata_loaded_models " + std::to_string(loaded.size()) + "\n";
  family(out, "strata_loaded_model_bytes", "gauge", "Memory of each loaded model (file and sessions).");
  for (const auto& m : loaded)
    out += "strata_loaded_model_bytes{model=\"" + m.name + "\"} " + std::to_string(m.size_bytes) + "\n";
  std::vector<std::pair<std::string, tier::TierStats>> tiers;
  for (const auto& m : loaded) tiers.emplace_back(m.name, m.tier);
  out += tier_metrics(tiers);
  return out;
}

}  // namespace strata::server
