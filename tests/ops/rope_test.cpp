// ops::rope against a transcription of ggml's CPU rope (ggml_rope_cache_init, rope_yarn,
// ggml_rope_yarn_corr_dims in ggml-cpu/ops.cpp) for the scalings GGUF files declare: none,
// linear, YaRN, and Llama 3's rope_freqs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "ops/ops.h"

namespace strata::ops {
namespace {

// ggml, normal (adjacent pairs) and neox (halves) modes, one head.
void ggml_rope(std::vector<float>& x, int n_dims, int64_t pos, bool neox, float freq_base, float freq_scale,
               const float* freq_factors, int n_ctx_orig, float ext_factor, float attn_factor, float beta_fast,
               float beta_slow) {
  auto corr_dim = [&](float n_rot) {
    return n_dims * logf(n_ctx_orig / (n_rot * 2 * (float)M_PI)) / (2 * logf(freq_base));
  };
  float corr_dims[2] = {std::max(0.0f, floorf(corr_dim(beta_fast))),
                        std::min(float(n_dims - 1), ceilf(corr_dim(beta_slow)))};
  const float theta_scale = powf(freq_base, -2.0f / n_dims);
  std::vector<float> cache(static_cast<size_t>(n_dims));
  float theta = float(pos);
  for (int i0 = 0; i0 < n_dims; i0 += 2) {
    const float ff = freq_factors ? freq_factors[i0 / 2] : 1.0f;
    const float theta_extrap = theta / ff;
    float theta_interp = freq_scale * theta_extrap;
    float th = theta_interp;
    float mscale = attn_factor;
    if (ext_factor != 0.0f) {
      const float y = (i0 / 2 - corr_dims[0]) / std::max(0.001f, corr_dims[1] - corr_dims[0]);
      const float ramp_mix = (1 - std::min(1.0f, std::max(0.0f, y))) * ext_factor;
      th = theta_interp * (1 - ramp_mix) + theta_extrap * ramp_mix;
      mscale *= 1.0f + 0.1f * logf(1.0f / freq_scale);
    }
    cache[size_t(i0)] = cosf(th) * mscale;
    cache[size_t(i0) + 1] = sinf(th) * mscale;
    theta *= theta_scale;
  }
  for (int i0 = 0; i0 < n_dims; i0 += 2) {
    const int a = neox ? i0 / 2 : i0, b = neox ? i0 / 2 + n_dims / 2 : i0 + 1;
    const float x0 = x[size_t(a)], x1 = x[size_t(b)];
    x[size_t(a)] = x0 * cache[size_t(i0)] - x1 * cache[size_t(i0) + 1];
    x[size_t(b)] = x0 * cache[size_t(i0) + 1] + x1 * cache[size_t(i0)];
  }
}

TEST(Rope, MatchesGgmlForEveryScaling) {
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  const int d = 128;
  std::vector<float> factors(d / 2);
  for (int i = 0; i < d / 2; ++i) factors[size_t(i)] = i < 20 ? 1.0f : i < 40 ? 1.0f + 0.3f * (i - 20) : 8.0f;
  struct Scaling {
    float freq_scale, ext_factor, attn_factor;
    bool freq_factors;
  };
  for (const Scaling s : {Scaling{1, 0, 1, false}, Scaling{0.25f, 0, 1, false}, Scaling{0.25f, 1, 1, false},
                          Scaling{0.125f, 1, 1.2f, false}, Scaling{1, 0, 1, true}})
    for (bool neox : {false, true})
      for (int64_t pos : {0, 1, 4095, 4097, 8191, 32767, 131071}) {
        std::vector<float> x(static_cast<size_t>(d));
        for (float& v : x) v = dist(rng);
        std::vector<float> want = x, got = x;
        ggml_rope(want, d, pos, neox, 500000.0f, s.freq_scale, s.freq_factors ? factors.data() : nullptr, 8192,
                  s.ext_factor, s.attn_factor, 32.0f, 1.0f);
        RopeParams p;
        p.n_rot = d;
        p.kind = neox ? RopeKind::neox : RopeKind::normal;
        p.freq_base = 500000.0f;
        p.freq_scale = s.freq_scale;
        p.ext_factor = s.ext_factor;
        p.attn_factor = s.attn_factor;
        p.n_ctx_orig = 8192;
        p.freq_factors = s.freq_factors ? factors.data() : nullptr;
        rope(got.data(), 1, d, pos, p);
        for (int i = 0; i < d; ++i)
          ASSERT_NEAR(got[size_t(i)], want[size_t(i)], 1e-6f)
              << "dim " << i << " pos " << pos << " scale " << s.freq_scale << " ext " << s.ext_factor;
      }
}

// YaRN changes the fast dimensions less than linear scaling does (they keep their angles).
TEST(Rope, YarnKeepsTheFastDimensionsUnscaled) {
  std::vector<float> lin(64, 1.0f), yarn(64, 1.0f), none(64, 1.0f);
  RopeParams p;
  p.n_rot = 64;
  p.n_ctx_orig = 4096;
  rope(none.data(), 1, 64, 3000, p);
  p.freq_scale = 0.25f;
  rope(lin.data(), 1, 64, 3000, p);
  p.ext_factor = 1.0f;
  rope(yarn.data(), 1, 64, 3000, p);
  const float m = 1.0f + 0.1f * std::log(4.0f);
  EXPECT_NEAR(yarn[0] / m, none[0], 1e-5f);  // dimension pair 0 rotates fastest
  EXPECT_GT(std::fabs(lin[0] - none[0]), 1e-2f);
}

}  // namespace
}  // namespace strata::ops
