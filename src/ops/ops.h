#pragma once
// Numerical building blocks of transformer layers. Ops know nothing about models: they take
// float buffers and weight views. Row-major [n_tokens x width] for activations.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ops/thread_pool.h"
#include "ops/weight.h"

namespace strata::ops {

// Scratch that matmul uses to hold activations converted to the weight's vec_dot type.
struct MatmulScratch {
  std::vector<uint8_t> quantized;
};

// y[t, r] = sum_c W[r, c] * x[t, c] for t < n_tokens, r < W.n_rows; x has stride x_stride
// floats, y has stride y_stride floats.
void matmul(const WeightView& w, const float* x, int64_t x_stride, int n_tokens, float* y, int64_t y_stride,
            ThreadPool& pool, MatmulScratch& scratch);

// Activations converted once to the vec_dot type of weights of `type` with n_cols columns, for
// several matmuls against such weights (the row pieces of a streamed tensor). Points into the
// scratch (or at x itself for F32 dots): valid until the scratch is used again.
struct PreparedInput {
  const uint8_t* data = nullptr;
  size_t row_bytes = 0;
  int n_tokens = 0;
  int64_t n_cols = 0;
  DType vec_dot_type = DType::F32;
};
PreparedInput prepare_input(DType type, int64_t n_cols, const float* x, int64_t x_stride, int n_tokens,
                            ThreadPool& pool, MatmulScratch& scratch);
// matmul with prepared activations: w must have the type and column count they were prepared for.
void matmul_prepared(const WeightView& w, const PreparedInput& in, float* y, int64_t y_stride, ThreadPool& pool);

// out = x / rms(x) * weight, per row of n floats (weight may be null: no scaling).
void rms_norm(const float* x, const float* weight, float* out, int64_t n, float eps);
// Dequantizes one row of a weight (embedding lookup).
void get_row(const WeightView& w, int64_t row, float* out);
// Float view of a 1-D F32 tensor, or a converted copy for other types.
std::vector<float> to_floats(const WeightView& w);

enum class RopeKind { normal, neox };
// Rotary position embedding as ggml computes it, with its scalings: linear (freq_scale < 1),
// YaRN (ext_factor > 0: per-dimension mix of interpolated and extrapolated angles between the
// correction dims of beta_fast / beta_slow, magnitude scaled by 1 + 0.1 ln(1 / freq_scale)), and
// Llama 3's rope_freqs (freq_factors, may be null, divide the frequencies).
struct RopeParams {
  int n_rot = 0;  // rotary dimensions per head
  RopeKind kind = RopeKind::normal;
  float freq_base = 10000.0f;
  float freq_scale = 1.0f;
  float ext_factor = 0.0f;   // YaRN: 1 where the GGUF declares yarn, else 0
  float attn_factor = 1.0f;  // magnitude of cos/sin (rope.scaling.attn_factor)
  float beta_fast = 32.0f, beta_slow = 1.0f;
  int n_ctx_orig = 0;        // YaRN: the context the model was trained for
  const float* freq_factors = nullptr;
};
// Rotates n_heads heads of head_dim floats at position pos, over the first n_rot dims.
void rope(float* x, int n_heads, int head_dim, int64_t pos, const RopeParams& params);

void silu_mul(float* gate, const float* up, int64_t n);       // gate = silu(gate) * up
void gelu_tanh_mul(float* gate, const float* up, int64_t n);  // gate = gelu_tanh(gate) * up
void add(float* x, const float* y, int64_t n);                // x += y
void scale(float* x, float s, int64_t n);
void softmax(float* x, int64_t n);                            // in place, numerically stable

}  // namespace strata::ops
