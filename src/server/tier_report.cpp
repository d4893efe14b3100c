#include "server/tier_report.h"

#include <cstdio>

namespace strata::server {

namespace {

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
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const tier::TierStatField& f : tier::tier_stat_fields()) {
    if (!f.json || !tier::stat_group_present(s, f.group)) continue;
    const char* key = tier::stat_group_key(f.group);
    nlohmann::ordered_json& into = *key ? j[key] : j;
    const double v = f.value(s);
    switch (f.unit) {
      case tier::StatUnit::flag:
        into[f.json] = v != 0;
        break;
      case tier::StatUnit::count:
      case tier::StatUnit::bytes:
        into[f.json] = uint64_t(v);
        break;
      default:
        into[f.json] = v;
    }
  }
  return j;
}

std::string tier_metrics(const std::vector<std::pair<std::string, tier::TierStats>>& models) {
  std::string out;
  // The GPU tier's families only for models a GPU serves (as --stats and /api/ps leave the group
  // out): a CPU-only model has no PCIe traffic or GPU time to report, not zero of them.
  auto exported = [](const tier::TierStatField& f, const tier::TierStats& s) {
    return f.group != tier::StatGroup::gpu || tier::stat_group_present(s, f.group);
  };
  for (const tier::TierStatField& f : tier::tier_stat_fields()) {
    if (!f.metric) continue;
    std::string series;
    for (const auto& [model, stats] : models)
      if (exported(f, stats)) series += f.metric + label(model) + " " + number(f.value(stats)) + "\n";
    if (series.empty() && f.group == tier::StatGroup::gpu) continue;
    out += std::string("# HELP ") + f.metric + " " + f.help + "\n# TYPE " + f.metric + " " +
           (f.type == tier::MetricType::counter ? "counter" : "gauge") + "\n" + series;
  }
  return out;
}

}  // namespace strata::server
