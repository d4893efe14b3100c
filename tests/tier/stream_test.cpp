// Dense FFN streaming changes where bytes live, never the math: logits with FFN blocks read from
// the file through a small pool are bit-identical to a fully resident run.
#include <gtest/gtest.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "runtime/session.h"
#include "support/forge.h"
#include "support/paths.h"
#include "tier/stream/dense_ffn_streamer.h"
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
    SessionParams sp;
    sp.n_ctx = 64;
    sp.n_threads = 2;
    Session s(model, sp);
    s.set_ffn_source(source);
    std::vector<int32_t> prompt;
    for (int i = 0; i < 12; ++i) prompt.push_back(100 + 37 * i);
    std::vector<float> out = s.eval_all_logits(prompt);
    const int n_vocab = model.config().n_vocab;
    for (int i = 0; i < 4; ++i) {
      const float* l = s.eval({int32_t(500 + i)});
      out.insert(out.end(), l, l + n_vocab);
    }
    return out;
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
  for (int depth : {1, 2}) {
    tier::DenseFfnStreamer streamer(*model, all, depth);
    const std::vector<float> streamed = run(*model, &streamer);
    ASSERT_EQ(streamed.size(), resident.size());
    EXPECT_EQ(0, std::memcmp(streamed.data(), resident.data(), resident.size() * sizeof(float))) << "depth " << depth;
    const tier::StreamStats st = streamer.stats();
    // One prompt batch + 4 tokens, each needing every layer's FFN once.
    EXPECT_EQ(st.acquires, uint64_t(5 * model->config().n_layer));
    EXPECT_GE(st.layer_loads, st.acquires - st.ready_hits);
    EXPECT_GT(st.bytes_read, 0u);
    EXPECT_EQ(streamer.pool_bytes() > 0, true);
  }
}

TEST_F(DenseStreamTest, SomeLayersStreamedIsBitIdentical) {
  auto model = Model::load(dense_);
  const std::vector<float> resident = run(*model, nullptr);
  std::vector<int> odd;
  for (int l = 1; l < model->config().n_layer; l += 2) odd.push_back(l);
  tier::DenseFfnStreamer streamer(*model, odd, 1);
  EXPECT_FALSE(streamer.streams(0));
  const std::vector<float> streamed = run(*model, &streamer);
  EXPECT_EQ(0, std::memcmp(streamed.data(), resident.data(), resident.size() * sizeof(float)));
}

TEST_F(DenseStreamTest, FileChangedUnderneathIsAnError) {
  const std::string copy = (dir_ / "changed.gguf").string();
  fs::copy_file(dense_, copy, fs::copy_options::overwrite_existing);
  auto model = Model::load(copy);
  tier::DenseFfnStreamer streamer(*model, {0}, 1);
  // Another program rewrites the file: its modification time moves.
  struct timeval times[2] = {{1, 0}, {1, 0}};
  ASSERT_EQ(::utimes(copy.c_str(), times), 0);
  SessionParams sp;
  sp.n_ctx = 16;
  Session s(*model, sp);
  s.set_ffn_source(&streamer);
  try {
    s.eval({1, 2, 3});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("changed"), std::string::npos) << e.what();
  }
}

TEST_F(DenseStreamTest, MixtureOfExpertsModelIsRefused) {
  auto model = Model::load(moe_);
  EXPECT_THROW(tier::DenseFfnStreamer(*model, {0}, 1), Error);
}

TEST_F(DenseStreamTest, UnknownLayerIsRefused) {
  auto model = Model::load(dense_);
  EXPECT_THROW(tier::DenseFfnStreamer(*model, {model->config().n_layer}, 1), Error);
}

}  // namespace
}  // namespace strata
