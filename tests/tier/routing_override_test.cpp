// The routing override (tier/trace/routing_override.h): with it, the engine's MoE layers run the
// trace's experts. Checked on the trained model through a real Session and Tiering: every routing
// the forward pass reports, the experts the streamer was asked for, and the logits (the streamed
// run computes exactly what a resident run under the same override computes, and not what the
// router alone would have).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "runtime/session.h"
#include "support/paths.h"
#include "tier/tiering.h"
#include "util/error.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

constexpr int kPositions = 12;  // the trace's; the runs go past it, so positions wrap

struct Routed {
  int layer;
  int64_t pos;
  std::vector<int32_t> chosen;
};

class Recorder : public RoutingObserver {
 public:
  explicit Recorder(int k) : k_(k) {}
  void routed(int layer, int64_t pos0, const int32_t* chosen, int n_tokens) override {
    for (int t = 0; t < n_tokens; ++t)
      seen.push_back({layer, pos0 + t, std::vector<int32_t>(chosen + t * k_, chosen + (t + 1) * k_)});
  }
  void guessed(int, const int32_t*, int, bool) override {}
  std::vector<Routed> seen;

 private:
  int k_;
};

class RoutingOverrideTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_path_ = fs::path(test::fixtures_dir()).parent_path() / "models" / "strata-moe-pystd.gguf";
    if (!fs::exists(model_path_)) GTEST_SKIP() << model_path_ << " is not in this checkout";
    model_ = Model::load(model_path_.string());
    trace_ = fs::temp_directory_path() / ("routing_override_test_" + std::to_string(::getpid()) + ".txt");
    const ModelConfig& c = model_->config();
    // Random routing, seeded: nothing like what the trained router would choose.
    std::mt19937 rng(7);
    std::ofstream out(trace_);
    out << "strata-routing-trace 1\nmodel test\nn_layer " << c.n_layer << " n_expert " << c.n_expert
        << " n_expert_used " << c.n_expert_used << "\nexpert_bytes 0\n";
    expected_.assign(size_t(kPositions), std::vector<std::vector<int32_t>>(size_t(c.n_layer)));
    for (int p = 0; p < kPositions; ++p)
      for (int l = 0; l < c.n_layer; ++l) {
        std::vector<int32_t>& e = expected_[size_t(p)][size_t(l)];
        while (int(e.size()) < c.n_expert_used) {
          const int32_t x = int32_t(rng() % uint32_t(c.n_expert));
          if (std::find(e.begin(), e.end(), x) == e.end()) e.push_back(x);
        }
        out << "r " << l << " " << p;
        for (int32_t x : e) out << " " << x;
        out << "\n";
      }
  }
  void TearDown() override {
    if (!trace_.empty()) fs::remove(trace_);
  }

  tier::TieringOptions options(uint64_t budget) const {
    tier::TieringOptions t;
    t.n_ctx = 64;
    t.n_batch = 64;
    t.ram_gbps = 30;  // the plan must not depend on this machine's disk
    t.ssd_gbps = 1.7;
    t.n_threads = 2;
    t.persist_routing = false;
    t.revise_every = 0;
    t.budget_bytes = budget;
    t.routing_override = trace_.string();
    return t;
  }

  // A 5-token prompt at once, then single tokens up to position 17 (past the trace's 12).
  std::vector<float> run(ExpertSource* experts, Recorder* recorder) const {
    SessionParams sp;
    sp.n_ctx = 64;
    sp.n_threads = 2;
    Session s(*model_, sp);
    s.set_expert_source(experts);
    if (recorder) s.set_routing_observer(recorder);
    std::vector<float> out = s.eval_all_logits({100, 137, 174, 211, 248});
    const int n_vocab = model_->config().n_vocab;
    for (int i = 0; i < 13; ++i) {
      const float* l = s.eval({int32_t(500 + 91 * i)});
      out.insert(out.end(), l, l + n_vocab);
    }
    return out;
  }

  fs::path model_path_, trace_;
  std::unique_ptr<Model> model_;
  std::vector<std::vector<std::vector<int32_t>>> expected_;  // [position][layer] -> experts
};

TEST_F(RoutingOverrideTest, TheEngineRoutesAsTheTraceSays) {
  const ModelConfig& c = model_->config();
  // Streamed: a budget that holds a few experts besides the minimum.
  tier::TieringOptions big = options(uint64_t(1) << 40);
  big.routing_override.clear();
  const tier::Plan full = tier::plan_for(*model_, big);
  tier::Tiering tiering(*model_, options(full.minimum_bytes + 16 * full.expert_slot_bytes));
  ASSERT_TRUE(tiering.streaming());
  Recorder recorder(c.n_expert_used);
  const std::vector<float> streamed = run(tiering.expert_source(), &recorder);

  // What compute ran: every MoE layer of every token, the trace's experts of its position.
  ASSERT_EQ(recorder.seen.size(), size_t(18 * c.n_layer));
  uint64_t distinct = 0;  // per batch and layer: what the streamer is asked for
  std::set<std::pair<int64_t, int>> covered;
  for (size_t i = 0; i < recorder.seen.size(); ++i) {
    const Routed& r = recorder.seen[i];
    EXPECT_EQ(r.chosen, expected_[size_t(r.pos % kPositions)][size_t(r.layer)])
        << "layer " << r.layer << ", position " << r.pos;
    covered.insert({r.pos, r.layer});
  }
  EXPECT_EQ(covered.size(), recorder.seen.size());
  for (int l = 0; l < c.n_layer; ++l) {
    std::set<int32_t> prompt;
    for (int p = 0; p < 5; ++p) prompt.insert(expected_[size_t(p)][size_t(l)].begin(), expected_[size_t(p)][size_t(l)].end());
    distinct += prompt.size() + uint64_t(13 * c.n_expert_used);
  }
  // The streamer was asked for exactly those experts.
  EXPECT_EQ(tiering.stats().experts.needed, distinct);

  // The same override with every expert resident computes the same logits, bit for bit...
  tier::Tiering resident(*model_, options(uint64_t(1) << 40));
  ASSERT_FALSE(resident.streaming());
  ASSERT_NE(resident.expert_source(), nullptr);  // the override alone
  const std::vector<float> in_memory = run(resident.expert_source(), nullptr);
  ASSERT_EQ(streamed.size(), in_memory.size());
  EXPECT_EQ(0, std::memcmp(streamed.data(), in_memory.data(), streamed.size() * sizeof(float)));
  // ... and not those of the model's own routing.
  const std::vector<float> own = run(nullptr, nullptr);
  ASSERT_EQ(own.size(), streamed.size());
  EXPECT_NE(0, std::memcmp(own.data(), streamed.data(), own.size() * sizeof(float)));
}

TEST_F(RoutingOverrideTest, ATraceOfAnotherShapeOrWithGapsIsRefused) {
  const ModelConfig& c = model_->config();
  auto refused = [&](const std::string& body, const std::string& says) {
    const fs::path bad = trace_.string() + ".bad";
    std::ofstream(bad) << body;
    try {
      tier::RoutingOverride o(bad.string(), c);
      ADD_FAILURE() << "accepted: " << body;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(bad.string()), std::string::npos) << e.what();
    }
    fs::remove(bad);
  };
  const std::string head = "strata-routing-trace 1\nmodel m\n";
  const std::string shape = "n_layer " + std::to_string(c.n_layer) + " n_expert " + std::to_string(c.n_expert) +
                            " n_expert_used " + std::to_string(c.n_expert_used) + "\n";
  refused(head + "n_layer 32 n_expert 8 n_expert_used 2\n", "a trace of 32 layers x 8 experts, top-2");
  refused(head + shape + "r 0 0 1 2 3 4\n", "position 0 has no routing for layer 1");
  refused(head + shape + "r 0 0 1 1 3 4\n", "expert 1 twice");
  refused(head + shape + "r 0 0 1 2 3 99\n", "expert 99 outside");
  refused("hello\n", "not a routing trace");
}

}  // namespace
}  // namespace strata
