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
  static const DotOrder order = ggml_dot_order();
  auto step = detail::delta_rule_step_scalar;
#if !defined(STRATA_SCALAR_ONLY)
  static const bool simd = detail::has_avx2_f16c();
  if (simd) step = detail::delta_rule_step_avx2;
#endif
  pool.parallel_for(n_v, [&](int64_t h0, int64_t h1, int) {
    for (int64_t h = h0; h < h1; ++h) {
      float* S = state + h * int64_t(d) * d;
      const int64_t hk = h % n_k;
      for (int t = 0; t < n_tokens; ++t) {
        const float decay = std::exp(g[int64_t(t) * n_v + h]);
        step(S, q + int64_t(t) * qk_stride + hk * d, k + int64_t(t) * qk_stride + hk * d,
             v + int64_t(t) * v_stride + h * d, decay, beta[int64_t(t) * n_v + h], scale, d, order,
             out + int64_t(t) * n_v * d + h * d);
      }
    }
  });
}

DotOrder ggml_dot_order() {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("avx512f") ? DotOrder::avx512 : DotOrder::avx2;
#else
  return DotOrder::avx2;
#endif
}

namespace detail {

float ggml_dot(const float* x, const float* y, int n, DotOrder order) {
  const int lanes = order == DotOrder::avx512 ? 16 : 8;
  const int block = 4 * lanes;
  float acc[4][16] = {};
  const int whole = n - n % block;
  for (int i = 0; i < whole; i += block)
    for (int a = 0; a < 4; ++a)
      for (int l = 0; l < lanes; ++l) acc[a][l] = std::fma(x[i + a * lanes + l], y[i + a * lanes + l], acc[a][l]);
  float r[16];
  for (int l = 0; l < lanes; ++l) r[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
  float sum;
  if (order == DotOrder::avx512) {  // upper 8 onto lower 8, upper 4 onto lower 4, then (0 + 2) + (1 + 3)
    float h[8], q[4];
    for (int l = 0; l < 8; ++l) h[l] = r[l + 8] + r[l];
    for (int l = 0; l < 4; ++l) q[l] = h[l + 4] + h[l];
    sum = (q[0] + q[2]) + (q[1] + q[3]);
  } else {  // upper 4 onto lower 4, then two hadds: (0 + 1) + (2 + 3)
    float q[4];
    for (int l = 0; l < 4; ++l) q[l] = r[l] + r[l + 4];
    sum = (q[0] + q[1]) + (q[2] + q[3]);
  }
  for (int i = whole; i < n; ++i) sum = std::fma(x[i], y[i], sum);
  return sum;
}

void delta_rule_step_scalar(float* S, const float* q, const float* k, const float* v, float decay, float beta,
                            float scale, int d, DotOrder order, float* out) {
  for (int j = 0; j < d; ++j) {
    float* row = S + int64_t(j) * d;
    for (int i = 0; i < d; ++i) row[i] *= decay;
    const float delta = (v[j] - ggml_dot(row, k, d, order)) * beta;
    for (int i = 0; i < d; ++i) row[i] = std::fma(k[i], delta, row[i]);
    out[j] = ggml_dot(row, q, d, order) * scale;
  }
}

float ggml_expf_avx512(float x) {
  // e^x = 2^n (1 + b + b^2 / 2 + ...), n = round(x / ln 2), b = x - n ln 2 (ln 2 in two parts).
  const float r = 0x1.8p23f;
  const float z = std::fma(x, 0x1.715476p+0f, r);
  const float n = z - r;
  const float b = std::fma(-n, 0x1.7f7d1cp-20f, std::fma(-n, 0x1.62e4p-1f, x));
  const float u = b * b;
  const float j = std::fma(std::fma(std::fma(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, std::fma(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                           u, std::fma(0x1.ffffecp-1f, b, 1.0f));
  if (std::fabs(n) > 192.0f) return n <= 0.0f ? 0.0f : INFINITY;
  return std::ldexp(j, int(n));  // _mm512_scalef_ps: j 2^n, rounded once
}

}  // namespace detail

void silu_rows(float* x, int64_t n, int64_t n_rows, DotOrder order) {
  if (order == DotOrder::avx512) {
#if !defined(STRATA_SCALAR_ONLY)
    static const bool simd = detail::has_avx2_f16c();
    if (simd) return detail::silu_rows_avx2(x, n, n_rows);
#endif
  }
  const int64_t whole = order == DotOrder::avx512 ? n - n % 16 : 0;
  for (int64_t r = 0; r < n_rows; ++r) {
    float* row = x + r * n;
    for (int64_t i = 0; i < whole; ++i) row[i] = row[i] / (1.0f + detail::ggml_expf_avx512(0.0f - row[i]));
    for (int64_t i = whole; i < n; ++i) row[i] = row[i] / (1.0f + std::exp(-row[i]));
  }
}

void rms_norm_gated(const float* x, const float* weight, float* z, float* out, int64_t n, int n_rows, float eps,
                    DotOrder order) {
  silu_rows(z, n, n_rows, order);
  for (int r = 0; r < n_rows; ++r) {
    const float* zr = z + int64_t(r) * n;
    float* o = out + int64_t(r) * n;
    rms_norm(x + int64_t(r) * n, weight, o, n, eps);
    for (int64_t i = 0; i < n; ++i) o[i] *= zr[i];
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
