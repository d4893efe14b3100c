// The planner's units come from the tensor catalogue: a MoE model's dense parts (here qwen2moe's
// shared experts) are units like any dense FFN matrix, so a small budget streams them by plan
// (no --stream-ffn), and the logits stay bit-identical to a resident run.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "model/catalogue.h"
#include "runtime/session.h"
#include "support/forge.h"
#include "support/logits.h"
#include "support/paths.h"
#include "tier/plan/plan.h"
#include "tier/tiering.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

std::vector<float> run(const Model& model, FfnSource* ffn, ExpertSource* experts) {
  return test::run_logits(model, ffn, experts);
}

TEST(PlanUnits, SharedExpertsStreamByPlan) {
  const std::string tokenizer = test::model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
  if (!fs::exists(tokenizer)) GTEST_SKIP() << "SmolLM2 (the forge's tokenizer source) is not fetched";
  const fs::path dir = fs::path(test::models_dir()).parent_path() / ("plan_units_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  struct Cleanup {
    fs::path dir;
    ~Cleanup() { fs::remove_all(dir); }
  } cleanup{dir};
  const std::string path = (dir / "qwen2moe.gguf").string();
  ASSERT_TRUE(
      test::forge({"--arch", "qwen2moe", "--preset", "tiny", "--type", "Q8_0", "--seed", "12"}, tokenizer, path));
  auto model = Model::load(path);
  const ModelConfig& c = model->config();
  ASSERT_TRUE(c.has_shared_expert);

  tier::PlanInputs in;
  in.budget_bytes = uint64_t(1) << 40;
  in.n_ctx = 64;
  in.n_threads = 2;
  const tier::Plan full = tier::make_plan(model->file(), c, in);
  // Three shared-expert matrices per layer are units, named by the catalogue's parts.
  int shexp_units = 0;
  for (const tier::PlanUnit& u : full.units)
    if (u.kind == tier::UnitKind::dense_ffn) {
      EXPECT_GE(u.part, int(FfnPart::shexp_gate));
      ++shexp_units;
    }
  EXPECT_EQ(shexp_units, 3 * c.n_layer);

  // The smallest budget: everything that can stream does.
  tier::TieringOptions t;
  t.n_ctx = in.n_ctx;
  t.n_threads = in.n_threads;
  t.ram_gbps = 30;
  t.ssd_gbps = 1.7;
  t.persist_routing = false;
  t.budget_bytes = full.minimum_bytes;
  tier::Tiering tiering(*model, t);
  const tier::Plan& plan = tiering.plan();
  EXPECT_EQ(plan.n_dense_resident, 0);
  ASSERT_NE(tiering.ffn_source(), nullptr);
  ASSERT_NE(tiering.expert_source(), nullptr);
  int streamed = 0;
  for (const tier::TensorPlacement& tp : plan.tensors)
    if (tp.name.find("_shexp.weight") != std::string::npos && tp.role == TensorRole::dense_ffn) {
      EXPECT_EQ(tp.placement, tier::Placement::streamed) << tp.name;
      ++streamed;
    }
  EXPECT_EQ(streamed, 3 * c.n_layer);

  const std::vector<float> resident = run(*model, nullptr, nullptr);
  const std::vector<float> streamed_logits = run(*model, tiering.ffn_source(), tiering.expert_source());
  ASSERT_EQ(streamed_logits.size(), resident.size());
  EXPECT_EQ(0, std::memcmp(streamed_logits.data(), resident.data(), resident.size() * sizeof(float)));
  const tier::TierStats s = tiering.stats();
  EXPECT_TRUE(s.has_dense);
  EXPECT_GT(s.dense.matrices_used, 0u);
  EXPECT_GT(s.dense.bytes_read, 0u);
}

}  // namespace
}  // namespace strata
