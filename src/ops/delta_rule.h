#pragma once
// Ops of gated delta-rule (linear attention) layers, in the order ggml's CPU kernels compute them
// (ggml_ssm_conv, ggml_gated_delta_net, the gated RMSNorm llama.cpp builds from rms_norm, mul and
// silu). They know nothing of models: float rows in, float rows out.
#include <cstdint>

#include "ops/thread_pool.h"

namespace strata::ops {

// Bounds of the per-thread stack buffers (the released models: conv width 4, heads of 128).
constexpr int kMaxConvWidth = 64;
constexpr int kMaxDeltaHeadDim = 1024;

// Causal depthwise conv1d over the token axis, with a state carried between calls. Channel c's
// window is its d_conv - 1 previous inputs (state[c * (d_conv - 1)..], oldest first) followed by
// this batch's inputs x[t * x_stride + c]; out[t * n_channels + c] = sum over i < d_conv of
// window[t + i] * kernel[c * d_conv + i], summed in that order in float. The state then holds the
// channel's last d_conv - 1 inputs.
void conv1d_causal(float* state, const float* x, int64_t x_stride, int n_tokens, int64_t n_channels, int d_conv,
                   const float* kernel, float* out, ThreadPool& pool);

struct DeltaRuleShape {
  int n_k_heads = 0;  // heads of q and k
  int n_v_heads = 0;  // heads of v and of the state; v head h reads q/k head h % n_k_heads (ggml's broadcast)
  int head_dim = 0;   // d: of q, k and v alike
};

// The gated delta rule for one sequence, token after token, per value head h with S = the d x d
// state of h (S[i][j] at state[h * d * d + j * d + i], as ggml stores it):
//   S *= exp(g[t, h]);  delta = (v - S^T k) * beta[t, h];  S += k delta^T;  out = S^T q / sqrt(d)
// q, k: rows [n_tokens x n_k_heads * d] of stride qk_stride; v: rows of stride v_stride with
// n_v_heads * d values; g, beta: [n_tokens x n_v_heads]; out: [n_tokens x n_v_heads * d].
void gated_delta_rule(float* state, const float* q, const float* k, int64_t qk_stride, const float* v, int64_t v_stride,
                      const float* g, const float* beta, int n_tokens, const DeltaRuleShape& shape, float* out,
                      ThreadPool& pool);

// Per row of n floats: out = rms_norm(x) * weight * silu(z) (x, z and out rows contiguous; out may be x).
void rms_norm_gated(const float* x, const float* weight, const float* z, float* out, int64_t n, int n_rows, float eps);

// Per row of n floats: x / sqrt(sum x^2 + eps), as llama.cpp's build_gdn_l2_norm (an RMSNorm with
// eps / n, then a scale by 1 / sqrt(n)).
void l2_norm(float* x, int64_t n, int n_rows, float eps);

namespace detail {
// One token of one value head of gated_delta_rule, row by row (row j of S, as stored, depends only
// on delta[j]): row *= decay; delta = (v[j] - row . k) * beta; row += k * delta; out[j] = (row . q) * scale.
void delta_rule_step_scalar(float* S, const float* q, const float* k, const float* v, float decay, float beta,
                            float scale, int d, float* out);
void delta_rule_step_avx2(float* S, const float* q, const float* k, const float* v, float decay, float beta,
                          float scale, int d, float* out);  // d a multiple of 8
}  // namespace detail

float sigmoid(float x);   // 1 / (1 + e^-x)
float softplus(float x);  // ln(1 + e^x), x itself above 20 (ggml's)

}  // namespace strata::ops
