// Generation past a full context (GenerateParams::context_shift): it goes on, keeps the first
// n_keep tokens, drops half of the rest, and continues exactly as a run that never overflowed
// does over the same tokens (the moved tokens are evaluated again at their new positions). On
// the real models, a global-attention one (SmolLM2) and one with sliding-window rings (Gemma 3).
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"
#include "runtime/generate.h"
#include "runtime/session.h"
#include "support/paths.h"
#include "tokenizer/tokenizer.h"

namespace strata {
namespace {

constexpr int kContext = 32;

class ContextShiftTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string path = test::model_path(GetParam());
    if (!std::filesystem::exists(path)) GTEST_SKIP() << "model not fetched: " << path;
    model_ = Model::load(path);
    tok_ = Tokenizer::from_gguf(model_->file());
  }
  std::unique_ptr<Session> session(int n_ctx) const {
    SessionParams sp;
    sp.n_ctx = n_ctx;
    sp.n_threads = 2;
    return std::make_unique<Session>(*model_, sp);
  }
  static GenerateParams greedy(int n_predict, bool shift) {
    GenerateParams p;
    p.n_predict = n_predict;
    p.sampling.temperature = 0;
    p.context_shift = shift;
    p.n_keep = 4;
    return p;
  }
  std::vector<Token> prompt() const { return tok_->encode("1, 2, 3,", true, false); }

  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tok_;
};

TEST_P(ContextShiftTest, GenerationGoesOnPastTheContext) {
  const auto none = [](const std::string&) { return true; };
  auto full = session(kContext);
  const GenerateResult stopped = generate(*full, *tok_, prompt(), greedy(3 * kContext, false), none);
  EXPECT_EQ(stopped.done_reason, "length");
  EXPECT_EQ(stopped.n_shifts, 0);
  EXPECT_LT(stopped.n_generated, kContext);

  auto shifting = session(kContext);
  const GenerateResult r = generate(*shifting, *tok_, prompt(), greedy(3 * kContext, true), none);
  EXPECT_EQ(r.n_generated, 3 * kContext) << r.text;  // counting never ends by itself
  EXPECT_EQ(r.done_reason, "length");
  EXPECT_GE(r.n_shifts, 5);
  EXPECT_LT(shifting->n_past(), kContext);
  // Up to the first shift, both runs are the same.
  ASSERT_GE(r.tokens.size(), stopped.tokens.size());
  EXPECT_EQ(std::vector<Token>(r.tokens.begin(), r.tokens.begin() + long(stopped.tokens.size())), stopped.tokens);
}

TEST_P(ContextShiftTest, AfterAShiftGenerationIsAFreshRunOverTheKeptTokens) {
  const std::vector<Token> p = prompt();
  // The first shift comes with the token sampled when the context holds kContext - 1 (that token
  // is the kContext-th); it keeps 4 + 14 tokens, so 12 more are generated before the next one.
  const size_t first_shift = size_t(kContext) - p.size();
  const int n_after = 12;
  auto shifting = session(kContext);
  const GenerateResult r =
      generate(*shifting, *tok_, p, greedy(int(first_shift) + n_after, true), [](const std::string&) { return true; });
  ASSERT_EQ(r.n_shifts, 1);
  ASSERT_EQ(r.tokens.size(), first_shift + n_after);

  // What the shift kept: the first 4 tokens, then the last half of the 28 after them.
  std::vector<Token> all = p;
  all.insert(all.end(), r.tokens.begin(), r.tokens.begin() + long(first_shift));
  ASSERT_EQ(all.size(), size_t(kContext));
  std::vector<Token> kept(all.begin(), all.begin() + 4);
  kept.insert(kept.end(), all.begin() + 4 + (kContext - 4) / 2, all.end());
  const std::vector<Token>& history = shifting->history();
  ASSERT_GE(history.size(), kept.size());
  EXPECT_EQ(std::vector<Token>(history.begin(), history.begin() + long(kept.size())), kept);

  // A run with room enough, given those tokens as its prompt, generates what followed the shift.
  auto roomy = session(4 * kContext);
  const GenerateResult fresh =
      generate(*roomy, *tok_, kept, greedy(n_after, false), [](const std::string&) { return true; });
  EXPECT_EQ(fresh.n_shifts, 0);
  EXPECT_EQ(fresh.tokens, std::vector<Token>(r.tokens.begin() + long(first_shift), r.tokens.end()))
      << "after the shift: " << tok_->decode(std::vector<Token>(r.tokens.begin() + long(first_shift), r.tokens.end()))
      << "\nfresh: " << fresh.text;
}

INSTANTIATE_TEST_SUITE_P(RealModels, ContextShiftTest,
                         ::testing::Values("SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"));

}  // namespace
}  // namespace strata
