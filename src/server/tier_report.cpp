#include "server/tier_report.h"

#include <cstdio>

namespace strata::server {

namespace {

double ratio(double part, double whole) { return whole > 0 ? part / whole : 0.0; }

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string label(const std::string& model) {
  std::string out;
  for (char c : model) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return "{model=\"" + out + "\"}";
}

}  // namespace

nlohmann::ordered_json tier_json(const tier::TierStats& s) {
  const tier::ExpertStats& e = s.experts;
  nlohmann::ordered_json j = {
      {"streaming", s.streaming},         {"budget_bytes", s.budget_bytes},
      {"planned_bytes", s.planned_bytes}, {"resident_weight_bytes", s.resident_weight_bytes},
      {"pool_bytes", s.pool_bytes},       {"predicted_tokens_per_second", s.predicted_tok_s},
      {"ssd_bytes_read", s.bytes_read()}, {"io_wait_seconds", s.io_wait_seconds()},
      {"disk_idle_seconds", s.disk_idle_seconds()},
  };
  if (s.has_dense)
    j["dense_ffn"] = {{"pieces_read", s.dense.pieces_read},
                      {"bytes_read", s.dense.bytes_read},
                      {"read_ahead_in_time", ratio(double(s.dense.ready_hits), double(s.dense.pieces_used))}};
  if (s.has_experts)
    j["experts"] = {{"routed", e.needed},
                    {"cache_hit_rate", ratio(double(e.cache_hits), double(e.needed))},
                    {"prefetch_hit_rate", ratio(double(e.prefetch_hits), double(e.needed))},
                    {"prefetch_precision", ratio(double(e.prefetch_hits), double(e.prefetch_issued))},
                    {"prefetch_recall", ratio(double(e.prefetch_hits), double(e.prefetch_hits + e.misses))},
                    {"read_after_routing", e.misses},
                    {"prefetch_wasted", e.prefetch_wasted},
                    {"prefetch_dropped_unread", e.prefetch_dropped},
                    {"bytes_read", e.bytes_read},
                    {"slots", e.slots},
                    {"slots_occupied", e.occupied_slots},
                    {"slots_pinned", e.pinned_slots}};
  return j;
}

std::string tier_metrics(const std::vector<std::pair<std::string, tier::TierStats>>& models) {
  struct Family {
    const char* name;
    const char* type;
    const char* help;
    double (*value)(const tier::TierStats&);
  };
  static const Family families[] = {
      {"strata_tier_streaming", "gauge", "1 when some of the model's weights stream from the SSD.",
       [](const tier::TierStats& s) { return s.streaming ? 1.0 : 0.0; }},
      {"strata_tier_budget_bytes", "gauge", "Memory budget the model's placement was planned for.",
       [](const tier::TierStats& s) { return double(s.budget_bytes); }},
      {"strata_tier_resident_weight_bytes", "gauge", "Weight bytes kept in memory.",
       [](const tier::TierStats& s) { return double(s.resident_weight_bytes); }},
      {"strata_tier_pool_bytes", "gauge", "Streaming slots and expert cache.",
       [](const tier::TierStats& s) { return double(s.pool_bytes); }},
      {"strata_tier_ssd_read_bytes_total", "counter", "Bytes read from the SSD for streamed weights.",
       [](const tier::TierStats& s) { return double(s.bytes_read()); }},
      {"strata_tier_io_wait_seconds_total", "counter", "Seconds compute waited for weight reads.",
       [](const tier::TierStats& s) { return s.io_wait_seconds(); }},
      {"strata_tier_expert_routed_total", "counter", "Expert slices the router asked for.",
       [](const tier::TierStats& s) { return double(s.experts.needed); }},
      {"strata_tier_expert_cache_hits_total", "counter", "Expert slices found in the expert cache.",
       [](const tier::TierStats& s) { return double(s.experts.cache_hits); }},
      {"strata_tier_expert_prefetch_hits_total", "counter", "Expert slices brought in time by a prefetch.",
       [](const tier::TierStats& s) { return double(s.experts.prefetch_hits); }},
      {"strata_tier_expert_misses_total", "counter", "Expert slices read after routing.",
       [](const tier::TierStats& s) { return double(s.experts.misses); }},
      {"strata_tier_expert_prefetch_issued_total", "counter", "Expert slices read on a guess.",
       [](const tier::TierStats& s) { return double(s.experts.prefetch_issued); }},
      {"strata_tier_expert_prefetch_dropped_total", "counter",
       "Guesses routing did not confirm, dropped before the disk had read them whole.",
       [](const tier::TierStats& s) { return double(s.experts.prefetch_dropped); }},
      {"strata_tier_disk_idle_seconds_total", "counter", "Seconds the model's reader had nothing at the disk.",
       [](const tier::TierStats& s) { return s.disk_idle_seconds(); }},
      {"strata_tier_expert_slots_occupied", "gauge", "Expert cache slots holding an expert.",
       [](const tier::TierStats& s) { return double(s.experts.occupied_slots); }},
      {"strata_tier_dense_pieces_read_total", "counter", "Pieces of dense FFN matrices read from the SSD.",
       [](const tier::TierStats& s) { return double(s.dense.pieces_read); }},
  };
  std::string out;
  for (const Family& f : families) {
    out += std::string("# HELP ") + f.name + " " + f.help + "\n# TYPE " + f.name + " " + f.type + "\n";
    for (const auto& [model, stats] : models) out += f.name + label(model) + " " + number(f.value(stats)) + "\n";
  }
  return out;
}

}  // namespace strata::server
