// MXFP4 (gpt-oss experts): scalar reference kernels, as ggml's dequantize_row_mxfp4,
// quantize_row_mxfp4_ref and ggml_vec_dot_mxfp4_q8_0_generic. Activations are Q8_0.
#include <cmath>

#include "tensor/kernels_impl.h"

namespace strata::kernels::scalar {
namespace {

void dequantize_mxfp4(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockMXFP4*>(src);
  for (int64_t i = 0; i < n / kQKMXFP4; ++i, y += kQKMXFP4) {
    const float d = e8m0_to_f32_half(x[i].e);
    for (int j = 0; j < kQKMXFP4 / 2; ++j) {
      y[j] = kMxfp4Values[x[i].qs[j] & 0x0F] * d;
      y[j + kQKMXFP4 / 2] = kMxfp4Values[x[i].qs[j] >> 4] * d;
    }
  }
}

// The table index nearest to x / d (the first on ties), as ggml's best_index_mxfp4.
int best_index(float x, float d) {
  int best = 0;
  float best_err = std::fabs(kMxfp4Values[0] * d - x);
  for (int i = 1; i < 16; ++i) {
    const float err = std::fabs(kMxfp4Values[i] * d - x);
    if (err < best_err) best = i, best_err = err;
  }
  return best;
}

void quantize_mxfp4(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockMXFP4*>(dst);
  for (int64_t i = 0; i < n / kQKMXFP4; ++i, x += kQKMXFP4) {
    float amax = 0.0f;
    for (int j = 0; j < kQKMXFP4; ++j) amax = std::max(amax, std::fabs(x[j]));
    // The largest table value (12, i.e. 6 doubled) times the half scale covers amax.
    const uint8_t e = amax > 0.0f ? uint8_t(std::floor(std::log2(amax)) - 2 + 127) : 0;
    const float d = e8m0_to_f32_half(e);
    y[i].e = e;
    for (int j = 0; j < kQKMXFP4 / 2; ++j)
      y[i].qs[j] = uint8_t(best_index(x[j], d) | best_index(x[j + kQKMXFP4 / 2], d) << 4);
  }
}

float vec_dot_mxfp4(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockMXFP4*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  float sum = 0;
  for (int64_t i = 0; i < n / kQKMXFP4; ++i) {
    const float d = fp16_to_f32(y[i].d) * e8m0_to_f32_half(x[i].e);
    int sumi1 = 0, sumi2 = 0;
    for (int j = 0; j < kQKMXFP4 / 2; ++j) {
      sumi1 += y[i].qs[j] * kMxfp4Values[x[i].qs[j] & 0x0F];
      sumi2 += y[i].qs[j + kQKMXFP4 / 2] * kMxfp4Values[x[i].qs[j] >> 4];
    }
    sum += d * float(sumi1 + sumi2);
  }
  return sum;
}

}  // namespace

void register_fp4(KernelTable& t) {
  t[DType::MXFP4] = {DType::Q8_0, dequantize_mxfp4, quantize_mxfp4, vec_dot_mxfp4, nullptr, quantize_mxfp4};
}

}  // namespace strata::kernels::scalar
