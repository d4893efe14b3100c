// A hybrid model's recurrent state in a session (forged tiny qwen35moe): a new conversation starts
// from a zero state, a prompt prefix is resumed from the checkpoint at the end of the prompt batch,
// any other cut-back starts over, and token-at-a-time decode carries the state as a batch does.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <vector>

#include "model/model.h"
#include "runtime/session.h"
#include "support/forge.h"
#include "support/paths.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

class RecurrentSessionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string tokenizer = test::model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    if (!fs::exists(tokenizer)) return;
    dir_ = fs::temp_directory_path() / ("strata_recurrent_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    const std::string path = (dir_ / "qwen35moe.gguf").string();
    if (!test::forge({"--arch", "qwen35moe", "--preset", "tiny", "--type", "F16", "--seed", "3"}, tokenizer, path))
      return;
    model_ = Model::load(path).release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  void SetUp() override {
    if (!model_) GTEST_SKIP() << "SmolLM2 (the forge's tokenizer source) is not fetched, or forging failed";
  }

  static Session session() {
    SessionParams sp;
    sp.n_ctx = 256;
    sp.n_threads = 2;
    return Session(*model_, sp);
  }
  static std::vector<float> copy(const float* logits) {
    return std::vector<float>(logits, logits + model_->config().n_vocab);
  }
  static std::vector<int32_t> prompt(int n, int salt = 0) {
    std::vector<int32_t> p;
    for (int i = 0; i < n; ++i) p.push_back(20 + (37 * i + 11 * salt) % 250);
    return p;
  }

  static inline fs::path dir_;
  static inline Model* model_ = nullptr;
};

TEST_F(RecurrentSessionTest, TheModelIsHybrid) {
  const ModelConfig& c = model_->config();
  EXPECT_EQ(c.arch, Arch::qwen35moe);
  EXPECT_EQ(c.layer_recurrent, (std::vector<bool>{true, false, true, false}));
  EXPECT_TRUE(c.has_attn_output_gate && c.has_shared_expert);
  EXPECT_EQ(c.n_rot, 8);
}

TEST_F(RecurrentSessionTest, ANewConversationStartsFromAZeroState) {
  Session s = session();
  const auto p = prompt(12);
  const auto first = copy(s.eval(p));
  s.eval(prompt(5, 1));
  s.eval({77});
  s.truncate(0);
  EXPECT_EQ(s.n_past(), 0);
  EXPECT_EQ(copy(s.eval(p)), first);  // bit for bit: nothing of the earlier tokens is left
  Session fresh = session();
  EXPECT_EQ(copy(fresh.eval(p)), first);
}

TEST_F(RecurrentSessionTest, APromptPrefixResumesFromTheCheckpoint) {
  Session s = session();
  const auto p = prompt(12);
  s.eval(p);  // a prompt batch: checkpointed at 12
  s.eval({101});
  const auto after = copy(s.eval({102}));
  s.truncate(12);  // as the server does for a request that shares the prompt
  EXPECT_EQ(s.n_past(), 12);
  s.eval({101});
  EXPECT_EQ(copy(s.eval({102})), after);
  // The state stands at 14 now: keeping all of it is free.
  s.truncate(14);
  EXPECT_EQ(s.n_past(), 14);
}

TEST_F(RecurrentSessionTest, AnyOtherCutBackStartsOver) {
  Session s = session();
  const auto p = prompt(12);
  s.eval(p);
  s.eval({101});
  s.truncate(9);  // neither the state's position nor the checkpoint's
  EXPECT_EQ(s.n_past(), 0);
  s.truncate(0);
  const auto again = copy(s.eval(std::vector<int32_t>(p.begin(), p.begin() + 9)));
  Session fresh = session();
  EXPECT_EQ(copy(fresh.eval(std::vector<int32_t>(p.begin(), p.begin() + 9))), again);
}

TEST_F(RecurrentSessionTest, DecodeCarriesTheStateAsABatchDoes) {
  const auto p = prompt(16);
  Session batch = session();
  const std::vector<float> all = batch.eval_all_logits(p);
  Session decode = session();
  decode.eval(std::vector<int32_t>(p.begin(), p.begin() + 4));
  const size_t n_vocab = size_t(model_->config().n_vocab);
  float worst = 0, lo = INFINITY, hi = -INFINITY;
  for (size_t i = 4; i < p.size(); ++i) {
    const float* row = decode.eval({p[i]});
    for (size_t v = 0; v < n_vocab; ++v) {
      const float want = all[i * n_vocab + v];
      worst = std::max(worst, std::fabs(row[v] - want));
      lo = std::min(lo, want), hi = std::max(hi, want);
    }
  }
  // The batched and the single-token matmuls round differently; nothing else differs.
  EXPECT_LT(worst, 1e-3f * (hi - lo)) << "max |diff| " << worst << " over a logit range of " << hi - lo;
}

}  // namespace
}  // namespace strata
