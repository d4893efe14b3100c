// The expert cache's policy on its own (tier/stream/expert_cache.h): victims by hand, and the
// cache alone driven through a committed routing trace equal to the replayer's hit counts.
#include "tier/stream/expert_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "support/paths.h"
#include "util/error.h"

namespace strata {
namespace {

using tier::ExpertCache;
using tier::ExpertCachePolicy;
using Put = ExpertCache::Put;

TEST(ExpertCache, LfuGivesUpTheLeastUsedAndNeverTheCurrentLayers) {
  ExpertCache c(2, 4, {100, 100, 100}, {.policy = ExpertCachePolicy::lfu, .lfu_decay = 1.0});
  EXPECT_EQ(c.victim(100, false), 0) << "an empty slot first";
  c.put(0, 0, 1, Put::start);
  c.put(1, 0, 2, Put::start);
  c.put(2, 1, 3, Put::start);
  EXPECT_EQ(c.victim(101, false), -1) << "no slot is large enough";
  // Layer 0 uses expert 1 twice and 2 once; expert 3 of layer 1 is never used.
  c.begin_layer(0);
  for (int e : {1, 2, 1}) c.record_use(0, e);
  EXPECT_EQ(c.victim(100, false), 2);
  c.begin_layer(1);
  c.record_use(1, 3);
  c.confirm(2);  // layer 1 wants expert 3: not a victim while wanted
  EXPECT_EQ(c.victim(100, false), 1) << "of the others, the least used";
  c.hand_out(2);
  EXPECT_EQ(c.victim(100, false), 1) << "handed out: still not a victim";
  c.release(2);
  c.record_use(1, 3);  // 2 uses, as expert 1 of layer 0
  EXPECT_EQ(c.victim(100, false), 1);
  c.clear(1);
  EXPECT_EQ(c.find(0, 2), -1);
  EXPECT_EQ(c.victim(100, false), 1) << "a cleared slot holds nothing";
  c.put(1, 1, 0, Put::routed);  // wanted by layer 1
  EXPECT_EQ(c.victim(100, false), 0) << "equal scores: the lower layer goes first";
}

TEST(ExpertCache, LfuTiesGoToTheSmallerSlotThenTheLowerExpert) {
  ExpertCache c(1, 8, {200, 100, 100}, {.policy = ExpertCachePolicy::lfu, .lfu_decay = 1.0});
  c.put(0, 0, 1, Put::start);
  c.put(1, 0, 5, Put::start);
  c.put(2, 0, 4, Put::start);
  c.begin_layer(0);
  EXPECT_EQ(c.victim(100, false), 2) << "all unused: the smaller slots, then expert 4 before 5";
  EXPECT_EQ(c.victim(150, false), 0) << "only the large slot fits";
}

TEST(ExpertCache, AgeingMakesARecentUseOutweighAnOldOne) {
  ExpertCache c(1, 4, {1, 1}, {.policy = ExpertCachePolicy::lfu, .lfu_decay = 0.5});
  c.put(0, 0, 0, Put::start);
  c.put(1, 0, 1, Put::start);
  c.begin_layer(0);
  c.record_use(0, 0);
  c.age();
  c.record_use(0, 0);
  c.age();
  c.age();
  c.record_use(0, 1);  // one use at weight 8 against two at 1 and 2
  EXPECT_EQ(c.victim(1, false), 0);
  for (int i = 0; i < 2000; ++i) c.age();  // rescaled, not overflowing: the order stays
  EXPECT_EQ(c.victim(1, false), 0);
  c.record_use(0, 0);
  EXPECT_EQ(c.victim(1, false), 1);
}

TEST(ExpertCache, GuessesNeverDisplaceLiveGuessesAndGoFirstOnceTheirLayerPassed) {
  ExpertCache c(3, 4, {1, 1}, {.policy = ExpertCachePolicy::pinned_lru, .lfu_decay = 1.0});
  c.begin_layer(0);
  c.put(0, 0, 0, Put::start);
  c.put(1, 1, 2, Put::guess);
  EXPECT_EQ(c.victim(1, true), 0) << "a guess may take a cached expert's slot";
  EXPECT_EQ(c.victim(1, false), 0) << "a miss takes the cached expert before a live guess";
  c.put(0, 1, 3, Put::guess);
  EXPECT_EQ(c.victim(1, true), -1) << "both slots hold live guesses";
  EXPECT_EQ(c.victim(1, false), 1) << "a miss may take a live guess (the least recently put)";
  c.begin_layer(1);
  EXPECT_TRUE(c.confirm(1)) << "routing asks for guessed expert 2";
  c.begin_layer(2);
  EXPECT_EQ(c.victim(1, true), 1) << "a cached expert goes before a guess for a layer past (pinned_lru)";
  c.hand_out(1);
  EXPECT_EQ(c.victim(1, true), 0) << "the unconfirmed guess for layer 1 is past: a guess may take it";
}

TEST(ExpertCache, PinnedLruKeepsThePlansExperts) {
  ExpertCache c(1, 4, {1, 1, 1}, {.policy = ExpertCachePolicy::pinned_lru, .lfu_decay = 1.0});
  std::vector<bool> named(4, false);
  named[0] = true;
  c.set_named(named);
  c.put(0, 0, 0, Put::start);
  c.put(1, 0, 1, Put::start);
  c.put(2, 0, 2, Put::start);
  EXPECT_TRUE(c.holds_pinned(0));
  c.begin_layer(0);
  c.confirm(1);
  c.hand_out(1);
  c.release(1);
  EXPECT_EQ(c.victim(1, false), 2) << "least recently used, the pinned one never";
  c.confirm(2);
  c.confirm(1);
  EXPECT_EQ(c.victim(1, false), -1) << "the rest are wanted: wait, do not take the pinned slot";
  EXPECT_THROW(c.set_named(std::vector<bool>(3)), Error);
  ExpertCache lfu(1, 4, {1}, {.policy = ExpertCachePolicy::lfu, .lfu_decay = 1.0});
  lfu.set_named(named);
  lfu.put(0, 0, 0, Put::start);
  EXPECT_TRUE(lfu.holds_named(0));
  EXPECT_FALSE(lfu.holds_pinned(0)) << "lfu only counts the plan's experts";
  EXPECT_EQ(lfu.victim(1, false), 0);
}

TEST(ExpertCache, GuessedUsesCountLessAndGuardedExpertsStay) {
  ExpertCache c(2, 4, {1, 1, 1}, {.lfu_decay = 1.0, .guessed_use_weight = 0.25, .protect_guesses = true});
  c.put(0, 1, 0, Put::start);
  c.put(1, 1, 1, Put::start);
  c.put(2, 1, 2, Put::start);
  c.begin_layer(0);
  c.note_guess(1, 0);  // the look-ahead guesses expert 0 of layer 1
  c.note_guess(0, 3);  // a note for another layer drops the earlier ones
  c.note_guess(1, 1);
  c.begin_layer(1);
  c.record_use(1, 0);  // unguessed (its note was dropped): 1
  c.record_use(1, 1);  // guessed: 0.25
  c.record_use(1, 2);
  c.record_use(1, 2);  // unguessed twice: 2
  c.begin_layer(0);
  EXPECT_EQ(c.victim(1, false), 1) << "the guessed use counted a quarter";
  c.guard(1);
  EXPECT_EQ(c.victim(1, false), 0) << "guarded: kept until the next layer begins";
  EXPECT_EQ(c.victim(1, true), 0);
  c.begin_layer(1);
  EXPECT_EQ(c.victim(1, false), 1) << "the guard ends when its layer begins";
  c.record_use(1, 1);
  EXPECT_EQ(c.victim(1, false), 0) << "notes last one layer: this use counted whole (1.25 against 1)";
  ExpertCache off(1, 4, {1, 1}, {.protect_guesses = false});
  off.put(0, 0, 0, Put::start);
  off.guard(0);
  EXPECT_EQ(off.victim(1, false), 1) << "an empty slot first";
  off.put(1, 0, 1, Put::start);
  EXPECT_EQ(off.victim(1, false), 0) << "without protect_guesses a guard does nothing";
}

TEST(ExpertCache, RefusesBadArguments) {
  EXPECT_THROW(ExpertCache(0, 4, {1}, {.policy = ExpertCachePolicy::lfu, .lfu_decay = 1.0}), Error);
  EXPECT_THROW(ExpertCache(1, 4, {1}, {.policy = ExpertCachePolicy::lfu, .lfu_decay = 0.0}), Error);
  EXPECT_THROW(ExpertCache(1, 4, {1}, {.policy = ExpertCachePolicy::lfu, .lfu_decay = 1.5}), Error);
  EXPECT_THROW(ExpertCache(1, 4, {1}, {.guessed_use_weight = -0.5}), Error);
}

// One forward pass's distinct experts at one layer, as the replayer groups a trace.
struct Request {
  int layer = 0;
  std::vector<int> experts;
};

std::vector<Request> read_requests(const std::string& path, int& n_layer, int& n_expert) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << path;
  std::vector<Request> out;
  bool open = false;
  int k = 0;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string tag;
    fields >> tag;
    if (tag == "n_layer") {
      std::string name;
      fields >> n_layer >> name >> n_expert >> name >> k;
    } else if (tag == "g") {
      open = false;
    } else if (tag == "r") {
      int layer = 0;
      long long pos = 0;
      fields >> layer >> pos;
      if (!open || out.back().layer != layer) out.push_back(Request{.layer = layer});
      open = true;
      for (int j = 0; j < k; ++j) {
        int e = -1;
        fields >> e;
        if (std::find(out.back().experts.begin(), out.back().experts.end(), e) == out.back().experts.end())
          out.back().experts.push_back(e);
      }
    }
  }
  return out;
}

// The cache alone, driven as the streamer drives it without guesses (a miss takes the victim's
// slot), gets the replayer's hits (tests/fixtures/moe/policy-parity.json, held equal to
// bench/routing_replay.py's `lfu` by tests/py/test_routing_replay.py).
TEST(ExpertCache, LfuOnACommittedTraceEqualsTheReplayer) {
  const std::filesystem::path fixtures = test::fixtures_dir();
  std::ifstream expected_file(fixtures / "moe" / "policy-parity.json");
  ASSERT_TRUE(expected_file);
  const nlohmann::json expected = nlohmann::json::parse(expected_file);
  ASSERT_EQ(expected["policy"], "lfu");
  int n_layer = 0, n_expert = 0;
  const std::vector<Request> trace =
      read_requests((fixtures / "moe" / expected["trace"].get<std::string>()).string(), n_layer, n_expert);
  ASSERT_FALSE(trace.empty());
  for (const auto& size : expected["sizes"]) {
    const int slots = size["slots"];
    ExpertCache c(n_layer, n_expert, std::vector<uint64_t>(size_t(slots), 1),
                  {.lfu_decay = expected["decay"].get<double>()});
    uint64_t hits = 0, accesses = 0;
    for (const Request& r : trace) {
      c.begin_layer(r.layer);
      std::vector<int> missed;
      for (int e : r.experts) {
        ++accesses;
        const int slot = c.find(r.layer, e);
        if (slot >= 0) {
          ++hits;
          c.confirm(slot);
        } else {
          missed.push_back(e);
        }
        c.record_use(r.layer, e);
      }
      for (int e : missed) {
        const int slot = c.victim(1, false);
        if (slot < 0) break;  // every slot wanted: read, used, not kept
        c.clear(slot);
        c.put(slot, r.layer, e, Put::routed);
      }
      c.age();
    }
    EXPECT_EQ(accesses, size["accesses"].get<uint64_t>()) << slots << " slots";
    EXPECT_EQ(hits, size["hits"].get<uint64_t>()) << slots << " slots";
  }
}

// One forward pass's routing at one layer with the guesses made for it (early, refined).
struct GuessedRequest {
  int layer = 0;
  std::vector<int> experts;
  std::vector<int> early, refined;
  bool guessed = false;
  int n_tokens = 0;
};

std::vector<GuessedRequest> read_guessed(const std::string& path, int& n_layer, int& n_expert) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << path;
  std::vector<GuessedRequest> out;
  std::vector<std::vector<int>> pending_early, pending_refined;  // per layer, for its next request
  std::vector<bool> pending;
  bool open = false;
  int k = 0;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string tag;
    fields >> tag;
    if (tag == "n_layer") {
      std::string name;
      fields >> n_layer >> name >> n_expert >> name >> k;
      pending_early.assign(size_t(n_layer), {});
      pending_refined.assign(size_t(n_layer), {});
      pending.assign(size_t(n_layer), false);
    } else if (tag == "g") {
      int layer = 0, refined = 0;
      fields >> layer >> refined;
      std::vector<int>& g = refined ? pending_refined[size_t(layer)] : pending_early[size_t(layer)];
      g.clear();
      for (int e; fields >> e;) g.push_back(e);
      pending[size_t(layer)] = true;
      open = false;
    } else if (tag == "r") {
      int layer = 0;
      long long pos = 0;
      fields >> layer >> pos;
      if (!open || out.back().layer != layer) {
        GuessedRequest r{.layer = layer};
        if (pending[size_t(layer)]) {
          r.guessed = true;
          r.early.swap(pending_early[size_t(layer)]);
          r.refined.swap(pending_refined[size_t(layer)]);
          pending[size_t(layer)] = false;
        }
        out.push_back(std::move(r));
      }
      open = true;
      ++out.back().n_tokens;
      for (int j = 0; j < k; ++j) {
        int e = -1;
        fields >> e;
        if (std::find(out.back().experts.begin(), out.back().experts.end(), e) == out.back().experts.end())
          out.back().experts.push_back(e);
      }
    }
  }
  return out;
}

// The engine's protocol with the router's look-ahead (ExpertStreamer: the next layer's early guess
// read while the current layer's experts are still wanted, unless one of them waits for a slot;
// the refined guess after its FFN; each guess noted, a cached one guarded, the others read into
// victims while live guesses are kept) on the trace's own guesses, from an empty cache: hits
// (experts in memory when routed to) and guesses read equal the replayer's `lfu+lookahead`
// (tests/fixtures/moe/policy-parity-lookahead.json, held equal to bench/routing_replay.py's
// replay_engine by tests/py/test_routing_replay.py).
TEST(ExpertCache, LookaheadOnACommittedTraceEqualsTheReplayer) {
  const std::filesystem::path fixtures = test::fixtures_dir();
  std::ifstream expected_file(fixtures / "moe" / "policy-parity-lookahead.json");
  ASSERT_TRUE(expected_file);
  const nlohmann::json expected = nlohmann::json::parse(expected_file);
  ASSERT_EQ(expected["policy"], "lfu");
  ASSERT_EQ(expected["start"], "empty");
  const tier::ExpertCacheOptions defaults;
  ASSERT_EQ(defaults.guessed_use_weight, expected["guessed_use_weight"].get<double>())
      << "the fixture is the default's";
  ASSERT_EQ(defaults.protect_guesses, expected["protect_guesses"].get<bool>());
  ASSERT_EQ(defaults.lfu_decay, expected["decay"].get<double>());
  int n_layer = 0, n_expert = 0;
  const std::vector<GuessedRequest> trace =
      read_guessed((fixtures / "moe" / expected["trace"].get<std::string>()).string(), n_layer, n_expert);
  ASSERT_FALSE(trace.empty());
  for (const auto& size : expected["sizes"]) {
    const int slots = size["slots"];
    ExpertCache c(n_layer, n_expert, std::vector<uint64_t>(size_t(slots), 1));
    uint64_t hits = 0, accesses = 0, issued = 0;
    // ExpertStreamer::prefetch: every guess noted; read only while no expert waits for a slot
    auto prefetch = [&](int layer, const std::vector<int>& guess, bool waiting) {
      for (int e : guess) c.note_guess(layer, e);
      if (waiting) return;
      for (int e : guess) {
        if (const int cached = c.find(layer, e); cached >= 0) {
          c.guard(cached);
          continue;
        }
        const int slot = c.victim(1, true);
        if (slot < 0) return;
        c.clear(slot);
        c.put(slot, layer, e, Put::guess);
        ++issued;
      }
    };
    for (size_t i = 0; i < trace.size(); ++i) {
      const GuessedRequest& r = trace[i];
      c.begin_layer(r.layer);
      std::vector<int> missed;
      for (int e : r.experts) {
        ++accesses;
        const int slot = c.find(r.layer, e);
        if (slot >= 0) {
          ++hits;
          c.confirm(slot);
        } else {
          missed.push_back(e);
        }
        c.record_use(r.layer, e);
      }
      for (int e : missed) {
        const int slot = c.victim(1, false);
        if (slot < 0) break;
        c.clear(slot);
        c.put(slot, r.layer, e, Put::routed);
      }
      c.age();
      const GuessedRequest* next = i + 1 < trace.size() ? &trace[i + 1] : nullptr;
      const bool guessing = next && next->guessed && next->n_tokens <= 4;
      bool waiting = false;
      for (int e : r.experts) waiting |= c.find(r.layer, e) < 0;
      if (guessing) prefetch(next->layer, next->early, waiting);
      for (int e : r.experts)  // the FFN: each expert handed out and done
        if (const int slot = c.find(r.layer, e); slot >= 0) {
          c.hand_out(slot);
          c.release(slot);
        }
      if (guessing) prefetch(next->layer, next->refined, false);
    }
    EXPECT_EQ(accesses, size["accesses"].get<uint64_t>()) << slots << " slots";
    EXPECT_EQ(hits, size["hits"].get<uint64_t>()) << slots << " slots";
    EXPECT_EQ(issued, size["issued"].get<uint64_t>()) << slots << " slots";
  }
}

}  // namespace
}  // namespace strata
