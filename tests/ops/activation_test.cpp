// The SIMD GELU path must give exactly the scalar table lookup's values (ggml's f16 table).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "ops/ops.h"
#include "ops/vec.h"
#include "tensor/fp16.h"

namespace strata::ops {
namespace {

float gelu_reference(float x) {
  if (x <= -10.0f) return 0.0f;
  if (x >= 10.0f) return x;
  constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f;
  constexpr float kCoefA = 0.044715f;
  const float h = fp16_to_f32(f32_to_fp16(x));
  return fp16_to_f32(f32_to_fp16(0.5f * h * (1.0f + std::tanh(kSqrt2OverPi * h * (1.0f + kCoefA * h * h)))));
}

TEST(Activation, GeluTanhMulMatchesTable) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-12.0f, 12.0f);
  const int64_t n = 1000 + 3;  // a tail past the last whole vector
  std::vector<float> gate(n), up(n);
  for (int64_t i = 0; i < n; ++i) {
    gate[i] = dist(rng);
    up[i] = dist(rng);
  }
  gate[0] = -10.0f, gate[1] = 10.0f, gate[2] = 0.0f, gate[3] = 65504.0f, gate[4] = -1e-8f, gate[5] = 1e6f;
  std::vector<float> out = gate;
  gelu_tanh_mul(out.data(), up.data(), n);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[i], gelu_reference(gate[i]) * up[i]) << "x=" << gate[i];
}

}  // namespace
}  // namespace strata::ops
