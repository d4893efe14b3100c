// Rotary embedding with the scalings the plain kernel (cuda_backend.cu) leaves out: YaRN (a
// per-dimension mix of interpolated and extrapolated angles, magnitude scaled) and a magnitude
// (attn_factor) other than 1. The angle and its factors follow ops::rope's float sequence: theta
// multiplied by theta_scale once per earlier pair; the correction dims, theta_scale and the
// magnitude are computed on the host with the CPU's own library calls.
#include <algorithm>
#include <cmath>

#include "backend/cuda/cuda_internal.h"

namespace strata::backend::cuda {
namespace {

struct RopeExt {
  float* x;
  int64_t x_stride;
  int n_tokens, n_heads, head_dim, n_rot;
  int64_t pos0;
  const int64_t* pos_dev;
  float theta_scale, freq_scale, ext_factor, mscale, corr_lo, corr_span;
  bool neox;
  const float* freq_factors;
};

__global__ void rope_ext_kernel(RopeExt r) {
  const int64_t pos0 = r.pos_dev ? *r.pos_dev : r.pos0;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int half = r.n_rot / 2;
  if (i >= int64_t(r.n_tokens) * r.n_heads * half) return;
  const int pair = int(i % half);
  const int head = int((i / half) % r.n_heads);
  const int t = int(i / (int64_t(half) * r.n_heads));
  float theta = float(pos0 + t);
  for (int k = 0; k < pair; ++k) theta = __fmul_rn(theta, r.theta_scale);
  const float ff = r.freq_factors ? r.freq_factors[pair] : 1.0f;
  const float extrap = __fdiv_rn(theta, ff);
  float angle = __fmul_rn(r.freq_scale, extrap);
  if (r.ext_factor != 0.0f) {
    const float y = __fdiv_rn(__fsub_rn(float(pair), r.corr_lo), r.corr_span);
    const float ramp_mix = __fmul_rn(__fsub_rn(1.0f, fminf(1.0f, fmaxf(0.0f, y))), r.ext_factor);
    angle = __fadd_rn(__fmul_rn(angle, __fsub_rn(1.0f, ramp_mix)), __fmul_rn(extrap, ramp_mix));
  }
  const float c = __fmul_rn(cosf(angle), r.mscale), s = __fmul_rn(sinf(angle), r.mscale);
  float* v = r.x + t * r.x_stride + int64_t(head) * r.head_dim;
  const int i0 = r.neox ? pair : 2 * pair;
  const int i1 = r.neox ? pair + half : 2 * pair + 1;
  const float x0 = v[i0], x1 = v[i1];
  v[i0] = x0 * c - x1 * s;
  v[i1] = x0 * s + x1 * c;
}

constexpr float kPi = 3.14159265358979323846f;  // float(M_PI), which strict C++ does not define

// YaRN's correction dimension for a rotation count, as ops.cpp (ggml_rope_yarn_corr_dim).
float yarn_corr_dim(int n_dims, int n_ctx_orig, float n_rot, float base) {
  return float(n_dims) * std::log(float(n_ctx_orig) / (n_rot * 2.0f * kPi)) / (2.0f * std::log(base));
}

}  // namespace

bool rope_needs_ext(const ops::RopeParams& p) { return p.ext_factor != 0.0f || p.attn_factor != 1.0f; }

void rope_ext(float* x, int64_t x_stride, int n_tokens, int n_heads, int head_dim, int64_t pos0, const int64_t* pos_dev,
              const ops::RopeParams& p, cudaStream_t stream) {
  const int n_rot = p.n_rot;
  const int64_t n = int64_t(n_tokens) * n_heads * (n_rot / 2);
  if (n <= 0) return;
  RopeExt r{};
  r.x = x;
  r.x_stride = x_stride;
  r.n_tokens = n_tokens;
  r.n_heads = n_heads;
  r.head_dim = head_dim;
  r.n_rot = n_rot;
  r.pos0 = pos0;
  r.pos_dev = pos_dev;
  r.theta_scale = std::pow(p.freq_base, -2.0f / float(n_rot));
  r.freq_scale = p.freq_scale;
  r.ext_factor = p.ext_factor;
  r.mscale = p.attn_factor;
  if (p.ext_factor != 0.0f) {
    const float lo = std::max(0.0f, std::floor(yarn_corr_dim(n_rot, p.n_ctx_orig, p.beta_fast, p.freq_base)));
    const float hi =
        std::min(float(n_rot - 1), std::ceil(yarn_corr_dim(n_rot, p.n_ctx_orig, p.beta_slow, p.freq_base)));
    r.corr_lo = lo;
    r.corr_span = std::max(0.001f, hi - lo);
    r.mscale *= 1.0f + 0.1f * std::log(1.0f / p.freq_scale);
  } else {
    r.corr_lo = 0.0f;
    r.corr_span = 1.0f;
  }
  r.neox = p.kind == ops::RopeKind::neox;
  r.freq_factors = p.freq_factors;
  rope_ext_kernel<<<unsigned((n + 255) / 256), 256, 0, stream>>>(r);
  STRATA_CUDA_LAUNCHED();
}

}  // namespace strata::backend::cuda
