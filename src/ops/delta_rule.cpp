#include "ops/delta_rule.h"

#include <cmath>
#include <cstring>

#include "ops/ops.h"
#include "ops/vec.h"
#include "util/error.h"

namespace strata::ops {

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

float softplus(float x) { return x > 20.0f ? x : std::log(1.0f + std::exp(x)); }

void conv1d_causal(float* state, const float* x, int64_t x_stride, int n_tokens, int64_t n_channels, int d_conv,
                   const float* kernel, float* out, ThreadPool& pool) {
  if (d_conv < 1 || d_conv > kMaxConvWidth)
    throw Error("conv1d: kernel width " + std::to_string(d_conv) + " is outside 1.." + std::to_string(kMaxConvWidth));
  const int n_hist = d_conv - 1;
  pool.parallel_for(n_channels, [&](int64_t c0, int64_t c1, int) {
    float window[kMaxConvWidth];
    for (int64_t c = c0; c < c1; ++c) {
      float* hist = state + c * n_hist;
      const float* w = kernel + c * d_conv;
      std::memcpy(window, hist, size_t(n_hist) * sizeof(float));
      for (int t = 0; t < n_tokens; ++t) {
        window[n_hist] = x[int64_t(t) * x_stride + c];
        float sum = 0.0f;
        for (int i = 0; i < d_conv; ++i) sum += window[i] * w[i];
        out[int64_t(t) * n_channels + c] = sum;
        std::memmove(window, window + 1, size_t(n_hist) * sizeof(float));  // slide by one
      }
      std::memcpy(hist, window, size_t(n_hist) * sizeof(float));
    }
  });
}

void gated_delta_rule(float* state, const float* q, const float* k, int64_t qk_stride, const float* v, int64_t v_stride,
                      const float* g, const float* beta, int n_tokens, const DeltaRuleShape& shape, float* out,
                      ThreadPool& pool) {
  const int d = shape.head_dim, n_v = shape.n_v_heads, n_k = shape.n_k_heads;
  if (d <= 0 || d > kMaxDeltaHeadDim || n_k <= 0 || n_v <= 0)
    throw Error("gated delta rule: head size " + std::to_string(d) + " (at most " + std::to_string(kMaxDeltaHeadDim) +
                "), " + std::to_string(n_k) + " key heads and " + std::to_string(n_v) + " value heads are invalid");
  const float scale = 1.0f / std::sqrt(float(d));
  auto step = detail::delta_rule_step_scalar;
#if !defined(STRATA_SCALAR_ONLY)
  static const bool simd = detail::has_avx2_f16c();
  if (simd && d % 8 == 0) step = detail::delta_rule_step_avx2;
#endif
  pool.parallel_for(n_v, [&](int64_t h0, int64_t h1, int) {
    for (int64_t h = h0; h < h1; ++h) {
      float* S = state + h * int64_t(d) * d;
      const int64_t hk = h % n_k;
      for (int t = 0; t < n_tokens; ++t) {
        const float decay = std::exp(g[int64_t(t) * n_v + h]);
        step(S, q + int64_t(t) * qk_stride + hk * d, k + int64_t(t) * qk_stride + hk * d,
             v + int64_t(t) * v_stride + h * d, decay, beta[int64_t(t) * n_v + h], scale, d,
             out + int64_t(t) * n_v * d + h * d);
      }
    }
  });
}

namespace detail {
void delta_rule_step_scalar(float* S, const float* q, const float* k, const float* v, float decay, float beta,
                            float scale, int d, float* out) {
  for (int j = 0; j < d; ++j) {
    float* row = S + int64_t(j) * d;
    float sum = 0.0f;
    for (int i = 0; i < d; ++i) {
      row[i] *= decay;
      sum += row[i] * k[i];
    }
    const float delta = (v[j] - sum) * beta;
    sum = 0.0f;
    for (int i = 0; i < d; ++i) {
      row[i] += k[i] * delta;
      sum += row[i] * q[i];
    }
    out[j] = sum * scale;
  }
}
}  // namespace detail

void rms_norm_gated(const float* x, const float* weight, const float* z, float* out, int64_t n, int n_rows, float eps) {
  for (int r = 0; r < n_rows; ++r) {
    const float* zr = z + int64_t(r) * n;
    float* o = out + int64_t(r) * n;
    rms_norm(x + int64_t(r) * n, weight, o, n, eps);
    for (int64_t i = 0; i < n; ++i) o[i] *= zr[i] / (1.0f + std::exp(-zr[i]));
  }
}

void l2_norm(float* x, int64_t n, int n_rows, float eps) {
  const float scale = 1.0f / std::sqrt(float(n));
  for (int r = 0; r < n_rows; ++r) {
    float* row = x + int64_t(r) * n;
    rms_norm(row, nullptr, row, n, eps / float(n));
    for (int64_t i = 0; i < n; ++i) row[i] *= scale;
  }
}

}  // namespace strata::ops
