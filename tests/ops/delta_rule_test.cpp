// The delta-rule ops against references written from their definitions (in double, as matrices),
// and their state: a sequence in one call equals the same sequence split over calls, bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "ops/delta_rule.h"
#include "ops/thread_pool.h"
#include "ops/vec.h"

namespace strata::ops {
namespace {

std::vector<float> random_floats(size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(DeltaRule, Conv1dIsTheCausalConvolutionOfStateAndInputs) {
  std::mt19937 rng(3);
  const int n_tokens = 7, d_conv = 4;
  const int64_t channels = 37, stride = 41;  // inputs with a row stride wider than the channels
  auto x = random_floats(size_t(n_tokens) * stride, rng);
  auto kernel = random_floats(size_t(channels) * d_conv, rng);
  auto state = random_floats(size_t(channels) * (d_conv - 1), rng);
  const auto state0 = state;
  std::vector<float> out(size_t(n_tokens) * channels);
  ThreadPool pool(3);
  conv1d_causal(state.data(), x.data(), stride, n_tokens, channels, d_conv, kernel.data(), out.data(), pool);
  for (int64_t c = 0; c < channels; ++c) {
    // The channel's sequence: its history, then its inputs.
    std::vector<double> seq;
    for (int i = 0; i < d_conv - 1; ++i) seq.push_back(state0[size_t(c * (d_conv - 1) + i)]);
    for (int t = 0; t < n_tokens; ++t) seq.push_back(x[size_t(t * stride + c)]);
    for (int t = 0; t < n_tokens; ++t) {
      double want = 0;
      for (int i = 0; i < d_conv; ++i) want += seq[size_t(t + i)] * kernel[size_t(c * d_conv + i)];
      EXPECT_NEAR(out[size_t(t * channels + c)], want, 1e-5) << "channel " << c << " token " << t;
    }
    for (int i = 0; i < d_conv - 1; ++i)
      EXPECT_EQ(state[size_t(c * (d_conv - 1) + i)], float(seq[seq.size() - (d_conv - 1) + i])) << "channel " << c;
  }
}

TEST(DeltaRule, Conv1dSplitOverCallsEqualsOneCall) {
  std::mt19937 rng(4);
  const int n_tokens = 9, d_conv = 4;
  const int64_t channels = 16;
  auto x = random_floats(size_t(n_tokens) * channels, rng);
  auto kernel = random_floats(size_t(channels) * d_conv, rng);
  ThreadPool pool(2);
  std::vector<float> state_a(size_t(channels) * (d_conv - 1), 0.0f), state_b = state_a;
  std::vector<float> whole(size_t(n_tokens) * channels), split(whole.size());
  conv1d_causal(state_a.data(), x.data(), channels, n_tokens, channels, d_conv, kernel.data(), whole.data(), pool);
  for (int t = 0; t < n_tokens; t += 4) {
    const int n = std::min(4, n_tokens - t);
    conv1d_causal(state_b.data(), x.data() + t * channels, channels, n, channels, d_conv, kernel.data(),
                  split.data() + t * channels, pool);
  }
  EXPECT_EQ(whole, split);
  EXPECT_EQ(state_a, state_b);
}

// The definition: per value head h (q/k head h mod n_k), S (d x d, S[i][j]) evolves as
// S = exp(g) S;  S += k ((v - S^T k) beta)^T;  o = S^T q / sqrt(d).
TEST(DeltaRule, GatedDeltaRuleMatchesTheMatrixDefinition) {
  std::mt19937 rng(5);
  const DeltaRuleShape shape{2, 6, 8};  // 3 value heads per key head
  const int d = shape.head_dim, n_k = shape.n_k_heads, n_v = shape.n_v_heads, n_tokens = 5;
  const int64_t qk_stride = 2 * n_k * d + 3, v_stride = n_v * d + 1;
  auto q = random_floats(size_t(n_tokens) * qk_stride, rng);
  auto k = random_floats(size_t(n_tokens) * qk_stride, rng);
  auto v = random_floats(size_t(n_tokens) * v_stride, rng);
  auto g = random_floats(size_t(n_tokens) * n_v, rng, -1.0f, 0.0f);
  auto beta = random_floats(size_t(n_tokens) * n_v, rng, 0.0f, 1.0f);
  auto state = random_floats(size_t(n_v) * d * d, rng, -0.5f, 0.5f);
  // Reference state as matrices S[h][i][j] from the stored layout state[h][j * d + i].
  std::vector<double> S(state.size());
  for (int h = 0; h < n_v; ++h)
    for (int i = 0; i < d; ++i)
      for (int j = 0; j < d; ++j) S[size_t((h * d + i) * d + j)] = state[size_t(h * d * d + j * d + i)];
  std::vector<float> out(size_t(n_tokens) * n_v * d);
  ThreadPool pool(3);
  gated_delta_rule(state.data(), q.data(), k.data(), qk_stride, v.data(), v_stride, g.data(), beta.data(), n_tokens,
                   shape, out.data(), pool);
  for (int t = 0; t < n_tokens; ++t)
    for (int h = 0; h < n_v; ++h) {
      const int hk = h % n_k;
      const float* qt = &q[size_t(t * qk_stride + hk * d)];
      const float* kt = &k[size_t(t * qk_stride + hk * d)];
      const float* vt = &v[size_t(t * v_stride + h * d)];
      double* M = &S[size_t(h * d * d)];
      for (int i = 0; i < d * d; ++i) M[i] *= std::exp(double(g[size_t(t * n_v + h)]));
      std::vector<double> delta(static_cast<size_t>(d));
      for (int j = 0; j < d; ++j) {
        double sk = 0;
        for (int i = 0; i < d; ++i) sk += M[i * d + j] * kt[i];
        delta[size_t(j)] = (vt[j] - sk) * beta[size_t(t * n_v + h)];
      }
      for (int i = 0; i < d; ++i)
        for (int j = 0; j < d; ++j) M[i * d + j] += kt[i] * delta[size_t(j)];
      for (int j = 0; j < d; ++j) {
        double o = 0;
        for (int i = 0; i < d; ++i) o += M[i * d + j] * qt[i];
        EXPECT_NEAR(out[size_t((t * n_v + h) * d + j)], o / std::sqrt(double(d)), 1e-5)
            << "token " << t << " head " << h << " dim " << j;
      }
    }
  for (int h = 0; h < n_v; ++h)
    for (int i = 0; i < d; ++i)
      for (int j = 0; j < d; ++j)
        EXPECT_NEAR(state[size_t(h * d * d + j * d + i)], S[size_t((h * d + i) * d + j)], 1e-5);
}

TEST(DeltaRule, GatedDeltaRuleSplitOverCallsEqualsOneCall) {
  std::mt19937 rng(6);
  const DeltaRuleShape shape{2, 4, 16};
  const int d = shape.head_dim, n_v = shape.n_v_heads, n_tokens = 7;
  const int64_t qk_stride = 2 * d * 2 + 4 * d, v_stride = qk_stride;  // one q|k|v row, as the layer lays it out
  auto row = random_floats(size_t(n_tokens) * qk_stride, rng);
  auto g = random_floats(size_t(n_tokens) * n_v, rng, -1.0f, 0.0f);
  auto beta = random_floats(size_t(n_tokens) * n_v, rng, 0.0f, 1.0f);
  const float* q = row.data();
  const float* k = q + 2 * d;
  const float* v = q + 4 * d;
  ThreadPool pool(2);
  std::vector<float> state_a(size_t(n_v) * d * d, 0.0f), state_b = state_a;
  std::vector<float> whole(size_t(n_tokens) * n_v * d), split(whole.size());
  gated_delta_rule(state_a.data(), q, k, qk_stride, v, v_stride, g.data(), beta.data(), n_tokens, shape, whole.data(),
                   pool);
  for (int t = 0; t < n_tokens; ++t)  // one token at a time, as decode runs it
    gated_delta_rule(state_b.data(), q + t * qk_stride, k + t * qk_stride, qk_stride, v + t * v_stride, v_stride,
                     g.data() + t * n_v, beta.data() + t * n_v, 1, shape, split.data() + t * n_v * d, pool);
  EXPECT_EQ(whole, split);
  EXPECT_EQ(state_a, state_b);
}

// The AVX2 step against the scalar one, in both of ggml's summation orders: the same operations
// lane for lane, so equal bit for bit, at head sizes with and without a partial last block.
TEST(DeltaRule, Avx2StepEqualsScalar) {
#if defined(STRATA_SCALAR_ONLY)
  GTEST_SKIP() << "scalar-only build";
#else
  if (!detail::has_avx2_f16c()) GTEST_SKIP() << "no AVX2/FMA on this machine";
  std::mt19937 rng(8);
  for (DotOrder order : {DotOrder::avx2, DotOrder::avx512})
    for (int d : {8, 12, 16, 40, 64, 100, 128, 256}) {
      auto S = random_floats(size_t(d) * d, rng, -0.5f, 0.5f);
      auto S2 = S;
      const auto q = random_floats(size_t(d), rng), k = random_floats(size_t(d), rng),
                 v = random_floats(size_t(d), rng);
      std::vector<float> out(static_cast<size_t>(d)), out2(static_cast<size_t>(d));
      for (int step = 0; step < 3; ++step) {
        detail::delta_rule_step_scalar(S.data(), q.data(), k.data(), v.data(), 0.9f, 0.7f, 0.25f, d, order,
                                       out.data());
        detail::delta_rule_step_avx2(S2.data(), q.data(), k.data(), v.data(), 0.9f, 0.7f, 0.25f, d, order,
                                     out2.data());
        ASSERT_EQ(out2, out) << "d " << d << " order " << int(order);
      }
      ASSERT_EQ(S2, S) << "d " << d << " order " << int(order);
    }
#endif
}

// ggml_dot adds its partial sums in ggml's order: inputs where another association loses the 1.
TEST(DeltaRule, DotSumsInGgmlOrder) {
  const std::vector<float> ones(64, 1.0f);
  // AVX-512: accumulators of 16 lanes over x[0..15], x[16..31], x[32..47], x[48..63], added (0 + 2) + (1 + 3).
  std::vector<float> x(64, 0.0f);
  x[0] = 1e8f, x[16] = 1.0f, x[32] = -1e8f;
  EXPECT_EQ(detail::ggml_dot(x.data(), ones.data(), 64, DotOrder::avx512), 1.0f);
  // ... then lane l onto l + 8 first.
  x.assign(64, 0.0f);
  x[0] = 1e8f, x[8] = -1e8f, x[1] = 1.0f;
  EXPECT_EQ(detail::ggml_dot(x.data(), ones.data(), 64, DotOrder::avx512), 1.0f);
  // AVX2: 8-lane accumulators over blocks of 32, added (0 + 2) + (1 + 3), then lanes l and l + 4,
  // then two hadds: (0 + 1) + (2 + 3).
  x.assign(64, 0.0f);
  x[0] = 1e8f, x[8] = 1.0f, x[16] = -1e8f;
  EXPECT_EQ(detail::ggml_dot(x.data(), ones.data(), 64, DotOrder::avx2), 1.0f);
  x.assign(64, 0.0f);
  x[0] = 1e8f, x[1] = -1e8f, x[2] = 1.0f;
  EXPECT_EQ(detail::ggml_dot(x.data(), ones.data(), 64, DotOrder::avx2), 1.0f);
  // Past the last whole block: one by one, after the blocks' sum.
  x.assign(70, 0.0f);
  std::vector<float> y(70, 1.0f);
  x[64] = 1e8f, x[65] = 1.0f, x[66] = -1e8f;
  EXPECT_EQ(detail::ggml_dot(x.data(), y.data(), 70, DotOrder::avx512), 0.0f);
}

TEST(DeltaRule, NormsAndActivations) {
  std::vector<float> x = {3.0f, 4.0f, 0.0f, 0.0f};
  l2_norm(x.data(), 2, 2, 1e-6f);  // rows {3, 4} and {0, 0}
  EXPECT_NEAR(x[0], 0.6f, 1e-6);
  EXPECT_NEAR(x[1], 0.8f, 1e-6);
  EXPECT_EQ(x[2], 0.0f);
  const std::vector<float> in = {1.0f, -2.0f}, w = {0.5f, 2.0f};
  std::vector<float> z = {0.0f, 3.0f};
  std::vector<float> out(2);
  rms_norm_gated(in.data(), w.data(), z.data(), out.data(), 2, 1, 0.0f, DotOrder::avx2);
  const double rms = std::sqrt((1.0 + 4.0) / 2);
  EXPECT_NEAR(out[0], 0.0, 1e-7);  // silu(0) = 0
  EXPECT_NEAR(out[1], -2.0 / rms * 2.0 * (3.0 / (1.0 + std::exp(-3.0))), 1e-5);
  EXPECT_EQ(softplus(25.0f), 25.0f);
  EXPECT_NEAR(softplus(0.0f), std::log(2.0f), 1e-7);
  EXPECT_NEAR(sigmoid(0.0f), 0.5f, 1e-7);
}

// ggml_v_expf's polynomial (AVX-512) is e^x within a few ulps, with its limits: 0 far below, inf
// far above.
TEST(DeltaRule, GgmlExpIsExp) {
  for (float x = -87.0f; x <= 88.0f; x += 0.37f) {
    const float e = detail::ggml_expf_avx512(x), ref = std::exp(x);
    ASSERT_NEAR(e, ref, 4e-7f * ref) << x;
  }
  EXPECT_EQ(detail::ggml_expf_avx512(-200.0f), 0.0f);
  EXPECT_EQ(detail::ggml_expf_avx512(200.0f), INFINITY);
  EXPECT_EQ(detail::ggml_expf_avx512(0.0f), 1.0f);
}

// silu_rows in ggml's AVX-512 order: the polynomial on each row's whole blocks of 16, libm's expf
// past them; the AVX2 code equal to that bit for bit, extreme inputs (the scalar fallback) included.
TEST(DeltaRule, SiluRowsAsGgml) {
  std::mt19937 rng(9);
  for (int64_t n : {16, 40, 128, 7}) {
    auto x = random_floats(size_t(n) * 3, rng, -12.0f, 12.0f);
    x[1] = -95.0f, x[2] = 100.0f, x[3] = -300.0f, x[4] = 0.0f;  // e^-x past the normal floats, or 0 / inf
    std::vector<float> want(x.size());
    const int64_t whole = n - n % 16;
    for (size_t i = 0; i < x.size(); ++i) {
      const float e = int64_t(i) % n < whole ? detail::ggml_expf_avx512(0.0f - x[i]) : std::exp(-x[i]);
      want[i] = x[i] / (1.0f + e);
    }
    auto got = x;
    silu_rows(got.data(), n, 3, DotOrder::avx512);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(got[i], want[i]) << "n " << n << " i " << i << " x " << x[i];
    got = x;
    silu_rows(got.data(), n, 3, DotOrder::avx2);  // libm throughout
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(got[i], x[i] / (1.0f + std::exp(-x[i]))) << i;
  }
}

TEST(DeltaRule, BoundsAreErrors) {
  ThreadPool pool(1);
  float buf[4] = {};
  EXPECT_THROW(conv1d_causal(buf, buf, 1, 1, 1, kMaxConvWidth + 1, buf, buf, pool), std::exception);
  EXPECT_THROW(gated_delta_rule(buf, buf, buf, 1, buf, 1, buf, buf, 1, DeltaRuleShape{1, 1, 0}, buf, pool),
               std::exception);
}

}  // namespace
}  // namespace strata::ops
