// Real models at positions beyond 4,096 against llama.cpp, with an f16 and a q8_0 KV cache
// (fixture from scripts/gen_long_context_fixtures.py): a prompt of 4,100 tokens of real text in
// batches, then tokens one at a time, so both the prompt and the generation attention run over a
// long context (and Gemma 3's sliding-window layers over a ring far past their window). As in
// reference_test.cpp, the logits are compared relative to the top candidate and the top-1 token
// wherever llama.cpp's choice is decisive.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/model.h"
#include "ops/attention.h"
#include "runtime/session.h"
#include "support/paths.h"

namespace strata {
namespace {

using nlohmann::json;

constexpr float kNoise = 0.5f;
constexpr float kRelativeTolerance = 1.5f;

json load_fixture() {
  std::ifstream in(test::fixtures_dir() + "/models/long_context.json");
  return in ? json::parse(in) : json();
}

class LongContextTest : public ::testing::TestWithParam<int> {};

TEST_P(LongContextTest, LogitsMatchLlamaCppBeyond4096) {
  const json fixture = load_fixture();
  ASSERT_FALSE(fixture.is_null()) << "missing fixture models/long_context.json";
  const json& c = fixture["cases"][size_t(GetParam())];
  const std::string path = test::model_path(c["model"].get<std::string>());
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "model not fetched: " << path << " (run make models)";
  const auto model = Model::load(path);
  SessionParams sp;
  sp.n_ctx = fixture["n_ctx"].get<int>();
  sp.kv_type = ops::parse_kv_type(c["kv_type"].get<std::string>());
  Session s(*model, sp);
  const auto tokens = c["tokens"].get<std::vector<int32_t>>();
  const int n_prompt = c["n_prompt"].get<int>();
  const int n_vocab = model->config().n_vocab;
  const float* logits = s.eval(std::vector<int32_t>(tokens.begin(), tokens.begin() + n_prompt));
  float worst = 0.0f;
  int decisive = 0;
  const json& positions = c["positions"];
  for (size_t i = 0; i < positions.size(); ++i) {
    const auto ref_ids = positions[i]["top_ids"].get<std::vector<int32_t>>();
    const auto ref_vals = positions[i]["top_logits"].get<std::vector<float>>();
    const int ours = int(std::max_element(logits, logits + n_vocab) - logits);
    const std::string where = c["name"].get<std::string>() + " " + c["kv_type"].get<std::string>() + " position " +
                              std::to_string(n_prompt + int(i) - 1);
    if (positions[i]["margin"].get<float>() > kNoise) {
      ++decisive;
      EXPECT_EQ(ours, ref_ids[0]) << where;
    }
    for (size_t k = 0; k < ref_ids.size(); ++k)
      worst = std::max(worst, std::fabs((logits[ref_ids[k]] - logits[ref_ids[0]]) - (ref_vals[k] - ref_vals[0])));
    if (i + 1 < positions.size()) logits = s.eval({tokens[size_t(n_prompt) + i]});
  }
  std::printf("[ %s %s ] positions %d..%d: %d decisive, max relative logit diff %.3f\n",
              c["name"].get<std::string>().c_str(), c["kv_type"].get<std::string>().c_str(), n_prompt - 1,
              n_prompt + int(positions.size()) - 2, decisive, worst);
  EXPECT_LT(worst, kRelativeTolerance);
}

INSTANTIATE_TEST_SUITE_P(RealModels, LongContextTest, ::testing::Values(0, 1, 2, 3));

}  // namespace
}  // namespace strata
