// Dense FFN streaming changes where bytes live, never the math: logits with FFN matrices read
// from the file piece by piece through a small ring are bit-identical to a fully resident run.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "runtime/session.h"
#include "support/file_change.h"
#include "support/forge.h"
#include "support/logits.h"
#include "support/paths.h"
#include "tier/stream/dense_ffn_streamer.h"
#include "tier/tiering.h"
#include "util/error.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

class DenseStreamTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string tokenizer = test::model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    if (!fs::exists(tokenizer)) return;
    // On the real filesystem next to the model cache: O_DIRECT does not work on tmpfs.
    dir_ = fs::path(test::models_dir()).parent_path() / ("stream_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    dense_ = (dir_ / "llama-small.gguf").string();
    moe_ = (dir_ / "llama-moe.gguf").string();
    ok_ = test::forge({"--arch", "llama", "--preset", "small", "--type", "Q4_K_M", "--seed", "3"}, tokenizer, dense_) &&
          test::forge({"--arch", "llama", "--preset", "tiny-moe", "--type", "Q8_0", "--seed", "3"}, tokenizer, moe_);
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  void SetUp() override {
    if (dir_.empty()) GTEST_SKIP() << "SmolLM2 (the forge's tokenizer source) is not fetched";
    ASSERT_TRUE(ok_) << "forging the test models failed (" << test::strata_bin() << ")";
  }

  // Logits of a prompt (all positions) and of 4 more tokens evaluated one at a time.
  static std::vector<float> run(const Model& model, FfnSource* source) {
    return test::run_logits(model, source, nullptr, {.single_step = 1});
  }

  static inline fs::path dir_;
  static inline std::string dense_, moe_;
  static inline bool ok_ = false;
};

TEST_F(DenseStreamTest, AllLayersStreamedIsBitIdentical) {
  auto model = Model::load(dense_);
  const std::vector<float> resident = run(*model, nullptr);
  std::vector<int> all;
  for (int l = 0; l < model->config().n_layer; ++l) all.push_back(l);
  const auto matrices = tier::DenseFfnStreamer::whole_layers(all);
  // {ring, piece}: the default; the smallest ring (two pieces); many small pieces that wrap the
  // ring within one matrix.
  const std::pair<size_t, size_t> shapes[] = {
      {tier::DenseFfnStreamer::kDefaultRingBytes, tier::DenseFfnStreamer::kDefaultPieceBytes},
      {0, tier::DenseFfnStreamer::kDefaultPieceBytes},
      {size_t(200) << 10, size_t(48) << 10}};
  for (auto [ring, piece] : shapes) {
    tier::DenseFfnStreamer streamer(*model, matrices, ring, piece);
    const std::vector<float> streamed = run(*model, &streamer);
    ASSERT_EQ(streamed.size(), resident.size());
    EXPECT_EQ(0, std::memcmp(streamed.data(), resident.data(), resident.size() * sizeof(float)))
        << "ring " << ring << ", piece " << piece;
    const tier::StreamStats st = streamer.stats();
    // One prompt batch + 4 tokens, each needing every matrix once.
    EXPECT_EQ(st.matrices_used, uint64_t(5 * 3 * model->config().n_layer));
    EXPECT_GE(st.pieces_used, st.matrices_used);
    EXPECT_EQ(st.pieces_used % 5, 0u);
    EXPECT_GE(st.pieces_read, st.pieces_used);
    EXPECT_GT(st.bytes_read, 0u);
    EXPECT_GT(streamer.pool_bytes(), 0u);
    if (piece < tier::DenseFfnStreamer::kDefaultPieceBytes) {
      EXPECT_GT(st.pieces_used, st.matrices_used);
    }
  }
}

TEST_F(DenseStreamTest, SomeMatricesStreamedIsBitIdentical) {
  auto model = Model::load(dense_);
  const std::vector<float> resident = run(*model, nullptr);
  // Resident and streamed matrices mixed within each layer.
  ASSERT_GE(model->config().n_layer, 2);
  const std::vector<tier::StreamedMatrix> some = {{0, FfnPart::up}, {1, FfnPart::gate}, {1, FfnPart::down}};
  tier::DenseFfnStreamer streamer(*model, some, size_t(1) << 20, size_t(64) << 10);
  EXPECT_FALSE(streamer.streams(0, FfnPart::gate));
  EXPECT_TRUE(streamer.streams(0, FfnPart::up));
  EXPECT_FALSE(streamer.streams(1, FfnPart::up));
  const std::vector<float> streamed = run(*model, &streamer);
  EXPECT_EQ(0, std::memcmp(streamed.data(), resident.data(), resident.size() * sizeof(float)));
}

TEST_F(DenseStreamTest, FileChangedUnderneathIsAnErrorAndStreamingRecovers) {
  const std::string copy = (dir_ / "changed.gguf").string();
  fs::copy_file(dense_, copy, fs::copy_options::overwrite_existing);
  auto model = Model::load(copy);
  const std::vector<float> resident = run(*model, nullptr);
  tier::DenseFfnStreamer streamer(*model, tier::DenseFfnStreamer::whole_layers({0, 1}), size_t(1) << 20,
                                  size_t(64) << 10);
  struct stat before {};
  ASSERT_NO_FATAL_FAILURE(test::mark_rewritten(copy, &before));
  test::expect_changed_file_error(*model, &streamer, nullptr);
  // Put the time back: the same streamer, cut off mid-pass, streams correctly again.
  const struct timespec restored[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, copy.c_str(), restored, 0), 0);
  const std::vector<float> streamed = run(*model, &streamer);
  EXPECT_EQ(0, std::memcmp(streamed.data(), resident.data(), resident.size() * sizeof(float)));
}

// The planner, the streamer and the resident copy together: under a budget short of half the
// FFN matrices, FFN matrices stream, the resident weights move into anonymous memory, and
// the logits do not change; nor do they once the tiering is gone and the mapping is back.
TEST_F(DenseStreamTest, TieringUnderABudgetIsBitIdentical) {
  auto model = Model::load(dense_);
  const std::vector<float> resident = run(*model, nullptr);
  tier::TieringOptions t;
  t.n_ctx = 64;
  t.ram_gbps = 30;  // the plan must not depend on how fast this machine's disk is today
  t.ssd_gbps = 1.7;
  t.n_threads = 2;  // the attention scratch is per thread: both plans count the same threads
  tier::PlanInputs in;
  in.budget_bytes = uint64_t(1) << 40;
  in.n_ctx = t.n_ctx;
  in.n_threads = t.n_threads;
  const tier::Plan full = tier::make_plan(model->file(), model->config(), in);
  t.budget_bytes = full.used_bytes - (full.resident_weight_bytes - full.mandatory_bytes) / 2;
  {
    tier::Tiering tiering(*model, t);
    ASSERT_TRUE(tiering.streaming());
    ASSERT_NE(tiering.ffn_source(), nullptr);
    EXPECT_LT(tiering.plan().n_dense_resident, tiering.plan().n_dense_units);
    EXPECT_LE(tiering.plan().used_bytes, t.budget_bytes);
    const std::vector<float> streamed = run(*model, tiering.ffn_source());
    EXPECT_EQ(0, std::memcmp(streamed.data(), resident.data(), resident.size() * sizeof(float)));
    const tier::TierStats s = tiering.stats();
    EXPECT_TRUE(s.has_dense);
    EXPECT_GT(s.dense.bytes_read, 0u);
    // The resident set, page-rounded, is in anonymous memory.
    EXPECT_GE(s.resident_copy_bytes, tiering.plan().resident_weight_bytes / 2);
    EXPECT_LE(s.resident_copy_bytes, tiering.plan().resident_weight_bytes + 8192 * model->file().tensors().size());
  }
  const std::vector<float> after = run(*model, nullptr);
  EXPECT_EQ(0, std::memcmp(after.data(), resident.data(), resident.size() * sizeof(float)));
}

TEST_F(DenseStreamTest, MixtureOfExpertsModelIsRefused) {
  auto model = Model::load(moe_);
  EXPECT_THROW(tier::DenseFfnStreamer(*model, tier::DenseFfnStreamer::whole_layers({0})), Error);
}

TEST_F(DenseStreamTest, UnknownLayerIsRefused) {
  auto model = Model::load(dense_);
  EXPECT_THROW(tier::DenseFfnStreamer(*model, tier::DenseFfnStreamer::whole_layers({model->config().n_layer})), Error);
}

}  // namespace
}  // namespace strata
