#pragma once
// The tiered-weight statistics of loaded models, as /api/ps shows them (a "strata" object per
// model, which Ollama clients ignore) and as Prometheus samples for /metrics; both rendered from
// the one table of figures (tier/stats.h) that --stats prints too.
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tier/stats.h"

namespace strata::server {

nlohmann::ordered_json tier_json(const tier::TierStats& s);
// Metric families strata_tier_*, one sample per model (label model="..."); the GPU tier's only
// for the models a GPU serves.
std::string tier_metrics(const std::vector<std::pair<std::string, tier::TierStats>>& models);

}  // namespace strata::server
