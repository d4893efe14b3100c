#include "runtime/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "util/error.h"

namespace strata {
namespace {

SamplerParams plain() {
  SamplerParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = 1234;
  return p;
}

// Logits whose softmax is exactly `probs`.
std::vector<float> logits_of(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(p > 0 ? float(std::log(p)) : -INFINITY);
  return l;
}

std::map<int32_t, int> histogram(Sampler& s, const std::vector<float>& logits, int n_draws) {
  std::map<int32_t, int> h;
  for (int i = 0; i < n_draws; ++i) h[s.sample(logits.data(), int32_t(logits.size()))]++;
  return h;
}

TEST(Sampler, GreedyPicksArgmaxLowestIdOnTies) {
  SamplerParams p = plain();
  p.temperature = 0.0f;
  Sampler s(p);
  std::vector<float> logits = {0.1f, 3.0f, -1.0f, 3.0f, 2.9f};
  EXPECT_EQ(s.sample(logits.data(), 5), 1);
  p.temperature = -1.0f;
  Sampler s2(p);
  EXPECT_EQ(s2.sample(logits.data(), 5), 1);
}

TEST(Sampler, SameSeedSameTokens) {
  std::vector<float> logits(1000);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = float(std::sin(double(i) * 0.37) * 2.0);
  SamplerParams p = plain();
  p.top_k = 100;
  p.top_p = 0.9f;
  p.min_p = 0.01f;
  p.temperature = 0.9f;
  p.seed = 42;
  Sampler a(p), b(p);
  std::vector<int32_t> ta, tb;
  for (int i = 0; i < 200; ++i) {
    ta.push_back(a.sample(logits.data(), 1000));
    tb.push_back(b.sample(logits.data(), 1000));
  }
  EXPECT_EQ(ta, tb);
  // reset() replays the same stream.
  a.reset();
  std::vector<int32_t> tc;
  for (int i = 0; i < 200; ++i) tc.push_back(a.sample(logits.data(), 1000));
  EXPECT_EQ(ta, tc);
  // A different seed gives a different stream (the distribution is far from one-hot).
  p.seed = 43;
  Sampler c(p);
  std::vector<int32_t> td;
  for (int i = 0; i < 200; ++i) td.push_back(c.sample(logits.data(), 1000));
  EXPECT_NE(ta, td);
}

TEST(Sampler, RandomSeedIsDrawnAndReported) {
  SamplerParams p = plain();
  p.seed = 0xFFFFFFFFu;
  Sampler a(p);
  EXPECT_NE(a.seed(), 0xFFFFFFFFu);
  p.seed = 7;
  Sampler b(p);
  EXPECT_EQ(b.seed(), 7u);
}

TEST(Sampler, LogitsAreNotModified) {
  SamplerParams p = plain();
  p.repeat_penalty = 2.0f;
  p.top_k = 2;
  Sampler s(p);
  s.accept(0);
  std::vector<float> logits = {1.0f, 2.0f, 3.0f};
  const std::vector<float> copy = logits;
  s.sample(logits.data(), 3);
  EXPECT_EQ(logits, copy);
}

TEST(Sampler, FollowsTheDistribution) {
  Sampler s(plain());
  const auto logits = logits_of({0.5, 0.3, 0.2});
  const int n = 20000;
  auto h = histogram(s, logits, n);
  EXPECT_NEAR(h[0] / double(n), 0.5, 0.02);
  EXPECT_NEAR(h[1] / double(n), 0.3, 0.02);
  EXPECT_NEAR(h[2] / double(n), 0.2, 0.02);
}

TEST(Sampler, TopKKeepsOnlyTheKMostLikely) {
  SamplerParams p = plain();
  p.top_k = 2;
  Sampler s(p);
  const auto logits = logits_of({0.1, 0.4, 0.2, 0.3});
  auto h = histogram(s, logits, 5000);
  EXPECT_EQ(h.count(0), 0u);
  EXPECT_EQ(h.count(2), 0u);
  // Renormalised: 0.4 / 0.7 and 0.3 / 0.7.
  EXPECT_NEAR(h[1] / 5000.0, 4.0 / 7.0, 0.03);
  p.top_k = 1;
  Sampler one(p);
  auto h1 = histogram(one, logits, 100);
  EXPECT_EQ(h1[1], 100);
}

TEST(Sampler, TopPKeepsTheSmallestPrefixReachingP) {
  SamplerParams p = plain();
  p.top_p = 0.75f;  // 0.5 + 0.3 reaches it: tokens 2 and 0
  Sampler s(p);
  const auto logits = logits_of({0.3, 0.15, 0.5, 0.05});
  auto h = histogram(s, logits, 5000);
  EXPECT_EQ(h.count(1), 0u);
  EXPECT_EQ(h.count(3), 0u);
  EXPECT_GT(h[2], 0);
  EXPECT_GT(h[0], 0);
  // A tiny top_p still keeps one token.
  p.top_p = 0.01f;
  Sampler t(p);
  auto h2 = histogram(t, logits, 100);
  EXPECT_EQ(h2[2], 100);
}

TEST(Sampler, MinPDropsTokensBelowAFractionOfTheBest) {
  SamplerParams p = plain();
  p.min_p = 0.5f;  // threshold 0.5 * 0.4 = 0.2: keeps 0.4, 0.3 and 0.2
  Sampler s(p);
  const auto logits = logits_of({0.4, 0.1, 0.3, 0.2 - 1e-6, 1e-6 + 0.0});
  auto h = histogram(s, logits, 5000);
  EXPECT_GT(h[0], 0);
  EXPECT_GT(h[2], 0);
  EXPECT_EQ(h.count(1), 0u);
  EXPECT_EQ(h.count(3), 0u);  // just below the threshold
  EXPECT_EQ(h.count(4), 0u);
}

TEST(Sampler, TemperatureSharpensAndFlattens) {
  const auto logits = logits_of({0.6, 0.4});
  SamplerParams p = plain();
  p.temperature = 0.25f;  // p ∝ 0.6^4 : 0.4^4 = 0.835 : 0.165
  Sampler cold(p);
  auto hc = histogram(cold, logits, 20000);
  EXPECT_NEAR(hc[0] / 20000.0, 0.6 * 0.6 * 0.6 * 0.6 / (0.6 * 0.6 * 0.6 * 0.6 + 0.4 * 0.4 * 0.4 * 0.4), 0.02);
  p.temperature = 100.0f;  // nearly uniform
  Sampler hot(p);
  auto hh = histogram(hot, logits, 20000);
  EXPECT_NEAR(hh[0] / 20000.0, 0.5, 0.02);
}

TEST(Sampler, FiltersApplyBeforeTemperature) {
  // top-p sees the untempered distribution: a high temperature must not bring token 1 back.
  SamplerParams p = plain();
  p.top_p = 0.5f;
  p.temperature = 50.0f;
  Sampler s(p);
  const auto logits = logits_of({0.7, 0.3});
  auto h = histogram(s, logits, 200);
  EXPECT_EQ(h[0], 200);
}

TEST(Sampler, RepeatPenaltyDividesPositiveAndMultipliesNegative) {
  SamplerParams p = plain();
  p.temperature = 0.0f;
  p.repeat_penalty = 2.0f;
  Sampler s(p);
  // Token 0 (3.0) penalised to 1.5 < 2.0: token 1 wins.
  std::vector<float> logits = {3.0f, 2.0f, -1.0f};
  EXPECT_EQ(s.sample(logits.data(), 3), 0);
  s.accept(0);
  EXPECT_EQ(s.sample(logits.data(), 3), 1);
  // Negative logits get more negative: -0.5 * 2 = -1.0 < -0.8.
  std::vector<float> neg = {-0.5f, -0.8f};
  Sampler t(p);
  EXPECT_EQ(t.sample(neg.data(), 2), 0);
  t.accept(0);
  EXPECT_EQ(t.sample(neg.data(), 2), 1);
}

TEST(Sampler, RepeatPenaltyAppliesOncePerDistinctToken) {
  SamplerParams p = plain();
  p.temperature = 0.0f;
  p.repeat_penalty = 1.5f;
  Sampler s(p);
  // 4.0 / 1.5 = 2.67 > 2.5; a second division (1.78) would lose.
  for (int i = 0; i < 5; ++i) s.accept(0);
  std::vector<float> logits = {4.0f, 2.5f};
  EXPECT_EQ(s.sample(logits.data(), 2), 0);
}

TEST(Sampler, FrequencyAndPresencePenalties) {
  SamplerParams p = plain();
  p.temperature = 0.0f;
  p.frequency_penalty = 0.5f;
  Sampler s(p);
  std::vector<float> logits = {3.0f, 2.0f};
  s.accept(0);
  EXPECT_EQ(s.sample(logits.data(), 2), 0);  // 3.0 - 0.5 = 2.5
  s.accept(0);
  s.accept(0);
  EXPECT_EQ(s.sample(logits.data(), 2), 1);  // 3.0 - 1.5 = 1.5

  SamplerParams q = plain();
  q.temperature = 0.0f;
  q.presence_penalty = 0.6f;
  Sampler t(q);
  std::vector<float> close = {2.5f, 2.0f};
  for (int i = 0; i < 10; ++i) t.accept(0);  // presence counts once however often
  EXPECT_EQ(t.sample(close.data(), 2), 1);   // 2.5 - 0.6 = 1.9
  std::vector<float> far = {3.0f, 2.0f};
  EXPECT_EQ(t.sample(far.data(), 2), 0);  // 3.0 - 0.6 = 2.4
}

TEST(Sampler, PenaltyWindowForgetsOldTokens) {
  SamplerParams p = plain();
  p.temperature = 0.0f;
  p.repeat_penalty = 10.0f;
  p.repeat_last_n = 2;
  Sampler s(p);
  std::vector<float> logits = {3.0f, 2.0f, 1.0f, 0.5f};
  s.accept(0);
  EXPECT_EQ(s.sample(logits.data(), 4), 1);
  s.accept(2);
  s.accept(3);  // token 0 left the window
  EXPECT_EQ(s.sample(logits.data(), 4), 0);
  s.reset();
  EXPECT_EQ(s.sample(logits.data(), 4), 0);

  p.repeat_last_n = 0;  // penalties off
  Sampler off(p);
  off.accept(0);
  EXPECT_EQ(off.sample(logits.data(), 4), 0);

  p.repeat_last_n = -1;  // the whole context
  Sampler all(p);
  all.accept(0);
  for (int i = 0; i < 100; ++i) all.accept(3);
  EXPECT_EQ(all.sample(logits.data(), 4), 1);
}

TEST(Sampler, OutOfRangeHistoryTokensAreIgnored) {
  SamplerParams p = plain();
  p.temperature = 0.0f;
  p.repeat_penalty = 2.0f;
  Sampler s(p);
  s.accept(1000);
  s.accept(-3);
  std::vector<float> logits = {1.0f, 2.0f};
  EXPECT_EQ(s.sample(logits.data(), 2), 1);
}

TEST(Sampler, BadParametersThrow) {
  SamplerParams p = plain();
  p.repeat_last_n = -2;
  EXPECT_THROW(Sampler{p}, Error);
  p = plain();
  p.repeat_penalty = 0.0f;
  EXPECT_THROW(Sampler{p}, Error);
  Sampler s(plain());
  std::vector<float> logits = {1.0f};
  EXPECT_THROW(s.sample(logits.data(), 0), Error);
}

TEST(Sampler, VocabSizeCanChangeBetweenCalls) {
  SamplerParams p = plain();
  p.top_k = 3;
  Sampler s(p);
  std::vector<float> big(5000, 0.0f);
  big[4999] = 100.0f;
  EXPECT_EQ(s.sample(big.data(), 5000), 4999);
  std::vector<float> small = {0.0f, 100.0f};
  EXPECT_EQ(s.sample(small.data(), 2), 1);
}

}  // namespace
}  // namespace strata
