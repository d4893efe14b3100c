// The planner's model of the expert cache (cost_model.h: lfu_hit_rate) against what the cache
// does: on the trained model's committed routing traces, the hit rate the model gives from the
// routing statistics the engine keeps (RoutingStats frequencies, made probabilities as revise()
// makes them) is within a few points of bench/routing_replay.py's lfu (the engine's policy, held
// equal to it by expert_policy_test.cpp) at 10, 25 and 50 % of the experts, and nearer than the
// share of the slots the planner assumed without statistics. tests/fixtures/moe/lfu-model.json
// holds the replayer's numbers; tests/py/test_routing_replay.py holds them equal to the replayer.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "support/paths.h"
#include "tier/plan/cost_model.h"
#include "tier/stream/routing_stats.h"

namespace strata::tier {
namespace {

namespace fs = std::filesystem;

// The trace's routing recorded as the engine records it: one record() per forward pass and
// layer (consecutive r lines of one layer, no g line between them).
RoutingStats record_trace(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << path;
  std::string line, tag;
  int L = 0, E = 0, K = 0;
  std::vector<int32_t> rows;
  int layer = -1, n_rows = 0;
  std::unique_ptr<RoutingStats> stats;
  auto flush = [&] {
    if (n_rows > 0) stats->record(layer, rows.data(), n_rows);
    rows.clear();
    n_rows = 0;
  };
  while (std::getline(in, line)) {
    std::istringstream f(line);
    f >> tag;
    if (tag == "n_layer") {
      std::string a, b;
      f >> L >> a >> E >> b >> K;
      stats = std::make_unique<RoutingStats>(L, E, K);
    } else if (tag == "g") {
      flush();
    } else if (tag == "r") {
      int l = 0;
      long long pos = 0;
      f >> l >> pos;
      if (l != layer) flush();
      layer = l;
      for (int j = 0; j < K; ++j) {
        int32_t e = 0;
        f >> e;
        rows.push_back(e);
      }
      ++n_rows;
    }
  }
  flush();
  return std::move(*stats);
}

TEST(LfuModel, HitRateOfTheCommittedTracesIsTheReplayers) {
  const fs::path dir = fs::path(test::fixtures_dir()) / "moe";
  std::ifstream file(dir / "lfu-model.json");
  ASSERT_TRUE(file) << dir / "lfu-model.json";
  const nlohmann::json expected = nlohmann::json::parse(file);
  const double tolerance = expected["tolerance"];
  for (const auto& trace : expected["traces"]) {
    const RoutingStats stats = record_trace((dir / trace["trace"].get<std::string>()).string());
    // revise()'s probabilities: k (count + 1) / (layer's counts + E) per expert.
    std::vector<double> probability;
    const int k = trace["k"];
    for (const auto& layer : stats.frequencies()) {
      double total = 0;
      for (double f : layer) total += f;
      for (double f : layer) probability.push_back(k * (f + 1) / (total + double(layer.size())));
    }
    for (const auto& size : trace["sizes"]) {
      const int slots = size["slots"];
      const double replay = size["lfu_hit_rate"];
      const double model = lfu_hit_rate(probability, slots);
      const std::string what = trace["trace"].get<std::string>() + ", " + std::to_string(slots) + " slots";
      EXPECT_NEAR(model, replay, tolerance) << what;
      // The model it replaces, with no statistics: the share of the experts the slots hold.
      const double share = double(slots) / double(probability.size());
      EXPECT_LT(std::abs(model - replay), std::abs(share - replay)) << what;
    }
  }
}

TEST(LfuModel, UniformRoutingGivesTheCachedShare) {
  const std::vector<double> uniform(256, 4.0 / 32);
  for (int slots : {0, 26, 64, 128, 256, 300})
    EXPECT_NEAR(lfu_hit_rate(uniform, slots), std::min(1.0, slots / 256.0), 1e-12) << slots;
  EXPECT_NEAR(lfu_hit_rate({0.5, 0.1, 0.3, 0.1}, 2), 0.8, 1e-12);
}

}  // namespace
}  // namespace strata::tier
