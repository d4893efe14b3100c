// The expert cache's policy is the replayer's: the engine's ExpertStreamer (its default policy,
// lfu with ageing, reading real slices of the trained MoE model) driven through a committed
// routing trace gets exactly the hits bench/routing_replay.py's `lfu` gets on it at the same
// cache size. The replayer's numbers are in tests/fixtures/moe/policy-parity.json, which
// tests/py/test_routing_replay.py holds equal to the replayer; this test holds the engine to it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "support/paths.h"
#include "tier/stream/expert_streamer.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

// One forward pass's routing at one layer, as the replayer groups a trace: consecutive r lines
// of the same layer, no g line between them.
struct Request {
  int layer = 0;
  std::vector<int32_t> experts;  // distinct, in the order first routed to
  std::vector<int32_t> chosen;   // [n_tokens x k]
  int n_tokens = 0;
};

std::vector<Request> read_trace(const std::string& path, int k) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << path;
  std::vector<Request> out;
  bool open = false;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string tag;
    fields >> tag;
    if (tag == "g") {
      open = false;
    } else if (tag == "r") {
      int layer = 0;
      long long pos = 0;
      fields >> layer >> pos;
      if (!open || out.back().layer != layer) out.push_back(Request{.layer = layer});
      open = true;
      Request& r = out.back();
      for (int j = 0; j < k; ++j) {
        int32_t e = -1;
        fields >> e;
        r.chosen.push_back(e);
        if (std::find(r.experts.begin(), r.experts.end(), e) == r.experts.end()) r.experts.push_back(e);
      }
      ++r.n_tokens;
    }
  }
  return out;
}

TEST(ExpertPolicy, EngineCacheEqualsTheReplayerOnACommittedTrace) {
  const fs::path fixtures = test::fixtures_dir();
  const fs::path model_path = fixtures.parent_path() / "models" / "strata-moe-pystd.gguf";
  if (!fs::exists(model_path)) GTEST_SKIP() << model_path << " is not in this checkout";
  std::ifstream expected_file(fixtures / "moe" / "policy-parity.json");
  ASSERT_TRUE(expected_file);
  const nlohmann::json expected = nlohmann::json::parse(expected_file);
  ASSERT_EQ(expected["policy"], "lfu");
  ASSERT_EQ(expected["start"], "empty");

  auto model = Model::load(model_path.string());
  const ModelConfig& c = model->config();
  const std::vector<Request> trace =
      read_trace((fixtures / "moe" / expected["trace"].get<std::string>()).string(), c.n_expert_used);
  ASSERT_FALSE(trace.empty());

  for (const auto& size : expected["sizes"]) {
    const int slots = size["slots"];
    tier::ExpertStreamerOptions o;
    ASSERT_EQ(o.policy, tier::ExpertCachePolicy::lfu) << "the default policy is the one the fixture replays";
    ASSERT_EQ(o.lfu_decay, expected["decay"].get<double>());
    o.n_pool_slots = slots;  // nothing pinned: the cache starts empty, as the replayer's run did
    o.co_predict = false;
    tier::ExpertStreamer streamer(*model, o);
    // Routing only: no guesses are read ahead, so every hit is the policy's.
    for (const Request& r : trace) {
      streamer.begin_layer(r.layer, r.experts.data(), int(r.experts.size()), r.chosen.data(), r.n_tokens);
      WeightView gate, up, down;
      for (int e; (e = streamer.next_ready(gate, up, down)) >= 0;) streamer.done(e);
    }
    const tier::ExpertStats s = streamer.stats();
    const std::string what = std::to_string(slots) + " slots";
    EXPECT_EQ(s.needed, size["accesses"].get<uint64_t>()) << what;
    EXPECT_EQ(s.cache_hits, size["hits"].get<uint64_t>()) << what;
    EXPECT_EQ(s.prefetch_hits, 0u) << what;
    EXPECT_EQ(s.misses, s.needed - s.cache_hits) << what;
    EXPECT_EQ(s.loads, s.misses) << what << ": every miss read once, nothing else";
  }
}

}  // namespace
}  // namespace strata
