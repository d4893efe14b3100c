// Element-wise and row ops, written to follow ggml's float evaluation order (sums of squares in
// double, rope angles by repeated multiplication) so logits stay close to llama.cpp's.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/ops.h"
#include "ops/vec.h"
#include "tensor/fp16.h"
#include "tensor/kernels.h"
#include "util/error.h"

namespace strata::ops {

void rms_norm(const float* x, const float* weight, float* out, int64_t n, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += double(x[i] * x[i]);
  const float mean = float(sum / double(n));
  const float scale = 1.0f / std::sqrt(mean + eps);
  if (weight) {
    for (int64_t i = 0; i < n; ++i) out[i] = (x[i] * scale) * weight[i];
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale;
  }
}

void get_row(const WeightView& w, int64_t row, float* out) {
  if (row < 0 || row >= w.n_rows) throw Error("row " + std::to_string(row) + " out of range");
  if (w.type == DType::F32) {
    std::memcpy(out, w.row(row), size_t(w.n_cols) * sizeof(float));
    return;
  }
  kernels::kernels_for(w.type).dequantize(w.row(row), out, w.n_cols);
}

std::vector<float> to_floats(const WeightView& w) {
  std::vector<float> out(size_t(w.n_cols * w.n_rows));
  for (int64_t r = 0; r < w.n_rows; ++r) get_row(w, r, out.data() + r * w.n_cols);
  return out;
}

namespace {
// YaRN's correction dimension for a rotation count (ggml_rope_yarn_corr_dim).
float yarn_corr_dim(int n_dims, int n_ctx_orig, float n_rot, float base) {
  return float(n_dims) * std::log(float(n_ctx_orig) / (n_rot * 2.0f * float(M_PI))) / (2.0f * std::log(base));
}
}  // namespace

void rope(float* x, int n_heads, int head_dim, int64_t pos, const RopeParams& rp) {
  // Angles for this position, computed once for all heads (n_rot <= 1024 in every model).
  float cos_sin[1024];
  const int n_rot = rp.n_rot;
  const RopeKind kind = rp.kind;
  if (n_rot > 1024 || n_rot % 2) throw Error("rope: unsupported rotary dimension " + std::to_string(n_rot));
  float corr_lo = 0.0f, corr_hi = 0.0f;
  if (rp.ext_factor != 0.0f) {
    corr_lo = std::max(0.0f, std::floor(yarn_corr_dim(n_rot, rp.n_ctx_orig, rp.beta_fast, rp.freq_base)));
    corr_hi = std::min(float(n_rot - 1), std::ceil(yarn_corr_dim(n_rot, rp.n_ctx_orig, rp.beta_slow, rp.freq_base)));
  }
  const float theta_scale = std::pow(rp.freq_base, -2.0f / float(n_rot));
  float theta = float(pos);
  for (int i = 0; i < n_rot; i += 2) {
    const float ff = rp.freq_factors ? rp.freq_factors[i / 2] : 1.0f;
    const float extrap = theta / ff;
    float angle = rp.freq_scale * extrap;
    float mscale = rp.attn_factor;
    if (rp.ext_factor != 0.0f) {
      const float y = (float(i / 2) - corr_lo) / std::max(0.001f, corr_hi - corr_lo);
      const float ramp_mix = (1.0f - std::min(1.0f, std::max(0.0f, y))) * rp.ext_factor;
      angle = angle * (1.0f - ramp_mix) + extrap * ramp_mix;
      mscale *= 1.0f + 0.1f * std::log(1.0f / rp.freq_scale);
    }
    cos_sin[i] = std::cos(angle) * mscale;
    cos_sin[i + 1] = std::sin(angle) * mscale;
    theta *= theta_scale;
  }
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + size_t(h) * head_dim;
    if (kind == RopeKind::normal) {
      for (int i = 0; i < n_rot; i += 2) {
        const float c = cos_sin[i], s = cos_sin[i + 1];
        const float x0 = v[i], x1 = v[i + 1];
        v[i] = x0 * c - x1 * s;
        v[i + 1] = x0 * s + x1 * c;
      }
    } else {
      const int half = n_rot / 2;
      for (int i = 0; i < n_rot; i += 2) {
        const float c = cos_sin[i], s = cos_sin[i + 1];
        const float x0 = v[i / 2], x1 = v[i / 2 + half];
        v[i / 2] = x0 * c - x1 * s;
        v[i / 2 + half] = x0 * s + x1 * c;
      }
    }
  }
}

void silu_mul(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = (g / (1.0f + std::exp(-g))) * up[i];
  }
}

namespace {
// ggml evaluates GELU through a table indexed by the input rounded to f16, holding f16 results.
struct GeluTable {
  uint16_t values[(1 << 16) + 2];  // 2 more for 32-bit gathers of the last entry
  GeluTable() {
    constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f;
    constexpr float kCoefA = 0.044715f;
    for (uint32_t i = 0; i < (1u << 16); ++i) {
      const float x = fp16_to_f32(uint16_t(i));
      const float y = 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * x * (1.0f + kCoefA * x * x)));
      values[i] = f32_to_fp16(y);
    }
    values[1 << 16] = values[(1 << 16) + 1] = 0;
  }
};
}  // namespace

void gelu_tanh_mul(float* gate, const float* up, int64_t n) {
  static const GeluTable table;
#if !defined(STRATA_SCALAR_ONLY)
  static const bool simd = detail::has_avx2_f16c();
  if (simd) return detail::table_gelu_mul_avx2(gate, up, n, table.values);
#endif
  for (int64_t i = 0; i < n; ++i) {
    const float x = gate[i];
    float g;
    if (x <= -10.0f) g = 0.0f;
    else if (x >= 10.0f) g = x;
    else g = fp16_to_f32(table.values[f32_to_fp16(x)]);
    gate[i] = g * up[i];
  }
}

void add(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void scale(float* x, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

void softmax(float* x, int64_t n) {
  float max = -INFINITY;
  for (int64_t i = 0; i < n; ++i) max = std::max(max, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += double(x[i]);
  }
  const float inv = float(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

}  // namespace strata::ops
