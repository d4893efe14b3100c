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

// The order ggml's ggml_vec_dot_f32 sums in on x86, which llama.cpp's gated delta rule
// (ggml_gated_delta_net) uses for both dot products of every state row: 4 accumulators of `lanes`
// floats fed by fused multiply-adds over blocks of 4 x lanes, added (a0 + a2) + (a1 + a3), then
// across the lanes as that ISA's reduction does (AVX-512: _mm512_reduce_add_ps's halving; AVX2:
// two hadds); the elements past the last whole block (all of them for heads under 4 x lanes)
// then added one by one with fused multiply-adds. lanes: 16 where the CPU has AVX-512 (the
// llama.cpp Strata is compared with is built for the CPU it runs on), else 8.
enum class DotOrder { avx2, avx512 };
DotOrder ggml_dot_order();  // this CPU's

struct DeltaRuleShape {
  int n_k_heads = 0;  // heads of q and k
  int n_v_heads = 0;  // heads of v and of the state; v head h reads q/k head h % n_k_heads (ggml's broadcast)
  int head_dim = 0;   // d: of q, k and v alike
};

// The gated delta rule for one sequence, token after token, per value head h with S = the d x d
// state of h (S[i][j] at state[h * d * d + j * d + i], as ggml stores it):
//   S *= exp(g[t, h]);  delta = (v - S^T k) * beta[t, h];  S += k delta^T;  out = S^T q / sqrt(d)
// as ggml_gated_delta_net computes it on this CPU, bit for bit (DotOrder above).
// q, k: rows [n_tokens x n_k_heads * d] of stride qk_stride; v: rows of stride v_stride with
// n_v_heads * d values; g, beta: [n_tokens x n_v_heads]; out: [n_tokens x n_v_heads * d].
void gated_delta_rule(float* state, const float* q, const float* k, int64_t qk_stride, const float* v, int64_t v_stride,
                      const float* g, const float* beta, int n_tokens, const DeltaRuleShape& shape, float* out,
                      ThreadPool& pool);

// silu(x) = x / (1 + e^-x) on n_rows rows of n floats, in place, as ggml_vec_silu_f32 computes it
// where llama.cpp runs AVX-512 (DotOrder::avx512): ggml_v_expf's polynomial e^x on each row's whole
// blocks of 16, libm's expf on the rest; elsewhere libm's expf throughout (ggml's AVX2 e^x, which
// llama.cpp runs there, is not reproduced).
void silu_rows(float* x, int64_t n, int64_t n_rows, DotOrder order);

// Per row of n floats: out = rms_norm(x) * weight * silu(z) (x, z and out rows contiguous; out may
// be x; z is overwritten with silu(z), computed as silu_rows does).
void rms_norm_gated(const float* x, const float* weight, float* z, float* out, int64_t n, int n_rows, float eps,
                    DotOrder order);

// Per row of n floats: x / sqrt(sum x^2 + eps), as llama.cpp's build_gdn_l2_norm (an RMSNorm with
// eps / n, then a scale by 1 / sqrt(n)).
void l2_norm(float* x, int64_t n, int n_rows, float eps);


namespace detail {
// dot(x, y) over n floats, summed in `order` (the scalar reference of the SIMD step's sums).
float ggml_dot(const float* x, const float* y, int n, DotOrder order);
// One token of one value head of gated_delta_rule, row by row (row j of S, as stored, depends only
// on delta[j]): row *= decay; delta = (v[j] - row . k) * beta; row += k * delta (fused);
// out[j] = (row . q) * scale, the dots summed in `order`.
void delta_rule_step_scalar(float* S, const float* q, const float* k, const float* v, float decay, float beta,
                            float scale, int d, DotOrder order, float* out);
void delta_rule_step_avx2(float* S, const float* q, const float* k, const float* v, float decay, float beta,
                          float scale, int d, DotOrder order, float* out);  // bit-identical to the scalar step
// ggml_v_expf (AVX-512) on one float: the scalar reference of silu_rows' vector code.
float ggml_expf_avx512(float x);
// silu_rows' AVX-512 order on AVX2 + FMA: bit-identical to the scalar code.
void silu_rows_avx2(float* x, int64_t n, int64_t n_rows);
}  // namespace detail

float sigmoid(float x);   // 1 / (1 + e^-x)
float softplus(float x);  // ln(1 + e^x), x itself above 20 (ggml's)

}  // namespace strata::ops
