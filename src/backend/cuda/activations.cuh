#pragma once
// Internal to src/backend/cuda: the gated FFN's activations, as the CPU computes them, for every
// kernel that applies one (cuda_backend.cu's element-wise form, matmul.cu's fused gate and up).
#include <cuda_fp16.h>

namespace strata::backend::cuda {

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

// ggml's GELU: the input rounded to f16, the tanh form evaluated, the result rounded to f16 (what
// the CPU's table holds); identity past 10, zero below -10.
__device__ __forceinline__ float gelu_ggml(float x) {
  float g;
  if (x <= -10.0f) {
    g = 0.0f;
  } else if (x >= 10.0f) {
    g = x;
  } else {
    constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f;
    constexpr float kCoefA = 0.044715f;
    const float h = __half2float(__float2half_rn(x));
    g = __half2float(__float2half_rn(0.5f * h * (1.0f + tanhf(kSqrt2OverPi * h * (1.0f + kCoefA * h * h)))));
  }
  return g;
}

}  // namespace strata::backend::cuda
