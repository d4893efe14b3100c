// A MoE model's dense parts stream like any dense FFN: a forged qwen2moe (shared expert and its
// gate beside the routed experts) with its shared experts read from the file piece by piece,
// and its routed experts from the expert cache, gives logits bit-identical to a resident run.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "runtime/session.h"
#include "support/forge.h"
#include "support/logits.h"
#include "support/paths.h"
#include "tier/stream/dense_ffn_streamer.h"
#include "tier/stream/expert_streamer.h"
#include "tier/tiering.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

class SharedExpertStreamTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string tokenizer = test::model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    if (!fs::exists(tokenizer)) return;
    // On the real filesystem next to the model cache: O_DIRECT does not work on tmpfs.
    dir_ = fs::path(test::models_dir()).parent_path() / ("shexp_stream_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    path_ = (dir_ / "qwen2moe-small.gguf").string();
    ok_ = test::forge({"--arch", "qwen2moe", "--preset", "small", "--type", "Q8_0", "--seed", "11"}, tokenizer, path_);
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  void SetUp() override {
    if (dir_.empty()) GTEST_SKIP() << "SmolLM2 (the forge's tokenizer source) is not fetched";
    ASSERT_TRUE(ok_) << "forging the test model failed (" << test::strata_bin() << ")";
  }

  // Logits of a prompt (all positions) and of 4 more tokens evaluated one at a time.
  static std::vector<float> run(const Model& model, FfnSource* ffn, ExpertSource* experts) {
    return test::run_logits(model, ffn, experts);
  }

  static inline fs::path dir_;
  static inline std::string path_;
  static inline bool ok_ = false;
};

TEST_F(SharedExpertStreamTest, ForgedModelHasTheQwen2MoeLayout) {
  auto model = Model::load(path_);
  const ModelConfig& c = model->config();
  EXPECT_EQ(c.arch, Arch::qwen2moe);
  EXPECT_TRUE(c.has_shared_expert);
  EXPECT_FALSE(c.expert_weights_norm);
  ASSERT_GT(c.n_expert, 0);
  const LayerWeights& L = model->weights().layers[0];
  EXPECT_FALSE(L.shexp_gate_inp.empty());
  EXPECT_EQ(L.w_gate_shexp.n_rows, c.n_ff_shexp);
  EXPECT_EQ(L.w_down_shexp.n_cols, c.n_ff_shexp);
  EXPECT_TRUE(L.w_gate.empty());  // no dense FFN in a MoE layer
}

TEST_F(SharedExpertStreamTest, StreamedSharedExpertsAreBitIdentical) {
  auto model = Model::load(path_);
  const ModelConfig& c = model->config();
  const std::vector<float> resident = run(*model, nullptr, nullptr);
  std::vector<int> all;
  for (int l = 0; l < c.n_layer; ++l) all.push_back(l);
  const auto matrices = tier::DenseFfnStreamer::whole_layers(c, all);
  ASSERT_EQ(matrices.size(), size_t(3 * c.n_layer));
  // A ring of a few small pieces: each shared-expert matrix arrives in several.
  tier::DenseFfnStreamer dense(*model, matrices, size_t(200) << 10, size_t(48) << 10);
  EXPECT_TRUE(dense.streams(0, FfnPart::shexp_up));
  EXPECT_FALSE(dense.streams(0, FfnPart::up));
  {
    const std::vector<float> streamed = run(*model, &dense, nullptr);
    ASSERT_EQ(streamed.size(), resident.size());
    EXPECT_EQ(0, std::memcmp(streamed.data(), resident.data(), resident.size() * sizeof(float)));
    const tier::StreamStats st = dense.stats();
    EXPECT_EQ(st.matrices_used, uint64_t(5 * 3 * c.n_layer));  // a prompt batch and 4 tokens
    EXPECT_GT(st.pieces_used, st.matrices_used);
  }
  // Shared experts and routed experts streamed together.
  tier::ExpertStreamerOptions o;
  o.n_pool_slots = 1;
  tier::ExpertStreamer experts(*model, o);
  const std::vector<float> both = run(*model, &dense, &experts);
  EXPECT_EQ(0, std::memcmp(both.data(), resident.data(), resident.size() * sizeof(float)));
  EXPECT_GT(experts.stats().bytes_read, 0u);
}

TEST_F(SharedExpertStreamTest, TieringUnderASmallBudgetStreamsTheSharedExperts) {
  auto model = Model::load(path_);
  const ModelConfig& c = model->config();
  const std::vector<float> resident = run(*model, nullptr, nullptr);
  tier::TieringOptions t;
  t.n_ctx = 64;
  t.ram_gbps = 30;  // the plan must not depend on how fast this machine's disk is today
  t.ssd_gbps = 1.7;
  t.persist_routing = false;
  t.stream_ffn = c.n_layer;  // every layer's dense part: here the shared experts
  tier::PlanInputs in;
  in.budget_bytes = uint64_t(1) << 40;
  in.n_ctx = t.n_ctx;
  const tier::Plan full = tier::make_plan(model->file(), c, in);
  t.budget_bytes = full.minimum_bytes + (full.used_bytes - full.minimum_bytes) / 2;
  tier::Tiering tiering(*model, t);
  ASSERT_TRUE(tiering.streaming());
  ASSERT_NE(tiering.ffn_source(), nullptr);
  ASSERT_NE(tiering.expert_source(), nullptr);
  const std::vector<float> streamed = run(*model, tiering.ffn_source(), tiering.expert_source());
  ASSERT_EQ(streamed.size(), resident.size());
  EXPECT_EQ(0, std::memcmp(streamed.data(), resident.data(), resident.size() * sizeof(float)));
  const tier::TierStats s = tiering.stats();
  EXPECT_TRUE(s.has_dense);
  EXPECT_TRUE(s.has_experts);
  EXPECT_EQ(s.dense.matrices_used, uint64_t(5 * 3 * c.n_layer));
  EXPECT_GT(s.dense.bytes_read, 0u);
}

}  // namespace
}  // namespace strata
