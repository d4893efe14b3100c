// Re-solving the plan off the forward thread (tier/plan/replanner.h): the revision a worker
// thread hands over is the one revise() gives, it is handed over once, and the routing statistics
// snapshot reaches its file even when the replanner is destroyed right after the request.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "support/plan_table.h"
#include "tier/plan/plan.h"
#include "tier/plan/replanner.h"
#include "tier/stream/routing_stats.h"

namespace strata::tier {
namespace {

namespace fs = std::filesystem;

// 4 layers of 8 experts (3 x 1 MiB each) with attention and norms, as plan_test's tables.
std::vector<gguf::TensorInfo> moe_table(const ModelConfig& c) { return test::small_plan_table(c).tensors; }
ModelConfig moe_config() { return test::small_plan_config(4, 8, 2); }

class ReplannerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = moe_config();
    table_ = moe_table(config_);
    PlanInputs in;
    in.budget_bytes = 4ull << 30;
    in.n_ctx = 256;
    in.n_batch = 8;
    const Plan full = make_plan(table_, config_, in);
    // Room for the depth-2 pool and 8 pinned experts: the revision decides which 8.
    in.budget_bytes = full.mandatory_bytes + full.kv_bytes + full.scratch_bytes + 12 * full.expert_slot_bytes;
    base_ = make_plan(table_, config_, in);
    ASSERT_EQ(base_.n_expert_resident, 8);
    // Layer l routes its tokens to experts l and l + 4.
    for (int t = 0; t < 50; ++t)
      for (int l = 0; l < config_.n_layer; ++l) {
        const int32_t chosen[2] = {l, l + 4};
        routing_.record(l, chosen, 1);
      }
    path_ = (fs::temp_directory_path() / ("replan_test_" + std::to_string(::getpid()) + ".bin")).string();
  }
  void TearDown() override { fs::remove(path_); }

  ModelConfig config_;
  std::vector<gguf::TensorInfo> table_;
  Plan base_;
  RoutingStats routing_{4, 8, 2};
  std::string path_;
};

TEST_F(ReplannerTest, HandsOverTheRevisionOnce) {
  const Plan expected = revise(base_, routing_.frequencies());
  Replanner replanner;
  ASSERT_TRUE(replanner.submit(base_, routing_, path_));
  replanner.wait_idle();
  EXPECT_EQ(replanner.n_revisions(), 1u);
  std::optional<Plan> revised = replanner.take();
  ASSERT_TRUE(revised.has_value());
  EXPECT_FALSE(replanner.take().has_value());  // taken once
  ASSERT_EQ(revised->units.size(), expected.units.size());
  for (size_t i = 0; i < expected.units.size(); ++i) {
    const PlanUnit& u = revised->units[i];
    EXPECT_EQ(u.resident, expected.units[i].resident) << "layer " << u.layer << " expert " << u.expert;
    EXPECT_EQ(u.resident, u.expert == u.layer || u.expert == u.layer + 4)
        << "layer " << u.layer << " expert " << u.expert;
  }
  EXPECT_DOUBLE_EQ(revised->seconds_per_token, expected.seconds_per_token);
  // The snapshot is on disk.
  RoutingStats loaded(4, 8, 2);
  ASSERT_TRUE(loaded.load(path_));
  EXPECT_EQ(loaded.tokens_seen(), routing_.tokens_seen());
  // Idle again: the next request is taken.
  EXPECT_TRUE(replanner.submit(*revised, routing_, ""));
  replanner.wait_idle();
  EXPECT_TRUE(replanner.take().has_value());
}

TEST_F(ReplannerTest, DestructionFinishesTheRequestInFlight) {
  {
    Replanner replanner;
    ASSERT_TRUE(replanner.submit(base_, routing_, path_));
  }
  RoutingStats loaded(4, 8, 2);
  ASSERT_TRUE(loaded.load(path_));
  EXPECT_EQ(loaded.tokens_seen(), routing_.tokens_seen());
}

TEST_F(ReplannerTest, AFailedRevisionKeepsThePlan) {
  Plan broken = base_;
  broken.config.n_layer = 3;  // the counts no longer fit: revise throws on the worker
  Replanner replanner;
  ASSERT_TRUE(replanner.submit(broken, routing_, ""));
  replanner.wait_idle();
  EXPECT_FALSE(replanner.take().has_value());
  EXPECT_EQ(replanner.n_revisions(), 0u);
  EXPECT_TRUE(replanner.submit(base_, routing_, ""));  // and the replanner goes on
  replanner.wait_idle();
  EXPECT_TRUE(replanner.take().has_value());
}

}  // namespace
}  // namespace strata::tier
