// The expert cache's policy is the replayer's: the engine's ExpertStreamer (its default policy,
// lfu with ageing, reading real slices of the trained MoE model) driven through a committed
// routing trace gets exactly the hits bench/routing_replay.py's `lfu` gets on it at the same
// cache size. The replayer's numbers are in tests/fixtures/moe/policy-parity.json, which
// tests/py/test_routing_replay.py holds equal to the replayer; this test holds the engine to it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
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
  bool guessed = false;                 // the look-ahead guessed this layer's experts:
  std::vector<int32_t> early, refined;  // its guesses (g lines before it)
};

std::vector<Request> read_trace(const std::string& path, int k) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << path;
  std::vector<Request> out;
  std::map<int, Request> guesses;  // per layer, for its next request
  bool open = false;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string tag;
    fields >> tag;
    if (tag == "g") {
      int layer = 0, refined = 0;
      fields >> layer >> refined;
      Request& g = guesses[layer];
      g.guessed = true;
      std::vector<int32_t>& list = refined ? g.refined : g.early;
      list.clear();
      for (int32_t e; fields >> e;) list.push_back(e);
      open = false;
    } else if (tag == "r") {
      int layer = 0;
      long long pos = 0;
      fields >> layer >> pos;
      if (!open || out.back().layer != layer) {
        Request r{.layer = layer};
        if (auto g = guesses.find(layer); g != guesses.end()) {
          r.guessed = true;
          r.early = std::move(g->second.early);
          r.refined = std::move(g->second.refined);
          guesses.erase(g);
        }
        out.push_back(std::move(r));
      }
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

// The streamer itself with the look-ahead: driven through the committed chat trace with the
// trace's own guesses, as the forward pass drives it (the next layer's early guess after routing,
// the refined one after the FFN, replacing it), its experts in memory when routed to and guesses
// read equal the replayer's `lfu+lookahead` (tests/fixtures/moe/policy-parity-lookahead.json;
// expert_cache_test.cpp holds the cache alone to it at every size). The one thing timing decides,
// a guess dropped before the disk began its read (the replayer never drops one), is taken out:
// the reads land (settle) before each call that may drop a guess.
TEST(ExpertPolicy, EngineLookaheadEqualsTheReplayerOnACommittedTrace) {
  const fs::path fixtures = test::fixtures_dir();
  const fs::path model_path = fixtures.parent_path() / "models" / "strata-moe-pystd.gguf";
  if (!fs::exists(model_path)) GTEST_SKIP() << model_path << " is not in this checkout";
  std::ifstream expected_file(fixtures / "moe" / "policy-parity-lookahead.json");
  ASSERT_TRUE(expected_file);
  const nlohmann::json expected = nlohmann::json::parse(expected_file);
  auto model = Model::load(model_path.string());
  const ModelConfig& c = model->config();
  const std::vector<Request> trace =
      read_trace((fixtures / "moe" / expected["trace"].get<std::string>()).string(), c.n_expert_used);
  ASSERT_FALSE(trace.empty());
  for (const auto& size : expected["sizes"]) {
    const int slots = size["slots"];
    if (slots != 64) continue;  // 25 % of the experts (every size: expert_cache_test.cpp)
    tier::ExpertStreamerOptions o;
    ASSERT_EQ(o.guessed_use_weight, expected["guessed_use_weight"].get<double>());
    ASSERT_EQ(o.protect_guesses, expected["protect_guesses"].get<bool>());
    o.n_pool_slots = slots;
    o.co_predict = false;
    tier::ExpertStreamer streamer(*model, o);
    for (size_t i = 0; i < trace.size(); ++i) {
      const Request& r = trace[i];
      streamer.settle();
      streamer.begin_layer(r.layer, r.experts.data(), int(r.experts.size()), r.chosen.data(), r.n_tokens);
      const Request* next =
          i + 1 < trace.size() && trace[i + 1].guessed && trace[i + 1].n_tokens <= 4 ? &trace[i + 1] : nullptr;
      if (next) streamer.prefetch(next->layer, next->early.data(), int(next->early.size()), false);
      WeightView gate, up, down;
      for (int e; (e = streamer.next_ready(gate, up, down)) >= 0;) streamer.done(e);
      streamer.settle();
      if (next) streamer.prefetch(next->layer, next->refined.data(), int(next->refined.size()), true);
    }
    const tier::ExpertStats s = streamer.stats();
    const std::string what = std::to_string(slots) + " slots";
    EXPECT_EQ(s.needed, size["accesses"].get<uint64_t>()) << what;
    EXPECT_EQ(s.prefetch_dropped, 0u) << what;
    EXPECT_EQ(s.cache_hits + s.prefetch_hits, size["hits"].get<uint64_t>()) << what;
    EXPECT_EQ(s.prefetch_issued, size["issued"].get<uint64_t>()) << what;
    EXPECT_GT(s.prefetch_hits, 0u) << what;
  }
}

}  // namespace
}  // namespace strata
