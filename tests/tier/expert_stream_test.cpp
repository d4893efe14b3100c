// Expert streaming changes where bytes live, never the math: logits with expert slices read from
// the file through a small expert cache are bit-identical to a fully resident run, whatever the
// cache holds, the pool size or the prefetch guesses. Also: routing statistics, the plan-driven
// Tiering, and clear errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "runtime/session.h"
#include "support/file_change.h"
#include "support/forge.h"
#include "support/logits.h"
#include "support/paths.h"
#include "tier/stream/expert_streamer.h"
#include "tier/stream/routing_stats.h"
#include "tier/tiering.h"
#include "util/error.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

class ExpertStreamTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string tokenizer = test::model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    if (!fs::exists(tokenizer)) return;
    // On the real filesystem next to the model cache: O_DIRECT does not work on tmpfs.
    dir_ = fs::path(test::models_dir()).parent_path() / ("expert_stream_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    mixtral_ = (dir_ / "llama-moe.gguf").string();
    qwen_ = (dir_ / "qwen3moe.gguf").string();
    ok_ = test::forge({"--arch", "llama", "--preset", "tiny-moe", "--type", "Q4_K_M", "--seed", "5"}, tokenizer,
                      mixtral_) &&
          test::forge({"--arch", "qwen3moe", "--preset", "tiny", "--type", "Q8_0", "--seed", "6"}, tokenizer, qwen_);
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  void SetUp() override {
    if (dir_.empty()) GTEST_SKIP() << "SmolLM2 (the forge's tokenizer source) is not fetched";
    ASSERT_TRUE(ok_) << "forging the test models failed (" << test::strata_bin() << ")";
  }

  // Logits of a prompt (all positions) and of 6 more tokens evaluated one at a time.
  static std::vector<float> run(const Model& model, ExpertSource* source) {
    return test::run_logits(model, nullptr, source, {.n_single = 6});
  }

  static void expect_identical(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
    ASSERT_EQ(a.size(), b.size()) << what;
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << what;
  }

  static inline fs::path dir_;
  static inline std::string mixtral_, qwen_;
  static inline bool ok_ = false;
};

TEST_F(ExpertStreamTest, StreamedExpertsAreBitIdenticalWhateverTheCache) {
  for (const std::string& path : {mixtral_, qwen_}) {
    auto model = Model::load(path);
    const ModelConfig& c = model->config();
    ASSERT_GT(c.n_expert, 0);
    const std::vector<float> resident = run(*model, nullptr);
    struct Case {
      int pool;
      bool pin_some;
      bool co_predict;
      tier::ExpertCachePolicy policy = tier::ExpertCachePolicy::lfu;
    };
    for (Case k : {Case{1, false, false}, Case{2, false, true}, Case{1, true, true},
                   Case{c.n_expert_used * 2, true, false}, Case{1, true, true, tier::ExpertCachePolicy::pinned_lru},
                   Case{c.n_expert_used * 2, true, false, tier::ExpertCachePolicy::pinned_lru}}) {
      tier::ExpertStreamerOptions o;
      o.n_pool_slots = k.pool;
      o.co_predict = k.co_predict;
      o.policy = k.policy;
      if (k.pin_some) {
        o.pinned.assign(size_t(c.n_layer), {});
        o.pinned[0] = {0, c.n_expert - 1};  // layer 0 partly resident, the others streamed
      }
      tier::ExpertStreamer streamer(*model, o);
      const std::string what = path + " pool " + std::to_string(k.pool) + (k.pin_some ? " pinned" : "") +
                               (k.policy == tier::ExpertCachePolicy::lfu ? " lfu" : " pinned_lru");
      expect_identical(run(*model, &streamer), resident, what);
      const tier::ExpertStats s = streamer.stats();
      EXPECT_EQ(s.needed, s.cache_hits + s.prefetch_hits + s.misses) << what;
      EXPECT_GE(s.loads, s.misses) << what;
      EXPECT_GT(s.bytes_read, 0u) << what;
      EXPECT_EQ(s.slots, k.pool + (k.pin_some ? 2 : 0)) << what;
      if (k.policy == tier::ExpertCachePolicy::pinned_lru)
        EXPECT_EQ(s.pinned_slots, k.pin_some ? 2 : 0) << what;  // never evicted
      else
        EXPECT_LE(s.pinned_slots, k.pin_some ? 2 : 0) << what;  // lfu: the first content, evicted like any
      // One prompt batch and 6 tokens route through every layer.
      EXPECT_GE(s.needed, uint64_t(7 * c.n_layer * c.n_expert_used) / uint64_t(c.n_expert_used)) << what;
      EXPECT_EQ(streamer.routing().tokens_seen(), 12u + 6u) << what;
    }
  }
}

// The guessers switch on and off (--expert-guess): without either nothing is read on a guess and
// the streamer offers no hook; the router's look-ahead reads ahead; the math never changes.
TEST_F(ExpertStreamTest, EachGuesserSwitchesOnAndOff) {
  auto model = Model::load(qwen_);
  const ModelConfig& c = model->config();
  const std::vector<float> resident = run(*model, nullptr);
  for (bool look_ahead : {false, true})
    for (bool co_predict : {false, true}) {
      tier::ExpertStreamerOptions o;
      o.n_pool_slots = 2 * c.n_expert_used;
      o.look_ahead = look_ahead;
      o.co_predict = co_predict;
      tier::ExpertStreamer streamer(*model, o);
      const std::string what = std::string("look-ahead ") + (look_ahead ? "on" : "off") + ", co-activation " +
                               (co_predict ? "on" : "off");
      EXPECT_EQ(streamer.hook() != nullptr, look_ahead || co_predict) << what;
      expect_identical(run(*model, &streamer), resident, what);
      const tier::ExpertStats s = streamer.stats();
      if (!look_ahead && !co_predict) EXPECT_EQ(s.prefetch_issued, 0u) << what;
      if (look_ahead) EXPECT_GT(s.prefetch_issued, 0u) << what;
      EXPECT_EQ(s.needed, s.cache_hits + s.prefetch_hits + s.misses) << what;
    }
}

TEST_F(ExpertStreamTest, RepeatedExpertsHitTheCache) {
  // A pool that holds every expert of every layer: after the first pass everything is a hit.
  auto model = Model::load(mixtral_);
  const ModelConfig& c = model->config();
  tier::ExpertStreamerOptions o;
  o.n_pool_slots = c.n_layer * c.n_expert;
  tier::ExpertStreamer streamer(*model, o);
  run(*model, &streamer);
  const uint64_t loads = streamer.stats().loads;
  EXPECT_LE(loads, uint64_t(c.n_layer * c.n_expert));
  run(*model, &streamer);
  EXPECT_EQ(streamer.stats().loads, loads) << "a second pass over the same prompt read again";
}

// Guesses routing does not confirm have their unread part dropped (with one read in flight,
// nearly all of it); an expert dropped that way and routed to later is read again, whole.
TEST_F(ExpertStreamTest, DroppedGuessesAreReadAgainWhenRoutedTo) {
  auto model = Model::load(mixtral_);
  const ModelConfig& c = model->config();
  ASSERT_GE(c.n_layer, 2);
  tier::ExpertStreamerOptions o;
  o.n_pool_slots = c.n_expert + c.n_expert_used;
  o.queue_depth = 1;
  o.co_predict = false;
  tier::ExpertStreamer streamer(*model, o);
  const int64_t ff = c.n_ff_expert;
  auto drain_and_check = [&](int layer) {
    const LayerWeights& L = model->weights().layers[size_t(layer)];
    WeightView gate, up, down;
    for (int e; (e = streamer.next_ready(gate, up, down)) >= 0;) {
      const WeightView want[3] = {L.gate_exps.rows(e * ff, ff), L.up_exps.rows(e * ff, ff),
                                  L.down_exps.rows(int64_t(e) * c.n_embd, c.n_embd)};
      const WeightView got[3] = {gate, up, down};
      for (int j = 0; j < 3; ++j)
        ASSERT_EQ(0, std::memcmp(got[j].data, want[j].data, want[j].row_bytes * size_t(want[j].n_rows)))
            << "layer " << layer << " expert " << e << " matrix " << j;
      streamer.done(e);
    }
  };
  const int32_t first[1] = {0}, chosen0[2] = {0, 0};
  streamer.begin_layer(0, first, 1, chosen0, 1);
  std::vector<int32_t> guess;
  for (int e = c.n_expert - 1; e >= 1; --e) guess.push_back(e);  // every expert of layer 1 but 0
  streamer.prefetch(1, guess.data(), int(guess.size()), false);
  drain_and_check(0);
  // Layer 1 routes to expert 1 only: the other guesses are wrong.
  const int32_t routed[1] = {1}, chosen1[2] = {1, 1};
  streamer.begin_layer(1, routed, 1, chosen1, 1);
  drain_and_check(1);
  const tier::ExpertStats s = streamer.stats();
  EXPECT_EQ(s.prefetch_issued, guess.size());
  EXPECT_EQ(s.prefetch_hits, 1u);
  EXPECT_LE(s.prefetch_dropped, s.prefetch_wasted);
  EXPECT_LE(s.prefetch_dropped, guess.size() - 1);
  RecordProperty("dropped", int(s.prefetch_dropped));
  // A later token routes to every expert of layer 1: what was dropped is read again, whole.
  std::vector<int32_t> all;
  for (int e = 0; e < c.n_expert; ++e) all.push_back(e);
  streamer.begin_layer(0, first, 1, chosen0, 1);
  drain_and_check(0);
  const std::vector<int32_t> chosen_all(size_t(c.n_expert_used), 0);
  streamer.begin_layer(1, all.data(), int(all.size()), chosen_all.data(), 1);
  drain_and_check(1);
  EXPECT_EQ(streamer.stats().misses - s.misses, 1u + s.prefetch_dropped) << "expert 0, and each dropped guess";

  // A better guess replaces an earlier one: what it leaves out goes (where unread), what it adds is read.
  const tier::ExpertStats before = streamer.stats();
  streamer.begin_layer(0, first, 1, chosen0, 1);
  const int32_t early[2] = {2, 3}, better[1] = {1};
  streamer.prefetch(1, early, 2, false);
  streamer.prefetch(1, better, 1, true);
  drain_and_check(0);
  streamer.begin_layer(1, better, 1, chosen1, 1);
  drain_and_check(1);
  const tier::ExpertStats after = streamer.stats();
  EXPECT_EQ(after.misses, before.misses) << "expert 1 came from a guess or the cache";
  EXPECT_LE(after.prefetch_issued - before.prefetch_issued, 3u);
}

// The memory the streamer takes is what the plan charges: a pinned expert the slot of its own
// layer (layers differ in type in Q4_K_M), a pool slot the largest.
TEST_F(ExpertStreamTest, SlotsAreWhatThePlanPaysFor) {
  for (const std::string& path : {mixtral_, qwen_}) {
    auto model = Model::load(path);
    const ModelConfig& c = model->config();
    tier::PlanInputs in;
    in.budget_bytes = uint64_t(1) << 40;
    const tier::Plan plan = tier::make_plan(model->file(), c, in);
    auto unit_bytes = [&](int layer, int expert) {
      for (const tier::PlanUnit& u : plan.units)
        if (u.kind == tier::UnitKind::expert && u.layer == layer && u.expert == expert) return u.memory_bytes;
      return uint64_t(0);
    };
    uint64_t largest = 0;
    for (const tier::PlanUnit& u : plan.units)
      if (u.kind == tier::UnitKind::expert) largest = std::max(largest, u.memory_bytes);
    tier::ExpertStreamerOptions o;
    o.n_pool_slots = 2;
    o.pinned.assign(size_t(c.n_layer), {});
    o.pinned[0] = {0};
    o.pinned[size_t(c.n_layer - 1)] = {1};
    tier::ExpertStreamer streamer(*model, o);
    EXPECT_EQ(streamer.stats().slot_bytes, largest) << path;
    EXPECT_EQ(streamer.memory_bytes(), unit_bytes(0, 0) + unit_bytes(c.n_layer - 1, 1) + 2 * largest) << path;
  }
}

TEST_F(ExpertStreamTest, PinnedExpertsAreReadAtStartAndNeverAgain) {
  auto model = Model::load(mixtral_);
  const ModelConfig& c = model->config();
  tier::ExpertStreamerOptions o;
  o.n_pool_slots = 1;
  o.pinned.assign(size_t(c.n_layer), {});
  for (int l = 0; l < c.n_layer; ++l)
    for (int e = 0; e < c.n_expert; ++e) o.pinned[size_t(l)].push_back(e);
  tier::ExpertStreamer streamer(*model, o);
  const tier::ExpertStats start = streamer.stats();
  EXPECT_EQ(start.loads, uint64_t(c.n_layer * c.n_expert));
  EXPECT_EQ(start.preload_bytes, start.bytes_read);
  const std::vector<float> streamed = run(*model, &streamer);
  expect_identical(streamed, run(*model, nullptr), "all pinned");
  const tier::ExpertStats end = streamer.stats();
  EXPECT_EQ(end.loads, start.loads);
  EXPECT_EQ(end.misses, 0u);
  EXPECT_EQ(end.cache_hits, end.needed);
}

TEST_F(ExpertStreamTest, TieringUnderASmallBudgetStreamsExpertsExactly) {
  auto model = Model::load(qwen_);
  tier::TieringOptions t;
  t.n_ctx = 64;
  t.ram_gbps = 30;  // the plan must not depend on how fast this machine's disk is today
  t.ssd_gbps = 1.7;
  t.n_batch = 512;
  t.persist_routing = false;
  t.revise_every = 4;  // revise the plan several times during the run
  tier::PlanInputs in;
  in.budget_bytes = uint64_t(1) << 40;
  in.n_ctx = t.n_ctx;
  in.n_batch = t.n_batch;
  t.n_threads = 2;  // the attention scratch is per thread: both plans count the same threads
  in.n_threads = t.n_threads;
  const tier::Plan full = tier::make_plan(model->file(), model->config(), in);
  ASSERT_EQ(full.n_expert_resident, full.n_expert_units);
  // Halfway between the minimum and the whole model: some experts pinned, most streamed. (The
  // tiny model's slices are smaller than the pages a slot rounds each of them up to.)
  ASSERT_GT(full.used_bytes, full.minimum_bytes + full.expert_slot_bytes);
  t.budget_bytes = full.minimum_bytes + (full.used_bytes - full.minimum_bytes) / 2;
  tier::Tiering tiering(*model, t);
  ASSERT_TRUE(tiering.streaming());
  ASSERT_NE(tiering.expert_source(), nullptr);
  EXPECT_EQ(tiering.ffn_source(), nullptr);
  EXPECT_LT(tiering.plan().n_expert_resident, tiering.plan().n_expert_units);
  EXPECT_LE(tiering.plan().used_bytes, t.budget_bytes);
  const std::vector<float> streamed = run(*model, tiering.expert_source());
  expect_identical(streamed, run(*model, nullptr), "tiering");
  const tier::TierStats s = tiering.stats();
  EXPECT_TRUE(s.has_experts);
  EXPECT_GT(s.experts.needed, 0u);
  // The slots the streamer allocates are the ones the plan paid for (a pinned expert takes a whole
  // slot, not its slice: counting slices let Qwen3 30B-A3B go 300 MB over a 6 GiB limit).
  EXPECT_LE(s.experts.slot_bytes, tiering.plan().expert_slot_bytes);
  EXPECT_NE(tiering.describe_stats(s, 7, 1.0).find("prefetch"), std::string::npos);

  // Resident weights moved out of the page cache are the non-expert ones: pinned experts live in
  // the expert streamer's slots, not twice.
  const uint64_t slack = 8192 * model->file().tensors().size();
  EXPECT_GT(s.resident_copy_bytes, 0u);
  EXPECT_LE(s.resident_copy_bytes, tiering.plan().mandatory_bytes + slack);

  // With the whole model in the budget nothing streams: the plain run, no overhead.
  t.budget_bytes = uint64_t(1) << 40;
  tier::Tiering fits(*model, t);
  EXPECT_FALSE(fits.streaming());
  EXPECT_EQ(fits.expert_source(), nullptr);
  EXPECT_EQ(fits.ffn_source(), nullptr);
}

TEST_F(ExpertStreamTest, BudgetBelowTheMinimumSaysTheMinimum) {
  auto model = Model::load(qwen_);
  tier::TieringOptions t;
  t.n_ctx = 64;
  t.ram_gbps = 30;  // the plan must not depend on how fast this machine's disk is today
  t.ssd_gbps = 1.7;
  t.budget_bytes = 4096;
  t.persist_routing = false;
  try {
    tier::Tiering tiering(*model, t);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("minimum"), std::string::npos) << e.what();
  }
}

TEST_F(ExpertStreamTest, FileChangedUnderneathIsAnError) {
  const std::string copy = (dir_ / "changed.gguf").string();
  fs::copy_file(mixtral_, copy, fs::copy_options::overwrite_existing);
  auto model = Model::load(copy);
  tier::ExpertStreamerOptions o;
  o.n_pool_slots = 1;
  tier::ExpertStreamer streamer(*model, o);
  ASSERT_NO_FATAL_FAILURE(test::mark_rewritten(copy));
  test::expect_changed_file_error(*model, nullptr, &streamer);
}

TEST_F(ExpertStreamTest, DenseModelIsRefused) {
  const std::string dense = (dir_ / "dense.gguf").string();
  ASSERT_TRUE(test::forge({"--arch", "llama", "--preset", "tiny", "--type", "Q8_0"},
                          test::model_path("SmolLM2-135M-Instruct.Q4_1.gguf"), dense));
  auto model = Model::load(dense);
  EXPECT_THROW(tier::ExpertStreamer(*model, {}), Error);
}

TEST(RoutingStatsTest, CountsPredictsAndRoundTrips) {
  tier::RoutingStats stats(3, 4, 2);
  // Token routings: layer 0 picks {0,1}, layer 1 picks {2,3}, layer 2 picks {1,2}.
  for (int i = 0; i < 40; ++i) {
    const int32_t l0[2] = {0, 1}, l1[2] = {2, 3}, l2[2] = {1, 2};
    stats.record(0, l0, 1);
    stats.record(1, l1, 1);
    stats.record(2, l2, 1);
  }
  EXPECT_EQ(stats.tokens_seen(), 40u);
  const auto f = stats.frequencies();
  EXPECT_EQ(f[0][0], 40.0);
  EXPECT_EQ(f[0][2], 0.0);
  EXPECT_EQ(f[1][3], 40.0);
  const int32_t now[2] = {0, 1};
  int32_t out[4];
  ASSERT_EQ(stats.predict_next(0, now, 2, 2, out), 2);
  EXPECT_EQ(out[0], 2);
  EXPECT_EQ(out[1], 3);
  EXPECT_EQ(stats.predict_next(2, now, 2, 2, out), 0) << "no layer after the last";

  const std::string path = (fs::temp_directory_path() / ("routing_" + std::to_string(::getpid()) + ".bin")).string();
  stats.save(path);
  tier::RoutingStats loaded(3, 4, 2);
  ASSERT_TRUE(loaded.load(path));
  EXPECT_EQ(loaded.tokens_seen(), 40u);
  EXPECT_EQ(loaded.frequencies(), f);
  ASSERT_EQ(loaded.predict_next(0, now, 2, 2, out), 2);
  tier::RoutingStats other_shape(3, 8, 2);
  EXPECT_FALSE(other_shape.load(path)) << "statistics of another model must not load";
  EXPECT_FALSE(other_shape.load(path + ".missing"));
  fs::remove(path);
}

TEST(RoutingStatsTest, GuessesOnlyExpertsThatUsuallyFollow) {
  tier::RoutingStats stats(2, 6, 2);
  // Layer 0 picks {0,1}; layer 1 picks expert 2 every time and one of {3,4,5} in turn.
  for (int i = 0; i < 60; ++i) {
    const int32_t l0[2] = {0, 1}, l1[2] = {2, int32_t(3 + i % 3)};
    stats.record(0, l0, 1);
    stats.record(1, l1, 1);
  }
  const int32_t now[2] = {0, 1};
  int32_t out[2];
  ASSERT_EQ(stats.predict_next(0, now, 2, 2, out), 1) << "3, 4 and 5 each followed a third of the time";
  EXPECT_EQ(out[0], 2);
}

}  // namespace
}  // namespace strata
